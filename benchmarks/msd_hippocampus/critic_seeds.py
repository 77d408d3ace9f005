"""What the critic does: paper (critic) vs paper without critic vs single view, several seeds.

For each seed: a seeded split of the MSD crops (as ``run.py``), then each row trained with the
planned recipe (``lofihippseg train``, no hand-set recipe) either for the same number of
iterations (``--mode iterations``) or within the same wall-clock budget (``--mode budget``),
then predicted and scored on the seed's test cases. Prints and writes a table of the mean and
spread (sample standard deviation over seeds) of each row's test Dice.

Examples:
    OMP_NUM_THREADS=1 python benchmarks/msd_hippocampus/critic_seeds.py --iterations 400
    python benchmarks/msd_hippocampus/critic_seeds.py --mode budget --budget-minutes 5
    python benchmarks/msd_hippocampus/critic_seeds.py --quick        # pipeline check, minutes
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ours_side  # noqa: E402
import run as bench  # noqa: E402
from ours_side import OursRow  # noqa: E402
from results_table import LABELS, Row  # noqa: E402

ROWS = {
    "paper": OursRow("paper", ["--critic"], note="critic on (sampled), gate, adversarial term"),
    "paper-no-critic": OursRow("paper-no-critic", ["--no-critic"]),
    "single-view": OursRow("single-view", ["--critic", "--single-view"]),
}


def train_row(row: OursRow, args, work: Path, data_csv: Path, seed: int) -> tuple[Path, int]:
    """Train one row; returns (run folder, iterations)."""
    base = ours_side.base_train_args(args.device, seed)
    if args.mode == "budget":
        result = ours_side.train_within_budget(
            row, work, data_csv, base, 60 * args.budget_minutes, args.timed_iterations,
            max(10, args.iterations // 4), args.threads, print,
        )  # fmt: skip
        return result.run, result.iterations
    runs = work / "runs"
    cmd = ours_side.cli("train", str(data_csv), *base, "--out", str(runs), *row.train_args,
                        "--name", row.name, "--iterations", str(args.iterations),
                        "--val-every", str(args.iterations))  # fmt: skip
    ours_side._run(cmd, work / f"{row.name}.log", ours_side._env(args.threads))
    return runs / row.name, args.iterations


def run_seed(args, cases, seed: int) -> list[dict]:
    split = bench.make_split(cases, args.n_test, args.n_val, args.n_train, seed)
    work = args.out / f"seed{seed}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    data_csv = ours_side.write_training_data(work / "data", split["train"], split["val"])
    images = bench.link_folder(split["test"], work / "test" / "images", "image")
    labels = bench.link_folder(split["test"], work / "test" / "labels", "label")
    out = []
    for name in args.rows:
        row = ROWS[name]
        run, iterations = train_row(row, args, work, data_csv, seed)
        summary, _ = ours_side.predict_and_evaluate(
            row, run, work, images, labels, len(split["test"]), args.device, args.threads
        )
        stats = Row("lofihippseg", name, summary, None, None, None, "")
        record = {"seed": seed, "row": name, "iterations": iterations}
        for label in LABELS:
            record[f"dice_{label}"] = round(stats.stat(label, "dice")[0], 4)
        out.append(record)
        print(f"seed {seed} {name}: {record}", flush=True)
    return out


def table(records: list[dict], rows: list[str]) -> str:
    """Markdown table: per row, mean ± sample std over seeds of the test Dice per label."""
    head = "| row | seeds | iterations | " + " | ".join(f"Dice {LABELS[lab]}" for lab in LABELS)
    lines = [head + " | mean |", "|---" * (4 + len(LABELS)) + "|"]
    for name in rows:
        mine = [r for r in records if r["row"] == name]
        if not mine:
            continue
        cells, means = [], []
        for label in LABELS:
            values = [r[f"dice_{label}"] for r in mine]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f}")
            means.append(statistics.mean(values))
        its = sorted({r["iterations"] for r in mine})
        lines.append(f"| {name} | {len(mine)} | {'/'.join(map(str, its))} | "
                     + " | ".join(cells) + f" | {statistics.mean(means):.3f} |")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=bench.DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=HERE / "results" / "critic_seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--mode", choices=["iterations", "budget"], default="iterations")
    p.add_argument("--iterations", type=int, default=400, help="per row (--mode iterations)")
    p.add_argument("--budget-minutes", type=float, default=5.0, help="per row (--mode budget)")
    p.add_argument("--timed-iterations", type=int, default=8)
    p.add_argument("--n-test", type=int, default=41)
    p.add_argument("--n-val", type=int, default=16)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny pipeline check, not a result")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.n_test, args.n_val, args.n_train = 2, 3, 2, 6
        args.budget_minutes, args.timed_iterations = 0.3, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cases = bench.find_cases(args.data)
    records = []
    for seed in args.seeds:
        records += run_seed(args, cases, seed)
        with open(args.out / "records.csv", "w", newline="") as fh:  # after every seed
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    text = table(records, args.rows)
    what = (f"{args.iterations} iterations" if args.mode == "iterations"
            else f"{args.budget_minutes:g} min")  # fmt: skip
    text = f"MSD test Dice, seeds {args.seeds}, equal {args.mode} ({what} per row)\n\n" + text
    (args.out / f"table_{args.mode}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
