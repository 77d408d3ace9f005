"""Region-of-interest inference: find the hippocampi cheaply, then look closely only there.

A full-resolution VNet pass over a whole 159 x 231 x 195 head costs about 0.64 TFLOP per view,
too slow on a laptop CPU. The hippocampi fill well under 1% of the head, so:

1. coarse pass: both networks on the volume down-sampled by 2 (1/8 of the cost each);
2. a box around everything either network finds (plus a margin of real image context, grown to
   a multiple of 16 voxels) is run at full resolution;
3. safety: when the coarse pass does not find both sides, the box is most of the volume, or
   the final segmentation misses a side or reaches the box's inner faces, the caller falls back
   to the whole volume (a head has two hippocampi; a box around one side only once cost the
   other side, and most of the found one, on a held-back synthetic scan).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lofihippseg.models.vnet import SIZE_MULTIPLE
from lofihippseg.preprocessing.crop import Box

COARSE_THRESHOLD = 0.25  # lenient: the coarse pass only has to find where to look
MARGIN = 24  # voxels of context kept around the coarse detections
MAX_FRACTION = 0.6  # a box larger than this fraction of the volume is not worth it
GUARD = 3  # foreground this close to an inner box face triggers the fallback


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


def coarse_box(
    coarse_probs: list[torch.Tensor],
    shape: tuple[int, int, int],
    margin: int = MARGIN,
    threshold: float = COARSE_THRESHOLD,
) -> Box | None:
    """Full-resolution box around coarse detections, or None unless both sides are detected.

    Args:
        coarse_probs: (2, d, h, w) probability maps of the down-sampled volume.
        shape: full-resolution shape (D, H, W).
        margin: voxels added on each side.
        threshold: a coarse voxel counts as a detection above this.

    Example:
        >>> p = torch.zeros(2, 10, 10, 10); p[:, 4, 4, 4] = 0.9
        >>> coarse_box([p], (20, 20, 20), margin=2)
        (slice(1, 17, None), slice(1, 17, None), slice(1, 17, None))
        >>> p[1] = 0  # only one side found: no box
        >>> coarse_box([p], (20, 20, 20)) is None
        True
    """
    per_side = torch.zeros(coarse_probs[0].shape, dtype=torch.bool)  # (2, d, h, w)
    for probs in coarse_probs:
        per_side |= probs.float().cpu() > threshold
    if not all(bool(side.any()) for side in per_side):
        return None  # a side is missing: the box could cut it away
    found = per_side.any(dim=0)
    box = []
    for axis, size in enumerate(shape):
        idx = torch.nonzero(found.any(dim=tuple(a for a in range(3) if a != axis)))[:, 0]
        lo = max(int(idx.min()) * 2 - margin, 0)
        hi = min(int(idx.max()) * 2 + 2 + margin, size)
        box.append(slice(*_grow(lo, hi, size, SIZE_MULTIPLE)))
    return tuple(box)  # type: ignore[return-value]


def box_fraction(box: Box, shape: tuple[int, int, int]) -> float:
    """Fraction of the volume inside ``box``."""
    inside = np.prod([s.stop - s.start for s in box])
    return float(inside / np.prod(shape))


def misses_a_side(labels: np.ndarray) -> bool:
    """True when label 1 or label 2 is absent from ``labels``."""
    return not ((labels == 1).any() and (labels == 2).any())


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


def roi_probabilities(
    run: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    nets: tuple[torch.nn.Module, torch.nn.Module],
    views: tuple[torch.Tensor, torch.Tensor],
    coarse_run: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
) -> tuple[list[np.ndarray], Box] | None:
    """Both networks' full-size probability maps, computed only inside the located box.

    Args:
        run: full-resolution inference ``(net, volume) -> (2, ...)`` probabilities.
        nets: the two networks.
        views: their (D, H, W) input views.
        coarse_run: inference used for the coarse pass (no test-time augmentation).

    Returns:
        ``([p1, p2], box)`` with maps zero outside the box, or None when the coarse pass says
        the whole volume should be run instead.
    """
    shape = tuple(int(s) for s in views[0].shape)
    coarse = [coarse_run(net, downsample(view)) for net, view in zip(nets, views, strict=True)]
    box = coarse_box(coarse, shape)  # type: ignore[arg-type]
    if box is None or box_fraction(box, shape) > MAX_FRACTION:  # type: ignore[arg-type]
        return None
    maps = []
    for net, view in zip(nets, views, strict=True):
        full = np.zeros((2, *shape), dtype=np.float32)
        full[(slice(None), *box)] = run(net, view[box]).numpy()
        maps.append(full)
    return maps, box
