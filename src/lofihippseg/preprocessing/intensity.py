"""Intensity normalisation shared by training and inference."""

from __future__ import annotations

import numpy as np


def minmax_normalise(
    data: np.ndarray, clip_percentiles: tuple[float, float] | None = None
) -> np.ndarray:
    """Scale to [0, 1], optionally clipping to percentiles of the non-zero voxels first.

    Robust to inputs on any scale (uint8 to 1e6); a constant image becomes all zeros.

    Example:
        >>> minmax_normalise(np.array([2.0, 4.0, 6.0]))
        array([0. , 0.5, 1. ], dtype=float32)
    """
    data = np.asarray(data, dtype=np.float32)
    if clip_percentiles is not None:
        nz = data[data != 0]
        ref = nz if nz.size else data
        low, high = (float(v) for v in np.percentile(ref, clip_percentiles))
        # percentiles of the data lie within its range: clipped, its extremes are low and high
        out = np.clip(data, np.float32(low), np.float32(high))
        low, high = float(np.float32(low)), float(np.float32(high))
    else:
        out = data.copy()
        low, high = float(data.min()), float(data.max())
    if high - low <= 0:
        return np.zeros_like(data)
    out -= np.float32(low)  # in place: one copy of the volume in all
    out /= np.float32(high - low)
    return out
