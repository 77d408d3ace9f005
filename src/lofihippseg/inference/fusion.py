"""Fusing the two views' probability maps into one left/right label map.

Probability maps have two channels (channel 0 = left, channel 1 = right) on the same grid.

- ``mean`` (default, as in Co-BioNet): average the two maps, then threshold.
- ``union`` (the released LoFiHippSeg inference): a channel is on where either view's
  probability exceeds the threshold; the fused probability reported is the per-voxel maximum
  (so ``fused > threshold`` is exactly the union).

A voxel claimed by both sides goes to the side with the higher fused probability (ties go to
the right, as the released code did). The ``released`` overlap rule gives every such voxel to
the right, which is what the released code did; it is used only by the released recipe.
"""

from __future__ import annotations

import numpy as np

FUSIONS = ("mean", "union")
OVERLAP_RULES = ("probability", "released")


def fuse_probabilities(p1: np.ndarray, p2: np.ndarray, fusion: str = "mean") -> np.ndarray:
    """The fused two-channel probability map.

    Example:
        >>> fuse_probabilities(np.array([0.2, 0.9]), np.array([0.6, 0.1]), "union")
        array([0.6, 0.9])
    """
    if p1.shape != p2.shape:
        raise ValueError(f"probability maps differ in shape: {p1.shape} vs {p2.shape}")
    if fusion == "mean":
        return (p1 + p2) / 2
    if fusion == "union":
        return np.maximum(p1, p2)
    raise ValueError(f"unknown fusion {fusion!r}; expected one of {FUSIONS}")


def resolve_overlap(
    masks: np.ndarray, probabilities: np.ndarray, rule: str = "probability"
) -> np.ndarray:
    """Two boolean channel masks (2, ...) to a label map: 0 background, 1 left, 2 right.

    Args:
        masks: (2, ...) boolean masks, channel 0 left and channel 1 right.
        probabilities: (2, ...) fused probabilities deciding contested voxels.
        rule: ``probability`` (higher probability wins, ties to the right) or ``released``
            (contested voxels go to the right).

    Example:
        >>> m = np.array([[True, True], [True, False]])
        >>> p = np.array([[0.9, 0.8], [0.7, 0.1]])
        >>> resolve_overlap(m, p).tolist(), resolve_overlap(m, p, "released").tolist()
        ([1, 1], [2, 1])
    """
    if rule not in OVERLAP_RULES:
        raise ValueError(f"unknown overlap rule {rule!r}; expected one of {OVERLAP_RULES}")
    left, right = masks[0].astype(bool), masks[1].astype(bool)
    labels = np.zeros(left.shape, dtype=np.uint8)
    labels[left] = 1
    labels[right] = 2  # released: the right wins every contested voxel
    if rule == "probability":
        contested = left & right
        labels[contested & (probabilities[0] > probabilities[1])] = 1
    return labels


def fuse_to_labels(
    p1: np.ndarray,
    p2: np.ndarray,
    fusion: str = "mean",
    threshold: float = 0.5,
    overlap: str = "probability",
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse two (2, ...) probability maps, threshold and resolve left/right overlaps.

    Args:
        p1: view 1 probabilities (2, ...).
        p2: view 2 probabilities (2, ...).
        fusion: ``mean`` or ``union``.
        threshold: a channel is on where the fused probability is above this.
        overlap: ``probability`` or ``released`` (see :func:`resolve_overlap`).

    Returns:
        ``(labels, fused)``: uint8 labels (...) in {0, 1, 2} and the fused probabilities.

    Example:
        >>> p1 = np.array([[0.9], [0.2]]); p2 = np.array([[0.3], [0.8]])
        >>> fuse_to_labels(p1, p2, "mean")[0].tolist(), fuse_to_labels(p1, p2, "union")[0].tolist()
        ([1], [1])
    """
    fused = fuse_probabilities(p1, p2, fusion)
    if fusion == "union":  # exactly the released rule: p1 > t OR p2 > t per channel
        masks = (p1 > threshold) | (p2 > threshold)
    else:
        masks = fused > threshold
    return resolve_overlap(masks, fused, overlap), fused


def view_agreement_dice(p1: np.ndarray, p2: np.ndarray, threshold: float = 0.5) -> float:
    """Dice between the two views' foreground masks (any side): a quality flag.

    Returns NaN when both views find nothing: there is nothing to agree on, and 1.0 would read
    as perfect agreement (sidecars write it as ``null``, the CSV as an empty cell).

    Example:
        >>> a = np.array([[0.9, 0.9], [0.0, 0.0]])  # (channels, voxels): 2 left voxels
        >>> b = np.array([[0.9, 0.0], [0.0, 0.0]])  # 1 left voxel
        >>> round(view_agreement_dice(a, b), 3)
        0.667
    """
    a = (p1 > threshold).any(axis=0)
    b = (p2 > threshold).any(axis=0)
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def disagreement(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Per-voxel uncertainty: the largest absolute difference of the two views over channels."""
    return np.abs(p1 - p2).max(axis=0)
