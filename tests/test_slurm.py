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
failed and reach the report. The packing test trains 12 runs as 12 jobs and as 3 packed jobs of 4
concurrent runs (killing one packed job mid-way): every run ends with the same metrics.
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
PACKED = REPO / "configs" / "test" / "slurm_packed.yaml"
TUNE = REPO / "configs" / "test" / "tune.yaml"
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


def profile_train_resources(**settings: str) -> dict:
    """What the slurm profile requests for a training run here, with FEDRANK_SLURM_<settings>
    (the node must offer at least what one job asks for)."""
    import yte

    env = {**slurm_env(), **{f"FEDRANK_SLURM_{k.upper()}": v for k, v in settings.items()}}
    with mock.patch.dict(os.environ, env, clear=True), open(REPO / "slurm" / "config.yaml") as profile:
        return yte.process_yaml(profile, require_use_yte=True)["set-resources"]["train"]


def gres(train: dict) -> str:
    """The GPU request of a training job, e.g. gpu:1."""
    return train["gres"].strip("'")


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
        f"RealMemory={train['mem_mb']} Gres={gres(train)} State=UNKNOWN",
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
        try:  # jobs still running when the daemons stop would outlive them
            wait_for(lambda: not running_jobs(env), 60, "the cancelled jobs to end")
        except TimeoutError:
            pass
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


def running_jobs(env: dict[str, str]) -> list[str]:
    """Ids of the jobs running now."""
    proc = subprocess.run(["squeue", "-h", "--states=RUNNING", "-o", "%i"], env=env, capture_output=True, text=True)
    return proc.stdout.split()


def batch_script(env: dict[str, str], job: str) -> str:
    """What the job runs (the Snakemake call naming its runs' outputs), while it runs."""
    return subprocess.run(["scontrol", "write", "batch_script", job, "-"], env=env, capture_output=True, text=True).stdout


class Preempter(threading.Thread):
    """Cancels the job training `run` (alone or packed with others) once it has checkpointed a
    round, like a pre-emption; keeps the job's details and script, and what each run of the
    results folder had written ("finished", "checkpoint" or nothing) just before and 2 s after
    the job was cancelled (a run may write while the signal reaches it)."""

    def __init__(self, env: dict[str, str], run_dir: Path):
        super().__init__(daemon=True)
        self.env, self.run_dir = env, run_dir
        self.stop = threading.Event()
        self.job: str | None = None
        self.details = self.script = ""
        self.at_kill: tuple[dict[str, str], dict[str, str]] = ({}, {})

    def snapshot(self) -> dict[str, str]:
        state = {}
        for run in self.run_dir.parent.iterdir():
            if (run / "run.json").is_file():
                state[run.name] = "finished"
            elif (run / "checkpoint.pt").is_file():
                state[run.name] = "checkpoint"
        return state

    def run(self) -> None:
        while not self.stop.is_set():
            if (self.run_dir / "checkpoint.pt").is_file():
                for job in running_jobs(self.env):
                    script = batch_script(self.env, job)
                    if self.run_dir.name in script:
                        self.job, self.script = job, script
                        self.details = subprocess.run(["scontrol", "show", "job", job], env=self.env, capture_output=True, text=True).stdout
                        before = self.snapshot()
                        subprocess.run(["scancel", job], env=self.env, check=True)
                        time.sleep(2)
                        self.at_kill = (before, self.snapshot())
                        return
            time.sleep(0.2)


def snakemake_on_slurm(env: dict[str, str], config: Path, results: Path, reports: Path, *targets: str, cores: str = "all") -> tuple[str, float]:
    """Run the workflow with the slurm profile; (its log, wall seconds). Fails the test if it fails."""
    command = [
        str(Path(sys.executable).parent / "snakemake"), "--cores", cores, "--profile", "slurm",
        "--configfile", str(config), "--config", f"results={results}", f"reports={reports}",
        "--slurm-status-command", "squeue",  # no accounting database on this cluster
        "--slurm-init-seconds-before-status-checks", "2", *targets,
    ]
    tic = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log, time.perf_counter() - tic


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
    log, _ = snakemake_on_slurm(cluster, CONFIG, results, reports)
    preempter.stop.set()

    # the profile's requests reached SLURM: one (stand-in) GPU, its CPUs and memory
    assert preempter.job, "the training job to pre-empt was never seen running"
    train = profile_train_resources()
    wanted = [f"TresPerNode=gres:{gres(train)}", f"NumCPUs={train['cpus_per_task']} ", f"mem={train['mem_mb']}M", f"TimeLimit={slurm_time(train['runtime'])}"]
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


def submitted_jobs(log: str) -> set[str]:
    return set(re.findall(r"submitted with SLURM jobid (\d+)", log))


def most_at_once(records: list[dict]) -> int:
    """The most runs that were training at the same second (from their records' start and finish;
    a run that failed when it starts has none)."""
    spans = [(r["timing"]["started_at"], r["timing"]["finished_at"]) for r in records if "timing" in r]
    return max(sum(start <= t <= end for start, end in spans) for t, _ in spans)


