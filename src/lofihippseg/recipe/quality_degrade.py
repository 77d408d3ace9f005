"""Degraded copies of a labelled scan, so the quality estimator sees the model fail.

Each takes a [0, 1] image on a 1 mm grid, its labels and affine, and a random generator, and
returns the degraded (image, labels, affine); the severity is drawn at random (from mild to
ruinous) so the model's Dice spans its whole range. ``DEGRADATIONS`` names them:

- ``noise``: Gaussian noise of std 0.04-0.25 (magnitude taken: Rician);
- ``thick``: 4-9 mm slices along a random axis (slab means, shown on the 1 mm grid);
- ``bias``: a smooth multiplicative field, log std 0.8-1.5 (stronger than the generator's);
- ``ghost``: a copy shifted by half the field of view along a random axis, 0.15-0.6 strong;
- ``motion``: k-space lines along a random axis taken from a copy shifted 2-8 mm (20-60 %);
- ``partial``: the field of view cut through the hippocampi along a random axis (labels too);
- ``wrong_contrast``: intensities inverted inside the head (a contrast no family knows).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Case = tuple[np.ndarray, np.ndarray, np.ndarray]


def _norm(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def noise(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng) -> Case:
    """Rician noise of std 0.04-0.25."""
    std = rng.uniform(0.04, 0.25)
    real = image + rng.normal(0, std, image.shape)
    imag = rng.normal(0, std, image.shape)
    return _norm(np.sqrt(real**2 + imag**2)), labels, affine


def thick(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng) -> Case:
    """Slab means of 4-9 voxels along a random axis, repeated back onto the grid."""
    axis, k = int(rng.integers(3)), int(rng.integers(4, 10))
    n = image.shape[axis]
    idx = np.arange(n) // k
    sums = np.zeros_like(np.take(image, np.arange(idx.max() + 1), axis=axis), dtype=np.float64)
    np.add.at(np.moveaxis(sums, axis, 0), idx, np.moveaxis(image, axis, 0))
    counts = np.bincount(idx).reshape([-1 if a == axis else 1 for a in range(3)])
    means = sums / counts
    return _norm(np.take(means, idx, axis=axis)), labels, affine


def bias(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng) -> Case:
    """A smooth field exp(N(0, s)) on a 4^3 grid, s in 0.8-1.5, zoomed to the image."""
    coarse = rng.normal(0, rng.uniform(0.8, 1.5), (4, 4, 4))
    field = ndimage.zoom(coarse, [n / 4 for n in image.shape], order=3)[
        tuple(slice(0, n) for n in image.shape)
    ]
    return _norm(image * np.exp(field)), labels, affine


def ghost(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng) -> Case:
    """Nyquist-like ghost: a copy shifted by half the field of view, 0.15-0.6 strong."""
    axis = int(rng.integers(3))
    shifted = np.roll(image, image.shape[axis] // 2, axis=axis)
    return _norm(image + rng.uniform(0.15, 0.6) * shifted), labels, affine


def motion(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng) -> Case:
    """20-60 % of the k-space lines along a random axis from a copy moved by 2-8 mm."""
    axis = int(rng.integers(3))
    shift = rng.normal(0, 1, 3)
    shift *= rng.uniform(2, 8) / max(np.linalg.norm(shift), 1e-6)
    k = np.fft.fftn(image)
    moved = np.fft.fftn(ndimage.shift(image, shift, order=1, mode="nearest"))
    lines = rng.random(image.shape[axis]) < rng.uniform(0.2, 0.6)
    sel = lines.reshape([-1 if a == axis else 1 for a in range(3)])
    k = np.where(sel, moved, k)
    return _norm(np.abs(np.fft.ifftn(k))), labels, affine


def partial(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng) -> Case:
    """The field of view ends inside the hippocampi (20-80 % of their extent) on one side
    of a random axis; the labels are cut with it and the affine keeps the world position."""
    axis = int(rng.integers(3))
    where = np.nonzero(labels.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    if where.size == 0:
        return image, labels, affine
    cut = int(where[0] + rng.uniform(0.2, 0.8) * (where[-1] - where[0]))
    keep_low = bool(rng.integers(2))
    sl = [slice(None)] * 3
    sl[axis] = slice(0, cut) if keep_low else slice(cut, None)
    start = np.zeros(3)
    start[axis] = 0 if keep_low else cut
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return image[tuple(sl)].copy(), labels[tuple(sl)].copy(), out


def wrong_contrast(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng) -> Case:
    """Intensities inverted inside the head (background stays dark)."""
    head = ndimage.binary_fill_holes(image > 0.05 * float(image.max()))
    out = np.where(head, float(image.max()) - image, 0.0)
    return _norm(out), labels, affine


DEGRADATIONS: dict[str, Callable[..., Case]] = {
    "noise": noise,
    "thick": thick,
    "bias": bias,
    "ghost": ghost,
    "motion": motion,
    "partial": partial,
    "wrong_contrast": wrong_contrast,
}
