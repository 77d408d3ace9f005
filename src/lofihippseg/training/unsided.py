"""Labelled crops that carry no side (e.g. the MSD hippocampus crops): "hippocampus, either side".

A crop around one hippocampus does not say which hemisphere it came from, but our networks have
one output channel per side. Such crops are labelled :data:`UNSIDED` (3) wherever the
hippocampus is, and each training sample's target is resolved just before the loss: the
hippocampus goes to the channel that already overlaps it more (the summed probability inside
it, both networks together), and the other channel is trained to stay empty (a crop holds one
hippocampus; ``LossConfig.unsided_other = "empty"``) or not trained inside that hippocampus
(``"free"``: :func:`free_other_channel`). The loss is then the ordinary two-channel loss, so
the mutual and critic terms need no change; in effect it is the smaller of the two
assignments' losses, picked by overlap.

Where every stored crop is known to hold one side (``TrainConfig.unsided_side``; the MSD crops
all look like left hippocampi), :func:`declare_side` labels it so, or mirrors it and labels it
the other side: then nothing is resolved and both channels learn from the crops.

With ``empty``, once one channel wins most crops, every crop of the other side teaches the
losing channel that a hippocampus is background: in one run (pool + crops + random-contrast
boxes, 40 % crops) the right channel died within 500 iterations. ``free`` has no such pull.
"""

from __future__ import annotations

import numpy as np
import torch

from lofihippseg.preprocessing.resample import resize, working_grid

UNSIDED = 3  # label value: hippocampus of either side


def mark_unsided(label: np.ndarray) -> np.ndarray:
    """Every label > 0 becomes :data:`UNSIDED` (uint8).

    Example:
        >>> mark_unsided(np.array([0, 1, 2])).tolist()
        [0, 3, 3]
    """
    return np.where(np.asarray(label) > 0, UNSIDED, 0).astype(np.uint8)


