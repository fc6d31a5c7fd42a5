"""Any Flower strategy (flwr >= 1.42, Message API), ranked unchanged: `{name: flower, strategy:
"flwr.serverapp.strategy:FedAdam", kwargs: {eta: 0.01}}` (`pip install -e ".[flower]"`).

Each round the strategy's `configure_train(round, arrays, config, grid)` gets the global state as
an `ArrayRecord` and a grid stand-in listing the clients the engine sampled (node id = client id
+ 1), so a strategy that samples (fraction_train < 1) chooses among the round's seeded draw and
every method of a seed still shares it; the clients its messages go to take part. They train with
fedrank's local training; a `proximal-mu` in the round's config (Flower's FedProx) adds the
proximal term (mu/2)||w - w^t||^2, other config keys are ignored. Each reporting client's state
goes back as a reply `Message` with an `ArrayRecord` of the state and a `MetricRecord` with
`num-examples` (its training samples) and, for a strategy with a `train_loss_key` (Flower's
QFedAvg), the received model's loss on the client's training labels before training
(`fed.train_loss`: q-FedAvg's F_k(w^t)); `aggregate_train(round, replies)` gives the new global
state.

Reproducibility: Flower samples with Python's `random`, seeded here per (run seed, round) and
restored afterwards; the strategy's own state (FedOpt's m_t, v_t and current arrays, FedAvgM's
momentum) is copied into `fed.server` after every aggregation and back into a fresh strategy on
resume, so runs resume exactly. Messages are built outside a Flower run by setting Flower's task
identity (run, node and task id 0) for the duration of the calls.

Differences from fedrank's own methods, by design of each code base (tests/test_flower.py checks
the numbers agree where the equations do): Flower's FedOpt strategies step every array, BatchNorm
running statistics included (fedrank's average buffers), start v at 0 (fedrank's FedAdam/FedYogi/
FedAdagrad at tau^2, Reddi et al. Algorithm 2) and FedAdam bias-corrects eta by sqrt(1 - beta2^(t+1))
/ (1 - beta1^(t+1)) (fedrank's does not, as the paper); Flower's FedAvgM starts its momentum at the
first pseudo-gradient and steps x - eta * momentum with the pseudo-gradient x - mean (the same as
fedrank's v_t = beta v + Delta with v_0 = 0).
Flower's QFedAvg is fedrank's qffl with L = 1/client_learning_rate, but over every array (BatchNorm
buffers in ||Delta w||^2 and the step; fedrank's qffl: trainable elements, buffers averaged).
Hooks used: prepare, select_clients, local_loss, train, aggregate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.engine.seeds import derive_seed
from bench.errors import UserError
from bench.methods import Method, hparam, proximal_term, register

RECEIVED_LOSS = "received_loss"  # Update.extra: the received model's training loss, for a strategy with a train_loss_key
STRATEGY_STATE = "flower_strategy"  # fed.server: the strategy's own state, as tensors
SAMPLING_STREAM = 0xF10  # seed stream of Flower's client sampling
SKIP = object()  # a strategy attribute that is configuration, not state


def flwr_modules():
    """flwr's app and task-identity modules, or a one-line error saying how to install them."""
    try:
        import flwr.app as app
        from flwr.supercore.task_identity import TaskIdentity
    except ImportError:
        raise UserError('method flower needs Flower: pip install -e ".[flower]" (flwr==1.42.0)') from None
    return app, TaskIdentity


def load_strategy(spec: str, kwargs: dict | None):
    """The strategy object of "module:Class" with its keyword arguments."""
    flwr_modules()
    module, _, cls = spec.partition(":")
    try:
        strategy_class = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"config key 'method.strategy': cannot import {spec!r}; give module:Class, e.g. flwr.serverapp.strategy:FedAvg") from None
    try:
        return strategy_class(**(kwargs or {}))
    except TypeError as exc:
        raise UserError(f"config key 'method.kwargs': {spec}: {exc}") from None


@contextlib.contextmanager
def flower_context(seed: int):
    """Flower's task identity set (messages can be built outside a run) and Python's `random`
    seeded (Flower samples with it), both restored afterwards."""
    _, identity = flwr_modules()
    saved_identity = (identity._run_id, identity._node_id, identity._task_id)
    saved_random = random.getstate()
    flwr_log = logging.getLogger("flwr")
    saved_level = flwr_log.level
    identity.run_id, identity.node_id, identity.task_id = 0, 0, 0
    random.seed(seed)
    flwr_log.setLevel(logging.WARNING)  # Flower logs every sampling and aggregation at INFO
    try:
        yield
    finally:
        identity.run_id, identity.node_id, identity.task_id = saved_identity
        random.setstate(saved_random)
        flwr_log.setLevel(saved_level)


def to_record(app, fed, state: torch.Tensor):
    """A flat state as an ArrayRecord keyed like the model's state dict."""
    return app.ArrayRecord(OrderedDict((k, v.detach().cpu().clone()) for k, v in fed.layout.views(state).items()))


def from_record(fed, record) -> torch.Tensor:
    """An ArrayRecord back to a flat state on the federation's device and dtype."""
    arrays = record.to_numpy_ndarrays() if list(record.keys()) != fed.layout.keys else [record[k].numpy() for k in fed.layout.keys]
    return torch.cat([torch.as_tensor(np.asarray(a)).reshape(-1) for a in arrays]).to(fed.global_state)


