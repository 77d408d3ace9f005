"""Dice against campaign time: a bundle of a campaign's earlier checkpoints, through the card.

A campaign's pairs keep a checkpoint every ``every`` iterations (``runs/model/05_pair_t2/run/
checkpoints``; copies named ``last_N.pt`` where they were kept); this assembles the bundle the
recipe would export from chosen ones (the ``t2`` pair, the ``t1`` pair, the localiser and, with
``--refiner``, refiner weights; the export stage's advice: which pair for heads and crops, the
mirror for ``t2``), scores it with the card's scans (``recipe.card.card_figures``: the
held-back maps 14-16, the MSD test crops, the held-back real heads) and prints its Dice per set
with the campaign minutes that reaching those checkpoints cost (``--minutes``, from the
stages' ``timing.json`` and the pairs' ``metrics.csv``). Checkpoints taken midway through a
cosine schedule are a lower bound for a shorter run's own end.

Usage: ``python benchmarks/recipe_budgets.py --campaign runs/model --t2 PATH --t1 PATH
--minutes 60 [--refiner PATH] --json runs/budgets/b60.json``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def assemble(
    campaign: Path, t2: Path, t1: Path, out: Path, refiner: Path | None, recipe: dict
) -> Path:
    """The bundle of these checkpoints with the campaign's localiser and export advice."""
    from lofihippseg.io.atomic import atomic_path
    from lofihippseg.models.registry import (
        bundle_dict,
        half_precision,
        safe_torch_load,
        spec_from_dict,
    )
    from lofihippseg.recipe.localiser import add_to_bundle
    from lofihippseg.recipe.refiner_training import add_to_bundle as add_refiner

    first, other = safe_torch_load(t2), safe_torch_load(t1)
    assemble_stage, export_stage = recipe["stages"]["pairs_bundle"], recipe["stages"]["export"]
    spec = dataclasses.replace(
        spec_from_dict(first["spec"]), grid_mm=assemble_stage["first_grid_mm"]
    )
    bundle = bundle_dict(
        spec, half_precision(first["vnet1"]), half_precision(first["vnet2"]), "t2",
        {"t1": (half_precision(other["vnet1"]), half_precision(other["vnet2"]))},
        dict(assemble_stage["other_grids_mm"]),
    )  # fmt: skip
    bundle["family_rule"] = dict(export_stage["family_rule"])
    bundle["tta"] = list(export_stage["tta"])
    with atomic_path(out) as tmp:
        torch.save(bundle, tmp)
    add_to_bundle(next(campaign.glob("[0-9][0-9]_localiser")) / "localiser.pt", out)
    if refiner is not None:
        add_refiner(refiner, out, out)
    return out


def main() -> int:
    from lofihippseg.recipe import real_heads
    from lofihippseg.recipe.card import card_figures, set_dice
    from lofihippseg.recipe.spec import load_recipe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, default=REPO / "runs" / "model")
    ap.add_argument("--t2", type=Path, required=True, help="the t2 pair's checkpoint")
    ap.add_argument("--t1", type=Path, required=True, help="the t1 pair's checkpoint")
    ap.add_argument("--refiner", type=Path, default=None, help="refiner weights (none: without)")
    ap.add_argument("--minutes", type=float, required=True, help="campaign minutes to get here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", default=None, help="the campaign's recipe profile (smoke)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    for path in (args.t2, args.t1, args.refiner):
        if path is not None and not path.is_file():
            print(f"{path}: no such checkpoint")
            return 2
    torch.set_num_threads(args.threads)
    recipe = load_recipe(profile=args.profile)
    card = recipe["stages"]["card"]
    folder = {f.name.split("_", 1)[1]: f for f in args.campaign.glob("[0-9][0-9]_*")}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = assemble(args.campaign, args.t2, args.t1, Path(tmp) / "b.pt", args.refiner, recipe)
        figures = card_figures(
            bundle, Path(recipe["data"]["maps"]), card["n"], card["seed"],
            folder["msd"] / "test", card.get("msd_limit", 0),
            real_heads=real_heads.cases(folder["ixi"], "held"),
        )  # fmt: skip
    figures["budget"] = {"minutes": args.minutes, "t2": str(args.t2), "t1": str(args.t1),
                         "refiner": str(args.refiner) if args.refiner else None}  # fmt: skip
    dice = set_dice(figures)
    print(f"{args.minutes:.0f} campaign min: " + ", ".join(
        f"{name} {sum(d) / len(d):.3f}" for name, d in dice.items()))  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
