"""Mouth and Oral Diseases dataset (MOD/MODD): 7 classes, CaS (canker sores), CoS (cold sores),
Gum (gingivostomatitis), MC (mouth cancer), OC (oral cancer), OLP (oral lichen planus), OT (oral
thrush). About 517 originals, usually distributed with augmented copies in
`Training/Validation/Testing` folders (see `bench.data.folders`): copies are grouped by
perceptual hash so that none straddles the split (data.duplicates)."""

from __future__ import annotations

from bench.data.folders import register_folder_dataset

CLASSES = ["CaS", "CoS", "Gum", "MC", "OC", "OLP", "OT"]

register_folder_dataset("modd", CLASSES, "Mouth and Oral Diseases, ~517 originals (+ copies), 7 classes, grouped by copies")
