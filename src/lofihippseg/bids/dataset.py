"""Finding the anatomical images of a BIDS dataset.

Walks ``sub-*/[ses-*/]anat/`` (nothing else: ``derivatives/``, ``sourcedata/`` and ``code/``
are never read) and keeps NIfTI images whose names follow the BIDS rules
(:mod:`lofihippseg.bids.entities`). Selection mirrors the BIDS Apps options: participants,
sessions, acquisitions, and suffixes in order of preference (per subject and session, the
first listed suffix that has images is used, e.g. T2w where there is one, else T1w).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lofihippseg.bids.entities import BidsName, parse_name, strip_prefix
from lofihippseg.errors import LoFiError
from lofihippseg.io.paths import is_file_or_absent

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class BidsImage:
    """One anatomical image of the input dataset."""

    path: Path
    name: BidsName
    relpath: str  # POSIX path relative to the dataset root

    @property
    def subject(self) -> str:
        """Participant label (without ``sub-``)."""
        return self.name.entities["sub"]

    @property
    def session(self) -> str | None:
        """Session label (without ``ses-``), None for a dataset without sessions."""
        return self.name.get("ses")


def read_description(bids_dir: str | Path) -> dict[str, Any]:
    """The dataset's ``dataset_description.json``; LoFiError when absent or unreadable."""
    path = Path(bids_dir) / "dataset_description.json"
    if not Path(bids_dir).is_dir():
        raise LoFiError(f"{bids_dir}: BIDS folder not found")
    if not path.is_file():
        raise LoFiError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LoFiError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise LoFiError(f"{path}: expected a JSON object")
    return data


def check_output_folder(bids_dir: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder that is the input dataset or inside it (except ``derivatives/``).

    Raises:
        LoFiError: ``out_dir`` would write into the raw dataset.

    Example:
        >>> check_output_folder("study", "study/derivatives/lofihippseg")  # allowed
    """
    raw, out = Path(bids_dir).resolve(), Path(out_dir).resolve()
    if out != raw and raw not in out.parents:
        return
    if (raw / "derivatives") in out.parents:
        return
    raise LoFiError(
        f"{out_dir}: is {'the input dataset' if out == raw else 'inside the input dataset'} "
        f"{bids_dir}; never write into it: use another folder, e.g. "
        f"{Path(bids_dir) / 'derivatives' / 'lofihippseg'}"
    )


def normalise_labels(labels: Iterable[str] | None, key: str) -> list[str] | None:
    """Labels given on the command line, with or without prefix, space or comma separated.

    Example:
        >>> normalise_labels(["sub-01", "02,03"], "sub")
        ['01', '02', '03']
    """
    if not labels:
        return None
    out: list[str] = []
    for item in labels:
        for part in str(item).replace(",", " ").split():
            value = strip_prefix(part, key)
            if value not in out:
                out.append(value)
    return out or None


def _anat_folders(root: Path, subjects: list[str] | None) -> list[tuple[str, str | None, Path]]:
    folders = []
    for sub_dir in sorted(root.glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        subject = sub_dir.name[4:]
        if subjects is not None and subject not in subjects:
            continue
        if (sub_dir / "anat").is_dir():
            folders.append((subject, None, sub_dir / "anat"))
        for ses_dir in sorted(sub_dir.glob("ses-*")):
            if (ses_dir / "anat").is_dir():
                folders.append((subject, ses_dir.name[4:], ses_dir / "anat"))
    return folders


def _images_in(root: Path, subject: str, session: str | None, folder: Path) -> list[BidsImage]:
    images = []
    for path in sorted(folder.iterdir()):
        # an absent (unfetched annex) image is kept: predict names it as failed, with the fix
        if not is_file_or_absent(path) or not path.name.endswith(IMAGE_EXTENSIONS):
            continue
        try:
            name = parse_name(path.name)
        except LoFiError as exc:
            log.warning("skipped: %s", exc)
            continue
        if name.get("sub") != subject or name.get("ses") != session:
            log.warning("skipped %s: its sub/ses entities do not match its folder", path)
            continue
        images.append(BidsImage(path, name, path.relative_to(root).as_posix()))
    return images


def find_images(
    bids_dir: str | Path,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
    suffixes: Sequence[str] = ("T2w",),
    acquisitions: Sequence[str] | None = None,
) -> list[BidsImage]:
    """The anatomical images to segment, sorted by subject, session and name.

    Args:
        bids_dir: the dataset root (holding ``dataset_description.json``).
        participant_labels: only these participants (``01`` or ``sub-01``); None = all.
        session_labels: only these sessions; None = all (and subjects without sessions).
        suffixes: image suffixes in order of preference, per subject and session.
        acquisitions: only images with one of these ``acq-`` labels; None = any.

    Returns:
        The selected images.

    Raises:
        LoFiError: not a BIDS dataset, a requested participant is absent, or nothing matches.

    Example:
        >>> find_images("bids/", ["01"], suffixes=("T2w", "T1w"))  # doctest: +SKIP
    """
    root = Path(bids_dir)
    read_description(root)
    subjects = normalise_labels(participant_labels, "sub")
    sessions = normalise_labels(session_labels, "ses")
    acqs = normalise_labels(acquisitions, "acq")
    if subjects is not None:
        missing = [s for s in subjects if not (root / f"sub-{s}").is_dir()]
        if missing:
            raise LoFiError(
                f"{root}: participant(s) not found: {', '.join('sub-' + s for s in missing)}"
            )
    selected: list[BidsImage] = []
    for subject, session, folder in _anat_folders(root, subjects):
        if sessions is not None and session not in sessions:
            continue
        images = [
            im
            for im in _images_in(root, subject, session, folder)
            if acqs is None or im.name.get("acq") in acqs
        ]
        for suffix in suffixes:
            chosen = [im for im in images if im.name.suffix == suffix]
            if chosen:
                selected.extend(chosen)
                break
    if not selected:
        raise LoFiError(
            f"{root}: no {'/'.join(suffixes)} images found in sub-*/[ses-*/]anat/ "
            "for the participants, sessions and acquisitions asked for"
        )
    return selected


# entities that tell a session's stacks apart (``acq-axi``, ``acq-cor``, ``run-2`` ...)
STACK_ENTITIES = ("acq", "run")


def _stack_order(image: BidsImage) -> tuple[int, str]:
    """The axial stack first (an ``acq-`` label starting with ``ax``), then by name."""
    acq = (image.name.get("acq") or "").lower()
    return (0 if acq.startswith("ax") else 1, image.name.filename)


def group_stacks(images: list[BidsImage]) -> list[list[BidsImage]]:
    """Group images of one subject and session that differ only in ``acq-`` or ``run-``.

    Each group with two or more images is one session's stacks (the first, the reference
    frame, is the axial one when an ``acq-`` label says so); other images stay alone.

    Example:
        >>> [[im.name.get("acq") for im in g] for g in group_stacks(images)]  # doctest: +SKIP
        [['axi', 'cor', 'sag'], ['lf']]
    """
    groups: dict[tuple, list[BidsImage]] = {}
    for image in images:
        entities = image.name.entities.items()
        rest = tuple(sorted((k, v) for k, v in entities if k not in STACK_ENTITIES))
        groups.setdefault((rest, image.name.suffix), []).append(image)
    return [sorted(g, key=_stack_order) for g in groups.values()]
