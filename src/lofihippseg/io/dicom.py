"""DICOM in: find the image series in a folder tree and convert each with dcm2niix.

Needs the optional ``[dicom]`` extra (pydicom, dcm2niix; ``pip install "lofihippseg[dicom]"``).

A folder tree is read header by header (pixel data deferred), grouped into series by Series
Instance UID and sorted by series number. Each series is then one of:

- **usable**: an MR series of original images with three or more slices on one regular grid;
- **skipped**, with one line: localisers/scouts (Image Type ``LOCALIZER``, or a description
  like scout/localizer/survey/3-plane), derived series (Image Type ``DERIVED``), non-MR
  series (including DICOM SEG/SR objects), 2D series (a single slice);
- **bad**, with one line: no pixel data, instances of several studies, slices of different
  sizes or orientations, a gap in the slice positions (a missing slice), several volumes.

A usable series is converted by ``io.dcm2niix`` into an uncompressed NIfTI in a temporary folder
outside the input, named by its case name ``S{SeriesNumber}_{SeriesDescription}`` (sanitised).
Patient name, ID and birth date never enter a file name, a message or the sidecar: what the
sidecar keeps of the header is :data:`HEADER_FIELDS`, and every message naming a path goes
through :func:`scrub`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lofihippseg.errors import LoFiError
from lofihippseg.io.nifti import looks_like_dicom

log = logging.getLogger(__name__)

# What the sidecar keeps of a series' header: acquisition facts, nothing about the person, the
# place or the time (no names, IDs, dates, institution, operator, device serial number).
HEADER_FIELDS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "SeriesNumber",
    "SeriesDescription",
    "ImageType",
    "MRAcquisitionType",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "Rows",
    "Columns",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
)
# patient attributes whose values are removed from every message and path we print or store
_IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs")
_SCOUT = re.compile(r"scout|locali[sz]er|survey|3[-_ ]?plane|tri[-_ ]?pilot|aahead", re.I)
_NO_PIXELS = ((0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009))
_DICOMDIR = "1.2.840.10008.1.3.10"
INSTALL_HINT = 'install the DICOM support: pip install "lofihippseg[dicom]"'


def require_pydicom() -> Any:
    """The ``pydicom`` module, or a one-line error saying how to install it."""
    try:
        import pydicom
    except ImportError:
        raise LoFiError(f"DICOM input needs pydicom; {INSTALL_HINT}") from None
    return pydicom


def holds_dicom(folder: str | Path, limit: int = 200) -> bool:
    """True when a folder tree holds DICOM files (looks at the first ``limit`` files only).

    Example:
        >>> holds_dicom("scans/")  # doctest: +SKIP
        True
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for count, path in enumerate(p for p in sorted(folder.rglob("*")) if p.is_file()):
        if count >= limit:
            return False
        if looks_like_dicom(path):
            return True
    return False


