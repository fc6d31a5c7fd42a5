"""Build a run's federation from a resolved config: data, split, public split, partition, models, clients."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch

from bench.data import ImageDataset, load_dataset
from bench.data.augment import make_augment
from bench.data.noise import noisy_training_labels
from bench.data.partition import Partition, make_partition, split_local
from bench.data.split import global_split
from bench.engine.batches import TensorData
from bench.engine.dynamo import defer_dynamo
from bench.engine.federation import MAIN, Client, Federation
from bench.engine.layout import StateLayout
from bench.engine.participation import clients_per_round
from bench.engine.privacy import attach as attach_privacy
from bench.engine.seeds import derive_seed
from bench.engine.trainer import LocalTrainer
from bench.errors import UserError
from bench.methods import Method, make_method
from bench.models import ModelSpec, build_model, resolve_model_config

MODEL_STREAM = 0x30DE1  # seed stream of the initial model: same for every method of a seed
PUBLIC_STREAM = 0x9B11C  # seed stream of the public split (with data.split_seed: the same for every run seed)


def select_device(spec: str) -> torch.device:
    """The training device; a CUDA device this machine does not have is a one-line error now,
    before any data is loaded."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"config key 'runtime.device': {spec} is not available here ({torch.cuda.device_count()} CUDA GPU(s) visible); "
                        "use runtime.device=auto or cpu, or run on a GPU node")
    return device


def use_huge_pages() -> None:
    """Large tensors (stacked client states, aggregated models) on transparent huge pages: a fresh
    100 MB state then costs ~50 page faults instead of ~25,000 (4x faster to fill on a 2-core VM).
    Torch reads this once, at its first tensor allocation, so it is set before any; a value already
    set wins."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def configure_torch(runtime: dict, device: torch.device) -> None:
    """Huge pages, torch._dynamo only if something is compiled, threads and deterministic kernels
    (bit-identical reruns on CPU; as far as CUDA allows on GPU)."""
    use_huge_pages()
    if not runtime["compile"]:
        defer_dynamo()
    if runtime["threads"]:
        torch.set_num_threads(runtime["threads"])
    if runtime["deterministic"]:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        deterministic_kernels(compiled=bool(runtime["compile"]))
        torch.backends.cudnn.benchmark = False


def deterministic_kernels(compiled: bool) -> None:
    """Deterministic kernels (warn where there are none). torch.use_deterministic_algorithms also
    imports the inductor to set its flag, about 3 s of every run's start-up; only torch.compile
    reads that flag, so without it the kernels' flag is set alone."""
    if compiled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def autocast(runtime: dict, device: torch.device) -> Callable[[], ContextManager]:
    """The context forward passes and losses run in: bf16 autocast for `runtime.precision` bf16
    (weights, gradients and optimizer state stay fp32), else a no-op, so the default path is plain
    fp32 code."""
    if runtime["precision"] == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def memory_format(runtime: dict) -> torch.memory_format:
    """NHWC (`runtime.channels_last`: what tensor-core convolutions run in) or the default NCHW."""
    return torch.channels_last if runtime["channels_last"] else torch.contiguous_format


