"""The benchmark's results table: one row per method/configuration, written as Markdown and CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

LABELS = {"1": "anterior", "2": "posterior"}
METRICS = (("dice", "Dice"), ("hd95", "HD95"), ("assd", "ASSD"))


@dataclass
class Row:
    """One line of the table (``summary`` is ``lofihippseg evaluate``'s metrics_summary.json)."""

    method: str
    config: str
    summary: dict
    budget_min: float | None
    train_s: float | None
    infer_s_per_case: float
    note: str = ""

    def stat(self, label: str, metric: str) -> tuple[float, float]:
        s = self.summary["per_label"][label][metric]
        return float(s["mean"]), float(s["std"])

    def csv_row(self) -> dict:
        out: dict = {"method": self.method, "config": self.config}
        for label, name in LABELS.items():
            for key, _ in METRICS:
                mean, std = self.stat(label, key)
                out[f"{key}_{name}_mean"] = f"{mean:.4f}"
                out[f"{key}_{name}_std"] = f"{std:.4f}"
        out["n_test"] = self.summary["n_cases"]
        out["budget_min"] = "" if self.budget_min is None else f"{self.budget_min:g}"
        out["train_wall_s"] = "" if self.train_s is None else f"{self.train_s:.1f}"
        out["budget_used"] = (
            f"{self.train_s / (60 * self.budget_min):.2f}"
            if self.budget_min and self.train_s is not None
            else ""
        )
        out["inference_s_per_case"] = f"{self.infer_s_per_case:.2f}"
        out["note"] = self.note
        return out


def write_csv(rows: list[Row], path: Path) -> Path:
    data = [r.csv_row() for r in rows]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    return path


def markdown_table(rows: list[Row]) -> str:
    """The table as Markdown: mean ± std per label (1 anterior, 2 posterior)."""
    head = ["method", "config"]
    for _key, title in METRICS:
        head += [f"{title} {name[:4]}." for name in LABELS.values()]
    head += ["train wall (min)", "budget (min)", "inference (s/case)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.method, r.config]
        for key, _ in METRICS:
            for label in LABELS:
                mean, std = r.stat(label, key)
                digits = 3 if key == "dice" else 2
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        cells.append("" if r.train_s is None else f"{r.train_s / 60:.1f}")
        cells.append("" if r.budget_min is None else f"{r.budget_min:g}")
        cells.append(f"{r.infer_s_per_case:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(rows: list[Row], path: Path, header: str, notes: list[str]) -> Path:
    text = [header, "", markdown_table(rows), ""]
    noted = [f"- {r.method} / {r.config}: {r.note}" for r in rows if r.note]
    text += (["Notes per row:", *noted, ""] if noted else []) + notes
    path.write_text("\n".join(text).rstrip() + "\n")
    return path


def verdict(rows: list[Row]) -> str:
    """Whether our best row reaches nnU-Net's mean Dice (both labels) at the same budget."""
    ours = [r for r in rows if r.method == "lofihippseg"]
    theirs = [r for r in rows if r.method.startswith("nnU-Net") and r.budget_min is not None]
    if not ours or not theirs:
        return "No comparison in this run (nnU-Net skipped or no row of ours)."

    def mean_dice(r: Row) -> float:
        return sum(r.stat(label, "dice")[0] for label in LABELS) / len(LABELS)

    best, ref = max(ours, key=mean_dice), theirs[0]
    word = "at or above" if mean_dice(best) >= mean_dice(ref) else "BELOW"
    return (
        f"Our best configuration ({best.config}, mean Dice {mean_dice(best):.3f}) is {word} "
        f"nnU-Net at the same budget ({ref.config}, mean Dice {mean_dice(ref):.3f})."
    )
