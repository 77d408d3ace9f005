"""Post-processing of label maps: keep the largest connected component of each side."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (empty stays empty).

    Example:
        >>> m = np.zeros((5, 5, 5), bool); m[0, 0, 0] = True; m[2:4, 2:4, 2:4] = True
        >>> int(largest_component(m).sum())
        8
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)  # 26-connectivity in 3D
    labelled, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(sizes.argmax())


def keep_largest_per_side(labels: np.ndarray, values: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Keep only the largest connected component of each label value; other voxels become 0.

    Example:
        >>> lab = np.zeros((6, 6, 6), np.uint8); lab[5, 0, 0] = 1; lab[1:3, 1:3, 1:3] = 1
        >>> lab[4:6, 4:6, 4:6] = 2
        >>> out = keep_largest_per_side(lab)
        >>> int((out == 1).sum()), int((out == 2).sum())
        (8, 8)
    """
    out = np.zeros_like(labels)
    for value in values:
        out[largest_component(labels == value)] = value
    return out
