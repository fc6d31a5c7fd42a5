"""One image file -> training pixels, and the fingerprints that find its copies.

Pixels: decoded to RGB, resized keeping the aspect ratio and centre-cropped to a square, with
optional Shades of Gray colour constancy (as FLamby's Fed-ISIC2019 preprocessing). Fingerprints:
the SHA-256 of the file's bytes (exact copies) and a 64-bit DCT perceptual hash of each of the
image's 8 flips/rotations by 90 degrees (near copies, including flipped and rotated ones).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bench.errors import UserError

HASH_SIDE = 32  # the perceptual hash looks at a 32 x 32 greyscale thumbnail ...
HASH_LOW = 8  # ... and keeps its 8 x 8 lowest DCT frequencies: 64 bits
DIHEDRAL = 8  # identity, 3 rotations, and the 4 mirrored versions of those


def open_image(path: str | Path, data: bytes | None = None) -> Image.Image:
    """Open (lazily) an image file, turning a non-image into a one-line UserError."""
    try:
        return Image.open(io.BytesIO(data) if data is not None else path)
    except (UnidentifiedImageError, OSError) as exc:
        raise unreadable(path, exc) from None


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's modes of 16-bit greyscale (PNG, TIFF)


def eight_bit(img: Image.Image, path: str | Path) -> Image.Image:
    """`img` in a mode Pillow's `convert` maps faithfully: 16-bit greyscale (common for medical
    PNGs) scaled to 8 bits, since `convert` clips it to white; 32-bit integer or float pixels,
    whose range is unknown, refused naming the file (a 16-bit PNG some Pillow versions open as
    mode I is scaled as 16-bit)."""
    if img.mode in SIXTEEN_BIT or (img.mode == "I" and img.format == "PNG"):
        pixels = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.rint(pixels / 257).astype(np.uint8), "L")
    if img.mode in ("I", "F"):
        raise UserError(f"image {path} has {img.mode} mode pixels (32-bit {'integer' if img.mode == 'I' else 'float'}) of no known range; "
                        "save it as an 8- or 16-bit image")
    return img


def unreadable(path: str | Path, exc: BaseException) -> UserError:
    return UserError(f"cannot decode image {path} ({exc.__class__.__name__}: {exc}); replace or remove the file")


def shades_of_gray(pixels: np.ndarray, power: float) -> np.ndarray:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) on (H, W, 3) uint8 pixels.

    The illuminant is the Minkowski p-norm mean of each channel; channels are rescaled so the
    illuminant becomes neutral grey, clipped to [0, 255] and truncated to uint8 as FLamby does.
    A black image has no illuminant and is returned unchanged.
    """
    img = pixels.astype(np.float64)
    illuminant = np.mean(img**power, axis=(0, 1)) ** (1 / power)
    norm = np.sqrt(np.sum(illuminant**2))
    if norm == 0:
        return pixels
    gains = 1 / (illuminant / norm * np.sqrt(3))
    return np.clip(img * gains, 0, 255).astype(np.uint8)


def decode_image(path: str, size: int, color_constancy: float | None = None) -> np.ndarray:
    """Decode one image to RGB, resize keeping the aspect ratio, centre-crop to size x size (C, H, W)."""
    try:
        with open_image(path) as img:
            img.draft("RGB", (size, size))  # let the JPEG decoder downscale by DCT: much faster
            pixels = np.asarray(ImageOps.fit(eight_bit(img, path).convert("RGB"), (size, size), method=Image.BILINEAR), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise unreadable(path, exc) from None
    if color_constancy is not None:
        pixels = shades_of_gray(pixels, color_constancy)
    return pixels.transpose(2, 0, 1)


def dihedral_hashes(grey: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hashes (bits: low frequencies above their median) of the 8
    flips/rotations of a square greyscale thumbnail, identity first, as uint64. (scipy.fft is
    imported here: a run whose data is cached never hashes.)"""
    from scipy.fft import dctn

    views = [np.rot90(grey, k) for k in range(4)]
    views += [v.T for v in views]
    weights = np.left_shift(np.uint64(1), np.arange(HASH_LOW * HASH_LOW, dtype=np.uint64))
    out = np.empty(DIHEDRAL, dtype=np.uint64)
    for i, view in enumerate(views):
        low = dctn(view, type=2, norm="ortho")[:HASH_LOW, :HASH_LOW].ravel()
        out[i] = np.bitwise_or.reduce(weights[low > np.median(low)])
    return out


def fingerprint_file(path: str, perceptual: bool) -> tuple[str, np.ndarray | None]:
    """SHA-256 of the file's bytes and, if asked, its dihedral perceptual hashes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror}); check the file and its permissions") from None
    digest = hashlib.sha256(data).hexdigest()
    if not perceptual:
        return digest, None
    try:
        with open_image(path, data) as img:
            img.draft("L", (4 * HASH_SIDE, 4 * HASH_SIDE))
            thumb = eight_bit(img, path).convert("L").resize((HASH_SIDE, HASH_SIDE), Image.LANCZOS)
            grey = np.asarray(thumb, dtype=np.float64)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise unreadable(path, exc) from None
    return digest, dihedral_hashes(grey)
