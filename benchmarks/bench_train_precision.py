"""``lofihippseg train`` with no options on the MSD crops, in bfloat16 and in float32.

The MSD benchmark's seeded split (``msd_hippocampus/run.py``: 144 train, 16 validation, 41
test crops, seed 0). For each precision, ``lofihippseg train CASES.csv`` runs with its defaults
(the planner: patch, width, batch, learning rate, and the iterations that fill its 20-minute CPU
budget, measured on this machine) plus only ``--no-amp`` for float32 and ``--seed``; then
``predict`` on the test crops (whole crops, as the MSD benchmark does) and ``evaluate``. Printed
per precision: the plan's seconds per iteration and iterations, the training wall time, Dice
and HD95 (mean over test crops and both labels) and the iterations per minute against float32.

Usage: ``python benchmarks/bench_train_precision.py [--out DIR] [--threads 2]
[--precisions bfloat16 float32] [--time-budget 20]``
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "msd_hippocampus"
sys.path.insert(0, str(HERE))

import ours_side  # noqa: E402
import run as msd  # noqa: E402


def train_once(name: str, extra: list[str], data_csv: Path, work: Path, threads, budget) -> dict:
    """``train`` with its defaults (plus ``extra``); its plan, iterations and wall time."""
    runs, log_path = work / "runs", work / f"{name}.log"
    cmd = ours_side.cli(
        "train", str(data_csv), "--out", str(runs), "--name", name, "--seed", "0",
        "--time-budget", str(budget), *extra,
    )  # fmt: skip
    seconds = ours_side._run(cmd, log_path, ours_side._env(threads))
    config = json.loads((runs / name / "config.json").read_text())
    rows = list(csv.DictReader(open(runs / name / "metrics.csv")))
    return {
        "run": runs / name,
        "train_s": seconds,
        "iterations": config["iterations"],
        "plan": config.get("plan", []),
        "loop_s": float(rows[-1]["seconds"]) if rows else float("nan"),
        "best_val_dice": float(rows[-1]["best_dice"]) if rows else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_train_precision"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--time-budget", type=float, default=20.0, help="train's budget (minutes)")
    args = ap.parse_args()
    cases = msd.find_cases(msd.DEFAULT_DATA)
    split = msd.make_split(cases, 41, 16, None, 0)
    work = args.out
    data_csv = ours_side.write_training_data(work / "data", split["train"], split["val"])
    test_images = msd.link_folder(split["test"], work / "test" / "images", "image")
    test_labels = msd.link_folder(split["test"], work / "test" / "labels", "label")
    results = {}
    for name in args.precisions:
        extra = ["--no-amp"] if name == "float32" else []
        t = time.perf_counter()
        trained = train_once(name, extra, data_csv, work, args.threads, args.time_budget)
        row = ours_side.OursRow(name)
        summary, per_case = ours_side.predict_and_evaluate(
            row, trained["run"], work, test_images, test_labels, 41, "cpu", args.threads
        )
        trained.update(summary=summary, predict_s_per_case=per_case)
        trained["total_s"] = time.perf_counter() - t
        results[name] = trained
        print(f"{name}: {json.dumps(summary['label_average'])[:400]}", flush=True)
        print("  plan: " + " | ".join(trained["plan"]), flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print("\nprecision  iterations  train min  it/min   Dice    HD95 mm  (MSD test, 41 crops)")
    base = results.get("float32")
    for name, r in results.items():
        s = r["summary"]
        dice, hd95 = _mean(s, "dice"), _mean(s, "hd95")
        rate = r["iterations"] / (r["loop_s"] / 60)
        ratio = ""
        if base and name != "float32":
            ratio = f"  ({rate / (base['iterations'] / (base['loop_s'] / 60)):.2f}x float32)"
        print(f"{name:9s}  {r['iterations']:10d}  {r['train_s'] / 60:9.1f}  {rate:6.1f}  "
              f"{dice:.4f}  {hd95:7.3f}{ratio}")  # fmt: skip
    return 0


def _mean(summary: dict, metric: str) -> float:
    """The mean over test crops of ``metric`` averaged over both labels (``evaluate``)."""
    return float(summary["label_average"][metric]["mean"])


if __name__ == "__main__":
    sys.exit(main())
