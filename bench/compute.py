"""How much GPU time a workflow plan needs, estimated before anything runs (`fedrank plan`).

A run's work is counted in floating-point operations: its model's forward FLOPs on one image
at its image size (torch's FLOP counter, on the meta device: nothing is allocated), times 3 for
each training image (forward + backward), times rounds x local epochs x the training pool, plus
one forward pass per evaluation over the global test set for the global model and for every
client (as personalised methods do: an upper bound) and over the local test splits. The time is
that work at a sustained FLOP rate: measured from the finished GPU runs of the plan when there
are some (their FLOPs over their wall time), else an assumed rate (`--gpu-tflops`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)
ASSUMED_TFLOPS = 20.0  # fp32/TF32 training of a ResNet-50-sized CNN at batch 32 on one A100-class GPU sustains ~15-30


@cache
def forward_flops(model_json: str, image_size: int) -> float:
    """Forward FLOPs of one 3-channel image through the model (meta device: shapes only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.models import build_model

    section = {**json.loads(model_json), "weights": None}
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        build_model(section, 10, 3, image_size)(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


@cache
def dataset_images(data_json: str) -> float:
    """Images in a dataset: files counted under its data.root, or the dataset loaded when it has
    no folder (the bundled digits, a MedMNIST .npz); its published size (NaN: unknown) when absent."""
    from bench.config import expand_path
    from bench.data import DATASETS, import_loaders, load_dataset
    from bench.data.readers import has_image_name

    data = json.loads(data_json)
    import_loaders()
    spec = DATASETS[data["name"]]
    if spec.needs_root and not os.path.exists(expand_path(data["root"])):  # a plan made without the data
        return spec.images if spec.images is not None else math.nan
    if spec.needs_root and spec.root_kind == "folder":
        root = expand_path(data["root"])
        return sum(has_image_name(name) for _, _, files in os.walk(root) for name in files)
    return len(load_dataset(data).labels)


def run_flops(resolved: dict) -> float:
    """Training and evaluation FLOPs of one resolved run (see module doc)."""
    data, part, train = resolved["data"], resolved["partition"], resolved["train"]
    images = dataset_images(json.dumps(data, sort_keys=True))
    test = images * data["test_fraction"]
    pool = images - test
    forward = forward_flops(json.dumps(resolved["model"], sort_keys=True), data["image_size"])
    rounds, every = train["rounds"], resolved["eval"]["every"]
    evaluations = rounds // every + (rounds % every != 0)
    training = 3 * forward * rounds * train["local_epochs"] * pool * (1 - part["local_test_fraction"])
    evaluation = forward * evaluations * ((part["clients"] + 1) * test + pool * part["local_test_fraction"])
    return training + evaluation


def measured_tflops(plan) -> float | None:
    """Sustained TFLOP/s of the plan's finished GPU runs (median), or None when there are none."""
    import statistics

    rates = []
    for run_id, run in plan.runs.items():
        record = Path(plan.record(run_id))
        try:
            done = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if done.get("status") == "completed" and str(done.get("environment", {}).get("device", "")).startswith("cuda") and done["timing"]["wall_seconds"] > 0:
            rates.append(run_flops(run.resolved) / done["timing"]["wall_seconds"] / 1e12)
    return statistics.median(rates) if rates else None


def gpu_hours(plan, tflops: float | None = None) -> tuple[dict[str, float], float, str]:
    """(GPU-hours per run id, the TFLOP/s used, where that rate comes from)."""
    measured = measured_tflops(plan) if tflops is None else None
    rate = tflops or measured or ASSUMED_TFLOPS
    source = ("given with --gpu-tflops" if tflops else "measured from this plan's finished GPU runs" if measured
              else f"assumed; pass --gpu-tflops for your GPU's")
    return {run_id: run_flops(run.resolved) / (rate * 1e12) / 3600 for run_id, run in plan.runs.items()}, rate, source
