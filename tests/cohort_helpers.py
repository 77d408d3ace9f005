"""Helpers for the cohort tests (BIDS App, report, shards): tiny scans, a fake model, a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from conftest import write_nifti

from lofihippseg.inference.api import PredictSettings
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.models.registry import ModelSpec

AFFINE = np.diag([4.0, 3.0, 3.0, 1.0])  # 96 x 72 x 60 mm: wide enough for a head (not a crop)


class BrightNet(torch.nn.Module):
    """Bright voxels: 'left' in the array's first half (axis 0), 'right' in the second."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = 40 * (x - 0.5)
        half = x.shape[2] // 2
        left, right = bright.clone(), bright.clone()
        left[:, :, half:] = -40
        right[:, :, :half] = -40
        return torch.cat([left, right], dim=1)


def fake_model() -> LoadedModel:
    """A model whose segmentation is the bright blobs (no weights to load, instant)."""
    spec = ModelSpec(n_filters=4, view_mode="lowpass", cutoff=0.5)
    net = BrightNet()
    return LoadedModel(
        spec=spec, vnet1=net, vnet2=net, source="fake-bright-blobs", single_view=True
    )


def settings(**kw) -> PredictSettings:
    """CPU settings for fast tests (no ROI pass)."""
    return PredictSettings(device="cpu", roi="off", **kw)


def head(shape=(24, 24, 20), seed=0, blob=1.0) -> np.ndarray:
    """A noisy ellipsoid 'head' with a bright blob on each side; ``blob`` scales them."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    data = (sum(g**2 for g in grid) < 0.8) * (100 + 5 * rng.standard_normal(shape))
    x, y, z = grid
    for cx in (-0.45, 0.45):
        inside = ((x - cx) ** 2 / 0.04 + y**2 / 0.08 + z**2 / 0.06) / blob**2 < 1
        data[inside] = 220
    return data.astype(np.float32)


def write_scan(path: Path, seed: int = 0, blob: float = 1.0) -> Path:
    """A tiny scan written as NIfTI."""
    return write_nifti(path, head(seed=seed, blob=blob), AFFINE)


def make_bids(root: Path, broken: bool = True) -> Path:
    """sub-01 (no sessions; T2w and T1w), sub-02 (ses-1, ses-2; ses-2's T2w broken if asked)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0", "DatasetDOI": "10.0/tiny"})
    )
    write_scan(root / "sub-01/anat/sub-01_T2w.nii.gz", seed=1)
    write_scan(root / "sub-01/anat/sub-01_T1w.nii.gz", seed=2)
    (root / "sub-01/anat/sub-01_T2w.json").write_text("{}")
    write_scan(root / "sub-02/ses-1/anat/sub-02_ses-1_acq-lowfield_T2w.nii.gz", seed=3)
    second = write_scan(root / "sub-02/ses-2/anat/sub-02_ses-2_acq-lowfield_T2w.nii.gz", seed=4)
    if broken:
        second.write_bytes(second.read_bytes()[:200])  # truncated gzip
    (root / "derivatives" / "other").mkdir(parents=True)  # never read
    return root


def make_flat_cohort(root: Path, n: int) -> list[Path]:
    """``n`` scans case00..; the last one has much bigger blobs (a volume outlier)."""
    return [
        write_scan(root / f"case{i:02d}.nii.gz", seed=i, blob=1.5 if i == n - 1 else 1.0)
        for i in range(n)
    ]
