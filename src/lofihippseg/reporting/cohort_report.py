"""The cohort QC report: one self-contained HTML file from a finished output folder.

``write_report(out_dir)`` reads what predict wrote (``cohort.collect_cohort``)
and renders ``templates/report.html.j2`` with jinja2. Everything it shows is embedded (figures
and QC thumbnails as base64 images, styles and the small table-sorting script inline), so it
opens offline anywhere; each thumbnail links to the full-size QC picture by its path relative
to the report, which works while the report stays in its output folder.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lofihippseg import __version__
from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import atomic_path
from lofihippseg.reporting.cohort import (
    MAX_ABS_ASYMMETRY,
    METRICS,
    MIN_CASES_FOR_Z,
    MIN_VIEW_DICE,
    PLAUSIBLE_ML,
    Z_LIMIT,
    Cohort,
    CohortCase,
    collect_cohort,
)
from lofihippseg.reporting.figures import cohort_figures, data_uri, thumbnail_jpeg
from lofihippseg.reporting.status import StatusRules
from lofihippseg.reporting.volumes import read_rows

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
PAPER = "https://arxiv.org/abs/2410.17502"


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _case_view(case: CohortCase, report_dir: Path, thumbnails: bool) -> dict[str, Any]:
    thumb = thumbnail_jpeg(case.qc) if thumbnails and not case.failed else None
    link = None
    if case.qc is not None:
        link = quote(Path(os.path.relpath(case.qc, report_dir)).as_posix())
    return {
        "case": case.case,
        "subject": case.subject,
        "session": case.session,
        "status": case.status,
        "failed": case.failed,
        "flagged": case.flagged,
        "flags": case.flags,
        "error": case.error,
        "values": {k: _fmt(case.values.get(k)) for k in METRICS},
        "predicted": {s: _fmt(case.predicted_dice(s), 2) for s in ("left", "right")},
        "review": case.review_sides,
        "thumb": data_uri(thumb, "image/jpeg") if thumb else None,
        "link": link,
    }


def review_order(case: CohortCase) -> tuple[int, float, str]:
    """Sort key: sides to review first, then other flagged cases, then the rest; within each,
    the lowest predicted Dice first.

    Example:
        >>> a = CohortCase("a", flags=["x"], quality={"left": {"review": True}})
        >>> b = CohortCase("b", flags=["y"])
        >>> [c.case for c in sorted([CohortCase("c"), b, a], key=review_order)]
        ['a', 'b', 'c']
    """
    group = 0 if case.review_sides else 1 if case.flagged else 2
    dice = [d for s in ("left", "right") if (d := case.predicted_dice(s)) is not None]
    return group, min(dice) if dice else 1.0, case.case


def review_rule(cohort: Cohort) -> str:
    """The per-side review rule in words (as predict applied it)."""
    rules = StatusRules()
    parts = []
    for note, below in sorted(cohort.review_below.items()):
        parts.append(f"a predicted Dice below {below:g} (quality estimator {note})")
    if any(n.startswith("no estimator") for n in cohort.estimators):
        parts.append("no predicted Dice where the model had no quality estimator")
    parts.append(
        f"an empty side, a volume outside {rules.min_side_ml:g}-{rules.max_side_ml:g} mL, one "
        f"side more than {rules.max_side_ratio:g} times the other (both sides), or an "
        "implausible scan"
    )
    return "; ".join(parts)


def _model_line(cohort: Cohort) -> tuple[str, str]:
    if not cohort.models:
        return "unknown", "unknown"
    (source, recipe), _ = cohort.models.most_common(1)[0]
    name = Path(source).name if source not in ("?", "test") else source
    return name, recipe


def methods_text(cohort: Cohort, z_limit: float, min_view_dice: float) -> str:
    """A methods paragraph for a paper (plain text)."""
    model, recipe = _model_line(cohort)
    version = cohort.versions.most_common(1)[0][0] if cohort.versions else __version__
    settings = cohort.settings[0][0] if cohort.settings else {}
    fusion = settings.get("fusion", "mean")
    tta = " with test-time left-right mirror augmentation" if settings.get("tta") else ""
    n, n_failed = len(cohort.cases), len(cohort.failures)
    n_review = sum(len(c.review_sides) for c in cohort.done)
    grid = settings.get("working_grid_mm")
    where = (
        f"resampled to a {grid:g} mm isotropic working grid for the networks where their voxel "
        "size differed from it by more than 10 %, and the probabilities were mapped back onto "
        "the voxel grid of each image"
        if grid
        else "segmented on their own voxel grid"
    )
    return (
        f"Left and right hippocampi were segmented automatically in {n} images with "
        f"lofihippseg {version}, an implementation of the LoFiHippSeg dual-view method "
        f"(two V-Nets, one seeing the image and one a frequency-masked view of it, trained to "
        f"teach each other under a critic; arXiv 2410.17502), using the model {model} "
        f"(recipe '{recipe}'; the two views' probabilities fused by {fusion}{tta}). Images were "
        f"{where}; volumes were computed as the number of labelled voxels (on the grid of the "
        "image) times the voxel volume. The Dice overlap of the two networks' segmentations "
        "(view agreement) was recorded for each image. "
        f"{quality_text(cohort, n_review)}Cases were flagged for review when the left or "
        f"right volume or the asymmetry index lay more than {z_limit:g} robust standard "
        f"deviations from the cohort median (|x - median| / (1.4826 x MAD) > {z_limit:g}), the "
        f"view agreement was below {min_view_dice:g}, the absolute asymmetry index exceeded "
        f"{MAX_ABS_ASYMMETRY:g} or a volume lay outside {PLAUSIBLE_ML[0]:g}-{PLAUSIBLE_ML[1]:g} "
        f"mL. {n_failed} image(s) could not be processed. Whether the flagged segmentations "
        "were inspected, and what was done with them, is not known to the tool and should be "
        "stated by the authors."
    )


def quality_text(cohort: Cohort, n_review: int) -> str:
    """The methods' sentences on the per-side quality estimate (only what the tool did)."""
    rules = StatusRules()
    rule = (
        f"a side was sent to review when it was empty, its volume lay outside "
        f"{rules.min_side_ml:g}-{rules.max_side_ml:g} mL, one side was more than "
        f"{rules.max_side_ratio:g} times the other, or the scan's geometry was implausible"
    )
    estimators = [n for n in cohort.estimators if not n.startswith("no estimator")]
    if not estimators:
        return (
            f"No quality estimator was available for this model, so no Dice was predicted; {rule}"
            f" ({n_review} side(s) sent to review). "
        )
    note = estimators[0]
    below = cohort.review_below.get(note)
    v = cohort.validation.get(note) or {}
    figures = ""
    if v:
        figures = (
            f" (on held-back scans: Spearman correlation {v.get('spearman', float('nan')):.2f} "
            f"with the true Dice, mean absolute error {v.get('mae', float('nan')):.3f}, "
            f"{v.get('n', '?')} sides)"
        )
    threshold = f"below {below:g}" if below is not None else "below its threshold"
    rule_when = rule.split(" when ", 1)[1]
    return (
        "For each side, a Dice overlap with a manual segmentation was predicted by a quality "
        f"estimator fitted for this model from its own predictions on scans with known labels "
        f"({note}){figures}; a predicted Dice is an estimate, not a measurement. A side was "
        f"sent to review when its predicted Dice was {threshold}, or when {rule_when}"
        f" ({n_review} side(s) sent to review). "
    )


