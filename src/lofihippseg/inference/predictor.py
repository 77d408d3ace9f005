"""One scan in, hippocampi out: the dual-view inference pipeline.

Canonical volume (``io.nifti.load_image``) -> (a scan much finer than the model's working grid:
averaged over whole blocks of voxels first, ``inference.regrid``) -> crop to the non-zero box
and normalise exactly as in training (``preprocessing.prepare.crop_and_normalise``) -> resample
to the model's working grid if it has one (``ModelSpec.grid_mm``; ROI boxes in ``info`` are then
in its voxels) ->
view 1 = the crop, view 2 = ``frequency_view(crop)`` -> VNet 1 on view 1, VNet 2 on view 2
(whole volume, sliding windows or a located region of interest; optional mirror TTA) ->
sigmoid -> probabilities back onto the input's grid (only where a label can be) -> fusion ->
threshold -> left/right overlap rule -> pasted back into the full canonical volume.
``io.nifti.save_like`` then writes it on the input's exact grid.
A model with several contrast families runs this once per pair of networks, each on its own
working grid (pairs on the same grid share the preprocessing and the localiser's boxes), and
keeps the result whose two views agree best. Only the kept result is post-processed: the
outline refiner when the model has one (``inference.refiner``: fused probabilities -> refined,
thresholded again), edge refinement (``inference.edge_refine``), the largest component per side.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from lofihippseg.errors import LoFiError
from lofihippseg.inference import regrid
from lofihippseg.inference import roi as roi_mod
from lofihippseg.inference.edge_refine import refine_labels
from lofihippseg.inference.fusion import (
    disagreement,
    fuse_to_labels,
    resolve_overlap,
    view_agreement_dice,
)
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.inference.postprocess import keep_largest_per_side
from lofihippseg.inference.refiner import refine_window
from lofihippseg.inference.settings import DEFAULT_EDGE_WEIGHT, PredictSettings, resolve_device
from lofihippseg.inference.sliding_window import (
    check_roi_size,
    network_probabilities,
    use_sliding,
    whole_volume,
)
from lofihippseg.inference.tta import tta_probabilities
from lofihippseg.io.nifti import Volume
from lofihippseg.models.onednn import prefer_onednn
from lofihippseg.preprocessing.crop import Box, within
from lofihippseg.preprocessing.prepare import crop_and_normalise
from lofihippseg.preprocessing.resample import resize, working_grid
from lofihippseg.views.frequency import frequency_view


@dataclass
class Prediction:
    """The result for one volume (all arrays in canonical order).

    Attributes:
        labels: uint8 label map of the full volume (0 background, 1 left, 2 right).
        prob1: view 1 probabilities (2, ...) in ``box``.
        prob2: view 2 probabilities (2, ...) in ``box``.
        fused: fused probabilities (2, ...) in ``box``.
        box: where those arrays lie in the full volume: the crop, or, when the networks ran
            on another grid, the window of it that can hold a label (``inference.regrid``).
        view_dice: Dice between the two views' foreground masks (quality flag).
        timings: seconds per stage (with several pairs: the kept pair's stages, `pair_NAME_s`
            for each pair, and `total_s` for all).
        info: how it was run (fusion, overlap rule, ROI box, fallbacks).
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
    """A volume made ready for the networks on one working grid (shared by the pairs of
    networks that run on that grid).

    Attributes:
        views: view 1 (the normalised crop, on the working grid) and view 2 (its frequency view).
        spacing: voxel size of the views (mm).
        box: the crop in the input volume.
        fine_shape: the crop's shape on the input's grid.
        regridded: the views are not on the input's grid (resampled or block-averaged).
        info: how it was prepared (working grid, spacing, pooled voxels).
        seconds: time it took (counted by the first pair that uses it, then 0).
        localised: the localiser has run on it; ``localiser_boxes`` holds what it found (None:
            not both hippocampi).
    """

    views: tuple[torch.Tensor, torch.Tensor]
    spacing: tuple[float, float, float]
    box: Box
    fine_shape: tuple[int, ...]
    regridded: bool
    info: dict[str, Any]
    seconds: float
    localised: bool = False
    localiser_boxes: list[Box] | None = None


