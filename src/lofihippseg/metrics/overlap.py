"""Overlap and volume metrics of one label: Dice, precision, recall, volumes (mL), RVE.

Empty-mask policy (the same everywhere in ``lofihippseg.metrics``):

- both masks empty: a perfect result (Dice, precision and recall 1, RVE 0);
- exactly one mask empty: the LISA challenge's missing-case values (Dice 0, RVE 1), with
  precision and recall 0.

So every value is finite and no NaN can reach a mean.
"""

from __future__ import annotations

import numpy as np


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (the policy above).

    Example:
        >>> a = np.array([True, True, False]); b = np.array([True, False, False])
        >>> round(mask_dice(a, b), 3), mask_dice(~a & a, ~b & b)
        (0.667, 1.0)
    """
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def overlap_metrics(gt: np.ndarray, pred: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Dice, precision, recall, predicted and true volume (mL) and relative volume error.

    RVE = |Vpred - Vgt| / Vgt, as scored by the LISA challenge.

    Args:
        gt: ground-truth boolean mask.
        pred: predicted boolean mask of the same shape.
        voxel_ml: volume of one voxel in millilitres.

    Returns:
        ``{"dice", "precision", "recall", "rve", "volume_pred_ml", "volume_gt_ml"}``.

    Example:
        >>> a = np.zeros((4, 4, 4), bool); a[:2] = True
        >>> overlap_metrics(a, a, 0.001)["dice"]
        1.0
    """
    n_gt = int(np.count_nonzero(gt))
    n_pred = int(np.count_nonzero(pred))
    tp = int(np.count_nonzero(gt & pred))
    volumes = {"volume_pred_ml": n_pred * voxel_ml, "volume_gt_ml": n_gt * voxel_ml}
    if n_gt == 0 and n_pred == 0:
        return {"dice": 1.0, "precision": 1.0, "recall": 1.0, "rve": 0.0, **volumes}
    if n_gt == 0 or n_pred == 0:
        return {"dice": 0.0, "precision": 0.0, "recall": 0.0, "rve": 1.0, **volumes}
    return {
        "dice": 2.0 * tp / (n_gt + n_pred),
        "precision": tp / n_pred,
        "recall": tp / n_gt,
        "rve": abs(n_pred - n_gt) / n_gt,
        **volumes,
    }
