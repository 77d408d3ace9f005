"""Run the recipe as a resumable campaign: one folder per stage, a done-marker in each.

``run_campaign(recipe, out)`` runs the stages of :func:`~lofihippseg.recipe.spec.load_recipe`'s
recipe in order. Stage ``NAME`` writes to ``out/NN_NAME/``; when it finishes, ``done.json``
records its settings' hash, what it made (data lists with hashes, iterations, seeds) and its
measured time (``timing.json``: seconds per iteration or per item on this machine). A rerun
skips done stages whose settings and inputs are unchanged, refuses to reuse a done stage whose
settings changed (remove its folder to redo it), and continues a stopped stage where it stopped:
training stages from their last checkpoint (every ``every`` iterations), data stages from the
files already written.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import atomic_path, write_text_atomic
from lofihippseg.recipe import provenance as pv
from lofihippseg.recipe.spec import REPO, stage_hash, stage_inputs

DONE = "done.json"
TIMING = "timing.json"
BUNDLE_NAME = "lofihippseg_model.pt"
PACKAGED_MAPS = REPO / "src" / "lofihippseg" / "data" / "label_maps"


@dataclass
class StageContext:
    """What a stage function gets: its folder, the recipe, the other stages' folders and
    records, where the data is, and how to log."""

    name: str
    folder: Path
    recipe: dict
    folders: dict[str, Path]
    records: dict[str, dict]
    maps: Path | None
    msd: Path | None
    device: str
    log: Callable[[str], None]
    timing: dict[str, Any] = field(default_factory=dict)
    ixi: Path | None = None

    def path(self, value: str) -> Path:
        """A recipe path: ``stage:NAME`` is that stage's folder, else relative to the repo."""
        if value.startswith("stage:"):
            name = value.removeprefix("stage:")
            if name not in self.folders:
                raise LoFiError(f"stage {self.name}: no stage named {name!r} before it")
            return self.folders[name]
        path = Path(value)
        return path if path.is_absolute() else REPO / path


