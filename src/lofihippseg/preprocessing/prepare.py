"""The one preprocessing path shared by training and inference."""

from __future__ import annotations

import numpy as np

from lofihippseg.preprocessing.crop import Box, nonzero_bbox
from lofihippseg.preprocessing.intensity import minmax_normalise


def crop_and_normalise(
    data: np.ndarray,
    margin: int = 1,
    clip_percentiles: tuple[float, float] | None = None,
) -> tuple[np.ndarray, Box]:
    """Crop to the non-zero bounding box (plus ``margin``) and min-max normalise to [0, 1].

    Returns:
        The normalised crop (float32) and the box it came from (to paste results back).

    Example:
        >>> a = np.zeros((8, 8, 8)); a[2:5, 2:5, 2:5] = 3.0; a[3, 3, 3] = 6.0
        >>> crop, box = crop_and_normalise(a)
        >>> crop.shape, float(crop.max())
        ((5, 5, 5), 1.0)
    """
    box = nonzero_bbox(data, margin=margin)
    return minmax_normalise(data[box], clip_percentiles), box
