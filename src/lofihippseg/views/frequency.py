"""The frequency-masked second view, vectorised with ``torch.fft``.

The second view (METHOD.md, "The two views") is computed from a cropped, min-max normalised
volume: take the 3D FFT, keep the phase, zero the amplitude inside a ball in frequency space,
inverse FFT, take the real part and min-max normalise each volume to [0, 1]. Zeroing the
amplitude while keeping the phase is the same as multiplying the spectrum by a 0/1 mask, which
is what we do (masks are cached per shape, mode, cutoff and device).

Modes (``FREQUENCY_MODES``); ``r = cutoff * max(D, H, W)`` in index units, ball = distance <= r:

- ``highpass`` (default, the paper's intent): zero the ball around the DC term. Frequencies are
  measured as ``fftfreq(n) * n`` along each axis, i.e. with the FFT's wrap-around (index ``n-1``
  is frequency ``-1``), so the ball is the one centred on DC of the ``fftshift``-ed spectrum.
- ``lowpass``: keep only that ball (zero everything else).
- ``legacy``: what the released code computed: the ball around index ``(D//2, H//2, W//2)`` of
  the UN-shifted spectrum (the Nyquist corner), removing only frequencies high along all three
  axes at once. The released source is not available to us; we reproduce its loop as
  documented: voxel ``(i, j, k)`` is masked when
  ``(i - D//2)**2 + (j - H//2)**2 + (k - W//2)**2 <= (cutoff * max(D, H, W))**2`` with a float
  (not rounded) radius. ``tests/released_reference.py`` holds that loop for tests/benchmarks.

Normalisation: a view whose range is at round-off level (e.g. the high-pass of a constant
volume) becomes all zeros instead of amplified round-off; otherwise it is plain min-max.

Highpass and lowpass masks are Hermitian-symmetric, so they run on the half spectrum
(``rfftn``); the legacy ball is not symmetric for odd sizes, so it uses the full complex FFT
and keeps the real part, as the released code did.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

FREQUENCY_MODES = ("highpass", "lowpass", "legacy")

_DIMS = (-3, -2, -1)


def _check(mode: str, cutoff: float) -> None:
    if mode not in FREQUENCY_MODES:
        raise ValueError(f"unknown frequency mode {mode!r}; expected one of {FREQUENCY_MODES}")
    if not np.isfinite(cutoff) or cutoff < 0:
        raise ValueError(f"cutoff must be a finite number >= 0, got {cutoff}")


@lru_cache(maxsize=16)
def _drop_mask(shape: tuple[int, int, int], mode: str, cutoff: float, device: str) -> torch.Tensor:
    """Boolean mask of the coefficients to zero (half spectrum for highpass/lowpass)."""
    d, h, w = shape
    r2 = (cutoff * max(d, h, w)) ** 2
    dev = torch.device(device)
    if mode == "legacy":
        axes = [torch.arange(n, device=dev, dtype=torch.float64) - n // 2 for n in (d, h, w)]
    else:  # exact integer fftfreq(n) * n (wrap-around); last axis is the rfft half (0..w//2)
        axes = [(torch.arange(n, device=dev) + n // 2) % n - n // 2 for n in (d, h)]
        axes.append(torch.arange(w // 2 + 1, device=dev))
        axes = [a.to(torch.float64) for a in axes]
    dist2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    inside = dist2 <= r2
    return ~inside if mode == "lowpass" else inside


def _as_tensor(x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    if isinstance(x, torch.Tensor):
        return x, False
    raise TypeError(f"expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def minmax_per_volume(x: torch.Tensor, floor: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Min-max normalise each volume (last three axes) to [0, 1].

    Volumes whose range is not above ``floor`` (e.g. round-off only) become all zeros.

    Example:
        >>> minmax_per_volume(torch.tensor([[[[1.0, 3.0]]]]))
        tensor([[[[0., 1.]]]])
    """
    low = x.amin(dim=_DIMS, keepdim=True)
    span = x.amax(dim=_DIMS, keepdim=True) - low
    ok = span > floor
    safe = torch.where(ok, span, torch.ones_like(span))
    return torch.where(ok, (x - low) / safe, torch.zeros_like(x))


def frequency_filter(
    x: torch.Tensor | np.ndarray,
    mode: str = "highpass",
    cutoff: float = 0.1,
    normalise: bool = False,
) -> torch.Tensor | np.ndarray:
    """Mask a ball of the 3D spectrum of each volume; the real part, optionally normalised.

    Args:
        x: tensor or array whose last three axes are spatial (any leading axes), on any device.
        mode: ``highpass``, ``lowpass`` or ``legacy`` (see the module docstring).
        cutoff: ball radius as a fraction of ``max(D, H, W)``.
        normalise: min-max normalise each volume to [0, 1] (what :func:`frequency_view` does).

    Returns:
        Same type, shape and device as ``x``; float64 for float64 input, else float32.

    Example:
        >>> v = torch.rand(8, 8, 8, dtype=torch.float64)
        >>> dc_only = frequency_filter(v, "lowpass", 0.0)  # keeps only the DC term: the mean
        >>> bool(torch.allclose(dc_only, v.mean().expand(8, 8, 8)))
        True
    """
    _check(mode, float(cutoff))
    t, was_numpy = _as_tensor(x)
    if t.ndim < 3:
        raise ValueError(f"expected at least 3 dimensions (D, H, W), got shape {tuple(t.shape)}")
    t = t.to(_work_dtype(t))
    shape = tuple(int(s) for s in t.shape[-3:])
    drop = _drop_mask(shape, mode, float(cutoff), str(t.device))  # type: ignore[arg-type]
    if mode == "legacy":
        spectrum = torch.fft.fftn(t, dim=_DIMS).masked_fill_(drop, 0)
        out = torch.fft.ifftn(spectrum, dim=_DIMS).real
    else:
        spectrum = torch.fft.rfftn(t, dim=_DIMS).masked_fill_(drop, 0)
        out = torch.fft.irfftn(spectrum, s=shape, dim=_DIMS)
    if normalise:  # a range of round-off size (e.g. a high-pass of a constant) is no signal
        eps = torch.finfo(out.dtype).eps
        floor = 64 * eps * t.abs().amax(dim=_DIMS, keepdim=True)
        out = minmax_per_volume(out, floor)
    return out.cpu().numpy() if was_numpy else out


def frequency_view(
    x: torch.Tensor | np.ndarray, mode: str = "highpass", cutoff: float = 0.1
) -> torch.Tensor | np.ndarray:
    """The second view: frequency-masked, real part, each volume min-max normalised to [0, 1].

    Args:
        x: normalised crop(s); last three axes spatial, e.g. (D, H, W) or (B, 1, D, H, W).
        mode: ``highpass`` (default), ``lowpass`` or ``legacy`` (released behaviour).
        cutoff: ball radius as a fraction of ``max(D, H, W)`` (default 0.1).

    Returns:
        Same type (tensor or numpy array), shape and device as ``x``.

    Example:
        >>> view = frequency_view(torch.rand(2, 1, 16, 16, 16))
        >>> view.shape, float(view.amin()), float(view.amax())
        (torch.Size([2, 1, 16, 16, 16]), 0.0, 1.0)
    """
    return frequency_filter(x, mode=mode, cutoff=cutoff, normalise=True)
