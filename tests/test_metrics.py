"""Metrics: analytic shapes with exact expected values, the empty-mask policy, and agreement
with DeepMind's ``surface-distance`` package (the organisers' reference) on random shapes."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy import ndimage

from lofihippseg.metrics.evaluate import MISSING_VALUES, compute_case_metrics
from lofihippseg.metrics.overlap import overlap_metrics
from lofihippseg.metrics.surface import (
    average_surface_distances,
    compute_surface_distances,
    neighbour_codes,
    robust_hausdorff,
    surface_metrics,
    surfel_area_table,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    sd_ref = pytest.importorskip("surface_distance")
    from surface_distance import lookup_tables

SPACINGS = [(1.0, 1.0, 1.0), (0.7, 1.3, 2.9), (1.0, 1.0, 4.0)]


def reference(gt: np.ndarray, pred: np.ndarray, spacing) -> dict[str, float]:
    """The LISA organisers' computation with the reference package."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        d = sd_ref.compute_surface_distances(pred, gt, spacing_mm=spacing)
        return {
            "hd": sd_ref.compute_robust_hausdorff(d, 100),
            "hd95": sd_ref.compute_robust_hausdorff(d, 95),
            "assd": float(np.mean(sd_ref.compute_average_surface_distance(d))),
            "dice": sd_ref.compute_dice_coefficient(gt, pred),
        }


