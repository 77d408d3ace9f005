"""Hippocampal volumes, asymmetry, and the cohort CSV (``volumes.csv``).

The CSV has one row per case and is merged, never appended blindly: a rerun replaces the
case's row. Writes are atomic (temporary file, then rename) and, where the platform allows,
serialised with a lock file so that shards sharing an output folder do not lose rows.
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lofihippseg.errors import InputError
from lofihippseg.io.atomic import atomic_path

COLUMNS = (
    "case",
    "left_ml",
    "right_ml",
    "asymmetry_index",
    "view_dice",
    "status",
    "status_reason",
    "contrast_family",  # the pair of networks that segmented the case (models with several)
    # per side: the quality estimator's predicted Dice (empty: no estimator for the model) and
    # whether the side goes to review (``quality.assess``), with the reasons
    "left_predicted_dice",
    "right_predicted_dice",
    "left_review",
    "right_review",
    "review_reasons",
)


def side_volumes_ml(labels: np.ndarray, voxel_volume_ml: float) -> tuple[float, float]:
    """Left (label 1) and right (label 2) volumes in mL: voxel count x voxel volume.

    Example:
        >>> lab = np.zeros((4, 4, 4), np.uint8); lab[0, :2] = 1; lab[3, 0, 0] = 2
        >>> side_volumes_ml(lab, 0.001)
        (0.008, 0.001)
    """
    return (
        int(np.count_nonzero(labels == 1)) * voxel_volume_ml,
        int(np.count_nonzero(labels == 2)) * voxel_volume_ml,
    )


def asymmetry_index(left: float, right: float) -> float:
    """(L - R) / ((L + R) / 2); NaN when both are 0.

    Example:
        >>> asymmetry_index(3.0, 1.0)
        1.0
    """
    mean = (left + right) / 2
    return float("nan") if mean == 0 else (left - right) / mean


def volume_row(
    case: str,
    labels: np.ndarray,
    voxel_volume_ml: float,
    view_dice: float | None,
    status: str = "ok",
    status_reason: str = "",
) -> dict[str, Any]:
    """One CSV row for a segmented case.

    ``view_dice`` None or NaN (both views found nothing) and an undefined asymmetry index are
    NaN in the row: an empty cell in the CSV, ``null`` in JSON. ``status`` is the case's
    quality status (:mod:`lofihippseg.reporting.status`).

    Example:
        >>> volume_row("c1", np.ones((2, 2, 2), np.uint8), 1.0, 0.9)["left_ml"]
        8.0
    """
    left, right = side_volumes_ml(labels, voxel_volume_ml)
    dice = float("nan") if view_dice is None else float(view_dice)
    return {
        "case": case,
        "left_ml": round(left, 6),
        "right_ml": round(right, 6),
        "asymmetry_index": round(asymmetry_index(left, right), 6),
        "view_dice": round(dice, 6),
        "status": status,
        "status_reason": status_reason,
    }


def quality_columns(quality: dict[str, Any]) -> dict[str, Any]:
    """The CSV columns of a sidecar's ``quality`` block (``quality.assess.side_quality``).

    Example:
        >>> q = {"left": {"predicted_dice": 0.81, "review": False, "reasons": []},
        ...      "right": {"predicted_dice": None, "review": True, "reasons": ["not found"]}}
        >>> quality_columns(q)["right_predicted_dice"], quality_columns(q)["review_reasons"]
        (nan, 'right: not found')
    """
    out: dict[str, Any] = {}
    reasons = []
    for side in ("left", "right"):
        part = quality.get(side) or {}
        dice = part.get("predicted_dice")
        out[f"{side}_predicted_dice"] = float("nan") if dice is None else float(dice)
        out[f"{side}_review"] = bool(part.get("review"))
        if part.get("reasons"):
            reasons.append(f"{side}: " + ", ".join(part["reasons"]))
    out["review_reasons"] = "; ".join(reasons)
    return out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path.lock`` (POSIX); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: single-writer only
        yield
        return
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a volumes CSV (empty list when absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"unreadable table ({exc}); move it aside to start afresh") from None


def _fmt(value: Any) -> Any:
    return "" if isinstance(value, float) and math.isnan(value) else value


def update_volumes_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Merge rows into the CSV by case (new rows replace old ones), sorted by case, atomically.

    Example:
        >>> update_volumes_csv("out/volumes.csv", [row])  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        merged = {r["case"]: r for r in read_rows(path)}
        for row in rows:
            merged[str(row["case"])] = {k: _fmt(v) for k, v in row.items()}
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for case in sorted(merged):
                writer.writerow(merged[case])
    return path
