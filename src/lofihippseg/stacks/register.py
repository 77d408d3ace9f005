"""Rigid registration of a session's stacks to the first one (SimpleITK).

Why SimpleITK: a well-kept wheel on every platform (ITK's registration framework, no compiler,
no ANTs binaries), with Mattes mutual information, which does not assume that the stacks share a
contrast, and multi-resolution optimisation. ANTsPy would add a 100+ MB dependency for the same
rigid step.

Stacks of one session share the scanner's world coordinates, so the search starts at the
identity; what is left is the child's motion between stacks (a few degrees and mm). Both stacks
are first resampled onto an isotropic grid (``register_mm``, 2 mm) in their own frames, so that
the pyramid's shrink factors mean the same along every axis of a 1.5 x 1.5 x 5 mm stack.

All transforms here are in RAS world millimetres (we build the SimpleITK images from the RAS
affines ourselves, so their "physical space" is RAS): ``transform`` maps a point of the first
stack's frame to the same point of the head in the moving stack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from lofihippseg.io.nifti import Volume

__all__ = [
    "RegisterSettings",
    "StackRegistration",
    "to_sitk",
    "prepare_fixed",
    "register_stack",
    "head_mask",
]


@dataclass(frozen=True)
class RegisterSettings:
    """How stacks are registered (saved in the sidecar).

    Example:
        >>> RegisterSettings().bins
        32
    """

    register_mm: float = 2.0  # isotropic grid the metric is computed on
    bins: int = 32  # Mattes mutual information histogram bins
    sampling: float = 0.1  # share of the fixed head's voxels sampled per iteration
    shrink: tuple[int, ...] = (4, 2, 1)  # pyramid levels (times register_mm)
    smoothing_mm: tuple[float, ...] = (4.0, 2.0, 0.0)
    iterations: int = 200
    optimizer: str = "regular_step"  # regular_step | gd | cg (SimpleITK optimizers)
    step_mm: float = 2.0  # largest first step (mm at the head's edge)
    relaxation: float = 0.5  # regular_step: step shrink on a direction change
    # divide each stack by its local mean (Gaussian sigma, mm) before registering: the bias
    # field stays with the scanner, not the head (0 = off)
    flatten_mm: float = 6.0
    metric_mask: bool = True  # sample the metric in the first stack's head only
    # the metric's random sample (1 or more: SimpleITK reads 0 as "the wall clock", a new
    # sample each run, which made registrations, and refusals near the limit, vary run to run)
    seed: int = 1
    # a registration is refused below this correlation of the registered stack with the first
    # one in the first stack's head (correct ones: about 0.8-0.95; other subjects: lower)
    min_quality: float = 0.6
    # ... and when the stack covers less than this share of the first stack's head
    min_overlap: float = 0.25
    # ... and when the motion found exceeds this (a child moves a few degrees and mm)
    max_rotation_deg: float = 30.0
    max_translation_mm: float = 40.0


@dataclass
class StackRegistration:
    """One stack registered to the first.

    Attributes:
        transform: 4x4 RAS world transform, first stack's frame -> this stack.
        quality: Pearson correlation of the two stacks in the first stack's head after
            registration (on the ``register_mm`` grid).
        quality_before: the same at the identity (no motion correction).
        overlap: share of the first stack's head that this stack covers after registration.
        metric: final Mattes mutual information (negative; lower is better).
        rotation_deg, translation_mm: size of the motion found (about the head's centre).
        seconds: time it took.
    """

    transform: np.ndarray
    quality: float
    quality_before: float
    overlap: float
    metric: float
    rotation_deg: float
    translation_mm: float
    seconds: float
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (for the sidecar)."""
        return {
            "transform_ras_mm": np.round(self.transform, 6).tolist(),
            "transform_maps": "first stack's frame -> this stack (RAS mm)",
            "quality_correlation": round(self.quality, 4),
            "quality_correlation_unregistered": round(self.quality_before, 4),
            "head_overlap": round(self.overlap, 4),
            "mattes_mi": round(self.metric, 5),
            "rotation_deg": round(self.rotation_deg, 3),
            "translation_mm": round(self.translation_mm, 3),
            "seconds": round(self.seconds, 3),
            **self.info,
        }


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image of a canonical volume, its physical space being RAS world mm."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.data.transpose(2, 1, 0)))
    spacing = np.asarray(volume.spacing, dtype=float)
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(float(v) for v in volume.affine[:3, 3]))
    image.SetDirection(tuple((volume.affine[:3, :3] / spacing).flatten().tolist()))
    return image


