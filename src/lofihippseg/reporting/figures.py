"""Pictures for the cohort report, as embeddable bytes: distributions and QC thumbnails.

Matplotlib's Agg canvas directly (no pyplot state). Distributions are box plots with every case
as a jittered point; flagged cases are drawn in red and named.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lofihippseg.reporting.cohort import CohortCase

THUMB_WIDTH_PX = 420
FLAG_COLOUR = "#d62728"
SIDE_COLOURS = ("#ff3b30", "#1e90ff")
MAX_NAMED = 8


def data_uri(data: bytes, mime: str) -> str:
    """``data:MIME;base64,...`` for embedding in HTML."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def distribution_png(
    cases: Sequence[CohortCase],
    metrics: Sequence[tuple[str, str]],
    title: str,
    ylabel: str,
    threshold: float | None = None,
    colours: Sequence[str] | None = None,
) -> bytes:
    """One panel: a box and the jittered cases per metric, flagged cases red and named.

    Args:
        cases: segmented cases (their ``values`` and ``flags``).
        metrics: (key in ``values``, axis label) per box.
        title: panel title.
        ylabel: y-axis label.
        threshold: a horizontal dashed line (e.g. the view-agreement limit).
        colours: point colour per metric.

    Returns:
        PNG bytes (500 x 360 px).
    """
    fig = Figure(figsize=(5.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    named = 0
    drawn = False
    for position, (key, _label) in enumerate(metrics, start=1):
        have = [c for c in cases if key in c.values]
        if not have:
            continue
        drawn = True
        values = np.array([c.values[key] for c in have])
        ax.boxplot(values, positions=[position], widths=0.5, showfliers=False)
        x = position + rng.uniform(-0.18, 0.18, len(values))
        colour = (colours or ["#444444"] * len(metrics))[position - 1]
        flagged = np.array([c.flagged for c in have])
        ax.scatter(x[~flagged], values[~flagged], s=14, color=colour, alpha=0.7, zorder=3)
        ax.scatter(x[flagged], values[flagged], s=30, color=FLAG_COLOUR, marker="D", zorder=4)
        for xi, yi, case in zip(x[flagged], values[flagged], np.array(have)[flagged], strict=True):
            if named < MAX_NAMED:
                ax.annotate(
                    case.case[-24:],
                    (xi, yi),
                    fontsize=6,
                    xytext=(4, 2),
                    textcoords="offset points",
                    color=FLAG_COLOUR,
                )
                named += 1
    ax.set_xticks(range(1, len(metrics) + 1), [label for _, label in metrics])
    ax.set_xlim(0.4, len(metrics) + 0.6)
    if threshold is not None:
        ax.axhline(threshold, color=FLAG_COLOUR, linestyle="--", linewidth=1)
    if not drawn:
        ax.text(0.5, 0.5, "no segmented case", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def cohort_figures(cases: Sequence[CohortCase], min_view_dice: float) -> dict[str, bytes]:
    """The report's three distribution panels (volumes, asymmetry, view agreement)."""
    done = [c for c in cases if not c.failed]
    return {
        "volumes": distribution_png(
            done,
            [("left_ml", "left"), ("right_ml", "right")],
            "Hippocampal volumes",
            "volume (mL)",
            colours=SIDE_COLOURS,
        ),
        "asymmetry": distribution_png(
            done,
            [("asymmetry_index", "(L - R) / mean")],
            "Asymmetry index",
            "asymmetry index",
        ),
        "agreement": distribution_png(
            done,
            [("view_dice", "Dice of the two views")],
            "View agreement",
            "Dice",
            threshold=min_view_dice,
        ),
    }


def thumbnail_jpeg(path: Path | None, width: int = THUMB_WIDTH_PX) -> bytes | None:
    """A small JPEG of a QC picture (None when it is missing or unreadable)."""
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            height = max(1, round(image.height * width / image.width))
            small = image.resize((width, height), Image.Resampling.LANCZOS)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=82, optimize=True)
    return buffer.getvalue()
