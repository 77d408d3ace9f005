"""Between an input's fine grid and the coarser grid the networks run on, cheaply.

A 0.5 mm head has 27 times the voxels of the 1.5 mm working grid. Two things keep its cost
near that of a 1 mm scan:

- before cropping and normalising, it is averaged over whole blocks of voxels
  (:func:`pool_factors`, :func:`pool`): 3 x 3 x 3 at 0.5 mm for a 1.5 mm grid, so those steps
  and everything after them see the coarse grid (a model trained on 1.5 mm scans never saw the
  extremes of single 0.5 mm voxels anyway);
- on the way back, the probability maps are resampled onto the fine grid only in the window
  that can hold a label (:func:`support_box`, :func:`window_for`, :func:`resize_window`):
  every fine voxel outside it interpolates coarse voxels whose probabilities are all below
  ``floor`` (at most the threshold), so the label map is the same as a resampling of the
  whole volume, and probabilities written there are 0 instead of values below ``floor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lofihippseg.preprocessing.crop import Box

PROB_FLOOR = 0.01  # probabilities below this (and below the threshold) are taken as 0 far out


def pool_factors(spacing: Sequence[float], mm: float | None) -> tuple[int, int, int]:
    """Whole voxels per block along each axis so that blocks are at most ``mm`` wide.

    Example:
        >>> pool_factors((0.5, 0.5, 1.0), 1.5)
        (3, 3, 1)
    """
    if mm is None:
        return (1, 1, 1)
    return tuple(max(1, int(math.floor(mm / s + 1e-6))) for s in spacing)  # type: ignore[return-value]


def pool(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Average ``data`` over blocks of ``factors`` voxels (the last block of an axis may be
    smaller: it averages the voxels there are).

    Example:
        >>> pool(np.arange(8.0).reshape(2, 2, 2), (2, 1, 1)).tolist()
        [[[2.0, 3.0], [4.0, 5.0]]]
    """
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None, None]
    k = tuple(int(f) for f in factors)
    return F.avg_pool3d(x, k, stride=k, ceil_mode=True)[0, 0].numpy()


def fine_box(coarse: Box, factors: Sequence[int], shape: Sequence[int]) -> tuple[Box, tuple]:
    """The fine voxels under a box of pooled voxels, clipped to ``shape``, and the unclipped
    extent (what a resampling of the pooled box onto whole blocks would have).

    Example:
        >>> fine_box((slice(1, 3),) * 3, (3, 3, 1), (7, 7, 7))
        ((slice(3, 7, None), slice(3, 7, None), slice(1, 3, None)), (6, 6, 2))
    """
    box = tuple(
        slice(c.start * f, min(c.stop * f, n))
        for c, f, n in zip(coarse, factors, shape, strict=True)
    )
    full = tuple((c.stop - c.start) * f for c, f in zip(coarse, factors, strict=True))
    return box, full  # type: ignore[return-value]


