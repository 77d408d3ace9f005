"""Losses on hand-made tensors with values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lofihippseg.errors import LoFiError
from lofihippseg.training.losses import (
    LossConfig,
    boundary_band,
    confidence_mask,
    critic_loss,
    generator_adversarial_loss,
    mutual_loss,
    one_hot_targets,
    soft_dice_loss,
    supervised_loss,
)

LN2 = math.log(2.0)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def bce(p: float, y: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_one_hot_targets_channels_are_left_and_right():
    label = torch.tensor([[[[0, 1, 2, 1]]]])
    t = one_hot_targets(label)
    assert t.shape == (1, 2, 1, 1, 4)
    assert t[0, 0].flatten().tolist() == [0, 1, 0, 1]
    assert t[0, 1].flatten().tolist() == [0, 0, 1, 0]


def test_soft_dice_known_value_over_whole_batch():
    # two samples, one channel; p = 0.5 everywhere; targets: sample 0 all ones, sample 1 zeros.
    logits = torch.zeros(2, 1, 1, 1, 2)
    target = torch.zeros(2, 1, 1, 1, 2)
    target[0] = 1
    # over the batch: sum(p*y) = 1, sum(p) = 2, sum(y) = 2 -> dice = (2 + 1) / (4 + 1)
    assert float(soft_dice_loss(logits, target, smooth=1.0)) == pytest.approx(1 - 3 / 5)
    # per-sample Dice averaged would differ: (1 - 3/4 + 1 - 1/2) / 2 = 0.375 != 0.4
    assert float(soft_dice_loss(logits, target)) != pytest.approx(0.375)


def test_soft_dice_mean_over_channels():
    logits = torch.tensor([50.0, -50.0]).view(1, 2, 1, 1, 1)  # p = [1, 0]
    target = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1, 1)
    # channel 0: dice (2+1)/(1+1+1) = 1; channel 1: (0+1)/(0+1+1) = 0.5 -> loss mean(0, 0.5)
    assert float(soft_dice_loss(logits, target)) == pytest.approx(0.25, abs=1e-6)


def test_supervised_loss_weights():
    p = 0.8
    logits = torch.full((1, 2, 1, 1, 1), logit(p))
    target = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1, 1)
    dice0 = 1 - (2 * p + 1) / (p + 1 + 1)
    dice1 = 1 - 1 / (p + 1)
    ce = (bce(p, 1) + bce(p, 0)) / 2
    expected = 1.0 * (dice0 + dice1) / 2 + 0.2 * ce
    assert float(supervised_loss(logits, target)) == pytest.approx(expected, rel=1e-5)
    cfg = LossConfig(dice_weight=0.0, ce_weight=1.0)
    assert float(supervised_loss(logits, target, cfg)) == pytest.approx(ce, rel=1e-5)


def test_boundary_band_marks_both_sides_of_every_edge():
    y = torch.zeros(1, 2, 12, 12, 12)
    y[0, 0, 4:8, 4:8, 4:8] = 1  # channel 1 empty: no edge, no band
    band = boundary_band(y, 2)
    assert band[0, 1].sum() == 0
    idx = torch.arange(12)
    zz, yy, xx = torch.meshgrid(idx, idx, idx, indexing="ij")
    inside = y[0, 0].bool()
    # outside: within 2 (max-norm) of the cube; inside: within 2 of a face (the cube is 4 wide)
    near_out = ((zz - 5.5).abs() <= 3.5) & ((yy - 5.5).abs() <= 3.5) & ((xx - 5.5).abs() <= 3.5)
    assert torch.equal(band[0, 0].bool(), near_out | inside)
    assert float(boundary_band(torch.ones(1, 1, 5, 5, 5), 1).sum()) == 0  # no edge in view


def test_boundary_weight_counts_edge_errors_more():
    target = torch.zeros(1, 1, 12, 12, 12)
    target[..., 3:9, 3:9, 3:9] = 1
    logits = torch.where(target > 0, 3.0, -3.0)
    edge_error, far_error = logits.clone(), logits.clone()
    edge_error[0, 0, 2, 5, 5] = 3.0  # one false voxel next to the edge
    far_error[0, 0, 11, 11, 11] = 3.0  # one false voxel far from it
    plain = LossConfig(dice_weight=0.0, ce_weight=1.0)
    weighted = LossConfig(dice_weight=0.0, ce_weight=1.0, boundary_weight=2.0)
    assert float(supervised_loss(edge_error, target, plain)) == pytest.approx(
        float(supervised_loss(far_error, target, plain))
    )
    assert float(supervised_loss(edge_error, target, weighted)) > float(
        supervised_loss(far_error, target, weighted)
    )
    # with a 0/1 mask too: masked-out voxels stay out however near the edge they are
    mask = torch.ones_like(target)
    mask[0, 0, 2, 5, 5] = 0
    assert float(supervised_loss(edge_error, target, weighted, weight=mask)) == pytest.approx(
        float(supervised_loss(logits, target, weighted, weight=mask))
    )
    with pytest.raises(LoFiError, match="boundary_weight"):
        LossConfig(boundary_weight=-1.0)


def test_gate_masks_voxels_per_voxel():
    # network k predicts p=0.5 everywhere (BCE = ln 2 whatever the target)
    # except voxel 1 where it is confident (p=0.9) and the other net says 0.1.
    logits_k = torch.tensor([0.0, logit(0.9), 0.0, 0.0]).view(1, 1, 1, 1, 4)
    probs_o = torch.tensor([0.3, 0.1, 0.6, 0.5]).view(1, 1, 1, 1, 4)
    per_voxel = [LN2, bce(0.9, 0.1) - 0.0, LN2, LN2]
    # BCE with soft targets: -(t log p + (1-t) log(1-p)); at p=0.5 it is ln 2 for any t
    per_voxel[1] = -(0.1 * math.log(0.9) + 0.9 * math.log(0.1))
    # critic confidence: 0.9 on voxels 0 and 2, 0.1 (< t_m = 0.2) on voxels 1 and 3
    critic = torch.tensor([logit(0.9), logit(0.1), logit(0.9), logit(0.1)]).view(1, 1, 1, 1, 4)
    assert confidence_mask(critic).flatten().tolist() == [1.0, 0.0, 1.0, 0.0]
    gated = float(mutual_loss(logits_k, probs_o, critic, threshold=0.2, gated=True))
    assert gated == pytest.approx((per_voxel[0] + per_voxel[2]) / 4, rel=1e-5)
    # the masked voxel 1 has the largest BCE: the gate really removed it
    everywhere = float(mutual_loss(logits_k, probs_o, None))
    assert everywhere == pytest.approx(sum(per_voxel) / 4, rel=1e-5)
    assert everywhere > gated
    # released variant: mask times the already averaged BCE -> mean(mask) * mean(BCE)
    released = float(mutual_loss(logits_k, probs_o, critic, threshold=0.2, gated=False))
    assert released == pytest.approx(0.5 * sum(per_voxel) / 4, rel=1e-5)
    assert released != pytest.approx(gated, rel=1e-3)


def test_mutual_loss_stops_gradient_to_teacher():
    logits_k = torch.zeros(1, 2, 2, 2, 2, requires_grad=True)
    probs_o = torch.full((1, 2, 2, 2, 2), 0.7, requires_grad=True)
    mutual_loss(logits_k, probs_o, None).backward()
    assert probs_o.grad is None
    # d/dlogit BCE(sigmoid(z), t) = sigmoid(z) - t = 0.5 - 0.7, averaged over 16 values
    assert torch.allclose(logits_k.grad, torch.full_like(logits_k, -0.2 / 16))


def test_gated_mutual_gradient_is_zero_on_masked_voxels():
    logits_k = torch.zeros(1, 1, 1, 1, 2, requires_grad=True)
    probs_o = torch.tensor([0.9, 0.9]).view(1, 1, 1, 1, 2)
    critic = torch.tensor([5.0, -5.0]).view(1, 1, 1, 1, 2)
    mutual_loss(logits_k, probs_o, critic).backward()
    g = logits_k.grad.flatten()
    assert g[1] == 0 and g[0] != 0


def test_adversarial_and_critic_losses():
    c = torch.full((1, 2, 1, 1, 1), logit(0.25))
    assert float(generator_adversarial_loss(c)) == pytest.approx(bce(0.25, 1), rel=1e-5)
    real = torch.full((1, 2, 1, 1, 1), logit(0.8))
    fake = torch.full((1, 2, 1, 1, 1), logit(0.3))
    expected = 0.5 * (bce(0.8, 1) + bce(0.3, 0))
    assert float(critic_loss(real, fake)) == pytest.approx(expected, rel=1e-5)


def test_loss_config_needs_critic():
    assert LossConfig().needs_critic
    off = LossConfig(use_adversarial=False, train_critic=False, use_gate=False)
    assert not off.needs_critic


def test_mutual_rampup_starts_near_zero_and_reaches_alpha():
    from lofihippseg.training.losses import LossConfig

    cfg = LossConfig(mutual_rampup=0.25)
    scales = [cfg.mutual_scale(i, 100) for i in range(0, 101, 5)]
    assert scales[0] < 0.01
    assert all(a <= b for a, b in zip(scales, scales[1:], strict=False))
    assert cfg.mutual_scale(25, 100) == 1.0 and cfg.mutual_scale(99, 100) == 1.0
    assert LossConfig(mutual_rampup=0.0).mutual_scale(0, 100) == 1.0
