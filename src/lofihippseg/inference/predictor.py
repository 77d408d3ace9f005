"""One scan in, hippocampi out: the inference pipeline, read top to bottom in
:meth:`Predictor.predict_volume`.

1. **Plan** (once per ``Predictor``, ``inference.plan``): every default resolved from the
   settings, the bundle's advice, the recipe and the device.
2. **Prepare**: the canonical volume (``io.nifti.load_image``), block-averaged first when it is
   much finer than the working grid (``inference.regrid``), cropped to its non-zero box and
   normalised as in training (``preprocessing.prepare``), resampled to the pair's working grid;
   view 2 = ``frequency_view(view 1)``.
3. **Choose the pair** of networks (models with several contrast families): by the scan's
   field of view (a head or a crop around one hippocampus: one pair runs), or v12's agreement
   rule (every pair runs, the one whose views agree best is kept).
4. **Locate** (``inference.roi``): the localiser's box around each hippocampus (a coarse pass of
   the pair when it misses a side; the whole volume only when neither finds both).
5. **Heads**: each view's network in the boxes (and on the mirror image with ``tta``),
   sigmoid, mapped back onto the input's grid (``regrid``): one :class:`ProbMap` per view.
6. **Fuse** the views' maps (mean, or union for the released recipe).
7. **Post-process**, in order: the outline refiner (probabilities in, probabilities out),
   then labels (threshold, the left/right overlap rule) computed once, edge refinement, the
   largest component per side.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lofihippseg.inference import regrid
from lofihippseg.inference import roi as roi_mod
from lofihippseg.inference.edge_refine import refine_labels
from lofihippseg.inference.fusion import (
    disagreement,
    fuse_probabilities,
    resolve_overlap,
    view_agreement_dice,
)
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.inference.plan import InferencePlan, make_plan
from lofihippseg.inference.postprocess import keep_largest_per_side
from lofihippseg.inference.probmap import ProbMap, aligned, average
from lofihippseg.inference.refiner import Refiner, refine_window
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.inference.sliding_window import network_probabilities, use_sliding, whole_volume
from lofihippseg.inference.tta import (
    DEFAULT_FLIPS,
    MirrorAgreement,
    swap_mirrored,
    tta_probabilities,
)
from lofihippseg.io.nifti import Volume
from lofihippseg.models.fold import fold_batch_norm
from lofihippseg.models.onednn import prefer_onednn
from lofihippseg.models.precision import at_precision
from lofihippseg.preprocessing.crop import CROP_MAX_WIDTH_MM, Box
from lofihippseg.preprocessing.prepare import crop_and_normalise
from lofihippseg.preprocessing.resample import resize, working_grid
from lofihippseg.views.frequency import frequency_view

Pair = tuple[torch.nn.Module, torch.nn.Module]
IDENTITY: tuple[tuple[int, ...], ...] = ((),)  # the scan as it is
MIRROR: tuple[tuple[int, ...], ...] = ((0,),)  # its left-right mirror image only


@dataclass
class Prediction:
    """The result for one volume (all arrays in canonical order).

    Attributes:
        labels: uint8 label map of the full volume (0 background, 1 left, 2 right).
        prob1: view 1 probabilities (2, ...) in ``box``.
        prob2: view 2 probabilities (2, ...) in ``box``.
        fused: fused (and refined) probabilities (2, ...) in ``box``.
        box: where those arrays lie in the full volume.
        view_dice: Dice between the two views' foreground masks (quality flag).
        timings: seconds per stage and ``total_s``.
        info: the plan and what happened (pair, ROI boxes, fallbacks, refiner change).
    """

    labels: np.ndarray
    prob1: np.ndarray
    prob2: np.ndarray
    fused: np.ndarray
    box: Box
    view_dice: float
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def full(self, crop_array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Paste a crop-sized array (optionally with leading channels) into the full volume."""
        lead = crop_array.shape[:-3]
        out = np.full((*lead, *self.labels.shape), fill, dtype=crop_array.dtype)
        out[(Ellipsis, *self.box)] = crop_array
        return out

    @property
    def uncertainty(self) -> np.ndarray:
        """Full-volume disagreement of the two views, max over channels (float32)."""
        return self.full(disagreement(self.prob1, self.prob2).astype(np.float32))


