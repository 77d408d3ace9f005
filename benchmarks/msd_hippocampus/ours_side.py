"""Our side of the MSD hippocampus benchmark: ``lofihippseg train/predict/evaluate`` (the CLI).

The benchmark calls the user-facing command line in subprocesses, so it measures (and keeps
testing) what a user runs. The training budget is met by timing the first few iterations (seconds
per iteration, start-up cost) and resuming the run with the number of iterations that fits the
rest of the budget, so its cosine schedule ends on time.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# The recipe is what ``lofihippseg train`` plans for these crops (``training.plan``): MSD crops
# are 31-43 x 40-59 x 24-47 voxels, so the planner takes a 48x64x48 patch that holds a whole
# crop, clips the heavy intensity tails (uint8 to ~1e6) at percentiles 0.5-99.5, lr 0.05, and
# 8 filters / batch 4 on a CPU (16 / 8 on a GPU). The benchmark adds only what it must fix.
FIXED_ARGS = ["--no-amp", "--num-workers", "0"]


VALIDATION_SHARE = 0.08  # of the resumed run's time


@dataclass
class OursRow:
    """One configuration of our method: extra ``train`` options and extra ``predict`` options."""

    name: str
    train_args: list[str] = field(default_factory=list)
    predict_args: list[str] = field(default_factory=list)
    reuse: str | None = None  # name of a row whose trained model this row only re-predicts
    note: str = ""


def cli(*args: str) -> list[str]:
    """The ``lofihippseg`` command line of the running interpreter."""
    return [sys.executable, "-m", "lofihippseg", *args]


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def _run(cmd: list[str], log_path: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    with open(log_path, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        result = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"command failed ({' '.join(cmd[2:4])}), see {log_path}:\n{tail}")
    return seconds


def write_training_data(folder: Path, train: list, val: list) -> Path:
    """A CSV of the training+validation cases with ``train.list``/``val.list`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "cases.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "image", "label"])
        for case in [*train, *val]:
            writer.writerow([case.case_id, str(case.image), str(case.label)])
    (folder / "train.list").write_text("".join(f"{c.case_id}\n" for c in train))
    (folder / "val.list").write_text("".join(f"{c.case_id}\n" for c in val))
    return folder / "cases.csv"


def base_train_args(
    device: str, seed: int, n_filters: int | None = None, batch_size: int | None = None
) -> list[str]:
    """``train`` options shared by every row; the planner picks the rest (width and batch too,
    unless given)."""
    args = [*FIXED_ARGS, "--device", device, "--seed", str(seed)]
    if n_filters is not None:
        args += ["--n-filters", str(n_filters)]
    if batch_size is not None:
        args += ["--batch", str(batch_size)]
    return args


def _loop_and_validation_seconds(run: Path) -> tuple[float, float]:
    """(seconds of the training loop so far, seconds of one validation) from metrics.csv."""
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    val = [float(r["val_seconds"]) for r in rows if r.get("val_seconds")]
    return float(rows[-1]["seconds"]), (sum(val) / len(val) if val else 0.0)


@dataclass
class TrainResult:
    run: Path
    train_s: float  # wall time of both training commands (what the budget covers)
    iterations: int
    s_per_iteration: float


def train_within_budget(
    row: OursRow,
    work: Path,
    data_csv: Path,
    base_args: list[str],
    budget_s: float,
    first_iterations: int,
    val_every: int,
    threads: int | None,
    log=print,
) -> TrainResult:
    """Train ``first_iterations``, time them, then resume to the iteration count that fits.

    The first command doubles as the timing run: its seconds per iteration (validation time,
    which ``metrics.csv`` records, taken out) and its start-up cost set how many iterations the
    resumed run (``train --resume RUN --iterations N``) gets; the resumed run validates every
    ``val_every`` iterations or less often, so that validations take about 8 % of the rest of the
    budget; its cosine schedule spans all N iterations.
    """
    env = _env(threads)
    runs, log_path = work / "runs", work / f"{row.name}.log"
    cmd = cli("train", str(data_csv), *base_args, "--out", str(runs),
              *row.train_args, "--name", row.name, "--iterations", str(first_iterations),
              "--val-every", str(first_iterations))  # fmt: skip
    log(f"[ours:{row.name}] first {first_iterations} iterations (timing)")
    first_wall = _run(cmd, log_path, env)
    loop_s, val_s = _loop_and_validation_seconds(runs / row.name)
    s_per_it = max(loop_s - val_s, 1e-3) / first_iterations
    every = max(val_every, math.ceil(val_s / (VALIDATION_SHARE * s_per_it)))
    startup = max(first_wall - loop_s, 0.0)
    left = budget_s - first_wall - startup
    extra = max(int(left / (s_per_it + val_s / every)), 0)
    total = first_iterations + extra
    log(f"[ours:{row.name}] {s_per_it:.2f} s/iteration, validation {val_s:.1f} s, start-up "
        f"{startup:.0f} s: {extra} more iterations in the remaining {max(left, 0):.0f} s, "
        f"validating every {every}")  # fmt: skip
    train_s = first_wall
    if extra > 0:
        cmd = cli("train", "--resume", str(runs / row.name), "--iterations", str(total),
                  "--val-every", str(every))  # fmt: skip
        train_s += _run(cmd, log_path, env)
    return TrainResult(runs / row.name, train_s, total, s_per_it)


def predict_and_evaluate(
    row: OursRow,
    run: Path,
    work: Path,
    test_images: Path,
    test_labels: Path,
    n_test: int,
    device: str,
    threads: int | None,
) -> tuple[dict, float]:
    """Predict the test images with ``run`` and score them; returns (summary, seconds per case)."""
    env = _env(threads)
    pred, log_path = work / "predictions" / row.name, work / f"{row.name}.log"
    cmd = cli(
        "predict",
        str(test_images),
        "-o",
        str(pred),
        "--model",
        str(run),
        "--device",
        device,
        "--roi",
        "off",
        "--sliding-window",
        "off",
        "--no-qc",
        "--quiet",
        "--overwrite",
        *row.predict_args,
    )
    predict_s = _run(cmd, log_path, env)
    return evaluate(pred, test_labels, work / "evaluation" / row.name, log_path), predict_s / n_test


def evaluate(pred: Path, labels: Path, out: Path, log_path: Path) -> dict:
    """``lofihippseg evaluate PRED GT -o OUT``; returns its metrics_summary.json."""
    _run(cli("evaluate", str(pred), str(labels), "-o", str(out)), log_path, _env(None))
    return json.loads((out / "metrics_summary.json").read_text())
