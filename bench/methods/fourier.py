"""2-D Fourier amplitude helpers shared by PRR-FL (on weight matrices) and pFL-ResFIM (on images).

Spectra are over the last two dimensions. Amplitudes are centred (fftshift: the zero frequency at
index (h // 2, w // 2)), so a low-frequency band is a centred box `rows, cols`; phases stay
unshifted. No method is registered here.
"""

from __future__ import annotations

import torch

DIMS = (-2, -1)


def centred_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(centred amplitude, phase) of the 2-D FFT of x over its last two dimensions."""
    spectrum = torch.fft.fft2(x, dim=DIMS)
    return torch.fft.fftshift(spectrum.abs(), dim=DIMS), spectrum.angle()


def from_centred_spectrum(amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """The real part of the inverse FFT of a centred amplitude and a phase (both references drop
    the imaginary part a non-symmetric edit of the amplitude leaves)."""
    return torch.fft.ifft2(torch.polar(torch.fft.ifftshift(amplitude, dim=DIMS), phase), dim=DIMS).real


def centred(size: int, below: int, above: int) -> slice:
    """Indices size // 2 - below .. size // 2 + above - 1 of a centred spectrum axis."""
    return slice(size // 2 - below, size // 2 + above)
