"""Training augmentation: determinism, ranges, labels, and left-right safety."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from lofihippseg.errors import LoFiError
from lofihippseg.training.augment import (
    AugmentConfig,
    augment,
    flip_left_right,
    swap_lr_labels,
)

ALL_ON = replace(
    AugmentConfig(),
    **{f.name: 1.0 for f in fields(AugmentConfig) if f.name.endswith("_prob")},
)
SPATIAL_ONLY = replace(AugmentConfig.none(), spatial_prob=1.0)


def _sample(shape=(20, 16, 18)):
    """Image with two blobs: label 1 at small axis-0 index (left), label 2 at large (right)."""
    d, h, w = shape
    zz, yy, xx = torch.meshgrid(
        *[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"
    )
    label = torch.zeros(shape, dtype=torch.long)
    for value, centre in ((1, d * 0.28), (2, d * 0.72)):
        ball = (zz - centre) ** 2 + (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= 3.5**2
        label[ball] = value
    image = 0.2 + 0.1 * torch.rand(shape, generator=torch.Generator().manual_seed(0))
    image = (image + 0.5 * (label > 0)).clamp(0, 1)[None]
    return image, label


def _centroid0(label: torch.Tensor, value: int) -> float:
    return float(torch.nonzero(label == value)[:, 0].float().mean())


def test_deterministic_per_seed():
    image, label = _sample()
    a = augment(image, label, ALL_ON, torch.Generator().manual_seed(3))
    b = augment(image, label, ALL_ON, torch.Generator().manual_seed(3))
    c = augment(image, label, ALL_ON, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("seed", range(6))
def test_shapes_range_and_labels(seed):
    image, label = _sample()
    out, lab = augment(image, label.to(torch.uint8), ALL_ON, torch.Generator().manual_seed(seed))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert lab.shape == label.shape and lab.dtype == torch.uint8
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 and torch.isfinite(out).all()
    assert set(lab.unique().tolist()) <= {0, 1, 2}
    assert not torch.equal(out, image)  # something happened


def test_none_config_is_identity():
    image, label = _sample()
    out, lab = augment(image, label, AugmentConfig.none(), torch.Generator().manual_seed(0))
    assert torch.equal(out, image) and torch.equal(lab, label)


def test_lr_flip_swaps_labels_and_keeps_left_on_the_left():
    image, label = _sample()
    config = replace(AugmentConfig.none(), lr_flip_prob=1.0)
    out, lab = augment(image, label, config, torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.flip(image, dims=(1,)))  # the image is mirrored
    assert not torch.equal(lab, label)
    assert _centroid0(lab, 1) < _centroid0(lab, 2)  # label 1 still on the smaller-x side
    assert (lab == 1).sum() == (label == 2).sum()  # the blobs changed labels


def test_flip_left_right_helpers():
    image, label = _sample()
    back_image, back_label = flip_left_right(*flip_left_right(image, label))
    assert torch.equal(back_image, image) and torch.equal(back_label, label)
    probs = torch.rand(2, 4, 3, 3)
    assert flip_left_right(probs)[1] is None
    assert swap_lr_labels(torch.tensor([0, 1, 2, 1])).tolist() == [0, 2, 1, 2]


def test_default_config_never_flips_left_right():
    assert AugmentConfig().lr_flip_prob == 0.0
    image, label = _sample()
    for seed in range(25):
        _, lab = augment(image, label, AugmentConfig(), torch.Generator().manual_seed(seed))
        assert _centroid0(lab, 1) < _centroid0(lab, 2), seed


def test_rotation_roughly_keeps_label_volume_and_moves_voxels():
    image, label = _sample((24, 24, 24))
    config = replace(SPATIAL_ONLY, scaling=0.0)
    changed = 0
    for seed in range(4):
        out, lab = augment(image, label, config, torch.Generator().manual_seed(seed))
        for value in (1, 2):
            ratio = float((lab == value).sum()) / float((label == value).sum())
            assert 0.85 < ratio < 1.15
        changed += int(not torch.equal(lab, label))
        assert float(out.max()) <= 1.0
    assert changed == 4


def test_scaling_changes_label_volume_as_expected():
    image, label = _sample((24, 24, 24))
    config = replace(SPATIAL_ONLY, rotation_deg=0.0, scaling=0.2)
    g = torch.Generator().manual_seed(0)
    ratios = [
        float((augment(image, label, config, g)[1] > 0).sum()) / float((label > 0).sum())
        for _ in range(6)
    ]
    assert min(ratios) > 0.45 and max(ratios) < 1.9  # within (0.8^3, 1.2^3) up to voxelisation
    assert max(ratios) - min(ratios) > 0.05


def test_invalid_probability_is_a_user_error():
    with pytest.raises(LoFiError, match="noise_prob"):
        AugmentConfig(noise_prob=1.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_gpu_and_deterministic():
    image, label = _sample()
    image, label = image.cuda(), label.cuda()
    a = augment(image, label, ALL_ON, torch.Generator("cuda").manual_seed(1))
    b = augment(image, label, ALL_ON, torch.Generator("cuda").manual_seed(1))
    assert a[0].device.type == "cuda" and a[1].device.type == "cuda"
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = augment(image, label, ALL_ON, torch.Generator().manual_seed(1))  # CPU generator works too
    assert c[0].device.type == "cuda"
