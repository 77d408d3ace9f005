"""Tiny synthetic training data (ellipsoid 'hippocampi' in a noisy 'head') in the LISA layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_nifti

from lofihippseg.models.registry import ModelSpec
from lofihippseg.training.augment import AugmentConfig
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.losses import LossConfig


def ellipsoid_case(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A head ellipsoid in noise with two brighter ellipsoids: left (label 1) and right (2)."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(np.float32)
    c = (size - 1) / 2
    head = (((grid - c) / (0.45 * size)) ** 2).sum(-1) <= 1
    image = np.where(head, 0.4, 0.0) + rng.normal(0, 0.08, (size,) * 3)
    label = np.zeros((size,) * 3, np.uint8)
    radii = np.array([0.16, 0.12, 0.14]) * size * rng.uniform(0.9, 1.1, 3)
    for value, side in ((1, -1), (2, 1)):  # left = smaller axis-0 index
        centre = np.array([c + side * 0.22 * size, c, c]) + rng.uniform(-1.5, 1.5, 3)
        inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1
        label[inside] = value
        image[inside] += 0.5
    image = np.where(head, image, 0.0).astype(np.float32)
    return image, label


def make_lisa_dataset(root: Path, n_cases: int = 4, size: int = 28, seed: int = 0) -> Path:
    """Write ``imagesTr/LISA_000k_ciso.nii.gz`` and ``labelsTr/LISA_000k_hipp.nii.gz``."""
    rng = np.random.default_rng(seed)
    for k in range(1, n_cases + 1):
        image, label = ellipsoid_case(size, rng)
        write_nifti(root / "imagesTr" / f"LISA_{k:04d}_ciso.nii.gz", image)
        write_nifti(root / "labelsTr" / f"LISA_{k:04d}_hipp.nii.gz", label)
    return root


def small_config(data: Path, out: Path, **changes) -> TrainConfig:
    """A CPU config small enough for tests (n_filters 4, patch 32, batch 2)."""
    base = dict(
        data=(str(data),),
        out_dir=str(out),
        name="run",
        iterations=4,
        batch_size=2,
        patch_size=(32, 32, 32),
        val_every=2,
        device="cpu",
        amp=False,
        num_workers=0,
        model=ModelSpec(n_filters=4),
        val_fraction=0.25,
        seed=3,
        augment=AugmentConfig(),
        loss=LossConfig(),
    )
    base.update(changes)
    return TrainConfig(**base)
