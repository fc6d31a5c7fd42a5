"""Low-rank adapters (LoRA, Hu et al., ICLR 2022) on the Linear layers of a frozen body.

A `LoRALinear` replaces a Linear layer W (out x in): y = W x + b + (alpha / r) B A x, with
A (r x in) initialised like nn.Linear (Kaiming-uniform, a = sqrt(5)) and B (out x r) zero, so the
adapted model starts as the frozen one. Only A and B are parameters of the adapter; the wrapped
layer keeps its state under `base.` and is frozen by `add_lora`.

A module of our own rather than `peft` or `loralib`: the federated LoRA methods read and write A
and B as plain state tensors (`lora_a`, `lora_b`) of fedrank's flat state layout, train one of
them with the other frozen (DEeR, FFA-LoRA), and need nothing else; `peft` wraps the whole model
(its own state-dict naming, a dependency of transformers' size) and `loralib` is unmaintained and
would have to replace timm's layers by its own. The initialisation and the alpha / r scaling follow
the DEeR authors' code (CUHK-AIM-Group/DEeR, models_dict/CLIP.py: `reset_parameters`, `_LoRA_qkv`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UserError

A, B = "lora_a", "lora_b"  # state-dict suffixes of the adapter factors


class LoRALinear(nn.Module):
    """A Linear layer plus the low-rank update (alpha / r) B A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.lora_a), self.lora_b)


def add_lora(body: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Freeze every parameter of `body`, then put an adapter on each Linear whose module name
    contains one of `targets`; return the adapted names (a one-line error when there are none)."""
    for p in body.parameters():
        p.requires_grad_(False)
    chosen = [name for name, module in body.named_modules() if isinstance(module, nn.Linear) and any(t in name for t in targets)]
    if not chosen:
        raise UserError(f"LoRA: no Linear layer of the model's body has a name containing any of {list(targets)}; "
                        "use a ViT (model.name=vit, or timm:vit_*, whose attention layers are named qkv) or set the method's targets")
    for name in chosen:
        parent, _, child = name.rpartition(".")
        owner = body.get_submodule(parent) if parent else body
        setattr(owner, child, LoRALinear(getattr(owner, child), rank, alpha))
    return chosen


def adapter_keys(keys: list[str]) -> list[tuple[str, str]]:
    """The (A, B) state-dict key pairs of the adapters among `keys`."""
    return [(k, k[: -len(A)] + B) for k in keys if k.endswith("." + A)]
