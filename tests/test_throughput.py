"""benchmarks/bench_throughput.py runs on CPU in CI-sized settings and reports what it promises."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def load_bench_throughput():
    spec = importlib.util.spec_from_file_location("bench_throughput", REPO / "benchmarks" / "bench_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_throughput_benchmark_runs_on_cpu_and_prints_its_table(tmp_path, capsys):
    bench = load_bench_throughput()
    out = tmp_path / "figures.json"
    result = bench.main(["--samples", "240", "--image-size", "8", "--clients", "2", "--warmup", "0", "--repeats", "1", "--set", "model.widths=[8]",
                         "--set", "runtime.threads=1", "--json", str(out), "--barrier", str(tmp_path / "barrier"), "--parties", "1"])
    printed = capsys.readouterr().out
    assert "FL local training" in printed and "centralized" in printed and "FL / centralized time per image" in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["fl"]["images"] == result["central"]["images"] > 0  # the same samples
    assert abs(result["fl"]["steps"] - result["central"]["steps"]) < result["clients"]  # the same steps, up to a partial batch per client
    assert result["fl_over_central"] > 0 and result["fl_over_central_cpu"] > 0 and result["seconds_per_round"] >= result["fl"]["seconds"]
    # 8 px: a 3x3 conv to 8 channels (forward and weight gradient; no input gradient at the first layer),
    # a linear head 8 -> 7 classes (forward, weight and input gradients); 2 FLOPs per multiply-add
    conv, head = 2 * (8 * 8) * 8 * (3 * 3 * 3), 2 * 8 * 7
    assert result["training_flops_per_image"] == 2 * conv + 3 * head
    assert result["fl"]["mfu"] is None  # no peak for a CPU


def test_peak_flops_come_from_the_device_name():
    bench = load_bench_throughput()
    assert bench.peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert bench.peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.5
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 494.7
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert bench.peak_tflops("NVIDIA L40S", "bf16") == 362.1 and bench.peak_tflops("NVIDIA L4", "bf16") == 121.0
    assert bench.peak_tflops("Tesla T4", "bf16") is None