def isotropic(image: sitk.Image, mm: float) -> sitk.Image:
    """The image resampled (linear) onto an isotropic ``mm`` grid in its own frame and FOV."""
    spacing = np.asarray(image.GetSpacing())
    size = np.asarray(image.GetSize())
    new_size = np.maximum(np.round(size * spacing / mm).astype(int), 1)
    # keep the FOV's centre: the first voxel moves by half the change of voxel size
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    centre = np.asarray(image.GetOrigin()) + direction @ ((size - 1) * spacing / 2)
    origin = centre - direction @ ((new_size - 1) * mm / 2)
    return sitk.Resample(
        image,
        [int(v) for v in new_size],
        sitk.Transform(),
        sitk.sitkLinear,
        tuple(origin),
        (mm, mm, mm),
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )


def head_mask(image: sitk.Image) -> sitk.Image:
    """The head: Otsu threshold of the smoothed image, holes filled, largest component."""
    smooth = sitk.SmoothingRecursiveGaussian(image, 2.0)
    mask = sitk.OtsuThreshold(smooth, 0, 1)
    mask = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True) == 1
    mask = sitk.BinaryMorphologicalClosing(mask, [3, 3, 3])
    return sitk.Cast(sitk.BinaryFillhole(mask), sitk.sitkUInt8)


def _correlation(
    fixed: sitk.Image, moving: sitk.Image, mask: np.ndarray, transform: sitk.Transform
) -> tuple[float, float]:
    """Pearson correlation in the fixed head where the moving stack lies, and that share."""
    inside = sitk.Resample(
        sitk.Cast(moving * 0 + 1, sitk.sitkFloat32), fixed, transform, sitk.sitkLinear, 0.0
    )
    warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0)
    cover = sitk.GetArrayViewFromImage(inside) > 0.99
    sel = mask & cover
    overlap = float(sel.sum()) / max(float(mask.sum()), 1.0)
    if sel.sum() < 100:
        return 0.0, overlap
    a = sitk.GetArrayViewFromImage(fixed)[sel].astype(np.float64)
    b = sitk.GetArrayViewFromImage(warped)[sel].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return (float((a * b).sum()) / denom if denom > 0 else 0.0), overlap


def _matrix(transform: sitk.Euler3DTransform) -> np.ndarray:
    """4x4 matrix of a SimpleITK rigid transform (x -> R (x - c) + c + t)."""
    rot = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = centre + np.asarray(transform.GetTranslation()) - rot @ centre
    return out


