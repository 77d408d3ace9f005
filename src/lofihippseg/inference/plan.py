"""One frozen plan per ``Predictor``: every default resolved once, recorded in each sidecar.

Where a default comes from, in order: the user's ``PredictSettings``, the model bundle's advice
(``LoadedModel.tta``, ``LoadedModel.family_rule``), the recipe (``released`` reproduces the
authors' inference as it was run), the device (the ROI strategy is for the CPU). Nothing
downstream looks at a ``None`` setting again: the plan says what runs.

Example:
    >>> from lofihippseg.inference.model_loading import load_model
    >>> plan = make_plan(load_model(None), PredictSettings(device="cpu"))  # doctest: +SKIP
    >>> plan.family_rule, plan.tta, plan.refiner  # doctest: +SKIP
    ('field_of_view', ('t2',), True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from lofihippseg.errors import LoFiError
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.inference.settings import DEFAULT_EDGE_WEIGHT, PredictSettings, resolve_device
from lofihippseg.inference.sliding_window import check_roi_size
from lofihippseg.models.precision import cpu_bfloat16_native

FAMILY_RULES = ("field_of_view", "agreement", "fixed")


@dataclass(frozen=True)
class InferencePlan:
    """What runs on every scan (the sidecar's ``effective`` settings).

    Attributes:
        recipe: ``paper`` or ``released`` (the model's).
        fusion: ``mean`` or ``union`` of the two views' probabilities.
        overlap_rule: who gets a voxel both sides claim (``inference.fusion``).
        threshold: a side is on where its fused probability is above this.
        family_rule: how the pair of networks is chosen: ``field_of_view`` (a head goes to
            ``head_family``, a crop narrower than ``preprocessing.crop.CROP_MAX_WIDTH_MM`` to
            ``crop_family``: one pair runs), ``agreement`` (every pair runs, the one whose
            views agree best is kept: v12's rule) or ``fixed`` (the one pair named, or the
            model's only pair).
        families: the pairs that may run (the chosen one for ``fixed``).
        head_family: the pair for heads (``field_of_view``).
        crop_family: the pair for crops (``field_of_view``).
        roi: locate the hippocampi, then run the fine networks only in a box around each.
        tta: the pairs (by family) that also run on the left-right mirror image, averaged.
        refiner: re-read each side's outline with the model's refiner.
        edge_weight: edge refinement's weight (0: none).
        lcc: keep the largest connected component per side.
        grid: ``auto``, ``native`` or a voxel size (``PredictSettings.grid``).
        sliding_window: ``auto``, ``on`` or ``off``.
        roi_size: sliding-window size.
        overlap: sliding-window overlap.
        amp: mixed precision asked for (``PredictSettings.amp``).
        precision: what the networks compute in: ``float16`` (autocast on CUDA),
            ``bfloat16`` (a CPU with native bfloat16: ``models.precision``) or ``float32``.
        device: where the networks run.
    """

    recipe: str
    fusion: str
    overlap_rule: str
    threshold: float
    family_rule: str
    families: tuple[str | None, ...]
    head_family: str | None
    crop_family: str | None
    roi: bool
    tta: tuple[str | None, ...]
    refiner: bool
    edge_weight: float
    lcc: bool
    grid: str
    sliding_window: str
    roi_size: tuple[int, int, int]
    overlap: float
    amp: bool
    precision: str
    device: str

    def describe(self) -> dict[str, Any]:
        """The plan as plain JSON values."""
        out = asdict(self)
        out["families"] = [str(f) if f is not None else None for f in self.families]
        # per scan, ``tta`` says whether the mirror ran (``Prediction.info``)
        out["tta"] = bool(self.tta)
        out["tta_families"] = [str(f) if f is not None else None for f in self.tta]
        out["roi_size"] = list(self.roi_size)
        return out


def _family_rule(model: LoadedModel, wanted: str) -> tuple[str, tuple, str | None, str | None]:
    """(rule, families that may run, head family, crop family) for ``--family wanted``."""
    pairs = model.pairs
    if wanted not in ("auto", "agreement"):
        if wanted not in pairs:
            named = ", ".join(str(name) for name in pairs if name is not None) or "none"
            raise LoFiError(
                f"--family {wanted}: this model has no such contrast family (it has: {named}); "
                "use --family auto"
            )
        return "fixed", (wanted,), None, None
    if len(pairs) == 1:
        return "fixed", tuple(pairs), None, None
    rule = model.family_rule
    if wanted == "auto" and rule is not None:
        return "field_of_view", tuple(pairs), rule["head"], rule["crop"]
    return "agreement", tuple(pairs), None, None


def _mirrored(
    model: LoadedModel, asked: bool | None, families: tuple, released: bool
) -> tuple[str | None, ...]:
    """The families whose pair also runs on the mirror image: the user's yes or no for all,
    else the bundle's advice (never for the released recipe)."""
    if asked is not None:
        return families if asked else ()
    if released or not model.tta:
        return ()
    advised = model.tta_families
    return families if advised is None else tuple(f for f in families if f in advised)


def _precision(amp: bool, device: torch.device, released: bool = False) -> str:
    """float16 autocast on CUDA, bfloat16 on a CPU that computes it natively, else float32
    (and always on the CPU for the released recipe, reproduced as it was run)."""
    if not amp:
        return "float32"
    if device.type == "cuda":
        return "float16"
    native = device.type == "cpu" and not released and cpu_bfloat16_native()
    return "bfloat16" if native else "float32"


def make_plan(model: LoadedModel, settings: PredictSettings) -> InferencePlan:
    """Resolve ``settings`` against the model's advice, its recipe and the device.

    Raises:
        LoFiError: ``--refiner`` for a model without one, an unknown family, a bad window size.
    """
    device: torch.device = resolve_device(settings.device)
    released = model.spec.recipe == "released"
    if settings.refine and model.refiner is None:
        raise LoFiError(
            f"--refiner: the model {model.source} has no outline refiner; use --no-refiner"
        )
    refiner = model.refiner is not None and (
        not released if settings.refine is None else settings.refine
    )
    # the refiner reads edge refinement's evidence itself: by default not applied twice
    default_edge = 0.0 if released or refiner else DEFAULT_EDGE_WEIGHT
    rule, families, head, crop = _family_rule(model, settings.family)
    roi_mode = settings.roi
    # auto: on CPU only, and never for the released recipe (reproduced as it was run)
    roi = roi_mode == "on" or (roi_mode == "auto" and device.type == "cpu" and not released)
    return InferencePlan(
        recipe=model.spec.recipe,
        fusion=settings.fusion or ("union" if released else "mean"),
        overlap_rule="released" if released else "probability",
        threshold=settings.threshold,
        family_rule=rule,
        families=families,
        head_family=head,
        crop_family=crop,
        roi=roi,
        tta=_mirrored(model, settings.tta, families, released),
        refiner=refiner,
        edge_weight=default_edge if settings.edge_weight is None else settings.edge_weight,
        lcc=(not released) if settings.lcc is None else settings.lcc,
        grid=settings.grid,
        sliding_window=settings.sliding_window,
        roi_size=check_roi_size(settings.roi_size),
        overlap=settings.overlap,
        amp=settings.amp,
        precision=_precision(settings.amp, device, released),
        device=str(device),
    )