def support_box(maps: Sequence[np.ndarray], floor: float) -> Box | None:
    """Box of the voxels where any map (channels first) reaches ``floor``; None if none does.

    Example:
        >>> m = np.zeros((2, 4, 4, 4)); m[1, 2, 1, 3] = 0.9
        >>> support_box([m], 0.5)
        (slice(2, 3, None), slice(1, 2, None), slice(3, 4, None))
    """
    mask = np.zeros(maps[0].shape[-3:], dtype=bool)
    for m in maps:
        mask |= (np.asarray(m) >= floor).reshape(-1, *mask.shape).any(axis=0)
    if not mask.any():
        return None
    box = []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def _sources(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output index along one axis of ``resize``: first and last input index used."""
    j = np.arange(n_out)
    if n_out <= n_in:  # adaptive average pooling
        return (j * n_in) // n_out, -((-(j + 1) * n_in) // n_out) - 1
    src = np.maximum((j + 0.5) * (n_in / n_out) - 0.5, 0.0)  # linear, align_corners=False
    lo = np.floor(src).astype(int)
    return lo, np.minimum(lo + 1, n_in - 1)


def window_for(
    support: Box | None, src_shape: Sequence[int], dst_shape: Sequence[int], limit: Sequence[int]
) -> Box:
    """The output voxels of ``resize(x, dst_shape)`` that read any input voxel in ``support``,
    within ``limit`` (at least one voxel, so arrays are never empty).

    Example:
        >>> window_for((slice(2, 3),) * 3, (4, 4, 4), (8, 8, 8), (8, 8, 8))
        (slice(3, 7, None), slice(3, 7, None), slice(3, 7, None))
    """
    if support is None:
        return (slice(0, 1),) * 3  # type: ignore[return-value]
    box = []
    for s, n_in, n_out, lim in zip(support, src_shape, dst_shape, limit, strict=True):
        lo, hi = _sources(int(n_in), int(n_out))
        hit = np.flatnonzero((hi >= s.start) & (lo < s.stop) & (np.arange(n_out) < lim))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 1))
    return tuple(box)  # type: ignore[return-value]


def _axis_window(
    x: torch.Tensor, axis: int, n_in: int, n_out: int, window: slice, first: int
) -> torch.Tensor:
    """``resize`` along one axis (``axis`` of ``x``), only the output indices in ``window``;
    ``x`` holds input indices ``first`` onwards of the ``n_in`` along that axis."""
    j = torch.arange(window.start, window.stop, dtype=torch.float64)
    if n_out == n_in:
        return x.narrow(axis, window.start - first, window.stop - window.start)
    shape = [1] * x.ndim
    shape[axis] = -1
    if n_out < n_in:  # adaptive average pooling: mean of input [lo, hi)
        lo = torch.div(j * n_in, n_out, rounding_mode="floor").long()
        hi = -torch.div(-(j + 1) * n_in, n_out, rounding_mode="floor").long()
        pad = [0] * (2 * x.ndim)
        pad[2 * (x.ndim - 1 - axis)] = 1  # a leading zero, so that sums are differences
        csum = F.pad(torch.cumsum(x.double(), dim=axis), pad)
        total = csum.index_select(axis, hi - first) - csum.index_select(axis, lo - first)
        return (total / (hi - lo).double().reshape(shape)).to(x.dtype)
    src = torch.clamp((j + 0.5) * (n_in / n_out) - 0.5, min=0.0)
    lo = torch.floor(src).long()
    hi = torch.clamp(lo + 1, max=n_in - 1)
    weight = (src - lo.double()).to(x.dtype).reshape(shape)
    below, above = x.index_select(axis, lo - first), x.index_select(axis, hi - first)
    return below * (1 - weight) + above * weight


def resize_window(x: torch.Tensor, shape: Sequence[int], window: Box) -> torch.Tensor:
    """``preprocessing.resample.resize(x, shape)[..., window]`` without the rest of the output.

    Example:
        >>> from lofihippseg.preprocessing.resample import resize
        >>> x = torch.rand(2, 5, 6, 7)
        >>> w = (slice(2, 9), slice(0, 4), slice(3, 5))
        >>> bool(torch.allclose(resize_window(x, (10, 4, 14), w), resize(x, (10, 4, 14))[..., *w],
        ...                     atol=1e-6))
        True
    """
    out = x.float()
    lead = out.ndim - 3
    firsts = []
    for axis, (n_out, w) in enumerate(zip(shape, window, strict=True)):
        # only the input voxels the window reads take part (a small window of a large map)
        lo, hi = _sources(int(out.shape[lead + axis]), int(n_out))
        first, last = int(lo[w.start]), int(hi[w.stop - 1])
        firsts.append(first)
        out = out.narrow(lead + axis, first, last + 1 - first)
    for axis in range(3):
        n_in = int(x.shape[lead + axis])
        out = _axis_window(out, lead + axis, n_in, int(shape[axis]), window[axis], firsts[axis])
    return out.contiguous()
