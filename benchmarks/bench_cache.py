"""Decode-cache speed on the real HAM10000 images: building the cache, and loading it in a job.

    FEDRANK_DATA_ROOT=/path/to/data python benchmarks/bench_cache.py [--size 224] [--loads 3]

Build: a fresh cache folder, so it measures everything a first run pays: checksumming the
10,015 source files (SHA-256) and decoding them on every usable core (resize with aspect kept,
centre crop). Prints images/s for each part and in total.

Load: what every later training job pays before its first round. Each load runs in a new
Python process (nothing warm in memory but the OS page cache) and times `load_dataset`:
reading the metadata CSV, checking the sources against the checksum index (one stat per
file), memory-mapping the cached array and verifying its CRC-32. Prints the median of --loads
and the CRC-32 share of it. The target is under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD_ONE = """
import json, sys, time
import numpy as np
from bench.config import resolve
from bench.data import load_dataset
from bench.data import cache
cfg = resolve(json.loads(sys.argv[1]))
crc_time = []
real_crc = cache.crc32
def timed_crc(array):
    tic = time.perf_counter(); out = real_crc(array); crc_time.append(time.perf_counter() - tic); return out
cache.crc32 = timed_crc
tic = time.perf_counter()
ds = load_dataset(cfg["data"])
seconds = time.perf_counter() - tic
print(json.dumps({"seconds": seconds, "crc_seconds": sum(crc_time), "shape": list(ds.images.shape), "bytes": int(ds.images.nbytes)}))
"""


def time_calls(module, name: str, phases: dict[str, float]) -> None:
    """Wrap module.name so the seconds spent in it add up in phases[name]."""
    real = getattr(module, name)

    def timed(*args, **kwargs):
        tic = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - tic

    setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(os.environ.get("FEDRANK_DATA_ROOT", "../shared/data"), "ham10000_200x150"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--loads", type=int, default=3, help="timed loads, each in a new process")
    parser.add_argument("--cache-dir", help="cache folder (default: a fresh temporary folder, removed afterwards)")
    args = parser.parse_args()
    if not Path(args.root, "HAM10000_metadata.csv").is_file():
        sys.exit(f"bench_cache: no HAM10000 under {args.root}; set FEDRANK_DATA_ROOT or --root")

    from bench.config import resolve
    from bench.data import cache, load_dataset, readers

    with tempfile.TemporaryDirectory(prefix="fedrank-cache-") as scratch:
        cache_dir = args.cache_dir or scratch
        cfg = {"data": {"name": "ham10000", "root": args.root, "image_size": args.size, "cache_dir": cache_dir}}
        resolved = resolve(cfg)
        phases: dict[str, float] = {}
        time_calls(readers, "source_files", phases)  # checksumming (the loader calls it from readers)
        time_calls(cache, "decode_all", phases)
        tic = time.perf_counter()
        ds = load_dataset(resolved["data"])
        build = time.perf_counter() - tic
        n = len(ds.labels)
        print(f"HAM10000: {n:,} images -> {tuple(ds.images.shape)} uint8 ({ds.images.nbytes / 2**30:.2f} GiB), {cache.usable_cores()} worker process(es)")
        if "decode_all" in phases:
            print(f"build   total {build:7.2f} s  {n / build:7.1f} images/s")
            print(f"        checksums {phases['source_files']:6.2f} s  {n / phases['source_files']:7.1f} files/s (SHA-256, once per file)")
            print(f"        decode    {phases['decode_all']:6.2f} s  {n / phases['decode_all']:7.1f} images/s at {args.size} px")
        else:
            print(f"build   not measured: {cache_dir} already holds this cache (omit --cache-dir to time a build)")
        del ds

        loads = []
        for _ in range(args.loads):
            run = subprocess.run([sys.executable, "-c", LOAD_ONE, json.dumps(cfg)], capture_output=True, text=True, check=True)
            loads.append(json.loads(run.stdout.strip().splitlines()[-1]))
        seconds = [r["seconds"] for r in loads]
        crc = statistics.median(r["crc_seconds"] for r in loads)
        print(f"load    median {statistics.median(seconds):6.2f} s over {len(seconds)} new processes "
              f"(all: {', '.join(f'{s:.2f}' for s in seconds)}); CRC-32 verification {crc:.2f} s of it; target < 2 s")


if __name__ == "__main__":
    main()