def _repo_path(value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else (REPO / path).resolve()


# ---------------------------------------------------------------- stages


def stage_msd_split(ctx: StageContext, p: dict) -> dict:
    """The MSD crops' seeded split (train/val lists, the test crops linked)."""
    from lofihippseg.recipe import msd as msd_split

    if ctx.msd is None:
        return {"skipped": "no MSD crops (data.msd absent): pairs train without real crops"}
    train, val, test = msd_split.write(ctx.msd, ctx.folder, p["n_test"], p["n_val"], p["seed"])

    def rows(ids: list[str]) -> list[dict]:
        return [
            {
                "name": c,
                "image_sha256": pv.sha256(ctx.msd / "imagesTr" / f"{c}.nii.gz"),
                "label_sha256": pv.sha256(ctx.msd / "labelsTr" / f"{c}.nii.gz"),
            }
            for c in ids
        ]

    return {"train": rows(train), "val": rows(val), "test": test, "seed": p["seed"]}


def stage_pool(ctx: StageContext, p: dict) -> dict:
    """Synthetic heads of maps 01-13, split into the two families' pools."""
    from lofihippseg.recipe.family_pools import family_pool
    from lofihippseg.recipe.pools import split_maps, write_pool

    if ctx.maps is None:
        raise LoFiError("no label maps: set data.maps in the recipe")
    pool = ctx.folder / "pool"
    before = len(list((pool / "imagesTr").glob("*.nii.gz"))) if pool.is_dir() else 0
    t = time.perf_counter()
    write_pool(
        ctx.maps,
        pool,
        p["n"],
        p["n_val"],
        p["seed"],
        p["t1_share"],
        tuple(p["voxel_mm"]),
        p["random_share"],
    )
    made = len(list((pool / "imagesTr").glob("*.nii.gz"))) - before
    if made:
        ctx.timing.update(unit="case", units=made, seconds=time.perf_counter() - t)
    for family in ("t2", "t1"):
        family_pool(pool, family)
    train_maps, held = split_maps(ctx.maps)
    return {
        "maps": pv.file_list(train_maps),
        "held_back_maps_unused": [m.name for m in held],
        "sources_sha256": pv.sha256(pool / "sources.csv"),
        "cases": p["n"] + p["n_val"],
        "seed": p["seed"],
    }


def stage_ixi_split(ctx: StageContext, p: dict) -> dict:
    """The real IXI heads' seeded split and their hippocampus label maps (1 left, 2 right)."""
    from lofihippseg.recipe import real_heads

    if ctx.ixi is None:
        return {"skipped": "no IXI heads (data.ixi absent): nothing is trained on real heads"}
    t = time.perf_counter()
    record = real_heads.write(
        ctx.ixi, ctx.folder, p["seed"], p["held_out"], p["n_val"], p.get("limit", 0)
    )
    ctx.timing.update(unit="head", units=record["written"], seconds=time.perf_counter() - t)
    return record


def stage_localiser(ctx: StageContext, p: dict) -> dict:
    """The 4 mm whole-head localiser, trained on the pool (and the real heads' training part)."""
    from lofihippseg.config import read_json_settings
    from lofihippseg.io.datasets import discover_cases, read_case_list
    from lofihippseg.models.registry import LocaliserSpec, spec_from_dict
    from lofihippseg.recipe import real_heads
    from lofihippseg.training.localiser import LocaliserConfig, train_localiser

    pool = ctx.path(p["pool"]) / "pool"
    cases = {c.case_id: c for c in discover_cases(pool)}
    train = [cases[i] for i in read_case_list(pool / "train.list")]
    val = [cases[i] for i in read_case_list(pool / "val.list")]
    real = p.get("real")
    n_real = {"train": 0, "val": 0}
    if real and "skipped" not in ctx.records.get(real.removeprefix("stage:"), {}):
        for part, into in (("train", train), ("val", val)):
            heads = real_heads.cases(ctx.path(real), part)
            into.extend(heads * int(p.get("real_repeat", 1)) if part == "train" else heads)
            n_real[part] = len(heads)
    fine = spec_from_dict(read_json_settings(ctx.path(p["fine_config"]))["model"])
    config = LocaliserConfig(
        iterations=p["iterations"], batch_size=p["batch"], seed=p["seed"], val_every=p["every"]
    )
    measured: list[float] = []

    def log(line: str) -> None:
        found = re.search(r"([0-9.]+) s/iteration", line)
        if found:
            measured.append(float(found.group(1)))
        ctx.log(line)

    train_localiser(train, val, ctx.folder, fine, LocaliserSpec(), config, log)
    if measured:
        ctx.timing.update(unit="iteration", per_unit=measured[-1], how="the localiser's loop")
    return {
        "iterations": p["iterations"],
        "seed": p["seed"],
        "batch": p["batch"],
        "real_heads": n_real,
    }


def _pair_config(ctx: StageContext, p: dict):
    from lofihippseg.config import load_settings
    from lofihippseg.recipe import real_heads
    from lofihippseg.training.config import TrainConfig

    pool = ctx.path(p["pool"])
    msd = ctx.records.get("msd", {})
    msd_csv = ctx.folders["msd"] / "msd_trainval.csv" if "train" in msd else None
    config = load_settings(TrainConfig, ctx.path(p["config"]))
    data = [str(pool / f"pool_{p['family']}")]
    real = p.get("real")
    if real and "skipped" not in ctx.records.get(real.removeprefix("stage:"), {}):
        repeat = int(p.get("real_repeat", 1))
        data.append(str(real_heads.repeated_csv(ctx.path(real), ctx.folder / "heads", repeat)))
    changes = dict(
        data=tuple(data),
        unsided=(str(msd_csv),) if msd_csv else (),
        synthetic=str(pool / "pool" / "training_maps.list"),
        iterations=p["iterations"],
        lr=p["lr"],
        seed=p["seed"],
        val_every=p["every"],
        init1=None,
        init2=None,
        init_critic=None,
        init_family=None,
        name="run",
        out_dir=str(ctx.folder),
        device=ctx.device,
        amp=bool(p.get("amp", True)),  # bfloat16 where the CPU computes it natively; CUDA: fp16
        # on a CPU the data is made in the training thread (one thread in all); a GPU needs workers
        num_workers=0 if ctx.device == "cpu" else max(config.num_workers, 4),
        plan=(),
    )
    changes.update(p.get("overrides", {}))
    if p.get("loss"):  # the stage's [loss] table: LossConfig fields
        changes["loss"] = dataclasses.replace(config.loss, **p["loss"])
    return config.replace(**changes)


def _checkpoint_iteration(path: Path) -> int:
    """The iteration a training checkpoint was saved at."""
    return int(torch.load(path, weights_only=True, map_location="cpu")["iteration"])


def stage_pair(ctx: StageContext, p: dict) -> dict:
    """One pair of VNets from scratch on the family's mix; resumes from its last checkpoint."""
    from lofihippseg.training.loop import train
    from lofihippseg.training.timing import time_iterations

    config = _pair_config(ctx, p)
    run = ctx.folder / "run"
    seconds = time_iterations(config)
    ctx.timing.update(
        unit="iteration",
        per_unit=seconds,
        how="3 real iterations timed before the run (validation not counted)",
    )
    ctx.log(
        f"{ctx.name}: its first iterations took {seconds:.2f} s each here (they make the box "
        f"pool's first boxes: {p['iterations']} iterations need at most "
        f"~{seconds * p['iterations'] / 3600:.2f} h; the loop's own rate replaces this at the end)"
    )
    # written now, not only when the stage ends: `make model-plan` reads it during the run
    write_text_atomic(ctx.folder / TIMING, json.dumps(ctx.timing, indent=1))
    resume = run if (run / "checkpoints" / "last.pt").is_file() else None
    start = _checkpoint_iteration(run / "checkpoints" / "last.pt") if resume else 0
    t = time.perf_counter()
    train(config, resume=resume)
    if config.iterations > start:  # what a plan should multiply: the loop as it ran
        ctx.timing.update(
            per_unit=(time.perf_counter() - t) / (config.iterations - start),
            how=f"the run's {config.iterations - start} iterations, validation and checkpoints "
            f"included (3 iterations timed before it: {seconds:.2f} s)",
        )
    return {
        "iterations": config.iterations,
        "seed": config.seed,
        "batch": config.batch_size,
        "family": p["family"],
        "patch": list(config.patch_size),
        "lr": config.lr,
    }


def stage_assemble(ctx: StageContext, p: dict) -> dict:
    """Both pairs (their last checkpoints) and the localiser in one bundle."""
    from lofihippseg.recipe.localiser import add_to_bundle
    from lofihippseg.recipe.pairs import export

    out = ctx.folder / "pairs.pt"
    others = {name: ctx.path(v) / "run" for name, v in p.get("others", {}).items()}
    export(
        ctx.path(p["first"]) / "run",
        out,
        "last.pt",
        p["first_grid_mm"],
        ctx.records[p["first"].removeprefix("stage:")]["family"],
        others,
        dict(p.get("other_grids_mm", {})),
    )
    add_to_bundle(ctx.path(p["localiser"]) / "localiser.pt", out)
    return {"bundle": out.name, "sha256": pv.sha256(out)}


def stage_refiner_data(ctx: StageContext, p: dict) -> dict:
    """The refiner's training cubes from the pairs' own outputs."""
    from lofihippseg.recipe import real_heads
    from lofihippseg.recipe.refiner_data import (
        msd_cubes,
        pairs_predictor,
        real_head_cubes,
        synthetic_cubes,
    )

    predictor = pairs_predictor(ctx.path(p["model"]) / "pairs.pt")
    t = time.perf_counter()
    made = synthetic_cubes(ctx.folder, predictor, ctx.maps, p["start"], p["count"], ctx.log)
    crops = 0
    if "train" in ctx.records.get("msd", {}):
        ids = [r["name"] for r in ctx.records["msd"]["train"]]
        ids = ids[: p["msd_limit"]] if p.get("msd_limit") else ids
        crops = len(ids)
        made += msd_cubes(ctx.folder, predictor, ctx.msd, ids)
    n_real = 0
    real = p.get("real")
    if real and "skipped" not in ctx.records.get(real.removeprefix("stage:"), {}):
        heads = real_heads.cases(ctx.path(real), "train")
        n_real = len(heads)
        made += real_head_cubes(ctx.folder, predictor, heads)
    if made:
        ctx.timing.update(unit="scan", units=made, seconds=time.perf_counter() - t)
    files = sorted(ctx.folder.glob("*.npz"))
    return {
        "scans": p["count"],
        "msd_crops": crops,
        "real_heads": n_real,
        "seed_base": 700_000,
        "files": len(files),
        "files_digest": pv.list_digest(pv.file_list(files)),
    }


def stage_refiner(ctx: StageContext, p: dict) -> dict:
    """The outline refiner, from scratch on the cubes."""
    from lofihippseg.recipe.refiner_training import train_refiner

    weights = train_refiner(
        [ctx.path(p["data"])],
        ctx.folder,
        p["iterations"],
        p["batch"],
        p["lr"],
        p["filters"],
        p["every"],
        seed=p["seed"],
        log=ctx.log,
        amp=bool(p.get("amp", True)),
    )
    timing = ctx.folder / "loop_timing.json"
    if timing.is_file():
        ctx.timing.update(
            unit="iteration",
            how="the refiner's loop",
            per_unit=json.loads(timing.read_text())["seconds_per_iteration"],
        )
    return {
        "iterations": p["iterations"],
        "seed": p["seed"],
        "filters": p["filters"],
        "weights": weights.name,
    }


def stage_quality(ctx: StageContext, p: dict) -> dict:
    """The bundle's per-side quality estimator (``lofihippseg.quality``), beside the bundle."""
    import importlib.util

    if importlib.util.find_spec("lofihippseg.recipe.quality_fit") is None:
        return {"estimator": None, "note": "no estimator yet: lofihippseg.quality is absent"}
    from lofihippseg.quality.estimator import estimator_path
    from lofihippseg.recipe.quality_data import QualityData
    from lofihippseg.recipe.quality_fit import FitSettings, fit_quality_estimator

    bundle = ctx.path(p["model"]) / BUNDLE_NAME
    msd = str(ctx.msd) if ctx.msd else None  # a string: the estimator's meta is JSON
    train = QualityData(
        ctx.maps, "train", p["n_heads"], msd=msd, n_msd=p["n_msd"] or None, seed=p["seed"]
    )
    held = None
    if p["n_held"] > 0:
        held = QualityData(
            ctx.maps, "held", p["n_held"], msd=msd, msd_split="test", seed=p["seed"] + 1
        )
    out = estimator_path(bundle)
    t = time.perf_counter()
    fit_quality_estimator(
        bundle,
        out,
        train,
        p["seed"],
        ctx.folder,
        held,
        FitSettings(folds=p["folds"]),
        torch.get_num_threads(),
    )
    made = p["n_heads"] + (p["n_msd"] or 144) + (p["n_held"] + 41 if p["n_held"] else 0)
    ctx.timing.update(unit="prediction", units=made, seconds=time.perf_counter() - t)
    return {
        "estimator": out.name,
        "sha256": pv.sha256(out),
        "heads": p["n_heads"],
        "seed": p["seed"],
    }


def stage_export(ctx: StageContext, p: dict) -> dict:
    """The bundle: pairs, localiser, refiner, mirror advice and the campaign's provenance."""
    from lofihippseg.models.registry import safe_torch_load
    from lofihippseg.recipe.refiner_training import add_to_bundle

    out = ctx.folder / BUNDLE_NAME
    refiner = ctx.path(p["refiner"]) / ctx.records[p["refiner"].removeprefix("stage:")]["weights"]
    add_to_bundle(refiner, ctx.path(p["pairs"]) / "pairs.pt", out, p.get("tta"))
    data = safe_torch_load(out)
    if p.get("family_rule") is not None:  # which pair predict runs (inference.plan)
        data["family_rule"] = dict(p["family_rule"])
    data["provenance"] = provenance(ctx)
    with atomic_path(out) as tmp:
        torch.save(data, tmp)
    return {"bundle": out.name, "sha256": pv.sha256(out), "megabytes": out.stat().st_size / 1e6}


def stage_card(ctx: StageContext, p: dict) -> dict:
    """The card's figures, through predict's own path (``recipe.card.card_figures``)."""
    from lofihippseg.recipe import real_heads
    from lofihippseg.recipe.card import card_figures, card_table, no_worse_than

    msd_test = ctx.folders["msd"] / "test" if "test" in ctx.records.get("msd", {}) else None
    model = ctx.path(p["model"]) / BUNDLE_NAME
    heads = []
    real = p.get("real")
    if real and "skipped" not in ctx.records.get(real.removeprefix("stage:"), {}):
        heads = real_heads.cases(ctx.path(real), "held")
    figures = card_figures(
        model, ctx.maps, p["n"], p["seed"], msd_test, p.get("msd_limit", 0), log=ctx.log,
        real_heads=heads,
    )  # fmt: skip
    sets = len(figures.get("sets", {})) * p["n"]
    crops = sum(f["n"] for f in figures.get("msd", {}).values())
    runs = 2 if p.get("compare_shipped") else 1  # the shipped bundle predicts the same scans
    ctx.timing.update(unit="prediction", units=runs * (sets + crops + 2 + len(heads)))
    record = {"figures": "card.json", "table": "card.md"}
    tables = card_table(figures, str(model))
    if p.get("compare_shipped"):  # the same scans through the shipped bundle: ship or not
        shipped = card_figures(None, ctx.maps, p["n"], p["seed"], msd_test,
                               p.get("msd_limit", 0), log=ctx.log, real_heads=heads)  # fmt: skip
        verdict = no_worse_than(figures, shipped)
        figures["shipped"], figures["no_worse_than_shipped"] = shipped, verdict
        tables += "\n" + card_table(shipped, "the shipped bundle")
        record["no_worse_than_shipped"] = verdict["all"]
        ctx.log(f"card: no worse than the shipped bundle on every set (within 0.01): "
                f"{verdict['all']} {verdict['sets']}")  # fmt: skip
    write_text_atomic(ctx.folder / "card.json", json.dumps(figures, indent=1))
    write_text_atomic(ctx.folder / "card.md", tables)
    return record


STAGES: dict[str, Callable[[StageContext, dict], dict]] = {
    "msd_split": stage_msd_split,
    "ixi_split": stage_ixi_split,
    "pool": stage_pool,
    "localiser": stage_localiser,
    "pair": stage_pair,
    "assemble": stage_assemble,
    "refiner_data": stage_refiner_data,
    "refiner": stage_refiner,
    "quality": stage_quality,
    "export": stage_export,
    "card": stage_card,
}


# ---------------------------------------------------------------- campaign


def provenance(ctx: StageContext) -> dict:
    """What the bundle records: the recipe as run, commit, libraries, every stage's record."""
    stages = {}
    for name, record in ctx.records.items():
        timing = _read_json(ctx.folders[name] / TIMING)
        stages[name] = {**record, "timing": timing} if timing else dict(record)
    return {
        "format": "lofihippseg-provenance-1",
        "recipe": ctx.recipe,
        "git": pv.git_commit(REPO),
        "libraries": pv.library_versions(),
        "threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": stages,
    }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stage_folders(recipe: dict, out: Path) -> dict[str, Path]:
    """``out/NN_NAME`` of every stage, in the recipe's order."""
    return {name: out / f"{i:02d}_{name}" for i, name in enumerate(recipe["stages"], 1)}


def _ixi_path(recipe: dict) -> Path | None:
    """The real IXI heads (``data.ixi``), None where absent and not required."""
    data = recipe.get("data", {})
    ixi = _repo_path(data.get("ixi"))
    if ixi is None or not (ixi / "t1").is_dir():
        if data.get("require_ixi", False):
            raise LoFiError(f"{ixi}: no IXI heads (data.ixi of the recipe; t1/ missing)")
        return None
    return ixi


def _data_paths(recipe: dict, out: Path) -> tuple[Path | None, Path | None]:
    data = recipe.get("data", {})
    maps = _repo_path(data.get("maps"))
    if maps is None or not maps.is_dir():
        if data.get("require_maps", True) and recipe["run"]["profile"] != "smoke":
            raise LoFiError(f"{maps}: no label maps folder (data.maps of the recipe)")
        maps = _packaged_maps(out)
    msd = _repo_path(data.get("msd"))
    if msd is None or not (msd / "imagesTr").is_dir():
        if data.get("require_msd", True):
            raise LoFiError(f"{msd}: no MSD crops (data.msd of the recipe; imagesTr/ missing)")
        msd = None
    return maps, msd


def _packaged_maps(out: Path) -> Path:
    """The package's three training label maps, linked under the names the pool reads (a clone
    without ../shared: the smoke runs on them; the card's held-back sets are then skipped)."""
    folder = out / "packaged_maps"
    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted(PACKAGED_MAPS.glob("synthseg_seg_*.nii.gz")):
        link = folder / src.name.replace("synthseg_seg_", "training_seg_")
        if not link.exists():
            link.symlink_to(src.resolve())
    return folder


def run_campaign(
    recipe: dict, out: Path, log: Callable[[str], None] = print, until: str | None = None
) -> Path | None:
    """Run (or continue) every stage (up to and including ``until``); returns the bundle's
    path (None when ``until`` stopped the campaign before the export).

    Raises:
        LoFiError: missing data, a done stage whose settings changed, a stage's own errors.
    """
    folders = stage_folders(recipe, out)
    if until is not None and until not in folders:
        raise LoFiError(f"--until {until}: the recipe has no such stage ({', '.join(folders)})")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "recipe_as_run.json", json.dumps(recipe, indent=1))
    maps, msd = _data_paths(recipe, out)
    ixi = _ixi_path(recipe)
    records: dict[str, dict] = {}
    hashes: dict[str, str] = {}
    for name, stage in recipe["stages"].items():
        folder = folders[name]
        inputs = {i: hashes[i] for i in stage_inputs(stage) if i in hashes}
        digest = stage_hash(stage, inputs)
        done = _read_json(folder / DONE)
        if done:
            if done.get("hash") != digest:
                raise LoFiError(
                    f"stage {name}: {folder} was done with other settings or inputs; remove "
                    f"that folder (and the later stages') to redo it"
                )
            log(f"[{name}] done before ({done.get('seconds', 0):.0f} s); skipped")
            records[name], hashes[name] = done["record"], digest
            if name == until:
                return None
            continue
        folder.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(
            name, folder, recipe, folders, records, maps, msd, recipe["run"]["device"], log,
            ixi=ixi,
        )  # fmt: skip
        log(f"[{name}] {stage['kind']} starts in {folder}")
        t = time.perf_counter()
        record = STAGES[stage["kind"]](ctx, {k: v for k, v in stage.items() if k != "kind"})
        seconds = time.perf_counter() - t
        timing = {"seconds": seconds, **ctx.timing}
        if "per_unit" not in timing and timing.get("units"):
            timing["per_unit"] = timing["seconds"] / timing["units"]
        write_text_atomic(folder / TIMING, json.dumps(timing, indent=1))
        write_text_atomic(
            folder / DONE,
            json.dumps(
                {
                    "hash": digest,
                    "record": record,
                    "seconds": seconds,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=1,
            ),
        )
        log(f"[{name}] done in {seconds:.0f} s")
        records[name], hashes[name] = record, digest
        if name == until:
            return None
    export = [n for n, s in recipe["stages"].items() if s["kind"] == "export"]
    if not export:
        raise LoFiError("the recipe has no export stage")
    return folders[export[-1]] / BUNDLE_NAME
