"""Bounding-box crops and pads (canonical arrays, last three axes spatial)."""

from __future__ import annotations

import numpy as np

# a scan (or a head within it) narrower than this from left to right cannot hold both
# hippocampi (their centres lie ~60 mm apart): it is a crop around one of them, such as the
# MSD crops; predict runs the model's crop family on it and expects one hippocampus in it
CROP_MAX_WIDTH_MM = 80.0

Box = tuple[slice, slice, slice]


def within(box: Box, outer: Box) -> Box:
    """``box`` (in a volume's voxels) as slices into the array that covers ``outer``.

    Example:
        >>> within((slice(3, 5),) * 3, (slice(1, 9),) * 3)
        (slice(2, 4, None), slice(2, 4, None), slice(2, 4, None))
    """
    return tuple(
        slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer, strict=True)
    )  # type: ignore[return-value]


def nonzero_bbox(data: np.ndarray, margin: int = 1) -> Box:
    """Bounding box of the non-zero voxels, grown by ``margin`` voxels and clipped to the image.

    Example:
        >>> a = np.zeros((5, 5, 5)); a[2, 2, 2] = 1
        >>> nonzero_bbox(a, margin=1)
        (slice(1, 4, None), slice(1, 4, None), slice(1, 4, None))
    """
    mask = np.asarray(data) != 0
    box = []
    for axis, size in enumerate(mask.shape):  # per-axis projections: no index arrays
        others = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=others))
        if idx.size == 0:
            return tuple(slice(0, s) for s in data.shape)  # type: ignore[return-value]
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, size)))
    return tuple(box)  # type: ignore[return-value]


def pad_to_multiple(
    data: np.ndarray, multiple: int = 16, value: float = 0.0
) -> tuple[np.ndarray, Box]:
    """Zero-pad the last three axes up to a multiple; returns the array and the box of the original.

    Example:
        >>> padded, box = pad_to_multiple(np.ones((17, 16, 3)), 16)
        >>> padded.shape, padded[box].shape
        ((32, 16, 16), (17, 16, 3))
    """
    spatial = data.shape[-3:]
    target = [int(np.ceil(s / multiple) * multiple) for s in spatial]
    before = [(t - s) // 2 for t, s in zip(target, spatial, strict=True)]
    pad = [(0, 0)] * (data.ndim - 3) + [
        (b, t - s - b) for b, t, s in zip(before, target, spatial, strict=True)
    ]
    box = tuple(slice(b, b + s) for b, s in zip(before, spatial, strict=True))
    return np.pad(data, pad, constant_values=value), box  # type: ignore[return-value]
