"""FedLSC aggregation speed: fedrank's vectorised version against per-pair Python loops, on
Res2Net50-SA state dicts (7 classes), all in the same process.

    python benchmarks/bench_fedlsc_aggregation.py [--clients 3 10] [--repeats 3]

Baselines, both computing Eq.1-5 for every floating-point layer with one `.item()` per pair:
  per-pair loop   the paper read literally: for each layer and ordered pair (i, j), form both
                  updates w - w_g and take F.cosine_similarity; weighted sum client by client.
  hoisted loop    the same with each layer's updates formed once (a faster hand-written loop).
For reference it also times fedrank's GPU code path (plain torch ops, layer by layer) on the CPU.
The script checks every implementation gives the same global model, then prints seconds per
aggregation (the fastest of --repeats, robust to noise from other processes) and fedrank's
speed-up over each, with the allocator setting of every fedrank run (`use_huge_pages`).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from bench.engine import layerwise
from bench.engine.layout import StateLayout
from bench.engine.setup import use_huge_pages
from bench.methods.fedlsc import cosine_from_grams, mean_similarity_to_others, similarity_weights
from bench.models import build_model, resolve_model_config

TAU = 0.2


def fedrank_aggregate(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout, grams=layerwise.update_grams,
                      weighted_sum=layerwise.layerwise_weighted_sum) -> torch.Tensor:
    similarity = cosine_from_grams(grams(states, reference, layout))
    weights = similarity_weights(mean_similarity_to_others(similarity), TAU)
    return weighted_sum(weights, states, layout)


def torch_path(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    return fedrank_aggregate(states, reference, layout, layerwise.update_grams_torch, layerwise.layerwise_weighted_sum_torch)


def per_pair_loop(states: list[dict[str, torch.Tensor]], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n, new = len(states), {}
    for key, ref in reference.items():
        similarity = torch.zeros(n, n)
        for i in range(n):
            for j in range(n):
                if i != j:
                    update_i, update_j = (states[i][key] - ref).flatten(), (states[j][key] - ref).flatten()
                    similarity[i, j] = F.cosine_similarity(update_i, update_j, dim=0).item()
        weights = torch.softmax(similarity.sum(1) / (n - 1) / TAU, dim=0)
        new[key] = sum(weights[i].item() * states[i][key] for i in range(n))
    return new


def hoisted_loop(states: list[dict[str, torch.Tensor]], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n, new = len(states), {}
    for key, ref in reference.items():
        updates = [(s[key] - ref).flatten() for s in states]
        norms = [u.norm().item() for u in updates]
        mean_similarity = []
        for i in range(n):
            total = sum((updates[i] @ updates[j]).item() / (norms[i] * norms[j]) for j in range(n) if j != i and norms[i] > 0 and norms[j] > 0)
            mean_similarity.append(total / (n - 1))
        exps = [math.exp(s / TAU) for s in mean_similarity]
        new[key] = sum((e / sum(exps)) * s[key] for e, s in zip(exps, states))
    return new


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    use_huge_pages()
    torch.manual_seed(0)
    model = build_model(resolve_model_config({"name": "res2net50_sa"}), num_classes=7, in_chans=3, image_size=224)
    layout = StateLayout(model)
    reference = layout.gather(model)
    print(f"Res2Net50-SA: {layout.layers} floating-point layers, {layout.size:,} floats; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'clients':>7} {'fedrank s':>10} {'per-pair loop s':>16} {'speed-up':>9} {'hoisted loop s':>15} {'speed-up':>9}"
          f" {'torch path s':>13} {'speed-up':>9}")
    for n in args.clients:
        states = reference + 1e-3 * torch.randn(n, layout.size)
        state_dicts, reference_dict = [layout.views(row) for row in states], layout.views(reference)
        ours = fedrank_aggregate(states, reference, layout)
        torch.testing.assert_close(ours, torch_path(states, reference, layout), rtol=1e-5, atol=1e-6)
        for baseline in (per_pair_loop, hoisted_loop):
            theirs = torch.cat([v.flatten() for v in baseline(state_dicts, reference_dict).values()])
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        fast = timed(lambda: fedrank_aggregate(states, reference, layout), args.repeats)
        naive = timed(lambda: per_pair_loop(state_dicts, reference_dict), max(2, args.repeats // 2))
        hoisted = timed(lambda: hoisted_loop(state_dicts, reference_dict), max(2, args.repeats // 2))
        plain = timed(lambda: torch_path(states, reference, layout), args.repeats)
        print(f"{n:>7} {fast:>10.3f} {naive:>16.3f} {naive / fast:>8.1f}x {hoisted:>15.3f} {hoisted / fast:>8.1f}x"
              f" {plain:>13.3f} {plain / fast:>8.1f}x")


if __name__ == "__main__":
    main()
