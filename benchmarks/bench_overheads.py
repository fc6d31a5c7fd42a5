"""The cost of a study beyond training, every row against its target (issues 23 and 25), in one command.

    python benchmarks/bench_overheads.py                         # this checkout
    python benchmarks/bench_overheads.py --baseline /work/main   # and another checkout, interleaved
    python benchmarks/bench_overheads.py --skip-dag --skip-stats # the start-up rows only (a minute)

Rows (each the median of --repeat runs; with --baseline each repeat runs the baseline's command
right before this checkout's, so both see the same load):

* `fedrank methods`, `models`, `datasets`, `new-method` with their listings stored (target < 1 s),
  and once after a source change (rendered afresh, no target);
* `fedrank run` of a 1-round synthetic run, after one untimed run (as every job of a study after
  the first: the dataset's split stored): wall (target <= 2.5 s) and the start-up its run.json
  records, the time from the job's start to its first round (target <= 3 s quiet; issue 25: < 5 s);
* `snakemake -n` of configs/paper.yaml (benchmarks/bench_dag.py): the first dry run of a config
  and a later one, which reads the stored plan (target <= 8 s);
* benchmarks/bench_stats.py on its 10,080-run folder (target <= 15 s), or on the folder --stats-root
  names (a part of it: no target), when that folder exists; with a checkout whose bench_stats.py
  has --refresh, also the report's refresh after one method's 1,440 runs join the study (target <= 5 s).

Every process gets its own empty cache folder (FEDRANK_CACHE_DIR) per checkout and OMP_NUM_THREADS=1, and
caches Python's bytecode as an installed package does (PYTHONDONTWRITEBYTECODE unset: with it set, every
command compiled fedrank's sources again, about 0.1 s; the untimed first commands write the cache).
Times depend on the machine's load: compare rows measured in the same command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LISTINGS = (["methods"], ["models"], ["datasets"], ["new-method", "fedbench_probe", "--out", "{scratch}/fedbench_probe.py"])
RUN = ["run", "--set", "data.name=synthetic", "--set", "train.rounds=1", "--quiet", "--out", "{scratch}/run"]


class Tree:
    """A checkout the commands run from, with its own cache folder and scratch space."""

    def __init__(self, root: Path, scratch: Path, name: str):
        self.root, self.name = root, name
        self.scratch = scratch / name
        self.scratch.mkdir(parents=True)
        self.env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                    "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "FEDRANK_CACHE_DIR": str(self.scratch / "cache")}

    def fedrank(self, argv: list[str]) -> float:
        """Wall seconds of `python -m bench ARGV` run from this checkout."""
        argv = [a.format(scratch=self.scratch) for a in argv]
        tic = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=self.root, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - tic
        if proc.returncode != 0:
            sys.exit(f"{self.name}: fedrank {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
        return seconds

    def run_once(self) -> tuple[float, float | None]:
        """(wall, the start-up run.json records) of a fresh 1-round synthetic run."""
        subprocess.run(["rm", "-rf", str(self.scratch / "run")], check=True)
        wall = self.fedrank(RUN)
        timing = json.loads((self.scratch / "run" / "run.json").read_text())["timing"]
        return wall, timing.get("startup_seconds")


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def row(what: str, figures: dict[str, float | None], target: float | None, unit: str = "s") -> None:
    """One line: the figure of each checkout, and whether this checkout's meets the target."""
    shown = "  ".join(f"{name} {'-' if v is None else f'{v:.2f} {unit}'}" for name, v in figures.items())
    mine = figures.get("this")
    verdict = "" if target is None else f"target <= {target:g} {unit}: " + ("-" if mine is None else "met" if mine <= target else "NOT met")
    print(f"{what:<58} {shown:<36} {verdict}", flush=True)