def render_report(
    cohort: Cohort,
    report_path: Path,
    title: str | None = None,
    thumbnails: bool = True,
) -> str:
    """The report's HTML for a collected cohort."""
    report_dir = report_path.resolve().parent
    cases = [_case_view(c, report_dir, thumbnails) for c in cohort.cases]
    order = {c.case: review_order(c) for c in cohort.cases}
    cases = sorted(cases, key=lambda c: (not c["failed"], order[c["case"]]))
    grid = [c for c in cases if not c["failed"]]
    figures = {
        k: data_uri(v, "image/png") for k, v in cohort_figures(cohort.cases, MIN_VIEW_DICE).items()
    }
    model, recipe = _model_line(cohort)
    context = {
        "title": title or f"lofihippseg cohort report: {cohort.root.resolve().name}",
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
        "root": str(cohort.root.resolve()),
        "tool_version": __version__,
        "versions": cohort.versions.most_common(),
        "models": [(s, r, n) for (s, r), n in cohort.models.most_common()],
        "model": model,
        "recipe": recipe,
        "settings": cohort.settings,
        "n_cases": len(cohort.cases),
        "n_done": len(cohort.done),
        "n_failed": len(cohort.failures),
        "n_flagged": sum(c["flagged"] for c in cases),
        "failures": [c for c in cases if c["failed"]],
        "flagged": [c for c in cases if c["flagged"]],
        "n_review_sides": sum(len(c["review"]) for c in cases),
        "review_rule": review_rule(cohort),
        "estimators": cohort.estimators.most_common(),
        "cases": cases,
        "grid": grid,
        "figures": figures,
        "z_limit": Z_LIMIT,
        "min_view_dice": MIN_VIEW_DICE,
        "min_cases_for_z": MIN_CASES_FOR_Z,
        "max_abs_ai": MAX_ABS_ASYMMETRY,
        "plausible_ml": [f"{v:g}" for v in PLAUSIBLE_ML],
        "methods": methods_text(cohort, Z_LIMIT, MIN_VIEW_DICE),
        "paper": PAPER,
    }
    return _environment().get_template(TEMPLATE).render(**context)


