"""What a method sees: the clients, their models, the global state, the server state, the round.

All mutable state of a run lives in `Federation.global_state`, `Federation.server`,
`Federation.to_clients`, each `Client.state` and the model objects in `Federation.models`; the
engine checkpoints exactly these, so any method resumes exactly without knowing about
checkpoints. Methods themselves hold only hyper-parameters (and caches rebuilt by `prepare`).

Models: one object per architecture is shared by every client of that architecture (its state
is loaded in place through a flat `StateLayout`, no per-client copies). Most runs have one
architecture, `MAIN`; a method may give clients other ones (`Method.client_architecture`), or ask
for extra model objects (`extra_model`: a personal or deputy copy to train in lock-step).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from bench.engine.layout import StateLayout
from bench.engine.participation import RoundPlan
from bench.engine.seeds import derive_seed
from bench.engine.trainer import FitResult, Learner, LocalTrainer

MAIN = "main"  # the configured architecture (after the method's `model` hook)
EXTRA_MODEL_STREAM = 0xE7A
OWN_INIT_STREAM = 0x1717  # seed stream of each client's own initial model (train.client_init: independent)


@dataclass
class Client:
    """A simulated client: its private data split, its architecture and whatever state its method keeps."""

    id: int
    train: torch.Tensor  # dataset indices of its local training split
    test: torch.Tensor  # dataset indices of its local test split
    state: dict = field(default_factory=dict)  # method-owned: personal tensors, optimizer, control variates
    arch: str = MAIN
    val: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))  # its validation split (partition.val_fraction)

    @property
    def num_samples(self) -> int:
        return len(self.train)


@dataclass
class Update:
    """One client's message to the server. Its model state is its row of `Updates.states`."""

    client: int
    num_samples: int
    fit: FitResult
    extra: dict = field(default_factory=dict)  # method-specific payload (control variates, step counts, ...)


@dataclass
class Updates:
    """Everything the server receives in a round, from the clients that reported (K of them):
    `states` is (K, P), row k = the state sent by `items[k].client`."""

    states: torch.Tensor
    items: list[Update]

    @property
    def num_samples(self) -> torch.Tensor:
        return torch.tensor([u.num_samples for u in self.items], dtype=self.states.dtype, device=self.states.device)

    @property
    def clients(self) -> list[int]:
        return [u.client for u in self.items]

    def weighted_mean(self) -> torch.Tensor:
        """The sample-count-weighted mean of the reported states (FedAvg's aggregate)."""
        samples = self.num_samples
        return (samples / samples.sum()) @ self.states

    def mean(self) -> torch.Tensor:
        """The plain mean of the reported states."""
        return self.states.mean(0)


