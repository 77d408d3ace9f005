"""Say how two voxel grids differ (shape, voxel size, orientation, origin), in words."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ATOL_MM = 1e-3  # grids closer than this (mm, or its equivalent in the affine) are the same


def _sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def _mm(values: np.ndarray) -> str:
    return "x".join(f"{v:.3g}" for v in values) + " mm"


def _axcodes(affine: np.ndarray) -> str:
    from nibabel.orientations import aff2axcodes

    return "".join(str(c) for c in aff2axcodes(affine))


def grid_difference(
    affine_a: np.ndarray,
    shape_a: Sequence[int],
    affine_b: np.ndarray,
    shape_b: Sequence[int],
) -> str | None:
    """How grid A differs from grid B, e.g. ``origins 20.0 mm apart``; None when they match.

    Every difference found is listed (``; ``-separated): shapes, voxel sizes, orientations
    (axis codes, or the angle between them for oblique grids), origins (distance in mm).

    Example:
        >>> shifted = np.eye(4); shifted[0, 3] = 20
        >>> grid_difference(shifted, (9, 9, 9), np.eye(4), (9, 9, 9))
        'origins 20 mm apart'
    """
    a, b = np.asarray(affine_a, float), np.asarray(affine_b, float)
    parts = []
    if tuple(shape_a) != tuple(shape_b):
        parts.append(f"shapes {tuple(int(n) for n in shape_a)} vs {tuple(int(n) for n in shape_b)}")
    size_a, size_b = _sizes(a), _sizes(b)
    if not np.allclose(size_a, size_b, atol=ATOL_MM):
        parts.append(f"voxel sizes {_mm(size_a)} vs {_mm(size_b)}")
    dir_a = a[:3, :3] / np.where(size_a > 0, size_a, 1)
    dir_b = b[:3, :3] / np.where(size_b > 0, size_b, 1)
    if not np.allclose(dir_a, dir_b, atol=ATOL_MM):
        codes_a, codes_b = _axcodes(a), _axcodes(b)
        if codes_a != codes_b:
            parts.append(f"orientations differ ({codes_a} vs {codes_b})")
        else:
            cosine = np.clip((np.trace(dir_a.T @ dir_b) - 1) / 2, -1.0, 1.0)
            parts.append(f"orientations differ by {math.degrees(math.acos(cosine)):.3g} degrees")
    distance = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    if distance > ATOL_MM:
        parts.append(f"origins {distance:.3g} mm apart")
    return "; ".join(parts) or None
