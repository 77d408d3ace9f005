"""Validate the per-side quality estimate on held-back scans, beside the plain signals.

Reads the tables ``python -m lofihippseg.recipe.quality_fit`` built (``WORK/train``: maps 01-13 and
MSD training crops; ``WORK/held``: maps 14-16 under every contrast, degraded variants, MSD test
crops), recomputes the features from the saved cases (``--recompute``, after features changed)
and prints, per side on the held-back table:

- the estimator's Spearman correlation with the true Dice, mean absolute error, AUC for finding
  sides with Dice < 0.6, and the review flag's catch rate (flagged among Dice < 0.6) and
  false-flag rate (flagged among Dice >= 0.7): the estimator's threshold alone, the per-side
  rules alone (``reporting.status.side_review_reasons``), both (what predict writes), and the
  old case status (not ``ok``);
- the same rank figures for each plain signal (view agreement of the case and of the side,
  family agreement, refiner change, edge visibility);
- the figures by subset (clean heads, degraded heads by degradation, crops) and a reliability
  table by decile of the prediction;
- the CPU seconds per head of features and estimator (from the saved heads);

and writes the predicted-against-true picture (``--png``, default
``docs/images/quality_predicted_vs_true.png``).

Example:
    OMP_NUM_THREADS=1 python benchmarks/bench_quality.py --work runs/quality --recompute
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from lofihippseg.inference.model_loading import DEFAULT_MODEL
from lofihippseg.preprocessing.crop import CROP_MAX_WIDTH_MM
from lofihippseg.quality.estimator import QualityEstimator, estimator_path
from lofihippseg.quality.features import case_features
from lofihippseg.recipe.quality_fit import GOOD, LOW, figures, load_rows, matrix, reliability
from lofihippseg.reporting.status import StatusRules, case_status, side_review_reasons

ROOT = Path(__file__).resolve().parents[1]
BEFORE = StatusRules(max_side_ratio=float("inf"))  # the case status before the asymmetry rule
# plain signals: (feature, sign): higher sign * value = better segmentation expected
SIGNALS = {
    "view agreement (case)": ("view_dice", 1),
    "view agreement (side)": ("side_view_dice", 1),
    "family agreement (best pair)": ("family_best", 1),
    "refiner change (share of voxels)": ("refiner_change", -1),
    "edge visibility": ("edge_visibility", 1),
}


def _fmt(f: dict) -> str:
    parts = [f"n {f['n']} ({f['n_below_0.6']} < 0.6)", f"Spearman {f['spearman']:.3f}"]
    parts.append(f"MAE {f['mae']:.3f}")
    parts.append(f"AUC(<0.6) {f['auc_below_0.6']:.3f}")
    if "catch_rate" in f:
        parts.append(f"catch {f['catch_rate']:.1%}, false flags {f['false_flag_rate']:.1%}")
    return ", ".join(parts)


def case_geometry(work: Path) -> dict[str, tuple[tuple[int, ...], tuple[float, ...], bool]]:
    """(shape, spacing, whether predict ran it as a crop) of each saved case (for the per-side
    rules; tables older than ``info["crop"]`` have the field of view it was decided on)."""
    out = {}
    for path in sorted((work / "cases").glob("*.npz")):
        with np.load(path) as z:
            info = json.loads(str(z["info"]))
            width = info.get("field_of_view_lr_mm", float("inf"))
            crop = bool(info.get("crop", width < CROP_MAX_WIDTH_MM))
            out[path.stem] = (tuple(int(n) for n in z["volume_shape"]), tuple(z["spacing"]), crop)
    return out


def rule_flags(rows: list[dict], geometry: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a per-side rule sends it to review; the old case status was not ``ok``."""
    vols: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        vols[r["case"]][r["side"]] = r["vol_ml"]
        other = "right" if r["side"] == "left" else "left"
        # a crop's other side (not in the table) from the log ratio (0.05 mL added to each)
        ratio = np.exp(r["log_vol_ratio"])
        vols[r["case"]].setdefault(other, max((r["vol_ml"] + 0.05) / ratio - 0.05, 0.0))
    rules, old = [], []
    for r in rows:
        shape, spacing, crop = geometry.get(r["case"], ((160, 192, 176), (1.0, 1.0, 1.0), False))
        v = vols[r["case"]]
        reasons = side_review_reasons(v["left"], v["right"], shape, spacing, crop=crop)
        rules.append(bool(reasons[r["side"]]))
        status = case_status(v["left"], v["right"], r["view_dice"], shape, spacing, BEFORE, crop)
        old.append(status.status != "ok")
    return np.array(rules), np.array(old)