@dataclass
class PreparedVolume:
    """A volume made ready for the networks on one working grid.

    Attributes:
        views: view 1 (the normalised crop, on the working grid) and view 2 (its frequency view).
        spacing: voxel size of the views (mm).
        box: the crop in the input volume.
        fine_shape: the crop's shape on the input's grid.
        regridded: the views are not on the input's grid (resampled or block-averaged).
        info: how it was prepared (working grid, spacing, pooled voxels).
        localiser_boxes: what the localiser found on it (computed once; None: not both sides).
    """

    views: tuple[torch.Tensor, torch.Tensor]
    spacing: tuple[float, float, float]
    box: Box
    fine_shape: tuple[int, ...]
    regridded: bool
    info: dict[str, Any]
    localised: bool = False
    localiser_boxes: list[Box] | None = None


@dataclass
class PairResult:
    """One pair's two views' probabilities on the input's grid and their agreement."""

    family: str | None
    views: tuple[ProbMap, ProbMap]
    view_dice: float
    info: dict[str, Any]
    seconds: float


class Stopwatch:
    """Seconds per named stage (a stage run twice adds up)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def timings(self) -> dict[str, float]:
        """Every stage's seconds and ``total_s`` (wall time since the start)."""
        return {**self.seconds, "total_s": time.perf_counter() - self.start}


