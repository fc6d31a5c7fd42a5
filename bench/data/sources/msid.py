"""Monkeypox Skin Images Dataset (MSID; Bala et al. 2023): 770 images in 4 classes, Monkeypox,
Chickenpox, Measles, Normal, one folder per class, flat or in Training/Validation/Testing
folders (see `bench.data.folders`). Copies of one image are grouped (data.duplicates)."""

from __future__ import annotations

from bench.data.folders import register_folder_dataset

CLASSES = ["Monkeypox", "Chickenpox", "Measles", "Normal"]

register_folder_dataset("msid", CLASSES, "Monkeypox Skin Images Dataset, 770 images, 4 classes, grouped by copies", images=770)