def startup_rows(trees: list[Tree], repeat: int) -> None:
    for tree in trees:  # the first listing after a source change renders and stores it
        for argv in LISTINGS:
            tree.fedrank(argv)
            Path(str(tree.scratch / "fedbench_probe.py")).unlink(missing_ok=True)
    for argv in LISTINGS:
        times: dict[str, list[float]] = {t.name: [] for t in trees}
        for _ in range(repeat):
            for tree in trees:
                times[tree.name].append(tree.fedrank(argv))
                Path(str(tree.scratch / "fedbench_probe.py")).unlink(missing_ok=True)
        row(f"fedrank {argv[0]}", {name: median(v) for name, v in times.items()}, 1.0)
    for tree in trees:  # a study's first run stores the dataset's split; every later job reads it
        tree.run_once()
    walls: dict[str, list[float]] = {t.name: [] for t in trees}
    startups: dict[str, list[float | None]] = {t.name: [] for t in trees}
    for _ in range(repeat):
        for tree in trees:
            wall, startup = tree.run_once()
            walls[tree.name].append(wall)
            startups[tree.name].append(startup)
    row("fedrank run, 1-round synthetic run: wall", {name: median(v) for name, v in walls.items()}, 2.5)
    row("  of which start-up (run.json timing.startup_seconds)", {name: median(v) for name, v in startups.items()}, 3.0)


def dag_rows(trees: list[Tree], repeat: int) -> None:
    """bench_dag.py's dry runs: the first (expands the plan) and the later ones (read it back)."""
    for tree in trees:
        proc = subprocess.run([sys.executable, "benchmarks/bench_dag.py", "--config", "configs/paper.yaml", "--repeat", str(repeat + 1)],
                              cwd=tree.root, env=tree.env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{tree.name}: bench_dag.py failed:\n{proc.stdout[-1000:]}{proc.stderr[-2000:]}")
        times = [float(t) for t in re.search(r"wall seconds: ([\d., ]+) \(", proc.stdout).group(1).split(",")]
        jobs = re.search(r"^jobs: (\d+)", proc.stdout, re.M).group(1)
        row(f"snakemake -n configs/paper.yaml ({jobs} jobs) [{tree.name}]: first", {tree.name: times[0]}, 8.0)
        row(f"  later dry runs (median of {repeat}) [{tree.name}]", {tree.name: statistics.median(times[1:])}, 8.0)


def stats_rows(trees: list[Tree], root: Path) -> None:
    if not (root / "COMPLETE").exists():
        print(f"bench_stats.py: no generated folder under {root} (python benchmarks/bench_stats.py --root {root} makes it once): not measured")
        return
    for tree in trees:
        refresh = "--refresh" in (tree.root / "benchmarks" / "bench_stats.py").read_text()  # a baseline may predate it
        proc = subprocess.run([sys.executable, "benchmarks/bench_stats.py", "--root", str(root), *(["--refresh"] if refresh else [])],
                              cwd=tree.root, env=tree.env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{tree.name}: bench_stats.py failed:\n{proc.stdout[-1000:]}{proc.stderr[-2000:]}")
        total = float(re.search(r"TOTAL .*?: ([\d.]+) s without imports", proc.stdout).group(1))
        runs = re.search(r"^(\d+) runs,", proc.stdout, re.M).group(1)
        row(f"bench_stats.py: {runs} runs -> all tables [{tree.name}]", {tree.name: total}, 15.0 if runs == "10080" else None)
        if refresh:
            seconds = float(re.search(r"^REFRESH .*?: ([\d.]+) s", proc.stdout, re.M).group(1))
            row(f"  refresh after one method's runs join the study [{tree.name}]", {tree.name: seconds}, 5.0 if runs == "10080" else None)
        print("    " + "\n    ".join(line for line in proc.stdout.splitlines() if line.startswith("  ")), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to measure alongside (e.g. the main branch)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per row (default: %(default)s)")
    parser.add_argument("--skip-dag", action="store_true", help="leave out the snakemake dry runs")
    parser.add_argument("--skip-stats", action="store_true", help="leave out bench_stats.py")
    parser.add_argument("--stats-root", type=Path, default=Path("/tmp/fedrank_bench_stats"), help="bench_stats.py's folder (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedrank-bench-overheads-") as scratch:
        trees = ([Tree(args.baseline.resolve(), Path(scratch), "baseline")] if args.baseline else []) + [Tree(REPO, Path(scratch), "this")]
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; checkouts: " + ", ".join(f"{t.name} {t.root}" for t in trees))
        startup_rows(trees, args.repeat)
        if not args.skip_dag:
            dag_rows(trees, args.repeat)
        if not args.skip_stats:
            stats_rows(trees, args.stats_root)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