def check_not_empty(cohort: Cohort) -> None:
    """Refuse to report on a folder that holds no results (one line saying what is missing).

    Raises:
        LoFiError: no case at all (no sidecars, failure records or failed rows).
    """
    if cohort.cases:
        return
    root = cohort.root
    if not root.is_dir():
        raise LoFiError(f"{root}: output folder not found")
    rows = read_rows(root / "volumes.csv")
    if rows:
        raise LoFiError(
            f"{root}: volumes.csv lists {len(rows)} case(s) but no lofihippseg sidecar "
            "(*_hipp.json) is here; the report reads the sidecars: give the folder `predict` "
            "wrote, or rerun predict into it"
        )
    raise LoFiError(
        f"{root}: no lofihippseg results here (no sidecars, failure records or volumes.csv); "
        "give a folder written by `lofihippseg predict -o` or the BIDS App"
    )


def build_report(
    out_dir: str | Path,
    path: str | Path | None = None,
    title: str | None = None,
    thumbnails: bool = True,
) -> tuple[Path, Cohort]:
    """Write the cohort report of a finished output folder, atomically; return it and the cohort.

    Args:
        out_dir: a ``predict -o`` folder or a BIDS derivatives folder.
        path: the HTML file (default ``out_dir/report.html``).
        title: page title.
        thumbnails: embed a QC thumbnail per case.

    Returns:
        The HTML path and the cohort it shows (cases, failures, flags).

    Raises:
        LoFiError: the folder holds no results.

    Example:
        >>> path, cohort = build_report("out/")  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    path = Path(path) if path is not None else out_dir / "report.html"
    cohort = collect_cohort(out_dir)
    check_not_empty(cohort)
    html = render_report(cohort, path, title, thumbnails)
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path, cohort


def write_report(
    out_dir: str | Path,
    path: str | Path | None = None,
    title: str | None = None,
    thumbnails: bool = True,
) -> Path:
    """Write the cohort report of a finished output folder, atomically (see ``build_report``).

    Returns:
        The HTML path.

    Raises:
        LoFiError: the folder holds no results.

    Example:
        >>> write_report("out/")  # doctest: +SKIP
        PosixPath('out/report.html')
    """
    return build_report(out_dir, path, title, thumbnails)[0]
