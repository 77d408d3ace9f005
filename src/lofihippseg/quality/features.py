"""Per-side features of one prediction, read by the quality estimator (``quality.estimator``).

Everything here comes from what any predict keeps: the label map, the two views' and the fused
probability maps in their box, the scan and its voxel size, and optional ``Prediction.info``
keys (absent -> a neutral value), so the features survive a leaner predict. The estimator is
refitted on them whenever the model or predict changes (``recipe.quality_fit``).

Per side (label 1 = left, channel 0; label 2 = right, channel 1):

- ``vol_ml``, ``log_vol_ratio`` (own / other side, +0.05 mL each, clipped to +-3);
- ``side_view_dice`` (the views' masks, this side), ``soft_view_dice``, ``view_mad`` (mean
  absolute difference of the views where either or the label is);
- ``mean_prob_in`` (fused probability inside the label), ``uncertain_frac`` (voxels with fused
  probability 0.2-0.8 per labelled voxel), ``prob_mass_ratio`` (sum of fused / labelled voxels),
  ``expected_dice`` (soft Dice of the fused map with the label: the Dice expected if the
  probabilities were calibrated), ``entropy_ratio`` (the fused map's entropy per labelled voxel);
- ``post_dice`` (the label against the mean of the views thresholded: what the refiner, edge
  refinement and the largest component changed), ``fused_outside`` (fused foreground left out);
- ``n_parts`` (log of 1 + components of the fused foreground), ``surface_ratio`` (boundary
  voxels per voxel);
- ``edge_visibility`` (``metrics.visibility``, clipped to 5), ``cv_inside`` (the scan's std over
  mean inside the label), ``border_frac`` (labelled voxels within 2 voxels of the scan's edge);
- ``x_separation_mm`` (right centroid minus left along the subject's left-right axis, 0 when a
  side is empty), ``min_fov_mm``, ``max_voxel_mm``, ``anisotropy``;
- ``view_dice`` (both sides, ``Prediction.view_dice``), ``family_best`` and ``family_gap``
  (``info["family_view_agreement"]``: the best pair's agreement and its lead on the next; 0 with
  one pair), ``refiner_change`` (``info["refiner_change"]``, labelled voxels changed / labelled,
  0 without a refiner), ``mirror_dice`` (``info["mirror_dice"]``: the Dice of the scan's and
  its mirror image's segmentations of this side, both networks; 0 where neither found it, -1
  where the mirror did not run, as for crops).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from lofihippseg.metrics.overlap import mask_dice
from lofihippseg.metrics.visibility import edge_visibility

SIDES = ("left", "right")
FEATURES = (
    "vol_ml",
    "log_vol_ratio",
    "side_view_dice",
    "soft_view_dice",
    "view_mad",
    "mean_prob_in",
    "uncertain_frac",
    "prob_mass_ratio",
    "expected_dice",
    "entropy_ratio",
    "post_dice",
    "fused_outside",
    "n_parts",
    "surface_ratio",
    "edge_visibility",
    "cv_inside",
    "border_frac",
    "x_separation_mm",
    "min_fov_mm",
    "max_voxel_mm",
    "anisotropy",
    "view_dice",
    "family_best",
    "family_gap",
    "refiner_change",
    "mirror_dice",
)


def _finite(value: Any, neutral: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return neutral
    return v if math.isfinite(v) else neutral


def _family(info: Mapping[str, Any]) -> tuple[float, float]:
    """(best agreement, its lead on the next pair) of ``info["family_view_agreement"]``."""
    agreement = info.get("family_view_agreement")
    if not isinstance(agreement, Mapping):
        return 0.0, 0.0
    values = sorted((_finite(v) for v in agreement.values()), reverse=True)
    if not values:
        return 0.0, 0.0
    return values[0], values[0] - values[1] if len(values) > 1 else 0.0


def _refiner_change(info: Mapping[str, Any], side: str, n_label: int) -> float:
    change = info.get("refiner_change")
    if not isinstance(change, Mapping):
        return 0.0
    return abs(_finite(change.get(side))) / max(n_label, 1)


def _mirror_dice(info: Mapping[str, Any], side: str) -> float:
    agreement = info.get("mirror_dice")
    if not isinstance(agreement, Mapping):
        return -1.0  # the mirror did not run
    return _finite(agreement.get(side), 0.0)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` (the whole array when it is empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    out = []
    for axis in range(3):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        stop = min(int(hit[-1]) + 1 + margin, mask.shape[axis])
        out.append(slice(max(int(hit[0]) - margin, 0), stop))
    return tuple(out)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy (bits) of probabilities."""
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def _centroid_x(mask: np.ndarray, offset: int) -> float | None:
    if not mask.any():
        return None
    counts = mask.sum(axis=(1, 2))
    return float((np.arange(mask.shape[0]) * counts).sum() / counts.sum()) + offset


