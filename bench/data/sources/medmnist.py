"""MedMNIST v2 / MedMNIST+ 2D subsets (Yang et al. 2023) from their local `.npz` files.

data.root is the file itself, e.g. `dermamnist.npz` (28 px) or `dermamnist_224.npz` (MedMNIST+),
holding `train_images`, `train_labels`, `val_*` and `test_*` (images (N, H, W) greyscale or
(N, H, W, 3) colour, labels (N, 1) as the official files, or (N,) as re-saved copies such as the
shared BreastMNIST). The official split is kept: the test split is the global test set, train
and validation are pooled for the clients, and fedrank's own validation splits
(partition.val_fraction: the data that selects rounds and tuned hyper-parameters) are drawn from
that pool per client. Multi-label ChestMNIST is not a single-label task and is refused. Images keep
their native size unless data.image_size asks for another (antialiased bilinear resize).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageDataset, register_dataset
from bench.data.cache import cached_array, source_files
from bench.data.preprocess import shades_of_gray
from bench.errors import UserError

SPLITS = ("train", "val", "test")
ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"]
CLASSES = {
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
                  "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
                   "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte", "neutrophil", "platelet"],
    "tissuemnist": ["collecting duct, connecting tubule", "distal convoluted tubule", "glomerular endothelial cells",
                    "interstitial endothelial cells", "leukocytes", "podocytes", "proximal tubule segments", "thick ascending limb"],
    "organamnist": ORGANS,
    "organcmnist": ORGANS,
    "organsmnist": ORGANS,
}


def subset_name(path: Path) -> str:
    """`dermamnist_224.npz` -> `dermamnist`."""
    return re.sub(r"_\d+$", "", path.stem).lower()


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if path.suffix != ".npz":
        raise UserError(f"config key 'data.root': {path} is not a MedMNIST .npz file; point data.root at one, e.g. .../dermamnist_224.npz")
    try:
        npz = np.load(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc}); download it again") from None
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
    if missing:
        raise UserError(f"{path}: missing array(s) {missing} (it has {npz.files}); expected a MedMNIST 2D .npz file")
    return npz


def read_labels(parts: list[np.ndarray], path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels of train, val and test concatenated, and the test mask."""
    if any(p.ndim == 2 and p.shape[1] > 1 for p in parts):
        raise UserError(f"{path}: labels have {parts[0].shape[1]} columns (a multi-label task such as ChestMNIST); fedrank needs single-label classes")
    labels = np.concatenate([p.reshape(-1) for p in parts]).astype(np.int64)
    bad = (labels < 0) | (labels >= len(classes))
    if bad.any():
        raise UserError(f"{path}: label {labels[bad][0]} outside the {len(classes)} classes of {subset_name(path)}; is the file name right?")
    return labels, np.repeat(np.array(SPLITS) == "test", [len(p) for p in parts])


def channels_first(images: np.ndarray) -> np.ndarray:
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


def build_images(npz: np.lib.npyio.NpzFile, size: int | None, color_constancy: float | None) -> np.ndarray:
    """(N, C, S, S) uint8: the three splits concatenated, resized and colour-corrected if asked."""
    images = np.ascontiguousarray(np.concatenate([channels_first(npz[f"{s}_images"]) for s in SPLITS]))
    if color_constancy is not None and images.shape[1] == 3:
        images = np.stack([shades_of_gray(img.transpose(1, 2, 0), color_constancy).transpose(2, 0, 1) for img in images])
    if size and size != images.shape[-1]:
        resized = F.interpolate(torch.from_numpy(images).float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    return images


@register_dataset("medmnist", default_size=None, needs_root=True, root_kind="file",
                  summary="MedMNIST 2D subsets from a local .npz (data.root), official split, native size")
def load(cfg: dict) -> ImageDataset:
    path = Path(cfg["root"])
    npz = open_npz(path)
    flag = subset_name(path)
    parts = [npz[f"{s}_labels"] for s in SPLITS]
    classes = CLASSES.get(flag) or [str(c) for c in range(int(max(p.max() for p in parts)) + 1)]
    labels, test = read_labels(parts, path, classes)
    sources = source_files(cfg["cache_dir"], "medmnist", [path], perceptual=False)
    key = {"sources": sources.digest, "color_constancy": cfg["color_constancy"], "resize": "bilinear-antialias"}
    images = cached_array(cfg["cache_dir"], f"medmnist-{flag}", cfg["image_size"], key, lambda: build_images(npz, cfg["image_size"], cfg["color_constancy"]))
    colour = images.shape[1] == 3
    sizes = ", ".join(f"{s} {len(p)}" for s, p in zip(SPLITS, parts))
    return ImageDataset(
        name="medmnist",
        images=images,
        labels=labels,
        classes=classes,
        mean=IMAGENET_MEAN if colour else (0.5,),
        std=IMAGENET_STD if colour else (0.5,),
        ids=np.array([f"{s}/{i}" for s, p in zip(SPLITS, parts) for i in range(len(p))], dtype=object),
        test_mask=test if cfg["official_split"] else None,
        notes=[f"MedMNIST {flag} from {path.name} ({sizes}); "
               + ("official split: train and val pooled for the clients, test held out" if cfg["official_split"] else "official split ignored (data.official_split=false)"),
               "duplicates: not checked (MedMNIST ships preprocessed arrays, not files)"],
    )
