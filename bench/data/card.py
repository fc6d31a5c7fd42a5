"""Data cards: what a dataset holds, how fedrank splits it, and what each client gets.

`describe_dataset` returns a plain dict (written as JSON next to the text card), so a card can
be compared across versions of a dataset; `render_card` formats it for the terminal and
`client_heatmap` draws the clients x classes counts of a partition.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.base import ImageDataset
from bench.data.partition import Partition
from bench.data.readers import groups_spanning
from bench.io import atomic_path


def counts(labels: np.ndarray, classes: list[str]) -> list[int]:
    return np.bincount(labels, minlength=len(classes)).tolist()


def group_summary(ds: ImageDataset, test: np.ndarray) -> dict:
    """How images are grouped (patients/lesions/copies), and whether any group straddles the split."""
    if ds.groups is None:
        return {"groups": len(ds.labels), "multi_image_groups": 0, "largest_group": 1, "straddling_split": 0}
    sizes = pd.Series(ds.groups).value_counts()
    in_test = np.zeros(len(ds.labels), dtype=bool)
    in_test[test] = True
    return {"groups": int(len(sizes)), "multi_image_groups": int((sizes > 1).sum()), "largest_group": int(sizes.max()),
            "straddling_split": groups_spanning(ds.groups, in_test)}


def duplicate_summary(ds: ImageDataset) -> dict:
    if ds.duplicates is None:
        return {"checked": False}
    clustered = ds.duplicates[ds.duplicates >= 0]
    sizes = np.bincount(clustered) if len(clustered) else np.zeros(0, dtype=int)
    examples = [list(ds.ids[ds.duplicates == c][:4]) for c in np.argsort(-sizes)[:3]] if ds.ids is not None and len(sizes) else []
    return {"checked": True, "clusters": int(len(sizes)), "images": int(len(clustered)),
            "largest_cluster": int(sizes.max()) if len(sizes) else 0, "examples": examples}


def partition_summary(ds: ImageDataset, part: Partition, scheme: str, seed: int) -> dict:
    names = part.names or [str(i) for i in range(part.clients)]
    clients = [
        {"client": name, "train": len(train), "local_test": len(test), "class_counts": counts(ds.labels[np.concatenate([train, test])], ds.classes)}
        for name, train, test in zip(names, part.train, part.test)
    ]
    return {"scheme": scheme, "seed": seed, "clients": clients, "notes": part.notes}


def describe_dataset(ds: ImageDataset, pool: np.ndarray, test: np.ndarray, split_cfg: dict, partition: dict | None = None) -> dict:
    """The card of a loaded dataset and its global split (and a partition summary, if given)."""
    card = {
        "dataset": ds.name,
        "images": len(ds.labels),
        "image_size": ds.image_size,
        "channels": ds.channels,
        "classes": ds.classes,
        "class_counts": {"all": counts(ds.labels, ds.classes), "train_pool": counts(ds.labels[pool], ds.classes),
                         "global_test": counts(ds.labels[test], ds.classes)},
        "split": {"official": ds.test_mask is not None, "train_pool": len(pool), "global_test": len(test), **split_cfg},
        "groups": group_summary(ds, test),
        "duplicates": duplicate_summary(ds),
        "sites": None if ds.sites is None else dict(zip(["(none)", *ds.site_names], np.bincount(ds.sites + 1, minlength=len(ds.site_names) + 1).tolist())),
        "notes": ds.notes,
    }
    if partition is not None:
        card["partition"] = partition
    return card


def render_card(card: dict) -> str:
    """The card as text for the terminal."""
    lines = [f"{card['dataset']}: {card['images']:,} images, {card['image_size']} px, {card['channels']} channel(s), {len(card['classes'])} classes"]
    table = pd.DataFrame(card["class_counts"], index=card["classes"])
    table.loc["total"] = table.sum()
    lines += ["", table.to_string(), ""]
    split = card["split"]
    how = "official test split" if split["official"] else f"grouped stratified split (test_fraction {split['test_fraction']}, split_seed {split['split_seed']})"
    lines.append(f"split: {how}: {split['train_pool']:,} in the training pool, {split['global_test']:,} held out")
    g = card["groups"]
    lines.append(f"groups: {g['groups']:,} patients/lesions/copy clusters, {g['multi_image_groups']:,} with several images "
                 f"(largest {g['largest_group']}); {g['straddling_split']} straddle the split")
    d = card["duplicates"]
    if d["checked"]:
        lines.append(f"duplicates: {d['images']} images in {d['clusters']} clusters (largest {d['largest_cluster']})")
        lines += [f"  e.g. {', '.join(map(str, example))}" for example in d["examples"]]
    else:
        lines.append("duplicates: not checked")
    if card["sites"] is not None:
        lines.append("centres: " + ", ".join(f"{name} {n:,}" for name, n in card["sites"].items() if n or name != "(none)"))
    if "partition" in card:
        p = card["partition"]
        clients = pd.DataFrame([[c["train"], c["local_test"], *c["class_counts"]] for c in p["clients"]],
                               index=[c["client"] for c in p["clients"]], columns=["train", "local_test", *card["classes"]])
        lines += ["", f"partition {p['scheme']} (seed {p['seed']}): {len(p['clients'])} clients", clients.to_string()]
        lines += [f"  {note}" for note in p["notes"]]
    lines += ["", "notes:"] + [f"  - {note}" for note in card["notes"]]
    return "\n".join(lines)


def client_heatmap(card: dict, path: Path) -> None:
    """Clients x classes heatmap of a partition: colour = share of the client's images, text = counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = card["partition"]
    matrix = np.array([c["class_counts"] for c in p["clients"]], dtype=float)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    rows, cols = matrix.shape
    title = f"{card['dataset']}: {p['scheme']} partition, seed {p['seed']}"
    width = max(2.8 + 0.9 * cols, 0.085 * len(title) + 1.6)  # the title and the colour bar's label fit
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.45 * rows), constrained_layout=True)
    image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(cols), card["classes"], rotation=45, ha="right")
    ax.set_yticks(range(rows), [f"{c['client']} ({c['train'] + c['local_test']})" for c in p["clients"]])
    if rows * cols <= 600:
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=8, color="white" if share[i, j] < 0.6 else "black")
    ax.set_xlabel("class")
    ax.set_ylabel("client (images)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the client's images")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
