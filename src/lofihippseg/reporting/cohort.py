"""A cohort's results, read back from a finished output folder, and its outlier flags.

Reads only what ``predict`` (or the BIDS App) wrote: the JSON sidecars (volumes, view
agreement, per-case ``status`` when predict set one, model, settings, tool version, QC picture),
the failure records ``logs/*_failed.json`` and, for older runs, the ``failed`` rows of
``volumes.csv``. No model runs, so a report can be rebuilt at any time.

Outlier rule (:func:`flag_outliers`): a case is flagged for review when its left volume, right
volume or asymmetry index has a robust z-score ``|x - median| / (1.4826 * MAD)`` above
``Z_LIMIT`` (computed when at least ``MIN_CASES_FOR_Z`` cases have the value), when the Dice
agreement of the two views is below ``MIN_VIEW_DICE``, or when predict's own ``status`` is not
``ok``. Robust z only finds cases unlike the rest of the cohort, so values that cannot be right
whatever the cohort are flagged too (absolute rule): an asymmetry index beyond
``±MAX_ABS_ASYMMETRY``, or a side's volume outside the plausible range of
``reporting.status.StatusRules`` (0.5-8.0 mL). A side that predict sent to review (its
sidecar's ``quality`` block: predicted Dice below the estimator's threshold, or a per-side rule)
flags its case too, and such cases come first.

A sidecar that does not read back (truncated, not JSON) makes its case ``failed``, so the
report never shows fewer failures than there are.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lofihippseg.reporting.status import EMPTY, IMPLAUSIBLE_VOLUME, StatusRules
from lofihippseg.reporting.volumes import read_rows

log = logging.getLogger(__name__)

Z_LIMIT = 3.0
MAX_ABS_ASYMMETRY = 0.2  # |AI| beyond this is not a plausible hippocampal asymmetry
PLAUSIBLE_ML = (StatusRules().min_side_ml, StatusRules().max_side_ml)
MIN_VIEW_DICE = 0.5
MIN_CASES_FOR_Z = 5
METRICS = ("left_ml", "right_ml", "asymmetry_index", "view_dice")
Z_METRICS = {"left_ml": "left volume", "right_ml": "right volume", "asymmetry_index": "asymmetry"}
_SUB = re.compile(r"(?:^|_)sub-([0-9a-zA-Z+]+)")
_SES = re.compile(r"_ses-([0-9a-zA-Z+]+)")
_SIDECAR = re.compile(r"(_hipp|_hipp_prediction|_desc-hippocampus_dseg)$")


@dataclass
class CohortCase:
    """One case of the report."""

    case: str
    status: str = "ok"  # predict's status (ok, empty, ...) or failed
    values: dict[str, float] = field(default_factory=dict)
    qc: Path | None = None
    error: str = ""
    subject: str = ""
    session: str = ""
    flags: list[str] = field(default_factory=list)
    z: dict[str, float] = field(default_factory=dict)
    status_reason: str = ""
    # per side: {"predicted_dice": float | None, "review": bool, "reasons": [...]} (sidecar)
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def review_sides(self) -> list[str]:
        """The sides predict sent to review."""
        return [s for s in ("left", "right") if (self.quality.get(s) or {}).get("review")]

    def predicted_dice(self, side: str) -> float | None:
        """The side's predicted Dice (None: no estimator, or not recorded)."""
        return _number((self.quality.get(side) or {}).get("predicted_dice"))

    @property
    def failed(self) -> bool:
        """The case could not be segmented."""
        return self.status == "failed"

    @property
    def flagged(self) -> bool:
        """Segmented, but worth a look."""
        return not self.failed and bool(self.flags)


@dataclass
class Cohort:
    """Everything the report shows."""

    root: Path
    cases: list[CohortCase]
    versions: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)
    settings: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    # the quality estimators used (file name or "no estimator: why"), and what each recorded
    estimators: Counter = field(default_factory=Counter)
    review_below: dict[str, float] = field(default_factory=dict)
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failures(self) -> list[CohortCase]:
        """Cases that failed."""
        return [c for c in self.cases if c.failed]

    @property
    def done(self) -> list[CohortCase]:
        """Cases that were segmented."""
        return [c for c in self.cases if not c.failed]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _find_output(root: Path, sidecar: Path, stored: str | None) -> Path | None:
    """An output named in a sidecar, found even when the folder was moved or run elsewhere."""
    if not stored:
        return None
    path = Path(stored)
    folders = [sidecar.parent, *[p for p in sidecar.parent.parents if root in (p, *p.parents)]]
    for folder in folders:  # inside the output folder first (it may have been moved)
        for k in range(1, len(path.parts) + 1):
            candidate = folder.joinpath(*path.parts[-k:])
            if candidate.is_file():
                return candidate
    return path if path.is_absolute() and path.is_file() else None


