"""Finding (image, label) cases in the dataset layouts users already have, and splitting them.

Layouts understood by :func:`discover_cases`:

- LISA challenge: ``imagesTr/LISA_XXXX_ciso.nii.gz`` with ``labelsTr/LISA_XXXX_hipp.nii.gz``
  (or the re-release's ``LISA_XXXX_HF_hipp.nii``); case id ``LISA_XXXX``. The two kinds of file
  may also sit side by side in one folder.
- nnU-Net raw: ``dataset.json``, ``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz``.
- Medical Segmentation Decathlon: ``dataset.json`` with a ``training`` list of
  ``{"image", "label"}``, or just ``imagesTr/X.nii.gz`` with ``labelsTr/X.nii.gz``.
- A CSV file of ``image,label`` paths (header optional; relative paths are relative to the CSV;
  an optional ``case_id`` column names the cases).

``subset="test"`` reads ``imagesTs`` (with ``labelsTs`` when present) and allows unlabelled cases.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import write_text_atomic
from lofihippseg.io.nifti import is_image_file, strip_suffix
from lofihippseg.io.paths import absent_problem, is_absent_file, is_file_or_absent

log = logging.getLogger(__name__)

_LISA = re.compile(r"^LISA_(?:(?:HF|LF)_)?(\d+)(?:_|$)", re.IGNORECASE)
_LISA_IMAGE = re.compile(r"^LISA_(?:(?:HF|LF)_)?\d+(?:_(?:HF|LF))?_ciso$", re.IGNORECASE)
_LISA_LABEL = re.compile(r"^LISA_(?:(?:HF|LF)_)?\d+(?:_(?:HF|LF))?_hipp$", re.IGNORECASE)
# name parts that decorate a case id without being part of it
_DECORATIONS = {
    "hipp",
    "ciso",
    "hf",
    "lf",
    "prediction",
    "pred",
    "seg",
    "label",
    "labels",
    "mask",
    "gt",
    "segmentation",
}
TRAIN_LIST = "train.list"
VAL_LIST = "val.list"


@dataclass(frozen=True)
class Case:
    """One scan and its label map (``None`` when unlabelled).

    Example:
        >>> Case("LISA_0001", Path("imagesTr/LISA_0001_ciso.nii.gz"), None).case_id
        'LISA_0001'
    """

    case_id: str
    image: Path
    label: Path | None


def case_id_from_name(name: str | Path) -> str:
    """Case id of a file name: LISA names give ``LISA_XXXX``; decorations are dropped.

    Example:
        >>> case_id_from_name("LISA_HF_0007_hipp_prediction.nii.gz")
        'LISA_0007'
        >>> case_id_from_name("hippocampus_001_seg.nii.gz")
        'hippocampus_001'
    """
    stem = strip_suffix(name)
    lisa = _LISA.match(stem)
    if lisa:
        return f"LISA_{lisa.group(1)}"
    tokens = [t for t in re.split(r"[_\-.\s]+", stem) if t]
    kept = [t for t in tokens if t.lower() not in _DECORATIONS]
    return "_".join(kept) if kept else stem


def match_key(name: str | Path) -> str:
    """Key for pairing files by case: the case id, lower case, numbers without leading zeros.

    Example:
        >>> match_key("LISA_0012_hipp.nii.gz") == match_key("lisa_hf_12_hipp_prediction.nii")
        True
    """
    tokens = case_id_from_name(name).split("_")
    return "_".join(str(int(t)) if t.isdigit() else t.lower() for t in tokens)


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if is_file_or_absent(p) and is_image_file(p) and not p.name.startswith(".")
    )


def _resolve(root: Path, entry: str, what: str, listed_in: Path) -> Path:
    path = Path(entry)
    path = path if path.is_absolute() else root / path
    if not path.exists() and is_image_file(path) and not strip_suffix(path).endswith("_0000"):
        # nnU-Net v1 dataset.json lists CASE.nii.gz for the file CASE_0000.nii.gz
        alt = path.with_name(strip_suffix(path) + "_0000" + path.name[len(strip_suffix(path)) :])
        if alt.exists():
            return alt
    if is_absent_file(path):
        raise LoFiError(f"{listed_in}: lists {what} {entry}: {absent_problem(path)}")
    if not path.exists():
        raise LoFiError(f"{listed_in}: lists {what} {entry}, which does not exist ({path})")
    return path


def _check_unique(cases: list[Case], source: Path) -> list[Case]:
    seen: dict[str, Case] = {}
    for case in cases:
        if case.case_id in seen:
            raise LoFiError(
                f"{source}: case id {case.case_id} appears twice "
                f"({seen[case.case_id].image}, {case.image})"
            )
        seen[case.case_id] = case
    return sorted(cases, key=lambda c: c.case_id)


def _from_csv(path: Path) -> list[Case]:
    try:
        rows = [r for r in csv.reader(path.read_text().splitlines()) if any(f.strip() for f in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LoFiError(f"{path}: cannot read the CSV ({exc})") from None
    if not rows:
        raise LoFiError(f"{path}: the CSV lists no cases")
    columns = {"image": 0, "label": 1, "case_id": None}
    first = [f.strip().lower() for f in rows[0]]
    if not any(is_image_file(f) for f in first):
        if "image" not in first:
            raise LoFiError(
                f"{path}: CSV header needs an 'image' column (and 'label'), got {rows[0]}"
            )
        columns = {k: first.index(k) if k in first else None for k in ("image", "label", "case_id")}
        rows = rows[1:]
    cases = []
    for n, row in enumerate(rows, start=1):

        def cell(key: str, row: list[str] = row) -> str:
            i = columns[key]
            return row[i].strip() if i is not None and i < len(row) else ""

        if not cell("image"):
            raise LoFiError(f"{path}: row {n} has no image path")
        image = _resolve(path.parent, cell("image"), "image", path)
        label = _resolve(path.parent, cell("label"), "label", path) if cell("label") else None
        case_id = cell("case_id") or _image_case_id(image)
        cases.append(Case(case_id, image, label))
    return cases


def _image_case_id(image: Path) -> str:
    stem = strip_suffix(image)
    if _LISA.match(stem):
        return case_id_from_name(stem)
    return stem[:-5] if stem.endswith("_0000") and len(stem) > 5 else stem


def _from_dataset_json(root: Path, subset: str) -> list[Case] | None:
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise LoFiError(f"{meta_path}: not readable JSON ({exc})") from None
    if subset == "train" and isinstance(meta.get("training"), list) and meta["training"]:
        cases = []
        for entry in meta["training"]:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise LoFiError(f"{meta_path}: each 'training' entry needs 'image' and 'label'")
            label = _resolve(root, entry["label"], "label", meta_path)
            image = _resolve(root, entry["image"], "image", meta_path)
            cases.append(Case(strip_suffix(label), image, label))
        return cases
    return None  # nnU-Net v2 (no list): pair the folders


def _pair_folders(images_dir: Path, labels_dir: Path, require_labels: bool) -> list[Case]:
    images = [p for p in _images_in(images_dir) if not _LISA_LABEL.match(strip_suffix(p))]
    labels = [p for p in _images_in(labels_dir) if not _LISA_IMAGE.match(strip_suffix(p))]
    lisa = any(_LISA_IMAGE.match(strip_suffix(p)) for p in images)
    by_id: dict[str, Path] = {}
    for label in labels:
        key = case_id_from_name(label) if lisa else strip_suffix(label)
        by_id[key] = label
    stems = {strip_suffix(p) for p in images}
    cases, orphans = [], []
    for image in images:
        stem = strip_suffix(image)
        if lisa:
            candidates = [case_id_from_name(stem)]
        else:
            candidates = [stem] + ([stem[:-5]] if stem.endswith("_0000") else [])
        case_id = next((c for c in candidates if c in by_id), candidates[-1])
        if case_id in by_id:
            cases.append(Case(case_id, image, by_id.pop(case_id)))
        elif not stem.endswith("_0000") and f"{stem[:-5]}_0000" in stems:
            continue  # extra nnU-Net channel (CASE_0001): only channel 0 is used
        elif require_labels:
            orphans.append(image.name)
        else:
            cases.append(Case(case_id, image, None))
    if orphans:
        raise LoFiError(
            f"{labels_dir}: no label map for {len(orphans)} image(s) in {images_dir}, "
            f"e.g. {', '.join(orphans[:3])}"
        )
    return cases


def discover_cases(source: str | Path, subset: str = "train") -> list[Case]:
    """List the cases of a dataset folder (LISA, nnU-Net, MSD layout) or a CSV file.

    Args:
        source: dataset folder, or a CSV of ``image,label`` paths.
        subset: ``"train"`` (imagesTr/labelsTr, labels required) or ``"test"`` (imagesTs, with
            labelsTs when present; unlabelled cases get ``label=None``).

    Returns:
        Cases sorted by case id.

    Raises:
        LoFiError: nothing found, a listed file missing, an image without label, duplicates.

    Example:
        >>> cases = discover_cases("../shared/data/msd_hippocampus")  # doctest: +SKIP
        >>> cases[0].case_id  # doctest: +SKIP
        'hippocampus_001'
    """
    source = Path(source)
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', not {subset!r}")
    if not source.exists():
        raise LoFiError(f"{source}: dataset not found")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise LoFiError(f"{source}: expected a dataset folder or a .csv of image,label paths")
        return _check_unique(_from_csv(source), source)
    tag = "Tr" if subset == "train" else "Ts"
    cases = None
    if (source / "dataset.json").is_file():
        cases = _from_dataset_json(source, subset)
    if cases is None:
        images_dir = source / f"images{tag}"
        labels_dir = source / f"labels{tag}"
        flat_lisa = any(_LISA_IMAGE.match(strip_suffix(p)) for p in _images_in(source))
        if not images_dir.is_dir() and flat_lisa:  # LISA images and labels side by side
            images_dir = labels_dir = source
        cases = _pair_folders(images_dir, labels_dir, require_labels=subset == "train")
    if not cases:
        raise LoFiError(
            f"{source}: no {subset} cases found; expected images{tag}/ + labels{tag}/ "
            "(LISA, nnU-Net or MSD layout), a dataset.json, or give a CSV of image,label paths"
        )
    return _check_unique(cases, source)


def read_case_list(path: str | Path) -> list[str]:
    """Read case ids, one per line (blank lines and ``#`` comments ignored).

    Example:
        >>> read_case_list("data/val.list")  # doctest: +SKIP
        ['LISA_0003', 'LISA_0011']
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoFiError(f"{path}: cannot read the case list ({exc})") from None
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def write_case_list(path: str | Path, ids: Iterable[str]) -> Path:
    """Write case ids one per line (atomically).

    Example:
        >>> write_case_list("run/val.list", ["LISA_0003"])  # doctest: +SKIP
    """
    return write_text_atomic(path, "".join(f"{i}\n" for i in ids))


def _as_ids(value: Sequence[str] | str | Path | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str | Path):
        return read_case_list(value)
    return [str(v) for v in value]


def _id_resolver(cases: Sequence[Case]) -> dict[str, str]:
    """Names a list entry may use for a case -> its case id (id, file names, file stems)."""
    aliases: dict[str, str] = {}
    for case in cases:
        for path in (case.image, case.label):
            if path is not None:
                aliases.setdefault(path.name, case.case_id)
                aliases.setdefault(strip_suffix(path), case.case_id)
    keys: dict[str, list[str]] = {}
    for case in cases:
        keys.setdefault(f"key:{match_key(case.case_id)}", []).append(case.case_id)
    aliases.update({k: v[0] for k, v in keys.items() if len(v) == 1})
    aliases.update({c.case_id: c.case_id for c in cases})
    return aliases


def _to_case_id(entry: str, aliases: dict[str, str]) -> str:
    """A list entry as a case id: ``LISA_0001``, ``LISA_0001_ciso.nii.gz`` or a path all work."""
    name = Path(entry).name
    for candidate in (entry, name, strip_suffix(name), f"key:{match_key(name)}"):
        if candidate in aliases:
            return aliases[candidate]
    return entry


def split_cases(
    cases: Sequence[Case],
    val_fraction: float = 0.2,
    seed: int = 0,
    train_list: Sequence[str] | str | Path | None = None,
    val_list: Sequence[str] | str | Path | None = None,
) -> tuple[list[Case], list[Case]]:
    """Split cases into training and validation sets.

    With lists (ids, or paths of list files), the split follows them; a missing side gets the
    remaining cases. List entries may be case ids or file names (``LISA_0001_ciso.nii.gz``, as
    the authors' ``train.list`` has them, or a label's name or a path). Otherwise the split is
    a seeded shuffle of the cases sorted by id, so it
    does not depend on the order of ``cases``; at least one validation case when
    ``val_fraction > 0`` and there are two cases or more.

    Example:
        >>> train, val = split_cases(cases, val_fraction=0.2, seed=0)  # doctest: +SKIP
    """
    by_id = {c.case_id: c for c in cases}
    train_ids, val_ids = _as_ids(train_list), _as_ids(val_list)
    aliases = _id_resolver(cases)
    if train_ids is not None:
        train_ids = list(dict.fromkeys(_to_case_id(i, aliases) for i in train_ids))
    if val_ids is not None:
        val_ids = list(dict.fromkeys(_to_case_id(i, aliases) for i in val_ids))
    if train_ids is not None or val_ids is not None:
        for name, ids in (("train", train_ids), ("val", val_ids)):
            unknown = [i for i in ids or [] if i not in by_id]
            if unknown:
                raise LoFiError(
                    f"{name} list names {len(unknown)} unknown case(s), e.g. "
                    f"{', '.join(unknown[:3])}"
                )
        if train_ids is not None and val_ids is not None:
            both = sorted(set(train_ids) & set(val_ids))
            if both:
                raise LoFiError(f"cases in both the train and val lists: {', '.join(both[:3])}")
        if val_ids is None:
            val_ids = [i for i in sorted(by_id) if i not in set(train_ids or [])]
        if train_ids is None:
            train_ids = [i for i in sorted(by_id) if i not in set(val_ids)]
        return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    if not 0.0 <= val_fraction < 1.0:
        raise LoFiError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(cases, key=lambda c: c.case_id)
    n_val = int(round(len(ordered) * val_fraction))
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    val_idx = set(perm[:n_val].tolist())
    train = [c for i, c in enumerate(ordered) if i not in val_idx]
    val = [c for i, c in enumerate(ordered) if i in val_idx]
    return train, val


def split_dataset(
    source: str | Path, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Case], list[Case]]:
    """Discover a dataset's cases and split them, using its ``train.list``/``val.list`` if present.

    The lists are looked for in the dataset folder (or beside the CSV).

    Example:
        >>> train, val = split_dataset("../shared/data/msd_hippocampus", seed=1)  # doctest: +SKIP
    """
    source = Path(source)
    cases = discover_cases(source)
    folder = source if source.is_dir() else source.parent
    lists = {name: folder / name for name in (TRAIN_LIST, VAL_LIST) if (folder / name).is_file()}
    if lists:
        log.info("using the split in %s", ", ".join(str(p) for p in lists.values()))
    return split_cases(cases, val_fraction, seed, lists.get(TRAIN_LIST), lists.get(VAL_LIST))
