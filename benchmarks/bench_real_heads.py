"""Real heads: ``predict`` on the held-back IXI T1 heads (2 mm, DLMUSE labels), Dice and time.

The heads are ``lofihippseg.io.ixi``'s held-back split of ``../shared/data/ixi_dlmuse`` (never
trained on). Each head runs through ``Predictor.predict_volume`` (predict's own pipeline, the
model as loaded, one process, ``--threads`` threads) after one warm-up; printed per model:

- how many heads have both sides found (a side with no voxel counts as missing), how many fell
  back to another way of finding a side (the sidecar's ``roi_side_search``);
- Dice per side (mean, min), HD95 (mm, mean over found sides), volume ratio predicted / DLMUSE
  (median, and the share of sides within 0.9-1.1);
- seconds per head (mean; and over heads where the localiser found both sides);
- v12's figures on the same ten-head study (issue 41): Dice 0.80 (its whole-volume pass),
  today's lean pipeline before the side search: 0.34, 6 of 10 heads with a side missing.

Usage: ``python benchmarks/bench_real_heads.py [--model PATH ...] [--n 30] [--threads 2]
[--root DIR] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

V12_REFERENCE = {"dice_mean": 0.80, "lean_before_dice": 0.34, "lean_before_missing": "6/10"}


def evaluate_model(model_arg: str | None, cases, settings_kwargs: dict) -> dict:
    """Predict every case with one model; per-head rows and a summary."""
    from lofihippseg.inference.model_loading import load_model
    from lofihippseg.inference.predictor import Predictor
    from lofihippseg.inference.settings import PredictSettings
    from lofihippseg.io.ixi import hippocampus_labels
    from lofihippseg.io.nifti import load_image, load_label
    from lofihippseg.metrics.overlap import overlap_metrics
    from lofihippseg.metrics.surface import surface_metrics

    predictor = Predictor(load_model(model_arg), PredictSettings(**settings_kwargs))
    rows = []
    for i, case in enumerate(cases):
        volume = load_image(case.image)
        truth = hippocampus_labels(load_label(case.label, volume).data)
        if i == 0:
            predictor.predict_volume(volume)  # warm-up: first-call costs are not a head's
        t = time.perf_counter()
        pred = predictor.predict_volume(volume)
        seconds = time.perf_counter() - t
        row = {
            "case": case.name,
            "seconds": seconds,
            "side_search": pred.info.get("roi_side_search"),
            "localised_both": pred.info.get("roi_side_search") is None
            and pred.info.get("roi_source") == "localiser"
            and "roi_fallback" not in pred.info,
        }
        for side, label in (("left", 1), ("right", 2)):
            gt, pr = truth == label, pred.labels == label
            m = overlap_metrics(gt, pr, volume.voxel_volume_ml)
            row[f"{side}_dice"] = m["dice"]
            row[f"{side}_ratio"] = m["volume_pred_ml"] / max(m["volume_gt_ml"], 1e-9)
            row[f"{side}_found"] = bool(pr.any())
            row[f"{side}_hd95"] = (
                surface_metrics(gt, pr, volume.spacing)["hd95"] if pr.any() else float("nan")
            )
        rows.append(row)
        found_by = (row["side_search"] or {}).get("by")
        search = f"  side search: {found_by}" if found_by else ""
        print(
            f"  {case.name:24s} L {row['left_dice']:.3f} R {row['right_dice']:.3f} "
            f"{seconds:5.2f} s{search}",
            flush=True,
        )
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    """The figures the card and the issue ask for."""
    dice = [r[f"{s}_dice"] for r in rows for s in ("left", "right")]
    ratios = [r[f"{s}_ratio"] for r in rows for s in ("left", "right")]
    hd95 = [r[f"{s}_hd95"] for r in rows for s in ("left", "right") if r[f"{s}_found"]]
    fast = [r["seconds"] for r in rows if r["localised_both"]]
    return {
        "heads": len(rows),
        "both_found": sum(r["left_found"] and r["right_found"] for r in rows),
        "side_search": sum(bool(r["side_search"]) for r in rows),
        "dice_mean": statistics.fmean(dice),
        "dice_left": statistics.fmean(r["left_dice"] for r in rows),
        "dice_right": statistics.fmean(r["right_dice"] for r in rows),
        "dice_min": min(dice),
        "hd95_mean": statistics.fmean(hd95) if hd95 else float("nan"),
        "volume_ratio_median": statistics.median(ratios),
        "volume_ratio_mean": statistics.fmean(ratios),
        "within_0.9_1.1": sum(0.9 <= x <= 1.1 for x in ratios) / len(ratios),
        "seconds_mean": statistics.fmean(r["seconds"] for r in rows),
        "seconds_localised": statistics.fmean(fast) if fast else float("nan"),
    }


def main() -> None:
    from lofihippseg.io.ixi import DEFAULT_ROOT, find_cases, split_cases

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None, help="bundle (default: shipped)")
    ap.add_argument("--n", type=int, default=30, help="held-back heads to run (at most 30)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--split", default="held", choices=["held", "val", "train"])
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--family", default=None)
    ap.add_argument("--no-refiner", action="store_true", help="predict's --no-refiner")
    ap.add_argument("--json", type=Path, default=None, help="write every row here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = split_cases(find_cases(args.root))[args.split][: args.n]
    settings = {"amp": False} if args.no_amp else {}
    if args.family:
        settings["family"] = args.family
    if args.no_refiner:
        settings["refine"] = False
    results = {}
    for model in args.model or [None]:
        name = model or "shipped"
        print(f"{name}: {len(cases)} {args.split} IXI heads, {args.threads} threads", flush=True)
        results[name] = evaluate_model(model, cases, settings)
    print(
        "\nmodel                both found  side search  Dice (L / R / min)     HD95 mm  "
        "vol ratio (median, in 0.9-1.1)  s/head (localised)"
    )
    for name, res in results.items():
        s = res["summary"]
        print(
            f"{Path(name).name[:20]:20s} {s['both_found']:3d}/{s['heads']:<3d}     "
            f"{s['side_search']:3d}        {s['dice_mean']:.3f} "
            f"({s['dice_left']:.3f} / {s['dice_right']:.3f} / "
            f"{s['dice_min']:.3f})  {s['hd95_mean']:6.2f}   {s['volume_ratio_median']:.3f}, "
            f"{100 * s['within_0.9_1.1']:.0f} %                  {s['seconds_mean']:.2f} "
            f"({s['seconds_localised']:.2f})"
        )
    print(
        f"reference (issue 41, ten other IXI heads): v12 code Dice {V12_REFERENCE['dice_mean']}; "
        f"lean predict before the side search {V12_REFERENCE['lean_before_dice']}, "
        f"a side missing on {V12_REFERENCE['lean_before_missing']}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    from lofihippseg.errors import LoFiError

    np.seterr(all="ignore")
    try:
        main()
    except LoFiError as exc:  # missing heads or a bad model: one line
        raise SystemExit(f"error: {exc}") from None
