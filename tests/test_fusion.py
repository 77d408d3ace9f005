"""Fusion, overlap rule, largest component, flip TTA, ROI helpers and volume arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lofihippseg.inference.fusion import (
    disagreement,
    fuse_probabilities,
    fuse_to_labels,
    resolve_overlap,
    view_agreement_dice,
)
from lofihippseg.inference.postprocess import keep_largest_per_side, largest_component
from lofihippseg.inference.roi import margin_voxels, misses_a_side, side_boxes, touches_inner_face
from lofihippseg.inference.tta import flip_probabilities, tta_probabilities
from lofihippseg.reporting.volumes import (
    asymmetry_index,
    read_rows,
    side_volumes_ml,
    update_volumes_csv,
    volume_row,
)


def maps(left1, right1, left2, right2) -> tuple[np.ndarray, np.ndarray]:
    """Two (2, N) probability maps from per-voxel lists."""
    return np.array([left1, right1], float), np.array([left2, right2], float)


def test_mean_and_union_differ_as_defined():
    # voxel 0: one view confident, the other not; voxel 1: both lukewarm; voxel 2: nothing
    p1, p2 = maps([0.9, 0.55, 0.1], [0.0, 0.0, 0.0], [0.05, 0.55, 0.1], [0.0, 0.0, 0.0])
    mean_labels, mean_fused = fuse_to_labels(p1, p2, "mean", 0.5)
    union_labels, union_fused = fuse_to_labels(p1, p2, "union", 0.5)
    assert mean_labels.tolist() == [0, 1, 0]  # (0.9 + 0.05) / 2 < 0.5
    np.testing.assert_allclose(mean_fused[0], [0.475, 0.55, 0.1])
    assert union_labels.tolist() == [1, 1, 0]
    np.testing.assert_allclose(union_fused[0], [0.9, 0.55, 0.1])


def test_mean_threshold_is_strict():
    p1, p2 = maps([0.6], [0.0], [0.4], [0.0])
    assert fuse_to_labels(p1, p2, "mean", 0.5)[0].tolist() == [0]  # mean exactly 0.5: off
    assert fuse_to_labels(p1, p2, "mean", 0.45)[0].tolist() == [1]


def test_union_is_released_or_of_thresholded_views():
    rng = np.random.default_rng(0)
    p1, p2 = rng.random((2, 2, 500))
    labels, _ = fuse_to_labels(p1, p2, "union", 0.5, overlap="released")
    left = (p1[0] > 0.5) | (p2[0] > 0.5)
    right = (p1[1] > 0.5) | (p2[1] > 0.5)
    expected = np.where(right, 2, np.where(left, 1, 0))  # released: right wins overlaps
    np.testing.assert_array_equal(labels, expected)
    assert (left & right).any()  # the rule was exercised


def test_overlap_goes_to_higher_probability():
    masks = np.array([[True, True, True, False], [True, True, False, True]])
    probs = np.array([[0.9, 0.6, 0.8, 0.1], [0.7, 0.6, 0.1, 0.9]])
    assert resolve_overlap(masks, probs).tolist() == [1, 2, 1, 2]  # tie (0.6, 0.6) -> right
    assert resolve_overlap(masks, probs, "released").tolist() == [2, 2, 1, 2]
    with pytest.raises(ValueError):
        resolve_overlap(masks, probs, "nearest")


def test_overlap_rule_in_mean_fusion():
    # both sides above threshold at voxel 0, left more probable; at voxel 1 right more probable
    p1, p2 = maps([0.9, 0.6], [0.7, 0.8], [0.8, 0.6], [0.6, 0.9])
    assert fuse_to_labels(p1, p2, "mean")[0].tolist() == [1, 2]


def test_unknown_fusion_rejected():
    with pytest.raises(ValueError):
        fuse_probabilities(np.zeros((2, 3)), np.zeros((2, 3)), "max")


def test_view_dice_and_disagreement():
    p1, p2 = maps([0.9, 0.9, 0.0], [0.0, 0.0, 0.8], [0.9, 0.0, 0.0], [0.0, 0.0, 0.1])
    # foreground view1: voxels 0, 1, 2; view2: voxel 0 -> Dice 2*1/(3+1)
    assert view_agreement_dice(p1, p2) == pytest.approx(0.5)
    np.testing.assert_allclose(disagreement(p1, p2), [0.0, 0.9, 0.7])
    empty = np.zeros((2, 3))
    assert np.isnan(view_agreement_dice(empty, empty))  # nothing to agree on: not 1.0


def test_largest_component_per_side():
    lab = np.zeros((12, 12, 12), np.uint8)
    lab[1:4, 1:4, 1:4] = 1  # 27 voxels
    lab[8, 8, 8] = 1  # stray left voxel
    lab[6:8, 1:3, 1:3] = 2  # 8 voxels
    lab[10:12, 10:12, 10:12] = 2  # also 8, separate: one of them must go
    lab[1, 10, 10] = 2
    out = keep_largest_per_side(lab)
    assert (out == 1).sum() == 27 and out[8, 8, 8] == 0
    assert (out == 2).sum() == 8
    assert largest_component(np.zeros((3, 3, 3), bool)).sum() == 0


def test_flip_swaps_sides_only_for_left_right_axis():
    p = torch.zeros(2, 4, 3, 2)
    p[0, 0, 1, 0] = 1.0  # left channel at the subject's left
    lr = flip_probabilities(p, (0,))
    assert lr[1, 3, 1, 0] == 1.0 and lr[0].sum() == 0
    ap = flip_probabilities(p, (1,))
    assert ap[0, 0, 1, 0] == 1.0 and ap[1].sum() == 0


def test_tta_keeps_a_left_only_model_on_the_left():
    def left_half_model(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(2, *v.shape)
        half = v.shape[0] // 2
        out[0, :half] = v[:half]  # "left" only where the array's left half is
        out[1, half:] = v[half:]
        return out

    volume = torch.rand(8, 5, 6)
    plain = left_half_model(volume)
    averaged = tta_probabilities(left_half_model, volume)
    torch.testing.assert_close(averaged, plain)  # every flip agrees, sides intact
    assert averaged[0, 4:].abs().sum() == 0 and averaged[1, :4].abs().sum() == 0


def test_side_boxes_and_guard():
    p = torch.zeros(2, 20, 20, 20)
    p[1, 15:17, 8, 9] = 0.9
    assert side_boxes(p, (40, 40, 40), (4, 4, 4)) is None  # one side only: whole volume
    p[0, 3, 8, 9] = 0.9  # the other side
    p[0, 9, 18, 18] = 0.3  # a smaller, separate detection of the same side: ignored
    boxes = side_boxes(p, (40, 40, 40), (4, 4, 4))
    assert len(boxes) == 2
    assert all((s.stop - s.start) % 16 == 0 for box in boxes for s in box)
    left, right = boxes
    assert left[0].start <= 6 - 4 and left[0].stop >= 8 + 4  # covers detection + margin
    assert right[0].start <= 30 - 4 and right[0].stop >= 34 + 4
    assert left[1].stop <= 32  # the stray detection at y = 36 is not boxed
    joined = side_boxes(p, (40, 40, 40), (12, 12, 12))  # boxes that meet become one
    assert len(joined) == 1 and joined[0][0].start <= 2 and joined[0][0].stop >= 38
    q = torch.zeros(2, 40, 40, 40)  # overlapping in x, far apart along the other axes
    q[0, 10, 2, 2] = q[1, 14, 37, 37] = 0.9
    apart = side_boxes(q, (40, 40, 40), (2, 2, 2))
    assert len(apart) == 2 and apart[0][0].start < apart[1][0].stop  # overlap, but two boxes
    assert side_boxes(torch.zeros(2, 4, 4, 4), (8, 8, 8), (1, 1, 1)) is None
    coarse = torch.zeros(2, 10, 10, 10)  # a coarse grid 4x smaller along each axis
    coarse[0, 1, 5, 5] = coarse[1, 8, 5, 5] = 0.9
    far = side_boxes(coarse, (40, 40, 40), (0, 0, 0))
    assert far[0][0].start <= 4 and far[0][0].stop >= 8 and far[1][0].start <= 32
    assert margin_voxels((1.0, 0.5, 2.0), 16) == (16, 32, 8)
    labels = np.zeros((40, 40, 40), np.uint8)
    inner = (slice(8, 24), slice(0, 16), slice(0, 40))
    labels[15, 8, 20] = 1
    assert not touches_inner_face(labels, inner)
    labels[23, 8, 20] = 2  # next to the inner face at x = 24
    assert touches_inner_face(labels, inner)
    labels[:] = 0
    labels[15, 0, 0] = 1  # on the volume's own border: not a cut
    assert not touches_inner_face(labels, inner)
    assert misses_a_side(labels)
    labels[30, 30, 30] = 2
    assert not misses_a_side(labels)


def test_volumes_and_asymmetry():
    lab = np.zeros((5, 5, 5), np.uint8)
    lab[0, :3, :2] = 1  # 6 voxels
    lab[4, 0, :4] = 2  # 4 voxels
    left, right = side_volumes_ml(lab, 0.002)
    assert left == pytest.approx(0.012) and right == pytest.approx(0.008)
    assert asymmetry_index(left, right) == pytest.approx((0.012 - 0.008) / 0.010)
    assert math.isnan(asymmetry_index(0.0, 0.0))


def test_volumes_csv_merges_rows(tmp_path):
    csv_path = tmp_path / "volumes.csv"
    lab = np.ones((2, 2, 2), np.uint8)
    update_volumes_csv(csv_path, [volume_row("b", lab, 1.0, 0.5), volume_row("a", lab, 1.0, 1)])
    update_volumes_csv(csv_path, [volume_row("b", lab * 2, 0.5, 0.7)])  # rerun replaces b
    rows = read_rows(csv_path)
    assert [r["case"] for r in rows] == ["a", "b"]
    assert float(rows[1]["right_ml"]) == 4.0 and float(rows[1]["left_ml"]) == 0.0
    assert rows[0]["asymmetry_index"] == "2.0"
    empty = update_volumes_csv(csv_path, [volume_row("z", lab * 0, 1.0, 1.0)])
    assert read_rows(empty)[-1]["asymmetry_index"] == ""  # NaN written as empty
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
