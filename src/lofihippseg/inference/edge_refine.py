"""Edge refinement: move each side's outline to where the scan's own intensities put it.

The networks place the hippocampus well but its edge to within one or two voxels (the model
card's error analysis). The scan itself says more about that edge when it is visible: voxels
just inside a hippocampus look like its core, voxels just outside like its surroundings. For
each side, in the voxels within ``band`` of the predicted outline only:

    refined logit = logit(fused probability) + weight * log(p_inside(I) / p_outside(I))

where ``p_inside`` is the intensity histogram of the predicted hippocampus's core (eroded by one
voxel) and ``p_outside`` that of a shell ``shell`` voxels around it, both taken from the scan.
Where the hippocampus has the intensity of its neighbours (the low-field T2-like case) the two
histograms are alike, the log-ratio is near 0 and the outline stays the network's; where the
edge is visible (T1, random contrast) the outline follows it. The log-ratio is clipped to
+-``CLIP`` so the image can move the outline but never overrule a confident network.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lofihippseg.inference.fusion import resolve_overlap
from lofihippseg.inference.postprocess import largest_component
from lofihippseg.preprocessing.crop import Box, nonzero_bbox

BINS = 48  # histogram bins over the 0.5-99.5 percentile range of the voxels used
SMOOTH_BINS = 1.5  # Gaussian smoothing of the histograms, in bins
CLIP = 3.0  # the most the image can add to a voxel's logit, either way
MIN_VOXELS = 20  # a side smaller than this is left as it is
BAND = 2  # voxels within this many dilations/erosions of the outline may change
SHELL = 3  # the outside histogram: voxels up to this many dilations outside


def _histogram_log_ratio(inside: np.ndarray, outside: np.ndarray, values: np.ndarray) -> np.ndarray:
    """log(p_inside / p_outside) of ``values`` from smoothed histograms of two samples."""
    lo, hi = np.percentile(np.concatenate([inside, outside]), [0.5, 99.5])
    if not hi > lo:  # a flat image says nothing about the edge
        return np.zeros(values.shape, np.float32)
    edges = np.linspace(lo, hi, BINS + 1)
    logs = []
    for sample in (inside, outside):
        counts = np.histogram(np.clip(sample, lo, hi), edges)[0].astype(np.float64)
        counts = ndimage.gaussian_filter1d(counts, SMOOTH_BINS) + 1e-3 * counts.sum() / BINS
        logs.append(np.log(counts / counts.sum()))
    index = np.clip(((values - lo) / (hi - lo) * BINS).astype(np.int64), 0, BINS - 1)
    return (logs[0] - logs[1])[index].astype(np.float32)


def refine_side(
    image: np.ndarray, probability: np.ndarray, mask: np.ndarray, threshold: float, weight: float
) -> np.ndarray:
    """One side's mask with its outline moved toward the scan's intensity edge.

    Args:
        image: the scan's intensities on the mask's grid.
        probability: the side's fused probability on that grid.
        mask: the side's thresholded mask (what the networks alone give).
        threshold: the probability threshold ``mask`` came from.
        weight: how much the image's evidence counts (0 = ``mask`` unchanged).

    Returns:
        The refined boolean mask (``mask`` itself when it is too small to describe or
        ``weight`` is 0).

    Example:
        >>> img = np.random.default_rng(0).normal(0, 0.2, (24, 24, 24))
        >>> truth = np.zeros(img.shape, bool); truth[6:18, 6:18, 6:18] = True
        >>> grown = ndimage.binary_dilation(truth, iterations=1)  # one voxel too large
        >>> refined = refine_side(img + truth, np.where(grown, 0.6, 0.1), grown, 0.5, 1.0)
        >>> int((refined ^ truth).sum()) < int((grown ^ truth).sum())
        True
    """
    mask = np.asarray(mask, bool)
    if weight == 0 or mask.sum() < MIN_VOXELS:
        return mask
    box = nonzero_bbox(mask, margin=SHELL + BAND + 1)  # all the work lies around the side
    refined = mask.copy()
    refined[box] = _refine_in_box(
        np.asarray(image[box], np.float32), probability[box], mask[box], threshold, weight
    )
    return refined


def side_evidence(data: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """log(p_inside / p_outside) of ``values``, clipped to +-``CLIP``, from the histograms of
    ``mask``'s core and of a ``SHELL``-voxel shell around it in ``data`` (None: no shell)."""
    main = largest_component(mask)  # stray blobs would blur the hippocampus's own histogram
    core = ndimage.binary_erosion(main)
    if core.sum() < MIN_VOXELS // 2:
        core = main
    around = ndimage.binary_dilation(main, iterations=SHELL) & ~mask
    if not around.any():
        return None
    return np.clip(_histogram_log_ratio(data[core], data[around], values), -CLIP, CLIP)


def _refine_in_box(
    data: np.ndarray, probability: np.ndarray, mask: np.ndarray, threshold: float, weight: float
) -> np.ndarray:
    """:func:`refine_side` in a box that holds the side with room for its shell."""
    zone = ndimage.binary_dilation(mask, iterations=BAND) & ~ndimage.binary_erosion(
        mask, iterations=BAND
    )
    evidence = side_evidence(data, mask, data[zone])
    if evidence is None:
        return mask
    p = np.clip(probability[zone].astype(np.float64), 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p)) + weight * evidence
    refined = mask.copy()
    refined[zone] = logit > np.log(threshold / (1 - threshold))
    return refined


def refine_labels(
    image: np.ndarray,
    fused: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    weight: float,
    overlap_rule: str = "probability",
    window: Box | None = None,
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Both sides of a label map refined (:func:`refine_side`), overlaps resolved again.

    Args:
        image: the scan's intensities on the label map's grid.
        fused: (2, ...) fused probabilities, channel 0 left and 1 right.
        labels: the label map (0 background, 1 left, 2 right).
        threshold: the probability threshold ``labels`` came from.
        weight: how much the image's evidence counts.
        overlap_rule: as in :func:`~lofihippseg.inference.fusion.resolve_overlap`.
        window: where ``fused`` and ``labels`` lie in ``image`` when they cover only part of
            it: the histograms then see the scan around the window too, so the result does not
            depend on how tightly the window was cut (nothing outside it can be labelled: its
            probability is 0), and the result is on the window.

    Returns:
        ``(labels, changes)``: the refined label map and, per side, the voxels added and
        removed (for the sidecar).
    """
    if window is not None:
        margin = SHELL + BAND + 1
        grown = tuple(
            slice(max(w.start - margin, 0), min(w.stop + margin, n))
            for w, n in zip(window, image.shape, strict=True)
        )
        inner = tuple(
            slice(w.start - g.start, w.stop - g.start) for w, g in zip(window, grown, strict=True)
        )
        wide_fused = np.zeros((fused.shape[0], *(g.stop - g.start for g in grown)), fused.dtype)
        wide_fused[(slice(None), *inner)] = fused
        wide_labels = np.zeros(wide_fused.shape[1:], labels.dtype)
        wide_labels[inner] = labels
        refined, changes = refine_labels(
            image[grown], wide_fused, wide_labels, threshold, weight, overlap_rule
        )
        return refined[inner], changes
    masks = np.stack(
        [refine_side(image, fused[c], labels == c + 1, threshold, weight) for c in (0, 1)]
    )
    refined = resolve_overlap(masks, fused, overlap_rule)
    changes = {}
    for value, side in ((1, "left"), (2, "right")):
        before, after = labels == value, refined == value
        changes[side] = {
            "added": int((after & ~before).sum()),
            "removed": int((before & ~after).sum()),
        }
    return refined, changes
