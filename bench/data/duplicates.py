"""Exact and near-duplicate images, grouped so that copies of one original never straddle a split.

Datasets such as MODD or MSID are distributed with augmented copies (flips, rotations, colour
changes) of each original next to it, often already spread over Training/Testing folders: an
image-level split then tests on copies of training images. Exact copies share the SHA-256 of
their bytes; near copies have dihedral perceptual hashes (see `preprocess.dihedral_hashes`) at
most `distance` bits apart. Copies are linked transitively into clusters, and the clusters are
merged into the dataset's patient/lesion groups, which the global split never separates.
"""

from __future__ import annotations

import numpy as np

from bench.data.cache import SourceFiles

ROW_BLOCK = 128  # rows of the pairwise distance matrix computed at once (bounded memory)


def exact_pairs(digests: list[str]) -> np.ndarray:
    """(k, 2) index pairs of files with identical bytes (each copy linked to the first)."""
    first: dict[str, int] = {}
    pairs = []
    for i, digest in enumerate(digests):
        if digest in first:
            pairs.append((first[digest], i))
        else:
            first[digest] = i
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def near_pairs(phashes: np.ndarray, distance: int) -> np.ndarray:
    """(k, 2) index pairs i < j whose hashes differ in at most `distance` bits, taking the
    closest of j's 8 flips/rotations against i's original orientation."""
    n = len(phashes)
    pairs = []
    for start in range(0, n, ROW_BLOCK):
        rows = np.arange(start, min(start + ROW_BLOCK, n))
        bits = np.bitwise_count(phashes[rows, 0][:, None, None] ^ phashes[None, start:, :]).min(axis=2)
        i, j = np.nonzero(bits <= distance)
        j += start
        keep = j > rows[i]
        pairs.append(np.stack([rows[i[keep]], j[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component id of each of n nodes joined by the (E, 2) edges. scipy.sparse is
    imported here, not with the module: a run whose data is cached never needs it."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def clusters_from_pairs(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of the copy graph: a cluster id per image, -1 for images without copies."""
    component = components(n, pairs)
    sizes = np.bincount(component)
    clustered = sizes[component] > 1
    out = np.full(n, -1, dtype=np.int64)
    _, out[clustered] = np.unique(component[clustered], return_inverse=True)
    return out


def find_duplicates(sources: SourceFiles, mode: str, distance: int) -> np.ndarray | None:
    """Cluster id per image (-1: no copy found), or None when duplicate detection is off."""
    if mode == "none":
        return None
    pairs = exact_pairs(sources.digests)
    if mode == "near":
        if sources.phashes is None:
            raise ValueError("near-duplicate detection needs the perceptual hashes of the sources")
        pairs = np.concatenate([pairs, near_pairs(sources.phashes, distance)])
    return clusters_from_pairs(len(sources.digests), pairs)


def merge_groups(groups: np.ndarray | None, clusters: np.ndarray | None) -> np.ndarray | None:
    """Patient/lesion groups joined wherever a duplicate cluster links them.

    A merged group takes the smallest label among its parts; groups no cluster touches keep
    their label, so a dataset without duplicates keeps exactly its original groups (and split).
    Images without a group are their own group.
    """
    if clusters is None or (clusters < 0).all():
        return groups
    labels = np.array([f"#{i}" for i in range(len(clusters))], dtype=object) if groups is None else np.asarray(groups).astype(str).astype(object)
    names, node = np.unique(labels, return_inverse=True)
    members = np.flatnonzero(clusters >= 0)
    _, first, cluster_of = np.unique(clusters[members], return_index=True, return_inverse=True)
    edges = np.stack([node[members[first]][cluster_of], node[members]], axis=1)  # each member linked to its cluster's first
    component = components(len(names), edges)
    _, first_of_component = np.unique(component, return_index=True)  # names are sorted: the first is the smallest
    return names[first_of_component][component][node]


def duplicate_note(clusters: np.ndarray | None, sources: SourceFiles, labels: np.ndarray, mode: str, distance: int) -> str:
    """One line for the dataset notes: how many copies were found and grouped."""
    if clusters is None:
        return "duplicates: not checked (data.duplicates=none)"
    how = "byte-identical files" if mode == "exact" else f"byte-identical files or perceptual hashes within {distance} bits"
    in_cluster = clusters >= 0
    if not in_cluster.any():
        return f"duplicates: none found ({how})"
    import pandas as pd

    sizes = np.bincount(clusters[in_cluster])
    mixed = int((pd.Series(labels[in_cluster]).groupby(clusters[in_cluster]).nunique() > 1).sum())
    text = (
        f"duplicates: {int(in_cluster.sum())} images in {len(sizes)} clusters of copies ({how}; "
        f"{len(sources.digests) - len(set(sources.digests))} exact copies), largest cluster {int(sizes.max())} images; clusters merged into the split groups"
    )
    if mixed:
        text += f"; {mixed} cluster(s) mix classes (the same image under different labels): check those labels"
    return text