def sanitise(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a series description (letters, digits, ``-``; ``_`` between).

    Example:
        >>> sanitise("T2 AXI (fast)/3mm")
        'T2_AXI_fast_3mm'
    """
    return re.sub(r"[^A-Za-z0-9-]+", "_", text).strip("_")[:limit].rstrip("_")


@dataclass
class Frame:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    index: int  # 0-based frame number in its file
    position: np.ndarray  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray  # ImageOrientationPatient (row direction, column direction)
    spacing: tuple[float, float]  # PixelSpacing (between rows, between columns)
    shape: tuple[int, int]  # (Rows, Columns)
    sop_uid: str


@dataclass
class DicomSeries:
    """One series found in a folder tree.

    Attributes:
        uid: Series Instance UID.
        study_uid: Study Instance UID.
        number: Series Number (0 when absent).
        description: Series Description ('' when absent).
        files: its files, sorted.
        folder: the folder holding them (their common parent).
        header: the non-identifying header fields (:data:`HEADER_FIELDS`) of its first file.
        frames: its 2D images sorted along the slice normal (empty when ``problem`` is set).
        skip: why it is skipped (a localiser, derived, not MR, 2D), else None.
        problem: why it cannot be segmented (no pixel data, a missing slice ...), else None.
        case: the case name (``S003_T2_AXI``), set by :func:`find_series`.
        identifying: the patient values to remove from messages (never written anywhere).
    """

    uid: str
    study_uid: str
    number: int
    description: str
    files: list[Path]
    folder: Path
    header: dict[str, Any]
    frames: list[Frame] = field(default_factory=list)
    skip: str | None = None
    problem: str | None = None
    case: str = ""
    identifying: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How messages name the series: its folder and number, description (scrubbed)."""
        desc = f" {self.description!r}" if self.description else ""
        return scrub(f"{self.folder} (series {self.number}{desc})", self.identifying)

    @property
    def normal(self) -> np.ndarray:
        """The slice normal (LPS) of its frames."""
        row, col = self.frames[0].orientation[:3], self.frames[0].orientation[3:]
        return np.cross(row, col)


def scrub(text: str, identifying: tuple[str, ...] | list[str]) -> str:
    """``text`` with every patient name, ID and birth date in it replaced by ``[removed]``.

    Example:
        >>> scrub("/data/DOE^JANE/IM1 (series 3)", ("DOE^JANE", "DOE JANE"))
        '/data/[removed]/IM1 (series 3)'
    """
    for value in sorted({v for v in identifying if len(v) >= 3}, key=len, reverse=True):
        text = re.sub(re.escape(value), "[removed]", text, flags=re.I)
    return text


def _identifying(ds: Any) -> tuple[str, ...]:
    values: list[str] = []
    for key in _IDENTIFYING:
        value = ds.get(key)
        if value is None or str(value).strip() == "":
            continue
        text = str(value).strip()
        values.append(text)
        parts = [p for p in re.split(r"[\^ ,]+", text) if len(p) >= 3]
        values.extend(parts)
        if len(parts) > 1:
            values.extend(["_".join(parts), " ".join(parts), "-".join(parts), "".join(parts)])
    return tuple(values)


def _plain(value: Any) -> Any:
    """A header value as JSON-friendly Python (numbers, strings, lists)."""
    if value is None:
        return None
    if isinstance(value, str | int | float):
        return value
    if hasattr(value, "__iter__") and not isinstance(value, bytes):
        return [_plain(v) for v in value]
    try:
        number = float(value)
        return int(number) if number.is_integer() and "." not in str(value) else number
    except (TypeError, ValueError):
        return str(value)


def header_fields(ds: Any) -> dict[str, Any]:
    """The non-identifying header fields (:data:`HEADER_FIELDS`) present in ``ds``.

    Example:
        >>> header_fields(pydicom.dcmread("IM0001"))  # doctest: +SKIP
        {'Modality': 'MR', 'MagneticFieldStrength': 0.064, ...}
    """
    out: dict[str, Any] = {}
    for key in HEADER_FIELDS:
        value = ds.get(key)
        if value is not None and value != "":
            out[key] = _plain(value)
    return out


def _frames_of(ds: Any, path: Path) -> list[Frame]:
    """The 2D frames of one file with their geometry (classic or enhanced multi-frame)."""
    sop = str(ds.get("SOPInstanceUID", ""))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    shape = (int(ds.Rows), int(ds.Columns))
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
        frames = []
        for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):

            def pick(name: str, item: Any = item) -> Any:
                for group in (item, shared):
                    if group is not None and name in group:
                        return group[name].value[0]
                raise ValueError(f"no {name}")

            frames.append(
                Frame(
                    path,
                    index,
                    np.array(pick("PlanePositionSequence").ImagePositionPatient, float),
                    np.array(pick("PlaneOrientationSequence").ImageOrientationPatient, float),
                    tuple(float(v) for v in pick("PixelMeasuresSequence").PixelSpacing),
                    shape,
                    sop,
                )
            )
        return frames
    if n_frames != 1:
        raise ValueError("a multi-frame file without per-frame geometry")
    return [
        Frame(
            path,
            0,
            np.array(ds.ImagePositionPatient, float),
            np.array(ds.ImageOrientationPatient, float),
            tuple(float(v) for v in ds.PixelSpacing),
            shape,
            sop,
        )
    ]


def _check_geometry(series: DicomSeries) -> None:
    """Sort the frames along the slice normal; set ``problem``/``skip`` for odd geometry."""
    frames = series.frames
    first = frames[0]
    for frame in frames[1:]:
        if frame.shape != first.shape:
            series.problem = f"slices of different sizes ({first.shape} and {frame.shape})"
            return
        if not np.allclose(frame.orientation, first.orientation, atol=1e-3):
            series.problem = "slices of different orientations (a localiser or a reformat?)"
            return
    normal = series.normal
    frames.sort(key=lambda f: float(f.position @ normal))
    where = np.array([float(f.position @ normal) for f in frames])
    distinct = np.unique(np.round(where, 3))
    if len(distinct) == 1 and len(frames) == 1:
        series.skip = "a 2D series (one slice)"
        return
    if len(distinct) < len(frames):
        per = len(frames) / len(distinct)
        series.problem = (
            f"{len(frames)} images at {len(distinct)} slice positions: several volumes "
            f"(echoes, repetitions or a time series, {per:g} per position); export one volume"
        )
        return
    if len(distinct) < 3:
        series.skip = f"a 2D series ({len(distinct)} slices)"
        return
    steps = np.diff(where)
    typical = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - typical) > 0.1 * typical + 0.01)
    if bad.size:
        i = int(bad[0])
        series.problem = (
            f"the slice spacing jumps from {typical:.2f} mm to {steps[i]:.2f} mm after slice "
            f"{i + 1} of {len(frames)} (a missing slice?); export the complete series"
        )


