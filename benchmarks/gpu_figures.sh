#!/usr/bin/env bash
# The GPU figures of issue 15, on one NVIDIA H100 or H200, in under 8 minutes (each step has its
# own time limit, 475 s in all, so a slow step costs its figure, not the others):
#   1. tests/test_gpu.py: the training step loop never waits for the GPU (CUDA sync debug mode)
#   2. Res2Net50-SA at 224 px, bf16, channels_last, without and with torch.compile: FedLSC, 3 clients,
#      1 local epoch: seconds per round, images/s, MFU, FL / centralized
#   3. the small CNN at 32 px: images/s of 1, 4 and 8 concurrent runs on the one GPU
# Data: HAM10000 when $FEDRANK_DATA_ROOT/ham10000_200x150 exists (its 200x150 JPEGs are 55 MB:
# copy them to shared/data/ in the checkout to take them along), else a stand-in of its shape.
# Figures (tables, JSON, summary.txt) go to ${OUT:-results/gpu-figures}.
#
#   FEDRANK_DATA_ROOT=shared/data bash benchmarks/gpu_figures.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-results/gpu-figures}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

data=(--dataset standin)
if [ -f "${FEDRANK_DATA_ROOT:-}/ham10000_200x150/HAM10000_metadata.csv" ]; then
    data=(--dataset ham10000 --set "data.root=$FEDRANK_DATA_ROOT/ham10000_200x150")
fi
bench() {  # bench SECONDS NAME ARGS...: one bench_throughput.py measurement, its table and JSON in $out
    local limit=$1 name=$2
    shift 2
    timeout "$limit" python benchmarks/bench_throughput.py "${data[@]}" --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.txt" \
        || echo "$name: no figure (exit $?, limit $limit s)" | tee -a "$out/failed.txt"
}

timeout 60 python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/test_gpu.txt"

res2net=(--model res2net50_sa --image-size 224 --clients 3 --method fedlsc --precision bf16 --channels-last --warmup 1 --repeats 2)
bench 120 res2net50_sa-bf16-nhwc "${res2net[@]}"
bench 160 res2net50_sa-bf16-nhwc-compiled "${res2net[@]}" --compile

for n in 1 4 8; do  # concurrent runs on the one GPU, measuring together from a barrier
    barrier=$(mktemp -d)
    for i in $(seq "$n"); do
        bench 45 "small_cnn-32px-x$n-$i" --model small_cnn --image-size 32 --clients 3 --warmup 1 --repeats 3 \
            --set train.local_epochs=2 --barrier "$barrier" --parties "$n" >/dev/null &
    done
    wait
    rm -rf "$barrier"
done

python - "$out" <<'EOF' | tee "$out/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def load(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None

for name in ("res2net50_sa-bf16-nhwc", "res2net50_sa-bf16-nhwc-compiled"):
    r = load(name)
    if r:
        mfu = f"{r['fl']['mfu']:.1%}" if r["fl"]["mfu"] is not None else "n/a"
        print(f"{name}: {r['seconds_per_round']:.2f} s/round, FL {r['fl']['images_per_second']:.0f} images/s, "
              f"centralized {r['central']['images_per_second']:.0f} images/s, FL/centralized {r['fl_over_central']:.3f}, MFU {mfu}")
for n in (1, 4, 8):
    runs = [r for r in (load(f"small_cnn-32px-x{n}-{i}") for i in range(1, n + 1)) if r]
    if len(runs) == n:
        images = sum(r["window"]["images"] for r in runs)
        seconds = max(r["window"]["end"] for r in runs) - min(r["window"]["start"] for r in runs)
        print(f"small_cnn 32 px, {n} concurrent run(s): {images / seconds:.0f} images/s in all "
              f"({images / seconds / n:.0f} per run; one run alone: see x1)")
EOF
