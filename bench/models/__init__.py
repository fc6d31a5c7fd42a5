"""Models by name. Every model is a `Classifier`: `body` (images -> feature vector) + `head`.

Names: `small_cnn`, `res2net50_sa`, the compact CIFAR-style `resnet10`, `resnet12`, `mobilenet_v2`
and `shufflenet_v2` (`bench.models.compact`), or any timm architecture as `timm:<name>`. Pretrained
weights are only ever read from the local file named by `model.weights`.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.config import existing_path, expand_path
from bench.errors import UserError
from bench.models import compact, res2net_sa, small_cnn, timm_models
from bench.models.classifier import Classifier

BUILDERS = {
    "small_cnn": small_cnn.build,
    "res2net50_sa": res2net_sa.build,
    "timm": timm_models.build,
    "resnet10": compact.resnet10,
    "resnet12": compact.resnet12,
    "mobilenet_v2": compact.mobilenet_v2,
    "shufflenet_v2": compact.shufflenet_v2,
}

__all__ = ["BUILDERS", "Classifier", "ModelSpec", "build_model", "resolve_model_config", "describe_init"]


@dataclass(frozen=True)
class ModelSpec:
    """What a model is built for: the dataset's classes, image channels and side in pixels."""

    num_classes: int
    channels: int
    image_size: int


def _builder(name: str):
    family, _, arch = name.partition(":")
    if family not in BUILDERS or (family == "timm") != bool(arch):
        names = ", ".join(n for n in BUILDERS if n != "timm")
        raise UserError(f"config key 'model.name': unknown model '{name}'; choose {names} or timm:<architecture>")
    if arch:
        timm_models.check_architecture(arch)
    return BUILDERS[family]


def builder_options(name: str) -> dict[str, object]:
    """The options a model's builder accepts beyond the standard ones, with their defaults."""
    fixed = {"num_classes", "in_chans", "image_size", "weights", "arch"}
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if k not in fixed}


def resolve_model_config(section: dict) -> dict:
    """Fill builder defaults, reject unknown options, and check that the weights file exists."""
    options = builder_options(section["name"])
    unknown = sorted(set(section) - set(options) - {"name", "weights"})
    if unknown:
        raise UserError(
            f"config key 'model.{unknown[0]}': not an option of model '{section['name']}'; valid: {', '.join(['weights', *options]) or 'weights'}"
        )
    out = {"name": section["name"], "weights": section.get("weights"), **options}
    out.update({k: v for k, v in section.items() if k in options})
    if out["weights"]:  # checked, but kept as written so the run id travels between machines
        existing_path(
            out["weights"], "model.weights", "file",
            "fedrank never downloads weights: save them once to a local file and point model.weights at it, or set it to null for random init",
        )
    return out


def build_model(cfg: dict, num_classes: int, in_chans: int, image_size: int) -> Classifier:
    """Build the resolved `model` config section (call under a seeded RNG for a reproducible init)."""
    name = cfg["name"]
    family, _, arch = name.partition(":")
    options = {k: v for k, v in cfg.items() if k not in ("name", "weights")}
    if arch:
        options["arch"] = arch
    return BUILDERS[family](num_classes=num_classes, in_chans=in_chans, image_size=image_size, weights=weights_path(cfg), **options)


def weights_path(cfg: dict) -> str | None:
    """The weights file with variables expanded (the config keeps it as written)."""
    return expand_path(cfg["weights"]) if cfg["weights"] else None


def describe_init(cfg: dict) -> str:
    """For the run record: how the model was initialised."""
    if not cfg["weights"]:
        return "random init (no model.weights given)"
    path = weights_path(cfg)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return f"pretrained weights {path} (sha256 {digest})"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_local_weights(module: nn.Module, weights: str) -> None:
    """Load a local state dict (plain or under 'state_dict'/'model') into `module`, strictly."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"config key 'model.weights': {weights} does not fit this model ({first}); use weights saved from the same architecture") from None
