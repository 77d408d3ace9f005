"""The real IXI heads with DLMUSE labels (``../shared/data/ixi_dlmuse``): cases and their split.

175 adult T1 heads at 2 mm (IXI, CC BY-SA 3.0) with automatic DLMUSE parcellations (NiChart's
SBIA terms): ``t1/NAME_T1.nii.gz`` beside ``dlmuse/NAME_T1_DLMUSE.nii.gz``, one grid. DLMUSE's
hippocampus labels are 48 (left) and 47 (right); :func:`hippocampus_labels` maps them to ours
(1 = left, 2 = right).

The split is seeded and fixed (:func:`split_cases`): ``HELD_OUT`` heads are never trained on
(the card's and the benchmark's real heads), ``N_VAL`` validate a training run, the rest train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lofihippseg.errors import LoFiError

LEFT, RIGHT = 48, 47  # DLMUSE's left and right hippocampus
SPLIT_SEED = 41
HELD_OUT = 30
N_VAL = 10
DEFAULT_ROOT = Path(__file__).resolve().parents[4] / "shared" / "data" / "ixi_dlmuse"


@dataclass(frozen=True)
class IxiCase:
    """One IXI head: its T1 image and DLMUSE label map."""

    name: str
    image: Path
    label: Path


def find_cases(root: str | Path = DEFAULT_ROOT) -> list[IxiCase]:
    """Every head under ``root`` with both files, sorted by name.

    Raises:
        LoFiError: ``root`` has no ``t1/`` folder or no complete case.
    """
    root = Path(root)
    images = sorted((root / "t1").glob("*_T1.nii.gz"))
    if not images:
        raise LoFiError(f"{root}: no IXI heads (expected t1/*_T1.nii.gz beside dlmuse/)")
    cases = []
    for image in images:
        name = image.name[: -len("_T1.nii.gz")]
        label = root / "dlmuse" / f"{name}_T1_DLMUSE.nii.gz"
        if label.is_file():
            cases.append(IxiCase(name, image, label))
    if not cases:
        raise LoFiError(f"{root}: no IXI head has its dlmuse/ label map")
    return cases


def split_cases(
    cases: list[IxiCase], seed: int = SPLIT_SEED, held_out: int = HELD_OUT, n_val: int = N_VAL
) -> dict[str, list[IxiCase]]:
    """The seeded split ``{"train", "val", "held"}`` (each sorted by name).

    Example:
        >>> cs = [IxiCase(f"c{i:03d}", Path("i"), Path("l")) for i in range(50)]
        >>> parts = split_cases(cs)
        >>> [len(parts[k]) for k in ("train", "val", "held")]
        [10, 10, 30]
    """
    if held_out + n_val > len(cases):
        raise LoFiError(f"{len(cases)} IXI heads cannot hold back {held_out} and validate {n_val}")
    order = sorted(cases, key=lambda c: c.name)
    random.Random(seed).shuffle(order)
    parts = {
        "held": order[:held_out],
        "val": order[held_out : held_out + n_val],
        "train": order[held_out + n_val :],
    }
    return {k: sorted(v, key=lambda c: c.name) for k, v in parts.items()}


def hippocampus_labels(dlmuse: np.ndarray) -> np.ndarray:
    """DLMUSE labels to ours: 1 = left hippocampus (48), 2 = right (47), else 0 (uint8)."""
    out = np.zeros(dlmuse.shape, dtype=np.uint8)
    out[dlmuse == LEFT] = 1
    out[dlmuse == RIGHT] = 2
    return out
