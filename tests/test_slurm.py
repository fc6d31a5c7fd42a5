"""`snakemake --cores all --profile slurm` on a real one-node SLURM cluster started here.

The cluster is Debian's slurm-wlm and munge: slurmctld and slurmd run as root on the loopback
interface, with their state, logs and munge socket in a temporary folder. Its configuration goes
to /etc/slurm (the only place `srun` inside a job looks: the SLURM executor clears SLURM_CONF
there). The node declares one stand-in GPU (a generic resource backed by /dev/null) and the CPUs
and memory the profile asks for, so the profile's real requests are exercised, not overridden.
There is no accounting database, so Snakemake asks squeue for job states
(--slurm-status-command squeue), as on any cluster without sacct.

The test kills one training job once it has checkpointed, as a pre-emption would, and checks that
the retried job resumed from the checkpoint; a run that fails when it starts must be recorded as
failed and reach the report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from bench.workflow import load_workflow_config, plan_workflow
from conftest import REPO

pytestmark = pytest.mark.slow

CONFIG = REPO / "configs" / "test" / "slurm.yaml"
ETC = Path("/etc/slurm")
MARK = "# written by fedrank tests/test_slurm.py\n"
TOOLS = ("slurmctld", "slurmd", "munged", "sbatch", "srun", "squeue", "sinfo", "scancel", "scontrol")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def why_no_cluster() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool, path=SBIN_PATH) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge, as .ci/run does"
    if os.geteuid() != 0:
        return "starting slurmd needs root (it launches jobs as their users)"
    for name in ("slurm.conf", "gres.conf"):
        path = ETC / name
        if path.exists() and not path.read_text().startswith(MARK):
            return f"{path} belongs to an existing SLURM installation; not replacing it"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def profile_train_resources() -> dict:
    """What the slurm profile requests for a training job here (the node must offer at least that)."""
    import yte

    with mock.patch.dict(os.environ, slurm_env(), clear=True), open(REPO / "slurm" / "config.yaml") as profile:
        return yte.process_yaml(profile, require_use_yte=True)["set-resources"]["train"]


def slurm_time(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


def slurm_conf(host: str, state: Path) -> str:
    train = profile_train_resources()
    return MARK + "\n".join([
        "ClusterName=fedrank-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={state}/munge.socket",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        f"StateSaveLocation={state}/ctld",
        f"SlurmdSpoolDir={state}/spool",
        f"SlurmctldPidFile={state}/slurmctld.pid",
        f"SlurmdPidFile={state}/slurmd.pid",
        f"SlurmctldLogFile={state}/slurmctld.log",
        f"SlurmdLogFile={state}/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SlurmdParameters=config_overrides",  # the node may declare more CPUs and memory than this machine has
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2",
        "MinJobAge=300",  # finished jobs stay visible to squeue for 5 minutes
        "GresTypes=gpu",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={train['cpus_per_task']} "
        f"RealMemory={train['mem_mb']} Gres=gpu:{train['gpu']} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n"


def slurm_env() -> dict[str, str]:
    """This environment without SLURM settings meant for another cluster (this one's config is the
    system one; it has no accounts, partitions but its own, or QOS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "FEDRANK_SLURM_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), SBIN_PATH])
    return env


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def local_cluster():
    """munged, slurmctld and slurmd as root on loopback; everything removed afterwards."""
    state = Path(tempfile.mkdtemp(prefix="fedrank-slurm-", dir="/tmp"))  # short: unix socket paths are limited
    (state / "ctld").mkdir()
    (state / "spool").mkdir()
    key = state / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    ETC.mkdir(parents=True, exist_ok=True)
    (ETC / "slurm.conf").write_text(slurm_conf(host, state))
    (ETC / "gres.conf").write_text(MARK + f"AutoDetect=off\nNodeName={host} Name=gpu File=/dev/null\n")
    env = slurm_env()
    daemons: list[subprocess.Popen] = []
    try:
        for command in (
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={state}/munge.socket",
             f"--pid-file={state}/munged.pid", f"--log-file={state}/munged.log", f"--seed-file={state}/munged.seed"],
            ["slurmctld", "-D", "-c"],
            ["slurmd", "-D"],
        ):
            log = open(state / f"{command[0]}.out", "w")
            daemons.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(1)

        def idle() -> bool:
            proc = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return proc.stdout.strip() == "idle"

        wait_for(idle, 60, f"the SLURM node to come up (logs in {state})")
        yield env
    finally:
        subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        for name in ("slurm.conf", "gres.conf"):
            (ETC / name).unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)


