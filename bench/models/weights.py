"""Pretrained weights from a local file, loaded strictly: every tensor fits, or a one-line error.

A partial load (timm's own loader is lenient once the classifier is dropped) would train from
random init while the record says "pretrained", so any missing, unexpected or mis-shaped tensor
is listed and refused. Files are read with `torch.load(weights_only=True)`: tensors, never code.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.errors import UserError

SHOWN = 3  # keys named per kind of mismatch
SAVE_HINT = "save one with torch.save(model.state_dict(), path)"


def read_weights(weights: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: plain, or under 'state_dict' or 'model' (training
    checkpoints), with DataParallel's 'module.' prefixes dropped."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # random bytes, an empty or truncated file: torch raises by where it breaks
        raise UserError(f"config key 'model.weights': {weights} is not a readable weights file ({type(exc).__name__}); {SAVE_HINT}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"config key 'model.weights': {weights} holds no state dict (names mapped to tensors); {SAVE_HINT}")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def listed(kind: str, keys: list[str]) -> list[str]:
    """'2 missing key(s): a, b' (the first few named), or nothing when there are none."""
    if not keys:
        return []
    return [f"{len(keys)} {kind} key(s): {', '.join(keys[:SHOWN])}{', ...' if len(keys) > SHOWN else ''}"]


def load_strictly(module: nn.Module, state: dict[str, torch.Tensor], weights: str) -> None:
    """Load `state` into `module` only if it fits exactly; else say which keys do not, and refuse."""
    own = module.state_dict()
    common = own.keys() & state.keys()
    problems = [
        *listed("missing", sorted(own.keys() - state.keys())),
        *listed("unexpected", sorted(state.keys() - own.keys())),
        *listed("mis-shaped", sorted(k for k in common if own[k].shape != state[k].shape)),
    ]
    if problems:
        raise UserError(f"config key 'model.weights': {weights} does not fit this model ({'; '.join(problems)}); use weights saved from the same architecture")
    module.load_state_dict(state)


def load_local_weights(module: nn.Module, weights: str) -> None:
    """Load a local weights file into `module`, strictly."""
    load_strictly(module, read_weights(weights), weights)
