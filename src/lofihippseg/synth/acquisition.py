"""Low-field acquisition model in k-space: partial-volume blur, thick 2D slices, Rician noise.

A Hyperfine T2 FSE stack samples k-space on a box in-plane (about 1.5 mm) and integrates a thick
slice (4-6 mm); the challenge's ``_ciso`` image is the three orthogonal stacks registered and
averaged on a 1 mm grid (LOWFIELD.md). Everything here is linear until the magnitude, so it is
done with one forward FFT of the 1 mm image and one inverse FFT per stack:

- in-plane: keep |k| <= 1 / (2 r) (hard truncation, with its Gibbs ringing, as ULF-Synth does);
- slice axis: the rect slice profile of thickness t (transfer sinc(t k)) times linear
  interpolation from the slice spacing s back to 1 mm (sinc^2(s k));
- a stack's misalignment is a sub-voxel shift (a phase ramp);
- noise: complex Gaussian in the acquired band of k-space, then the magnitude (Rician).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stack:
    """One acquired stack: slice axis, resolutions (mm), shift (mm) and noise std (image units)."""

    slice_axis: int
    inplane_mm: float
    slice_mm: float
    thickness_mm: float
    shift_mm: tuple[float, float, float]
    noise_std: float


def _freqs(shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    """Spatial frequencies (cycles per mm at 1 mm voxels) of each axis, FFT order."""
    return [torch.fft.fftfreq(n, d=1.0, device=device) for n in shape]


def gaussian_transfer(k: torch.Tensor, sigma: float) -> torch.Tensor:
    """Fourier transform of a unit-area Gaussian of std ``sigma`` voxels."""
    return torch.exp(-2.0 * (torch.pi**2) * (sigma**2) * k**2)


def stack_transfer(
    freqs: list[torch.Tensor], stack: Stack, pv_sigma: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Separable 1D transfer functions (signal, noise band) of one stack along each axis."""
    signal, band = [], []
    for axis, k in enumerate(freqs):
        h = gaussian_transfer(k, pv_sigma)
        if axis == stack.slice_axis:
            h = h * torch.sinc(stack.thickness_mm * k) * torch.sinc(stack.slice_mm * k) ** 2
            b = (k.abs() <= 0.5 / stack.slice_mm).to(k.dtype)
        else:
            b = (k.abs() <= 0.5 / stack.inplane_mm).to(k.dtype)
            h = h * b
        phase = torch.exp(-2j * torch.pi * k * stack.shift_mm[axis])
        signal.append(h * phase)
        band.append(b)
    return signal, band


def acquire(
    image: torch.Tensor,
    stacks: list[Stack],
    pv_sigma: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Simulate the stacks from a clean 1 mm image and return their average magnitude (1 mm).

    Args:
        image: clean image (D, H, W), float32.
        stacks: the stacks to acquire (one, or three orthogonal ones for a ``_ciso``-like image).
        pv_sigma: partial-volume Gaussian blur (voxels), applied to every stack.
        generator: random generator on ``image.device`` for the noise.

    Example:
        >>> img = torch.rand(16, 16, 16)
        >>> s = Stack(2, 1.5, 5.0, 5.0, (0.0, 0.0, 0.0), 0.0)
        >>> acquire(img, [s], 0.5, None).shape
        torch.Size([16, 16, 16])
    """
    shape = tuple(image.shape)
    freqs = _freqs(shape, image.device)
    spectrum = torch.fft.fftn(image)
    out = torch.zeros(shape, dtype=image.dtype, device=image.device)
    for stack in stacks:
        signal, band = stack_transfer(freqs, stack, pv_sigma)
        k_space = spectrum * (signal[1][:, None] * signal[2][None, :])  # 2D factor: cheap
        k_space *= signal[0][:, None, None]
        if stack.noise_std > 0:
            # complex noise only inside the acquired band (a box: generate just that block).
            # Each real component of ifftn's output then has variance var * n_band / N^2.
            index = [torch.nonzero(b > 0).flatten() for b in band]
            block = tuple(len(i) for i in index)
            n_band = float(block[0] * block[1] * block[2])
            scale = stack.noise_std * image.numel() / max(n_band, 1.0) ** 0.5
            noise = torch.randn(
                (2, *block), generator=generator, device=image.device, dtype=image.dtype
            )
            sel = (index[0][:, None, None], index[1][None, :, None], index[2][None, None, :])
            k_space[sel] += torch.complex(noise[0], noise[1]) * scale
        out += torch.fft.ifftn(k_space).abs()
    return out / max(len(stacks), 1)