@dataclass
class Federation:
    config: dict
    models: dict[str, nn.Module]  # MAIN, other client architectures, extra models: all checkpointed
    layouts: dict[str, StateLayout]  # per architecture
    clients: list[Client]
    data: "TensorData"  # noqa: F821 - bench.engine.batches.TensorData
    trainer: LocalTrainer
    global_state: torch.Tensor
    uploads: torch.Tensor  # (clients, P) buffer; reporting clients fill its first rows in order
    classifier_layers: torch.Tensor
    builders: dict[str, Callable[[], nn.Module]]  # a fresh model of each architecture
    initial_states: dict[str, torch.Tensor]  # each architecture's initial state (the seed's, same for every method)
    public: torch.Tensor  # dataset indices of the public split (data.public_fraction): no client's data
    server: dict = field(default_factory=dict)
    to_clients: dict[int, torch.Tensor] = field(default_factory=dict)  # per-client models from aggregation (else: global)
    round: int = 0
    plan: RoundPlan | None = None
    slots: dict[int, int] = field(default_factory=dict)  # reporting client id -> its row of `uploads` this round
    straggling: float | None = None  # while a straggler trains: the share of its local steps it completes
    diagnostics: list[dict] = field(default_factory=list)
    scratch: dict[str, nn.Module] = field(default_factory=dict)  # models of `scratch_model`: not checkpointed
    # train.client_init: independent: clients reporting in round 1 start from their own initial model
    independent_init: bool = False
    _trainable: torch.Tensor | None = field(default=None, init=False, repr=False)

    # ---- models ---------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self.models[MAIN]

    @property
    def layout(self) -> StateLayout:
        return self.layouts[MAIN]

    @property
    def device(self) -> torch.device:
        return self.global_state.device

    def model_of(self, client: Client) -> nn.Module:
        return self.models[client.arch]

    def layout_of(self, client: Client) -> StateLayout:
        return self.layouts[client.arch]

    def make_model(self, arch: str = MAIN) -> nn.Module:
        """A fresh model of an architecture (not tracked: state it holds is not checkpointed)."""
        return self.builders[arch]()

    def extra_model(self, name: str, arch: str = MAIN) -> nn.Module:
        """A second model object of `arch`, built once per run (same initial weights on fresh and
        resumed runs) and checkpointed with all its buffers: a deputy or personal copy to train."""
        key = f"{arch}/{name}"
        if key not in self.models:
            self.models[key] = self._build_once(key, arch)
        return self.models[key]

    def scratch_model(self, name: str, arch: str = MAIN) -> nn.Module:
        """Like `extra_model`, but not checkpointed: for a model loaded with a state before every
        use (a frozen reference model, a copy fine-tuned at evaluation), whatever it held before."""
        key = f"{arch}/{name}"
        if key not in self.scratch:
            self.scratch[key] = self._build_once(key, arch)
        return self.scratch[key]

    def _build_once(self, key: str, arch: str) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.config["seed"], EXTRA_MODEL_STREAM, zlib.crc32(key.encode())))
            return self.builders[arch]()

    def own_initial_state(self, client: Client) -> torch.Tensor:
        """The client's own random initial model (train.client_init: independent), seeded by the
        run seed and the client: the same for every method of a seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.config["seed"], OWN_INIT_STREAM, client.id))
            return self.layout_of(client).gather(self.builders[client.arch]())

    @property
    def trainable(self) -> torch.Tensor:
        """(P,) bool on the device: elements of trainable tensors (False: buffers such as BatchNorm's
        running statistics). Server optimizers and control variates act on these; buffers are averaged."""
        if self._trainable is None:
            self._trainable = self.layout.expand(self.layout.trainable.to(self.device))
        return self._trainable

    # ---- this round -----------------------------------------------------------------------
    def upload_row(self, client: Client) -> torch.Tensor:
        """The row of `uploads` a reporting client's state goes to this round."""
        if client.arch != MAIN:
            raise TypeError(f"client {client.id} has architecture {client.arch}, which has no row in fed.uploads; "
                            "a method with several architectures sends something else (override upload and keep)")
        return self.uploads[self.slots[client.id]]

    def fit(self, client: Client, *, epochs: int | None = None, indices: torch.Tensor | None = None, stream: int = 0,
            on_epoch: Callable[[int], None] | None = None, **learner) -> FitResult:
        """Train the client's model (or `model=`) on its data this round; `learner` options are
        `Learner`'s (loss, extra_loss, params, frozen, before_step, state_key, lr)."""
        learner.setdefault("model", self.model_of(client))
        return self.fit_together(client, [Learner(**learner)], epochs=epochs, indices=indices, stream=stream, on_epoch=on_epoch)

    def fit_together(self, client: Client, learners: Sequence[Learner], *, epochs: int | None = None, indices: torch.Tensor | None = None,
                     stream: int = 0, on_epoch: Callable[[int], None] | None = None) -> FitResult:
        """Train several learners in lock-step on the same batches (a personal and a deputy model).
        While a straggler trains (`Method.train`) each fit does its share of the steps; fits at
        other times (server-side training, evaluation) do all of theirs."""
        return self.trainer.fit(client, self.round, learners, epochs=epochs, indices=indices, stream=stream, work=self.straggling,
                                on_epoch=on_epoch)

    @torch.no_grad()
    def train_loss(self, client: Client, model: nn.Module | None = None) -> float:
        """Mean cross-entropy of `model` (default the client's) on the client's training split with
        its *training* labels (label noise included; `predict` reads the true ones), in eval mode
        and without augmentation: the loss the client's training objective sees (q-FFL's F_k(w^t))."""
        model = self.model_of(client) if model is None else model
        model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with self.trainer.autocast():
            for part in client.train.split(self.config["eval"]["batch_size"]):
                x, _ = self.data.batch(part)
                total += nn.functional.cross_entropy(model(x).float(), self.data.train_labels[part.to(self.device)], reduction="sum").double()
        return float(total) / max(len(client.train), 1)

    def record(self, name: str, values: torch.Tensor, dims: tuple[str, ...] = (), clients: Sequence[int] | None = None) -> None:
        """Log a per-round diagnostic; dims name its axes from ("layer", "client"); () for a scalar.
        A client axis is keyed by client id: position i is client `clients[i]` (e.g.
        `updates.clients`, the reporting clients), or client i when it runs over every client."""
        if values.dim() != len(dims) or not set(dims) <= {"layer", "client"}:
            raise ValueError(f"diagnostic {name}: {values.dim()}-d values need matching dims from layer/client, got {dims}")
        ids = list(range(len(self.clients))) if clients is None else [int(c) for c in clients]
        if "client" in dims and values.shape[dims.index("client")] != len(ids):
            raise ValueError(f"diagnostic {name}: its client axis has {values.shape[dims.index('client')]} entries for {len(ids)} clients; "
                             "pass clients=[their ids] (e.g. updates.clients) when it covers only some clients")
        self.diagnostics.append({"name": name, "values": values.detach().float().cpu(), "dims": dims, "clients": ids})
