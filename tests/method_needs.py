"""What a method needs beyond a test's default synthetic run, declared by the method's class, not by
name: the LoRA methods (DEeR and its baselines) a ViT, FedBM a concept-embedding file (here a
deterministic stand-in: random unit vectors around a random centre per class, seeded)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from bench.methods import registry
from bench.methods.deer import FederatedLoRA
from bench.methods.fedbm import FedBM

TINY_VIT = {"name": "vit", "embed_dim": 16, "depth": 1, "num_heads": 2}


def standin_concepts(path: Path, classes: int = 4, prompts: int = 5, dim: int = 16, seed: int = 0) -> Path:
    """A (classes, prompts, dim) file of concept embeddings: each class's prompts scattered around
    its own random centre, so the classes' concept distributions differ."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 1, dim, generator=generator)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save(centres + 0.3 * torch.randn(classes, prompts, dim, generator=generator), partial)
    os.replace(partial, path)  # whole or not at all: tests in parallel processes share the file
    return path


def needs(method: str) -> dict:
    """tiny_config overrides (key__path: value) a method needs on the synthetic data set."""
    cls = registry()[method]
    if issubclass(cls, FederatedLoRA):
        return {"model": dict(TINY_VIT)}
    if issubclass(cls, FedBM):
        # the generator every round, briefly: two rounds then cover CGDE's state, bytes and resumption too
        return {"method__concepts": str(standin_concepts(Path(tempfile.gettempdir()) / "fedrank_standin_concepts.pt")),
                "method__generator_every": 1, "method__generator_steps": 2, "method__generator_batch": 8}
    return {}
