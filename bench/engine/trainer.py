"""Local training on one client, as in the FedLSC paper by default (Adam, lr 1e-4, batch 32,
StepLR(10, 0.1) per local epoch, gradient-norm clip 5) and configurable under `train`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from bench.engine.batches import TensorData
from bench.engine.federation import Client, FitResult, derive_seed


@dataclass
class Batch:
    """One training step's tensors, handed to a method's extra loss term."""

    x: torch.Tensor
    y: torch.Tensor
    features: torch.Tensor  # model.body(x): the representation
    logits: torch.Tensor


ExtraLoss = Callable[[Batch], torch.Tensor]


class LocalTrainer:
    def __init__(self, cfg: dict, data: TensorData, seed: int):
        self.cfg = cfg
        self.data = data
        self.seed = seed

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg["optimizer"] == "adam":
            return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])

    def fit(
        self,
        model: nn.Module,
        client: Client,
        round: int,
        *,
        epochs: int | None = None,
        params: Iterable[nn.Parameter] | None = None,
        extra_loss: ExtraLoss | None = None,
        before_step: Callable[[], None] | None = None,
        state_key: str = "optimizer",
        stream: int = 0,
    ) -> FitResult:
        """Train `model` in place on the client's training split.

        `params` restricts what is optimised (FedRep's head/body phases); `extra_loss(batch)` is
        added to the cross-entropy (FedProx, MOON); `before_step()` runs after backward and
        before clipping (SCAFFOLD's gradient correction). Optimizer and scheduler state persist
        in `client.state[state_key]` (one key per independently trained model). Batch order and
        augmentation come from a generator seeded by (run seed, round, client, stream), so a
        resumed run replays the same batches.
        """
        cfg = self.cfg
        params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        optimizer = self.make_optimizer(params)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg["lr_step"], gamma=cfg["lr_gamma"])
        saved = client.state.get(state_key) if cfg["persist_optimizer"] else None
        if saved:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        generator = torch.Generator().manual_seed(derive_seed(self.seed, round, client.id, stream))
        torch.manual_seed(derive_seed(self.seed, round, client.id, stream, 1))  # dropout, stochastic depth
        model.train()
        total = torch.zeros((), device=self.data.device)
        steps = samples = 0
        for _ in range(epochs or cfg["local_epochs"]):
            order = client.train[torch.randperm(len(client.train), generator=generator).to(client.train.device)]
            for batch_index in order.split(cfg["batch_size"]):
                if len(batch_index) < 2:  # BatchNorm cannot train on a single sample
                    continue
                x, y = self.data.batch(batch_index, generator)
                features = model.body(x)
                logits = model.head(features)
                loss = F.cross_entropy(logits, y)
                if extra_loss is not None:
                    loss = loss + extra_loss(Batch(x, y, features, logits))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if before_step is not None:
                    before_step()
                if cfg["clip_grad_norm"]:
                    nn.utils.clip_grad_norm_(params, cfg["clip_grad_norm"])
                optimizer.step()
                total += loss.detach()
                steps += 1
                samples += len(batch_index)
            scheduler.step()
            if not torch.isfinite(total):
                break
        if cfg["persist_optimizer"]:
            client.state[state_key] = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        mean_loss = (total / max(steps, 1)).item()
        return FitResult(steps=steps, samples=samples, loss=mean_loss)
