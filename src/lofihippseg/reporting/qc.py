"""Quality-control pictures: the segmentation outline over the scan.

One PNG per case, of a fixed pixel size (``QC_SIZE_PX``): two rows (left and right
hippocampus), three columns (axial, coronal, sagittal slices through that hippocampus's
centroid). Outlines: left in one colour, right in another, with a legend. Slices are shown in
neurological convention (subject's left on the picture's left, anterior / superior up).
Uses matplotlib's Agg canvas directly (no pyplot state, safe in worker threads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lofihippseg.io.atomic import atomic_path

FIGSIZE_IN = (12.0, 8.0)
DPI = 100
QC_SIZE_PX = (int(FIGSIZE_IN[1] * DPI), int(FIGSIZE_IN[0] * DPI))  # (height, width)
COLOURS = {1: "#ff3b30", 2: "#1e90ff"}  # left red, right blue
NAMES = {1: "left", 2: "right"}
# (name, axis fixed by the slice, axes shown as (horizontal, vertical))
PLANES = (("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2)))


def _centroid(mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    return np.rint(idx.mean(axis=0)).astype(int) if len(idx) else fallback


def _display_range(image: np.ndarray) -> tuple[float, float]:
    nz = image[image != 0]
    ref = nz if nz.size else image.ravel()
    low, high = np.percentile(ref, (1, 99.5))
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
    ax.set_xticks([])
    ax.set_yticks([])


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
