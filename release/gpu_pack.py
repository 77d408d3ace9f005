"""Pack what a GPU training campaign (``release/gpu_campaign.sh``) needs into one folder.

A lent GPU machine sees only the repository (64 MiB in all, the tracked files included) and
has no ``../shared``. The campaign trains on data made on the fly, so it needs only: the
training label maps (01-13; never the held-back 14-16), the MSD crops of the training split
(never the test split), and a config. This writes them into ``OUT`` (``gpu_data/`` by default,
which git ignores) with relative paths, and refuses to pack more than ``--max-mb``.

The config is ``--config`` (the shipped ``t2`` recipe by default) with: no pool (every
non-crop sample is a synthetic box), the packed maps and crops, the shipped bundle's ``t2``
pair as the starting weights (it travels with the repository), ``device`` cuda, mixed
precision, ``--batch`` and ``--workers``. The campaign script sets the output folder and the
number of iterations on the machine.

Example:
    python release/gpu_pack.py --out gpu_data --crops 100
    # then, on the machine: release/gpu_campaign.sh OUT  (carry gpu_data and .whl)
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
from lofihippseg.recipe.pools import split_maps  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"
BUNDLE = "src/lofihippseg/data/model/lofihippseg_default.pt"  # relative to the repository


def pack_maps(maps_dir: Path, out: Path) -> list[Path]:
    """Copy the training label maps (the held-back ones never) and list them in maps.list."""
    train, _ = split_maps(maps_dir)
    if not train:
        raise SystemExit(f"error: no training_seg_XX.nii.gz label maps in {maps_dir}")
    (out / "maps").mkdir(parents=True)
    copied = [Path(shutil.copy(p, out / "maps" / p.name)) for p in train]
    (out / "maps.list").write_text("".join(f"maps/{p.name}\n" for p in copied))
    return copied


def pack_crops(trainval_csv: Path, out: Path, n: int) -> list[Path]:
    """Copy the first ``n`` crops of the training split's CSV (image,label per row, a header
    naming them) into ``out/msd`` and write ``out/msd/trainval.csv`` with relative paths."""
    with trainval_csv.open() as f:
        rows = list(csv.DictReader(f))[:n]
    if not rows:
        raise SystemExit(f"error: {trainval_csv} lists no crops")
    copied: list[Path] = []
    lines = ["case_id,image,label"]
    for row in rows:
        paths = []
        for kind, folder in (("image", "imagesTr"), ("label", "labelsTr")):
            (out / "msd" / folder).mkdir(parents=True, exist_ok=True)
            copied.append(Path(shutil.copy(row[kind], out / "msd" / folder)))
            paths.append(f"{folder}/{copied[-1].name}")
        lines.append(f"{row['case_id']},{paths[0]},{paths[1]}")
    (out / "msd" / "trainval.csv").write_text("\n".join(lines) + "\n")
    return copied


def campaign_config(base: dict, out: Path, batch: int, workers: int) -> dict:
    """The release recipe ``base`` rewritten for the packed data on one GPU."""
    config = dict(base)
    config.update(
        data=[],
        synthetic=str(out / "maps.list"),
        unsided=[str(out / "msd" / "trainval.csv")] if (out / "msd").is_dir() else [],
        init1=BUNDLE,
        init2=None,
        init_family="t2",
        device="cuda",
        amp=True,
        batch_size=batch,
        num_workers=workers,
        name="gpu_campaign",
    )
    if not config["unsided"]:
        config["unsided_fraction"] = 0.0
    return config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_data"), help="folder to write (new)")
    p.add_argument("--maps", type=Path, default=SHARED / "synthseg_label_maps")
    p.add_argument("--trainval", type=Path, default=Path("runs/msd/msd_trainval.csv"),
                   help="the MSD training split's CSV (lofihippseg.recipe.msd)")  # fmt: skip
    p.add_argument("--crops", type=int, default=100, help="crops to pack (0: none)")
    p.add_argument("--config", type=Path, default=HERE / "release_config.json")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=14, help="DataLoader workers (CPU cores - 2)")
    p.add_argument(
        "--max-mb", type=float, default=30.0, help="refuse more (with ~36 MB of repo and wheels)"
    )
    a = p.parse_args(argv)
    if a.out.exists():
        print(f"error: {a.out} exists; remove it or choose another --out", file=sys.stderr)
        return 2
    if not a.maps.is_dir():
        print(f"error: no label maps folder at {a.maps}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True)
    files = pack_maps(a.maps, a.out)
    if a.crops > 0:
        files += pack_crops(a.trainval, a.out, a.crops)
    config = campaign_config(json.loads(a.config.read_text()), a.out, a.batch, a.workers)
    (a.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    mb = sum(f.stat().st_size for f in files) / 1e6
    if mb > a.max_mb:
        shutil.rmtree(a.out)
        print(f"error: {mb:.1f} MB to pack, over --max-mb {a.max_mb}: pack fewer --crops",
              file=sys.stderr)  # fmt: skip
        return 2
    n_crops = sum(1 for f in files if f.parent.name == "imagesTr")
    print(f"{a.out}: {len(files) - 2 * n_crops} label maps, {n_crops} crops, {mb:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
