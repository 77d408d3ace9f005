"""Whole-head FreeSurfer label maps prepared for the synthetic generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lofihippseg.errors import InputError
from lofihippseg.io.nifti import load_label, strip_suffix
from lofihippseg.preprocessing.crop import nonzero_bbox
from lofihippseg.synth.config import LEFT_HIPPOCAMPUS, LR_PAIRS, RIGHT_HIPPOCAMPUS, SynthConfig

MIRROR = {a: b for a, b in LR_PAIRS} | {b: a for a, b in LR_PAIRS}


@dataclass
class LabelMap:
    """A label map cropped to the head, with labels renumbered 0..K-1 (``compact``).

    Attributes:
        name: file name without suffix.
        compact: uint8/int16 tensor of indices into ``labels`` (canonical RAS order).
        labels: FreeSurfer label of each compact index (index 0 is background).
        spacing: voxel size (mm).
        brain_centre_mm, hippocampus_centre_mm: centres in mm from voxel (0, 0, 0) of the crop.
        hippocampus_ml: (left, right) volumes in mL.
    """

    name: str
    compact: torch.Tensor
    labels: list[int]
    spacing: tuple[float, float, float]
    brain_centre_mm: tuple[float, float, float]
    hippocampus_centre_mm: tuple[float, float, float]
    hippocampus_ml: tuple[float, float]

    @property
    def background_index(self) -> int:
        return self.labels.index(0)

    @property
    def left_index(self) -> int:
        return self.labels.index(LEFT_HIPPOCAMPUS)

    @property
    def right_index(self) -> int:
        return self.labels.index(RIGHT_HIPPOCAMPUS)

    @property
    def labels_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.labels, dtype=torch.int16)

    @property
    def flipped_labels(self) -> torch.Tensor:
        """FreeSurfer labels with left and right swapped (for mirrored anatomy)."""
        return torch.as_tensor([MIRROR.get(v, v) for v in self.labels], dtype=torch.int16)


def _centre(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    idx = np.nonzero(mask)
    return tuple(float(i.mean()) * s for i, s in zip(idx, spacing, strict=True))  # type: ignore[return-value]


def load_label_map(
    path: str | Path, config: SynthConfig | None = None, device: str | torch.device = "cpu"
) -> LabelMap:
    """Load a whole-head FreeSurfer label map (canonical RAS), crop it to the head, renumber it.

    Raises:
        InputError: unreadable, or without both hippocampus labels (17 and 53).

    Example:
        >>> m = load_label_map("training_seg_01.nii.gz")  # doctest: +SKIP
        >>> m.hippocampus_ml  # doctest: +SKIP
    """
    config = config or SynthConfig()
    vol = load_label(path)
    data = vol.data
    if data.min() < 0:
        raise InputError(path, "negative label values; expected a FreeSurfer label map")
    present = set(np.unique(data).tolist())
    missing = [v for v in (LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS) if v not in present]
    if missing:
        raise InputError(
            path,
            f"no hippocampus label {missing}; expected a FreeSurfer label map "
            "(17 = Left-Hippocampus, 53 = Right-Hippocampus)",
        )
    data = data[nonzero_bbox(data, margin=2)]
    labels = sorted(present | {0})
    lut = np.zeros(max(labels) + 1, dtype=np.int16)
    lut[labels] = np.arange(len(labels), dtype=np.int16)
    dtype = np.uint8 if len(labels) <= 256 else np.int16
    compact = lut[data].astype(dtype)
    brain = np.isin(data, list(config.tissue_of_label))
    hipp = np.isin(data, (LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS))
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    return LabelMap(
        name=strip_suffix(path),
        compact=torch.from_numpy(np.ascontiguousarray(compact)).to(device),
        labels=labels,
        spacing=vol.spacing,
        brain_centre_mm=_centre(brain if brain.any() else data > 0, vol.spacing),
        hippocampus_centre_mm=_centre(hipp, vol.spacing),
        hippocampus_ml=(
            float((data == LEFT_HIPPOCAMPUS).sum()) * voxel_ml,
            float((data == RIGHT_HIPPOCAMPUS).sum()) * voxel_ml,
        ),
    )
