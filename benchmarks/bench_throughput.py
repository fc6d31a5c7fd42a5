"""Training throughput of one federated round against centralized training, in the same process.

    python benchmarks/bench_throughput.py [--model small_cnn] [--image-size 32] [--clients 3]
        [--precision fp32|bf16] [--channels-last] [--compile] [--method fedavg] [--dataset standin]
        [--warmup 1] [--repeats 3] [--set KEY=VALUE ...] [--json FILE] [--barrier DIR --parties N]

Each repeat plays one round of the method with the engine (`play_round`: every client receives,
trains its local epochs, uploads; the server aggregates; evaluation), timing the clients' local
training inside it, then trains the same model object with the same trainer on the union of the
clients' training samples for the same epochs: centralized training of the same samples in
(up to one partial batch per client) the same steps. FL / centralized is the time per image of
the round's local training over that of centralized training (target <= 1.05: federating the
data costs at most 5% of training speed). Seconds per round is the whole round. On a GPU, MFU
is images/s times the training FLOPs per image (forward and backward, `torch.utils.flop_counter`)
over the device's dense tensor-core peak for the precision (from its name; TF32 for fp32, which
cuDNN convolutions use by default). Every figure is the fastest of --repeats, after --warmup
rounds (compilation, cuDNN and allocator warm-up), except FL / centralized: the median of the
repeats' ratios, each of an FL round and a centralized fit run back to back, in alternating order;
on a CPU shared with other work, the same ratio of this process's CPU time is the steadier one.

The data is a stand-in of HAM10000's shape by default (10,015 random images, its 7 class shares:
throughput does not depend on pixel values); `--dataset ham10000 --set data.root=...` uses the
real one. --barrier DIR --parties N makes N concurrent processes (runs sharing one GPU) start
measuring together; the images all of them trained while measuring (`window` in --json) over
the wall time from the first start to the last end is the GPU's throughput at N runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.config import load_config
from bench.data import ImageDataset, register_dataset
from bench.engine.federation import Client
from bench.engine.run import Progress, play_round
from bench.engine.setup import build_experiment, configure_torch, select_device
from bench.engine.trainer import Learner
from bench.models import build_model

# Dense (no sparsity) tensor-core peaks in TFLOP/s, (bf16, tf32), from NVIDIA's data sheets;
# a name matches when it holds every word of the key, most specific key first.
PEAK_TFLOPS = {
    "H200": (989.4, 494.7),
    "H100 PCIe": (756.5, 378.0),
    "H100": (989.4, 494.7),
    "A100": (312.0, 156.0),
    "L40S": (362.1, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
}
HAM10000_SHARES = np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015  # akiec bcc bkl df mel nv vasc


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's dense peak for the precision, or None for a device not in PEAK_TFLOPS."""
    for key, (bf16, tf32) in PEAK_TFLOPS.items():
        if all(word in device_name for word in key.split()):
            return bf16 if precision == "bf16" else tf32
    return None


def register_standin(samples: int) -> None:
    """Dataset `standin`: `samples` random uint8 images at data.image_size, labels in HAM10000's class shares."""

    @register_dataset("standin", default_size=32, needs_root=False, summary="random images of HAM10000's shape (benchmarks)")
    def load(cfg: dict) -> ImageDataset:
        rng = np.random.default_rng(cfg["split_seed"])
        size = cfg["image_size"]
        return ImageDataset(
            name="standin",
            images=rng.integers(0, 256, size=(samples, 3, size, size), dtype=np.uint8),
            labels=rng.choice(len(HAM10000_SHARES), size=samples, p=HAM10000_SHARES),
            classes=[f"class{c}" for c in range(len(HAM10000_SHARES))],
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        )


def run_config(args: argparse.Namespace) -> dict:
    overrides = [f"model={args.model}", f"method={args.method}", f"data.name={args.dataset}", f"data.image_size={args.image_size}",
                 f"partition.clients={args.clients}", f"runtime.precision={args.precision}", f"runtime.channels_last={args.channels_last}",
                 f"runtime.compile={args.compile}", f"runtime.device={args.device}", *args.set]
    return load_config(None, overrides)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(fn(), seconds), the device's queued work included."""
    synchronize(device)
    tic = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - tic


def training_flops_per_image(exp, device: torch.device) -> float:
    """Forward and backward FLOPs of one training batch, per image (an uncompiled copy of the model)."""
    cfg, data = exp.fed.config, exp.fed.data
    model = build_model(cfg["model"], data.num_classes, exp.dataset.channels, exp.dataset.image_size).to(device)
    x, y = data.batch(exp.fed.clients[0].train[: cfg["train"]["batch_size"]])
    with FlopCounterMode(display=False) as counter:
        with exp.fed.trainer.autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
    return counter.get_total_flops() / len(x)