@pytest.mark.timeout(2400)  # 15 cluster jobs: about 5 minutes on an idle 2-core machine
def test_packed_jobs_train_runs_concurrently_to_the_metrics_of_one_job_per_run(cluster, tmp_path):
    config = load_workflow_config(PACKED)
    plan = plan_workflow({**config, "results": str(tmp_path)})
    (long_run,) = plan.studies["long"]
    (tight,) = plan.studies["tight"]
    # the same 2 torch threads per run either way: one run per 2-CPU job, or 4 runs per 8-CPU job
    layouts = {"separate": {"CPUS": "2", "MEM_MB": "8000"}, "packed": {"RUNS_PER_JOB": "4", "CPUS": "8", "MEM_MB": "32000"}}
    logs, seconds, records = {}, {}, {}
    for name, settings in layouts.items():
        results = tmp_path / name
        env = {**cluster, **{f"FEDRANK_SLURM_{k}": v for k, v in settings.items()}}
        preempter = Preempter(env, results / long_run)
        if name == "packed":
            preempter.start()
        targets = [f"{results}/{rid}/run.json" for rid in plan.runs]
        # --cores at least a packed job's CPUs (this machine has fewer), or Snakemake stacks its runs
        logs[name], seconds[name] = snakemake_on_slurm(env, PACKED, results, tmp_path / f"{name}-reports", *targets, cores="8")
        preempter.stop.set()
        records[name] = {rid: json.loads((results / rid / "run.json").read_text()) for rid in plan.runs}
        for rid in plan.runs:
            assert records[name][rid]["status"] == ("failed" if rid == tight else "completed"), (name, rid)
            pd.testing.assert_frame_equal(pd.read_parquet(results / rid / "metrics.parquet"),
                                          pd.read_parquet(tmp_path / "separate" / rid / "metrics.parquet"), check_exact=True)
    jobs = {name: len(submitted_jobs(log)) for name, log in logs.items()}
    print(f"\njobs submitted and wall seconds: {jobs}, { {k: round(v, 1) for k, v in seconds.items()} }")
    assert jobs == {"separate": 12, "packed": 3 + 1}  # 3 packed jobs, one of them killed and retried

    # the killed packed job asked for the sum of its runs' CPUs and memory, the GPU and the time of one
    assert preempter.job, "the packed job to kill was never seen running"
    train = profile_train_resources(**layouts["packed"])
    wanted = [f"TresPerNode=gres:{gres(train)}", f"NumCPUs={4 * train['cpus_per_task']} ", f"mem={4 * train['mem_mb']}M",
              f"TimeLimit={slurm_time(train['runtime'])}"]
    assert all(w in preempter.details for w in wanted), (wanted, preempter.details)
    # one job at a time fits the node: runs trained one by one, or packed several at once
    assert most_at_once(list(records["separate"].values())) == 1 and most_at_once(list(records["packed"].values())) >= 3
    # when the killed job was retried, each of its runs was skipped if it had finished (its outputs
    # and first attempt's log kept), resumed if it had checkpointed, and started afresh otherwise
    # (a run killed before its first round ended)
    packed = [rid for rid in plan.runs if rid in preempter.script]
    assert len(packed) == 4, preempter.script
    assert records["packed"][long_run]["resumed_from_round"] >= 1
    for rid in packed:
        log = (tmp_path / "packed" / rid / "train.log").read_text()
        resumed = records["packed"][rid]["resumed_from_round"]
        retried_as = "checkpoint" if resumed else "finished" if "attempt 1 of" in log else None
        assert retried_as in {state.get(rid) for state in preempter.at_kill}, (rid, preempter.at_kill, log)
    assert "min_samples" in records["packed"][tight]["error"]


@pytest.mark.timeout(2400)
def test_a_tuned_study_runs_tune_select_test_in_one_invocation_with_packed_jobs(cluster, tmp_path):
    """configs/test/tune.yaml on SLURM, 4 runs per packed job: the trials, the select checkpoint,
    the test runs on the selections (whose ids exist only after it) and the reports."""
    config = load_workflow_config(TUNE)
    config.update(results=str(tmp_path / "runs"), reports=str(tmp_path / "reports"))
    env = {**cluster, "FEDRANK_SLURM_RUNS_PER_JOB": "4", "FEDRANK_SLURM_CPUS": "8", "FEDRANK_SLURM_MEM_MB": "32000"}
    snakemake_on_slurm(env, TUNE, tmp_path / "runs", tmp_path / "reports", cores="8")
    plan = plan_workflow(config)
    plan.add_selected()
    assert all(Path(plan.selection_file(key)).is_file() for key in plan.pairs)
    tested = [rid for rid in plan.studies["tuned"]]
    assert len(tested) == sum(len(p.test_seeds) for p in plan.pairs.values())
    assert all(json.loads((tmp_path / "runs" / rid / "run.json").read_text())["status"] == "completed" for rid in [*tested, *plan.trials])
    assert (tmp_path / "reports" / "tuning" / "summary" / "tables" / "tuned_vs_untuned.csv").is_file()
    assert set(pd.read_csv(tmp_path / "reports" / "studies.csv")["study"]) == {"tuned", "tuned-untuned"}