def squeue(env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(job id, state, comment) of every job the controller knows."""
    proc = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T|%k"], env=env, capture_output=True, text=True)
    return [tuple(line.split("|", 2)) for line in proc.stdout.splitlines() if line.count("|") == 2]


class Preempter(threading.Thread):
    """Cancels the job training `run` once it has checkpointed a round, like a pre-emption."""

    def __init__(self, env: dict[str, str], run_dir: Path):
        super().__init__(daemon=True)
        self.env, self.run_dir = env, run_dir
        self.stop = threading.Event()
        self.job: str | None = None
        self.details = ""

    def run(self) -> None:
        while not self.stop.is_set():
            if (self.run_dir / "checkpoint.pt").is_file():
                running = [j for j, state, comment in squeue(self.env) if state == "RUNNING" and self.run_dir.name in comment]
                if running:
                    self.job = running[0]
                    self.details = subprocess.run(["scontrol", "show", "job", self.job], env=self.env, capture_output=True, text=True).stdout
                    subprocess.run(["scancel", self.job], env=self.env, check=True)
                    return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster():
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    with local_cluster() as env:
        yield env


def test_profile_runs_the_workflow_on_slurm_and_a_killed_job_resumes(cluster, tmp_path):
    results, reports = tmp_path / "runs", tmp_path / "reports"
    config = load_workflow_config(CONFIG)
    config.update(results=str(results), reports=str(reports))
    plan = plan_workflow(config)
    (killed,) = (results / rid for rid in plan.studies["preempt"])

    preempter = Preempter(cluster, killed)
    preempter.start()
    command = [
        str(Path(sys.executable).parent / "snakemake"), "--cores", "all", "--profile", "slurm",
        "--configfile", str(CONFIG), "--config", f"results={results}", f"reports={reports}",
        "--slurm-status-command", "squeue",  # no accounting database on this cluster
        "--slurm-init-seconds-before-status-checks", "2",
    ]
    proc = subprocess.run(command, cwd=REPO, env=cluster, capture_output=True, text=True, timeout=900)
    preempter.stop.set()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    # the profile's requests reached SLURM: one (stand-in) GPU, its CPUs and memory
    assert preempter.job, "the training job to pre-empt was never seen running"
    train = profile_train_resources()
    wanted = [f"TresPerJob=gres:gpu:{train['gpu']}", f"NumCPUs={train['cpus_per_task']} ", f"mem={train['mem_mb']}M", f"TimeLimit={slurm_time(train['runtime'])}"]
    assert all(w in preempter.details for w in wanted), (wanted, preempter.details)

    records = {rid: json.loads((results / rid / "run.json").read_text()) for rid in plan.runs}
    resumed = records[killed.name]
    assert resumed["status"] == "completed" and resumed["rounds_completed"] == 40
    assert resumed["resumed_from_round"] and resumed["resumed_from_round"] >= 2, resumed["resumed_from_round"]
    assert f"SLURM-job '{preempter.job}' failed" in log and "Trying to restart" in log
    attempts = re.findall(r"attempt (\d) of (\d)", (killed / "train.log").read_text())
    assert attempts == [("2", "3")], attempts  # the retry count reached the job inside SLURM (its log is of the last attempt)
    (tight,) = plan.studies["tight"]
    assert records[tight]["status"] == "failed" and "min_samples" in records[tight]["error"]

    compare = pd.read_csv(reports / "compare" / "synthetic" / "all" / "results.csv")
    assert set(compare["method"]) == {"FedAvg", "FedLSC Per=1%"} and set(compare["statuses"]) == {"1 completed"}
    assert (reports / "compare" / "synthetic" / "all" / "convergence.png").is_file()
    assert pd.read_csv(reports / "tight" / "synthetic" / "all" / "results.csv")["statuses"].tolist() == ["1 failed"]
    runs = pd.read_csv(reports / "tables" / "runs.csv")  # the all-studies statistics, run as a local rule
    assert runs.groupby("study")["failed"].sum().to_dict() == {"compare": 0, "preempt": 0, "tight": 1}
    manifest = pd.read_csv(reports / "studies.csv")
    assert sorted(manifest["study"]) == ["compare", "compare", "preempt", "tight"]