def flatten(image: sitk.Image, mask: sitk.Image, sigma_mm: float) -> sitk.Image:
    """The image divided by its smoothed self inside the head (a crude bias correction).

    The receive coil's bias field stays with the scanner while the head moves, so the same
    anatomy is brighter in one stack than in another; dividing by the local mean (Gaussian of
    ``sigma_mm``, normalised by the mask's own smoothing) takes most of it away.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    m = sitk.Cast(mask, sitk.sitkFloat32)
    local = sitk.SmoothingRecursiveGaussian(image * m, sigma_mm)
    weight = sitk.SmoothingRecursiveGaussian(m, sigma_mm)
    a = sitk.GetArrayFromImage(local)
    w = sitk.GetArrayFromImage(weight)
    x = sitk.GetArrayFromImage(image)
    mean = a / np.maximum(w, 1e-3)
    level = float(np.median(mean[w > 0.5])) if (w > 0.5).any() else 1.0
    out = np.where(w > 0.05, x / np.maximum(mean, 1e-3 * max(level, 1e-6)), x / max(level, 1e-6))
    result = sitk.GetImageFromArray(out.astype(np.float32))
    result.CopyInformation(image)
    return result


def prepare_fixed(fixed: Volume, settings: RegisterSettings) -> tuple[sitk.Image, sitk.Image]:
    """The first stack on the registration grid and its head mask (computed once per session)."""
    image = isotropic(to_sitk(fixed), settings.register_mm)
    mask = head_mask(image)
    if settings.flatten_mm > 0:
        image = flatten(image, mask, settings.flatten_mm)
    return image, mask


def register_stack(
    fixed: tuple[sitk.Image, sitk.Image],
    moving: Volume,
    settings: RegisterSettings | None = None,
) -> StackRegistration:
    """Rigidly register one stack to the first (prepared by :func:`prepare_fixed`).

    Args:
        fixed: the first stack on the registration grid and its head mask.
        moving: the stack to register (canonical volume).
        settings: registration settings.

    Returns:
        The transform (first stack's frame -> this stack) and its quality measures.

    Example:
        >>> reg = register_stack(prepare_fixed(axi, RegisterSettings()), cor)  # doctest: +SKIP
        >>> reg.quality > 0.6  # doctest: +SKIP
    """
    settings = settings or RegisterSettings()
    start = time.perf_counter()
    fixed_image, fixed_mask = fixed
    moving_image = isotropic(to_sitk(moving), settings.register_mm)
    if settings.flatten_mm > 0:
        moving_image = flatten(moving_image, head_mask(moving_image), settings.flatten_mm)
    mask = sitk.GetArrayViewFromImage(fixed_mask) > 0
    # rotate about the head's centre (the identity otherwise: one scanner, one world frame)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(fixed_mask)
    if stats.HasLabel(1):
        centre = stats.GetCentroid(1)
    else:
        middle = [(n - 1) / 2 for n in fixed_image.GetSize()]
        centre = fixed_image.TransformContinuousIndexToPhysicalPoint(middle)
    initial = sitk.Euler3DTransform()
    initial.SetCenter(centre)

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(settings.sampling, settings.seed)
    if settings.metric_mask:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    if settings.optimizer == "gd":
        reg.SetOptimizerAsGradientDescent(
            learningRate=1.0,
            numberOfIterations=settings.iterations,
            convergenceMinimumValue=1e-6,
            convergenceWindowSize=10,
            estimateLearningRate=reg.EachIteration,
            maximumStepSizeInPhysicalUnits=settings.step_mm,
        )
    elif settings.optimizer == "cg":
        reg.SetOptimizerAsConjugateGradientLineSearch(
            learningRate=1.0,
            numberOfIterations=settings.iterations,
            convergenceMinimumValue=1e-6,
            convergenceWindowSize=10,
            maximumStepSizeInPhysicalUnits=settings.step_mm,
        )
    else:
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=settings.step_mm,
            minStep=1e-3,
            numberOfIterations=settings.iterations,
            relaxationFactor=settings.relaxation,
            gradientMagnitudeTolerance=1e-6,
        )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(settings.shrink))
    reg.SetSmoothingSigmasPerLevel(list(settings.smoothing_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=True)
    fixed_f = sitk.Cast(fixed_image, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving_image, sitk.sitkFloat32)
    reg.Execute(fixed_f, moving_f)
    final = initial  # optimised in place
    quality, overlap = _correlation(fixed_f, moving_f, mask, final)
    before, _ = _correlation(fixed_f, moving_f, mask, sitk.Euler3DTransform())
    matrix = _matrix(final)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1, 1))))
    shift = float(np.linalg.norm(matrix[:3, :3] @ np.asarray(centre) + matrix[:3, 3] - centre))
    return StackRegistration(
        transform=matrix,
        quality=quality,
        quality_before=before,
        overlap=overlap,
        metric=float(reg.GetMetricValue()),
        rotation_deg=angle,
        translation_mm=shift,
        seconds=time.perf_counter() - start,
        info={
            "iterations": int(reg.GetOptimizerIteration()),
            "stop": reg.GetOptimizerStopConditionDescription()[:120],
        },
    )