def blob(shape, rng, n_seeds=4, iterations=3) -> np.ndarray:
    seeds = np.zeros(shape, bool)
    for _ in range(n_seeds):
        seeds[tuple(rng.integers(3, s - 3) for s in shape)] = True
    mask = ndimage.binary_dilation(seeds, iterations=iterations)
    return mask | (ndimage.binary_dilation(mask) & (rng.random(shape) > 0.6))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_surfel_area_table_matches_reference(spacing):
    ours = surfel_area_table(spacing)
    ref = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_neighbour_codes_match_reference_correlation():
    mask = np.random.default_rng(0).random((7, 8, 9)) > 0.5
    padded = np.pad(mask, ((0, 1),) * 3).astype(np.uint8)  # the reference's crop layout
    ref = ndimage.correlate(padded, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant")
    np.testing.assert_array_equal(neighbour_codes(mask), ref)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("offset", [(3, 0, 0), (0, 2, 0), (2, 1, 3)])
def test_single_voxels_exact_distances(spacing, offset):
    """One voxel each: 8 equal-area surfels at the corners, so every value is analytic."""
    gt = np.zeros((12, 12, 12), bool)
    pred = np.zeros_like(gt)
    gt[2, 2, 2] = True
    pred[2 + offset[0], 2 + offset[1], 2 + offset[2]] = True
    s, k = np.asarray(spacing), np.asarray(offset)
    corners = np.array(list(itertools.product((0, 1), repeat=3)))
    # nearest pred corner of gt corner c is k + c' with c'_i = c_i if k_i == 0 else 0
    per_axis = np.where(k == 0, 0, k - corners)
    dists = np.sqrt(((per_axis * s) ** 2).sum(axis=1))
    m = surface_metrics(gt, pred, spacing)
    assert m["hd"] == pytest.approx(float(np.sqrt(((k * s) ** 2).sum())), abs=1e-9)
    assert m["hd95"] == pytest.approx(m["hd"], abs=1e-9)  # 95 % lands on the 8th of 8 surfels
    assert m["assd"] == pytest.approx(float(dists.mean()), abs=1e-9)


@pytest.mark.parametrize(
    "spacing,gap", [((1.0, 1.0, 1.0), (2, 2, 2)), ((1.0, 2.0, 0.5), (2, 1, 4))]
)
def test_concentric_boxes_exact(spacing, gap):
    """Outer box = inner box grown by the same gap in mm on every side."""
    g = np.asarray(gap)
    inner_lo, inner_n = np.array([6, 5, 9]), np.array([10, 6, 12])
    shape = tuple(int(v) for v in inner_lo + inner_n + g + 4)
    gt = np.zeros(shape, bool)
    pred = np.zeros_like(gt)
    gt[tuple(slice(a, a + n) for a, n in zip(inner_lo, inner_n, strict=True))] = True
    pred[tuple(slice(a - d, a + n + d) for a, n, d in zip(inner_lo, inner_n, g, strict=True))] = (
        True
    )
    gap_mm = float(g[0] * spacing[0])
    sd = compute_surface_distances(gt, pred, spacing)
    # every inner surfel is exactly gap_mm from the outer surface
    np.testing.assert_allclose(sd.gt_to_pred, gap_mm, atol=1e-9)
    assert average_surface_distances(sd)[0] == pytest.approx(gap_mm, abs=1e-9)
    # the farthest outer surfels are the corners: gap_mm in all three axes
    assert robust_hausdorff(sd, 100) == pytest.approx(gap_mm * np.sqrt(3), abs=1e-9)
    # overlap metrics from the voxel counts
    voxel_ml = float(np.prod(spacing)) / 1000
    n_in, n_out = int(np.prod(inner_n)), int(np.prod(inner_n + 2 * g))
    m = overlap_metrics(gt, pred, voxel_ml)
    assert m["dice"] == pytest.approx(2 * n_in / (n_in + n_out))
    assert m["precision"] == pytest.approx(n_in / n_out)
    assert m["recall"] == 1.0
    assert m["rve"] == pytest.approx((n_out - n_in) / n_in)
    assert m["volume_gt_ml"] == pytest.approx(n_in * voxel_ml)
    ref = reference(gt, pred, spacing)
    ours = surface_metrics(gt, pred, spacing)
    for key in ("hd", "hd95", "assd"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-6)


def test_identical_sphere_is_perfect():
    zz, yy, xx = np.mgrid[:30, :30, :30]
    ball = (zz - 15) ** 2 + (yy - 14) ** 2 + (xx - 16) ** 2 <= 81
    labels = ball.astype(np.uint8)
    m = compute_case_metrics(labels, labels, (0.8, 1.1, 1.7), labels=(1,))[1]
    assert (m["dice"], m["hd"], m["hd95"], m["assd"], m["rve"]) == (1.0, 0.0, 0.0, 0.0, 0.0)
    assert m["volume_pred_ml"] == pytest.approx(ball.sum() * 0.8 * 1.1 * 1.7 / 1000)


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_match_reference(seed):
    rng = np.random.default_rng(seed)
    spacing = SPACINGS[seed % len(SPACINGS)]
    shape = (28, 33, 25)
    gt, pred = blob(shape, rng), blob(shape, rng)
    if seed % 2:  # partly overlapping variants
        pred = ndimage.binary_erosion(gt) | (pred & (rng.random(shape) > 0.5))
    ours = surface_metrics(gt, pred, spacing)
    ref = reference(gt, pred, spacing)
    for key in ("hd", "hd95", "assd"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-6), key
    assert overlap_metrics(gt, pred, 1.0)["dice"] == pytest.approx(ref["dice"], abs=1e-12)


def test_case_metrics_two_labels_match_reference():
    rng = np.random.default_rng(7)
    spacing = (0.9, 1.2, 2.5)
    shape = (40, 36, 30)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    gt[blob(shape, rng)] = 1
    gt[blob(shape, rng) & (gt == 0)] = 2
    pred[blob(shape, rng)] = 2
    pred[ndimage.binary_erosion(gt == 1)] = 1
    metrics = compute_case_metrics(pred, gt, spacing)
    for label in (1, 2):
        ref = reference(gt == label, pred == label, spacing)
        for key in ("dice", "hd", "hd95", "assd"):
            assert metrics[label][key] == pytest.approx(ref[key], abs=1e-6)
        assert metrics[label]["status"] == "ok"


def test_empty_policy():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[2:5, 2:5, 2:5] = 1
    m = compute_case_metrics(gt * 0, gt, (1.0, 1.0, 1.0))
    assert m[1]["status"] == "pred_empty"
    for key, value in MISSING_VALUES.items():
        assert m[1][key] == value
    assert m[2]["status"] == "both_empty"
    assert (m[2]["dice"], m[2]["hd"], m[2]["hd95"], m[2]["assd"], m[2]["rve"]) == (1, 0, 0, 0, 0)
    m = compute_case_metrics(gt, gt * 0, (1.0, 1.0, 1.0))
    assert m[1]["status"] == "gt_empty" and m[1]["hd"] == 256.0 and m[1]["assd"] == 1000.0
    assert m[1]["rve"] == 1.0
    values = [v for row in m.values() for v in row.values() if not isinstance(v, str)]
    assert np.isfinite(values).all()


def test_low_level_empty_mask_gives_inf_not_crash():
    a = np.zeros((6, 6, 6), bool)
    b = a.copy()
    b[2:4, 2:4, 2:4] = True
    sd = compute_surface_distances(a, b, (1.0, 1.0, 1.0))
    assert sd.gt_to_pred.size == 0 and np.isinf(sd.pred_to_gt).all()
    assert robust_hausdorff(sd, 95) == float("inf")


def test_edge_visibility_separates_a_visible_edge_from_an_isointense_structure():
    from lofihippseg.metrics.visibility import edge_visibility, sides_visibility

    rng = np.random.default_rng(1)
    noise = rng.normal(1.0, 0.1, (30, 30, 30))
    grid = np.stack(np.meshgrid(*[np.arange(30)] * 3, indexing="ij"))
    ball = ((grid - 15) ** 2).sum(0) <= 36
    # the same intensity as its neighbours: nothing marks its edge
    assert edge_visibility(noise, ball) < 0.3
    # one noise std brighter: visibility about 1; five: about 5
    assert edge_visibility(noise + 0.1 * ball, ball) == pytest.approx(1.0, abs=0.3)
    assert edge_visibility(noise + 0.5 * ball, ball) == pytest.approx(5.0, abs=1.0)
    labels = np.zeros(noise.shape, np.uint8)
    labels[ball] = 2
    out = sides_visibility(noise + 0.5 * ball, labels)
    assert out["left"] is None and out["right"] > 3
