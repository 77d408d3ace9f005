"""Real-data benchmark: lofihippseg beside nnU-Net v2 on MSD Task04 hippocampus, same split.

One command trains our model (and, unless skipped, nnU-Net v2) on a fixed seeded split of the
201 cases within a stated wall-clock budget, predicts the held-out test cases, scores them with
``lofihippseg evaluate`` and writes ``results.md`` / ``results.csv`` (and the split) to ``--out``.

Examples:
    python benchmarks/msd_hippocampus/run.py --budget-minutes 15            # ours + nnU-Net
    python benchmarks/msd_hippocampus/run.py --ablations --ablation-budget-minutes 5
    python benchmarks/msd_hippocampus/run.py --quick                        # ~2-3 min smoke run
    python benchmarks/msd_hippocampus/run.py --device cuda --nnunet-full    # GPU: + full nnU-Net
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nnunet_side  # noqa: E402
import ours_side  # noqa: E402
from ours_side import OursRow  # noqa: E402
from results_table import Row, markdown_table, verdict, write_csv, write_markdown  # noqa: E402

REPO = HERE.parents[1]
SHARED = Path(os.environ.get("LOFIHIPPSEG_SHARED", REPO.parent / "shared"))
DEFAULT_DATA = SHARED / "data" / "msd_hippocampus"


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    label: Path


def find_cases(data: Path) -> list[Case]:
    """The labelled MSD cases (``imagesTr/X.nii.gz`` with ``labelsTr/X.nii.gz``), sorted by id."""
    images = sorted((data / "imagesTr").glob("*.nii.gz"))
    cases = [
        Case(p.name[: -len(".nii.gz")], p, data / "labelsTr" / p.name)
        for p in images
        if not p.name.startswith(".")
    ]
    cases = [c for c in cases if c.label.is_file()]
    if not cases:
        sys.exit(f"error: {data}: no imagesTr/*.nii.gz with labelsTr/ twins; use --data MSD_DIR")
    return cases


def make_split(
    cases: list[Case], n_test: int, n_val: int, n_train: int | None, seed: int
) -> dict[str, list[Case]]:
    """A seeded split: ``n_test`` test cases, then ``n_val`` validation and the rest training."""
    order = np.random.default_rng(seed).permutation(len(cases))
    if n_test + n_val + 1 > len(cases):
        sys.exit(f"error: {len(cases)} cases cannot hold {n_test} test + {n_val} validation cases")
    test = [cases[i] for i in order[:n_test]]
    rest = [cases[i] for i in order[n_test:]]
    if n_train is not None:
        rest = rest[: n_train + n_val]
    val, train = rest[:n_val], rest[n_val:]
    return {
        k: sorted(v, key=lambda c: c.case_id)
        for k, v in (("train", train), ("val", val), ("test", test))
    }


def write_split(split: dict[str, list[Case]], folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, cases in split.items():
        (folder / f"{name}.list").write_text("".join(f"{c.case_id}\n" for c in cases))
    info = {"seed": seed, **{f"n_{k}": len(v) for k, v in split.items()}}
    (folder / "split.json").write_text(json.dumps(info, indent=2))


def link_folder(cases: list[Case], folder: Path, attr: str) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for case in cases:
        os.symlink(getattr(case, attr).resolve(), folder / f"{case.case_id}.nii.gz")
    return folder


def our_rows(args: argparse.Namespace) -> list[tuple[OursRow, float]]:
    """(row, budget in minutes) for our configurations; fusion rows only re-predict.

    Two rows at the main budget: the full paper recipe, and the same without the critic. The
    ablations change one thing of the paper recipe, on every device: since the critic's terms
    are estimated on a voxel sample (``training.critic_sampling``) the full recipe costs about
    1.1x a critic-free iteration on a CPU, where it used to cost about 10x.
    """
    paper = ["--critic"]  # train's default is without the critic since the critic_seeds runs
    rows = [
        (OursRow("paper", paper, note="paper recipe (planned small-crop settings)"),
         args.budget_minutes),
        (
            OursRow("paper-no-critic", ["--no-critic"], note="paper recipe without the critic"),
            args.budget_minutes,
        ),
    ]  # fmt: skip
    if args.quick:
        return rows[:1]  # the smoke run checks the pipeline, not the configurations
    if not args.ablations:
        return rows
    ab = args.ablation_budget_minutes
    base = "paper"
    if ab != args.budget_minutes:
        base = "paper-ablation-budget"
        rows.append((OursRow(base, paper, note="paper recipe at the ablation budget"), ab))
    rows += [
        (OursRow("single-view", [*paper, "--single-view"], note="network 1 only"), ab),
        (OursRow("view-lowpass", [*paper, "--view-mode", "lowpass"]), ab),
        (OursRow("view-legacy", [*paper, "--view-mode", "legacy"]), ab),
        (OursRow("fusion-mean", [], ["--fusion", "mean"], reuse=base), ab),
        (OursRow("fusion-union", [], ["--fusion", "union"], reuse=base), ab),
        (OursRow("no-gate", [*paper, "--no-gate"], note="mutual loss without the critic gate"),
         ab),
        (OursRow("released", ["--recipe", "released"], note="released recipe (quirks)"), ab),
    ]  # fmt: skip
    return rows


def run_ours(args, split, work: Path, test_images: Path, test_labels: Path, log) -> list[Row]:
    if work.exists():
        shutil.rmtree(work)  # fresh runs (a run folder of the same name would be refused)
    work.mkdir(parents=True)
    data_csv = ours_side.write_training_data(work / "data", split["train"], split["val"])
    base_args = ours_side.base_train_args(args.device, args.seed, args.n_filters, args.batch)
    trained: dict[str, ours_side.TrainResult] = {}
    rows = []
    for row, budget in our_rows(args):
        try:
            if row.reuse is None:
                trained[row.name] = ours_side.train_within_budget(
                    row,
                    work,
                    data_csv,
                    base_args,
                    60 * budget,
                    args.timed_iterations,
                    args.val_every,
                    args.threads,
                    log,
                )
            result = trained[row.reuse or row.name]
            summary, per_case = ours_side.predict_and_evaluate(
                row,
                result.run,
                work,
                test_images,
                test_labels,
                len(split["test"]),
                args.device,
                args.threads,
            )
            note = f"{result.iterations} iterations at {result.s_per_iteration:.2f} s/it"
            if row.reuse:
                note = f"model of '{row.reuse}', predicted with {' '.join(row.predict_args)}"
            rows.append(
                Row(
                    "lofihippseg",
                    row.name,
                    summary,
                    budget,
                    None if row.reuse else result.train_s,
                    per_case,
                    "; ".join(x for x in (row.note, note) if x),
                )
            )
            log(markdown_table(rows[-1:]))
        except Exception as exc:  # keep the other rows; the script exits 1 at the end
            log(f"[ours:{row.name}] FAILED: {exc}")
            traceback.print_exc()
            args.failures.append(f"lofihippseg {row.name}: {str(exc).splitlines()[0]}")
    return rows


def run_nnunet(args, split, work: Path, test_labels: Path, full: bool, log) -> Row | None:
    name = "full default schedule" if full else "3d_fullres, time-budgeted"
    try:
        result = nnunet_side.run_nnunet(
            work,
            split["train"] + split["val"],
            split["test"],
            None if full else args.budget_minutes,
            device=args.device,
            full_schedule=full,
            iters_per_epoch=args.nnunet_iters_per_epoch,
            val_iters=args.nnunet_val_iters,
            log=log,
        )
        summary = ours_side.evaluate(
            result.pred_dir, test_labels, work / "evaluation", work / "nnunet.log"
        )
        budget_lines = nnunet_side.training_log_summary(work).splitlines()
        note = (
            f"plan+preprocess {result.preprocess_s:.0f} s (not in the budget); trains on "
            f"train+val (fold 'all'); default test-time mirroring; "
            + (budget_lines[-1].split("budget: ")[-1] if budget_lines else "")
        )
        return Row(
            "nnU-Net v2",
            name,
            summary,
            None if full else args.budget_minutes,
            result.train_s,
            result.predict_s / result.n_test,
            note,
        )
    except Exception as exc:
        log(f"[nnunet] FAILED: {exc}")
        traceback.print_exc()
        args.failures.append(f"nnU-Net {name}: {str(exc).splitlines()[0]}")
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="MSD Task04 folder (imagesTr/, labelsTr/)."
    )
    p.add_argument("--out", type=Path, default=HERE / "results", help="Results folder.")
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="Training wall-clock budget per method (15 CPU, 60 CUDA; --quick: 1).",
    )
    p.add_argument(
        "--ablation-budget-minutes",
        type=float,
        default=None,
        help="Budget of each ablation row (5; --quick: the main budget).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="Tiny smoke run: 12 training / 4 test cases, 1-minute budget, no nnU-Net.",
    )
    p.add_argument("--skip-nnunet", action="store_true", help="Only our method.")
    p.add_argument("--with-nnunet", action="store_true", help="Run nnU-Net also with --quick.")
    p.add_argument(
        "--nnunet-full",
        action="store_true",
        help="Also nnU-Net's full default schedule (1000 epochs; a GPU job).",
    )
    p.add_argument("--ablations", action="store_true", help="Add the ablation rows.")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Where to train/run.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the split and of our training.")
    p.add_argument("--n-test", type=int, default=None, help="Test cases (41; --quick: 4).")
    p.add_argument(
        "--n-val",
        type=int,
        default=None,
        help="Validation cases taken from the training part (16; --quick: 2).",
    )
    p.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="Training cases (default: all the rest; --quick: 10).",
    )
    p.add_argument(
        "--timed-iterations",
        type=int,
        default=None,
        help="Our first iterations, timed to size the rest of the run (8; --quick: 2).",
    )
    p.add_argument(
        "--val-every",
        type=int,
        default=None,
        help="Our validation interval in iterations (10 on CPU, 100 on CUDA; --quick: 1).",
    )
    p.add_argument(
        "--nnunet-iters-per-epoch",
        type=int,
        default=None,
        help="Epoch length of the budgeted nnU-Net trainer (25 on CPU, 250 on GPU).",
    )
    p.add_argument(
        "--nnunet-val-iters",
        type=int,
        default=None,
        help="Validation iterations per nnU-Net epoch (5 on CPU, 50 on GPU).",
    )
    p.add_argument(
        "--n-filters",
        type=int,
        default=None,
        help="Base width of our VNets (default: planned, 8 on CPU, 16 on CUDA).",
    )
    p.add_argument("--batch", type=int, default=None, help="Our training batch (default: planned).")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for our commands.")
    args = p.parse_args(argv)
    q = args.quick
    gpu = args.device == "cuda"
    defaults = {
        "budget_minutes": 1.0 if q else (60.0 if gpu else 15.0),
        "n_test": 4 if q else 41,
        "n_val": 2 if q else 16,
        "n_train": 10 if q else None,
        "timed_iterations": 2 if q else 8,
        "val_every": 1 if q else (100 if gpu else 10),
        "nnunet_iters_per_epoch": 250 if gpu else (10 if q else 25),
        "nnunet_val_iters": 50 if gpu else (2 if q else 5),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.ablation_budget_minutes is None:
        args.ablation_budget_minutes = args.budget_minutes if q else 5.0
    args.skip_nnunet = args.skip_nnunet or (q and not args.with_nnunet)
    args.failures = []
    args.skipped = []
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    cases = find_cases(args.data)
    split = make_split(cases, args.n_test, args.n_val, args.n_train, args.seed)
    write_split(split, out / "split", args.seed)
    log(
        f"split (seed {args.seed}): {len(split['train'])} train, {len(split['val'])} validation, "
        f"{len(split['test'])} test cases -> {out / 'split'}"
    )
    work = out / "work"
    test_images = link_folder(split["test"], work / "test" / "images", "image")
    test_labels = link_folder(split["test"], work / "test" / "labels", "label")

    rows = run_ours(args, split, work / "ours", test_images, test_labels, log)
    if not args.skip_nnunet:
        row = run_nnunet(args, split, work / "nnunet", test_labels, False, log)
        rows += [row] if row else []
        if args.nnunet_full:
            row = run_nnunet(args, split, work / "nnunet-full", test_labels, True, log)
            rows += [row] if row else []
    if not rows:
        log("no row finished: " + "; ".join(args.failures))
        return 1

    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU core(s), device {args.device}, "
        f"Python {platform.python_version()}"
    )
    header = (
        f"# MSD hippocampus benchmark ({datetime.date.today()})\n\n"
        f"Split (seed {args.seed}): {len(split['train'])} train / {len(split['val'])} validation "
        f"/ {len(split['test'])} test cases of {len(cases)}; labels 1 = anterior, 2 = posterior. "
        f"Machine: {machine}. Dice, HD95 (mm), ASSD (mm): mean ± std over the test cases "
        f"(`lofihippseg evaluate`). Our recipe: what `lofihippseg train` plans for these crops "
        f"(see each run's config.json `plan`; on a CPU: patch 48x64x48, batch 4, 8 filters, "
        f"lr 0.05, intensities clipped to percentiles 0.5-99.5)"
        + (f", with --n-filters {args.n_filters}" if args.n_filters else "")
        + (f", --batch {args.batch}" if args.batch else "")
        + ". Our train wall time includes the timed first iterations."
        + (" QUICK MODE (smoke test, not a result)." if args.quick else "")
    )
    quick = "Quick mode: a smoke test of the pipeline, not a comparison. " if args.quick else ""
    notes = [quick + verdict(rows)] + [f"FAILED: {f}" for f in args.failures]
    notes += [f"SKIPPED: {f}" for f in args.skipped]
    write_markdown(rows, out / "results.md", header, notes)
    write_csv(rows, out / "results.csv")
    log("\n" + markdown_table(rows) + "\n\n" + "\n".join(notes))
    log(f"\nwrote {out / 'results.md'} and {out / 'results.csv'}")
    return 1 if args.failures else 0


if __name__ == "__main__":
    sys.exit(main())
