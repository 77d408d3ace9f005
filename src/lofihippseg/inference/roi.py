"""Region-of-interest inference: find the hippocampi cheaply, then look closely only there.

A full-resolution VNet pass over a whole 159 x 231 x 195 head costs about 0.64 TFLOP per view,
too slow on a laptop CPU. The hippocampi fill well under 1% of the head, so:

1. locate: the bundle's localiser (a small VNet on the head at 4 mm), or, for models without
   one or when it misses a side, a coarse pass of both networks on the volume down-sampled by 2;
2. one box per side around the largest detection of that side (plus ``LOCALISER_MARGIN_MM`` or
   ``ROI_MARGIN_MM`` of real image context, grown to a multiple of 16 voxels; the two boxes
   are joined when they meet and one box costs less)
   is run at full resolution: two small boxes cost far less than one box spanning both sides
   and whatever else the coarse pass lit up;
3. safety: a segmentation that reaches a box's inner face is run once more in boxes around
   what was found; when neither the localiser nor the coarse pass finds both sides, or the
   boxes are most of the volume, or the regrown segmentation still reaches a face, the caller
   runs the whole volume. A side the networks do not segment inside its located box is not
   searched for in the whole volume (a pass that cost 7-8 s on real T1 heads and found nothing
   the box had not): the case is flagged for review instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lofihippseg.models.vnet import SIZE_MULTIPLE
from lofihippseg.preprocessing.crop import Box

COARSE_THRESHOLD = 0.25  # lenient: the coarse pass only has to find where to look
ROI_MARGIN_MM = 16.0  # context kept around each hippocampus located by the coarse pass
LOCALISER_MARGIN_MM = 12.0  # the localiser's detections are already 4 mm wider than the target
MAX_FRACTION = 0.6  # boxes larger than this fraction of the volume are not worth it
GUARD = 3  # foreground this close to an inner box face triggers the fallback
# a head's two hippocampi: centres at about the same height and depth (within this), the left
# one on the subject's left (smaller x in canonical RAS order)
MAX_SIDE_OFFSET_MM = 25.0


def downsample(volume: torch.Tensor) -> torch.Tensor:
    """Average-pool a (D, H, W) volume by 2 (ceil mode), keeping its dtype and device."""
    x = volume.reshape(1, 1, *volume.shape[-3:]).float()
    return F.avg_pool3d(x, 2, ceil_mode=True)[0, 0]


def _grow(lo: int, hi: int, size: int, multiple: int) -> tuple[int, int]:
    """Grow [lo, hi) symmetrically to a multiple of ``multiple`` within [0, size)."""
    target = min(int(np.ceil((hi - lo) / multiple) * multiple), size)
    extra = target - (hi - lo)
    lo = max(lo - extra // 2, 0)
    hi = min(lo + target, size)
    lo = max(hi - target, 0)
    return lo, hi


def margin_voxels(spacing: Sequence[float], mm: float | None = None) -> tuple[int, int, int]:
    """``mm`` millimetres (default ``ROI_MARGIN_MM``) in voxels along each axis (rounded up).

    Example:
        >>> margin_voxels((1.0, 1.0, 2.0), 16)
        (16, 16, 8)
    """
    mm = ROI_MARGIN_MM if mm is None else mm
    return tuple(math.ceil(mm / s) for s in spacing)  # type: ignore[return-value]


def _largest(mask: np.ndarray) -> np.ndarray:
    labelled, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, labelled, index=range(1, n + 1))
    return labelled == int(np.argmax(sizes)) + 1


def _union(a: Box, b: Box) -> Box:
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )  # type: ignore[return-value]


def _intersect(a: Box, b: Box) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b, strict=True))


def side_boxes(
    probs: torch.Tensor | np.ndarray,
    shape: Sequence[int],
    margin: Sequence[int],
    threshold: float = COARSE_THRESHOLD,
) -> list[Box] | None:
    """Full-resolution boxes, one per side, around each side's largest coarse detection.

    Args:
        probs: (2, d, h, w) per-side probabilities on a coarse grid covering the same field of
            view as the full-resolution ``shape`` (coarse voxel i covers full voxels
            ``[i * D / d, (i + 1) * D / d)``).
        shape: full-resolution shape (D, H, W).
        margin: voxels added on each side of each box, per axis.
        threshold: a coarse voxel counts as a detection above this.

    Returns:
        Two boxes (or one around both, when the two overlap and that costs less), each a
        multiple of 16 voxels where the volume allows; None unless both sides are detected.

    Example:
        >>> p = torch.zeros(2, 10, 10, 10); p[0, 2, 4, 4] = p[1, 7, 4, 4] = 0.9
        >>> left, right = side_boxes(p, (40, 40, 40), (2, 2, 2))
        >>> left[0], right[0]
        (slice(2, 18, None), slice(22, 38, None))
        >>> p[1] = 0  # only one side found: no boxes
        >>> side_boxes(p, (40, 40, 40), (2, 2, 2)) is None
        True
    """
    probs = torch.as_tensor(probs).float().cpu().numpy()
    boxes: list[Box] = []
    for side in probs:
        found = side > threshold
        if not found.any():
            return None  # a side is missing: a box could cut it away
        found = _largest(found)
        box = []
        for axis, (size, pad) in enumerate(zip(shape, margin, strict=True)):
            factor = size / found.shape[axis]
            idx = np.nonzero(found.any(axis=tuple(a for a in range(3) if a != axis)))[0]
            lo = max(math.floor(idx.min() * factor) - pad, 0)
            hi = min(math.ceil((idx.max() + 1) * factor) + pad, size)
            box.append(slice(*_grow(lo, hi, size, SIZE_MULTIPLE)))
        boxes.append(tuple(box))  # type: ignore[arg-type]
    if _intersect(boxes[0], boxes[1]):
        joined = tuple(
            slice(*_grow(s.start, s.stop, n, SIZE_MULTIPLE))
            for s, n in zip(_union(boxes[0], boxes[1]), shape, strict=True)
        )
        if _size(joined) <= _size(boxes[0]) + _size(boxes[1]):  # type: ignore[arg-type]
            return [joined]  # type: ignore[list-item]
    return boxes  # two boxes (overlapping ones cost less than the box around both)


def sides_plausible(
    probs: torch.Tensor | np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    threshold: float = COARSE_THRESHOLD,
) -> bool:
    """Whether each side's largest detection in (2, d, h, w) ``probs`` (a coarse grid over a
    full-resolution ``shape`` of voxel size ``spacing``) sits where a head's hippocampus can:
    the left one left of the right one, their centres within ``MAX_SIDE_OFFSET_MM`` of each
    other from front to back and from top to bottom.

    Example:
        >>> p = torch.zeros(2, 10, 10, 10); p[0, 2, 4, 4] = p[1, 7, 4, 4] = 0.9
        >>> sides_plausible(p, (40, 40, 40), (1.0, 1.0, 1.0))
        True
        >>> p[1] = 0; p[1, 7, 4, 9] = 0.9  # 20 voxels higher: 20 mm
        >>> sides_plausible(p, (40, 40, 40), (1.5, 1.5, 1.5))
        False
    """
    probs = torch.as_tensor(probs).float().cpu().numpy()
    centres = []
    for side in probs:
        found = side > threshold
        if not found.any():
            return False
        centre = np.array(ndimage.center_of_mass(_largest(found)))
        scale = np.array(shape) / np.array(found.shape) * np.array(spacing)
        centres.append((centre + 0.5) * scale)
    left, right = centres
    return bool(left[0] < right[0] and np.all(np.abs(left[1:] - right[1:]) <= MAX_SIDE_OFFSET_MM))


def _size(box: Box) -> int:
    return int(np.prod([s.stop - s.start for s in box]))


def boxes_fraction(boxes: Sequence[Box], shape: Sequence[int]) -> float:
    """Voxels the fine networks run on (overlaps counted twice) as a fraction of the volume."""
    return float(sum(_size(box) for box in boxes) / np.prod(shape))


def too_large(boxes: Sequence[Box], shape: Sequence[int]) -> bool:
    """True when running ``boxes`` costs more than ``MAX_FRACTION`` of the whole volume."""
    return boxes_fraction(boxes, shape) > MAX_FRACTION


def misses_a_side(labels: np.ndarray) -> bool:
    """True when label 1 or label 2 is absent from ``labels``."""
    return not ((labels == 1).any() and (labels == 2).any())


MISSES_A_SIDE = "segmentation in the boxes misses a side"
REACHED_FACE = "segmentation reached a box face"


def box_problem(masks: np.ndarray, boxes: Sequence[Box]) -> str | None:
    """Why a segmentation made in ``boxes`` cannot be trusted as it is (None = it can).

    Args:
        masks: (2, ...) each side's thresholded probability (left, right).
        boxes: the boxes it was made in: with one box per side each side is checked against
            its own box; with one box around both, all foreground is.
    """
    if not (masks[0].any() and masks[1].any()):
        return MISSES_A_SIDE
    if len(boxes) == 2:
        reached = any(touches_inner_face(m, b) for m, b in zip(masks, boxes, strict=True))
    else:
        reached = any(touches_inner_face(masks.any(axis=0), b) for b in boxes)
    return REACHED_FACE if reached else None


def boxes_around(masks: np.ndarray, margin: Sequence[int]) -> list[Box] | None:
    """``side_boxes`` around each side's largest component of (2, ...) masks (full resolution)."""
    return side_boxes(masks.astype(np.float32), masks.shape[1:], margin, threshold=0.5)