def to_state(value: Any, app) -> Any:
    """A strategy attribute as checkpointable tensors and plain values (SKIP: not state)."""
    if isinstance(value, app.ArrayRecord):
        return {"__arrays__": {k: torch.as_tensor(value[k].numpy()) for k in value.keys()}}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(value))}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: to_state(v, app) for k, v in value.items()}
        return SKIP if any(v is SKIP for v in items.values()) else items
    if isinstance(value, (list, tuple)):
        items = [to_state(v, app) for v in value]
        return SKIP if any(v is SKIP for v in items) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return SKIP


def from_state(value: Any, app) -> Any:
    if isinstance(value, dict) and "__arrays__" in value:
        return app.ArrayRecord(OrderedDict((k, t.clone()) for k, t in value["__arrays__"].items()))
    if isinstance(value, dict) and "__ndarray__" in value:
        return value["__ndarray__"].numpy().copy()
    if isinstance(value, dict):
        return {k: from_state(v, app) for k, v in value.items()}
    if isinstance(value, list):
        return [from_state(v, app) for v in value]
    return value


class Grid:
    """The part of Flower's Grid a strategy's configure_train uses: the connected node ids."""

    def __init__(self, node_ids: list[int]):
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


@register
@dataclass(kw_only=True)
class Flower(Method):
    """Flower: a flwr strategy's configure_train and aggregate_train, unchanged (pip install -e ".[flower]")."""

    name = "flower"
    in_all = False  # an adapter: a study names it with its strategy; `methods: all` would add a second FedAvg
    optional_packages = ("flwr",)
    strategy: str = hparam("flwr.serverapp.strategy:FedAvg", "the Flower strategy, module:Class (e.g. flwr.serverapp.strategy:FedAdam)")
    kwargs: dict | None = hparam(None, "keyword arguments of the strategy (null: its defaults)", schema={"type": ["object", "null"]})
    _strategy: Any = field(default=None, init=False, repr=False)
    _instructions: dict = field(default_factory=dict, init=False, repr=False)  # this round's message per client
    _config: dict = field(default_factory=dict, init=False, repr=False)  # this round's ConfigRecord

    def prepare(self, fed):
        self._strategy = load_strategy(self.strategy, self.kwargs)
        app, _ = flwr_modules()
        for attribute, value in fed.server.get(STRATEGY_STATE, {}).items():
            setattr(self._strategy, attribute, from_state(value, app))

    def select_clients(self, fed, sampled):
        app, _ = flwr_modules()
        needed = max(getattr(self._strategy, "min_available_nodes", 0), getattr(self._strategy, "min_train_nodes", 0))
        if len(sampled) < needed:
            raise UserError(f"method flower: {self.strategy} needs {needed} clients per round (min_available_nodes / min_train_nodes) and round "
                            f"{fed.round} samples {len(sampled)}; lower them in method.kwargs or raise train.participation")
        with flower_context(derive_seed(fed.config["seed"], SAMPLING_STREAM, fed.round)):
            messages = list(self._strategy.configure_train(fed.round, to_record(app, fed, fed.global_state), app.ConfigRecord({}),
                                                           Grid([c.id + 1 for c in sampled])))
        self._instructions = {m.metadata.dst_node_id - 1: m for m in messages}
        self._config = dict(messages[0].content[getattr(self._strategy, "configrecord_key", "config")]) if messages else {}
        return [c for c in sampled if c.id in self._instructions]

    def local_loss(self, fed, client):
        return proximal_term(fed, float(self._config.get("proximal-mu", 0.0)), ~self.personal_layers(fed))

    def train(self, fed, client):
        if not hasattr(self._strategy, "train_loss_key"):
            return super().train(fed, client)
        before = fed.train_loss(client)
        fit = super().train(fed, client)
        return dataclasses.replace(fit, extra={**fit.extra, RECEIVED_LOSS: before})

    def metrics(self, update) -> dict:
        """The reply's MetricRecord: the sample count, and the received model's loss where the strategy reads one."""
        metrics = {getattr(self._strategy, "weighted_by_key", "num-examples"): update.num_samples}
        if RECEIVED_LOSS in update.extra:
            metrics[self._strategy.train_loss_key] = update.extra[RECEIVED_LOSS]
        return metrics

    def aggregate(self, fed, updates):
        app, _ = flwr_modules()
        key = getattr(self._strategy, "arrayrecord_key", "arrays")
        with flower_context(derive_seed(fed.config["seed"], SAMPLING_STREAM, fed.round, 1)):
            replies = [app.Message(app.RecordDict({key: to_record(app, fed, state), "metrics": app.MetricRecord(self.metrics(u))}),
                                   reply_to=self._instructions[u.client]) for u, state in zip(updates.items, updates.states)]
            arrays, _ = self._strategy.aggregate_train(fed.round, replies)
        saved = {k: to_state(v, app) for k, v in vars(self._strategy).items() if not k.startswith("__")}
        fed.server[STRATEGY_STATE] = {k: v for k, v in saved.items() if v is not SKIP}
        return fed.global_state if arrays is None else self.shared_only(fed, from_record(fed, arrays))