def _entities(case: str) -> tuple[str, str]:
    sub, ses = _SUB.search(case), _SES.search(case)
    return (sub.group(1) if sub else "", ses.group(1) if ses else "")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _looks_like_sidecar(path: Path) -> bool:
    """A JSON file named as predict's sidecars are, or beside a label map of the same name."""
    stem = path.name[: -len(".json")]
    if _SIDECAR.search(stem):
        return True
    return any(path.with_name(stem + suffix).is_file() for suffix in (".nii.gz", ".nii", ".mgz"))


def _sidecar_case(path: Path) -> str:
    """The case name of a sidecar that cannot be read (``CASE_hipp.json`` -> ``CASE``)."""
    stem = path.name[: -len(".json")]
    return stem[: -len("_hipp")] if stem.endswith("_hipp") else stem


# what predict found on each scan (keys of a sidecar's ``effective``), not chosen for the cohort
PER_CASE_PREFIXES = ("roi_",)
PER_CASE_KEYS = frozenset(
    {
        "grid_spacing_mm",
        "edge_refinement",
        "refiner_change",
        "family_view_agreement",
        "contrast_family",
        "tta_roi_fallback",
        "pooled_voxels",
        "crop",
        "field_of_view_lr_mm",
        "mirror_dice",
    }
)


def _settings_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The settings a case was run with: its sidecar's ``effective`` less what predict found
    on the scan (``PER_CASE_KEYS``, ``PER_CASE_PREFIXES``), plus the sliding window and
    precision asked for.

    Example:
        >>> a = {"effective": {"crop_family": "t1", "crop": False, "roi_boxes": [[0, 9]]}}
        >>> b = {"effective": {"crop_family": "t1", "crop": True, "roi_boxes": [[2, 7]]}}
        >>> _settings_summary(a) == _settings_summary(b) == {"crop_family": "t1"}
        True
    """
    effective = {
        k: v
        for k, v in (data.get("effective") or {}).items()
        if k not in PER_CASE_KEYS and not k.startswith(PER_CASE_PREFIXES)
    }
    settings = data.get("settings") or {}
    for key in ("sliding_window", "amp"):
        if key in settings:
            effective.setdefault(key, settings[key])
    return effective


def collect_cohort(root: str | Path) -> Cohort:
    """Read a finished output folder (``predict -o`` or a BIDS derivatives folder).

    Example:
        >>> cohort = collect_cohort("out/")  # doctest: +SKIP
        >>> len(cohort.cases), len(cohort.failures)  # doctest: +SKIP
    """
    root = Path(root)
    cases: dict[str, CohortCase] = {}
    cohort = Cohort(root, [])
    settings: Counter = Counter()
    for path in sorted(root.rglob("*.json")):
        if "logs" in path.relative_to(root).parts[:1] or path.name == "dataset_description.json":
            continue
        data = _read_json(path)
        if data is None and _looks_like_sidecar(path):  # ours, but truncated or corrupt
            case = _sidecar_case(path)
            error = f"{path}: unreadable sidecar (truncated or not JSON); rerun predict to redo it"
            cases[case] = CohortCase(case, "failed", error=error, **_subject(case))
            continue
        if (
            not data
            or data.get("tool") != "lofihippseg"
            or not isinstance(data.get("volumes"), dict)
        ):
            continue
        volumes = data["volumes"]
        case = str(volumes.get("case") or path.stem)
        status = str(data.get("status") or volumes.get("status") or "ok")
        values = {m: v for m in METRICS if (v := _number(volumes.get(m))) is not None}
        qc = _find_output(root, path, (data.get("outputs") or {}).get("qc"))
        cases[case] = CohortCase(case, status, values, qc, **_subject(case))
        cases[case].status_reason = str(data.get("status_reason") or "")
        quality = data.get("quality")
        if isinstance(quality, dict):
            cases[case].quality = {
                s: q for s in ("left", "right") if isinstance(q := quality.get(s), dict)
            }
            note = str(quality.get("estimator") or "")
            cohort.estimators[note] += 1
            if (below := _number(quality.get("review_below"))) is not None:
                cohort.review_below[note] = below
            if isinstance(quality.get("validation"), dict):
                cohort.validation[note] = quality["validation"]
        cohort.versions[str(data.get("version", "?"))] += 1
        model = data.get("model") or {}
        recipe = (model.get("spec") or {}).get("recipe", "?")
        cohort.models[(str(model.get("source", "?")), str(recipe))] += 1
        settings[json.dumps(_settings_summary(data), sort_keys=True)] += 1
    for path in sorted((root / "logs").glob("*_failed.json")):
        data = _read_json(path) or {}
        case = str(data.get("case") or path.name[: -len("_failed.json")])
        if case not in cases:
            error = str(data.get("error") or "no message recorded").splitlines()[0]
            cases[case] = CohortCase(case, "failed", error=error, **_subject(case))
    for row in read_rows(root / "volumes.csv"):
        case = row.get("case", "")
        if row.get("status") == "failed" and case and case not in cases:
            cases[case] = CohortCase(case, "failed", error="no message recorded", **_subject(case))
    cohort.cases = [cases[k] for k in sorted(cases)]
    cohort.settings = [(json.loads(k), n) for k, n in settings.most_common()]
    flag_outliers(cohort.cases)
    return cohort


def _subject(case: str) -> dict[str, str]:
    sub, ses = _entities(case)
    return {"subject": sub, "session": ses}


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 * MAD)``; the scale falls back to 1.2533 * mean absolute
    deviation when the MAD is 0, and z is 0 everywhere when both are 0.

    Example:
        >>> robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0])).round(1).tolist()
        [-1.3, -0.7, 0.0, 0.7, 65.4]
    """
    values = np.asarray(values, dtype=float)
    median = np.median(values)
    deviation = np.abs(values - median)
    scale = 1.4826 * np.median(deviation)
    if scale == 0:
        scale = 1.2533 * deviation.mean()
    if scale == 0:
        return np.zeros_like(values)
    return (values - median) / scale