def _classify(series: DicomSeries, pixels: bool, study_uids: set[str]) -> None:
    """Set ``skip``/``problem`` from the header of a series' files."""
    header = series.header
    image_type = [str(v).upper() for v in (header.get("ImageType") or [])]
    modality = str(header.get("Modality", ""))
    if modality != "MR":
        series.skip = f"not an MR series (modality {modality or 'unknown'})"
    elif "LOCALIZER" in image_type or _SCOUT.search(series.description):
        series.skip = "a localiser/scout"
    elif image_type and image_type[0] == "DERIVED":
        series.skip = "a derived series (Image Type DERIVED)"
    elif not pixels:
        series.problem = "DICOM without pixel data"
    elif len(study_uids) > 1:
        series.problem = f"its instances belong to {len(study_uids)} different studies"


def _read(path: Path, pydicom: Any) -> Any | None:
    """The file's header (pixel data deferred), or None for a file that is not DICOM."""
    try:
        return pydicom.dcmread(str(path), defer_size=1024, force=looks_like_dicom(path))
    except Exception:  # pydicom raises many types for foreign or broken files
        return None


def find_series(folders: list[str | Path]) -> tuple[list[DicomSeries], list[str]]:
    """Find the series in folder trees (or single DICOM files) and classify each.

    Args:
        folders: folders searched recursively, or DICOM files.

    Returns:
        The series sorted by (study, series number, description), each with its case name, and
        one line per DICOM-looking file that could not be read.

    Raises:
        LoFiError: pydicom is missing.

    Example:
        >>> series, unreadable = find_series(["dicom/"])  # doctest: +SKIP
        >>> [s.case for s in series if s.skip is None and s.problem is None]  # doctest: +SKIP
        ['S002_T2_AXI', 'S003_T2_COR']
    """
    pydicom = require_pydicom()
    groups: dict[str, dict[str, Any]] = {}
    unreadable: list[str] = []
    for item in folders:
        root = Path(item)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.name.upper() == "DICOMDIR":  # an index of the files, not an image
                continue
            ds = _read(path, pydicom)
            meta = getattr(ds, "file_meta", None) if ds is not None else None
            if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR:
                continue
            if ds is None or "SOPClassUID" not in ds and "Modality" not in ds:
                if ds is not None or looks_like_dicom(path):
                    unreadable.append(str(path))
                continue
            key = str(ds.get("SeriesInstanceUID", "")) or f"no-uid:{path.parent}"
            group = groups.setdefault(key, {"items": [], "studies": set(), "pixels": True})
            group["items"].append((path, ds))
            group["studies"].add(str(ds.get("StudyInstanceUID", "")))
            group["pixels"] &= any(tag in ds for tag in _NO_PIXELS)
    found: list[DicomSeries] = []
    for uid, group in groups.items():
        items = sorted(group["items"], key=lambda pair: str(pair[0]))
        first = items[0][1]
        paths = [p for p, _ in items]
        folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
        try:
            number = int(first.get("SeriesNumber") or 0)
        except (TypeError, ValueError):
            number = 0
        series = DicomSeries(
            uid=uid,
            study_uid=str(first.get("StudyInstanceUID", "")),
            number=number,
            description=str(first.get("SeriesDescription", "") or ""),
            files=paths,
            folder=folder,
            header=header_fields(first),
            identifying=tuple(sorted({v for _, ds in items[:1] for v in _identifying(ds)})),
        )
        _classify(series, group["pixels"], group["studies"])
        if series.skip is None and series.problem is None:
            try:
                series.frames = [f for p, ds in items for f in _frames_of(ds, p)]
            except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
                series.problem = f"no usable slice geometry ({exc})"
            else:
                _check_geometry(series)
        found.append(series)
    _name_cases(found)
    return found, unreadable


def _name_cases(found: list[DicomSeries]) -> None:
    """Sort the series and give each a unique case name, never from patient data."""
    studies = sorted({s.study_uid for s in found})
    found.sort(key=lambda s: (studies.index(s.study_uid), s.number, s.description, s.uid))
    used: set[str] = set()
    for series in found:
        desc = sanitise(scrub(series.description, series.identifying).replace("[removed]", ""))
        name = f"S{series.number:03d}" + (f"_{desc}" if desc else "")
        if len(studies) > 1:
            name = f"study{studies.index(series.study_uid) + 1}_{name}"
        case, k = name, 2
        while case.lower() in used:
            case, k = f"{name}_{k}", k + 1
        used.add(case.lower())
        series.case = case
