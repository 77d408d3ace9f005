"""DICOM folders through ``predict``: series in, the usual outputs plus a DICOM SEG and SR out.

:func:`predict_dicom` finds the series in the DICOM inputs (``io.dicom``), converts each usable
one with dcm2niix into a temporary NIfTI (removed at the end), runs the ordinary
:func:`~lofihippseg.inference.api.predict` on them (NIfTI inputs given beside them too) and, with
``dicom_seg``, writes ``CASE_seg.dcm`` and ``CASE_sr.dcm`` (``io.dicom_seg``) from the label map.
:func:`predict_dicom_stacks` does the same for one session's stacks (``predict --stacks``).

Every line it prints or stores names a series by its folder, number and description, with any
patient name, ID or birth date removed (``io.dicom.scrub``); the case names are
``S{number}_{description}``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lofihippseg.config import save_json
from lofihippseg.errors import InputError, LoFiError
from lofihippseg.inference.api import (
    CSV_NAME,
    BatchReport,
    CaseResult,
    FlatLayout,
    predict,
)
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.dcm2niix import convert_series, dcm2niix_binary, work_folder
from lofihippseg.io.dicom import (
    HEADER_FIELDS,
    DicomSeries,
    find_series,
    holds_dicom,
    looks_like_dicom,
    scrub,
)
from lofihippseg.io.nifti import is_image_file
from lofihippseg.io.paths import ensure_writable_dir, safe_output_path
from lofihippseg.reporting.volumes import update_volumes_csv

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


def is_dicom_input(item: str | Path) -> bool:
    """True for a DICOM file, or a folder tree holding DICOM files and no NIfTI/MGZ image at
    its top.

    Example:
        >>> is_dicom_input("scanner_export/")  # doctest: +SKIP
        True
    """
    path = Path(item)
    if path.is_file():
        return not is_image_file(path) and looks_like_dicom(path)
    if not path.is_dir():
        return False
    try:
        if any(is_image_file(p) for p in path.iterdir()):
            return False
    except OSError:
        return False
    return holds_dicom(path)


def _holds_nothing(item: str | Path) -> bool:
    """A folder with neither DICOM files nor NIfTI/MGZ images at its top."""
    path = Path(item)
    try:
        return path.is_dir() and not any(is_image_file(p) for p in path.iterdir())
    except OSError:
        return False


def _converter_version(binary: str) -> str:
    import subprocess

    try:
        run = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "dcm2niix"
    words = (run.stdout + run.stderr).split()
    return f"dcm2niix {next((w for w in words if w.startswith('v1.')), '')}".strip()


@dataclass
class Conversion:
    """The DICOM inputs of one run, converted.

    Attributes:
        work: the temporary folder holding the NIfTI conversions (removed by :meth:`close`).
        converted: temporary NIfTI -> its series.
        failed: series that cannot be segmented: (case, source line, one-line message).
        skipped: one line per skipped series.
        converter: ``dcm2niix vX``.
        series: every series found.
    """

    work: Path
    converted: dict[Path, DicomSeries] = field(default_factory=dict)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    converter: str = ""
    series: list[DicomSeries] = field(default_factory=list)

    def close(self) -> None:
        """Remove the temporary conversions."""
        shutil.rmtree(self.work, ignore_errors=True)


def convert_inputs(items: list[str | Path], echo: Echo | None = None) -> Conversion:
    """Find, classify and convert every series under the DICOM inputs.

    Skipped series (localisers, derived, not MR, 2D) print one line each through ``echo``; bad
    ones (no pixel data, a missing slice, mixed studies, a failed conversion) are listed in
    ``failed`` with their one line.

    Raises:
        LoFiError: no usable or bad series at all (nothing DICOM could be read).

    Example:
        >>> conversion = convert_inputs(["dicom/"])  # doctest: +SKIP
    """
    echo = echo or log.info
    binary = dcm2niix_binary()
    series, unreadable = find_series(list(items))
    if not series:
        where = ", ".join(map(str, items))
        detail = (
            f"{len(unreadable)} DICOM-looking file(s) pydicom cannot read" if unreadable else ""
        )
        raise LoFiError(
            f"{where}: no readable DICOM image series ({detail}); nothing for dcm2niix to convert"
        )
    if unreadable:
        first = scrub(unreadable[0], series[0].identifying)
        echo(f"skipped {len(unreadable)} file(s) that are not readable DICOM, e.g. {first}")
    conversion = Conversion(work_folder(), converter=_converter_version(binary), series=series)
    try:
        for s in series:
            if s.skip is not None:
                line = f"skipped {s.label}: {s.skip}"
                conversion.skipped.append(line)
                echo(line)
            elif s.problem is not None:
                conversion.failed.append((s.case, s.label, f"{s.label}: {s.problem}"))
            else:
                try:
                    conversion.converted[convert_series(s, conversion.work, binary)] = s
                except InputError as exc:
                    conversion.failed.append((s.case, s.label, str(exc)))
    except BaseException:
        conversion.close()
        raise
    return conversion


def _identifying_of(conversion: Conversion) -> tuple[str, ...]:
    return tuple(v for s in conversion.series for v in s.identifying)


def dicom_sidecar(series: DicomSeries, converter: str) -> dict[str, Any]:
    """What the sidecar records of a DICOM input (no patient data; see ``HEADER_FIELDS``)."""
    return {
        "input": series.label,
        "dicom": {
            "header": series.header,
            "header_fields_kept": list(HEADER_FIELDS),
            "instances": len(series.files),
            "frames": len(series.frames),
            "converter": converter,
            "conversion": "a temporary NIfTI, removed after the run",
        },
    }


class DicomLayout(FlatLayout):
    """``predict``'s flat layout; DICOM cases get their series' record in the sidecar."""

    def __init__(
        self, conversion: Conversion, lisa_names: bool = False, stacks: bool = False
    ) -> None:
        super().__init__(lisa_names)
        self.conversion = conversion
        self.stacks = stacks

    def sidecar_extra(self, case: str, path: Path) -> dict[str, Any]:
        """The series' non-identifying record (``input`` names the series, not the temp); for
        a session's stacks, every stack's."""
        converter = self.conversion.converter
        if self.stacks:
            records = [dicom_sidecar(s, converter) for s in self.conversion.converted.values()]
            return {
                "input": "; ".join(r["input"] for r in records),
                "dicom": {"stacks": [r["dicom"] for r in records]},
            }
        series = self.conversion.converted.get(Path(path))
        return {} if series is None else dicom_sidecar(series, converter)


def seg_paths(out_dir: Path, case: str) -> dict[str, Path]:
    """Where a case's DICOM SEG and SR go.

    Example:
        >>> seg_paths(Path("out"), "S003_T2_AXI")["dicom_seg"].name
        'S003_T2_AXI_seg.dcm'
    """
    return {
        "dicom_seg": safe_output_path(out_dir, f"{case}_seg.dcm"),
        "dicom_sr": safe_output_path(out_dir, f"{case}_sr.dcm"),
    }


def write_seg_and_sr(
    series: DicomSeries, labels_path: Path, targets: dict[str, Path], row: dict[str, Any] | None
) -> dict[str, str]:
    """Write the SEG (labels on the series' grid) and the SR (volumes) of one case.

    Example:
        >>> write_seg_and_sr(series, Path("out/S003_hipp.nii.gz"), seg_paths(out, "S003"), row)
        ... # doctest: +SKIP
    """
    import nibabel as nib

    from lofihippseg.io.dicom_seg import build_seg, build_sr, save_dicom

    img = nib.load(str(labels_path))
    labels = np.asarray(img.dataobj).astype(np.uint8)
    seg = build_seg(series, labels, img.affine)
    volumes: dict[str, float | None] = {}
    for side in ("left", "right"):
        try:
            volumes[side] = float((row or {}).get(f"{side}_ml"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            volumes[side] = None
    sr = build_sr(series, seg, volumes)
    save_dicom(seg, targets["dicom_seg"])
    save_dicom(sr, targets["dicom_sr"])
    return {key: str(path) for key, path in targets.items()}


def _add_to_sidecar(sidecar: Path, outputs: dict[str, str]) -> None:
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return
    data.setdefault("outputs", {}).update(outputs)
    save_json(data, sidecar)


def _record_failures(out_dir: Path, layout: FlatLayout, failed: list[CaseResult]) -> None:
    if not failed:
        return
    update_volumes_csv(
        out_dir / CSV_NAME,
        [{"case": r.case, "status": "failed", "status_reason": r.message} for r in failed],
    )
    for r in failed:
        save_json(
            {"case": r.case, "input": str(r.input), "status": "failed", "error": r.message},
            layout.failure_path(out_dir, r.case),
        )


def predict_dicom(
    inputs: list[str | Path],
    out_dir: str | Path,
    model: LoadedModel | str | Path | None = None,
    settings: PredictSettings | None = None,
    dicom_seg: bool = False,
    progress: bool = True,
    echo: Echo | None = None,
) -> BatchReport:
    """``predict`` for DICOM folders (and NIfTI inputs beside them): one case per series.

    Args:
        inputs: DICOM folders or files, NIfTI files, folders or globs.
        out_dir: output folder (created; nothing is ever written beside the inputs).
        model: as for :func:`~lofihippseg.inference.api.predict`.
        settings: as for :func:`~lofihippseg.inference.api.predict`.
        dicom_seg: also write ``CASE_seg.dcm`` (DICOM SEG) and ``CASE_sr.dcm`` (volumes SR)
            for each DICOM case.
        progress: show a progress bar.
        echo: where the one-line notes (skipped series) go (default: the log).

    Returns:
        The batch report: a series that could not be converted or segmented is a failed case
        with its one line; the rest of the batch goes on.

    Example:
        >>> report = predict_dicom(["scanner_export/"], "out/", dicom_seg=True)  # doctest: +SKIP
    """
    settings = settings or PredictSettings()
    out_dir = Path(out_dir)
    dicom_items = [i for i in inputs if is_dicom_input(i)]
    empty = [i for i in inputs if i not in dicom_items and _holds_nothing(i)]
    others = [i for i in inputs if i not in dicom_items and i not in empty]
    conversion = convert_inputs(dicom_items, echo)
    for item in empty:  # the rest of the batch goes on
        line = f"{item}: no DICOM files and no NIfTI/MGZ images in this folder"
        conversion.failed.append((Path(item).name or str(item), str(item), line))
    layout = DicomLayout(conversion, settings.lisa_names)
    try:
        nifti = [*others, *conversion.converted]
        if not nifti and not conversion.failed:
            where = scrub(", ".join(map(str, dicom_items)), _identifying_of(conversion))
            raise LoFiError(
                f"{where}: no series to segment ({len(conversion.skipped)} skipped: localisers, "
                "derived, non-MR or 2D series)"
            )
        if nifti:
            report = predict(nifti, out_dir, model, settings, progress, layout=layout)
        else:
            ensure_writable_dir(out_dir)
            report = BatchReport(out_dir, [], None)
        by_case = {s.case: (tmp, s) for tmp, s in conversion.converted.items()}
        for r in report.results:  # name the series, not the temporary conversion
            if r.case in by_case:
                tmp, s = by_case[r.case]
                r.message = r.message.replace(str(tmp), s.label)
                r.input = Path(s.label)
        _record_failures(out_dir, layout, [r for r in report.results if r.status == "failed"])
        new = [CaseResult(case, Path(src), "failed", line) for case, src, line in conversion.failed]
        _record_failures(out_dir, layout, new)
        report.results.extend(new)
        if dicom_seg:
            for r in report.results:
                if r.status == "failed" or r.case not in by_case:
                    continue
                _seg_for_case(r, by_case[r.case][1], out_dir, layout, settings)
        if report.csv_path is None and (out_dir / CSV_NAME).is_file():
            report.csv_path = out_dir / CSV_NAME
        return report
    finally:
        conversion.close()


def _seg_for_case(
    r: CaseResult, series: DicomSeries, out_dir: Path, layout: FlatLayout, settings
) -> None:
    """Write one case's SEG and SR (kept when already there and not ``overwrite``)."""
    paths = layout.paths(out_dir, r.case, Path(r.case))
    targets = seg_paths(out_dir, r.case)
    if r.status == "skipped" and not settings.overwrite:
        if all(p.is_file() for p in targets.values()):
            return
    try:
        written = write_seg_and_sr(series, paths["labels"], targets, r.row)
    except LoFiError as exc:
        r.status, r.message = "failed", f"{series.label}: DICOM SEG: {exc}"
        _record_failures(out_dir, layout, [r])
        return
    r.outputs.update(written)
    _add_to_sidecar(paths["sidecar"], written)


def _orthogonal(series: list[DicomSeries]) -> list[DicomSeries]:
    """The stacks of a session: the first series (by number) and those after it whose slices
    are at least 60 degrees from every one already taken (three at most)."""
    chosen: list[DicomSeries] = []
    for s in series:
        if all(abs(float(s.normal @ c.normal)) < 0.5 for c in chosen):
            chosen.append(s)
        if len(chosen) == 3:
            break
    return chosen


def predict_dicom_stacks(
    inputs: list[str | Path],
    out_dir: str | Path,
    model: LoadedModel | str | Path | None = None,
    settings: PredictSettings | None = None,
    stack_settings: Any = None,
    dicom_seg: bool = False,
    echo: Echo | None = None,
) -> CaseResult:
    """``predict --stacks`` with DICOM: one session's thick-slice stacks as one case.

    The series found under ``inputs`` (one folder holding a session, or one folder per stack)
    must belong to one study; the stacks are its usable series in differing orientations (the
    first series, then each one at least 60 degrees from those taken, three at most). With
    ``dicom_seg`` the label map is also written on each stack's grid and as one SEG and SR per
    stack (``CASE_stackK_seg.dcm``).

    Raises:
        LoFiError: one line (a bad series, several studies, fewer than two stacks); nothing is
            written then.

    Example:
        >>> predict_dicom_stacks(["session/"], "out/", dicom_seg=True)  # doctest: +SKIP
    """
    from lofihippseg.stacks.api import predict_stacks, stack_label_path
    from lofihippseg.stacks.session import StacksSettings

    settings = settings or PredictSettings()
    stack_settings = stack_settings or StacksSettings()
    if dicom_seg:
        stack_settings = replace(stack_settings, save_stack_labels=True)
    echo = echo or log.info
    series, _ = find_series(list(inputs))
    for s in series:
        if s.skip is not None:
            echo(f"skipped {s.label}: {s.skip}")
        elif s.problem is not None:
            raise LoFiError(f"{s.label}: {s.problem}")
    usable = [s for s in series if s.skip is None]
    studies = {s.study_uid for s in usable}
    where = ", ".join(map(str, inputs))
    if len(studies) > 1:
        raise LoFiError(
            f"{scrub(where, usable[0].identifying)}: series of {len(studies)} different studies; "
            "--stacks takes one session's stacks (give each session's folder on its own)"
        )
    stacks = _orthogonal(usable)
    if len(stacks) < 2:
        raise LoFiError(
            f"{where}: {len(usable)} usable series, {len(stacks)} orientation(s); --stacks needs "
            "two or more stacks of differing orientations"
        )
    for s in usable:
        if s not in stacks:
            echo(f"not used as a stack: {s.label} (same orientation as another stack)")
    binary = dcm2niix_binary()
    conversion = Conversion(work_folder(), converter=_converter_version(binary))
    try:
        paths = [convert_series(s, conversion.work, binary) for s in stacks]
        conversion.converted = dict(zip(paths, stacks, strict=True))
        layout = DicomLayout(conversion, settings.lisa_names, stacks=True)
        case = "_".join(f"S{s.number:03d}" for s in stacks) + "_stacks"
        result = predict_stacks(paths, out_dir, model, settings, stack_settings, layout, case)
        result.input = Path(stacks[0].label)
        if dicom_seg:
            out_dir = Path(out_dir)
            labels = layout.paths(out_dir, case, paths[0])["labels"]
            for i, s in enumerate(stacks):
                targets = seg_paths(out_dir, f"{case}_stack{i + 1}")
                if result.status == "skipped" and all(p.is_file() for p in targets.values()):
                    continue
                stack_labels = stack_label_path(labels, i)
                if not stack_labels.is_file():
                    raise LoFiError(f"{stack_labels}: no label map on stack {i + 1}'s grid")
                result.outputs.update(
                    {
                        f"{k}_stack{i + 1}": v
                        for k, v in write_seg_and_sr(s, stack_labels, targets, result.row).items()
                    }
                )
            _add_to_sidecar(layout.paths(out_dir, case, paths[0])["sidecar"], result.outputs)
        return result
    finally:
        conversion.close()
