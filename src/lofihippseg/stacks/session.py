"""One session's stacks, from files to one combined volume (or fused probabilities).

:func:`combine_session` loads the stacks, registers each to the first and refuses a session it
cannot trust (one line naming the file: another subject, a failed registration, a stack that
barely overlaps the first) before anything is written; :func:`fuse_prediction` and
:func:`labels_on_stack` are the two ways from the registered stacks to labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lofihippseg.errors import InputError, LoFiError
from lofihippseg.inference.fusion import resolve_overlap, view_agreement_dice
from lofihippseg.inference.postprocess import keep_largest_per_side
from lofihippseg.inference.predictor import Prediction, Predictor
from lofihippseg.io.nifti import Volume, load_image, strip_suffix
from lofihippseg.stacks.combine import (
    average_stacks,
    coverage,
    grid_volume,
    resample_onto,
    superres_stacks,
)
from lofihippseg.stacks.register import (
    RegisterSettings,
    StackRegistration,
    prepare_fixed,
    register_stack,
)

__all__ = [
    "StacksSettings",
    "Session",
    "load_stacks",
    "combine_session",
    "fuse_prediction",
    "labels_on_stack",
    "session_name",
]

COMBINE_METHODS = ("superres", "average", "fuse")


@dataclass(frozen=True)
class StacksSettings:
    """How a session's stacks become one case (saved in the sidecar).

    Attributes:
        combine: ``superres`` (stacks combined frequency by frequency on the fine grid, then
            segmented once), ``average`` (stacks averaged there) or ``fuse`` (each stack
            segmented, probabilities averaged on the fine grid; the QC image is the average).
        combine_mm: voxel size of the fine grid in the first stack's frame.
        register: registration settings and the thresholds that refuse a session.
        save_stack_labels: also write the label map on each stack's own grid.
        save_combined: also write the combined image.
    """

    combine: str = "superres"
    combine_mm: float = 1.0
    register: RegisterSettings = field(default_factory=RegisterSettings)
    save_stack_labels: bool = False
    save_combined: bool = False

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_METHODS:
            raise LoFiError(f"--combine must be one of {COMBINE_METHODS}, got {self.combine!r}")
        if not 0.3 <= self.combine_mm <= 3.0:
            raise LoFiError(f"--combine-mm must be in [0.3, 3] mm, got {self.combine_mm}")


@dataclass
class Session:
    """A session's stacks registered to the first and combined on its fine grid."""

    paths: list[Path]
    stacks: list[Volume]
    registrations: list[StackRegistration | None]  # None for the first stack
    combined: Volume
    cover: np.ndarray  # stacks covering each fine voxel
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def transforms(self) -> list[np.ndarray]:
        """Per stack, the 4x4 RAS map from the first stack's frame to that stack."""
        return [np.eye(4) if r is None else r.transform for r in self.registrations]

    def sidecar(self, settings: StacksSettings) -> dict:
        """What the sidecar records about the stacks and where the label map lies."""
        regs = []
        for path, volume, reg in zip(self.paths, self.stacks, self.registrations, strict=True):
            entry = {
                "file": str(path),
                "shape": [int(n) for n in volume.data.shape],
                "spacing_mm": [round(float(v), 4) for v in volume.spacing],
                "slice_axis": "RAS"[int(np.argmax(volume.spacing))],
            }
            if reg is None:
                entry["role"] = "reference: the label map's frame"
            else:
                entry.update(reg.to_dict())
            regs.append(entry)
        grid = (
            f"the combined grid: {settings.combine_mm:g} mm voxels with the first stack's axes "
            f"and field of view ({self.paths[0].name})"
        )
        return {
            "label_grid": grid,
            "stacks": regs,
            "stack_settings": {
                "combine": settings.combine,
                "combine_mm": settings.combine_mm,
                "register": {
                    k: list(v) if isinstance(v, tuple) else v
                    for k, v in settings.register.__dict__.items()
                },
            },
            "stack_timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def session_name(paths: list[Path]) -> str:
    """A case name for a session: the ``_`` parts its stacks' names share.

    Example:
        >>> session_name([Path("sub-1_acq-axi_T2w.nii.gz"), Path("sub-1_acq-cor_T2w.nii.gz")])
        'sub-1_T2w'
        >>> session_name([Path("a/scan.nii.gz"), Path("b/scan.nii.gz")])
        'scan_stacks'
    """
    stems = [strip_suffix(p) for p in paths]
    parts = [s.split("_") for s in stems]
    name = ""
    if len({len(p) for p in parts}) == 1:
        name = "_".join(t for t, *others in zip(*parts, strict=True) if all(o == t for o in others))
    if not name or name in stems:
        return f"{stems[0]}_stacks"
    return name


def load_stacks(paths: list[str | Path]) -> list[Volume]:
    """Load two or more stacks (each checked: exists, 3D, finite, not empty).

    Raises:
        InputError: naming the file (missing, 4D, unreadable ...).
        LoFiError: fewer than two stacks, or one file named twice.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise LoFiError("--stacks needs two or more stacks of one session")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise InputError(p, f"named twice in --stacks (also as {seen[key]})")
        seen[key] = p
    return [load_image(p) for p in paths]


def _check(path: Path, first: Path, reg: StackRegistration, settings: RegisterSettings) -> None:
    """Refuse a stack whose registration cannot be trusted (one line naming it)."""
    if reg.overlap < settings.min_overlap:
        raise InputError(
            path,
            f"covers only {reg.overlap:.0%} of the head seen in the first stack {first.name} "
            f"(at least {settings.min_overlap:.0%} is needed to register it); give a stack "
            "that covers the hippocampi, or put the fullest stack first",
        )
    too_far = reg.translation_mm > settings.max_translation_mm
    if reg.rotation_deg > settings.max_rotation_deg or too_far:
        raise InputError(
            path,
            f"registration to {first.name} moved it by {reg.rotation_deg:.0f} degrees and "
            f"{reg.translation_mm:.0f} mm (at most {settings.max_rotation_deg:g} and "
            f"{settings.max_translation_mm:g} expected within a session): a failed registration "
            "or a stack of another session",
        )
    if reg.quality < settings.min_quality:
        raise InputError(
            path,
            f"does not match the first stack {first.name} after registration (correlation "
            f"{reg.quality:.2f} < {settings.min_quality:.2f}): a stack of another subject, or a "
            "registration that failed",
        )


def combine_session(paths: list[str | Path], settings: StacksSettings | None = None) -> Session:
    """Load, register and average a session's stacks (nothing is written).

    Args:
        paths: the stacks, two or more, any orientation; the first is the reference frame.
        settings: how to register and combine.

    Returns:
        The session: its stacks, registrations and the combined volume.

    Raises:
        InputError: a stack that is missing, not 3D, or whose registration cannot be trusted.

    Example:
        >>> s = combine_session(["axi.nii.gz", "cor.nii.gz", "sag.nii.gz"])  # doctest: +SKIP
        >>> s.combined.data.shape, [r and r.quality for r in s.registrations]  # doctest: +SKIP
    """
    settings = settings or StacksSettings()
    paths = [Path(p) for p in paths]
    start = time.perf_counter()
    stacks = load_stacks(paths)
    timings = {"load_s": time.perf_counter() - start}
    start = time.perf_counter()
    fixed = prepare_fixed(stacks[0], settings.register)
    registrations: list[StackRegistration | None] = [None]
    for path, volume in zip(paths[1:], stacks[1:], strict=True):
        reg = register_stack(fixed, volume, settings.register)
        _check(path, paths[0], reg, settings.register)
        registrations.append(reg)
    timings["register_s"] = time.perf_counter() - start
    start = time.perf_counter()
    transforms = [np.eye(4) if r is None else r.transform for r in registrations]
    if settings.combine == "superres":
        combined, cover = superres_stacks(stacks, transforms, settings.combine_mm)
    else:
        combined, cover = average_stacks(stacks, transforms, settings.combine_mm)
    timings["combine_s"] = time.perf_counter() - start
    return Session(paths, stacks, registrations, combined, cover, timings)


def _labels(fused: np.ndarray, threshold: float, lcc: bool) -> np.ndarray:
    labels = resolve_overlap(fused > threshold, fused)
    return keep_largest_per_side(labels) if lcc else labels


def fuse_prediction(
    session: Session, predictor: Predictor, threshold: float = 0.5, lcc: bool = True
) -> Prediction:
    """Segment each stack on its own grid and average the probabilities on the fine grid.

    Returns:
        A prediction on the combined grid (its box is the whole grid).
    """
    combined = session.combined
    shape, affine = combined.data.shape, combined.affine
    sums = {k: np.zeros((2, *shape), dtype=np.float32) for k in ("prob1", "prob2", "fused")}
    weight = np.zeros(shape, dtype=np.float32)
    timings: dict[str, float] = {}
    for i, (volume, transform) in enumerate(zip(session.stacks, session.transforms, strict=True)):
        pred = predictor.predict_volume(volume)
        timings[f"stack{i + 1}_s"] = pred.timings.get("total_s", 0.0)
        for key in sums:
            maps = pred.full(getattr(pred, key))
            for c in range(2):
                sums[key][c] += resample_onto(volume, transform, shape, affine, data=maps[c])
        weight += coverage(volume, transform, shape, affine)
    w = np.maximum(weight, 1e-3)
    maps = {k: (v / w).astype(np.float32) for k, v in sums.items()}
    labels = _labels(maps["fused"], threshold, lcc)
    box = tuple(slice(0, n) for n in shape)
    timings["total_s"] = sum(timings.values())
    return Prediction(
        labels=labels,
        prob1=maps["prob1"],
        prob2=maps["prob2"],
        fused=maps["fused"],
        box=box,  # type: ignore[arg-type]
        view_dice=view_agreement_dice(maps["prob1"], maps["prob2"], threshold),
        timings=timings,
        info={"combine": "fuse"},
    )


def labels_on_stack(
    session: Session, pred: Prediction, index: int, threshold: float = 0.5, lcc: bool = True
) -> np.ndarray:
    """The label map on stack ``index``'s own grid: the fused probabilities resampled (linear)
    from the combined grid through the registration, then thresholded as in ``predict``."""
    volume = session.stacks[index]
    back = np.linalg.inv(session.transforms[index])  # stack world -> first stack's frame
    fused = pred.full(pred.fused)
    grid = grid_volume(np.zeros(fused.shape[1:], np.float32), session.combined.affine, volume)
    maps = np.stack(
        [
            resample_onto(grid, back, volume.data.shape, volume.affine, data=fused[c])
            for c in range(2)
        ]
    )
    return _labels(maps, threshold, lcc)
