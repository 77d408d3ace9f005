"""Train (or resume) one pair of release networks and export pairs as a model bundle.

- train with a ``TrainConfig`` JSON (``release/release_config.json``: the ``t2`` family;
  ``release/release_config_t1*.json``: ``t1``); ``--resume RUN`` continues an interrupted run;
- ``--export RUN --export-to FILE``: write the run's checkpoint as a half-precision bundle with
  the model's working grid (``--grid-mm``); ``--family t2 --add-family t1=RUN`` exports one pair
  per contrast family; the localiser of the run's ``init1`` bundle is kept.

``lofihippseg.recipe.campaign`` runs these steps as stages of the recipe (``make model``).

Example:
    python -m lofihippseg.recipe.pairs --export runs/t2 --checkpoint last.pt --export-to m.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "release" / "release_config.json"
# the working grid of the exported model: the middle of the pool's 1-2 mm voxels (make_pool.py
# --voxel); 1.3-2.0 mm all gave the v3 networks +0.05-0.1 mean Dice on 1 mm inputs (MODEL_CARD)
GRID_MM = 1.5


def _checkpoint(run: Path, checkpoint: str) -> tuple[Path, dict]:
    """A run's checkpoint (``last.pt`` when ``checkpoint`` is missing) and its contents."""
    from lofihippseg.models.registry import safe_torch_load

    path = run / "checkpoints" / checkpoint
    if not path.is_file():
        path = run / "checkpoints" / "last.pt"
    return path, safe_torch_load(path)


def export(
    run: Path,
    out: Path,
    checkpoint: str = "best.pt",
    grid_mm: float | None = None,
    family: str | None = None,
    others: dict[str, Path] | None = None,
    other_grids: dict[str, float] | None = None,
) -> Path:
    """Write ``run``'s checkpoint as a float16 model bundle (what ``load_model`` reads);
    ``grid_mm``: its working grid, an isotropic voxel size within the pool's (inference
    resamples other inputs to it); ``family``: the contrast family ``run`` was trained for;
    ``others``: runs of other contrast families (same spec, same ``checkpoint`` name) by name;
    ``other_grids``: the working grid of those that run on another grid than ``grid_mm``.

    Example:
        >>> export(Path("runs/t2"), Path("m.pt"), family="t2",
        ...        others={"t1": Path("runs/t1")})  # doctest: +SKIP
    """
    from lofihippseg.models.registry import bundle_dict, half_precision, spec_from_dict

    ckpt_path, ckpt = _checkpoint(run, checkpoint)
    vnets = (half_precision(ckpt["vnet1"]), half_precision(ckpt["vnet2"]))
    spec = dataclasses.replace(spec_from_dict(ckpt["spec"]), grid_mm=grid_mm)
    families, iterations = {}, {family: int(ckpt["iteration"])}
    for name, other_run in (others or {}).items():
        other_path, other = _checkpoint(other_run, checkpoint)
        if dataclasses.replace(spec_from_dict(other["spec"]), grid_mm=grid_mm) != spec:
            raise SystemExit(f"{other_path}: its spec differs from {ckpt_path}'s")
        families[name] = (half_precision(other["vnet1"]), half_precision(other["vnet2"]))
        iterations[name] = int(other["iteration"])
    bundle = bundle_dict(spec, *vnets, family, families, other_grids)
    localiser = _init_localiser(run)
    if localiser is not None:  # fine-tuned from a bundle: keep the localiser it had
        bundle["localiser"] = localiser
    bundle["trained_iterations"] = int(ckpt["iteration"])
    if families:
        bundle["family_iterations"] = iterations
    bundle["best_validation_dice"] = float(ckpt["best_dice"])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, out)
    print(
        f"exported {ckpt_path} (iteration {ckpt['iteration']}"
        + "".join(f"; {name} iteration {n}" for name, n in iterations.items() if name != family)
        + f") -> {out} ({out.stat().st_size / 1e6:.2f} MB)"
    )
    return out


def _family_run(text: str) -> tuple[str, Path]:
    """``NAME=RUN`` of ``--add-family``."""
    name, sep, run = text.partition("=")
    if not sep or not name or not run:
        raise argparse.ArgumentTypeError(f"expected NAME=RUN_FOLDER, got {text!r}")
    return name, Path(run)


