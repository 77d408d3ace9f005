"""Score label maps against ground truth with the LISA challenge metrics, paired by case id.

Per label: Dice, HD (max), HD95, ASSD (mm, as DeepMind's ``surface-distance`` computes them),
RVE = |Vpred - Vgt| / Vgt, precision, recall and both volumes in mL.

Empty-mask policy:

- prediction and ground truth both empty for a label: perfect (Dice 1, HD/HD95/ASSD 0, RVE 0,
  precision and recall 1); status ``both_empty``.
- exactly one of them empty: the challenge's missing-case values (Dice 0, HD and HD95 256 mm,
  ASSD 1000 mm, RVE 1, precision and recall 0); status ``pred_empty`` or ``gt_empty``.
- a ground-truth case with no prediction file: the same missing-case values for every label;
  status ``missing``; listed in :attr:`EvaluationResult.missing`.

So every per-case value is finite and no NaN ever reaches a mean.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lofihippseg.config import save_json
from lofihippseg.errors import InputError, LoFiError
from lofihippseg.io.atomic import write_text_atomic
from lofihippseg.io.datasets import case_id_from_name, match_key
from lofihippseg.io.geometry import grid_difference
from lofihippseg.io.nifti import (
    Volume,
    dicom_folder_hint,
    is_image_file,
    load_label,
    strip_suffix,
)
from lofihippseg.io.paths import (
    absent_problem,
    ensure_writable_dir,
    is_absent_file,
    is_file_or_absent,
)
from lofihippseg.metrics.overlap import overlap_metrics
from lofihippseg.metrics.surface import surface_metrics

log = logging.getLogger(__name__)

# label values every label map may hold (0 background, 1 left, 2 right); others are refused
# unless asked for with ``labels`` (a 0/255 mask or a stray label 3 is an error, not a score)
KNOWN_LABELS = (1, 2)
MISSING_VALUES = {
    "dice": 0.0,
    "hd": 256.0,
    "hd95": 256.0,
    "assd": 1000.0,
    "rve": 1.0,
    "precision": 0.0,
    "recall": 0.0,
}
PERFECT_VALUES = {
    "dice": 1.0,
    "hd": 0.0,
    "hd95": 0.0,
    "assd": 0.0,
    "rve": 0.0,
    "precision": 1.0,
    "recall": 1.0,
}
METRICS = (
    "dice",
    "hd",
    "hd95",
    "assd",
    "rve",
    "precision",
    "recall",
    "volume_pred_ml",
    "volume_gt_ml",
)
_TITLES = {
    "dice": "Dice",
    "hd": "HD (mm)",
    "hd95": "HD95 (mm)",
    "assd": "ASSD (mm)",
    "rve": "RVE",
    "precision": "Precision",
    "recall": "Recall",
    "volume_pred_ml": "Vol pred (mL)",
    "volume_gt_ml": "Vol GT (mL)",
}


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    slices = []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0))
    return tuple(slices)


def compute_case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: tuple[float, float, float],
    labels: tuple[int, ...] = (1, 2),
    voxel_volume_ml: float | None = None,
) -> dict[int, dict[str, float | str]]:
    """All metrics of one case, per label, with the empty-mask policy of this module.

    Args:
        pred: predicted label map (integer array).
        gt: ground-truth label map on the same grid.
        spacing: voxel size in mm along the array axes.
        labels: label values to score.
        voxel_volume_ml: volume of one voxel; default the product of ``spacing`` (give
            ``Volume.voxel_volume_ml`` for sheared grids, where that product is too large).

    Returns:
        ``{label: {"dice", "hd", "hd95", "assd", "rve", "precision", "recall",
        "volume_pred_ml", "volume_gt_ml", "status"}}``; every number finite.

    Example:
        >>> gt = np.zeros((20, 20, 20), np.uint8); gt[5:10, 5:10, 5:10] = 1
        >>> compute_case_metrics(gt, gt, (1.0, 1.0, 1.0), labels=(1,))[1]["dice"]
        1.0
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    spacing = tuple(float(s) for s in spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0 if voxel_volume_ml is None else voxel_volume_ml
    box = _bbox((pred != 0) | (gt != 0))  # everything below works on the small crop
    pred, gt = pred[box], gt[box]
    out: dict[int, dict[str, float | str]] = {}
    for label in labels:
        g, p = gt == label, pred == label
        row: dict[str, float | str] = dict(overlap_metrics(g, p, voxel_ml))
        has_g, has_p = bool(g.any()), bool(p.any())
        if has_g and has_p:
            row.update(surface_metrics(g, p, spacing))
            row["status"] = "ok"
        elif not has_g and not has_p:
            row.update(PERFECT_VALUES)
            row["status"] = "both_empty"
        else:
            row.update(MISSING_VALUES)
            row["status"] = "pred_empty" if has_g else "gt_empty"
        out[int(label)] = row
    return out


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, float)
    if arr.size == 0:
        return {"mean": 0.0, "std": 0.0, "median": 0.0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,  # as pandas (the organisers)
        "median": float(np.median(arr)),
    }


