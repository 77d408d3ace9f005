"""Train the hippocampus localiser on the release pool and add it to a model bundle.

The localiser (``training.localiser``) sees whole heads at 4 mm and tells inference where the
two hippocampi are, so that the fine networks run only in a box around each. It is trained on
the same synthetic pool as the release model (label maps 01-13; the held-back maps 14-16 are
its validation cases) and is added to the bundle under ``"localiser"``.

Examples:
    OMP_NUM_THREADS=1 python -m lofihippseg.recipe.localiser --pool pool --out runs/localiser
    python -m lofihippseg.recipe.localiser --out runs/localiser \
        --add-to src/lofihippseg/data/model/lofihippseg_default.pt
    # the localiser stage of a campaign (make model), with its provenance:
    python -m lofihippseg.recipe.localiser --campaign runs/model \
        --add-to src/lofihippseg/data/model/lofihippseg_default.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def campaign_provenance(campaign: Path, stage: str = "localiser") -> dict:
    """Where a campaign's localiser came from: the recipe as run, the commit, the libraries
    and the records (with timings) of the stages it was made from (``make model``'s folders).

    Raises:
        LoFiError: ``campaign`` has no finished stage ``stage``.
    """
    import json

    from lofihippseg.errors import LoFiError
    from lofihippseg.recipe import provenance as pv
    from lofihippseg.recipe.campaign import DONE, TIMING, stage_folders
    from lofihippseg.recipe.spec import REPO

    try:
        recipe = json.loads((campaign / "recipe_as_run.json").read_text())
    except (OSError, ValueError) as exc:
        raise LoFiError(f"{campaign}: not a campaign folder ({exc})") from None
    folders = stage_folders(recipe, campaign)
    if stage not in folders or not (folders[stage] / DONE).is_file():
        raise LoFiError(f"{campaign}: stage {stage} has not finished")
    stages = {}
    for name, folder in folders.items():
        if (folder / DONE).is_file():
            record = json.loads((folder / DONE).read_text())["record"]
            timing = folder / TIMING
            if timing.is_file():
                record = {**record, "timing": json.loads(timing.read_text())}
            stages[name] = record
        if name == stage:
            break
    return {
        "format": "lofihippseg-provenance-1",
        "recipe": recipe,
        "git": pv.git_commit(REPO),
        "libraries": pv.library_versions(),
        "stages": stages,
    }


def add_to_bundle(localiser: Path, bundle: Path, provenance: dict | None = None) -> None:
    """Store the localiser (in half precision) inside ``bundle`` (rewritten atomically), with
    the ``provenance`` of the campaign that made it when given."""
    from lofihippseg.io.atomic import atomic_path
    from lofihippseg.models.registry import half_precision, safe_torch_load

    entry = safe_torch_load(localiser)["localiser"]
    entry["state"] = half_precision(entry["state"])
    if provenance is not None:
        entry["provenance"] = provenance
    data = safe_torch_load(bundle)
    data["localiser"] = entry
    with atomic_path(bundle) as tmp:
        torch.save(data, tmp)
    print(f"added the localiser to {bundle} ({bundle.stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model
    from lofihippseg.io.datasets import discover_cases, read_case_list
    from lofihippseg.models.registry import LocaliserSpec
    from lofihippseg.training.localiser import LocaliserConfig, train_localiser

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=Path, help="pool folder (imagesTr, labelsTr, train/val.list)")
    p.add_argument("--out", type=Path, help="run folder (resumes if present)")
    p.add_argument("--iterations", type=int, default=LocaliserConfig.iterations)
    p.add_argument("--batch", type=int, default=LocaliserConfig.batch_size)
    p.add_argument("--n-filters", type=int, default=LocaliserSpec.n_filters)
    p.add_argument("--fine-model", type=Path, default=DEFAULT_MODEL,
                   help="bundle whose preprocessing the localiser copies")  # fmt: skip
    p.add_argument("--add-to", type=Path, help="bundle to add the trained localiser to")
    p.add_argument(
        "--campaign",
        type=Path,
        help="with --add-to: the campaign folder (make model's) whose localiser stage to add, "
        "with its provenance",
    )
    a = p.parse_args(argv)
    if a.out is None and (a.pool is not None or (a.add_to is not None and a.campaign is None)):
        p.error("--out RUN is needed (or --campaign with --add-to)")
    if a.pool is not None:
        cases = {c.case_id: c for c in discover_cases(a.pool)}
        train = [cases[i] for i in read_case_list(a.pool / "train.list")]
        val = [cases[i] for i in read_case_list(a.pool / "val.list")]
        fine = load_model(str(a.fine_model)).spec
        config = LocaliserConfig(iterations=a.iterations, batch_size=a.batch)
        spec = LocaliserSpec(n_filters=a.n_filters)
        train_localiser(train, val, a.out, fine, spec, config)
    if a.add_to is not None:
        if a.campaign is not None:
            from lofihippseg.recipe.campaign import stage_folders

            provenance = campaign_provenance(a.campaign)  # one line when not a campaign
            folder = stage_folders(provenance["recipe"], a.campaign)["localiser"]
            add_to_bundle(folder / "localiser.pt", a.add_to, provenance)
        else:
            add_to_bundle(a.out / "localiser.pt", a.add_to)
    return 0


if __name__ == "__main__":
    from lofihippseg.errors import LoFiError

    try:
        sys.exit(main())
    except LoFiError as exc:  # bad input: one line, as the CLI does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