def prepare_model(model: torch.nn.Module, runtime: dict) -> torch.nn.Module:
    """A built model in the runtime's memory format, its body and head compiled in place
    (`nn.Module.compile`): state-dict keys stay, and as every client of an architecture shares
    one model object, one compiled graph serves them all."""
    if runtime["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if runtime["compile"]:
        backend = "inductor" if runtime["compile"] is True else runtime["compile"]
        for part in (model.body, model.head):
            part.compile(backend=backend)
    return model


def public_split(dataset: ImageDataset, pool: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the clients' pool, the public split): a `fraction` of the pool, whole groups, given to no
    client. Drawn with the split seed, so every run seed (and method) has the same public data."""
    if fraction == 0:
        return pool, pool[:0]
    rng = np.random.default_rng(derive_seed(seed, PUBLIC_STREAM))
    return split_local(pool, fraction, rng, dataset.groups)


def partition_dataset(dataset: ImageDataset, pool: np.ndarray, test: np.ndarray, cfg: dict) -> Partition:
    """The run's clients: the partition scheme applied to the training pool, knowing the dataset's
    groups, acquisition centres and (if used) official test split."""
    official_test = test if dataset.test_mask is not None else None
    return make_partition(pool, dataset.labels, cfg["partition"], cfg["seed"], groups=dataset.groups,
                          sites=dataset.sites, site_names=dataset.site_names, official_test=official_test)


def check_public_split(method: Method, public: np.ndarray, fraction: float) -> None:
    """A method that needs a public split gets a non-empty one (a small fraction can round to none)."""
    if "public_split" in method.requires and not len(public):
        raise UserError(f"method {method.name} needs a public split, but data.public_fraction={fraction:g} leaves it empty on this data; raise data.public_fraction")


@dataclass
class Experiment:
    fed: Federation
    method: Method
    dataset: ImageDataset
    test_index: torch.Tensor
    pool_size: int  # images left for the clients by the global split (and the public split)
    val_index: torch.Tensor  # the global validation set: the union of the clients' validation splits
    holdout: Client | None = None  # the centre held out of the federation (partition.holdout): a client that never takes part
    holdout_name: str | None = None
    resumes_from: int = 1  # the round a rerun of the same command starts from: after the last checkpoint written
    privacy: "Privacy | None" = None  # noqa: F821 - bench.engine.privacy.Privacy: the run's privacy modes (None: off)


def architectures(cfg: dict, method: Method, clients: int) -> tuple[dict[str, dict], list[str]]:
    """({architecture name: resolved model section}, each client's architecture). MAIN is the
    configured model; a method may give clients other ones (`Method.client_architecture`)."""
    sections = {MAIN: cfg["model"]}
    chosen = []
    for i in range(clients):
        section = method.client_architecture(i)
        resolved = cfg["model"] if section is None else resolve_model_config(dict(section))
        name = next((n for n, s in sections.items() if s == resolved), None)
        if name is None:
            name = resolved["name"] if resolved["name"] not in sections else f"{resolved['name']}#{len(sections)}"
            sections[name] = resolved
        chosen.append(name)
    return sections, chosen


def model_builders(sections: dict[str, dict], spec: ModelSpec, method: Method, device: torch.device,
                   runtime: dict, group_size: int | None = None) -> dict[str, Callable[[], torch.nn.Module]]:
    """A fresh-model function per architecture: the builder, the method's `model` hook, BatchNorm
    replaced by GroupNorm of `group_size` channels per group (when given: DP-SGD needs each example's gradient alone), then the
    runtime's memory format and compilation."""

    def private(model: torch.nn.Module) -> torch.nn.Module:
        from bench.engine.privacy import group_norm as replace

        return replace(model, group_size) if group_size else model

    def builder(section: dict) -> Callable[[], torch.nn.Module]:
        return lambda: prepare_model(private(method.model(build_model(section, spec.num_classes, spec.channels, spec.image_size), spec)).to(device), runtime)

    return {name: builder(section) for name, section in sections.items()}


def initial_models(builders: dict[str, Callable[[], torch.nn.Module]], seed: int) -> dict[str, torch.nn.Module]:
    """Every architecture's initial model, each from its own seeded stream: MAIN's is the same for
    every method of a seed (paired comparisons)."""
    models = {}
    for i, (name, build) in enumerate(builders.items()):
        torch.manual_seed(derive_seed(seed, MODEL_STREAM) if name == MAIN else derive_seed(seed, MODEL_STREAM, i))
        models[name] = build()
    return models


def build_experiment(cfg: dict, device: torch.device) -> Experiment:
    dataset = load_dataset(cfg["data"])
    pool, test = global_split(dataset, cfg["data"]["test_fraction"], cfg["data"]["split_seed"], cfg["data"]["cache_dir"])
    pool, public = public_split(dataset, pool, cfg["data"]["public_fraction"], cfg["data"]["split_seed"])
    partition = partition_dataset(dataset, pool, test, cfg)
    on_device = device.type == "cuda" if cfg["data"]["on_device"] == "auto" else bool(cfg["data"]["on_device"])
    train_labels = noisy_training_labels(dataset.labels, partition.train, cfg["data"]["label_noise"], cfg["seed"], dataset.num_classes)
    data = TensorData(dataset, device, on_device, augment=make_augment(cfg["augment"]), train_labels=train_labels,
                      memory_format=memory_format(cfg["runtime"]))
    method = make_method(cfg["method"])
    sections, arch_of = architectures(cfg, method, partition.clients)
    spec = ModelSpec(dataset.num_classes, dataset.channels, dataset.image_size)
    builders = model_builders(sections, spec, method, device, cfg["runtime"], group_size=(cfg["privacy"]["sample_dp"] or {}).get("group_size"))
    models = initial_models(builders, cfg["seed"])
    layouts = {name: StateLayout(model) for name, model in models.items()}
    index_device = data.labels.device
    clients = [
        Client(i, torch.as_tensor(train, device=index_device), torch.as_tensor(local_test, device=index_device), arch=arch_of[i],
               val=torch.as_tensor(val, device=index_device))
        for i, (train, local_test, val) in enumerate(zip(partition.train, partition.test, partition.val))
    ]
    if not clients:
        raise UserError("partition: no clients; raise partition.clients or check partition.sites")
    clients_per_round(cfg["train"]["participation"], len(clients))  # a count larger than the partition fails now, before any file
    check_public_split(method, public, cfg["data"]["public_fraction"])
    layout = layouts[MAIN]
    fed = Federation(
        config=cfg,
        models=models,
        layouts=layouts,
        clients=clients,
        data=data,
        trainer=LocalTrainer(cfg["train"], data, cfg["seed"], autocast(cfg["runtime"], device)),
        global_state=layout.gather(models[MAIN]),
        uploads=torch.empty(len(clients), layout.size, device=device),
        classifier_layers=layout.layers_where(lambda key: key.startswith("head.")),
        builders=builders,
        initial_states={name: layouts[name].gather(model) for name, model in models.items() if name != MAIN},
        public=torch.as_tensor(public, device=index_device),
        independent_init=cfg["train"]["client_init"] == "independent",
    )
    test_index = torch.as_tensor(np.asarray(test), device=index_device)
    held = partition.holdout
    holdout = None if held is None else Client(len(clients), torch.as_tensor(held.train, device=index_device), torch.as_tensor(held.test, device=index_device))
    return Experiment(fed, method, dataset, test_index, len(pool), torch.cat([c.val for c in clients]), holdout, held and held.name,
                      privacy=attach_privacy(cfg, fed, method))
