"""How long Snakemake takes to build the DAG of a workflow config, and how many jobs it has.

    python benchmarks/bench_dag.py                                   # configs/paper.yaml
    python benchmarks/bench_dag.py --config configs/default.yaml --repeat 3

Times `snakemake -n --quiet rules --configfile CONFIG` end to end (start-up, config check,
expansion of every study into resolved runs, DAG) into an empty results folder, so every run
counts as a job, and separately the in-process expansion (`bench.workflow.plan_workflow`).
Target for configs/paper.yaml: under 30 s on 2 CPU cores.

A dry run checks that every data root and the weights file exist, nothing more. Data roots that
are missing here (MSID and MODD are not available offline) are stood in by small generated folders
(one sub-folder per class, two 8x8 PNGs each), and a missing weights file by an empty file, all
in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import bench.data, bench.methods, bench.models  # noqa: E402,F401  (imported here: not timed below)

bench.data.import_loaders()
from bench.config import expand_path  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.workflow import load_workflow_config, plan_workflow  # noqa: E402


def stand_in_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("class_a", "class_b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / label / f"{i}.png")


def stand_ins(config_path: Path, scratch: Path) -> dict[str, str]:
    """Environment in which every data root and weights file of the config exists."""
    real_root = Path(os.environ.get("FEDRANK_DATA_ROOT", REPO.parent / "shared" / "data"))
    data_root = scratch / "data"
    data_root.mkdir()
    if real_root.is_dir():
        for entry in real_root.iterdir():
            (data_root / entry.name).symlink_to(entry.resolve())
    env = {**os.environ, "FEDRANK_DATA_ROOT": str(data_root), "FEDRANK_WEIGHTS_DIR": str(scratch / "weights")}
    os.environ.update(env)  # expand_path reads the environment
    config = load_workflow_config(config_path)
    fragments = [config["base"], *config["datasets"].values(), *(s.get("base", {}) for s in config["studies"].values())]
    for fragment in fragments:
        root = fragment.get("data", {}).get("root")
        if root and not Path(expand_path(root)).exists():
            stand_in_folder(Path(expand_path(root)))
            print(f"stand-in data folder: {expand_path(root)}")
        weights = fragment.get("model", {}).get("weights")
        if weights and not Path(expand_path(weights)).exists():
            Path(expand_path(weights)).parent.mkdir(parents=True, exist_ok=True)
            Path(expand_path(weights)).touch()
            print(f"stand-in weights file: {expand_path(weights)}")
    return env


def dry_run(config_path: Path, scratch: Path, env: dict[str, str]) -> tuple[float, str]:
    command = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "1", "--configfile", str(config_path),
               "--config", f"results={scratch}/runs", f"reports={scratch}/reports"]
    env = {**env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]), "PYTHONPATH": str(REPO)}
    tic = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        sys.exit(f"dry run failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper.yaml", help="workflow config (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="dry runs to time (default: %(default)s)")
    args = parser.parse_args()
    config_path = (REPO / args.config).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="fedrank-bench-dag-"))
    try:
        env = stand_ins(config_path, scratch)
        tic = time.perf_counter()
        plan = plan_workflow(load_workflow_config(config_path))
        expand = time.perf_counter() - tic
        times, out = zip(*(dry_run(config_path, scratch, env) for _ in range(args.repeat)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out[-1], re.M))
    print(f"config: {args.config}")
    print(f"studies: {', '.join(f'{s} {len(ids)}' for s, ids in plan.studies.items())}")
    print(f"runs: {len(plan.runs)} distinct of {len(plan.manifest())} study memberships; report groups: {len(plan.groups)}")
    print(f"jobs: {jobs.get('total')} ({', '.join(f'{k} {v}' for k, v in jobs.items() if k != 'total')})")
    print(f"expansion in process (imports excluded): {expand:.2f} s")
    print(f"snakemake dry run, wall seconds: {', '.join(f'{t:.1f}' for t in times)} (median {statistics.median(times):.1f}; target < 30)")


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        sys.exit(f"bench_dag: error: {exc}")