def picture(pred: np.ndarray, dice: np.ndarray, kinds: list[str], below: float, path: Path):
    """Predicted against true Dice, heads and crops, with the review threshold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    kinds_arr = np.array(kinds)
    for kind, colour in (("head", "#1f77b4"), ("crop", "#d62728")):
        m = kinds_arr == kind
        label = "synthetic heads, maps 14-16" if kind == "head" else "MSD test crops (real T1)"
        ax.scatter(pred[m], dice[m], s=12, alpha=0.6, color=colour, label=f"{label} ({m.sum()})")
    ax.plot([0, 1], [0, 1], color="#555", lw=1)
    ax.axvline(below, color="#e08a00", ls="--", lw=1, label=f"review below {below:.2f}")
    ax.axhline(LOW, color="#999", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted Dice (per side)")
    ax.set_ylabel("true Dice")
    ax.set_title("Quality estimate on held-back scans", fontsize=11)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def timing(work: Path, est: QualityEstimator, n: int = 40) -> str:
    """CPU seconds per head of features + estimator (``time.process_time``: this process's own
    time, not inflated by other jobs on the machine) over saved heads, maps as float32 (as in
    predict)."""
    seconds = []
    for path in sorted((work / "cases").glob("held_*.npz"))[:n]:
        with np.load(path) as z:
            a = {k: z[k] for k in z.files}
        maps = [a[k].astype(np.float32) for k in ("prob1", "prob2", "fused")]
        box = tuple(slice(int(lo), int(hi)) for lo, hi in a["box"])
        info = json.loads(str(a["info"]))
        t = time.process_time()
        f = case_features(
            a["image"], a["labels"], *maps, box, tuple(a["spacing"]), float(a["view_dice"]),
            info, tuple(a["volume_shape"]), tuple(a["window_start"]),
        )  # fmt: skip
        est.predict_rows(np.stack([matrix([f[s]], est.features)[0] for s in ("left", "right")]))
        seconds.append(time.process_time() - t)
    s = np.array(seconds)
    return (
        f"{len(s)} saved heads: median {np.median(s):.3f} s, mean {s.mean():.3f}, max "
        f"{s.max():.3f} (CPU time, 1 thread)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    p.add_argument("--estimator", type=Path, default=estimator_path(DEFAULT_MODEL))
    p.add_argument("--recompute", action="store_true", help="features again from saved cases")
    p.add_argument(
        "--png", type=Path, default=ROOT / "docs" / "images" / "quality_predicted_vs_true.png"
    )
    a = p.parse_args()
    est = QualityEstimator.load(a.estimator)
    rows = load_rows(a.work / "held", a.recompute)
    print(f"estimator {a.estimator.name}: {len(est.trees.leaves)} trees of depth "
          f"{est.trees.depth}, review below {est.review_below:.3f}; fitted on "
          f"{est.meta.get('fit', {}).get('n_sides', '?')} sides")  # fmt: skip
    if "out_of_fold" in est.meta:
        print(f"training table, out of fold: {_fmt(est.meta['out_of_fold'])}")
    pred = est.predict_rows(matrix(rows, est.features))
    dice = np.array([r["dice"] for r in rows])
    flag_est = pred < est.review_below
    rules, old = rule_flags(rows, case_geometry(a.work / "held"))
    heads = np.array([r["kind"] == "head" for r in rows])
    print(f"\nheld back (maps 14-16 heads, degraded variants, MSD test crops): {len(rows)} sides")
    print(f"  estimator + rules (predict's review): {_fmt(figures(pred, dice, flag_est | rules))}")
    print(f"  estimator threshold alone: {_fmt(figures(pred, dice, flag_est))}")
    for name, m in (("heads", heads), ("crops", ~heads)):
        if m.any():
            print(f"  {name}: {_fmt(figures(pred[m], dice[m], (flag_est | rules)[m]))}")
            print(f"  {name}, threshold alone: {_fmt(figures(pred[m], dice[m], flag_est[m]))}")
    for name, flags in (("rules alone", rules), ("old case status != ok", old)):
        low, good = dice < LOW, dice >= GOOD
        print(f"  {name}: catch {flags[low].mean():.1%}, false flags {flags[good].mean():.1%}; "
              f"heads only: catch {flags[low & heads].mean():.1%}, false flags "
              f"{flags[good & heads].mean():.1%}")  # fmt: skip
    print("\nplain signals (the value itself as the prediction; MAE only on a Dice scale):")
    for name, (key, sign) in SIGNALS.items():
        value = np.array([float(r.get(key, 0.0)) for r in rows])
        if np.ptp(value) == 0:
            print(f"  {name}: absent from these predictions (predict did not record it)")
            continue
        f = figures(sign * value, dice)
        mae = f" MAE {f['mae']:.3f}," if sign > 0 and key != "edge_visibility" else ""
        print(f"  {name}: Spearman {f['spearman']:+.3f},{mae} AUC(<0.6) {f['auc_below_0.6']:.3f}")
    print("\nby subset (estimator + rules):")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        key = "crop" if r["kind"] == "crop" else f"{r['contrast']}/{r['degradation']}"
        groups[key].append(i)
        if r["kind"] == "head":
            groups[f"degradation {r['degradation']}"].append(i)
    for key in sorted(groups):
        if key.startswith("degradation") or key == "crop":
            idx = np.array(groups[key])
            f = figures(pred[idx], dice[idx], (flag_est | rules)[idx])
            print(f"  {key}: mean true {dice[idx].mean():.3f}, mean predicted "
                  f"{pred[idx].mean():.3f}; {_fmt(f)}")  # fmt: skip
    print("\nreliability by decile of the prediction (held back):")
    print("| predicted | n | mean predicted | mean true |\n|---|---|---|---|")
    for b in reliability(pred, dice):
        print(f"| {b['predicted_from']:.2f}-{b['predicted_to']:.2f} | {b['n']} | "
              f"{b['mean_predicted']:.3f} | {b['mean_true']:.3f} |")  # fmt: skip
    print(f"\nfeatures + estimator per head: {timing(a.work / 'held', est)}")
    picture(pred, dice, [r["kind"] for r in rows], est.review_below, a.png)
    print(f"picture: {a.png}")
    if "held_back" in est.meta:
        print(f"(recorded in the estimator: {json.dumps(est.meta['held_back'].get('all'))})")


if __name__ == "__main__":
    main()
