"""The runtime's speed switches (precision, channels_last, compile): inert by default (plain fp32
training, bit for bit), each one recorded in run.json, bf16 in the run id, one compiled graph
reused by every client and round."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bench.engine.run as engine_run
from bench.config import config_digest, run_id
from bench.engine.run import RunPaths, execute
from bench.engine.seeds import derive_seed
from bench.engine.setup import build_experiment
from bench.engine.trainer import Learner
from conftest import tiny_config

COMPILES: list[str] = []


@torch._dynamo.register_backend(name="fedrank_test_counting")
def counting_backend(graph: torch.fx.GraphModule, example_inputs) -> callable:
    """A torch.compile backend that counts the graphs it is given and runs them as captured."""
    COMPILES.append(graph.code)
    return graph.forward


def metrics_of(path) -> pd.DataFrame:
    return pd.read_parquet(RunPaths(path).metrics)


def plain_epoch(model: nn.Module, exp, client, round: int) -> None:
    """One local epoch written out as plain fp32 PyTorch, seeded like the trainer: what the
    default runtime must reproduce bit for bit."""
    cfg, seed = exp.fed.config["train"], exp.fed.config["seed"]
    generator = torch.Generator().manual_seed(derive_seed(seed, round, client.id, 0))
    torch.manual_seed(derive_seed(seed, round, client.id, 0, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    model.train()
    for index in client.train[torch.randperm(len(client.train), generator=generator)].split(cfg["batch_size"]):
        if len(index) >= 2:
            x, y = exp.fed.data.batch(index, generator)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad_norm"])
            optimizer.step()


def test_the_default_runtime_trains_in_plain_fp32_bit_for_bit():
    exp = build_experiment(tiny_config(augment__hflip=0.5), torch.device("cpu"))
    client, model = exp.fed.clients[1], exp.fed.model
    reference = copy.deepcopy(model)
    seen = []
    model.body.register_forward_hook(lambda module, args, out: seen.append((torch.is_autocast_enabled("cpu"), args[0].is_contiguous())))
    exp.fed.round = 1
    exp.fed.trainer.fit(client, 1, [Learner(model)])
    plain_epoch(reference, exp, client, 1)
    assert seen and set(seen) == {(False, True)}  # no autocast, contiguous (NCHW) batches
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), key


def test_fp32_adds_nothing_to_the_run_id_and_bf16_is_a_run_of_its_own(tmp_path):
    cfg = tiny_config(method="fedavg", train__rounds=2)
    without_runtime = {k: v for k, v in cfg.items() if k != "runtime"}
    assert config_digest(cfg) == config_digest(without_runtime)  # run ids of existing runs are unchanged
    bf16 = tiny_config(method="fedavg", train__rounds=2, runtime__precision="bf16")
    assert run_id(bf16) != run_id(cfg)
    assert run_id(tiny_config(method="fedavg", train__rounds=2, runtime__channels_last=True)) == run_id(cfg)
    for name, config in (("fp32", cfg), ("bf16", bf16), ("bf16-again", bf16)):
        execute(config, tmp_path / name, show_progress=False)
    fp32, first, again = (metrics_of(tmp_path / name) for name in ("fp32", "bf16", "bf16-again"))
    pd.testing.assert_frame_equal(first, again, check_exact=True)  # bf16 is deterministic itself
    loss = (first["metric"] == "loss") & (first["scope"] == "global")
    assert not first["value"][loss].equals(fp32["value"][loss])
    assert first["value"][loss].to_numpy() == pytest.approx(fp32["value"][loss].to_numpy(), rel=0.05)
    assert json.loads(RunPaths(tmp_path / "bf16").record.read_text())["config"]["runtime"]["precision"] == "bf16"


def test_bf16_runs_forward_passes_under_autocast_and_keeps_fp32_weights():
    exp = build_experiment(tiny_config(runtime__precision="bf16"), torch.device("cpu"))
    seen = []
    exp.fed.model.body.register_forward_hook(lambda module, args, out: seen.append((torch.is_autocast_enabled("cpu"), out.dtype)))
    exp.fed.round = 1
    fit = exp.fed.trainer.fit(exp.fed.clients[0], 1, [Learner(exp.fed.model)])
    assert set(seen) == {(True, torch.bfloat16)} and torch.isfinite(torch.tensor(fit.loss))
    assert all(p.dtype == torch.float32 for p in exp.fed.model.parameters())


def test_channels_last_models_and_batches_match_the_default_within_float_noise(tmp_path):
    cfg = tiny_config(method="fedlsc", train__rounds=2, runtime__channels_last=True)
    exp = build_experiment(cfg, torch.device("cpu"))
    conv = next(m for m in exp.fed.model.modules() if isinstance(m, nn.Conv2d))
    x, _ = exp.fed.data.batch(exp.fed.clients[0].train[:4])
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and x.is_contiguous(memory_format=torch.channels_last)
    execute(cfg, tmp_path / "nhwc", show_progress=False)
    execute(tiny_config(method="fedlsc", train__rounds=2), tmp_path / "nchw", show_progress=False)
    assert metrics_of(tmp_path / "nhwc")["value"].to_numpy() == pytest.approx(metrics_of(tmp_path / "nchw")["value"].to_numpy(), rel=1e-4, abs=1e-6)


def test_the_model_is_compiled_once_and_every_client_and_round_reuses_it(tmp_path, monkeypatch):
    execute(tiny_config(method="fedavg"), tmp_path / "eager", show_progress=False)
    torch._dynamo.reset()
    COMPILES.clear()
    after_round = []
    play = engine_run.play_round

    def counted(exp, progress, *beat):
        rows = play(exp, progress, *beat)
        after_round.append(len(COMPILES))
        return rows

    monkeypatch.setattr(engine_run, "play_round", counted)
    record = execute(tiny_config(method="fedavg", runtime__compile="fedrank_test_counting"), tmp_path / "compiled", show_progress=False)
    # round 1 captures body and head for training, the last short batch and evaluation; 3 clients, later rounds: nothing new
    assert 0 < after_round[0] <= 8 and after_round == [after_round[0]] * 3, after_round
    assert record["config"]["runtime"]["compile"] == "fedrank_test_counting"
    compiled = build_experiment(tiny_config(runtime__compile="fedrank_test_counting"), torch.device("cpu")).fed.layout
    assert compiled.keys == build_experiment(tiny_config(), torch.device("cpu")).fed.layout.keys  # compiled in place: same state dict
    pd.testing.assert_frame_equal(metrics_of(tmp_path / "compiled"), metrics_of(tmp_path / "eager"), check_exact=True)
