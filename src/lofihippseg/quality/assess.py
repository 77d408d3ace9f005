"""One case's per-side quality: the predicted Dice, the review flag and its reasons.

A side goes to review when the estimator fitted for the model predicts a Dice below its review
threshold, or when a rule of ``reporting.status.side_review_reasons`` says so (empty, outside the
plausible range, more than twice the other side, an implausible scan). Without an estimator the
predicted Dice is ``None`` ("no estimator") and the rules alone decide. The side a crop around
one hippocampus does not hold is ``absent``: no estimate, no review.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lofihippseg.quality.estimator import QualityEstimator, round_or_none
from lofihippseg.quality.features import SIDES, as_vector, prediction_features
from lofihippseg.reporting.status import StatusRules, absent_side, side_review_reasons


def side_quality(
    features: Mapping[str, Mapping[str, float]] | None,
    left_ml: float,
    right_ml: float,
    shape: Sequence[int],
    spacing: Sequence[float],
    estimator: QualityEstimator | None,
    note: str,
    rules: StatusRules | None = None,
    crop: bool = False,
) -> dict[str, Any]:
    """The sidecar's ``quality`` block.

    Args:
        features: per-side features (``quality.features``); None when not computed.
        left_ml: left volume (mL).
        right_ml: right volume (mL).
        shape: the scan's grid.
        spacing: its voxel size (mm).
        estimator: the model's estimator, or None.
        note: the estimator's file name, or why there is none (``find_estimator``).
        rules: the per-side rules' thresholds (default ``StatusRules()``).
        crop: predict ran the scan as a crop around one hippocampus (``reporting.status``).

    Returns:
        ``{"estimator": note, "review_below": t or None, "left": {"predicted_dice", "review",
        "reasons"}, "right": {...}}``.

    Example:
        >>> q = side_quality(None, 2.1, 4.4, (160, 192, 176), (1, 1, 1), None, "no estimator")
        >>> q["left"]["predicted_dice"], q["left"]["review"]
        (None, True)
    """
    reasons = side_review_reasons(left_ml, right_ml, shape, spacing, rules or StatusRules(), crop)
    out: dict[str, Any] = {
        "estimator": note,
        "review_below": None if estimator is None else round(estimator.review_below, 3),
    }
    held = ((estimator.meta.get("held_back") or {}).get("all") or {}) if estimator else {}
    if held:  # what the estimator was validated at (stated in the cohort's methods)
        keys = ("n", "spearman", "mae", "auc_below_0.6", "catch_rate", "false_flag_rate")
        out["validation"] = {k: held[k] for k in keys if k in held}
    dice_of = dict.fromkeys(SIDES)
    if estimator is not None and features is not None:
        rows = np.stack([as_vector(features[side], estimator.features) for side in SIDES])
        dice_of = dict(zip(SIDES, map(round_or_none, estimator.predict_rows(rows)), strict=True))
    absent = absent_side(left_ml, right_ml, crop)  # the side a crop does not hold
    for side in SIDES:
        if side == absent:  # nothing to estimate or review: the crop does not hold it
            out[side] = {"predicted_dice": None, "review": False, "reasons": [], "absent": True}
            continue
        dice = dice_of[side]
        side_reasons = list(reasons[side])
        if dice is not None and estimator is not None and dice < estimator.review_below:
            side_reasons.insert(0, f"predicted Dice {dice:.2f} below {estimator.review_below:.2f}")
        out[side] = {"predicted_dice": dice, "review": bool(side_reasons), "reasons": side_reasons}
    return out


def assess_prediction(
    data: np.ndarray,
    spacing: Sequence[float],
    pred: Any,
    left_ml: float,
    right_ml: float,
    estimator: QualityEstimator | None,
    note: str,
    threshold: float = 0.5,
) -> tuple[dict[str, Any], float]:
    """:func:`side_quality` of a ``Prediction`` of the scan ``data``, and its seconds.

    Features are computed only when there is an estimator to read them.
    """
    t = time.perf_counter()
    features = None
    if estimator is not None:
        features = prediction_features(data, spacing, pred, threshold)
    crop = bool(getattr(pred, "info", {}).get("crop"))
    quality = side_quality(
        features, left_ml, right_ml, data.shape, spacing, estimator, note, crop=crop
    )
    return quality, time.perf_counter() - t