class Predictor:
    """Runs a loaded model on volumes with fixed settings.

    Args:
        model: the two networks and their spec.
        settings: how to run (fusion, threshold, TTA, sliding windows, ROI, device ...).

    Example:
        >>> from lofihippseg.inference.model_loading import load_model
        >>> predictor = Predictor(load_model("runs/my_run"))  # doctest: +SKIP
        >>> pred = predictor.predict_volume(load_image("scan.nii.gz"))  # doctest: +SKIP
    """

    def __init__(self, model: LoadedModel, settings: PredictSettings | None = None):
        self.settings = settings or PredictSettings()
        self.model = model
        self.spec = model.spec
        self.device = resolve_device(self.settings.device)
        for net1, net2 in model.to(self.device).pairs.values():
            net1.eval()
            net2.eval()
        released = self.spec.recipe == "released"
        self.fusion = self.settings.fusion or ("union" if released else "mean")
        self.overlap_rule = "released" if released else "probability"
        self.lcc = (not released) if self.settings.lcc is None else self.settings.lcc
        refine = self.settings.refine
        if refine and model.refiner is None:
            raise LoFiError(
                f"--refiner: the model {model.source} has no outline refiner; use --no-refiner"
            )
        self.use_refiner = model.refiner is not None and (
            not released if refine is None else refine
        )
        # the refiner reads edge refinement's evidence itself: by default not applied twice
        edge = self.settings.edge_weight
        default_edge = 0.0 if released or self.use_refiner else DEFAULT_EDGE_WEIGHT
        self.edge_weight = default_edge if edge is None else edge
        tta = self.settings.tta
        self.use_tta = (model.tta and not released) if tta is None else tta
        nets = [net for pair in model.pairs.values() for net in pair]
        refiner_net = model.refiner.net if model.refiner is not None else None
        for net in (*nets, model.localiser and model.localiser.net, refiner_net):
            if net is not None:
                prefer_onednn(net)  # 2-4x faster single-volume CPU inference
        self.roi_size = check_roi_size(self.settings.roi_size)
        self.pairs = self._pairs()
        mode = self.settings.roi
        # auto: on CPU only, and never for the released recipe (reproduced as it was run)
        auto_roi = self.device.type == "cpu" and not released
        self.use_roi = mode == "on" or (mode == "auto" and auto_roi)

    def describe(self) -> dict[str, Any]:
        """The effective settings (after recipe defaults) for sidecars."""
        return {
            "fusion": self.fusion,
            "overlap_rule": self.overlap_rule,
            "lcc": self.lcc,
            "threshold": self.settings.threshold,
            "edge_weight": self.edge_weight,
            "refiner": self.use_refiner,
            "tta": self.use_tta,
            "roi": self.use_roi,
            "grid": self.settings.grid,
            "family": self.settings.family,
            "working_grid_mm": self.settings.grid_mm(self.spec.grid_mm),
            "device": str(self.device),
        }

    def _run(
        self, net: torch.nn.Module, volume: torch.Tensor, flips: tuple[int, ...] = ()
    ) -> torch.Tensor:
        """Full-resolution probabilities (2, ...) on the CPU; ``flips``: of the volume flipped
        along these axes, flipped back (a left-right flip swaps the sides back)."""
        s = self.settings
        sliding = use_sliding(volume.shape, s.sliding_window, self.spec.n_filters)

        def once(x: torch.Tensor) -> torch.Tensor:
            return network_probabilities(
                net, x, self.device, sliding, self.roi_size, s.overlap, s.amp
            )

        return tta_probabilities(once, volume, (flips,)) if flips else once(volume)

    def _coarse(self, net: torch.nn.Module, volume: torch.Tensor) -> torch.Tensor:
        if use_sliding(volume.shape, self.settings.sliding_window, self.spec.n_filters):
            return network_probabilities(
                net,
                volume,
                self.device,
                True,
                self.roi_size,
                self.settings.overlap,
                self.settings.amp,
            )
        return whole_volume(net, volume, self.device, self.settings.amp)

    def _locate(
        self,
        nets: tuple[torch.nn.Module, torch.nn.Module],
        prepared: PreparedVolume,
        info: dict[str, Any],
    ) -> list[Box] | None:
        """One box per hippocampus: from the localiser (run once per prepared volume), else
        from a coarse pass; None = run the whole volume (``info`` says why)."""
        views, spacing = prepared.views, prepared.spacing
        shape = tuple(int(n) for n in views[0].shape)
        boxes = None
        localiser = self.model.localiser
        if localiser is not None:
            if not prepared.localised:
                probs = localiser.probabilities(views[0], spacing, self.device)
                margin = roi_mod.margin_voxels(spacing, roi_mod.LOCALISER_MARGIN_MM)
                threshold = localiser.spec.threshold
                prepared.localiser_boxes = roi_mod.side_boxes(probs, shape, margin, threshold)
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

    def _in_boxes(
        self,
        nets: tuple[torch.nn.Module, torch.nn.Module],
        views: tuple[torch.Tensor, torch.Tensor],
        spacing: tuple[float, float, float],
        boxes: list[Box],
        info: dict[str, Any],
        flips: tuple[int, ...] = (),
    ) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
        """Both networks' probability maps computed only in ``boxes`` around the hippocampi,
        with their (labels, fused) from ``_labels``, or None = run the whole volume (``info``
        says why). A segmentation that reaches a box face gets one second try in boxes around
        what it found."""
        for attempt in range(2):
            run = functools.partial(self._run, flips=flips)
            maps = roi_mod.roi_probabilities(run, nets, views, boxes)
            labels, fused = self._labels(*maps)
            problem = roi_mod.box_problem(labels, boxes)
            if problem is None:
                info["roi_boxes"] = [[[s.start, s.stop] for s in b] for b in boxes]
                return maps, (labels, fused)
            info["roi_fallback"] = problem
            if attempt == 1 or problem != roi_mod.REACHED_FACE:
                return None
            regrown = roi_mod.boxes_around(labels, roi_mod.margin_voxels(spacing))
            if regrown is None or roi_mod.too_large(regrown, labels.shape):
                return None
            boxes = regrown
            info["roi_regrown"] = True
            del info["roi_fallback"]
        return None

    def _segment(
        self,
        nets: tuple[torch.nn.Module, torch.nn.Module],
        views: tuple[torch.Tensor, torch.Tensor],
        spacing: tuple[float, float, float],
        boxes: list[Box] | None,
        info: dict[str, Any],
        flips: tuple[int, ...] = (),
    ) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
        """One pair's probability maps (in ``boxes`` when given and they hold the result,
        else over the whole volume) and their (labels, fused) when already computed."""
        if boxes is not None:
            found = self._in_boxes(nets, views, spacing, boxes, info, flips)
            if found is not None:
                return found
        pairs = zip(nets, views, strict=True)
        maps = [self._run(net, view, flips).numpy() for net, view in pairs]
        return maps, None

    def _pairs(self) -> dict[str | None, tuple[torch.nn.Module, torch.nn.Module]]:
        """The pairs of networks to run: every contrast family, or the one asked for."""
        pairs = self.model.pairs
        wanted = self.settings.family
        if wanted == "auto":
            return pairs
        if wanted not in pairs:
            named = ", ".join(str(name) for name in pairs if name is not None) or "none"
            raise LoFiError(
                f"--family {wanted}: this model has no such contrast family (it has: {named}); "
                "use --family auto"
            )
        return {wanted: pairs[wanted]}

    def _back_to_input(
        self, maps: list[np.ndarray], box: Box, fine_shape: tuple[int, ...]
    ) -> tuple[list[np.ndarray], Box]:
        """Probability maps resampled onto the input's grid in the window that can hold a
        label (``regrid``), and that window's box in the full volume."""
        floor = min(regrid.PROB_FLOOR, self.settings.threshold)
        support = regrid.support_box(maps, floor)
        limit = tuple(b.stop - b.start for b in box)
        window = regrid.window_for(support, maps[0].shape[-3:], fine_shape, limit)
        maps = [regrid.resize_window(torch.from_numpy(m), fine_shape, window).numpy() for m in maps]
        box = tuple(
            slice(b.start + w.start, b.start + w.stop) for b, w in zip(box, window, strict=True)
        )
        return maps, box  # type: ignore[return-value]

    def _labels(self, p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return fuse_to_labels(p1, p2, self.fusion, self.settings.threshold, self.overlap_rule)

    def predict_volume(self, volume: Volume) -> Prediction:
        """Segment one canonical volume (with each contrast family's pair of networks, keeping
        the one whose two views agree best, when the model has several).

        Example:
            >>> pred = predictor.predict_volume(load_image("scan.nii.gz"))  # doctest: +SKIP
            >>> pred.labels.dtype, pred.labels.shape == vol.data.shape  # doctest: +SKIP
        """
        prepared: dict[float | None, PreparedVolume] = {}  # one per working grid
        runs = {}
        for family, nets in self.pairs.items():
            grid_mm = self.settings.grid_mm(self.model.grid_of(family))
            if grid_mm not in prepared:
                prepared[grid_mm] = self._prepare(volume, grid_mm)
            runs[family] = self._predict_pair(volume, nets, prepared[grid_mm])
        # ties: the first pair; a pair that finds nothing (agreement NaN) loses
        chosen = max(runs, key=lambda name: np.nan_to_num(runs[name].view_dice, nan=-1.0))
        pred = runs[chosen]
        if self.use_tta:  # the kept pair only: the choice is made on the scan as it is
            grid_mm = self.settings.grid_mm(self.model.grid_of(chosen))
            mirrored = self._predict_pair(volume, self.pairs[chosen], prepared[grid_mm], (0,))
            pred = self._average(volume, pred, mirrored)
        if chosen is not None:
            pred.info["contrast_family"] = chosen
        if len(runs) > 1:
            pred.info["family_view_agreement"] = {
                str(k): None if np.isnan(r.view_dice) else round(r.view_dice, 4)
                for k, r in runs.items()
            }
            # the stages above are the kept pair's (a stage shared by pairs on one grid is
            # counted for the first of them); the total is every pair's, each given too
            for name, run in runs.items():
                pred.timings[f"pair_{name}_s"] = run.timings["total_s"]
            every_pair = sum(r.timings["total_s"] for r in runs.values())
            pred.timings["total_s"] = every_pair + pred.timings.get("tta_s", 0.0)
        self._postprocess(volume, pred)
        return pred

    def _average(self, volume: Volume, pred: Prediction, mirrored: Prediction) -> Prediction:
        """``pred`` with its views' probabilities averaged with those of the mirrored pass
        (``mirrored``, already flipped back), relabelled. Each pass's maps lie in its own box;
        outside it their probabilities are 0 (``regrid``), so both go into the boxes' union."""
        box = tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop))
            for a, b in zip(pred.box, mirrored.box, strict=True)
        )

        def mean(name: str) -> np.ndarray:
            out = np.zeros((2, *(b.stop - b.start for b in box)), dtype=np.float32)
            for run in (pred, mirrored):
                out[(slice(None), *within(run.box, box))] += 0.5 * getattr(run, name)
            return out

        prob1, prob2 = mean("prob1"), mean("prob2")
        labels_crop, fused = self._labels(prob1, prob2)
        labels = np.zeros(volume.data.shape, dtype=np.uint8)
        labels[box] = labels_crop
        if "roi_fallback" in mirrored.info:  # the mirror ran on the whole volume: say why
            pred.info["tta_roi_fallback"] = mirrored.info["roi_fallback"]
        timings = dict(pred.timings)
        timings["tta_s"] = mirrored.timings["total_s"]
        timings["total_s"] += timings["tta_s"]
        return replace(
            pred,
            labels=labels,
            prob1=prob1,
            prob2=prob2,
            fused=fused.astype(np.float32),
            box=box,
            view_dice=view_agreement_dice(prob1, prob2, self.settings.threshold),
            timings=timings,
        )

    def _postprocess(self, volume: Volume, pred: Prediction) -> None:
        """The kept pair's outlines, in place: the refiner (which may widen ``pred.box``),
        edge refinement, the largest component per side."""
        t = time.perf_counter()
        threshold, info = self.settings.threshold, pred.info
        if not self.use_refiner:
            labels_crop = pred.labels[pred.box]
        else:
            fused, box, info["refiner_change"] = refine_window(
                self.model.refiner, volume.data, pred.fused, pred.box, volume.spacing,
                threshold, self.device,
            )  # fmt: skip
            if box != pred.box:  # the views' maps widened with zeros to the new window
                for name in ("prob1", "prob2"):
                    wide = np.zeros_like(fused)
                    wide[(slice(None), *within(pred.box, box))] = getattr(pred, name)
                    setattr(pred, name, wide)
            pred.fused, pred.box = fused, box
            labels_crop = resolve_overlap(fused > threshold, fused, self.overlap_rule)
        if self.edge_weight > 0:
            labels_crop, info["edge_refinement"] = refine_labels(
                volume.data, pred.fused, labels_crop, threshold,
                self.edge_weight, self.overlap_rule, window=pred.box,
            )  # fmt: skip
        if self.lcc:
            labels_crop = keep_largest_per_side(labels_crop)
        pred.labels = np.zeros(volume.data.shape, dtype=np.uint8)
        pred.labels[pred.box] = labels_crop
        pred.timings["postprocess_s"] = time.perf_counter() - t
        pred.timings["total_s"] += pred.timings["postprocess_s"]

    def _prepare(self, volume: Volume, grid_mm: float | None) -> PreparedVolume:
        """Crop, normalise and resample ``volume`` to the working grid ``grid_mm`` (None: its
        own grid), and make the second view."""
        start = time.perf_counter()
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
            seconds=time.perf_counter() - start,
        )

    def _predict_pair(
        self,
        volume: Volume,
        nets: tuple[torch.nn.Module, torch.nn.Module],
        prepared: PreparedVolume,
        flips: tuple[int, ...] = (),
    ) -> Prediction:
        """Segment one canonical volume with one pair of networks on a prepared working grid
        (its preparation's seconds are counted by the first pair that uses it); the labels
        are the thresholded fused probabilities, before ``_postprocess``. ``flips``: the
        networks see the volume flipped along these axes (``_run``)."""
        start = time.perf_counter()
        timings: dict[str, float] = {"preprocess_s": 0.0}
        if prepared.seconds:
            timings["preprocess_s"], prepared.seconds = prepared.seconds, 0.0
        info: dict[str, Any] = {**self.describe(), **prepared.info}
        views, spacing, box = prepared.views, prepared.spacing, prepared.box
        t = time.perf_counter()
        boxes = None
        if self.use_roi:
            boxes = self._locate(nets, prepared, info)
            timings["locate_s"] = time.perf_counter() - t
        maps, labelled = self._segment(nets, views, spacing, boxes, info, flips)
        timings["inference_s"] = time.perf_counter() - t
        if prepared.regridded:  # probabilities back onto the input's grid, labelled there
            t = time.perf_counter()
            maps, box = self._back_to_input(maps, box, prepared.fine_shape)
            timings["regrid_s"] = time.perf_counter() - t
            labelled = None
        labels_crop, fused = labelled or self._labels(*maps)
        labels = np.zeros(volume.data.shape, dtype=np.uint8)
        labels[box] = labels_crop
        timings["total_s"] = time.perf_counter() - start + timings["preprocess_s"]
        dice = view_agreement_dice(maps[0], maps[1], self.settings.threshold)
        return Prediction(
            labels=labels,
            prob1=maps[0],
            prob2=maps[1],
            fused=fused.astype(np.float32),
            box=box,
            view_dice=dice,
            timings=timings,
            info=info,
        )
