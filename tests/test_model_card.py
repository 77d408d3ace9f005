"""release/model_card.py's helpers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from conftest import release_module


def test_mirrored_copy_swaps_left_and_right_in_world_space(tmp_path):
    model_card = release_module("model_card")
    data = np.zeros((6, 5, 4), np.uint8)
    data[1, 2, 2] = 1  # one voxel near the left (low voxel i)
    affine = np.array([[0, 0, 2.0, -3], [-1.5, 0, 0, 4], [0, 1, 0, 5], [0, 0, 0, 1]])
    # voxel axis 2 runs along world x (the first row), so it is the one flipped
    source = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), source)
    out = model_card.mirrored_copy(source, tmp_path / "mirrored.nii.gz")
    mirrored = nib.load(out)
    assert np.allclose(mirrored.affine, affine) and mirrored.shape == data.shape
    before = affine[:3, :3] @ np.argwhere(data)[0] + affine[:3, 3]
    after = affine[:3, :3] @ np.argwhere(np.asanyarray(mirrored.dataobj))[0] + affine[:3, 3]
    centre_x = affine[0, 3] + affine[0, 2] * (data.shape[2] - 1) / 2
    assert np.isclose(after[0] - centre_x, -(before[0] - centre_x))  # x mirrored about the centre
    assert np.allclose(after[1:], before[1:])  # y and z unchanged
