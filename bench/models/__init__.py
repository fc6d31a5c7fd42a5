"""Models by name. Every model is a `Classifier`: `body` (images -> feature vector) + `head`.

Names: `small_cnn`, `res2net50_sa`, a small timm ViT `vit` (`bench.models.vit`), the compact CIFAR-style `resnet10`, `resnet12`, `mobilenet_v2`
and `shufflenet_v2` (`bench.models.compact`), or any timm architecture as `timm:<name>`. Pretrained
weights are only ever read from the local file named by `model.weights`, and loaded strictly
(`bench.models.weights`).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from bench.config import existing_path, expand_path
from bench.errors import UserError
from bench.models import compact, res2net_sa, small_cnn, timm_models, vit
from bench.models.classifier import Classifier

FAMILIES = {"small_cnn": small_cnn, "res2net50_sa": res2net_sa, "timm": timm_models, "vit": vit}  # each module has a `build`
BUILDERS = {**{name: module.build for name, module in FAMILIES.items()}, **compact.BUILDERS}
# What a `model.weights` file fills, for the run record (strictly: every one of these tensors, or an error).
WEIGHTS_FILL = {
    "small_cnn": "every tensor of the model, the classifier included",
    "res2net50_sa": "every tensor of the Res2Net-50 backbone (the file's classifier dropped); Shuffle Attention and the classifier start from random init",
    "timm": "every tensor of the backbone (the file's classifier dropped); the classifier starts from random init",
    "vit": "every tensor of the ViT (the file's classifier dropped); the classifier starts from random init",
    **{name: "every tensor of the model, the classifier included" for name in compact.BUILDERS},
}

__all__ = ["BUILDERS", "Classifier", "ModelSpec", "build_model", "resolve_model_config", "describe_init", "catalogue"]
STANDARD_ARGUMENTS = {"num_classes", "in_chans", "image_size", "weights", "arch"}


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


def options_of(builder) -> dict[str, object]:
    """The options a builder accepts beyond the standard ones, with their defaults."""
    params = inspect.signature(builder).parameters
    return {k: p.default for k, p in params.items() if k not in STANDARD_ARGUMENTS}


def builder_options(name: str) -> dict[str, object]:
    return options_of(_builder(name))


def catalogue() -> list[dict]:
    """Every model family for `fedrank models`: config name, what it is, its options, and the
    timm architecture whose ImageNet weights `model.weights` takes (where there is one)."""
    return [
        {"name": "timm:<architecture>" if family == "timm" else family,
         "summary": inspect.getdoc(FAMILIES.get(family, build)).splitlines()[0],
         "options": options_of(build), "weights_of": getattr(FAMILIES.get(family), "BACKBONE", None)}
        for family, build in BUILDERS.items()
    ]


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
    return f"pretrained weights {path} (sha256 {digest}), loaded strictly: {WEIGHTS_FILL[cfg['name'].partition(':')[0]]}"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
