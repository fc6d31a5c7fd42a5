"""What a method sees: the one shared model, the clients, the global state, the server state.

All mutable state of a run lives in `Federation.global_state`, `Federation.server` and each
`Client.state`; the engine checkpoints exactly these, so any method resumes exactly without
knowing about checkpoints. Methods themselves hold only hyper-parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from bench.engine.layout import StateLayout


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, round, client, ...): independent streams per part."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class Client:
    """A simulated client: its private data split and whatever state its method keeps."""

    id: int
    train: torch.Tensor  # dataset indices of its local training split
    test: torch.Tensor  # dataset indices of its local test split
    state: dict = field(default_factory=dict)  # method-owned: personal tensors, optimizer, control variates

    @property
    def num_samples(self) -> int:
        return len(self.train)


@dataclass(frozen=True)
class FitResult:
    """What local training reports: optimizer steps, samples seen and the mean loss (NaN/inf: diverged)."""

    steps: int
    samples: int
    loss: float


@dataclass
class Update:
    """One client's message to the server. Its model state is row `client` of `Federation.uploads`."""

    client: int
    num_samples: int
    fit: FitResult
    extra: dict = field(default_factory=dict)  # method-specific payload (control variates, step counts, ...)


@dataclass
class Updates:
    """Everything the server receives in a round; `states` is (clients, P), row i = client i."""

    states: torch.Tensor
    items: list[Update]

    @property
    def num_samples(self) -> torch.Tensor:
        return torch.tensor([u.num_samples for u in self.items], dtype=self.states.dtype, device=self.states.device)


@dataclass
class Federation:
    config: dict
    model: nn.Module
    layout: StateLayout
    clients: list[Client]
    data: "TensorData"  # noqa: F821 - bench.engine.batches.TensorData
    trainer: "LocalTrainer"  # noqa: F821 - bench.engine.trainer.LocalTrainer
    global_state: torch.Tensor
    uploads: torch.Tensor
    classifier_layers: torch.Tensor
    make_model: Callable[[], nn.Module]  # a fresh model of the configured architecture (second models, Ditto)
    server: dict = field(default_factory=dict)
    round: int = 0
    diagnostics: list[dict] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.global_state.device

    def fit(self, client: Client, **kwargs) -> FitResult:
        """Train the shared model on `client`'s data this round (see LocalTrainer.fit for options)."""
        return self.trainer.fit(self.model, client, self.round, **kwargs)

    def record(self, name: str, values: torch.Tensor, dims: tuple[str, ...]) -> None:
        """Log a per-round diagnostic; dims name its axes from ("layer", "client")."""
        if values.dim() != len(dims) or not set(dims) <= {"layer", "client"}:
            raise ValueError(f"diagnostic {name}: {values.dim()}-d values need matching dims from layer/client, got {dims}")
        self.diagnostics.append({"name": name, "values": values.detach().float().cpu(), "dims": dims})
