"""Duplicate clusters: exact and near pairs by hand, transitive clusters, merged groups."""

from __future__ import annotations

import numpy as np

from bench.data.cache import SourceFiles, source_files
from bench.data.duplicates import clusters_from_pairs, duplicate_note, exact_pairs, find_duplicates, merge_groups, near_pairs
from imagegen import augmented_copies, save, smooth_image


def hashes(*first: int) -> np.ndarray:
    """(N, 8) hashes whose variants other than the first are far from everything (all ones)."""
    out = np.full((len(first), 8), np.uint64(2**64 - 1), dtype=np.uint64)
    out[:, 0] = first
    return out


def test_exact_pairs_link_each_copy_to_the_first():
    assert exact_pairs(["a", "b", "a", "c", "a", "b"]).tolist() == [[0, 2], [0, 4], [1, 5]]
    assert exact_pairs(["a", "b"]).shape == (0, 2)


def test_near_pairs_count_differing_bits_against_every_variant():
    # differing bits: 0-1: 3, 0-2: 1, 0-3: 4, 1-2: 4, 1-3: 7, 2-3: 5
    h = hashes(0b0000, 0b0111, 0b1_0000_0000, 0b1111_0000)
    assert near_pairs(h, 3).tolist() == [[0, 1], [0, 2]]
    assert near_pairs(h, 0).tolist() == []
    flipped = hashes(0b0000, 0xFFFF)
    flipped[1, 3] = 0b1  # image 1 flipped/rotated is 1 bit away from image 0
    assert near_pairs(flipped, 1).tolist() == [[0, 1]]


def test_clusters_are_transitive_and_singletons_get_minus_one():
    pairs = np.array([[0, 2], [2, 4], [1, 5]])
    assert clusters_from_pairs(7, pairs).tolist() == [0, 1, 0, -1, 0, 1, -1]
    assert clusters_from_pairs(3, np.empty((0, 2), dtype=int)).tolist() == [-1, -1, -1]


def test_merge_groups_joins_linked_groups_under_their_smallest_label_and_keeps_the_rest():
    groups = np.array(["b", "b", "a", "c", "d"], dtype=object)
    clusters = np.array([-1, 0, 0, -1, -1])  # image 1 (group b) copies image 2 (group a)
    assert merge_groups(groups, clusters).tolist() == ["a", "a", "a", "c", "d"]
    assert merge_groups(groups, np.full(5, -1)) is groups  # no copies: the very same groups
    assert merge_groups(None, np.array([-1, 0, -1, 0])).tolist() == ["#0", "#1", "#2", "#1"]
    assert merge_groups(None, None) is None


def test_find_duplicates_modes():
    sources = SourceFiles(["x", "y", "x", "z"], hashes(0b0, 0b1, 0b0, 0xFFFF_0000))
    assert find_duplicates(sources, "none", 8) is None
    assert find_duplicates(sources, "exact", 8).tolist() == [0, -1, 0, -1]
    assert find_duplicates(sources, "near", 1).tolist() == [0, 0, 0, -1]


def test_augmented_copies_of_generated_images_are_found(tmp_path):
    rng = np.random.default_rng(0)
    originals = [smooth_image(rng, 64, 64) for _ in range(8)]
    paths = [save(img, tmp_path / f"o{i}.png") for i, img in enumerate(originals)]
    paths += [save(copy, tmp_path / f"c{k}.jpg") for k, copy in enumerate(augmented_copies(originals[0]))]
    paths.append(save(originals[1], tmp_path / "o1-again.png"))  # the same bytes: an exact copy
    sources = source_files(tmp_path / "cache", "demo", paths, perceptual=True)
    clusters = find_duplicates(sources, "near", 8)
    assert len(set(clusters[[0, 8, 9, 10]])) == 1 and clusters[0] >= 0  # the original and its 3 copies
    assert clusters[1] == clusters[11] >= 0 and clusters[1] != clusters[0]
    assert (clusters[2:8] == -1).all()  # unrelated images stay alone
    assert find_duplicates(sources, "exact", 8).tolist() == [-1, 0] + [-1] * 9 + [0]
    labels = np.zeros(len(paths), dtype=int)
    note = duplicate_note(clusters, sources, labels, "near", 8)
    assert note.startswith("duplicates: 6 images in 2 clusters of copies (byte-identical files or perceptual hashes within 8 bits; 1 exact")
    labels[9] = 1
    assert "1 cluster(s) mix classes" in duplicate_note(clusters, sources, labels, "near", 8)
    assert duplicate_note(np.full(len(paths), -1), sources, labels, "exact", 8) == "duplicates: none found (byte-identical files)"
