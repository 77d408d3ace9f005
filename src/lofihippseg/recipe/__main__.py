"""``python -m lofihippseg.recipe run|plan|status|reference``: the campaign from the command line.

    python -m lofihippseg.recipe run --out runs/model                 # make model
    python -m lofihippseg.recipe run --profile smoke --out runs/model-smoke
    python -m lofihippseg.recipe plan --out runs/model --timings runs/model-smoke
    python -m lofihippseg.recipe status --out runs/model
    python -m lofihippseg.recipe reference --out runs/model --threads 2   # plans the next

``run`` prints the bundle's path as its last line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` above zero."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    from lofihippseg.recipe.spec import RECIPE

    p = argparse.ArgumentParser(
        prog="python -m lofihippseg.recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("run", "plan", "status", "reference"))
    p.add_argument("--recipe", type=Path, default=RECIPE, help="recipe file (release/recipe.toml)")
    p.add_argument("--profile", default=None, help="a profile of the recipe (smoke: toy scale)")
    p.add_argument("--out", type=Path, default=Path("runs/model"), help="campaign folder")
    p.add_argument("--scale", type=_positive(float), default=1.0, help="scale iterations, counts")
    p.add_argument("--batch-scale", type=_positive(int), default=1, help="multiply batches")
    p.add_argument("--device", default="cpu", help="training device: cpu, cuda, auto")
    p.add_argument("--threads", type=_positive(int), default=1, help="CPU threads (1)")
    p.add_argument("--until", default=None, help="run: stop after this stage (e.g. localiser)")
    p.add_argument(
        "--timings",
        type=Path,
        nargs="*",
        default=[],
        help="plan: other campaigns whose measured timings to use (e.g. the smoke's)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="plan: the reference timings (release/recipe_timings.json); reference: where to "
        "write the done stages' timings of --out",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from lofihippseg.errors import LoFiError

    a = _parser().parse_args(argv)
    try:
        import torch

        from lofihippseg.recipe import campaign, plan
        from lofihippseg.recipe.spec import load_recipe

        torch.set_num_threads(a.threads)
        recipe = load_recipe(a.recipe, a.profile, a.scale, a.batch_scale, a.device)
        reference = a.reference or plan.REFERENCE
        if a.reference and a.action != "reference" and not a.reference.is_file():
            raise LoFiError(f"{a.reference}: no such reference timings file")
        if a.action == "reference":
            written = plan.write_reference(a.out, a.threads, reference)
            print(f"{reference}: {len(written['stages'])} stages of {a.out} ({written['recipe']})")
            return 0
        if a.action == "plan":
            rows = plan.campaign_plan(recipe, a.out, a.timings, reference, a.threads)
            print(plan.describe(rows))
            return 0
        if a.action == "status":
            print(plan.status(recipe, a.out))
            return 0

        def log(line: str) -> None:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

        log(plan.describe(plan.campaign_plan(recipe, a.out, a.timings, reference, a.threads)))
        bundle = campaign.run_campaign(recipe, a.out, log, a.until)
    except LoFiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(bundle.resolve() if bundle else f"stopped after {a.until}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