def _family_grid(text: str) -> tuple[str, float]:
    """``NAME=MM`` of ``--family-grid-mm``."""
    name, sep, mm = text.partition("=")
    try:
        grid = float(mm)
    except ValueError:
        grid = None
    if not sep or not name or grid is None:
        raise argparse.ArgumentTypeError(f"expected NAME=MM (e.g. t1=1.0), got {text!r}")
    return name, grid


def _init_localiser(run: Path) -> dict | None:
    """The localiser entry of the bundle the run started from (its config's ``init1``)."""
    import json

    from lofihippseg.models.registry import safe_torch_load

    init = json.loads((run / "config.json").read_text()).get("init1")
    if not init or not Path(init).is_file():
        return None
    data = safe_torch_load(Path(init))
    return data.get("localiser") if isinstance(data, dict) else None


def main() -> None:
    p = argparse.ArgumentParser(description="Train or resume the CPU release model.")
    p.add_argument("--config", type=Path, default=CONFIG, help="TrainConfig JSON")
    p.add_argument(
        "--pool",
        type=Path,
        default=None,
        help="synthetic pool folder (overrides the config's data)",
    )
    p.add_argument("--make-pool", action="store_true", help="generate the pool first if missing")
    p.add_argument("--n-pool", type=int, default=60, help="training cases in a new pool")
    p.add_argument("--iterations", type=int, default=None, help="override the config's total")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this iteration")
    p.add_argument("--resume", type=Path, default=None, help="run folder to continue")
    p.add_argument("--export", type=Path, default=None, help="export this run and exit")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint of the run to export")
    p.add_argument("--export-to", type=Path, help="bundle file to write (with --export)")
    p.add_argument(
        "--grid-mm",
        type=float,
        default=GRID_MM,
        help="working grid (mm) written into the exported bundle (inference resamples to it)",
    )
    p.add_argument("--family", default=None, help="contrast family of the exported run (t2)")
    p.add_argument(
        "--add-family",
        type=_family_run,
        action="append",
        default=[],
        metavar="NAME=RUN",
        help="also export RUN's networks as contrast family NAME (repeatable)",
    )
    p.add_argument(
        "--family-grid-mm",
        type=_family_grid,
        action="append",
        default=[],
        metavar="NAME=MM",
        help="the working grid of an added family trained on another grid (e.g. t1=1.0)",
    )
    a = p.parse_args()

    if a.export is not None:
        if a.export_to is None:
            p.error("--export needs --export-to (the shipped bundle is never a default)")
        others = dict(a.add_family)
        if others and a.family is None:
            p.error("--add-family needs --family (the name of the exported run's family)")
        grids = dict(a.family_grid_mm)
        export(a.export, a.export_to, a.checkpoint, a.grid_mm, a.family, others, grids)
        return
    from lofihippseg.config import load_settings
    from lofihippseg.training.config import TrainConfig
    from lofihippseg.training.loop import resume_config, train

    if a.resume is not None:
        config = resume_config(a.resume)
    else:
        config = load_settings(TrainConfig, a.config)
        if a.pool is not None:
            config = config.replace(data=(str(a.pool),))
            from lofihippseg.recipe.pools import MAPS_LIST  # the pool's training label maps

            if config.synthetic and Path(config.synthetic).name == MAPS_LIST:
                config = config.replace(synthetic=str(a.pool / MAPS_LIST))  # the pool's maps
    if a.iterations is not None:
        config = config.replace(iterations=a.iterations)
    if a.make_pool and config.data and not (Path(config.data[0]) / "val.list").exists():
        pool_args = ["--out", config.data[0], "--n", str(a.n_pool)]
        subprocess.run([sys.executable, "-m", "lofihippseg.recipe.pools", *pool_args], check=True)
    run = train(config, resume=a.resume, stop_at=a.stop_at)
    print(f"run folder: {run}")


if __name__ == "__main__":
    from lofihippseg.errors import LoFiError

    try:
        main()
    except LoFiError as exc:  # bad data or settings: one line, as the CLI gives
        sys.exit(f"error: {exc}")
