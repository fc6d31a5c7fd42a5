"""Local training on one client, as in the FedLSC paper by default (Adam, lr 1e-4, batch 32,
StepLR(10, 0.1) per local epoch, gradient-norm clip 5, a fresh optimizer every round) and
configurable under `train`.

A fit trains one or more `Learner`s in lock-step on the same batches: each learner is a model
with its own loss, optimizer, scheduler and saved optimizer state, so a method that keeps a
personal and a deputy model (Ditto, APFL, PRR-FL) reuses the seeding, clipping and scheduling
instead of writing its own loop. The pieces a method can change: the loss (replace the
cross-entropy or add a term), the parameters optimised, frozen modules (no gradients, BatchNorm
statistics fixed), the indices trained on (a public split), a hook before every optimizer step
(seeing the optimizer, learning rate and step), a hook before every epoch, the optimizer of each
learner (`optimizer={"optimizer": "sgd", "momentum": 0.0}` over `train`'s), and an inner solver:
a learner with `inner_steps=K` takes K steps on each batch before the other learners take their
one (pFedMe's personal model), and a learner with `forward=False` is not run on the batch (its
loss reads only parameters, and its BatchNorm statistics stay as they are).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.engine.batches import TensorData
from bench.engine.seeds import derive_seed

if TYPE_CHECKING:
    from bench.engine.federation import Client


@dataclass(frozen=True)
class FitResult:
    """What local training reports: optimizer steps, samples seen, the mean loss (NaN/inf: diverged),
    the sum of the learning rates of the steps (SCAFFOLD option II's K * lr with any schedule), each
    learner's mean loss, and whatever a method adds (`extra`)."""

    steps: int
    samples: int
    loss: float
    lr_sum: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class Batch:
    """One training step's tensors, handed to a learner's loss.

    `features` and `logits` are this learner's (`model.body(x)` and `model.head(features)`);
    `outputs` holds every learner's (features, logits) of the step by learner name, so the loss
    of one lock-step learner can use another's predictions (detach them to keep gradients apart)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor  # dataset indices of the batch
    features: torch.Tensor | None  # None for a learner with forward=False
    logits: torch.Tensor | None
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    epoch: int
    step: int


LossFn = Callable[[Batch], torch.Tensor]
ExtraLoss = LossFn  # a term added to a learner's loss (FedProx's proximal term, MOON's contrastive term)


@dataclass
class Step:
    """What a `before_step` hook sees: after backward, before clipping and the optimizer step."""

    optimizer: torch.optim.Optimizer
    lr: float
    step: int  # steps of this fit done so far
    epoch: int


OPTIMIZER_KEYS = {"optimizer", "momentum", "weight_decay"}  # train settings a learner may override


@dataclass
class Learner:
    """A model trained by a fit, with everything that differs from plain cross-entropy training."""

    model: nn.Module
    name: str = "model"
    loss: LossFn | None = None  # replaces the cross-entropy on this learner's logits
    extra_loss: LossFn | None = None  # added to the loss
    params: Sequence[nn.Parameter] | None = None  # what is optimised (default: every trainable parameter)
    frozen: Sequence[nn.Module] = ()  # no gradients and BatchNorm statistics fixed (eval mode) during the fit
    before_step: Callable[[Step], None] | None = None  # e.g. SCAFFOLD's gradient correction
    state_key: str = "optimizer"  # client.state key of its optimizer/scheduler state (with train.persist_optimizer)
    persist: bool = True  # False: never keep its optimizer state (a fit at evaluation that must leave no state)
    lr: float | None = None  # learning rate (default train.lr)
    optimizer: dict | None = None  # overrides of train's optimizer, momentum, weight_decay (a personal model on plain SGD)
    inner_steps: int = 0  # K > 0: K steps on each batch, before the other learners' step (an inner solver)
    forward: bool = True  # False: the model is not run on the batch; `loss` reads its parameters only

    def __post_init__(self):
        if not self.forward and self.loss is None:
            raise TypeError(f"learner {self.name}: forward=False needs a loss (there are no logits for the cross-entropy)")
        unknown = set(self.optimizer or {}) - OPTIMIZER_KEYS
        if unknown:
            raise TypeError(f"learner {self.name}: optimizer overrides {sorted(unknown)}; choose from {sorted(OPTIMIZER_KEYS)}")

    def objective(self, batch: Batch) -> torch.Tensor:
        loss = self.loss(batch) if self.loss is not None else F.cross_entropy(batch.logits, batch.y)
        return loss + self.extra_loss(batch) if self.extra_loss is not None else loss


@dataclass
class _Run:
    """A learner during one fit: its optimizer, scheduler and running loss."""

    learner: Learner
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total: torch.Tensor
    frozen_params: list[nn.Parameter] = field(default_factory=list)


def batches_per_epoch(samples: int, batch_size: int) -> int:
    """Batches of an epoch: a last batch of one sample is skipped (BatchNorm cannot train on it)."""
    return samples // batch_size + (1 if samples % batch_size >= 2 else 0)


class LocalTrainer:
    """`autocast()` is the context forward passes and losses run in (bf16 autocast with
    `runtime.precision` bf16; a no-op by default); backward and optimizer steps run outside it.
    `private` (`privacy.sample_dp`: a bench.engine.privacy.PrivateSGD) makes every fit on a
    client's own training split DP-SGD."""

    private = None

    def __init__(self, cfg: dict, data: TensorData, seed: int, autocast: Callable[[], ContextManager] = contextlib.nullcontext):
        self.cfg = cfg
        self.data = data
        self.seed = seed
        self.autocast = autocast

    def make_optimizer(self, params: list[nn.Parameter], lr: float | None = None, overrides: dict | None = None) -> torch.optim.Optimizer:
        cfg = {**self.cfg, **(overrides or {})}
        lr = cfg["lr"] if lr is None else lr
        if cfg["optimizer"] == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=cfg["weight_decay"])
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])

    def persists(self, learner: Learner) -> bool:
        """Whether a learner's optimizer and scheduler state is kept between rounds."""
        return self.cfg["persist_optimizer"] and learner.persist

    def _start(self, learner: Learner, client: Client) -> _Run:
        frozen = {id(p) for module in learner.frozen for p in module.parameters()}
        chosen = learner.params if learner.params is not None else learner.model.parameters()
        params = [p for p in chosen if p.requires_grad and id(p) not in frozen]
        frozen_params = [p for module in learner.frozen for p in module.parameters() if p.requires_grad]
        optimizer = self.make_optimizer(params, learner.lr, learner.optimizer)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.cfg["lr_step"], gamma=self.cfg["lr_gamma"])
        saved = client.state.get(learner.state_key) if self.persists(learner) else None
        if saved:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        return _Run(learner, params, optimizer, scheduler, torch.zeros((), device=self.data.device), frozen_params)

    def fit(
        self,
        client: Client,
        round: int,
        learners: Sequence[Learner],
        *,
        epochs: int | None = None,
        indices: torch.Tensor | None = None,
        stream: int = 0,
        work: float | None = None,
        on_epoch: Callable[[int], None] | None = None,
        max_steps: int | None = None,
    ) -> FitResult:
        """Train the learners in place, in lock-step, on the client's training split (or `indices`).

        Batch order and augmentation come from a generator seeded by (run seed, round, client,
        stream), so a resumed run replays the same batches. `work` in (0, 1) (a straggler's share
        of its local work, from the round's plan) stops after 1 + floor(work * (S - 1)) of the S
        steps; `max_steps` caps the optimizer steps (a new client fine-tuned for k steps).
        `on_epoch(epoch)` runs before every epoch (a method switching stages per epoch).
        The mean loss is read from the device once, at the end.
        """
        cfg = self.cfg
        private = self.private if indices is None else None
        noise = private.generator(self.data.device, round, client.id, stream) if private is not None else None
        indices = client.train if indices is None else indices
        epochs = epochs or cfg["local_epochs"]
        budget = epochs * batches_per_epoch(len(indices), cfg["batch_size"])
        if work is not None and budget > 1:
            budget = 1 + math.floor(work * (budget - 1))
        if max_steps is not None:
            budget = min(budget, max_steps)
        runs = [self._start(learner, client) for learner in learners]
        generator = torch.Generator().manual_seed(derive_seed(self.seed, round, client.id, stream))
        torch.manual_seed(derive_seed(self.seed, round, client.id, stream, 1))  # dropout, stochastic depth
        for run in runs:
            run.learner.model.train()
            for module in run.learner.frozen:
                module.eval()
            for p in run.frozen_params:
                p.requires_grad_(False)
        steps = samples = 0
        lr_sum = 0.0
        if private is not None:
            private.inside = True
        try:
            for epoch in range(epochs):
                if steps >= budget:
                    break
                if on_epoch is not None:
                    on_epoch(epoch)
                order = indices[torch.randperm(len(indices), generator=generator).to(indices.device)]
                for batch_index in order.split(cfg["batch_size"]):
                    if len(batch_index) < 2 or steps >= budget:
                        continue
                    x, y = self.data.batch(batch_index, generator)
                    lr_sum += self._step(runs, x, y, batch_index, epoch, steps, client, noise)
                    steps += 1
                    samples += len(batch_index)
                for run in runs:
                    run.scheduler.step()
        finally:
            if private is not None:
                private.inside = False
            for run in runs:
                for p in run.frozen_params:
                    p.requires_grad_(True)
        if private is not None:
            private.spent(client.id, steps * sum(run.learner.inner_steps or 1 for run in runs))  # an inner solver releases K times a batch
        for run in runs:
            if self.persists(run.learner):
                client.state[run.learner.state_key] = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict()}
        means = (torch.stack([run.total for run in runs]) / max(steps, 1)).tolist()
        losses = {run.learner.name: value for run, value in zip(runs, means)}
        return FitResult(steps=steps, samples=samples, loss=float(sum(means)), lr_sum=lr_sum, losses=losses)

    def _step(self, runs: list[_Run], x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int, step: int,
              client: Client, noise: torch.Generator | None = None) -> float:
        """One step of every learner on the same batch (K first for each inner solver, one by one;
        then one joint step of the others); returns the first learner's lr."""
        outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for run in runs:
            for _ in range(run.learner.inner_steps):
                self._update([run], x, y, index, epoch, step, outputs, 1 / run.learner.inner_steps, client, noise)
        joint = [run for run in runs if not run.learner.inner_steps]
        if joint:
            self._update(joint, x, y, index, epoch, step, outputs, 1.0, client, noise)
        return runs[0].optimizer.param_groups[0]["lr"]

    def _update(self, runs: list[_Run], x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int, step: int,
                outputs: dict[str, tuple[torch.Tensor, torch.Tensor]], share: float, client: Client, noise: torch.Generator | None) -> None:
        """Forward, loss, backward (given `noise`: DP-SGD's clipped, noised per-example gradients),
        `before_step`, clipping and an optimizer step of `runs` together; each running loss adds
        `share` of this loss (1/K for an inner solver)."""
        if noise is None:
            losses = self._losses(runs, x, y, index, epoch, step, outputs)
            for run in runs:
                run.optimizer.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
        else:
            losses = self.private.gradients(runs, len(x), lambda i: self._losses(runs, x[i], y[i], index[i], epoch, step, {}), client.id, noise,
                                            batch=(x, y))
        for run, loss in zip(runs, losses):
            if run.learner.before_step is not None:
                run.learner.before_step(Step(run.optimizer, run.optimizer.param_groups[0]["lr"], step, epoch))
            if self.cfg["clip_grad_norm"]:
                nn.utils.clip_grad_norm_(run.params, self.cfg["clip_grad_norm"])
            run.optimizer.step()
            run.total += share * loss.detach()

    def _losses(self, runs: list[_Run], x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int, step: int,
                outputs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Every learner's loss on a batch; each forward pass (of a learner that makes one) goes into `outputs`."""
        losses = []
        with self.autocast():
            for run in runs:
                if run.learner.forward:
                    features = run.learner.model.body(x)
                    outputs[run.learner.name] = (features, run.learner.model.head(features))
            for run in runs:
                features, logits = outputs[run.learner.name] if run.learner.forward else (None, None)
                losses.append(run.learner.objective(Batch(x, y, index, features, logits, outputs, epoch, step)))
        return losses
