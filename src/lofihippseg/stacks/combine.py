"""Bring registered stacks onto one fine grid in the first stack's frame.

Three ways, measured by ``benchmarks/bench_stacks.py`` (docs/benchmarks.md, "Stacks"):

- ``superres`` (the default: it scored highest): each stack resampled onto the fine grid, then
  combined frequency by frequency, each frequency weighted by how well each stack measured it
  (:func:`superres_stacks`); the model segments that one image.
- ``average``: each stack, scaled to a common intensity, resampled (linear: across thick slices
  this is the linear interpolation a ``_ciso`` image is made with) onto the fine grid and
  averaged where it lies; what the challenge's ``_ciso`` images are.
- ``fuse`` (:func:`lofihippseg.stacks.session.fuse_prediction`): the model segments each stack
  on its own grid, and the probability maps are resampled onto the fine grid and averaged.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from lofihippseg.io.nifti import Volume
from lofihippseg.stacks.register import to_sitk

PAD = 12  # voxels of mirror padding around the fine grid before the FFT (superres)
INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}

__all__ = [
    "fine_grid",
    "resample_onto",
    "intensity_scale",
    "average_stacks",
    "superres_stacks",
    "grid_volume",
]


def fine_grid(first: Volume, mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """A grid of ``mm`` voxels with the first stack's axes, covering its field of view.

    Example:
        >>> v = Volume(np.zeros((10, 10, 4)), np.diag([1.5, 1.5, 5.0, 1.0]), (1.5, 1.5, 5.0), None)
        >>> fine_grid(v, 1.0)[0]
        (15, 15, 20)
    """
    spacing = np.asarray(first.spacing, dtype=float)
    size = np.asarray(first.data.shape, dtype=float)
    shape = tuple(int(math.ceil(n * s / mm - 1e-6)) for n, s in zip(size, spacing, strict=True))
    direction = first.affine[:3, :3] / spacing
    centre = first.affine[:3, :3] @ ((size - 1) / 2) + first.affine[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = direction * mm
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return shape, affine  # type: ignore[return-value]


def _reference(shape: tuple[int, int, int], affine: np.ndarray) -> sitk.Image:
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ref = sitk.Image([int(n) for n in shape], sitk.sitkFloat32)
    ref.SetSpacing(tuple(float(s) for s in spacing))
    ref.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    ref.SetDirection(tuple((affine[:3, :3] / spacing).flatten().tolist()))
    return ref


def _transform(matrix: np.ndarray) -> sitk.AffineTransform:
    out = sitk.AffineTransform(3)
    out.SetMatrix(tuple(np.asarray(matrix[:3, :3], dtype=float).flatten().tolist()))
    out.SetTranslation(tuple(float(v) for v in matrix[:3, 3]))
    return out


def resample_onto(
    volume: Volume,
    transform: np.ndarray,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    data: np.ndarray | None = None,
    nearest: bool = False,
    interpolation: str = "linear",
) -> np.ndarray:
    """Resample a stack (or an array on its grid) onto another grid.

    Args:
        volume: the stack whose grid ``data`` lies on (canonical).
        transform: 4x4 RAS map from the target grid's world to the stack's world.
        shape, affine: the target grid.
        data: an array on the stack's grid (default: the stack's image).
        nearest: nearest-neighbour instead of ``interpolation``.
        interpolation: ``linear`` or ``bspline`` (cubic B-spline, SimpleITK).

    Returns:
        float32 (or the input's type with ``nearest``) array of ``shape``; 0 outside the stack.
    """
    source = volume if data is None else Volume(data, volume.affine, volume.spacing, None)
    image = to_sitk(source)
    interp = sitk.sitkNearestNeighbor if nearest else INTERPOLATORS[interpolation]
    out = sitk.Resample(image, _reference(shape, affine), _transform(transform), interp, 0.0)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def coverage(
    volume: Volume, transform: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """Where the stack lies on the target grid (1 inside, falling to 0 at its edge)."""
    ones = np.ones(volume.data.shape, dtype=np.float32)
    return resample_onto(volume, transform, shape, affine, data=ones)


def intensity_scale(data: np.ndarray) -> float:
    """A robust bright level of a stack: the 99th percentile of its upper half of voxels."""
    values = data[data > np.percentile(data, 50)]
    level = float(np.percentile(values, 99)) if values.size else float(data.max())
    return level if level > 0 else 1.0


def grid_volume(data: np.ndarray, affine: np.ndarray, first: Volume) -> Volume:
    """A canonical Volume for an array on a fine grid (its header from the first stack's)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    codes = (1, 1)
    if isinstance(first.source, nib.Nifti1Image | nib.Nifti2Image):
        header = first.source.header
        codes = (int(header["qform_code"]) or 1, int(header["sform_code"]) or 1)
    img.set_qform(affine, code=codes[0])
    img.set_sform(affine, code=codes[1])
    spacing = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(np.asarray(data, dtype=np.float32), affine, spacing, img, None)  # type: ignore[arg-type]


def average_stacks(
    stacks: list[Volume],
    transforms: list[np.ndarray],
    mm: float = 1.0,
    interpolation: str = "linear",
) -> tuple[Volume, np.ndarray]:
    """The stacks averaged on a ``mm`` grid in the first stack's frame.

    Each stack is scaled by :func:`intensity_scale` and weighted by where it lies, so a stack
    that covers part of the head adds to that part only.

    Args:
        stacks: canonical volumes; the first defines the frame.
        transforms: per stack, the 4x4 map from the first stack's world to that stack's.
        mm: voxel size of the fine grid.
        interpolation: how each stack is resampled (``linear`` or ``bspline``).

    Returns:
        The combined volume and the number of stacks covering each voxel (float32).

    Example:
        >>> combined, cover = average_stacks(vols, [r.transform for r in regs])  # doctest: +SKIP
    """
    shape, affine = fine_grid(stacks[0], mm)
    total = np.zeros(shape, dtype=np.float32)
    weight = np.zeros(shape, dtype=np.float32)
    for volume, transform in zip(stacks, transforms, strict=True):
        w = coverage(volume, transform, shape, affine)
        scaled = volume.data / intensity_scale(volume.data)
        total += resample_onto(
            volume, transform, shape, affine, scaled.astype(np.float32), False, interpolation
        )
        weight += w
    # a stack's resampled edge falls off (zero outside) as its coverage does: divide by it
    data = np.where(weight > 1e-3, total / np.maximum(weight, 1e-3), 0.0).astype(np.float32)
    return grid_volume(data, affine, stacks[0]), weight


def _slice_axis_on_grid(volume: Volume, transform: np.ndarray, grid_affine: np.ndarray) -> int:
    """Which axis of the fine grid a stack's slice direction lies closest to."""
    spacing = np.asarray(volume.spacing)
    thick = volume.affine[:3, :3][:, int(np.argmax(spacing))]
    in_ref = transform[:3, :3].T @ (thick / np.linalg.norm(thick))
    axes = grid_affine[:3, :3] / np.linalg.norm(grid_affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(axes.T @ in_ref)))


def _transfer(
    n: int, mm: float, step: float, slice_axis: bool, half: bool, band: float = 1.0
) -> np.ndarray:
    """What a stack keeps of each frequency along one fine-grid axis (fft, or rfft order);
    along the slice axis only ``band`` of the Nyquist band is trusted (aliasing lies above)."""
    f = np.fft.rfftfreq(n, d=mm) if half else np.fft.fftfreq(n, d=mm)
    h = np.sinc(step * f) ** 2  # linear interpolation from the stack's sample spacing
    if slice_axis:
        h = h * np.sinc(step * f)  # the slice profile (thickness about the spacing)
    return np.where(np.abs(f) <= 0.5 / step * (band if slice_axis else 1.0), h, 0.0)


def superres_stacks(
    stacks: list[Volume],
    transforms: list[np.ndarray],
    mm: float = 1.0,
    eps: float = 0.05,
    slice_band: float = 1.0,
) -> tuple[Volume, np.ndarray]:
    """Combine stacks in k-space: each frequency mostly from the stacks that measured it.

    Each stack is resampled (linear) onto the fine grid, as in :func:`average_stacks`. Its
    transfer function there is modelled as separable: linear interpolation from its in-plane
    and slice spacing (``sinc^2``), times the slice profile (``sinc``) along the fine-grid axis
    closest to its slice direction, nothing beyond its Nyquist frequency. The stacks are then
    combined by regularised least squares, ``X = sum_k H_k Y_k / (sum_k H_k^2 + eps)``: where
    one stack's slices blur a direction, the others' in-plane detail fills it in. (Rotations
    between stacks of a few degrees leave the axis-aligned model close enough.)

    Args:
        stacks: canonical volumes; the first defines the frame.
        transforms: per stack, the 4x4 map from the first stack's world to that stack's.
        mm: voxel size of the fine grid.
        eps: regularisation (0.005-0.2 scored within 0.003 of each other; 1 is blurrier).
        slice_band: share of each stack's slice-axis Nyquist band it is trusted with (0.7 and
            0.5 scored 0.009 and 0.040 lower than 1.0 on six held-back sessions; 1.5, which
            lets aliased content in, 0.003 higher: within noise).

    Returns:
        The combined volume and the number of stacks covering each voxel.

    Example:
        >>> combined, cover = superres_stacks(vols, [r.transform for r in regs])  # doctest: +SKIP
    """
    import torch
    import torch.nn.functional as F

    shape, affine = fine_grid(stacks[0], mm)
    resampled, covers = [], []
    for volume, transform in zip(stacks, transforms, strict=True):
        w = coverage(volume, transform, shape, affine)
        scaled = (volume.data / intensity_scale(volume.data)).astype(np.float32)
        y = resample_onto(volume, transform, shape, affine, scaled)
        resampled.append(np.where(w > 1e-3, y / np.maximum(w, 1e-3), 0.0).astype(np.float32))
        covers.append(np.clip(w, 0.0, 1.0))
    weight = np.sum(covers, axis=0, dtype=np.float32)
    plain = np.sum([y * w for y, w in zip(resampled, covers, strict=True)], axis=0)
    plain = np.where(weight > 1e-3, plain / np.maximum(weight, 1e-3), 0.0)
    # pad (mirror) so the FFT's wrap-around does not ring at the field of view's edges
    pad = min(PAD, *(n - 1 for n in shape))
    padded = tuple(n + 2 * pad for n in shape)
    spectrum = norm = None
    for volume, transform, y, w in zip(stacks, transforms, resampled, covers, strict=True):
        # where a stack does not reach, it agrees with the others (a partial stack adds nothing)
        y = torch.from_numpy((w * y + (1.0 - w) * plain).astype(np.float32))
        if pad:
            y = F.pad(y[None, None], (pad,) * 6, mode="reflect")[0, 0]
        axis = _slice_axis_on_grid(volume, transform, affine)
        fine, thick = float(min(volume.spacing)), float(max(volume.spacing))
        h1 = [
            _transfer(n, mm, thick if a == axis else fine, a == axis, a == 2, slice_band)
            for a, n in enumerate(padded)
        ]
        h = torch.from_numpy(
            (h1[0][:, None, None] * h1[1][None, :, None] * h1[2][None, None, :]).astype(np.float32)
        )
        part = torch.fft.rfftn(y) * h
        spectrum = part if spectrum is None else spectrum + part
        norm = h * h if norm is None else norm + h * h
    data = torch.fft.irfftn(spectrum / (norm + eps), s=padded).numpy()
    data = data[tuple(slice(pad, pad + n) for n in shape)]
    data = np.where(weight > 1e-3, np.clip(data, 0, None), 0.0).astype(np.float32)
    return grid_volume(data, affine, stacks[0]), weight
