"""Training-time augmentation of whole batches on the training device (the `augment` config section).

Flips, rotation and colour jitter are tensor operations over the batch, with one random draw
per image from the generator local training passes in, seeded by (run seed, round, client):
augmented runs stay deterministic and resume exactly. Operations run in a fixed order: flips,
rotation, brightness, contrast, saturation, hue; colour formulas are torchvision's
(`adjust_brightness` etc.), applied with a different factor per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GREY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
OPS = ("hflip", "vflip", "rotation", "brightness", "contrast", "saturation", "hue")


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of (B, 3, H, W) images; a one-channel image is its own grey."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, per image, clipped to [0, 1]."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre (bilinear; borders reflected, so no black corners)."""
    angle = torch.deg2rad(degrees)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    v, _ = x.max(dim=1)
    chroma = v - x.min(dim=1).values
    s = chroma / torch.where(v == 0, torch.ones_like(v), v)
    safe = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    rc, gc, bc = (v - r) / safe, (v - g) / safe, (v - b) / safe
    h = torch.where(v == r, bc - gc, torch.where(v == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(chroma == 0, torch.zeros_like(h), h)
    return torch.stack([torch.fmod(h / 6.0 + 1.0, 1.0), s, v], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    i = sector.long() % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    table = torch.stack([torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 1)
    return table.gather(1, i[:, None, None].expand(-1, 1, 3, -1, -1)).squeeze(1)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(hsv)


def uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


class BatchAugment:
    """Callable (float batch in [0, 1], generator) -> augmented batch, for `TensorData.augment`."""

    def __init__(self, cfg: dict):
        self.cfg = {op: float(cfg[op]) for op in OPS}

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.cfg
        u = torch.rand(len(x), len(OPS), generator=generator)  # one draw per image and operation
        if x.is_cuda:  # from pinned memory, asynchronously: the step loop never waits for the GPU
            u = u.pin_memory().to(x.device, non_blocking=True)
        draw = dict(zip(OPS, u.unbind(1)))
        if c["hflip"]:
            x = torch.where((draw["hflip"] < c["hflip"]).view(-1, 1, 1, 1), x.flip(-1), x)
        if c["vflip"]:
            x = torch.where((draw["vflip"] < c["vflip"]).view(-1, 1, 1, 1), x.flip(-2), x)
        if c["rotation"]:
            x = rotate(x, uniform(draw["rotation"], -c["rotation"], c["rotation"]))
        if c["brightness"]:
            x = blend(x, torch.zeros_like(x), self.factor(draw["brightness"], c["brightness"]))
        if c["contrast"]:
            x = blend(x, grey(x).mean(dim=(1, 2, 3), keepdim=True), self.factor(draw["contrast"], c["contrast"]))
        if x.shape[1] == 3 and c["saturation"]:
            x = blend(x, grey(x), self.factor(draw["saturation"], c["saturation"]))
        if x.shape[1] == 3 and c["hue"]:
            x = shift_hue(x, uniform(draw["hue"], -c["hue"], c["hue"]))
        return x

    @staticmethod
    def factor(u: torch.Tensor, spread: float) -> torch.Tensor:
        return uniform(u, max(0.0, 1 - spread), 1 + spread)


def make_augment(cfg: dict) -> BatchAugment | None:
    """The batch augmentation a config's `augment` section asks for; None when it asks for none."""
    return BatchAugment(cfg) if any(cfg[op] for op in OPS) else None

