"""Probability maps that know where they lie: the one map type of the inference pipeline.

A :class:`ProbMap` is a two-channel (left, right) probability array and its box in the full
volume. Outside its box a map is 0 (the ROI and the regridding only leave out voxels whose
probabilities are below the threshold), so maps with different boxes combine in the union of
their boxes with zeros around each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lofihippseg.preprocessing.crop import Box, within


@dataclass
class ProbMap:
    """Two-channel probabilities (2, ...) lying at ``box`` of the full volume.

    Attributes:
        data: float32 probabilities, channel 0 the left side and channel 1 the right.
        box: where ``data`` lies in the full volume (one slice per axis).
    """

    data: np.ndarray
    box: Box

    def placed(self, box: Box) -> np.ndarray:
        """``data`` in a box that contains this map's (0 outside it).

        Example:
            >>> m = ProbMap(np.ones((2, 1, 1, 1), np.float32), (slice(1, 2),) * 3)
            >>> m.placed((slice(0, 2),) * 3)[0, :, 0, 0].tolist()
            [0.0, 0.0]
        """
        if tuple(box) == tuple(self.box):
            return self.data
        out = np.zeros((self.data.shape[0], *(b.stop - b.start for b in box)), np.float32)
        out[(slice(None), *within(self.box, box))] = self.data
        return out

    def full(self, shape: Sequence[int]) -> np.ndarray:
        """The map pasted into a full volume of ``shape`` (0 outside its box)."""
        return self.placed(tuple(slice(0, int(n)) for n in shape))  # type: ignore[arg-type]


def union_box(boxes: Sequence[Box]) -> Box:
    """The smallest box holding every box of ``boxes``.

    Example:
        >>> union_box([(slice(0, 2), slice(3, 4)), (slice(1, 5), slice(0, 1))])
        (slice(0, 5, None), slice(0, 4, None))
    """
    axes = zip(*boxes, strict=True)
    return tuple(slice(min(s.start for s in a), max(s.stop for s in a)) for a in axes)  # type: ignore[return-value]


def aligned(maps: Sequence[ProbMap]) -> tuple[list[np.ndarray], Box]:
    """Every map's data placed in the union of their boxes, and that box."""
    box = union_box([m.box for m in maps])
    return [m.placed(box) for m in maps], box


def average(maps: Sequence[ProbMap]) -> ProbMap:
    """The voxel-wise mean of ``maps`` in the union of their boxes."""
    arrays, box = aligned(maps)
    return ProbMap(np.mean(arrays, axis=0).astype(np.float32), box)
