"""The campaign's plan from measured timings, and where a campaign stands.

Every stage writes ``timing.json`` with its seconds per unit (iteration, case, scan, prediction)
measured on the machine it ran on. ``campaign_plan`` multiplies each stage's units at the
recipe's scale by the seconds measured for that stage: in this campaign's folder first, else in
the reference campaign (``release/recipe_timings.json``: each stage's wall seconds per unit in a
full campaign, with the machine it ran on; written by ``python -m lofihippseg.recipe reference``),
else in other campaigns' (``timings``: e.g. ``runs/model-smoke``, whose stages use the same
patches, batches and widths at toy scale, but untrained networks and no validation). A stage
measured nowhere says so rather than guess.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import write_text_atomic
from lofihippseg.models.precision import cpu_bfloat16_native
from lofihippseg.recipe.campaign import DONE, TIMING, stage_folders
from lofihippseg.recipe.spec import REPO

REFERENCE = REPO / "release" / "recipe_timings.json"

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


def stage_units(
    stage: dict, msd_train: int = 144, real_train: int = 135, real_held: int = 30
) -> tuple[str, int]:
    """(unit, how many) a stage costs at the recipe's scale (``real_*``: the IXI split's
    training and held-back heads, read by stages with ``real``)."""
    kind = stage["kind"]
    if kind == "pool":
        return "case", stage["n"] + stage["n_val"]
    if kind in ("localiser", "pair", "refiner"):
        return "iteration", stage["iterations"]
    if kind == "refiner_data":
        real = real_train if stage.get("real") else 0
        return "scan", stage["count"] + (stage.get("msd_limit") or msd_train) + real
    if kind == "quality":
        crops = stage.get("n_msd") or msd_train
        held = (stage.get("n_held") or 0) + (41 if stage.get("n_held") else 0)
        return "prediction", stage["n_heads"] + crops + held
    if kind == "card":
        crops = stage.get("msd_limit") or 41
        runs = 2 if stage.get("compare_shipped") else 1  # and the shipped bundle's
        real = real_held if stage.get("real") else 0
        return "prediction", runs * (3 * stage["n"] + 2 * crops + 2 + real)
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


def _as_run(out: Path) -> dict:
    """The recipe as the campaign in ``out`` ran it (empty when none ran)."""
    try:
        recipe = json.loads((out / "recipe_as_run.json").read_text())
    except (OSError, ValueError):
        return {}
    return recipe if isinstance(recipe, dict) and "stages" in recipe else {}


def _wall_per_unit(folder: Path, stage: dict | None) -> float | None:
    """A done stage's wall seconds per unit of the settings it ran with (None: not done)."""
    if stage is None or not (folder / DONE).is_file():
        return None
    try:
        seconds = float(json.loads((folder / TIMING).read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return None
    units = stage_units(stage)[1]
    return seconds / units if units > 0 and seconds > 0 else None


def machine(threads: int, device: str) -> dict:
    """What a campaign's seconds depend on: the CPU, its threads, the device, bfloat16."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as handle:
            names = (ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name"))
            cpu = next(names, "")
    except OSError:
        pass
    return {
        "cpu": cpu or "unknown CPU",
        "cores": os.cpu_count(),
        "threads": threads,
        "device": device,
        "bfloat16_native": cpu_bfloat16_native(),
    }


def write_reference(out: Path, threads: int, path: Path = REFERENCE) -> dict:
    """Write the done stages' wall seconds per unit of the campaign in ``out`` as the reference
    that plans a campaign before it ran (its recipe name, date and machine with them)."""
    recipe = _as_run(out)
    if not recipe:
        raise LoFiError(f"{out}: no campaign ran here (no recipe_as_run.json); run it first")
    folders = stage_folders(recipe, out)
    stages = {}
    for name, stage in recipe["stages"].items():
        per = _wall_per_unit(folders[name], stage)
        if per is not None:
            unit, units = stage_units(stage)
            stages[name] = {"kind": stage["kind"], "unit": unit, "units": units, "per_unit": per}
    if not stages:
        raise LoFiError(f"{out}: no stage of this campaign is done yet")
    run = recipe.get("run", {})
    reference = {
        "recipe": recipe.get("name", "?"),
        "date": datetime.date.today().isoformat(),
        "machine": machine(threads, run.get("device", "cpu")),
        "batch_scale": run.get("batch_scale", 1),
        "stages": stages,
    }
    try:
        write_text_atomic(path, json.dumps(reference, indent=1) + "\n")
    except OSError as exc:
        raise LoFiError(f"{path}: cannot write the reference timings ({exc.strerror})") from exc
    return reference


def _reference(path: Path | None, recipe: dict, threads: int) -> tuple[dict, str]:
    """The reference's stages that apply to this run (same device and batches), and how to
    name their source (with what differs on this machine)."""
    if path is None or not path.is_file():
        return {}, ""
    try:
        ref = json.loads(path.read_text())
        if not isinstance(ref, dict) or not isinstance(ref.get("stages", {}), dict):
            raise ValueError("not a reference: no stages")
    except (OSError, ValueError) as exc:
        raise LoFiError(
            f"{path}: cannot read the reference timings ({exc}); write it again with "
            "`python -m lofihippseg.recipe reference --out CAMPAIGN`"
        ) from exc
    run = recipe.get("run", {})
    theirs = ref.get("machine", {})
    if not ref or theirs.get("device") != run.get("device", "cpu"):
        return {}, ""
    if ref.get("batch_scale", 1) != run.get("batch_scale", 1):
        return {}, ""
    here = machine(threads, run.get("device", "cpu"))
    differs = [k for k in ("cpu", "threads", "bfloat16_native") if theirs.get(k) != here[k]]
    source = f"reference {ref.get('recipe', '?')} {ref.get('date', '')}"
    source += f", {theirs.get('threads')} threads"
    if differs:
        source += f"; this machine differs ({', '.join(differs)}): a rough guide"
    return ref.get("stages", {}), source


def campaign_plan(
    recipe: dict,
    out: Path,
    timings: list[Path] | None = None,
    reference: Path | None = None,
    threads: int = 1,
) -> list[StagePlan]:
    """Each stage's units and measured seconds per unit: this campaign's, else the reference
    campaign's (``reference``, run with ``threads``), else ``timings``'."""
    folders = stage_folders(recipe, out)
    others = [stage_folders(recipe, Path(t)) for t in timings or []]
    ref_stages, ref_source = _reference(reference, recipe, threads)
    as_run = _as_run(out).get("stages", {})
    rows = []
    for name, stage in recipe["stages"].items():
        unit, units = stage_units(stage)
        per, source = _measured(folders[name], unit), "measured here"
        wall = _wall_per_unit(folders[name], as_run.get(name))
        if wall is not None:  # done here: its own wall time, checkpoints and validation included
            per, source = wall, "measured here: the stage's wall time"
        ref = ref_stages.get(name, {})
        if per is None and ref.get("unit") == unit and ref.get("kind") == stage["kind"]:
            per, source = float(ref["per_unit"]), ref_source
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
    total, missing, to_bundle = 0.0, [], None
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
        if r.kind == "export" and not missing:
            to_bundle = total
    tail = f"; not measured yet: {', '.join(missing)}" if missing else ""
    head = "" if to_bundle is None else f" ({to_bundle * 60:.0f} min to the exported bundle)"
    lines.append(f"  total {total:.1f} h of the measured stages{head}{tail}")
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