def case_features(
    image: np.ndarray,
    labels: np.ndarray,
    prob1: np.ndarray,
    prob2: np.ndarray,
    fused: np.ndarray,
    box: Sequence[slice],
    spacing: Sequence[float],
    view_dice: float | None,
    info: Mapping[str, Any] | None = None,
    volume_shape: Sequence[int] | None = None,
    window_start: Sequence[int] = (0, 0, 0),
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """The features of both sides of one prediction (module docstring).

    Args:
        image: the scan (canonical order), whole or a window of it holding ``box``.
        labels: the label map on ``image``'s grid (0 background, 1 left, 2 right).
        prob1: view 1 probabilities (2, ...) in ``box``.
        prob2: view 2 probabilities (2, ...) in ``box``.
        fused: fused probabilities (2, ...) in ``box``.
        box: where the maps lie in ``image``.
        spacing: voxel size (mm).
        view_dice: the views' agreement over both sides (None/NaN: nothing found).
        info: ``Prediction.info`` (optional keys; absent -> neutral values).
        volume_shape: the whole scan's shape when ``image`` is a window of it.
        window_start: where the window starts in the whole scan.
        threshold: the foreground threshold predict used.

    Returns:
        ``{"left": {name: value}, "right": {...}}`` with every name of ``FEATURES``, all finite.

    Example:
        >>> lab = np.zeros((20, 20, 20), np.uint8); lab[4:8, 8:12, 8:12] = 1
        >>> lab[12:16, 8:12, 8:12] = 2
        >>> p = np.stack([lab == 1, lab == 2]).astype(np.float32)
        >>> box = (slice(0, 20),) * 3
        >>> f = case_features(lab.astype(np.float32), lab, p, p, p, box, (1, 1, 1), 1.0)
        >>> f["left"]["side_view_dice"], f["left"]["x_separation_mm"]
        (1.0, 8.0)
    """
    info = info or {}
    spacing = [float(s) for s in spacing]
    shape = tuple(volume_shape) if volume_shape is not None else labels.shape
    voxel_ml = float(np.prod(spacing)) / 1000.0
    fov = [n * s for n, s in zip(shape, spacing, strict=True)]
    box = tuple(box)
    in_box = labels[box]
    family_best, family_gap = _family(info)
    counts = [int(np.count_nonzero(in_box == v)) for v in (1, 2)]
    cx = [_centroid_x(in_box == v, box[0].start + int(window_start[0])) for v in (1, 2)]
    separation = 0.0 if None in cx else (cx[1] - cx[0]) * spacing[0]  # type: ignore[operator]
    out: dict[str, dict[str, float]] = {}
    for c, side in enumerate(SIDES):
        n_label, other_n = counts[c], counts[1 - c]
        vol, other_vol = n_label * voxel_ml, other_n * voxel_ml
        # everything below in the bounding box of what this side's maps hold (+ a margin)
        support = (prob1[c] > 0.05) | (prob2[c] > 0.05) | (fused[c] > 0.05) | (in_box == c + 1)
        sub = _bbox(support, 1)
        p1, p2, pf = (np.asarray(m[c][sub], np.float32) for m in (prob1, prob2, fused))
        lab_box = in_box[sub] == c + 1
        a, b, fg = p1 > threshold, p2 > threshold, pf > threshold
        union = a | b | lab_box
        denom = float((p1 * p1).sum() + (p2 * p2).sum())
        parts = ndimage.label(fg)[1] if fg.any() else 0
        eroded = ndimage.binary_erosion(lab_box) if n_label else lab_box
        # the scan around the label, grown by the visibility shell, in the whole-scan window
        origin = [bx.start + s.start for bx, s in zip(box, sub, strict=True)]
        grown = tuple(
            slice(max(o - 4, 0), min(o + s.stop - s.start + 4, n))
            for o, s, n in zip(origin, sub, image.shape, strict=True)
        )
        mask = labels[grown] == c + 1
        region = image[grown]
        visibility = edge_visibility(region, mask) if n_label else None
        inside = region[mask] if n_label else np.zeros(1, np.float32)
        mean_in = float(np.abs(inside.mean()))
        near = 0
        if n_label:  # labelled voxels within 2 voxels of the whole scan's edge
            where = np.nonzero(mask)
            for axis in range(3):
                idx = where[axis] + grown[axis].start + int(window_start[axis])
                near = max(near, int(((idx < 2) | (idx >= shape[axis] - 2)).sum()))
        out[side] = {
            "vol_ml": vol,
            "log_vol_ratio": float(np.clip(np.log((vol + 0.05) / (other_vol + 0.05)), -3, 3)),
            "side_view_dice": mask_dice(a, b) if (a.any() or b.any()) else 0.0,
            "soft_view_dice": 2.0 * float((p1 * p2).sum()) / denom if denom > 0 else 0.0,
            "view_mad": float(np.abs(p1 - p2)[union].mean()) if union.any() else 0.0,
            "mean_prob_in": float(pf[lab_box].mean()) if n_label else 0.0,
            "uncertain_frac": float(((pf > 0.2) & (pf < 0.8)).sum()) / max(n_label, 1),
            "prob_mass_ratio": float(pf.sum()) / max(n_label, 1),
            "expected_dice": 2.0 * float(pf[lab_box].sum()) / max(float(pf.sum()) + n_label, 1e-6),
            "entropy_ratio": float(_entropy(pf).sum()) / max(n_label, 1),
            "post_dice": mask_dice(lab_box, (p1 + p2) / 2 > threshold) if n_label else 0.0,
            "fused_outside": float((fg & ~lab_box).sum()) / max(int(fg.sum()), 1),
            "n_parts": math.log1p(parts),
            "surface_ratio": float((lab_box & ~eroded).sum()) / max(n_label, 1),
            "edge_visibility": min(_finite(visibility), 5.0),
            "cv_inside": min(float(inside.std()) / mean_in, 5.0) if mean_in > 0 else 0.0,
            "border_frac": near / max(n_label, 1),
            "x_separation_mm": float(separation),
            "min_fov_mm": min(fov),
            "max_voxel_mm": max(spacing),
            "anisotropy": max(spacing) / max(min(spacing), 1e-6),
            "view_dice": _finite(view_dice),
            "family_best": family_best,
            "family_gap": family_gap,
            "refiner_change": _refiner_change(info, side, n_label),
            "mirror_dice": _mirror_dice(info, side),
        }
    return out


def prediction_features(
    data: np.ndarray, spacing: Sequence[float], pred: Any, threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """:func:`case_features` of a ``Prediction`` of the scan ``data`` (canonical order).

    Example:
        >>> feats = prediction_features(volume.data, volume.spacing, pred)  # doctest: +SKIP
    """
    return case_features(
        data,
        pred.labels,
        pred.prob1,
        pred.prob2,
        pred.fused,
        pred.box,
        spacing,
        pred.view_dice,
        getattr(pred, "info", None),
        threshold=threshold,
    )


def as_vector(features: Mapping[str, float], names: Sequence[str] = FEATURES) -> np.ndarray:
    """The features in ``names`` order as float64 (absent -> 0)."""
    return np.array([_finite(features.get(n)) for n in names], dtype=np.float64)
