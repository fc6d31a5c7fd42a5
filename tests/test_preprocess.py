"""Decoding, Shades of Gray colour constancy and the perceptual hash against hand-computed values."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from bench.data.preprocess import HASH_LOW, decode_image, dihedral_hashes, fingerprint_file, shades_of_gray
from bench.errors import UserError
from imagegen import save, smooth_image


def test_shades_of_gray_by_hand():
    # p = 2: illuminant R = sqrt((200^2 + 0^2) / 2) = 141.42, G = 100, B = 141.42; norm = sqrt(50000) = 223.607;
    # gain = norm / (illuminant * sqrt(3)): R, B 0.912871, G 1.290994; values truncated to uint8 as FLamby does
    pixels = np.array([[[200, 100, 0], [0, 100, 200]]], dtype=np.uint8)
    assert shades_of_gray(pixels, 2).tolist() == [[[182, 129, 0], [0, 129, 182]]]


def test_shades_of_gray_makes_a_uniform_colour_grey_and_keeps_black():
    # p = 1: illuminant (100, 50, 25), norm 114.564; each channel becomes 114.564 / sqrt(3) = 66.14 -> 66
    assert shades_of_gray(np.full((2, 3, 3), (100, 50, 25), np.uint8), 1).reshape(-1, 3).tolist() == [[66, 66, 66]] * 6
    black = np.zeros((2, 2, 3), np.uint8)
    assert np.array_equal(shades_of_gray(black, 6), black)


def test_decode_keeps_the_aspect_ratio_and_crops_the_centre(tmp_path):
    picture = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: red | green | blue bands of 5/30/5 columns
    picture[:, :5, 0] = picture[:, 5:35, 1] = picture[:, 35:, 2] = 255  # the centred 20 x 20 square is green
    path = save(Image.fromarray(picture), tmp_path / "wide.png")
    out = decode_image(str(path), 8)
    assert out.shape == (3, 8, 8)
    assert out[1].min() == 255 and out[0].max() == 0 and out[2].max() == 0  # only the green middle survives


def test_decode_applies_colour_constancy(tmp_path):
    path = save(Image.fromarray(np.full((6, 6, 3), (100, 50, 25), np.uint8)), tmp_path / "tinted.png")
    assert decode_image(str(path), 4, color_constancy=1).reshape(3, -1).tolist() == [[66] * 16] * 3


def dct_matrix(n: int) -> np.ndarray:
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    m = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m


def test_perceptual_hash_equals_an_independent_dct():
    grey = np.random.default_rng(0).uniform(0, 255, (32, 32))
    c = dct_matrix(32)
    low = (c @ grey @ c.T)[:HASH_LOW, :HASH_LOW].ravel()
    expected = sum(1 << i for i, bit in enumerate(low > np.median(low)) if bit)
    assert int(dihedral_hashes(grey)[0]) == expected


def test_every_flip_and_rotation_of_an_image_hashes_to_one_of_its_eight_hashes():
    grey = np.random.default_rng(1).uniform(0, 255, (32, 32))
    hashes = set(dihedral_hashes(grey).tolist())
    views = [np.rot90(grey, k) for k in range(4)] + [np.rot90(grey, k).T for k in range(4)] + [grey[:, ::-1], grey[::-1]]
    for view in views:
        assert int(dihedral_hashes(view)[0]) in hashes


def test_fingerprint_is_the_sha256_of_the_bytes_and_a_copy_has_a_close_hash(tmp_path):
    img = smooth_image(np.random.default_rng(2), 64, 64)
    a = save(img, tmp_path / "a.png")
    b = save(img.transpose(Image.FLIP_TOP_BOTTOM), tmp_path / "b.png")
    digest, hashes = fingerprint_file(str(a), perceptual=True)
    assert digest == hashlib.sha256(a.read_bytes()).hexdigest()
    _, flipped = fingerprint_file(str(b), perceptual=True)
    assert np.bitwise_count(hashes[0] ^ flipped).min() <= 2
    assert fingerprint_file(str(a), perceptual=False)[1] is None


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_a_non_image_is_a_one_line_error_naming_the_file(tmp_path, content):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="cannot decode image .*bad.jpg"):
        fingerprint_file(str(bad), perceptual=True)
    with pytest.raises(UserError, match="cannot decode image .*bad.jpg"):
        decode_image(str(bad), 8)
