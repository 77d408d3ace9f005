"""Each recipe stage's gain beside its time: the card again with one stage's work taken out.

Reads a finished campaign (``recipe run``): each stage's measured seconds (``timing.json``) and
the card stage's figures of the exported bundle (``NN_card/card.json``), then predicts the card's
scans again (the same seeds) with one stage's contribution left out, where that needs no
retraining:

- ``refiner_data`` + ``refiner``: the same bundle with ``--no-refiner``;
- ``pair_t1``: the MSD test crops through the ``t2`` pair (``--family t2``; heads use it anyway);

and prints a Markdown table: stage, minutes, the card sets it changes, Dice with and without it
(mean of the sides), gain per 10 minutes of the stage. A stage whose work cannot be taken out
without training again (the pool, the localiser, the ``t2`` pair) has its minutes and what it
makes, no gain column. ``--json`` writes the figures.

Usage: ``python benchmarks/recipe_stage_gain.py --campaign runs/model [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# stage -> (what it makes, the variant that leaves its work out: PredictSettings changes and
# which card parts it touches)
VARIANTS = {
    "refiner": ({"refine": False}, ("sets", "real", "msd")),
    "pair_t1": ({"family": "t2"}, ("msd",)),
}
COVERED_BY = {"refiner_data": "refiner"}  # its time counts toward that variant's stage


def stage_minutes(campaign: Path) -> dict[str, float]:
    """Each done stage's measured minutes (``NN_name/timing.json``'s seconds)."""
    out = {}
    for folder in sorted(campaign.glob("[0-9][0-9]_*")):
        timing = folder / "timing.json"
        if timing.is_file():
            out[folder.name.split("_", 1)[1]] = json.loads(timing.read_text())["seconds"] / 60
    return out


def variant_figures(
    campaign: Path, settings: dict, parts: tuple[str, ...], log, profile: str | None = None
) -> dict:
    """The card's figures of the campaign's bundle with ``settings`` changed, on ``parts``
    (the card stage's sizes and seeds of the recipe's ``profile``)."""
    from lofihippseg.inference.settings import PredictSettings
    from lofihippseg.recipe import real_heads
    from lofihippseg.recipe.card import card_figures
    from lofihippseg.recipe.spec import load_recipe

    recipe = load_recipe(profile=profile)
    card = recipe["stages"]["card"]
    folder = {f.name.split("_", 1)[1]: f for f in campaign.glob("[0-9][0-9]_*")}
    bundle = next(folder["export"].glob("*.pt"))
    heads = real_heads.cases(folder["ixi"], "held") if "real" in parts else []
    msd = folder["msd"] / "test" if "msd" in parts else None
    n = card["n"] if "sets" in parts else 0
    return card_figures(
        bundle, Path(recipe["data"]["maps"]), n, card["seed"], msd, card.get("msd_limit", 0),
        log=log, real_heads=heads, settings=PredictSettings(device="cpu", **settings),
    )  # fmt: skip


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(minutes: dict[str, float], full: dict, without: dict[str, dict]) -> str:
    """The Markdown table of stages: minutes, and for those left out, Dice with and without."""
    from lofihippseg.recipe.card import set_dice

    lines = ["| stage | minutes | set | Dice with | Dice without | gain | gain per 10 min |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    with_dice = set_dice(full)
    for stage, mins in minutes.items():
        if stage in COVERED_BY:
            continue
        cost = mins + sum(m for s, m in minutes.items() if COVERED_BY.get(s) == stage)
        if stage not in without:
            lines.append(f"| {stage} | {cost:.1f} | | | | | |")
            continue
        for name, dice in set_dice(without[stage]).items():
            if name not in with_dice:
                continue
            a, b = mean(with_dice[name]), mean(dice)
            per = (a - b) / cost * 10 if cost > 0 else float("nan")
            lines.append(
                f"| {stage} | {cost:.1f} | {name} | {a:.3f} | {b:.3f} | {a - b:+.3f} | {per:+.4f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, default=REPO / "runs" / "model")
    ap.add_argument("--profile", default=None, help="the campaign's recipe profile (smoke)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stages", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument(
        "--reuse", type=Path, default=None, help="an earlier run's --json: no predictions again"
    )
    args = ap.parse_args()
    if not next(args.campaign.glob("[0-9][0-9]_export/*.pt"), None):
        print(f"{args.campaign}: no exported bundle (run the campaign to its export first)")
        return 2
    torch.set_num_threads(args.threads)
    try:
        without = json.loads(args.reuse.read_text())["without"] if args.reuse else {}
    except (OSError, ValueError, KeyError) as exc:
        print(f"{args.reuse}: not figures this script wrote ({exc})")
        return 2
    for stage in args.stages:
        if stage not in without:
            settings, parts = VARIANTS[stage]
            without[stage] = variant_figures(args.campaign, settings, parts, print, args.profile)
    if args.json is not None:
        args.json.write_text(json.dumps({"without": without}, indent=1))
    card_json = next(args.campaign.glob("[0-9][0-9]_card/card.json"), None)
    if card_json is None:
        print(f"{args.campaign}: no card yet; rerun with --reuse {args.json} when it is done")
        return 0
    full = json.loads(card_json.read_text())
    minutes = stage_minutes(args.campaign)
    print(table(minutes, full, without))
    print(f"campaign: {sum(minutes.values()):.1f} min over {len(minutes)} stages")
    if args.json is not None:
        args.json.write_text(json.dumps({"minutes": minutes, "without": without}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
