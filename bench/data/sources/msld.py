"""Monkeypox Skin Lesion Dataset v1 (Ali et al. 2022): 228 web images, `Monkey Pox` (102) and
`Others` (126: chickenpox, measles), one folder per class (see `bench.data.folders`).

File names carry the case: `P13_1.jpg`, `P13_2.jpg` (and `a13_1`, `j6_2`, `4_1` ...) show one
patient, so images are grouped by the name without its trailing `_<n>`; a bare `13.jpg` joins
case 13 of its class too (a coarser group never leaks).
"""

from __future__ import annotations

from pathlib import Path

from bench.data.folders import register_folder_dataset

CLASSES = ["Monkey Pox", "Others"]


def case_of(path: Path) -> str:
    """`P13_2.jpg` -> `P13`; `a1.jpg` -> `a1`; `58_!.jpg` -> `58`."""
    return path.stem.rsplit("_", 1)[0]


register_folder_dataset("msld", CLASSES, "Monkeypox Skin Lesion Dataset v1, 228 images, 2 classes, grouped by case and copies", case_of, images=228)
