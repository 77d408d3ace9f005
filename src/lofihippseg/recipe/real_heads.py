"""The recipe's real heads: the IXI split written once, and its cases for the training stages.

``write`` stores, under the stage's folder, each head's hippocampus label map (``labels/``,
uint8: 1 left, 2 right, from DLMUSE's 48 and 47, on the head's own grid), ``heads.csv`` (the
training and validation heads: ``case_id,image,label``, what ``train``'s ``data`` reads) with
``train.list`` and ``val.list`` beside it, and ``held.csv``/``held.list``
(``io.ixi.split_cases``). The held-back heads are never trained on: they are the card's and
``benchmarks/bench_real_heads.py``'s real heads.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import write_text_atomic
from lofihippseg.io.datasets import Case, discover_cases, read_case_list
from lofihippseg.io.ixi import IxiCase, find_cases, hippocampus_labels, split_cases
from lofihippseg.io.nifti import load_image, load_label, save_like
from lofihippseg.recipe import provenance as pv

PARTS = ("train", "val", "held")
TRAINVAL_CSV = "heads.csv"
HELD_CSV = "held.csv"


def write(root: Path, folder: Path, seed: int, held_out: int, n_val: int, limit: int = 0) -> dict:
    """Write the split, the label maps and the CSVs (``limit`` > 0: that many heads per part).

    Returns:
        The stage's record: the heads per part with their images' hashes.
    """
    parts = split_cases(find_cases(root), seed, held_out, n_val)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    record: dict = {"seed": seed, "root": str(root), "written": 0}
    chosen = {part: parts[part][:limit] if limit else parts[part] for part in PARTS}
    for part in PARTS:
        for case in chosen[part]:
            record["written"] += _write_labels(case, folder)
        write_text_atomic(folder / f"{part}.list", "".join(f"{c.name}\n" for c in chosen[part]))
        record[part] = [{"name": c.name, "image_sha256": pv.sha256(c.image)} for c in chosen[part]]
    _write_csv(folder / TRAINVAL_CSV, chosen["train"] + chosen["val"], folder)
    _write_csv(folder / HELD_CSV, chosen["held"], folder)
    return record


def _write_labels(case: IxiCase, folder: Path) -> int:
    """The head's hippocampus label map (1 when written now, 0 when already there)."""
    out = label_path(folder, case.name)
    if out.is_file():
        return 0
    volume = load_image(case.image)
    labels = hippocampus_labels(load_label(case.label, volume).data)
    if not ((labels == 1).any() and (labels == 2).any()):
        raise LoFiError(f"{case.label}: no hippocampus label 48 or 47")
    save_like(labels.astype(np.uint8), volume, out)
    return 1


def label_path(folder: Path, name: str) -> Path:
    """Where head ``name``'s hippocampus label map is written."""
    return folder / "labels" / f"{name}_hipp.nii.gz"


def _write_csv(path: Path, heads: list[IxiCase], folder: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "image", "label"])
    for case in heads:
        writer.writerow(
            [case.name, str(case.image.resolve()), str(label_path(folder, case.name).resolve())]
        )
    write_text_atomic(path, buffer.getvalue())


def cases(folder: Path, part: str) -> list[Case]:
    """The ``part`` heads (``train``, ``val`` or ``held``) as (image, hippocampus labels) cases."""
    listing = folder / f"{part}.list"
    source = folder / (HELD_CSV if part == "held" else TRAINVAL_CSV)
    if not listing.is_file() or not source.is_file():
        raise LoFiError(f"{folder}: no real-heads split here (run the ixi stage first)")
    by_id = {c.case_id: c for c in discover_cases(source)}
    return [by_id[name] for name in read_case_list(listing)]


def repeated_csv(folder: Path, out: Path, repeat: int) -> Path:
    """The training CSV of the split in ``folder`` with each training head listed ``repeat``
    times (ids ``NAME_rK``; validation heads once): a larger share of real heads in a mix.
    ``repeat`` 1 is the split's own ``heads.csv``; otherwise it is written under ``out``."""
    if repeat <= 1:
        return folder / TRAINVAL_CSV
    train, val = cases(folder, "train"), cases(folder, "val")
    rows, ids = ["case_id,image,label"], []
    for k in range(repeat):
        for c in train:
            ids.append(f"{c.case_id}_r{k}")
            rows.append(f"{ids[-1]},{c.image},{c.label}")
    rows += [f"{c.case_id},{c.image},{c.label}" for c in val]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / TRAINVAL_CSV, "\n".join(rows) + "\n")
    write_text_atomic(out / "train.list", "".join(f"{i}\n" for i in ids))
    write_text_atomic(out / "val.list", "".join(f"{c.case_id}\n" for c in val))
    return out / TRAINVAL_CSV
