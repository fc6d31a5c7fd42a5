"""The dataset as tensors on the training device, normalised batch by batch."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bench.data.base import ImageDataset

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TensorData:
    """uint8 images (on the device when they fit, else pinned on the host) and labels.

    Batches are gathered by index and converted to float on the device, so no per-image Python
    runs in the training loop. `augment`, if set, transforms float training batches on the device.
    `labels` are the true labels (evaluation); `train_labels` what training batches see: the
    same, or with the clients' training labels corrupted (`data.label_noise`). Batches come in
    `memory_format` (channels_last for NHWC models).
    """

    def __init__(self, ds: ImageDataset, device: torch.device, on_device: bool, augment: Augment | None = None,
                 train_labels: np.ndarray | None = None, memory_format: torch.memory_format = torch.contiguous_format):
        self.device = device
        self.memory_format = memory_format
        self.classes = list(ds.classes)
        images = torch.from_numpy(ds.images)
        self.images = images.to(device) if on_device else images
        self.labels = torch.tensor(ds.labels, dtype=torch.long, device=device)
        self.train_labels = self.labels if train_labels is None else torch.tensor(train_labels, dtype=torch.long, device=device)
        self.mean = torch.tensor(ds.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(ds.std, device=device).view(1, -1, 1, 1)
        self.augment = augment

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def flip_rate(self, index: torch.Tensor) -> float:
        """Share of these images whose training label differs from the true one."""
        return float((self.train_labels[index] != self.labels[index]).float().mean()) if len(index) else 0.0

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images and labels for dataset indices. With a generator it is a
        training batch: augmented, with the training labels; without, the true labels."""
        pixels = self.images[index.to(self.images.device)].to(self.device, non_blocking=True)
        x = pixels.float().div_(255)
        if generator is not None and self.augment is not None:
            x = self.augment(x, generator)
        labels = self.labels if generator is None else self.train_labels
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format), labels[index.to(self.device)]
