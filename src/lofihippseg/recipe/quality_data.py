"""The quality estimator's table: the model's own predictions on scans with known labels.

One row per side: the features of ``quality.features`` and the true Dice. The scans (fixed
seeds, so a table is rebuilt exactly):

- synthetic heads (``synth.SyntheticGenerator``) of label maps 01-13 (``anatomy="train"``) or
  of the held-back maps 14-16 (``anatomy="held"``: validation only), under each contrast the
  generator makes (``CONTRASTS``: its low-field T2 priors, T1-like priors, fully random
  per-label contrast), with its randomised acquisition (1-3 mm single stacks among the
  Hyperfine stacks); a quarter resampled to 1-2 mm voxels; ``p_degraded`` of them degraded
  (``recipe.quality_degrade``);
- MSD hippocampus crops (``msd_split``: ``train`` or ``test`` of ``release/msd_split.py``'s
  seeded split), every second one mirrored left-right; a crop holds one unsided hippocampus,
  so its one row is the side the model labelled most, scored against the crop's whole label.

Rows are appended to ``OUT/table.jsonl`` case by case, so an interrupted build resumes where it
stopped; ``OUT/cases/CASE.npz`` keeps the maps the features came from (to recompute features
without predicting again).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lofihippseg.errors import LoFiError
from lofihippseg.inference.predictor import Prediction, Predictor
from lofihippseg.io.nifti import Volume, load_image, load_label, save_volume
from lofihippseg.metrics.overlap import mask_dice
from lofihippseg.preprocessing.resample import resample_labelled
from lofihippseg.quality.features import SIDES, case_features
from lofihippseg.recipe.quality_degrade import DEGRADATIONS
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.dataset import save_scaled_image

log = logging.getLogger(__name__)

HELD_BACK = ("14", "15", "16")  # label maps never used for anything shipped
CONTRASTS = ("t2", "t1", "random")
N_TEST, N_VAL, MSD_SEED = 41, 16, 0  # lofihippseg.recipe.msd's split
WINDOW_MARGIN = 8  # voxels kept around the maps' box in the saved case


def contrast_config(name: str) -> SynthConfig:
    """The generator's settings for one contrast (``lofihippseg.recipe.pools``' profiles).

    Example:
        >>> contrast_config("random").p_random_contrast
        1.0
    """
    from lofihippseg.recipe.pools import random_config, randomised, t1_config, t2_config

    if name == "t2":
        return randomised(t2_config())
    if name == "t1":
        return randomised(t1_config())
    if name == "random":
        return random_config()
    raise LoFiError(f"unknown contrast {name!r}; expected one of {CONTRASTS}")


@dataclass(frozen=True)
class QualityData:
    """Which scans make a quality table (module docstring).

    Attributes:
        maps: folder of ``training_seg_NN.nii.gz`` label maps.
        anatomy: ``train`` (maps 01-13) or ``held`` (maps 14-16, validation only).
        n_heads: synthetic heads (contrasts in turn).
        p_degraded: share of heads degraded.
        p_resampled: share of heads resampled to 1-2 mm voxels.
        msd: the MSD folder (``imagesTr``, ``labelsTr``); None = no crops.
        msd_split: ``train`` (the split's 144 training crops) or ``test`` (its 41).
        n_msd: at most this many crops (None: all of the split).
        seed: seed of every draw.
    """

    maps: Path
    anatomy: str = "train"
    n_heads: int = 240
    p_degraded: float = 0.5
    p_resampled: float = 0.25
    msd: Path | None = None
    msd_split: str = "train"
    n_msd: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.anatomy not in ("train", "held"):
            raise LoFiError(f"anatomy must be 'train' or 'held', got {self.anatomy!r}")
        if self.msd_split not in ("train", "test"):
            raise LoFiError(f"msd_split must be 'train' or 'test', got {self.msd_split!r}")


def label_maps(folder: Path, anatomy: str) -> list[Path]:
    """The maps of ``anatomy``: 01-13 (train) or 14-16 (held)."""
    maps = sorted(Path(folder).glob("training_seg_*.nii.gz"))
    held = [p for p in maps if p.name.split("_")[-1].split(".")[0] in HELD_BACK]
    chosen = held if anatomy == "held" else [p for p in maps if p not in held]
    if not chosen:
        raise LoFiError(f"{folder}: no training_seg_NN.nii.gz label maps for anatomy {anatomy}")
    return chosen


def msd_cases(msd: Path, which: str) -> list[str]:
    """Case ids of the seeded MSD split's ``train`` (and validation) or ``test`` crops."""
    images = sorted(p for p in (msd / "imagesTr").glob("*.nii.gz") if not p.name.startswith("."))
    ids = [p.name[: -len(".nii.gz")] for p in images if (msd / "labelsTr" / p.name).is_file()]
    order = np.random.default_rng(MSD_SEED).permutation(len(ids))
    test = sorted(ids[i] for i in order[:N_TEST])
    train = sorted(ids[i] for i in order[N_TEST:])
    return test if which == "test" else train


def plan(data: QualityData) -> list[dict[str, Any]]:
    """Every case of the table, in order (the crops spread among the heads): name and how it
    is made (deterministic).

    Example:
        >>> [c["contrast"] for c in plan(QualityData(Path("maps"), n_heads=3))]
        ['t2', 't1', 'random']
    """
    rng = np.random.default_rng([data.seed, 1])
    cases = []
    names = list(DEGRADATIONS)
    for i in range(data.n_heads):
        degraded = rng.random() < data.p_degraded
        degradation = names[int(rng.integers(len(names)))] if degraded else "none"
        resampled = bool(rng.random() < data.p_resampled)
        cases.append(
            {
                "case": f"{data.anatomy}_{i:04d}",
                "kind": "head",
                "contrast": CONTRASTS[i % len(CONTRASTS)],
                "degradation": degradation,
                "resampled": resampled,
                "seed": int(data.seed * 100_000 + i),
            }
        )
    crops = []
    if data.msd is not None:
        ids = msd_cases(Path(data.msd), data.msd_split)[: data.n_msd]
        for j, cid in enumerate(ids):
            crops.append(
                {
                    "case": f"msd_{data.msd_split}_{cid}",
                    "kind": "crop",
                    "contrast": "msd_t1",
                    "degradation": "none",
                    "mirrored": j % 2 == 1,
                    "msd_id": cid,
                }
            )
    # crops spread among the heads, so that a table cut short holds some of each
    order = np.argsort(
        np.concatenate([np.linspace(0, 1, len(cases)), np.linspace(0, 1, len(crops))]),
        kind="stable",
    )
    both = cases + crops
    return [both[i] for i in order]


def head_map_index(seed: int, n_maps: int) -> int:
    """Which of ``n_maps`` label maps the head of ``seed`` is made from: the generator's first
    draw (``SyntheticGenerator.sample``'s ``params["map_index"]``), so that a table built before
    rows recorded it can still group its heads by label map.

    Example:
        >>> 0 <= head_map_index(7, 13) < 13
        True
    """
    g = torch.Generator().manual_seed(int(seed))
    return int(torch.randint(int(n_maps), (1,), generator=g))


def _head(case: dict[str, Any], gen, folder: Path) -> tuple[Path, Path, int]:
    """Write one synthetic head (image, labels) for ``case``; return their paths and the index
    of the label map it was made from."""
    g = torch.Generator().manual_seed(case["seed"])
    sample = gen.sample(g)
    img, lab, aff = sample.image.numpy(), sample.label.numpy(), sample.affine
    rng = np.random.default_rng(case["seed"])
    if case["degradation"] != "none":
        img, lab, aff = DEGRADATIONS[case["degradation"]](img, lab, aff, rng)
    if case["resampled"]:
        img, lab, aff = resample_labelled(img, lab, aff, float(rng.uniform(1.0, 2.0)))
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
    image, label = folder / "image.nii", folder / "label.nii"
    save_scaled_image(img, aff, image)
    save_volume(lab, aff, label, np.uint8)
    return image, label, int(sample.params["map_index"])


def _crop(case: dict[str, Any], msd: Path, folder: Path) -> tuple[Path, Path]:
    """The MSD crop's (image, label) paths, mirrored left-right when ``case["mirrored"]``."""
    import nibabel as nib

    paths = [msd / sub / f"{case['msd_id']}.nii.gz" for sub in ("imagesTr", "labelsTr")]
    if not case["mirrored"]:
        return paths[0], paths[1]
    out = []
    for path, name in zip(paths, ("image.nii", "label.nii"), strict=True):
        img = nib.load(path)
        axis = int(np.argmax(np.abs(img.affine[0, :3])))
        data = np.flip(np.asanyarray(img.dataobj), axis).copy()
        nib.save(nib.Nifti1Image(data, img.affine, img.header), folder / name)
        out.append(folder / name)
    return out[0], out[1]


def true_dice(pred: np.ndarray, truth: np.ndarray, kind: str) -> dict[str, float]:
    """Per-side Dice (heads); for a crop, only the side the model labelled most, against the
    crop's whole label (a crop's hippocampus has no side)."""
    if kind == "head":
        return {s: mask_dice(pred == v, truth == v) for v, s in ((1, "left"), (2, "right"))}
    counts = [int((pred == v).sum()) for v in (1, 2)]
    side = SIDES[int(np.argmax(counts))]
    return {side: mask_dice(pred == SIDES.index(side) + 1, truth > 0)}


def _save_case(path: Path, volume, pred: Prediction, truth: np.ndarray) -> None:
    """The maps the features come from, in a window around the box (float16, compressed)."""
    shape = volume.data.shape
    lo = [max(b.start - WINDOW_MARGIN, 0) for b in pred.box]
    hi = [min(b.stop + WINDOW_MARGIN, n) for b, n in zip(pred.box, shape, strict=True)]
    window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    box = np.array([[b.start - a, b.stop - a] for b, a in zip(pred.box, lo, strict=True)])
    np.savez_compressed(
        path,
        image=volume.data[window].astype(np.float32),
        labels=pred.labels[window],
        truth=truth[window].astype(np.uint8),
        prob1=pred.prob1.astype(np.float16),
        prob2=pred.prob2.astype(np.float16),
        fused=pred.fused.astype(np.float16),
        box=box,
        window_start=np.array(lo),
        volume_shape=np.array(shape),
        spacing=np.array(volume.spacing),
        view_dice=np.array(np.nan if pred.view_dice is None else pred.view_dice),
        info=np.array(json.dumps(pred.info, default=str)),
    )


def done_cases(table: Path) -> set[str]:
    """Cases already in a table file."""
    if not table.is_file():
        return set()
    done = set()
    for line in table.read_text().splitlines():
        try:
            done.add(json.loads(line)["case"])
        except (ValueError, KeyError):
            continue  # a line cut by an interruption: the case is redone
    return done


def read_table(table: Path) -> list[dict[str, Any]]:
    """The rows (one per side) of a table file. A head's row without ``map_index`` (a table
    built before rows recorded it) gets it from its seed when the folder's ``data.json`` names
    label maps that are there."""
    rows = []
    for line in Path(table).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        rows.extend(record["sides"])
    missing = [r for r in rows if r.get("kind") == "head" and "map_index" not in r]
    spec = Path(table).parent / "data.json"
    if missing and spec.is_file():
        data = json.loads(spec.read_text())
        try:
            n_maps = len(label_maps(Path(data["maps"]), data["anatomy"]))
        except (LoFiError, KeyError):
            return rows
        for r in missing:
            r["map_index"] = head_map_index(r["seed"], n_maps)
    return rows


def read_case(
    case: dict[str, Any], data: QualityData, generators: dict, folder: Path
) -> tuple[dict[str, Any], Volume, np.ndarray]:
    """One planned case as predict sees it: written to ``folder`` (a head; a mirrored crop)
    and read back. Returns the case (a head's with its ``map_index``), the scan and its
    truth on the scan's grid. ``generators``: a cache of the synthetic generators by contrast,
    shared between calls."""
    from lofihippseg.synth.generator import SyntheticGenerator

    if case["kind"] == "head":
        contrast = case["contrast"]
        if contrast not in generators:
            maps = label_maps(data.maps, data.anatomy)
            generators[contrast] = SyntheticGenerator(maps, contrast_config(contrast))
        image_path, label_path, index = _head(case, generators[contrast], folder)
        case = {**case, "map_index": index}
    else:
        image_path, label_path = _crop(case, Path(data.msd), folder)  # type: ignore[arg-type]
    volume = load_image(image_path)
    return case, volume, load_label(label_path, reference=volume).data


def build_table(
    predictor: Predictor,
    data: QualityData,
    out: Path,
    save_cases: bool = True,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
) -> Path:
    """Predict every case of ``plan(data)`` not yet in ``OUT/table.jsonl`` and append its rows.

    Args:
        predictor: the model to assess, with predict's settings.
        data: which scans.
        out: the table's folder (created; resumed when it holds part of the table).
        save_cases: also keep each case's maps (``OUT/cases``).
        limit: stop after this many new cases (None: all).
        shard: ``(i, n)``: only every n-th case from the i-th (0-based), so that n processes
            can fill one table together.

    Returns:
        The table file.
    """
    out = Path(out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    table = out / "table.jsonl"
    (out / "data.json").write_text(json.dumps(dataclasses.asdict(data), default=str, indent=1))
    done = done_cases(table)
    generators: dict[str, Any] = {}  # SyntheticGenerator by contrast
    new = 0
    for k, case in enumerate(plan(data)):
        if case["case"] in done or (shard is not None and k % shard[1] != shard[0]):
            continue
        if limit is not None and new >= limit:
            break
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            case, volume, truth = read_case(case, data, generators, Path(tmp))
            t1 = time.perf_counter()
            pred = predictor.predict_volume(volume)
            t2 = time.perf_counter()
            feats = case_features(
                volume.data, pred.labels, pred.prob1, pred.prob2, pred.fused, pred.box,
                volume.spacing, pred.view_dice, pred.info, threshold=predictor.settings.threshold,
            )  # fmt: skip
            t3 = time.perf_counter()
            dice = true_dice(pred.labels, truth, case["kind"])
            if save_cases:
                _save_case(out / "cases" / f"{case['case']}.npz", volume, pred, truth)
        sides = [{**case, "side": side, "dice": d, **feats[side]} for side, d in dice.items()]
        record = {
            "case": case["case"],
            "sides": sides,
            "seconds": {
                "make": round(t1 - t0, 3),
                "predict": round(t2 - t1, 3),
                "features": round(t3 - t2, 4),
            },
        }
        with open(table, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        new += 1
        log.info("%s: dice %s (%.1f s)", case["case"], dice, time.perf_counter() - t0)
    return table


def iter_saved(out: Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(case, arrays) of every saved case of a table folder."""
    for path in sorted((Path(out) / "cases").glob("*.npz")):
        with np.load(path) as z:
            yield path.stem, {k: z[k] for k in z.files}


def saved_features(arrays: dict[str, np.ndarray], threshold: float = 0.5) -> dict[str, dict]:
    """``case_features`` of a saved case (``OUT/cases/CASE.npz``)."""
    box = tuple(slice(int(a), int(b)) for a, b in arrays["box"])
    return case_features(
        arrays["image"], arrays["labels"],
        *(arrays[k].astype(np.float32) for k in ("prob1", "prob2", "fused")),
        box, tuple(float(s) for s in arrays["spacing"]), float(arrays["view_dice"]),
        json.loads(str(arrays["info"])), tuple(int(n) for n in arrays["volume_shape"]),
        tuple(int(n) for n in arrays["window_start"]), threshold,
    )  # fmt: skip