@dataclass
class EvaluationResult:
    """Scores of a set of cases.

    Attributes:
        per_case: one row per (case, label): ``case_id``, ``label``, the metrics, ``status``,
            ``prediction`` and ``ground_truth`` file names.
        summary: ``per_label[label][metric]`` and ``label_average[metric]`` (per-case mean over
            labels, like the challenge's *_Avg columns), each ``{"mean", "std", "median"}``
            (std with ddof=1, 0 for one case); plus ``n_cases``, ``missing``, ``unmatched``.
        missing: ground-truth case ids with no prediction (scored with the missing values).
        unmatched: prediction files with no ground truth (not scored).
    """

    per_case: list[dict]
    summary: dict
    labels: tuple[int, ...]
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A readable text table: mean ± std [median] per metric and label.

        Example:
            >>> print(result.table())  # doctest: +SKIP
        """
        cols = [f"label {lab}" for lab in self.labels] + (
            ["average"] if len(self.labels) > 1 else []
        )
        stats = [self.summary["per_label"][str(lab)] for lab in self.labels]
        if len(self.labels) > 1:
            stats.append(self.summary["label_average"])
        width = 28
        lines = [
            f"{self.summary['n_cases']} case(s) evaluated, {len(self.missing)} missing"
            + (f": {', '.join(self.missing)}" if self.missing else ""),
            f"{'metric':<14}" + "".join(f"{c:>{width}}" for c in cols),
        ]
        for metric in METRICS:
            cells = []
            for s in stats:
                m = s[metric]
                cells.append(f"{m['mean']:.3f} ± {m['std']:.3f} [{m['median']:.3f}]")
            lines.append(f"{_TITLES[metric]:<14}" + "".join(f"{c:>{width}}" for c in cells))
        return "\n".join(lines)

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``metrics_per_case.csv`` and ``metrics_summary.json`` atomically."""
        out_dir = ensure_writable_dir(out_dir)
        buffer = io.StringIO()
        fields = ["case_id", "label", *METRICS, "status", "prediction", "ground_truth"]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.per_case)
        csv_path = out_dir / "metrics_per_case.csv"
        write_text_atomic(csv_path, buffer.getvalue())
        return csv_path, save_json(self.summary, out_dir / "metrics_summary.json")


def _summarise(
    rows: list[dict],
    labels: tuple[int, ...],
    n_cases: int,
    missing: list[str],
    unmatched: list[str],
) -> dict:
    per_label = {
        str(lab): {m: _stats([r[m] for r in rows if r["label"] == lab]) for m in METRICS}
        for lab in labels
    }
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    average = {
        m: _stats([float(np.mean([r[m] for r in rs])) for rs in by_case.values()]) for m in METRICS
    }
    return {
        "n_cases": n_cases,
        "labels": list(labels),
        "missing": missing,
        "unmatched": unmatched,
        "per_label": per_label,
        "label_average": average,
    }


def _beside_scans_dropped(files: list[Path]) -> list[Path]:
    """Drop LISA scans (``*_ciso``) that sit beside a label map of the same case.

    A folder of predictions named after their inputs (``LISA_0001_ciso.nii.gz``, as another
    tool may write them) keeps them: they are the label maps.
    """
    scans = [p for p in files if strip_suffix(p).lower().endswith("_ciso")]
    others = {match_key(p) for p in files if p not in scans}
    return [p for p in files if p not in scans or match_key(p) not in others]


def _label_files(path: Path, role: str) -> list[Path]:
    if is_absent_file(path):
        raise InputError(path, absent_problem(path))
    if not path.exists():
        raise LoFiError(f"{path}: {role} not found")
    if path.is_file():
        return [path]
    files = _beside_scans_dropped(
        sorted(
            p
            for p in path.iterdir()
            if is_file_or_absent(p)  # an absent (unfetched) file is named when read, not dropped
            and is_image_file(p)
            and not p.name.startswith(".")
        )
    )
    if not files and (path / "labelsTr").is_dir():
        return _label_files(path / "labelsTr", role)
    if not files:
        hint = dicom_folder_hint(path)
        raise LoFiError(f"{path}: " + (hint or f"no .nii/.nii.gz/.mgz {role} files in this folder"))
    return files