def touches_inner_face(labels: np.ndarray, box: Box, guard: int = GUARD) -> bool:
    """True when foreground in ``labels`` lies within ``guard`` voxels of a face of ``box``
    that is not also a face of the volume (where the box cut real image context)."""
    for axis, sl in enumerate(box):
        size = labels.shape[axis]
        index = list(box)  # look only inside the box
        if sl.start > 0:
            index[axis] = slice(sl.start, min(sl.start + guard, sl.stop))
            if labels[tuple(index)].any():
                return True
        if sl.stop < size:
            index[axis] = slice(max(sl.stop - guard, sl.start), sl.stop)
            if labels[tuple(index)].any():
                return True
    return False


def coarse_pass_probabilities(
    coarse_run: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    nets: tuple[torch.nn.Module, torch.nn.Module],
    views: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Both networks on their views down-sampled by 2: the larger probability per side."""
    coarse = [
        coarse_run(net, downsample(view)).float() for net, view in zip(nets, views, strict=True)
    ]
    return torch.maximum(coarse[0], coarse[1])


def equal_size(boxes: Sequence[Box], shape: Sequence[int]) -> list[Box]:
    """``boxes`` grown to one size (the largest along each axis), each kept centred where it
    was and inside the volume, so that they run as one batch (a little more context for the
    smaller one).

    Example:
        >>> a, b = equal_size([(slice(0, 16),) * 3, (slice(40, 72),) * 3], (80, 80, 80))
        >>> a[0], b[0]
        (slice(0, 32, None), slice(40, 72, None))
    """
    size = [max(b[a].stop - b[a].start for b in boxes) for a in range(3)]
    out = []
    for box in boxes:
        axes = []
        for a, (n, limit) in enumerate(zip(size, shape, strict=True)):
            centre = (box[a].start + box[a].stop) // 2
            start = min(max(centre - n // 2, 0), max(limit - n, 0))
            axes.append(slice(start, min(start + n, limit)))
        out.append(tuple(axes))
    return out  # type: ignore[return-value]


def roi_probabilities(
    run: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    nets: tuple[torch.nn.Module, torch.nn.Module],
    views: tuple[torch.Tensor, torch.Tensor],
    boxes: Sequence[Box],
) -> list[np.ndarray]:
    """Both networks' full-size probability maps, computed only inside ``boxes`` (zero outside;
    where two boxes overlap, the larger probability). Boxes of one size (``equal_size``) run
    as one batch.

    Args:
        run: full-resolution inference of a batch, ``(net, (B, D, H, W)) -> (B, 2, D, H, W)``.
        nets: the two networks.
        views: their (D, H, W) input views.
        boxes: boxes to run (``side_boxes``).
    """
    shape = tuple(int(s) for s in views[0].shape)
    one_size = len({tuple(s.stop - s.start for s in box) for box in boxes}) == 1
    maps = []
    for net, view in zip(nets, views, strict=True):
        if one_size:
            probs = list(run(net, torch.stack([view[box] for box in boxes])).numpy())
        else:
            probs = [run(net, view[box][None])[0].numpy() for box in boxes]
        full = np.zeros((2, *shape), dtype=np.float32)
        for box, p in zip(boxes, probs, strict=True):
            where = (slice(None), *box)
            full[where] = np.maximum(full[where], p)
        maps.append(full)
    return maps
