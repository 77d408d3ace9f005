"""Quality-control pictures: the segmentation outline over the scan.

One PNG per case, of a fixed pixel size (``QC_SIZE_PX``): two rows (left and right
hippocampus), three columns (axial, coronal, sagittal slices through that hippocampus's
centroid). Outlines: left in one colour, right in another, with a legend. Slices are shown in
neurological convention (subject's left on the picture's left, anterior / superior up), and
every panel carries the orientation letters of its edges (R/L, A/P, S/I). The grey window is
set robustly: the ``WINDOW_PERCENTILES`` of the non-zero voxels, so a few very bright voxels
do not darken the picture.
Uses matplotlib's Agg canvas directly (no pyplot state, safe in worker threads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lofihippseg.io.atomic import atomic_path

FIGSIZE_IN = (12.0, 8.0)
DPI = 100
QC_SIZE_PX = (int(FIGSIZE_IN[1] * DPI), int(FIGSIZE_IN[0] * DPI))  # (height, width)
COLOURS = {1: "#ff3b30", 2: "#1e90ff"}  # left red, right blue
NAMES = {1: "left", 2: "right"}
# (name, axis fixed by the slice, axes shown as (horizontal, vertical))
PLANES = (("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2)))
WINDOW_PERCENTILES = (1.0, 99.5)
# canonical RAS axes: (letter at the low end, letter at the high end)
AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


def orientation_letters(h_axis: int, v_axis: int) -> dict[str, str]:
    """Letters at the panel's left, right, bottom and top edges (canonical RAS arrays).

    Example:
        >>> orientation_letters(0, 2)
        {'left': 'L', 'right': 'R', 'bottom': 'I', 'top': 'S'}
    """
    (left, right), (bottom, top) = AXIS_LETTERS[h_axis], AXIS_LETTERS[v_axis]
    return {"left": left, "right": right, "bottom": bottom, "top": top}


def _letter_panel(ax, h_axis: int, v_axis: int) -> None:
    letters = orientation_letters(h_axis, v_axis)
    style = {
        "transform": ax.transAxes,
        "color": "#ffd60a",
        "fontsize": 11,
        "fontweight": "bold",
        "bbox": {"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.55, "lw": 0},
    }
    ax.text(0.02, 0.5, letters["left"], ha="left", va="center", **style)
    ax.text(0.98, 0.5, letters["right"], ha="right", va="center", **style)
    ax.text(0.5, 0.02, letters["bottom"], ha="center", va="bottom", **style)
    ax.text(0.5, 0.98, letters["top"], ha="center", va="top", **style)


def _centroid(mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    return np.rint(idx.mean(axis=0)).astype(int) if len(idx) else fallback


def _display_range(image: np.ndarray, sample: int = 4_000_000) -> tuple[float, float]:
    """Grey window from the non-zero voxels' percentiles (of an even subsample of at most
    about ``sample`` voxels: a 0.5 mm head has 40 million)."""
    flat = image.ravel()[:: max(1, image.size // sample)]
    nz = flat[flat != 0]
    ref = nz if nz.size else flat
    low, high = np.percentile(ref, WINDOW_PERCENTILES)
    return float(low), float(high if high > low else low + 1)


def _draw(ax, image, labels, spacing, plane, centre, vmin, vmax) -> None:
    name, axis, (h_axis, v_axis) = plane
    index = [slice(None)] * 3
    index[axis] = int(centre[axis])
    img = image[tuple(index)]  # axes (horizontal, vertical) since h_axis < v_axis
    lab = labels[tuple(index)]
    aspect = spacing[v_axis] / spacing[h_axis]
    ax.imshow(
        img.T,
        cmap="gray",
        origin="lower",
        vmin=vmin,
        vmax=vmax,
        aspect=aspect,
        interpolation="nearest",
    )
    for value, colour in COLOURS.items():
        mask = (lab == value).T
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_title(f"{name} {'xyz'[axis]}={int(centre[axis])}", fontsize=9)
    _letter_panel(ax, h_axis, v_axis)
    ax.set_xticks([])
    ax.set_yticks([])


def qc_title(case: str, row: dict, quality: dict | None = None) -> str:
    """The QC picture's title: volumes, view agreement and, per side, the predicted Dice and
    whether it goes to review.

    Example:
        >>> q = {"left": {"predicted_dice": 0.84, "review": False},
        ...      "right": {"predicted_dice": 0.51, "review": True}}
        >>> print(qc_title("c1", {"left_ml": 3.1, "right_ml": 2.9, "view_dice": 0.8}, q))
        c1   left 3.10 mL   right 2.90 mL   view Dice 0.80
        predicted Dice: left 0.84, right 0.51 REVIEW
    """
    dice = row.get("view_dice")
    dice_text = "-" if dice is None or dice != dice else f"{dice:.2f}"
    title = (
        f"{case}   left {row['left_ml']:.2f} mL   right {row['right_ml']:.2f} mL   "
        f"view Dice {dice_text}"
    )
    if not quality:
        return title
    parts = []
    for side in ("left", "right"):
        part = quality.get(side) or {}
        value = part.get("predicted_dice")
        text = f"{side} {'-' if value is None else f'{value:.2f}'}"
        parts.append(text + (" REVIEW" if part.get("review") else ""))
    label = (
        "predicted Dice"
        if any((quality.get(s) or {}).get("predicted_dice") is not None for s in ("left", "right"))
        else "no quality estimator"
    )
    return f"{title}\n{label}: {', '.join(parts)}"


def save_qc_png(
    image: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    path: str | Path,
    title: str = "",
) -> Path:
    """Write the QC picture of one case (canonical arrays), atomically.

    Args:
        image: the scan (canonical order).
        labels: its label map (0, 1 left, 2 right), same shape.
        spacing: voxel size in mm (for the aspect ratio).
        path: output PNG.
        title: figure title (case name and volumes).

    Returns:
        The PNG path; the picture is ``QC_SIZE_PX`` (height, width) pixels.

    Example:
        >>> save_qc_png(vol.data, labels, vol.spacing, "CASE_qc.png", "CASE")  # doctest: +SKIP
    """
    # imported here: matplotlib costs ~0.5 s of start-up, which --no-qc runs never need
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    vmin, vmax = _display_range(image)
    middle = np.array(image.shape) // 2
    for row, value in enumerate((1, 2)):
        mask = labels == value
        centre = _centroid(mask, middle)
        for col, plane in enumerate(PLANES):
            _draw(axes[row, col], image, labels, spacing, plane, centre, vmin, vmax)
        found = "" if mask.any() else " (not found)"
        axes[row, 0].set_ylabel(f"{NAMES[value]} hippocampus{found}", color=COLOURS[value])
    handles = [Line2D([], [], color=c, label=NAMES[v]) for v, c in COLOURS.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=9)
    fig.suptitle(title, fontsize=11)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path
