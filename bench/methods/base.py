"""The method interface: FedAvg's behaviour at every hook; a method overrides only what differs.

Per round the engine draws who takes part (`train.participation`, `train.dropout`,
`train.stragglers`: the same clients for every method of a seed) and `select_clients` may change
that. Each participant `receive`s its starting model (downloading `received_layers`); each one
that reports `train`s (`client_loss` replaces the cross-entropy, `local_loss` adds a term) and
`upload`s; the server `aggregate`s the K states that arrived (the `aggregated_layers`; it may
also hand each client its own model through `fed.to_clients`); every reporting client `keep`s
its `kept_layers`. Then
`global_model` and every client's `client_model` are evaluated, and the bytes actually sent
(`download_bytes`, `upload_bytes`) are counted.

`personal_layers` is the one-stop default for "what stays with the clients": the aggregation,
receive, upload and keep masks and the per-client evaluation switch (`personalized`) derive from
it, and a method overrides just the one it means.

Once per run: `model` (the module the federation trains, e.g. a composite of the configured
model), `client_architecture` (clients with other architectures), `setup` (initial server and
client state, fresh runs only) and `prepare` (caches, on fresh and resumed runs alike). All
mutable state goes into `fed.server`, `fed.to_clients` and `client.state` (tensors, numbers,
strings and lists/dicts of them), which the engine checkpoints. A method instance holds its
hyper-parameters, declared as dataclass fields with `hparam(default, help, **json_schema)`, and
at most caches (plain fields with `init=False`) that `prepare` rebuilds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.engine.federation import MAIN, Client, Federation, Update, Updates
from bench.engine.trainer import Batch, ExtraLoss, FitResult, LossFn
from bench.models import ModelSpec
from bench.search import Recipe, Space

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def hparam(default: Any, help: str, *, search: Space | None = None, items: dict | None = None, schema: dict | None = None, **bounds: Any) -> Any:
    """Declare a hyper-parameter: default, one-line help, JSON-schema bounds (minimum=0, ...), and
    the space tuning searches (`search=loguniform(1e-3, 1, source="paper, section")`; none: tuning
    leaves it at its default).

    A list default is stored as a tuple (dataclass defaults must be immutable) and declared as a
    JSON array, with `items` the schema of its elements (inferred from the first one if omitted);
    `schema` gives the JSON type outright (e.g. {"type": ["integer", "null"]} for a None default)."""
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"help": help, "bounds": bounds, "items": items, "schema": schema, "search": search})


def json_type(default: Any, items: dict | None) -> dict:
    """The JSON-schema type of a hyper-parameter from its default."""
    if isinstance(default, tuple):
        if items is None:
            if not default:
                raise TypeError("an empty list hyper-parameter needs items={...} (the schema of its elements)")
            items = json_type(default[0], None)
        return {"type": "array", "items": items}
    if type(default) not in _JSON_TYPES:
        raise TypeError(f"hyper-parameter default {default!r}: use a bool, int, float, str or list, or give schema={{...}}")
    return {"type": _JSON_TYPES[type(default)]}


def plain(value: Any) -> Any:
    """A hyper-parameter value as JSON holds it (tuples as lists), for records and config equality."""
    return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value


@dataclass(kw_only=True)
class Method:
    name: ClassVar[str] = ""
    has_global_model: ClassVar[bool] = True  # False: no server model to evaluate (local-only)
    recipe: ClassVar[Recipe | None] = None  # the training settings the method's paper assumes (`recipes: paper`)
    requires: ClassVar[tuple[str, ...]] = ()  # what the setting must provide: keys of bench.methods.requirements.REQUIREMENTS
    # What the privacy modes need (bench/engine/privacy.py). mean_of_updates: True when the server needs only the
    # mean of the clients' uploaded states (client-level DP and secure aggregation apply), or why it needs more;
    # None: derived conservatively, True only for a method that keeps Method's aggregate and upload.
    mean_of_updates: ClassVar[bool | str | None] = None
    # private_training: True when a client's records reach the shared upload only through fits on its training
    # split (record-level DP-SGD applies), or what else reads them.
    private_training: ClassVar[bool | str] = True
    not_learning: ClassVar[str] = ""  # why it is not expected to learn the conformance suite's easy task (empty: it must)
    in_all: ClassVar[bool] = True  # False: a study's `methods: all` leaves it out (an adapter named with its settings, a method needing a ViT or an input file)
    optional_packages: ClassVar[tuple[str, ...]] = ()  # importable modules it needs from an optional extra (tests skip without them)

    # ---- declaration -------------------------------------------------------------------
    @classmethod
    def hparams(cls) -> dict[str, dataclasses.Field]:
        """The hyper-parameters: the fields declared with `hparam` (other fields are caches)."""
        return {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}

    @classmethod
    def hparam_schema(cls) -> dict:
        """JSON schema of the `method` config section for this method."""
        props: dict[str, dict] = {"name": {"const": cls.name}}
        for name, f in cls.hparams().items():
            kind = f.metadata["schema"] or json_type(f.default, f.metadata["items"])
            props[name] = {**kind, "default": plain(f.default), "description": f.metadata["help"], **f.metadata["bounds"]}
        return {"type": "object", "properties": props, "additionalProperties": False}

    @classmethod
    def search_space(cls) -> dict[str, Space]:
        """The hyper-parameters tuning searches, with their spaces."""
        return {name: f.metadata["search"] for name, f in cls.hparams().items() if f.metadata.get("search") is not None}

    @classmethod
    def needs_only_mean(cls) -> bool | str:
        """`mean_of_updates`, derived when undeclared: Method's own aggregate and upload need only the mean."""
        if cls.mean_of_updates is not None:
            return cls.mean_of_updates
        if cls.aggregate is Method.aggregate and cls.upload is Method.upload:
            return True
        return "it overrides aggregate or upload without declaring mean_of_updates = True"

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def test_setting(cls, scratch: Path) -> dict:
        """Config overrides (`section__key`: value) this method needs on the test kit's synthetic
        setting beyond a public split, e.g. a ViT or an input file made in `scratch`: the conformance
        suite, `fedrank check-method` and the privacy compatibility probe run it with them."""
        return {}

    def config(self) -> dict:
        return {"name": self.name, **{k: plain(getattr(self, k)) for k in self.hparams()}}

    # ---- models (once, when the run is built) ------------------------------------------
    def model(self, base: nn.Module, spec: ModelSpec) -> nn.Module:
        """The module the federation trains, built from the configured one (a composite keeps
        `body` and `head`: the trainer runs head(body(x)))."""
        return base

    def client_architecture(self, client: int) -> dict | None:
        """A `model` config section for this client's own architecture (None: the configured one)."""
        return None

    # ---- what stays with the clients ---------------------------------------------------
    def personal_layers(self, fed: Federation) -> torch.Tensor:
        """Boolean mask over layers that stay with the clients: the default of every mask below."""
        return fed.layout.no_layers()

    def aggregated_layers(self, fed: Federation) -> torch.Tensor:
        """Layers the server combines; the global state keeps its values elsewhere."""
        return ~self.personal_layers(fed)

    def received_layers(self, fed: Federation, client: Client) -> torch.Tensor:
        """Layers a client takes from the server when it receives (and downloads: counted in bytes)."""
        return ~self.personal_layers(fed)

    def uploaded_layers(self, fed: Federation, client: Client) -> torch.Tensor:
        """Layers a client sends (counted in bytes): what the server combines."""
        return self.aggregated_layers(fed)

    def kept_layers(self, fed: Federation, client: Client) -> torch.Tensor:
        """Layers a client keeps from its own model after a round it reported in."""
        return self.personal_layers(fed)

    def personalized(self, fed: Federation) -> bool:
        """Whether each client's own model differs from the global one (evaluated per client)."""
        return bool(self.personal_layers(fed).any()) or bool(fed.to_clients)

    # ---- once ---------------------------------------------------------------------------
    def setup(self, fed: Federation) -> None:
        """Before round 1 of a fresh run: initialise `fed.server` and every `client.state`."""

    def prepare(self, fed: Federation) -> None:
        """Before the first round this process plays, fresh or resumed: rebuild caches."""

    # ---- client side --------------------------------------------------------------------
    def select_clients(self, fed: Federation, sampled: list[Client]) -> list[Client]:
        """The clients taking part this round (default: the engine's seeded draw)."""
        return sampled

    def start_state(self, fed: Federation, client: Client) -> torch.Tensor:
        """The server's model for this client: its own from aggregation, else the global state
        (for a client of another architecture, that architecture's initial state). With
        `train.client_init: independent` a client reporting in round 1 (before any aggregation)
        starts from its own random initial model instead."""
        if fed.independent_init and fed.round == 1 and client.id in fed.slots:
            return fed.own_initial_state(client)
        own = fed.to_clients.get(client.id)
        if own is not None:
            return own
        return fed.global_state if client.arch == MAIN else fed.initial_states[client.arch]

    def receive(self, fed: Federation, client: Client) -> None:
        """Load the client's starting model into its model object: the server's state, then the
        layers it kept the last time it took part (except those it now receives)."""
        model, layout = fed.model_of(client), fed.layout_of(client)
        layout.scatter(model, self.start_state(fed, client))
        kept = client.state.get("personal")
        if kept is not None:
            own = kept["layers"] & ~self.received_layers(fed, client)
            if own.any():
                layout.scatter(model, layout.narrow(kept["values"], kept["layers"], own), own)

    def client_loss(self, fed: Federation, client: Client) -> LossFn | None:
        """The local loss in place of the cross-entropy (None: cross-entropy)."""
        return None

    def local_loss(self, fed: Federation, client: Client) -> ExtraLoss | None:
        """A term added to the local loss (None: nothing added)."""
        return None

    def private_epochs(self, train: dict) -> int:
        """Epochs of DP-SGD releases one round of training makes on a client's training split, each
        learner and each inner step counted: record-level `target_epsilon` solves the noise over
        rounds x this x batches per epoch (bench/engine/privacy.py). One fit of train.local_epochs
        by default; a method with more fits or lock-step learners says how many."""
        return train["local_epochs"]

    def train(self, fed: Federation, client: Client) -> FitResult:
        """Local optimisation of the client's model on its data."""
        return fed.fit(client, loss=self.client_loss(fed, client), extra_loss=self.local_loss(fed, client))

    def upload(self, fed: Federation, client: Client, fit: FitResult) -> Update:
        """What the client sends: its float state (snapshotted into its row of `fed.uploads`) and
        the fit's `extra` (what `train` adds, e.g. a loss or a control variate) as `Update.extra`:
        the one channel from client to server besides the state."""
        fed.layout_of(client).gather(fed.model_of(client), out=fed.upload_row(client))
        return Update(client.id, client.num_samples, fit, extra=dict(fit.extra))

    # ---- server side --------------------------------------------------------------------
    def aggregate(self, fed: Federation, updates: Updates) -> torch.Tensor:
        """The new global state: the sample-count-weighted mean of the reported states."""
        return self.shared_only(fed, self.weighted_mean(updates))

    def keep(self, fed: Federation, client: Client) -> None:
        """After aggregation: a reporting client keeps its kept layers from this round's local model."""
        layers = self.kept_layers(fed, client)
        if layers.any():
            client.state["personal"] = {"layers": layers.clone(), "values": fed.layout_of(client).select(fed.upload_row(client), layers)}

    # ---- evaluation and accounting ------------------------------------------------------
    def global_model(self, fed: Federation) -> nn.Module | None:
        """The server's model for evaluation on the global test set (None: there is none)."""
        if not self.has_global_model:
            return None
        fed.layout.scatter(fed.model, fed.global_state)
        return fed.model

    def client_model(self, fed: Federation, client: Client) -> nn.Module:
        """The client's own model: what it would start the next round from."""
        self.receive(fed, client)
        return fed.model_of(client)

    def download_bytes(self, fed: Federation, client: Client) -> int:
        """Bytes a participant downloads when it receives."""
        return fed.layout_of(client).nbytes(self.received_layers(fed, client))

    def upload_bytes(self, fed: Federation, client: Client, update: Update) -> int:
        """Bytes a reporting client uploads."""
        return fed.layout_of(client).nbytes(self.uploaded_layers(fed, client))

    # ---- helpers for subclasses ---------------------------------------------------------
    @staticmethod
    def weighted_mean(updates: Updates) -> torch.Tensor:
        """The sample-count-weighted mean of the reported states (FedAvg's aggregate)."""
        return updates.weighted_mean()

    def shared_only(self, fed: Federation, new_state: torch.Tensor) -> torch.Tensor:
        """`new_state` on aggregated layers, the current global state on the others."""
        aggregated = self.aggregated_layers(fed)
        if aggregated.all():
            return new_state
        return torch.where(fed.layout.expand(aggregated.to(fed.device)), new_state, fed.global_state)


def proximal_term(fed: Federation, mu: float, layers: torch.Tensor, model: nn.Module | None = None,
                  reference: torch.Tensor | None = None) -> ExtraLoss | None:
    """(mu/2) * sum ||w - w_g||^2 over the trainable tensors of `layers` (FedProx; FedLSC Eq.7).

    w is `model` (default the main model), w_g `reference` (default this round's global state,
    which does not change during local training)."""
    if mu == 0:
        return None
    state = (model or fed.model).state_dict(keep_vars=True)
    fixed = fed.layout.views(fed.global_state if reference is None else reference)
    use = (layers.cpu() & fed.layout.trainable).tolist()
    pairs = [(state[k], fixed[k]) for k, chosen in zip(fed.layout.keys, use) if chosen]

    def term(batch: Batch) -> torch.Tensor:
        return mu / 2 * torch.stack([(w - g).pow(2).sum() for w, g in pairs]).sum()

    return term if pairs else None