def _pair(preds: list[Path], gts: list[Path]) -> tuple[dict[Path, Path | None], list[str]]:
    """Map each ground-truth file to its prediction (or None), by case id."""
    if len(preds) == 1 and len(gts) == 1:
        return {gts[0]: preds[0]}, []
    by_stem = {strip_suffix(p): p for p in preds}
    by_key: dict[str, list[Path]] = {}
    for p in preds:
        by_key.setdefault(match_key(p), []).append(p)
    pairs: dict[Path, Path | None] = {}
    used: set[Path] = set()
    for g in gts:
        hit = by_stem.get(strip_suffix(g))
        if hit is None:
            candidates = by_key.get(match_key(g), [])
            if len(candidates) > 1:
                raise LoFiError(
                    f"{g}: several predictions match this case: "
                    f"{', '.join(c.name for c in candidates)}"
                )
            hit = candidates[0] if candidates else None
        if hit is not None and hit in used:
            raise LoFiError(f"{hit}: this prediction matches two ground-truth files")
        if hit is not None:
            used.add(hit)
        pairs[g] = hit
    return pairs, [p.name for p in preds if p not in used]


def _check_grid(pred: Volume, gt: Volume) -> None:
    """Refuse a prediction on another grid, saying what differs (shape, voxels, origin ...)."""
    if pred.data.shape == gt.data.shape and np.allclose(pred.affine, gt.affine, atol=1e-3):
        return
    what = grid_difference(pred.affine, pred.data.shape, gt.affine, gt.data.shape)
    if what is None:
        worst = float(np.abs(np.asarray(pred.affine) - np.asarray(gt.affine)).max())
        what = f"affines differ by up to {worst:.3g}"
    raise InputError(
        pred.path or "prediction",
        f"grid does not match the ground truth {gt.path} ({what}, prediction vs ground truth); "
        "predict on the ground truth's image grid",
    )


def evaluate(
    pred: str | Path,
    gt: str | Path,
    out_dir: str | Path | None = None,
    labels: tuple[int, ...] = (1, 2),
) -> EvaluationResult:
    """Score predictions against ground truth, pairing files by case id (never by order).

    Names are normalised to case ids, so ``LISA_HF_0001_hipp_prediction.nii.gz``,
    ``LISA_0001.nii.gz`` and ``LISA_0001_hipp.nii.gz`` all pair with ``LISA_0001_hipp.nii.gz``.
    Two single files are paired directly. Spacing comes from the ground truth's header.

    Args:
        pred: a prediction file or a folder of them.
        gt: a ground-truth file, a folder of them, or a dataset folder with ``labelsTr``.
        out_dir: if given, write ``metrics_per_case.csv`` and ``metrics_summary.json`` there.
        labels: label values to score.

    Returns:
        The per-case rows, summary, missing cases and unmatched predictions.

    Raises:
        InputError: unreadable file or prediction/ground-truth grid mismatch (names the file).
        LoFiError: missing folders or ambiguous pairing.

    Example:
        >>> result = evaluate("predictions/", "labelsTr/", out_dir="scores")  # doctest: +SKIP
        >>> print(result.table())  # doctest: +SKIP
    """
    labels = tuple(int(lab) for lab in labels)
    if out_dir is not None:
        ensure_writable_dir(out_dir)  # fail before the work, not after it
    pairs, unmatched = _pair(
        _label_files(Path(pred), "prediction"), _label_files(Path(gt), "ground truth")
    )
    if unmatched:
        log.warning(
            "%d prediction(s) have no ground truth and are not scored: %s",
            len(unmatched),
            ", ".join(unmatched[:5]),
        )
    rows, missing = [], []
    allowed = {0, *KNOWN_LABELS, *labels}
    for gt_path, pred_path in sorted(pairs.items(), key=lambda kv: strip_suffix(kv[0])):
        gt_vol = load_label(gt_path, allowed=allowed)
        case_id = strip_suffix(gt_path) if len(pairs) == 1 else case_id_from_name(gt_path)
        if pred_path is None:
            missing.append(case_id)
            n_gt = {lab: int(np.count_nonzero(gt_vol.data == lab)) for lab in labels}
            per_label = {
                lab: {
                    **MISSING_VALUES,
                    "volume_pred_ml": 0.0,
                    "volume_gt_ml": n_gt[lab] * gt_vol.voxel_volume_ml,
                    "status": "missing",
                }
                for lab in labels
            }
        else:
            pred_vol = load_label(pred_path, allowed=allowed)
            _check_grid(pred_vol, gt_vol)
            per_label = compute_case_metrics(
                pred_vol.data, gt_vol.data, gt_vol.spacing, labels, gt_vol.voxel_volume_ml
            )
        for lab, values in per_label.items():
            rows.append(
                {
                    "case_id": case_id,
                    "label": lab,
                    **values,
                    "prediction": pred_path.name if pred_path else "",
                    "ground_truth": gt_path.name,
                }
            )
    if missing:
        log.warning("%d case(s) have no prediction: %s", len(missing), ", ".join(missing))
    summary = _summarise(rows, labels, len(pairs), missing, unmatched)
    result = EvaluationResult(rows, summary, labels, missing, unmatched)
    if out_dir is not None:
        result.save(out_dir)
    return result
