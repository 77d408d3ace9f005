"""Split a synthetic pool by contrast family, for one pair of networks per family.

``lofihippseg.recipe.pools`` records each training case's contrast (``t2``, ``t1`` or
``random``) in the pool's ``sources.csv``. For each family this writes a folder beside the
pool (``POOL_t2``, ``POOL_t1``) that links the pool's images and labels and lists, as its
``train.list``, the training cases of that family and of random contrast (both families see
random contrast); ``val.list``, ``training_maps.list`` (the maps of on-the-fly synthesis) and
``sources.csv`` are copied. The ``rand`` family (``POOL_rand``) trains on random contrast only
and validates on random-contrast cases it holds out of its own training list (the pool's
validation heads are low-field T2). Nothing is duplicated but the lists.

Example:
    python -m lofihippseg.recipe.family_pools runs/pool  # -> runs/pool_t2, pool_t1, pool_rand
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

FAMILIES = {"t2": ("t2", "random"), "t1": ("t1", "random"), "rand": ("random",)}
OWN_VALIDATION = {"rand": 6}  # families validated on cases of their own contrast, held out
COPIED = ("val.list", "sources.csv", "training_maps.list")


def family_pool(pool: Path, family: str) -> Path:
    """Write ``POOL_FAMILY`` (links and lists) and return it.

    Example:
        >>> family_pool(Path("runs/pool"), "t1")  # doctest: +SKIP
        PosixPath('runs/pool_t1')
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
    with open(pool / "sources.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cases = [
        r["case_id"] for r in rows if r["split"] == "train" and r["contrast"] in FAMILIES[family]
    ]
    if not cases:
        raise ValueError(f"{pool}/sources.csv lists no training case of family {family}")
    n_own = OWN_VALIDATION.get(family, 0)
    if len(cases) <= n_own:
        raise ValueError(f"{pool}: {len(cases)} cases of family {family}; need more than {n_own}")
    out = pool.parent / f"{pool.name}_{family}"
    out.mkdir(exist_ok=True)
    for sub in ("imagesTr", "labelsTr"):
        link = out / sub
        if not link.exists():
            link.symlink_to((pool / sub).resolve(), target_is_directory=True)
    for name in COPIED:
        if (pool / name).is_file():
            shutil.copyfile(pool / name, out / name)
    if n_own:
        cases, held = cases[:-n_own], cases[-n_own:]
        (out / "val.list").write_text("\n".join(held) + "\n")
    (out / "train.list").write_text("\n".join(cases) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pool", type=Path, help="a pool written by lofihippseg.recipe.pools")
    a = p.parse_args(argv)
    if not (a.pool / "sources.csv").is_file():
        print(
            f"error: {a.pool}: no sources.csv (not a pool written by lofihippseg.recipe.pools)",
            file=sys.stderr,
        )
        return 1
    for family in FAMILIES:
        try:
            out = family_pool(a.pool, family)
        except ValueError as error:
            print(f"skipped {family}: {error}", file=sys.stderr)
            continue
        n = len((out / "train.list").read_text().split())
        print(f"{out}: {n} training cases ({' + '.join(FAMILIES[family])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
