"""The workflow end to end with Snakemake's local executor: a tiny grid with a diverging and a
failing run, its reports and HTML report; and a training job killed mid-run, retried, resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import shutil
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.config import resolve
from bench.engine.run import RunPaths, execute
from bench.stats.collect import load_results
from bench.stats.settings import resolve_stats
from bench.workflow import load_workflow_config, plan_workflow
from conftest import REPO

pytestmark = pytest.mark.slow

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = REPO / "configs" / "test" / "tiny.yaml"


def snakemake(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([*SNAKEMAKE, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)


def run_workflow(out: Path, config_file: Path) -> tuple[list[str], dict]:
    """`snakemake --cores 2` on a config, into `out` (runs/, reports/): the --config overrides and
    the checked config with those folders."""
    paths = [f"results={out / 'runs'}", f"reports={out / 'reports'}"]
    proc = snakemake("--cores", "2", "--configfile", str(config_file), "--config", *paths)
    assert proc.returncode == 0, proc.stderr[-4000:]
    config = load_workflow_config(config_file)
    config.update(results=str(out / "runs"), reports=str(out / "reports"))
    return paths, config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """configs/test/tiny.yaml run once by `snakemake --cores 2` into a temporary folder."""
    out = tmp_path_factory.mktemp("tiny")
    paths, config = run_workflow(out, TINY)
    return out, paths, plan_workflow(config)


def test_a_finished_run_is_not_retrained_when_its_rule_params_change(tiny_run, tmp_path):
    """Snakemake would delete and retrain a finished run whose params or rule code changed (a
    default written out, an upgraded fedrank); the workflow profile (profiles/default) keeps
    them: a run folder is named by its resolved configuration."""
    out, paths, plan = tiny_run
    config = yaml.safe_load(TINY.read_text())
    config["base"]["train"]["client_init"] = "common"  # the default, written out: same run ids, other params
    edited = tmp_path / "tiny.yaml"
    edited.write_text(yaml.safe_dump(config))
    assert plan_workflow({**load_workflow_config(edited), "results": str(out / "runs"), "reports": str(out / "reports")}).runs.keys() == plan.runs.keys()

    def scheduled(*triggers: str) -> list[str]:
        proc = snakemake("-n", "--configfile", str(edited), "--config", *paths, *triggers)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return re.findall(r"^(?:local)?rule train:", proc.stdout, re.M)

    assert scheduled() == []
    assert scheduled("--rerun-triggers", "mtime", "input", "params", "code")  # what the profile prevents


def test_every_run_reaches_the_reports_diverged_and_failed_included(tiny_run):
    out, _, plan = tiny_run
    results = load_results(out / "runs", resolve_stats({}), progress=False)
    runs, problems = results.runs, results.problems
    assert not problems and set(runs["run_id"]) == set(plan.runs)
    status = dict(zip(runs["run_id"], runs["status"]))
    (diverged,) = plan.groups["lr/synthetic/train.lr=1e+30"].runs
    (failed,) = plan.studies["tight"]
    assert status.pop(diverged) == "diverged" and status.pop(failed) == "failed"
    assert set(status.values()) == {"completed"}
    assert "min_samples" in json.loads((out / "runs" / failed / "run.json").read_text())["error"]

    reports = out / "reports"
    compare = pd.read_csv(reports / "compare" / "synthetic" / "all" / "results.csv")
    assert set(compare["label"]) == {"fedavg", "fedlsc (per=0.2)"} and (compare["seeds"] == 2).all()
    assert set(compare["method"]) == {"FedAvg", "fedlsc (per=0.2)"}  # paper names where they apply
    assert (reports / "compare" / "synthetic" / "all" / "convergence.png").stat().st_size > 10_000
    assert pd.read_csv(reports / "lr" / "synthetic" / "train.lr=1e+30" / "results.csv")["statuses"].tolist() == ["1 diverged"]
    assert pd.read_csv(reports / "tight" / "synthetic" / "all" / "results.csv")["statuses"].tolist() == ["1 failed"]
    statuses = pd.read_csv(reports / "tables" / "runs.csv").groupby("study")[["diverged", "failed"]].sum()
    assert statuses.loc["lr", "diverged"] == 1 and statuses.loc["tight", "failed"] == 1  # all studies together
    assert (reports / "tables" / "main_comparison.tex").read_text().startswith("% Main comparison")
    manifest = pd.read_csv(reports / "studies.csv")
    assert len(manifest) == len(plan.manifest()) == len(plan.runs) + 1  # one run is in two studies
    assert sorted(map(tuple, manifest.values)) == sorted(plan.manifest())


def test_a_finished_workflow_has_nothing_left_to_do(tiny_run):
    _, paths, _ = tiny_run
    proc = snakemake("-n", "--cores", "1", "--configfile", str(TINY), "--config", *paths)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]


def test_html_report_is_self_contained_and_grouped_by_study_and_dataset(tiny_run):
    out, paths, plan = tiny_run
    html = out / "report.html"
    proc = snakemake("--cores", "1", "--configfile", str(TINY), "--config", *paths, "--report", str(html))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']https?://""", text)  # nothing fetched when opened
    for study in plan.studies:
        assert study in text
    assert "Workflow" in text and "train.lr=1e+30" in text
    assert "All studies" in text and "main_comparison" in text and "cd_diagram" in text  # the all-studies statistics
    assert "Study **compare** on **synthetic**".replace("**", "") in re.sub(r"<[^>]+>", "", text).replace("\\n", " ")
    front = json.loads(re.search(r"var workflow_desc = (\".*?\");", text).group(1))  # the first page
    assert front.index("Leaderboard (") < front.index('alt="cd_diagram.png"') < front.index('alt="convergence.png"')
    assert front.count("data:image/png;base64,") == 2 and '<table class="fedrank">' in front


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_the_report_opens_on_the_leaderboard_in_a_real_browser(tiny_run):
    """Rendered by Snakemake's report app in headless Chromium: the leaderboard and the CD diagram are on the first page."""
    out, paths, _ = tiny_run
    html = out / "report.html"
    if not html.exists():
        assert snakemake("--cores", "1", "--configfile", str(TINY), "--config", *paths, "--report", str(html)).returncode == 0
    browser = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]
    dom = subprocess.run([*browser, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=180).stdout
    assert "Leaderboard (" in dom and 'alt="cd_diagram.png"' in dom and '<table class="fedrank">' in dom
    shot = out / "front.png"  # kept for a person to look at: pytest's tmp folder
    subprocess.run([*browser, "--window-size=1400,1100", f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=180)
    assert shot.stat().st_size > 50_000


def running_fedrank(marker: str) -> int | None:
    """The pid of the `fedrank run` process whose command line contains `marker`."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"fedrank" in a for a in argv[:2]) and b"run" in argv and any(marker.encode() in a for a in argv):
                return int(proc.name)
    return None


def test_a_killed_training_job_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    config = {
        "results": str(tmp_path / "runs"), "reports": str(tmp_path / "reports"), "seeds": [0],
        "base": {"data": {"name": "synthetic"}, "model": {"name": "small_cnn", "widths": [8, 16]}, "train": {"rounds": 40, "lr": 0.003}},
        "studies": {"one": {"datasets": ["synthetic"], "methods": ["fedavg"]}},
    }
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(config))
    (run,) = plan_workflow(load_workflow_config(path)).runs.values()
    run_dir = tmp_path / "runs" / run.id
    killed: list[int] = []

    def kill_once_checkpointed():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            pid = running_fedrank(str(run_dir)) if (run_dir / "checkpoint.pt").is_file() else None
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_once_checkpointed, daemon=True)
    watcher.start()
    proc = snakemake(str(run_dir / "run.json"), "--cores", "1", "--retries", "1", "--configfile", str(path))
    watcher.join(timeout=1)
    assert killed, "the training job finished before it could be killed"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Trying to restart" in proc.stdout + proc.stderr
    assert re.findall(r"attempt (\d) of (\d)", (run_dir / "train.log").read_text()) == [("2", "2")]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed_from_round"] >= 2
    execute(resolve(run.config), tmp_path / "straight", show_progress=False)
    straight, resumed = (pd.read_parquet(RunPaths(d).metrics) for d in (tmp_path / "straight", run_dir))
    pd.testing.assert_frame_equal(straight, resumed, check_exact=True)


def test_a_run_whose_metrics_do_not_verify_is_rerun_by_the_workflow(tmp_path):
    """A finished run whose metrics.parquet is another run's is rerun by a plain `snakemake`
    (Snakemake alone keeps it: its files are all there); the dry run says so, and why."""
    config = {
        "results": str(tmp_path / "runs"), "reports": str(tmp_path / "reports"), "seeds": [0, 1],
        "base": {"data": {"name": "synthetic"}, "model": {"name": "small_cnn", "widths": [8]}, "train": {"rounds": 2}},
        "studies": {"one": {"datasets": ["synthetic"], "methods": ["fedavg"]}},
    }
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(config))
    first, second = (tmp_path / "runs" / run_id for run_id in plan_workflow(load_workflow_config(path)).runs)
    targets = [str(folder / "run.json") for folder in (first, second)]
    assert snakemake(*targets, "--cores", "1", "--configfile", str(path)).returncode == 0
    written = (first / "metrics.parquet").read_bytes()
    shutil.copyfile(second / "metrics.parquet", first / "metrics.parquet")

    def scheduled() -> tuple[list[str], str]:
        proc = snakemake("-n", *targets, "--cores", "1", "--configfile", str(path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return re.findall(r"output: (\S+)/run.json", proc.stdout), proc.stdout + proc.stderr

    outputs, out = scheduled()
    assert outputs == [str(first)] and f"{first}: run.json says completed but its metrics.parquet holds the rows of run {second.name}" in out
    assert snakemake(*targets, "--cores", "1", "--configfile", str(path)).returncode == 0
    assert (first / "metrics.parquet").read_bytes() == written  # the same seeds, the same numbers
    assert scheduled()[0] == []


def test_a_report_folder_of_an_older_fedrank_does_not_stop_the_workflow(tmp_path):
    """An older fedrank wrote the tidy table as one file, reports/results.parquet, where the
    workflow now writes a folder: Snakemake could not create it and stopped with a traceback."""
    config = {
        "results": str(tmp_path / "runs"), "reports": str(tmp_path / "reports"), "seeds": [0],
        "base": {"data": {"name": "synthetic"}, "model": {"name": "small_cnn", "widths": [8]}, "train": {"rounds": 2}},
        "studies": {"one": {"datasets": ["synthetic"], "methods": ["fedavg"]}},
    }
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "results.parquet").write_bytes(b"the older single file")
    proc = snakemake("-n", "--cores", "1", "--configfile", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "reports" / "results.parquet").exists() and "results.parquet/_manifest.json" in proc.stdout
