"""Build a run's federation from a resolved config: data, split, partition, model, clients."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from bench.data import ImageDataset, load_dataset
from bench.data.augment import make_augment
from bench.data.partition import Partition, make_partition
from bench.data.split import global_split
from bench.engine.batches import TensorData
from bench.engine.federation import Client, Federation, derive_seed
from bench.engine.layout import StateLayout
from bench.engine.trainer import LocalTrainer
from bench.errors import UserError
from bench.methods import Method, make_method
from bench.models import build_model

MODEL_STREAM = 0x30DE1  # seed stream of the initial model: same for every method of a seed


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
    """Huge pages, threads and deterministic kernels (bit-identical reruns on CPU; as far as CUDA
    allows on GPU)."""
    use_huge_pages()
    if runtime["threads"]:
        torch.set_num_threads(runtime["threads"])
    if runtime["deterministic"]:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def partition_dataset(dataset: ImageDataset, pool: np.ndarray, test: np.ndarray, cfg: dict) -> Partition:
    """The run's clients: the partition scheme applied to the training pool, knowing the dataset's
    groups, acquisition centres and (if used) official test split."""
    official_test = test if dataset.test_mask is not None else None
    return make_partition(pool, dataset.labels, cfg["partition"], cfg["seed"], groups=dataset.groups,
                          sites=dataset.sites, site_names=dataset.site_names, official_test=official_test)


@dataclass
class Experiment:
    fed: Federation
    method: Method
    dataset: ImageDataset
    test_index: torch.Tensor
    pool_size: int  # images left for the clients by the global split


def build_experiment(cfg: dict, device: torch.device) -> Experiment:
    dataset = load_dataset(cfg["data"])
    pool, test = global_split(dataset, cfg["data"]["test_fraction"], cfg["data"]["split_seed"])
    partition = partition_dataset(dataset, pool, test, cfg)
    on_device = device.type == "cuda" if cfg["data"]["on_device"] == "auto" else bool(cfg["data"]["on_device"])
    data = TensorData(dataset, device, on_device, augment=make_augment(cfg["augment"]))

    def make_model() -> torch.nn.Module:
        return build_model(cfg["model"], dataset.num_classes, dataset.channels, dataset.image_size).to(device)

    torch.manual_seed(derive_seed(cfg["seed"], MODEL_STREAM))
    model = make_model()
    layout = StateLayout(model)
    index_device = data.labels.device
    clients = [
        Client(i, torch.as_tensor(train, device=index_device), torch.as_tensor(local_test, device=index_device))
        for i, (train, local_test) in enumerate(zip(partition.train, partition.test))
    ]
    fed = Federation(
        config=cfg,
        model=model,
        layout=layout,
        clients=clients,
        data=data,
        trainer=LocalTrainer(cfg["train"], data, cfg["seed"]),
        global_state=layout.gather(model),
        uploads=torch.empty(len(clients), layout.size, device=device),
        classifier_layers=layout.layers_where(lambda key: key.startswith("head.")),
        make_model=make_model,
    )
    test_index = torch.as_tensor(np.asarray(test), device=index_device)
    return Experiment(fed, make_method(cfg["method"]), dataset, test_index, len(pool))