class Predictor:
    """Runs a loaded model on volumes with one plan.

    Args:
        model: the networks and their spec.
        settings: how to run (resolved once into ``self.plan``).

    Example:
        >>> from lofihippseg.inference.model_loading import load_model
        >>> predictor = Predictor(load_model("runs/my_run"))  # doctest: +SKIP
        >>> pred = predictor.predict_volume(load_image("scan.nii.gz"))  # doctest: +SKIP
    """

    def __init__(self, model: LoadedModel, settings: PredictSettings | None = None):
        self.settings = settings or PredictSettings()
        self.model = model
        self.spec = model.spec
        self.plan: InferencePlan = make_plan(model, self.settings)
        self.device = torch.device(self.plan.device)
        model.to(self.device)
        nets = [net for name in self.plan.families for net in model.pairs[name]]
        for extra in (model.localiser, model.refiner):
            if extra is not None:
                nets.append(extra.net)
        for net in nets:
            fold_batch_norm(net.eval())  # batch norm costs nothing folded into the convolutions
            prefer_onednn(net)  # 2-4x faster single-volume CPU inference
        # the networks as this plan runs them (copies in bfloat16 where the plan says so)
        dtype = torch.bfloat16 if self.plan.precision == "bfloat16" else torch.float32
        self.pairs = {
            name: tuple(at_precision(net, dtype) for net in model.pairs[name])
            for name in self.plan.families
        }
        self.localiser = model.localiser and dataclasses.replace(
            model.localiser, net=at_precision(model.localiser.net, dtype)
        )
        self.refiner = model.refiner and Refiner.around(at_precision(model.refiner.net, dtype))

    def describe(self) -> dict[str, Any]:
        """The plan (every default resolved) for sidecars."""
        return {**self.plan.describe(), "family": self.settings.family}

    # ---- the pipeline --------------------------------------------------------------------

    def predict_volume(self, volume: Volume) -> Prediction:
        """Segment one canonical volume.

        Example:
            >>> pred = predictor.predict_volume(load_image("scan.nii.gz"))  # doctest: +SKIP
            >>> pred.labels.dtype, pred.labels.shape == vol.data.shape  # doctest: +SKIP
        """
        watch = Stopwatch()
        info: dict[str, Any] = self.describe()
        prepared: dict[float | None, PreparedVolume] = {}  # one per working grid
        pair = self._choose_and_run(volume, prepared, watch, info)
        info.update(pair.info)
        with watch.stage("postprocess_s"):
            (prob1, prob2), box = aligned(pair.views)
            fused = ProbMap(fuse_probabilities(prob1, prob2, self.plan.fusion), box)
            if self.plan.refiner:
                fused = self._refine(volume, fused, info)
            labels_in_box = self._labels(volume, fused, info)
        # the refiner may have widened the window: the views' maps follow it
        prob1, prob2 = (ProbMap(p, box).placed(fused.box) for p in (prob1, prob2))
        labels = np.zeros(volume.data.shape, dtype=np.uint8)
        labels[fused.box] = labels_in_box
        return Prediction(
            labels=labels,
            prob1=prob1,
            prob2=prob2,
            fused=fused.data.astype(np.float32, copy=False),
            box=fused.box,
            view_dice=pair.view_dice,
            timings=watch.timings(),
            info=info,
        )

    def _choose_and_run(
        self,
        volume: Volume,
        prepared: dict[float | None, PreparedVolume],
        watch: Stopwatch,
        info: dict[str, Any],
    ) -> PairResult:
        """The kept pair's result: one pair (the plan's rule), or every pair and the one whose
        two views agree best (``agreement``; a pair that finds nothing loses, ties: the first)."""
        plan = self.plan
        if plan.family_rule == "agreement":  # v12: chosen on the scan as it is, then mirrored
            crop = self._measure_field_of_view(volume, plan.families[0], prepared, watch, info)
            runs = [
                self._run_pair(volume, name, prepared, watch, IDENTITY, crop)
                for name in plan.families
            ]
            for run in runs:
                watch.seconds[f"pair_{run.family}_s"] = run.seconds
            kept = max(runs, key=lambda r: np.nan_to_num(r.view_dice, nan=-1.0))
            kept.info["family_view_agreement"] = {
                str(r.family): None if np.isnan(r.view_dice) else round(r.view_dice, 4)
                for r in runs
            }
            if kept.family in plan.tta:
                kept = self._with_mirror(volume, kept, prepared, watch, crop)
            return kept
        family = plan.head_family if plan.family_rule == "field_of_view" else plan.families[0]
        crop = self._measure_field_of_view(volume, family, prepared, watch, info)
        if plan.family_rule == "field_of_view" and crop:
            family = plan.crop_family
        return self._run_pair(volume, family, prepared, watch, self._flips(family), crop)

    def _measure_field_of_view(
        self,
        volume: Volume,
        family: str | None,
        prepared: dict[float | None, PreparedVolume],
        watch: Stopwatch,
        info: dict[str, Any],
    ) -> bool:
        """Whether the scan is a crop (narrower than ``CROP_MAX_WIDTH_MM`` from left to right:
        one hippocampus in it), measured on the head found on ``family``'s working grid;
        recorded as ``info["crop"]`` and ``info["field_of_view_lr_mm"]`` under every rule, so
        that the review rules judge a crop as one (``reporting.status``)."""
        head = self._prepared(volume, family, prepared, watch)
        width_mm = (head.box[0].stop - head.box[0].start) * volume.spacing[0]
        info["crop"] = bool(width_mm < CROP_MAX_WIDTH_MM)
        info["field_of_view_lr_mm"] = round(float(width_mm), 1)
        return info["crop"]

    def _with_mirror(
        self,
        volume: Volume,
        kept: PairResult,
        prepared: dict[float | None, PreparedVolume],
        watch: Stopwatch,
        crop: bool = False,
    ) -> PairResult:
        """``kept`` with each view averaged with the same pair's pass on the mirror image."""
        mirrored = self._run_pair(volume, kept.family, prepared, watch, MIRROR, crop)
        views = tuple(average([a, b]) for a, b in zip(kept.views, mirrored.views, strict=True))
        dice = view_agreement_dice(views[0].data, views[1].data, self.plan.threshold)
        watch.seconds["tta_s"] = mirrored.seconds
        info = {**kept.info, "tta": True}
        return PairResult(kept.family, views, dice, info, kept.seconds + mirrored.seconds)

    def _prepared(
        self,
        volume: Volume,
        family: str | None,
        prepared: dict[float | None, PreparedVolume],
        watch: Stopwatch,
    ) -> PreparedVolume:
        """The volume prepared on ``family``'s working grid (once per grid)."""
        grid_mm = self.settings.grid_mm(self.model.grid_of(family))
        if grid_mm not in prepared:
            with watch.stage("preprocess_s"):
                prepared[grid_mm] = self._prepare(volume, grid_mm)
        return prepared[grid_mm]

    def _run_pair(
        self,
        volume: Volume,
        family: str | None,
        prepared: dict[float | None, PreparedVolume],
        watch: Stopwatch,
        flips: tuple[tuple[int, ...], ...] = ((),),
        crop: bool = False,
    ) -> PairResult:
        """One pair of networks on its working grid: located, run, mapped onto the input.
        ``flips``: the images each network sees (the scan, its mirror or both); ``crop``: the
        scan holds one hippocampus (a missing side is not searched for)."""
        t = time.perf_counter()
        prep = self._prepared(volume, family, prepared, watch)
        nets = self.pairs[family]
        info: dict[str, Any] = {**prep.info, "tta": flips != IDENTITY}
        if family is not None:
            info["contrast_family"] = family
        boxes = None
        if self.plan.roi:
            with watch.stage("locate_s"):
                boxes = self._locate(nets, prep, info)
        with watch.stage("inference_s"):
            maps = self._segment(nets, prep, boxes, info, flips, crop)
        box = prep.box
        if prep.regridded:  # probabilities back onto the input's grid
            with watch.stage("regrid_s"):
                maps, box = self._back_to_input(maps, box, prep.fine_shape)
        views = (ProbMap(maps[0], box), ProbMap(maps[1], box))
        dice = view_agreement_dice(maps[0], maps[1], self.plan.threshold)
        return PairResult(family, views, dice, info, time.perf_counter() - t)

    # ---- stages ------------------------------------------------------------------------

    def _prepare(self, volume: Volume, grid_mm: float | None) -> PreparedVolume:
        """Crop, normalise and resample ``volume`` to the working grid ``grid_mm`` (None: its
        own grid), and make the second view."""
        info: dict[str, Any] = {"working_grid_mm": grid_mm}
        # a scan much finer than the working grid is averaged over whole blocks first
        factors = regrid.pool_factors(volume.spacing, grid_mm)
        pooled = any(f > 1 for f in factors)
        data = regrid.pool(volume.data, factors) if pooled else volume.data
        crop, coarse_box = crop_and_normalise(
            data, margin=self.spec.crop_margin, clip_percentiles=self.spec.clip_percentiles
        )
        box, fine_shape = regrid.fine_box(coarse_box, factors, volume.data.shape)
        view1 = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
        spacing = tuple(s * f for s, f in zip(volume.spacing, factors, strict=True))
        grid = None if grid_mm is None else working_grid(crop.shape, spacing, grid_mm)
        if grid is not None:
            view1, spacing = resize(view1, grid.shape), grid.spacing
        if grid is not None or pooled:
            info["grid_spacing_mm"] = [round(s, 3) for s in spacing]
        if pooled:
            info["pooled_voxels"] = list(factors)
        view1 = view1.to(self.device)
        if self.model.single_view:
            view2 = view1
        else:
            view2 = frequency_view(view1, self.spec.view_mode, self.spec.cutoff)
        return PreparedVolume(
            views=(view1, view2),
            spacing=spacing,  # type: ignore[arg-type]
            box=box,
            fine_shape=fine_shape,
            regridded=grid is not None or pooled,
            info=info,
        )

    def _locate(self, nets: Pair, prepared: PreparedVolume, info: dict[str, Any]) -> list | None:
        """One box per hippocampus: from the localiser (run once per prepared volume), else
        from a coarse pass of the pair; None = run the whole volume (``info`` says why)."""
        views, spacing = prepared.views, prepared.spacing
        shape = tuple(int(n) for n in views[0].shape)
        boxes = None
        localiser = self.localiser
        if localiser is not None:
            if not prepared.localised:
                probs = localiser.probabilities(views[0], spacing, self.device)
                margin = roi_mod.margin_voxels(spacing, roi_mod.LOCALISER_MARGIN_MM)
                prepared.localiser_boxes = roi_mod.side_boxes(
                    probs, shape, margin, localiser.spec.threshold
                )
                prepared.localised = True
            boxes = prepared.localiser_boxes
            info["roi_source"] = "localiser"
        if boxes is None:
            probs = roi_mod.coarse_pass_probabilities(self._coarse, nets, views)
            boxes = roi_mod.side_boxes(probs, shape, roi_mod.margin_voxels(spacing))
            info["roi_source"] = "coarse pass"
        if boxes is None:
            info["roi_fallback"] = "the hippocampi were not both located"
        elif roi_mod.too_large(boxes, shape):
            info["roi_fallback"] = "the located boxes are most of the volume"
            boxes = None
        return boxes

    def _segment(
        self,
        nets: Pair,
        prepared: PreparedVolume,
        boxes: list | None,
        info: dict[str, Any],
        flips: tuple[tuple[int, ...], ...],
        crop: bool = False,
    ) -> list[np.ndarray]:
        """Both networks' probability maps on the working grid: in the boxes (grown once
        when the outline reaches a box face), else over the whole volume.

        A head whose boxes' segmentation misses a side (the localiser looked in the wrong
        place: real scans whose field of view runs far into the neck) is searched once more
        (``_search_missing_side``); a crop (one hippocampus) is not.
        """
        maps = self._segment_in_boxes(nets, prepared, boxes, info, flips)
        if maps is None:
            return self._segment_whole(nets, prepared, info, flips)
        if info.get("roi_missing_side") and not crop:
            maps = self._search_missing_side(nets, prepared, maps, boxes, info, flips)
        return maps

    def _segment_in_boxes(
        self,
        nets: Pair,
        prepared: PreparedVolume,
        boxes: list | None,
        info: dict[str, Any],
        flips: tuple[tuple[int, ...], ...],
    ) -> list[np.ndarray] | None:
        """The maps computed in ``boxes`` (regrown once when the outline reaches a face);
        None: the whole volume must run (``info["roi_fallback"]`` says why)."""
        views = prepared.views
        for attempt in range(2):
            if boxes is None:
                return None
            if len(boxes) == 2:  # both sides in one batch
                boxes = roi_mod.equal_size(boxes, views[0].shape)
            agreement = MirrorAgreement()
            run = functools.partial(self._run, flips=flips, agreement=agreement)
            maps = roi_mod.roi_probabilities(run, nets, views, boxes)
            if (mirror_dice := agreement.dice()) is not None:
                info["mirror_dice"] = mirror_dice
            masks = fuse_probabilities(maps[0], maps[1], self.plan.fusion) > self.plan.threshold
            problem = roi_mod.box_problem(masks, boxes)
            if problem != roi_mod.REACHED_FACE:
                info["roi_boxes"] = [[[s.start, s.stop] for s in b] for b in boxes]
                info.pop("roi_missing_side", None)
                if problem == roi_mod.MISSES_A_SIDE:
                    info["roi_missing_side"] = True
                return maps
            regrown = roi_mod.boxes_around(masks, roi_mod.margin_voxels(prepared.spacing))
            if attempt == 1 or regrown is None or roi_mod.too_large(regrown, masks.shape[1:]):
                info["roi_fallback"] = problem
                return None
            boxes = regrown
            info["roi_regrown"] = True
        return None  # not reached: the second attempt returns

    def _segment_whole(
        self,
        nets: Pair,
        prepared: PreparedVolume,
        info: dict[str, Any],
        flips: tuple[tuple[int, ...], ...],
    ) -> list[np.ndarray]:
        """Both networks over the whole volume on the working grid."""
        pairs = zip(nets, prepared.views, strict=True)
        agreement = MirrorAgreement()
        maps = [self._run(net, view[None], flips, agreement)[0].numpy() for net, view in pairs]
        if (mirror_dice := agreement.dice()) is not None:
            info["mirror_dice"] = mirror_dice
        return maps

    def _search_missing_side(
        self,
        nets: Pair,
        prepared: PreparedVolume,
        maps: list[np.ndarray],
        boxes: list,
        info: dict[str, Any],
        flips: tuple[tuple[int, ...], ...],
    ) -> list[np.ndarray]:
        """A side missing from the boxes, looked for another way (only then: no cost where
        the localiser worked): the pair's coarse pass on the volume down-sampled by 2 and
        boxes around what it finds, where a head's hippocampi can be
        (``roi.sides_plausible``); if that finds no such boxes or still misses a side, the
        whole volume on the working grid. Recorded as ``info["roi_side_search"]``; the result
        that finds more sides is kept (the first on a tie)."""
        found = _sides_found(maps, self.plan)
        views, spacing = prepared.views, prepared.spacing
        shape = tuple(int(n) for n in views[0].shape)
        search: dict[str, Any] = {"boxes": info.get("roi_boxes"), "from": info.get("roi_source")}
        info["roi_side_search"] = search
        coarse_boxes = None
        if info.get("roi_source") != "coarse pass":  # else it made these boxes already
            probs = roi_mod.coarse_pass_probabilities(self._coarse, nets, views)
            coarse_boxes = roi_mod.side_boxes(probs, shape, roi_mod.margin_voxels(spacing))
        if coarse_boxes is not None and not roi_mod.sides_plausible(probs, shape, spacing):
            search["coarse_pass"] = "not where a head's hippocampi are"
            coarse_boxes = None
        if coarse_boxes is not None and not roi_mod.too_large(coarse_boxes, shape):
            attempt: dict[str, Any] = {}
            new = self._segment_in_boxes(nets, prepared, coarse_boxes, attempt, flips)
            if new is not None and _sides_found(new, self.plan) > found:
                maps, found = new, _sides_found(new, self.plan)
                _kept(info, attempt, search, "coarse pass")
                if found == 2:
                    return maps
        attempt = {}
        whole = self._segment_whole(nets, prepared, attempt, flips)
        if _sides_found(whole, self.plan) > found:
            maps, found = whole, _sides_found(whole, self.plan)
            if found < 2:
                attempt["roi_missing_side"] = True
            _kept(info, attempt, search, "whole volume")
        search.setdefault("by", "nothing found")
        return maps

    def _flips(self, family: str | None) -> tuple[tuple[int, ...], ...]:
        """The images ``family``'s pair sees: the scan, and its mirror where the plan says."""
        return DEFAULT_FLIPS if family in self.plan.tta else IDENTITY

    def _run(
        self,
        net: torch.nn.Module,
        volumes: torch.Tensor,
        flips: tuple[tuple[int, ...], ...],
        agreement: MirrorAgreement | None = None,
    ) -> torch.Tensor:
        """Probabilities (B, 2, ...) of one network on a batch of (D, H, W) volumes, on the
        CPU, averaged over ``flips`` (the mirror image's with the sides swapped back); the
        scan and its mirror run as one batch, and ``agreement`` counts how far they agree."""
        plan = self.plan
        sliding = use_sliding(volumes.shape[-3:], plan.sliding_window, self.spec.n_filters)
        if sliding:  # large volumes: one at a time, in windows

            def once(x: torch.Tensor) -> torch.Tensor:
                return network_probabilities(
                    net, x, self.device, True, plan.roi_size, plan.overlap, plan.amp
                )

            return torch.stack([tta_probabilities(once, v, flips) for v in volumes])
        mirror = flips == DEFAULT_FLIPS
        if not mirror and flips not in (IDENTITY, MIRROR):
            raise ValueError(f"unsupported flips {flips!r}")
        batch = torch.flip(volumes, dims=[1]) if flips == MIRROR else volumes
        if mirror:
            batch = torch.cat([volumes, torch.flip(volumes, dims=[1])])
        probs = whole_volume(net, batch, self.device, plan.amp)
        if flips == MIRROR:
            return swap_mirrored(probs)
        if mirror:
            n = len(volumes)
            scan, mirrored = probs[:n], swap_mirrored(probs[n:])
            if agreement is not None:
                agreement.add(scan, mirrored, plan.threshold)
            return (scan + mirrored) / 2
        return probs

    def _coarse(self, net: torch.nn.Module, volume: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        if use_sliding(volume.shape, plan.sliding_window, self.spec.n_filters):
            return network_probabilities(
                net, volume, self.device, True, plan.roi_size, plan.overlap, plan.amp
            )
        return whole_volume(net, volume, self.device, plan.amp)

    def _back_to_input(
        self, maps: list[np.ndarray], box: Box, fine_shape: tuple[int, ...]
    ) -> tuple[list[np.ndarray], Box]:
        """Probability maps resampled onto the input's grid in the window that can hold a
        label (``regrid``), and that window's box in the full volume."""
        floor = min(regrid.PROB_FLOOR, self.plan.threshold)
        support = regrid.support_box(maps, floor)
        limit = tuple(b.stop - b.start for b in box)
        window = regrid.window_for(support, maps[0].shape[-3:], fine_shape, limit)
        maps = [regrid.resize_window(torch.from_numpy(m), fine_shape, window).numpy() for m in maps]
        box = tuple(
            slice(b.start + w.start, b.start + w.stop) for b, w in zip(box, window, strict=True)
        )
        return maps, box  # type: ignore[return-value]

    def _refine(self, volume: Volume, fused: ProbMap, info: dict[str, Any]) -> ProbMap:
        """The outline refiner on each side (its window may grow ``fused``'s box)."""
        data, box, info["refiner_change"] = refine_window(
            self.refiner, volume.data, fused.data, fused.box, volume.spacing,
            self.plan.threshold, self.device,
        )  # fmt: skip
        return ProbMap(data, box)

    def _labels(self, volume: Volume, fused: ProbMap, info: dict[str, Any]) -> np.ndarray:
        """The label map inside ``fused.box``: threshold and overlap rule, edge refinement,
        the largest component per side (computed once, here)."""
        plan = self.plan
        # union fusion's fused map is the views' maximum: above the threshold exactly where
        # either view is (the released rule)
        labels = resolve_overlap(fused.data > plan.threshold, fused.data, plan.overlap_rule)
        if plan.edge_weight > 0:
            labels, info["edge_refinement"] = refine_labels(
                volume.data, fused.data, labels, plan.threshold,
                plan.edge_weight, plan.overlap_rule, window=fused.box,
            )  # fmt: skip
        if plan.lcc:
            labels = keep_largest_per_side(labels)
        return labels


def _sides_found(maps: list[np.ndarray], plan: InferencePlan) -> int:
    """How many sides (0-2) the fused maps mark above the plan's threshold."""
    masks = fuse_probabilities(maps[0], maps[1], plan.fusion) > plan.threshold
    return int(masks[0].any()) + int(masks[1].any())


def _kept(info: dict[str, Any], attempt: dict[str, Any], search: dict[str, Any], by: str) -> None:
    """``info`` says what the side search's kept ``attempt`` found (``by``), not the boxes'."""
    for key in ("roi_boxes", "roi_missing_side", "roi_regrown", "mirror_dice"):
        info.pop(key, None)
    info.update(attempt)
    search["by"] = info["roi_source"] = by
