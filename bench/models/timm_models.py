"""Any timm architecture as a fedrank body, with weights from a local file only, loaded strictly.

timm is imported where it is used: resolving thousands of configs (the workflow's DAG build)
then never pays for importing it and torchvision.
"""

from __future__ import annotations

from torch import nn

from bench.errors import UserError
from bench.models.classifier import Classifier
from bench.models.weights import load_strictly, read_weights


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
    """timm model without classifier; `weights` (a local file) fills every one of its tensors, or
    is refused (`load_strictly`). Never downloads."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    if weights:
        load_strictly(model, backbone_state(model, read_weights(weights), in_chans), weights)
    return model


def names(entry: str | tuple | None) -> tuple[str, ...]:
    """A timm pretrained-config entry (one module name, several, or none) as a tuple."""
    return (entry,) if isinstance(entry, str) else tuple(entry or ())


def backbone_state(model: nn.Module, state: dict, in_chans: int) -> dict:
    """A timm checkpoint as the state of the model without classifier: the classifier's tensors
    dropped, the first convolution adapted to `in_chans` (as timm's loader does)."""
    from timm.models import adapt_input_conv

    cfg = model.pretrained_cfg
    classifier = {f"{name}.{part}" for name in names(cfg.get("classifier")) for part in ("weight", "bias")}
    state = {k: v for k, v in state.items() if k not in classifier}
    for conv in names(cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key in state and state[key].ndim == 4 and state[key].shape[1] != in_chans:
            state[key] = adapt_input_conv(in_chans, state[key])
    return state


def build(num_classes: int, in_chans: int, image_size: int, arch: str, weights: str | None = None) -> Classifier:
    body = create_backbone(arch, in_chans, weights)
    return Classifier(body, body.num_features, num_classes)