def absolute_flags(case: CohortCase) -> list[str]:
    """What cannot be right whatever the cohort: |asymmetry index| above
    ``MAX_ABS_ASYMMETRY``, a side's volume outside ``PLAUSIBLE_ML`` (unless predict's status
    already says so).

    Example:
        >>> absolute_flags(CohortCase("c", values={"left_ml": 4.0, "asymmetry_index": 0.44}))
        ['|asymmetry index| 0.44 > 0.2']
    """
    flags = []
    ai = case.values.get("asymmetry_index")
    if ai is not None and abs(ai) > MAX_ABS_ASYMMETRY:
        flags.append(f"|asymmetry index| {abs(ai):.2f} > {MAX_ABS_ASYMMETRY:g}")
    if case.status in (EMPTY, IMPLAUSIBLE_VOLUME):  # predict's status already says it
        return flags
    low, high = PLAUSIBLE_ML
    for key, side in (("left_ml", "left"), ("right_ml", "right")):
        volume = case.values.get(key)
        if volume is not None and not low <= volume <= high:
            flags.append(f"{side} volume {volume:.2f} mL outside {low:g}-{high:g} mL")
    return flags


def flag_outliers(
    cases: list[CohortCase], z_limit: float = Z_LIMIT, min_view_dice: float = MIN_VIEW_DICE
) -> list[CohortCase]:
    """Set each segmented case's ``flags`` (reasons to look at it); returns the flagged cases.

    Example:
        >>> cases = [CohortCase(f"c{i}", values={"left_ml": 3.0 + 0.1 * i}) for i in range(6)]
        >>> cases.append(CohortCase("big", values={"left_ml": 9.0}))
        >>> [c.case for c in flag_outliers(cases)]
        ['big']
    """
    done = [c for c in cases if not c.failed]
    for case in done:
        case.flags, case.z = [], {}
        if case.status not in ("ok", ""):
            reason = f" ({case.status_reason})" if case.status_reason else ""
            case.flags.append(f"predict status {case.status}{reason}")
        dice = case.values.get("view_dice")
        said = "agreement" in case.status_reason.lower()  # predict already gave this reason
        if dice is not None and dice < min_view_dice and not said:
            case.flags.append(f"view agreement {dice:.2f} < {min_view_dice:g}")
        case.flags.extend(absolute_flags(case))
        for side in case.review_sides:
            reasons = ", ".join(case.quality[side].get("reasons") or [])
            case.flags.append(
                f"{side} side to review ({reasons})" if reasons else f"{side} side to review"
            )
    for metric, label in Z_METRICS.items():
        have = [c for c in done if metric in c.values]
        if len(have) < MIN_CASES_FOR_Z:
            continue
        z = robust_z(np.array([c.values[metric] for c in have]))
        for case, score in zip(have, z, strict=True):
            case.z[metric] = float(score)
            if abs(score) > z_limit:
                case.flags.append(f"{label} robust z {score:+.1f}")
    return [c for c in done if c.flags]
