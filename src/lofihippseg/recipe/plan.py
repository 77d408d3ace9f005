"""The campaign's plan from measured timings, and where a campaign stands.

Every stage writes ``timing.json`` with its seconds per unit (iteration, case, scan, prediction)
measured on the machine it ran on. ``campaign_plan`` multiplies each stage's units at the
recipe's scale by the seconds measured for that stage: in this campaign's folder first, else in
other campaigns' (``timings``: e.g. ``runs/model-smoke``, whose stages use the same patches,
batches and widths at toy scale). A stage measured nowhere says so rather than guess.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from lofihippseg.recipe.campaign import DONE, TIMING, stage_folders

# stages whose cost is mostly predict: measured in a toy campaign (untrained networks, no ROI,
# whole heads) their seconds are an upper bound for trained ones
INFERENCE_BOUND = ("refiner_data", "quality", "card")


@dataclass(frozen=True)
class StagePlan:
    """One stage's planned cost: ``units`` of ``unit`` at ``per_unit`` seconds (None: not
    measured yet), where the figure came from, and whether the stage is done."""

    name: str
    kind: str
    unit: str
    units: int
    per_unit: float | None
    source: str
    done: bool

    @property
    def hours(self) -> float | None:
        return None if self.per_unit is None else self.units * self.per_unit / 3600


def stage_units(stage: dict, msd_train: int = 144) -> tuple[str, int]:
    """(unit, how many) a stage costs at the recipe's scale."""
    kind = stage["kind"]
    if kind == "pool":
        return "case", stage["n"] + stage["n_val"]
    if kind in ("localiser", "pair", "refiner"):
        return "iteration", stage["iterations"]
    if kind == "refiner_data":
        return "scan", stage["count"] + (stage.get("msd_limit") or msd_train)
    if kind == "quality":
        crops = stage.get("n_msd") or msd_train
        held = (stage.get("n_held") or 0) + (41 if stage.get("n_held") else 0)
        return "prediction", stage["n_heads"] + crops + held
    if kind == "card":
        crops = stage.get("msd_limit") or 41
        runs = 2 if stage.get("compare_shipped") else 1  # and the shipped bundle's
        return "prediction", runs * (3 * stage["n"] + 2 * crops + 2)
    return "run", 1


def _measured(folder: Path, unit: str) -> float | None:
    try:
        timing = json.loads((folder / TIMING).read_text())
    except (OSError, ValueError):
        return None
    if unit == "run":
        return float(timing["seconds"]) if "seconds" in timing else None
    if timing.get("unit", unit) != unit:
        return None
    value = timing.get("per_unit")
    return float(value) if value else None


def campaign_plan(recipe: dict, out: Path, timings: list[Path] | None = None) -> list[StagePlan]:
    """Each stage's units and measured seconds per unit (this campaign's, else ``timings``')."""
    folders = stage_folders(recipe, out)
    others = [stage_folders(recipe, Path(t)) for t in timings or []]
    rows = []
    for name, stage in recipe["stages"].items():
        unit, units = stage_units(stage)
        per, source = _measured(folders[name], unit), "measured here"
        for other in others:
            if per is None:
                per, source = _measured(other[name], unit), f"measured in {other[name].parent}"
                if stage["kind"] in INFERENCE_BOUND:
                    source += ", an upper bound: its untrained networks run on whole heads"
        if per is None:
            source = "not measured yet (timed when the stage starts)"
        rows.append(
            StagePlan(
                name, stage["kind"], unit, units, per, source, (folders[name] / DONE).is_file()
            )
        )
    return rows


def describe(rows: list[StagePlan]) -> str:
    """The plan as lines, with the total CPU-hours of the measured stages."""
    lines = ["plan (seconds measured on this machine's threads, not a constant):"]
    total, missing = 0.0, []
    for r in rows:
        cost = "?" if r.hours is None else f"{r.hours:.2f} h"
        per = "?" if r.per_unit is None else f"{r.per_unit:.3g} s"
        state = " [done]" if r.done else ""
        lines.append(
            f"  {r.name:13s} {r.units:>6d} {r.unit}(s) x {per:>9s} = {cost:>8s} ({r.source}){state}"
        )
        if r.hours is None:
            missing.append(r.name)
        else:
            total += r.hours
    tail = f"; not measured yet: {', '.join(missing)}" if missing else ""
    lines.append(f"  total {total:.1f} h of the measured stages{tail}")
    return "\n".join(lines)


def _progress(kind: str, folder: Path) -> str:
    """How far a started stage got (from the files it writes)."""
    if kind == "pair":
        metrics = folder / "run" / "metrics.csv"
        if metrics.is_file():
            with metrics.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            if rows:
                last = rows[-1]
                return (
                    f"checkpoint at iteration {last['iteration']} (validation Dice "
                    f"{float(last['dice_fused']):.3f}, {float(last['seconds']):.0f} s)"
                )
        return "started"
    if kind == "refiner":
        done = [int(p.stem.split("_")[1]) for p in folder.glob("refiner_*.pt")]
        return f"checkpoint at iteration {max(done)}" if done else "started"
    if kind == "refiner_data":
        return f"{len(list(folder.glob('*.npz')))} cube files"
    if kind == "pool":
        return f"{len(list(folder.glob('pool/imagesTr/*.nii.gz')))} cases"
    return "started"


def status(recipe: dict, out: Path) -> str:
    """Each stage: done (with its seconds), started (how far), or not started."""
    lines = [f"campaign {out}:"]
    for name, folder in stage_folders(recipe, out).items():
        kind = recipe["stages"][name]["kind"]
        if (folder / DONE).is_file():
            done = json.loads((folder / DONE).read_text())
            state = f"done in {done.get('seconds', 0):.0f} s"
        elif folder.is_dir():
            state = _progress(kind, folder)
        else:
            state = "not started"
        lines.append(f"  {name:13s} {kind:12s} {state}")
    return "\n".join(lines)