def resolve_unsided(label: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Give each sample's :data:`UNSIDED` voxels the side (1 or 2) its prediction favours.

    Args:
        label: (B, D, H, W) integer labels in {0, 1, 2, 3}.
        probs: (B, 2, D, H, W) probabilities (left, right) of the current prediction.

    Returns:
        Labels in {0, 1, 2}; samples without unsided voxels are unchanged.

    Example:
        >>> lab = torch.tensor([[[[0, 3]]]])
        >>> p = torch.tensor([[[[[0.1, 0.2]]], [[[0.1, 0.9]]]]])
        >>> resolve_unsided(lab, p).tolist()
        [[[[0, 2]]]]
    """
    mask = label == UNSIDED
    if not bool(mask.any()):
        return label
    m = mask.unsqueeze(1).to(probs.dtype)
    mass = (probs.detach() * m).flatten(2).sum(-1)  # (B, 2)
    side = torch.where(mass[:, 1] > mass[:, 0], 2, 1).to(label.dtype)  # ties: left
    return torch.where(mask, side.view(-1, *([1] * (label.ndim - 1))), label)


def free_other_channel(label: torch.Tensor, resolved: torch.Tensor) -> torch.Tensor | None:
    """Loss weights (B, 2, D, H, W) that leave out, inside each crop's hippocampus, the channel
    :func:`resolve_unsided` did not give it; None when the batch has no unsided voxels.

    Example:
        >>> lab = torch.tensor([[[[0, 3]]]])
        >>> free_other_channel(lab, torch.tensor([[[[0, 2]]]]))[0, :, 0, 0].tolist()
        [[1.0, 0.0], [1.0, 1.0]]
    """
    mask = label == UNSIDED
    if not bool(mask.any()):
        return None
    left_free = mask & (resolved == 2)  # given to the right channel: the left one is free
    right_free = mask & (resolved == 1)
    return torch.stack([~left_free, ~right_free], dim=1).float()


def declare_side(
    image: torch.Tensor, view2: torch.Tensor | None, label: torch.Tensor, side: str, mirror: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A crop whose hippocampus is known to be ``side`` ("left" or "right") as stored: label it
    so, or mirror it left-right (array axis 0 = world x of the RAS-ordered crop) and label it
    the other side.

    Args:
        image, view2: (1, D, H, W) image and optional second view.
        label: (D, H, W) labels, :data:`UNSIDED` on the hippocampus.
        side: the side of the stored crops.
        mirror: flip along x and swap the side.

    Example:
        >>> lab = torch.tensor([[[0]], [[3]]])
        >>> declare_side(torch.zeros(1, 2, 1, 1), None, lab, "left", True)[2].flatten().tolist()
        [2, 0]
    """
    value = (1 if side == "left" else 2) if not mirror else (2 if side == "left" else 1)
    label = torch.where(label == UNSIDED, value, 0).to(label.dtype)
    if mirror:
        image, label = image.flip(-3), label.flip(-3)
        view2 = None if view2 is None else view2.flip(-3)
    return image, view2, label


def merged_dice(pred: torch.Tensor, truth: np.ndarray) -> float:
    """Dice of "any side" (pred > 0) against the crop's hippocampus (truth > 0).

    Example:
        >>> merged_dice(torch.tensor([0, 1, 2, 0]), np.array([0, 3, 3, 3]))
        0.8
    """
    p, t = pred > 0, torch.from_numpy(np.asarray(truth) > 0)
    denom = float(p.sum()) + float(t.sum())
    return 1.0 if denom == 0 else 2.0 * float((p & t).sum()) / denom


def to_isotropic(
    image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float], mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a crop (and its hippocampus mask) to ``mm`` isotropic voxels over its field of
    view (area average / linear; the mask is resampled as a fraction and thresholded at 0.5).

    Example:
        >>> img, lab = to_isotropic(np.ones((30, 30, 30)), np.ones((30, 30, 30)), (1, 1, 1), 1.5)
        >>> img.shape, int(lab.max())
        ((20, 20, 20), 3)
    """
    grid = working_grid(image.shape, spacing, mm, tolerance=0.02)
    if grid is None:
        return np.asarray(image, np.float32), mark_unsided(label)
    img = resize(torch.from_numpy(np.asarray(image, np.float32)), grid.shape).numpy()
    frac = resize(torch.from_numpy((np.asarray(label) > 0).astype(np.float32)), grid.shape)
    return img, np.where(frac.numpy() >= 0.5, UNSIDED, 0).astype(np.uint8)


def invert_contrast(image: torch.Tensor) -> torch.Tensor:
    """``1 - x`` on an image in [0, 1]: a T1 crop toward T2-like (fluid bright, white matter dark).

    Example:
        >>> invert_contrast(torch.tensor([0.0, 0.25, 1.0])).tolist()
        [1.0, 0.75, 0.0]
    """
    return 1.0 - image


CURVE_KNOTS = 6  # knots of the random intensity curve: room for any order of a few tissues


def random_intensity_curve(
    image: torch.Tensor, g: torch.Generator, knots: int = CURVE_KNOTS
) -> torch.Tensor:
    """Map an image in [0, 1] through a random piecewise-linear curve (``knots`` evenly spaced
    knots, each at a uniform random height), rescaled to [0, 1]: voxels of one intensity stay
    alike, but fluid, grey and white matter take a random order and spacing, as in the
    generator's random-contrast images, while the edges stay those of the real anatomy.

    Example:
        >>> x = torch.linspace(0, 1, 11)
        >>> y = random_intensity_curve(x, torch.Generator().manual_seed(0))
        >>> float(y.min()), float(y.max())
        (0.0, 1.0)
    """
    heights = torch.rand(knots, generator=g, dtype=torch.float64).to(image.dtype)
    position = image.clamp(0.0, 1.0) * (knots - 1)
    low = position.floor().long().clamp(max=knots - 2)
    frac = position - low
    out = heights[low] * (1 - frac) + heights[low + 1] * frac
    span = out.max() - out.min()
    if float(span) < 1e-6:  # a flat draw over the image's intensities: keep the image
        return image
    return (out - out.min()) / span
