"""Other grids: a crop seen at a few millimetres per voxel (the hippocampus localiser) or on the
isotropic working grid a model was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def coarse_shape(shape: Sequence[int], spacing: Sequence[float], mm: float) -> tuple[int, ...]:
    """Shape of ``shape`` voxels of size ``spacing`` on a grid of ``mm`` voxels (at least 1).

    Example:
        >>> coarse_shape((160, 190, 170), (1.0, 1.0, 1.0), 4.0)
        (40, 48, 42)
    """
    return tuple(max(int(round(n * s / mm)), 1) for n, s in zip(shape, spacing, strict=True))


def to_coarse_grid(volume: torch.Tensor, spacing: Sequence[float], mm: float) -> torch.Tensor:
    """Average a (D, H, W) volume onto a grid of about ``mm`` mm voxels (area averaging).

    Example:
        >>> to_coarse_grid(torch.ones(8, 8, 4), (1, 1, 2), 4.0).shape
        torch.Size([2, 2, 2])
    """
    size = coarse_shape(volume.shape[-3:], spacing, mm)
    x = volume.reshape(1, 1, *volume.shape[-3:]).float()
    return F.adaptive_avg_pool3d(x, size)[0, 0]


def coarse_targets(label: np.ndarray, spacing: Sequence[float], mm: float) -> torch.Tensor:
    """Per-side fraction of each coarse voxel inside the hippocampus: (2, d, h, w) in [0, 1].

    Example:
        >>> lab = np.zeros((8, 8, 8), np.int16); lab[:4, :4, :4] = 1
        >>> coarse_targets(lab, (1, 1, 1), 4.0)[0, 0, 0, 0].item()
        1.0
    """
    sides = torch.stack([torch.from_numpy(label == v) for v in (1, 2)]).float()
    size = coarse_shape(label.shape, spacing, mm)
    return F.adaptive_avg_pool3d(sides[None], size)[0]


def localiser_input(view: torch.Tensor, spacing: Sequence[float], mm: float) -> torch.Tensor:
    """What the localiser sees: ``view`` on the coarse grid, scaled so that its 99th
    percentile of non-zero voxels is 1 (clipped to [0, 1]): a few bright outliers, which
    leave a min-max normalised head nearly black, do not matter.

    Example:
        >>> x = torch.ones(40, 40, 40); x[0, 0, 0] = 1000.0
        >>> float(localiser_input(x, (1, 1, 1), 2.0).median())
        1.0
    """
    coarse = to_coarse_grid(view, spacing, mm)
    inside = coarse[coarse > 0]
    if inside.numel() == 0:
        return coarse
    scale = torch.quantile(inside[:: max(1, inside.numel() // 100_000)], 0.99)
    return (coarse / scale.clamp(min=1e-6)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """A crop resampled onto an isotropic working grid.

    Attributes:
        shape: voxels of the crop on the working grid.
        spacing: their exact size in mm (the crop's field of view / ``shape``).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def working_grid(
    shape: Sequence[int], spacing: Sequence[float], mm: float, tolerance: float = 0.1
) -> Grid | None:
    """The ``mm`` isotropic grid over the same field of view as ``shape`` voxels of size
    ``spacing``; None when every axis is already within ``tolerance`` (a fraction) of ``mm``.

    Example:
        >>> working_grid((150, 150, 30), (1.0, 1.0, 5.0), 1.5).shape
        (100, 100, 100)
        >>> working_grid((100, 100, 100), (1.45, 1.5, 1.55), 1.5) is None
        True
    """
    if all(abs(s - mm) <= tolerance * mm for s in spacing):
        return None
    new = coarse_shape(shape, spacing, mm)
    exact = tuple(n * s / m for n, s, m in zip(shape, spacing, new, strict=True))
    return Grid(shape=new, spacing=exact)  # type: ignore[arg-type]


def resize(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample the last three axes of ``volume`` to ``shape`` over the same field of view:
    area averaging along axes that shrink (no aliasing), then linear interpolation along
    axes that grow. Leading axes (channels) are kept.

    Example:
        >>> resize(torch.ones(2, 8, 8, 4), (4, 4, 8)).shape
        torch.Size([2, 4, 4, 8])
    """
    lead = volume.shape[:-3]
    x = volume.reshape(1, -1, *volume.shape[-3:]).float()
    target = tuple(int(n) for n in shape)
    smaller = tuple(min(a, b) for a, b in zip(x.shape[-3:], target, strict=True))
    if smaller != tuple(x.shape[-3:]):
        x = F.adaptive_avg_pool3d(x, smaller)
    if smaller != target:
        x = F.interpolate(x, size=target, mode="trilinear", align_corners=False)
    return x.reshape(*lead, *target)


def resample_labelled(
    image: np.ndarray, label: np.ndarray, affine: np.ndarray, voxel_mm: float, n_labels: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample a 1 mm image and its label map to isotropic ``voxel_mm`` voxels over the same
    field of view (image: area average; labels: the value covering most of each new voxel).

    Returns the image, the labels (uint8) and the new voxel-to-world affine.

    Example:
        >>> img, lab, aff = resample_labelled(np.ones((30, 30, 30)), np.zeros((30, 30, 30)),
        ...                                   np.eye(4), 1.5)
        >>> img.shape, aff[0, 0]
        ((20, 20, 20), 1.5)
    """
    shape = [max(16, round(s / voxel_mm)) for s in image.shape]
    img = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    img = F.interpolate(img, size=shape, mode="area")[0, 0].numpy()
    onehot = F.one_hot(torch.from_numpy(np.asarray(label).astype(np.int64)), n_labels)
    votes = F.interpolate(onehot.permute(3, 0, 1, 2)[None].float(), size=shape, mode="area")[0]
    lab = votes.argmax(0).numpy().astype(np.uint8)
    scale = np.array(image.shape, float) / np.array(shape, float)
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = (scale - 1) / 2  # new voxel centres in old voxel coordinates
    return img, lab, np.asarray(affine, float) @ step
