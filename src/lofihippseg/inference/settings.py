"""Prediction settings (re-exported by :mod:`lofihippseg.inference.api`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lofihippseg.errors import LoFiError

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_EDGE_WEIGHT = 1.0  # chosen on validation scans (CHANGELOG.md, the "v9 + edge" levers);
# models with an outline refiner default to 0 (chosen on validation: CHANGELOG.md, v10's levers)
ROI_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class PredictSettings:
    """How ``predict`` runs and what it writes.

    Attributes:
        fusion: ``mean`` or ``union``; None = the recipe's (released: union, paper: mean).
        threshold: a channel is on where the fused probability is above this.
        edge_weight: how much the scan's own intensities move each side's outline
            (``inference.edge_refine``; 0 = the networks' outline as it is); None = the
            recipe's (released: 0, paper: ``DEFAULT_EDGE_WEIGHT``, but 0 when the outline
            refiner runs: it reads the same evidence itself).
        refine: run the model's outline refiner (``inference.refiner``) on each side's
            probabilities; None = when the model has one, except for the released recipe.
        lcc: keep the largest connected component per side; None = the recipe's
            (released: off, paper: on).
        tta: also run the pair of networks on the left-right mirror image and average
            (channels swapped back; with ``family="agreement"`` the pair is chosen on the scan
            as it is, then mirrored); None = the model's advice (``LoadedModel.tta``: off for
            the shipped model since v13, chosen on validation; never for the released recipe).
        sliding_window: ``auto`` (sliding windows only for volumes too large for one pass),
            ``on`` or ``off`` (whole volume padded to a multiple of 16).
        roi_size: sliding-window size (multiples of 16).
        overlap: sliding-window overlap fraction.
        roi: ``auto`` (on CPU, except for the released recipe), ``on`` or ``off``: locate
            the hippocampi with a coarse half-resolution pass, then run full resolution only
            in a box around them; falls back to the whole volume when the coarse pass finds
            nothing or the result touches the box.
        grid: ``auto`` (the model's working grid, ``ModelSpec.grid_mm``: inputs on other
            grids are resampled to it and the probabilities mapped back), ``native`` (run on
            each input's own grid) or a voxel size in mm (e.g. ``1.5``).
        family: ``auto`` (the model's ``family_rule``: one pair, chosen by the scan's field of
            view, ``inference.plan``; a model without one behaves as ``agreement``),
            ``agreement`` (every pair runs, the one whose two views agree best is kept: v12's
            rule) or a family's name (e.g. ``t1``, ``t2``: only that pair runs).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        threads: CPU threads for torch (None = torch's default).
        amp: mixed precision: float16 autocast on CUDA, bfloat16 networks on a CPU that
            computes it natively (``models.precision``); off: float32 everywhere.
        save_probabilities: write the fused left/right probability maps.
        save_uncertainty: write the view-disagreement map.
        qc: write a QC PNG per case.
        lisa_names: name outputs ``LISA_HF_XXXX_hipp_prediction.nii.gz``.
        overwrite: recompute cases whose outputs exist.
        shard: ``(i, n)``: process only the i-th of n parts (1-based) of the sorted case list.
    """

    fusion: str | None = None
    threshold: float = 0.5
    edge_weight: float | None = None
    refine: bool | None = None
    lcc: bool | None = None
    tta: bool | None = None
    sliding_window: str = "auto"
    roi_size: tuple[int, int, int] = (128, 128, 128)
    overlap: float = 0.25
    roi: str = "auto"
    grid: str = "auto"
    family: str = "auto"
    device: str = "auto"
    threads: int | None = None
    amp: bool = True
    save_probabilities: bool = False
    save_uncertainty: bool = False
    qc: bool = True
    lisa_names: bool = False
    overwrite: bool = False
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.fusion not in (None, "mean", "union"):
            raise LoFiError(f"unknown fusion {self.fusion!r}; expected mean or union")
        if not 0.0 < self.threshold < 1.0:
            raise LoFiError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.edge_weight is not None and not 0.0 <= self.edge_weight <= 10.0:
            raise LoFiError(f"--edge-weight must be between 0 and 10, got {self.edge_weight}")
        if self.device not in DEVICES:
            raise LoFiError(f"unknown device {self.device!r}; expected one of {DEVICES}")
        if self.roi not in ROI_MODES:
            raise LoFiError(f"unknown ROI mode {self.roi!r}; expected one of {ROI_MODES}")
        if self.grid not in ("auto", "native"):
            try:
                mm = float(self.grid)
            except (TypeError, ValueError):
                mm = float("nan")
            if not 0.2 <= mm <= 5:
                raise LoFiError(
                    f"--grid must be auto, native or a voxel size in mm (0.2-5), got {self.grid!r}"
                )
        if not isinstance(self.family, str) or not self.family.strip():
            raise LoFiError(f"--family must be auto or a family's name, got {self.family!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise LoFiError(f"--threads must be 1 or more, got {self.threads}")
        if not 0.0 <= self.overlap < 1.0:
            raise LoFiError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.shard is not None:
            i, n = self.shard
            if n < 1 or not 1 <= i <= n:
                raise LoFiError(f"shard must be I/N with 1 <= I <= N, got {i}/{n}")

    def grid_mm(self, model_grid: float | None) -> float | None:
        """The working voxel size for a model whose spec says ``model_grid`` (None = native).

        Example:
            >>> PredictSettings(grid="native").grid_mm(1.5) is None
            True
            >>> PredictSettings().grid_mm(1.5), PredictSettings(grid="2").grid_mm(None)
            (1.5, 2.0)
        """
        if self.grid == "auto":
            return model_grid
        return None if self.grid == "native" else float(self.grid)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LoFiError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    return torch.device(device)