def wait_for_parties(barrier: Path, parties: int, timeout: float = 600) -> None:
    """Check in at `barrier` and wait until `parties` processes have."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(barrier.iterdir()))} of {parties} processes reached {barrier}")
        time.sleep(0.05)


def timed_fits(fed, device: torch.device) -> list[tuple[int, int, float, float]]:
    """(samples, steps, seconds, CPU seconds of this process) of every local fit the trainer runs
    from now on, appended to the returned list."""
    fits, fit = [], fed.trainer.fit

    def timed_fit(*args, **kwargs):
        cpu = time.process_time()
        result, seconds = timed(lambda: fit(*args, **kwargs), device)
        fits.append((result.samples, result.steps, seconds, time.process_time() - cpu))
        return result

    fed.trainer.fit = timed_fit
    return fits


def repeat(exp, progress: Progress, pooled: Client, fits: list, device: torch.device, central_first: bool):
    """One FL round and one centralized fit of its samples, in either order (drifting load cancels
    out over repeats): (FL fits summed, the centralized fit, seconds of the whole round)."""
    fed = exp.fed

    def fl_round():
        fits.clear()
        _, seconds = timed(lambda: play_round(exp, progress), device)
        return tuple(map(sum, zip(*fits))), seconds

    def central():
        fits.clear()
        fed.trainer.fit(pooled, fed.round, [Learner(fed.model)])
        return fits[0]

    if central_first:
        alone = central()
        fl, seconds = fl_round()
    else:
        fl, seconds = fl_round()
        alone = central()
    return fl, alone, seconds


def measure(args: argparse.Namespace) -> dict:
    """Warm-up rounds, then --repeats of one FL round and one centralized fit: the fastest of each,
    and the median of the repeats' FL / centralized time per image."""
    register_standin(args.samples)
    cfg = run_config(args)
    device = select_device(cfg["runtime"]["device"])
    configure_torch(cfg["runtime"], device)
    exp = build_experiment(cfg, device)
    fed = exp.fed
    exp.method.setup(fed)
    exp.method.prepare(fed)
    fits = timed_fits(fed, device)
    pooled = Client(len(fed.clients), torch.cat([c.train for c in fed.clients]), fed.clients[0].test[:0])
    progress, best, ratios, cpu_ratios = Progress(), {"fl": None, "central": None, "round": None}, [], []
    window = {"images": 0}  # everything trained while measuring, from when to when (wall clock)
    for r in range(1, args.warmup + args.repeats + 1):
        if r == args.warmup + 1:
            if args.barrier:
                wait_for_parties(Path(args.barrier), args.parties)
            window["start"] = time.time()
        fed.round = r
        fl, central, round_seconds = repeat(exp, progress, pooled, fits, device, central_first=r % 2 == 0)
        if r > args.warmup:
            window["images"] += fl[0] + central[0]
            ratios.append((fl[2] / fl[0]) / (central[2] / central[0]))
            cpu_ratios.append((fl[3] / fl[0]) / (central[3] / central[0]))
            best["round"] = min(round_seconds, best["round"] or round_seconds)
            best["fl"] = min(best["fl"] or fl, fl, key=lambda fit: fit[2])
            best["central"] = min(best["central"] or central, central, key=lambda fit: fit[2])
    window["end"] = time.time()
    flops = training_flops_per_image(exp, device)
    peak = peak_tflops(torch.cuda.get_device_name(device), args.precision) if device.type == "cuda" else None
    rows = {}
    for key, (samples, steps, seconds, _) in (("fl", best["fl"]), ("central", best["central"])):
        rate = samples / seconds
        rows[key] = {"images": samples, "steps": steps, "seconds": seconds, "images_per_second": rate,
                     "mfu": rate * flops / (peak * 1e12) if peak else None}
    return {
        "model": cfg["model"]["name"], "image_size": cfg["data"]["image_size"], "clients": len(fed.clients), "method": cfg["method"]["name"],
        "dataset": cfg["data"]["name"], "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "fl": rows["fl"], "central": rows["central"], "fl_over_central": statistics.median(ratios), "fl_over_central_repeats": ratios,
        "fl_over_central_cpu": statistics.median(cpu_ratios),
        "seconds_per_round": best["round"], "training_flops_per_image": flops, "peak_tflops": peak, "window": window,
    }


def table(result: dict) -> str:
    setting = ", ".join(f"{k} {result[k]}" for k in ("model", "image_size", "clients", "method", "dataset", "precision", "channels_last", "compile", "device"))
    lines = [setting, f"{'':<20}{'images':>8}{'steps':>7}{'seconds':>10}{'images/s':>11}{'MFU':>8}"]
    for key, label in (("fl", "FL local training"), ("central", "centralized")):
        row = result[key]
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
        lines.append(f"{label:<20}{row['images']:>8}{row['steps']:>7}{row['seconds']:>10.3f}{row['images_per_second']:>11.1f}{mfu:>8}")
    repeats = ", ".join(f"{ratio:.3f}" for ratio in result["fl_over_central_repeats"])
    lines.append(f"FL / centralized time per image: {result['fl_over_central']:.3f} (median of {repeats}; target <= 1.05)")
    lines.append(f"FL / centralized CPU time per image of this process: {result['fl_over_central_cpu']:.3f} (on a CPU: robust to other processes' load)")
    lines.append(f"seconds per round: {result['seconds_per_round']:.3f} (local training, aggregation, evaluation)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small_cnn", help="small_cnn, res2net50_sa, timm:<name> (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    parser.add_argument("--method", default="fedavg")
    parser.add_argument("--dataset", default="standin", help="standin (random images of HAM10000's shape) or any dataset name")
    parser.add_argument("--samples", type=int, default=10015, help="images of the stand-in dataset (default: HAM10000's %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=1, help="rounds played before measuring")
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds (the fastest counts)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other run config key, as fedrank run --set")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--barrier", help="folder where --parties concurrent processes check in before measuring")
    parser.add_argument("--parties", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
