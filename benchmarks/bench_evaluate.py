"""Time ``lofihippseg`` evaluation against DeepMind's ``surface-distance`` on a LISA-sized pair.

A 159 x 231 x 195 pair of label maps with two hippocampus-sized blobs (left = 1, right = 2,
about 3.5 mL each at 1 mm) is scored by

- ours: ``compute_case_metrics`` (arrays) and ``evaluate`` (files, including NIfTI reading);
- the reference: the LISA organisers' computation with ``surface_distance`` (Dice, HD, HD95,
  ASSD, RVE per label) on the same arrays, and with the same NIfTI reading for the file timing.

Prints the best of ``--repeats`` timings and the ratio reference / ours (> 1: we are faster),
for 1 mm isotropic and an anisotropic spacing, and checks that the values agree.

Usage: ``python benchmarks/bench_evaluate.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from lofihippseg.io.nifti import load_label
from lofihippseg.metrics.evaluate import compute_case_metrics, evaluate

warnings.simplefilter("ignore", DeprecationWarning)
import surface_distance as sd  # noqa: E402

SHAPE = (159, 231, 195)


def make_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: two ellipsoids (semi-axes 8, 18, 7 voxels); prediction: shifted, noisy."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    gt = np.zeros(SHAPE, np.uint8)
    for label, cx in ((1, 55), (2, 104)):
        centre = (cx, 120, 90)
        radii = (8.0, 18.0, 7.0)
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        gt[inside] = label
    pred = np.zeros_like(gt)
    for label in (1, 2):
        mask = np.roll(gt == label, shift=(1, -1, 0), axis=(0, 1, 2))
        edge = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        mask = np.where(edge, rng.random(SHAPE) > 0.5, mask)
        pred[ndimage.binary_opening(mask)] = label
    return pred, gt


def reference_metrics(pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    """The organisers' computation (their scoring script, with the real spacing)."""
    out = {}
    for label in (1, 2):
        g, p = gt == label, pred == label
        dist = sd.compute_surface_distances(p, g, spacing_mm=spacing)
        out[label] = {
            "dice": sd.compute_dice_coefficient(g, p),
            "hd": sd.compute_robust_hausdorff(dist, 100),
            "hd95": sd.compute_robust_hausdorff(dist, 95),
            "assd": float(np.mean(sd.compute_average_surface_distance(dist))),
            "rve": abs(int(p.sum()) - int(g.sum())) / int(g.sum()),
        }
    return out


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per method (best kept)")
    args = parser.parse_args()
    pred, gt = make_pair()
    print(
        f"volume {SHAPE}, label volumes (voxels): "
        f"{[int((gt == lab).sum()) for lab in (1, 2)]} (gt), "
        f"{[int((pred == lab).sum()) for lab in (1, 2)]} (pred)"
    )
    for spacing in ((1.0, 1.0, 1.0), (0.9, 1.2, 2.5)):
        t_ours, ours = best_time(lambda s=spacing: compute_case_metrics(pred, gt, s), args.repeats)
        t_ref, ref = best_time(lambda s=spacing: reference_metrics(pred, gt, s), args.repeats)
        worst = max(abs(ours[lab][k] - ref[lab][k]) for lab in (1, 2) for k in ref[lab])
        print(
            f"spacing {spacing}: arrays  ours {t_ours * 1000:7.1f} ms  reference "
            f"{t_ref * 1000:7.1f} ms  ratio {t_ref / t_ours:5.2f}x  max |diff| {worst:.1e}"
        )
        with tempfile.TemporaryDirectory() as tmp:
            affine = np.diag([*spacing, 1.0])
            for name, data in (("gt", gt), ("pred", pred)):
                img = nib.Nifti1Image(data, affine)
                img.set_qform(affine, code=1)
                img.set_sform(affine, code=1)
                nib.save(img, str(Path(tmp) / f"{name}.nii.gz"))
            gt_file, pred_file = Path(tmp) / "gt.nii.gz", Path(tmp) / "pred.nii.gz"

            def ref_files(gt_file=gt_file, pred_file=pred_file, spacing=spacing) -> dict:
                g = np.asanyarray(nib.load(str(gt_file)).dataobj)
                p = np.asanyarray(nib.load(str(pred_file)).dataobj)
                return reference_metrics(p, g, spacing)

            def ours_files(gt_file=gt_file, pred_file=pred_file):
                return evaluate(pred_file, gt_file)

            t_ours_f, _ = best_time(ours_files, args.repeats)
            t_ref_f, _ = best_time(ref_files, args.repeats)
            assert np.allclose(load_label(gt_file).spacing, spacing)
        print(
            f"spacing {spacing}: files   ours {t_ours_f * 1000:7.1f} ms  reference "
            f"{t_ref_f * 1000:7.1f} ms  ratio {t_ref_f / t_ours_f:5.2f}x"
        )


if __name__ == "__main__":
    main()
