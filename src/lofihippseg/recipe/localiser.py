"""Train the hippocampus localiser on the release pool and add it to a model bundle.

The localiser (``training.localiser``) sees whole heads at 4 mm and tells inference where the
two hippocampi are, so that the fine networks run only in a box around each. It is trained on
the same synthetic pool as the release model (label maps 01-13; the held-back maps 14-16 are
its validation cases) and is added to the bundle under ``"localiser"``.

Examples:
    OMP_NUM_THREADS=1 python -m lofihippseg.recipe.localiser --pool pool --out runs/localiser
    python -m lofihippseg.recipe.localiser --out runs/localiser \
        --add-to src/lofihippseg/data/model/lofihippseg_default.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def add_to_bundle(localiser: Path, bundle: Path) -> None:
    """Store the localiser (in half precision) inside ``bundle`` (rewritten atomically)."""
    from lofihippseg.io.atomic import atomic_path
    from lofihippseg.models.registry import half_precision, safe_torch_load

    entry = safe_torch_load(localiser)["localiser"]
    entry["state"] = half_precision(entry["state"])
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
    p.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    p.add_argument("--iterations", type=int, default=LocaliserConfig.iterations)
    p.add_argument("--batch", type=int, default=LocaliserConfig.batch_size)
    p.add_argument("--n-filters", type=int, default=LocaliserSpec.n_filters)
    p.add_argument("--fine-model", type=Path, default=DEFAULT_MODEL,
                   help="bundle whose preprocessing the localiser copies")  # fmt: skip
    p.add_argument("--add-to", type=Path, help="bundle to add the trained localiser to")
    a = p.parse_args(argv)
    if a.pool is not None:
        cases = {c.case_id: c for c in discover_cases(a.pool)}
        train = [cases[i] for i in read_case_list(a.pool / "train.list")]
        val = [cases[i] for i in read_case_list(a.pool / "val.list")]
        fine = load_model(str(a.fine_model)).spec
        config = LocaliserConfig(iterations=a.iterations, batch_size=a.batch)
        spec = LocaliserSpec(n_filters=a.n_filters)
        train_localiser(train, val, a.out, fine, spec, config)
    if a.add_to is not None:
        add_to_bundle(a.out / "localiser.pt", a.add_to)
    return 0


if __name__ == "__main__":
    from lofihippseg.errors import LoFiError

    try:
        sys.exit(main())
    except LoFiError as exc:  # bad input: one line, as the CLI does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
