"""Any timm architecture as a fedrank body, with weights from a local file only.

timm is imported where it is used: resolving thousands of configs (the workflow's DAG build)
then never pays for importing it and torchvision.
"""

from __future__ import annotations

from torch import nn

from bench.errors import UserError
from bench.models.classifier import Classifier


def check_architecture(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        raise UserError(f"config key 'model.name': timm has no model '{arch}'; list them with python -c \"import timm; print(timm.list_models())\"")


def save_weights_command(arch: str) -> str:
    """The one command that saves timm's ImageNet weights of `arch` to a local file and its
    sha256 next to it (run once on a machine with internet; check a copy with `sha256sum -c`)."""
    return (f"python -c \"import timm, torch; torch.save(timm.create_model('{arch}', pretrained=True).state_dict(), '{arch}.pth')\""
            f" && sha256sum {arch}.pth | tee {arch}.pth.sha256")


def create_backbone(arch: str, in_chans: int, weights: str | None, **kwargs) -> nn.Module:
    """timm model without classifier; `weights` (a local file) is loaded by timm's own loader,
    which drops the original classifier and adapts the stem to `in_chans`. Never downloads."""
    import timm

    overlay = {"file": weights} if weights else None
    return timm.create_model(arch, pretrained=bool(weights), pretrained_cfg_overlay=overlay, num_classes=0, in_chans=in_chans, **kwargs)


def build(num_classes: int, in_chans: int, image_size: int, arch: str, weights: str | None = None) -> Classifier:
    body = create_backbone(arch, in_chans, weights)
    return Classifier(body, body.num_features, num_classes)
