"""Split the MSD hippocampus crops for the release model: the MSD benchmark's seeded split.

The same permutation as ``benchmarks/msd_hippocampus/run.py`` (seed 0: 41 test, 16 validation,
144 training cases), so the release model never trains on the benchmark's test cases. Writes:

- ``OUT/msd_trainval.csv`` (``case_id,image,label``: the 160 training + validation crops) with
  ``train.list`` and ``val.list`` beside it (``lofihippseg train --unsided OUT/msd_trainval.csv``
  takes the split from them);
- ``OUT/test.list`` and ``OUT/test/{images,labels}/`` (symbolic links to the 41 test crops), what
  ``lofihippseg.recipe.card`` scores the shipped model on.

Example:
    python -m lofihippseg.recipe.msd --msd ../shared/data/msd_hippocampus --out runs/msd
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from lofihippseg.errors import LoFiError

N_TEST, N_VAL, SEED = 41, 16, 0


def split(msd: Path, n_test: int = N_TEST, n_val: int = N_VAL, seed: int = SEED):
    """(train, val, test) lists of case ids (``hippocampus_NNN``), sorted."""
    images = sorted(p for p in (msd / "imagesTr").glob("*.nii.gz") if not p.name.startswith("."))
    ids = [p.name[: -len(".nii.gz")] for p in images if (msd / "labelsTr" / p.name).is_file()]
    if len(ids) < n_test + n_val + 1:
        raise LoFiError(f"{msd}: {len(ids)} labelled crops, need more than {n_test + n_val}")
    order = np.random.default_rng(seed).permutation(len(ids))
    test = [ids[i] for i in order[:n_test]]
    rest = [ids[i] for i in order[n_test:]]
    return sorted(rest[n_val:]), sorted(rest[:n_val]), sorted(test)


def write(
    msd: Path, out: Path, n_test: int = N_TEST, n_val: int = N_VAL, seed: int = SEED
) -> tuple[list[str], list[str], list[str]]:
    """Write the split files (see the module docstring); returns (train, val, test) ids."""
    train, val, test = split(msd, n_test, n_val, seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["case_id,image,label\n"] + [
        f"{c},{(msd / 'imagesTr' / c).resolve()}.nii.gz,{(msd / 'labelsTr' / c).resolve()}.nii.gz\n"
        for c in train + val
    ]
    (out / "msd_trainval.csv").write_text("".join(rows))
    for name, ids in (("train", train), ("val", val), ("test", test)):
        (out / f"{name}.list").write_text("".join(f"{c}\n" for c in ids))
    for kind, src in (("images", "imagesTr"), ("labels", "labelsTr")):
        folder = out / "test" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for c in test:
            link = folder / f"{c}.nii.gz"
            if not link.exists():
                os.symlink((msd / src / f"{c}.nii.gz").resolve(), link)
    print(f"{out}: {len(train)} train, {len(val)} validation, {len(test)} test crops")
    return train, val, test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--msd", type=Path, default=Path("../shared/data/msd_hippocampus"))
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    write(a.msd, a.out)


if __name__ == "__main__":
    main()
