"""The prediction API behind ``lofihippseg predict``: scans in, hippocampi and numbers out.

Per case it writes (names via ``io.paths.safe_output_path``):

- ``CASE_hipp.nii.gz``: the label map on the input's exact grid and header (uint8);
  with ``lisa_names``: ``LISA_HF_XXXX_hipp_prediction.nii.gz`` for ``LISA_VALIDATION_XXXX_ciso``;
- ``CASE_prob_left.nii.gz`` / ``CASE_prob_right.nii.gz`` (optional, fused probabilities);
- ``CASE_uncertainty.nii.gz`` (optional, disagreement of the two views);
- ``CASE_qc.png`` (optional QC picture);
- a JSON sidecar next to the label map (tool version, model, settings, timings, volumes);
- its row in the cohort ``volumes.csv``.

Every file is written atomically; the sidecar is written last and marks a finished case, so a
rerun skips finished cases (unless ``overwrite``) and redoes interrupted ones. A case that fails
is reported and the batch goes on; ``BatchReport.failed`` lists them.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lofihippseg import __version__
from lofihippseg.config import save_json, to_dict
from lofihippseg.errors import InputError, LoFiError
from lofihippseg.inference.layout import OutputLayout
from lofihippseg.inference.model_loading import LoadedModel, load_model
from lofihippseg.inference.predictor import Prediction, Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.atomic import remove_stale_temps
from lofihippseg.io.nifti import (
    NIFTI_SUFFIXES,
    Volume,
    dicom_folder_hint,
    is_image_file,
    load_image,
    save_like,
    strip_suffix,
)
from lofihippseg.io.paths import (
    ensure_writable_dir,
    is_absent_file,
    is_file_or_absent,
    permission_hint,
    safe_output_path,
)
from lofihippseg.io.readback import outputs_problem
from lofihippseg.metrics.visibility import sides_visibility
from lofihippseg.quality.assess import assess_prediction
from lofihippseg.quality.estimator import find_estimator
from lofihippseg.reporting.qc import qc_title, save_qc_png
from lofihippseg.reporting.status import case_status
from lofihippseg.reporting.volumes import (
    quality_columns,
    read_rows,
    update_volumes_csv,
    volume_row,
)

__all__ = [
    "PredictSettings",
    "BatchReport",
    "CaseResult",
    "FlatLayout",
    "predict",
    "gather_inputs",
]

log = logging.getLogger(__name__)

CSV_NAME = "volumes.csv"
_LISA = re.compile(r"^LISA_(?:VALIDATION_|TEST_)?(\d+)(?:_ciso)?$", re.IGNORECASE)
# names that outputs or label maps have; such files found by expanding a folder or glob are
# skipped only when they are this tool's outputs or sit beside their scan (``_skip_reason``)
_NOT_INPUTS = re.compile(
    r"(_hipp|_hipp_prediction|_HF_hipp|_prob_left|_prob_right|_uncertainty|_hipp_stack\d+"
    r"|_combined)$",
    re.IGNORECASE,
)
# outputs named after their case (a session's stacks: ``predict --stacks``)
_CASE_OUTPUTS = re.compile(
    r"(_prob_left|_prob_right|_uncertainty|_hipp_stack\d+|_combined)$", re.IGNORECASE
)


@dataclass
class CaseResult:
    """What happened to one input."""

    case: str
    input: Path
    status: str  # ok | skipped | failed
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    row: dict[str, Any] | None = None
    seconds: float = 0.0


@dataclass
class BatchReport:
    """The outcome of :func:`predict`."""

    out_dir: Path
    results: list[CaseResult]
    csv_path: Path | None = None

    @property
    def failed(self) -> list[CaseResult]:
        """Cases that could not be segmented."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0: no case failed; 1: some cases failed, others were done; 2: every case failed.

        Quality statuses (``empty``, ``low_agreement`` ...) do not change the exit code.
        """
        if not self.failed:
            return 0
        return 2 if len(self.failed) == len(self.results) else 1

    def error_lines(self) -> list[str]:
        """``error: FILE: problem``, one line per failed case."""
        return [f"error: {r.message}" for r in self.failed]

    def table(self) -> str:
        """A short plain-text summary table: what happened (result), the quality status, the
        volumes and, per side, the predicted Dice and which sides go to review."""
        lines = [
            f"{'case':<32} {'result':<7} {'status':<18} {'left mL':>8} {'right mL':>9} "
            f"{'AI':>7} {'view Dice':>9} {'pDice L':>7} {'pDice R':>7} {'review':>6}"
        ]
        for r in self.results:
            row = r.row or {}

            def num(key: str, fmt: str, row: dict = row) -> str:
                try:
                    value = float(row.get(key, ""))
                except (TypeError, ValueError):
                    return "-"
                return "-" if np.isnan(value) else format(value, fmt)

            quality = "failed" if r.status == "failed" else str(row.get("status") or "-")
            review = "".join(
                side[0].upper()
                for side in ("left", "right")
                if str(row.get(f"{side}_review", "")).lower() in ("true", "1")
            )
            lines.append(
                f"{r.case[:32]:<32} {r.status:<7} {quality:<18} {num('left_ml', '8.3f'):>8} "
                f"{num('right_ml', '9.3f'):>9} {num('asymmetry_index', '7.3f'):>7} "
                f"{num('view_dice', '9.3f'):>9} {num('left_predicted_dice', '7.2f'):>7} "
                f"{num('right_predicted_dice', '7.2f'):>7} {review or '-':>6}"
            )
        return "\n".join(lines)


def _expand(item: str | Path) -> tuple[list[Path], bool]:
    """Files named by one input; the flag says it was a folder or glob (outputs filtered)."""
    path = Path(item)
    if path.is_dir():  # absent (unfetched, dangling) files too: they fail, named, not dropped
        return sorted(p for p in path.iterdir() if is_file_or_absent(p) and is_image_file(p)), True
    if path.exists() or is_absent_file(path):
        return [path], False
    if any(ch in str(item) for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(str(item)) if is_image_file(p)), True
    raise LoFiError(f"{item}: input not found (expected a file, a folder or a glob pattern)")


def _has_sidecar(folder: Path, stem: str) -> bool:
    """True when ``folder/STEM.json`` is a sidecar written by this tool."""
    sidecar = folder / f"{stem}.json"
    try:
        return sidecar.is_file() and json.loads(sidecar.read_text()).get("tool") == "lofihippseg"
    except (OSError, ValueError, AttributeError):
        return False


def _skip_reason(path: Path) -> str | None:
    """Why a file found in a folder or glob is not a scan to segment (None: it is one).

    Skipped: files this tool wrote (a lofihippseg sidecar names their case), and label maps
    beside their scan (``CASE_hipp`` or ``LISA_XXXX_HF_hipp`` next to ``CASE`` or
    ``LISA_XXXX_ciso``). A scan that merely ends in ``_hipp`` is kept.
    """
    stem = strip_suffix(path)
    match = _NOT_INPUTS.search(stem)
    if match is None:
        return None
    base = stem[: match.start()]
    if _CASE_OUTPUTS.search(stem):
        sidecars = {output_names(base)["sidecar"], output_names(base, True)["sidecar"]}
        ours = any(_has_sidecar(path.parent, name.removesuffix(".json")) for name in sidecars)
    else:
        ours = _has_sidecar(path.parent, stem)
    if ours:
        return "outputs of lofihippseg"
    for scan in (base, f"{base}_ciso"):
        if any((path.parent / f"{scan}{suffix}").is_file() for suffix in NIFTI_SUFFIXES):
            return "label maps beside their scans"
    return None


def gather_inputs(inputs: str | Path | list[str | Path]) -> list[Path]:
    """Expand files, folders and globs into a sorted list of unique image files.

    Folders and globs skip this tool's outputs and label maps beside their scans (and say so);
    a scan whose name merely ends in ``_hipp`` is kept (see ``_skip_reason``).

    Example:
        >>> gather_inputs(["scans/", "more/*.nii.gz"])  # doctest: +SKIP
    """
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not items:
        raise LoFiError("no inputs given")
    found: dict[Path, Path] = {}
    skipped: dict[str, list[str]] = {}
    for item in items:
        files, expanded = _expand(item)
        for f in files:
            reason = _skip_reason(f) if expanded else None
            if reason is not None:
                skipped.setdefault(reason, []).append(f.name)
                continue
            found.setdefault(f.resolve(), f)
    for reason, names in skipped.items():
        log.warning(
            "skipped %d file(s), %s: %s%s (name a file explicitly to segment it)",
            len(names),
            reason,
            ", ".join(names[:5]),
            " ..." if len(names) > 5 else "",
        )
    if not found:
        dicom = [h for h in (dicom_folder_hint(i) for i in items if Path(i).is_dir()) if h]
        if dicom:
            raise LoFiError(f"{items[0]}: no NIfTI/MGZ images; this folder {dicom[0]}")
        raise LoFiError(f"no NIfTI/MGZ images found in {', '.join(map(str, items))}")
    paths = sorted(found.values(), key=lambda p: (strip_suffix(p), str(p)))
    names = [strip_suffix(p) for p in paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LoFiError(
            f"several inputs share the case name {dupes[0]!r}; their outputs would collide"
        )
    return paths


def output_names(case: str, lisa_names: bool = False) -> dict[str, str]:
    """File names of one case's outputs.

    Example:
        >>> output_names("LISA_VALIDATION_0007_ciso", lisa_names=True)["labels"]
        'LISA_HF_0007_hipp_prediction.nii.gz'
    """
    stem = f"{case}_hipp"
    if lisa_names:
        match = _LISA.match(case)
        if match:
            stem = f"LISA_HF_{match.group(1)}_hipp_prediction"
        else:
            log.warning("%s: not a LISA name (LISA_VALIDATION_XXXX_ciso); using %s", case, stem)
    return {
        "labels": f"{stem}.nii.gz",
        "sidecar": f"{stem}.json",
        "prob_left": f"{case}_prob_left.nii.gz",
        "prob_right": f"{case}_prob_right.nii.gz",
        "uncertainty": f"{case}_uncertainty.nii.gz",
        "qc": f"{case}_qc.png",
    }


class FlatLayout(OutputLayout):
    """``predict``'s own layout: ``CASE_hipp.*`` side by side in ``out_dir``, ``volumes.csv``."""

    def __init__(self, lisa_names: bool = False) -> None:
        self.lisa_names = lisa_names

    def paths(self, out_dir: Path, case: str, path: Path) -> dict[str, Path]:
        """Output files of one case, named by :func:`output_names`."""
        names = output_names(case, self.lisa_names)
        return {k: safe_output_path(out_dir, v) for k, v in names.items()}

    def table(self, out_dir: Path) -> Path | None:
        """The cohort table ``out_dir/volumes.csv``."""
        return out_dir / CSV_NAME


def _remove_stale_temps(paths: dict[str, Path]) -> None:
    """Delete temporary files left by a killed earlier run of this case.

    Only stale ones (``io.atomic.is_stale_temp``): another process writing the same case
    right now keeps its file.
    """
    remove_stale_temps(paths.values())


def failure_message(path: Path, exc: BaseException, out_dir: Path | None = None) -> str:
    """One line ``FILE: problem`` for a case that failed; a full disk names the output folder.

    Example:
        >>> failure_message(Path("a.nii.gz"), OSError(30, "Read-only file system", "out/x"))
        'out/x: Read-only file system'
        >>> full = OSError(28, "No space left on device")
        >>> failure_message(Path("a.nii.gz"), full, Path("out")).split(";")[0]
        'out: no space left on device for the outputs of a.nii.gz'
    """
    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = out_dir or (Path(exc.filename).parent if exc.filename else path)
        return (
            f"{where}: no space left on device for the outputs of {path}; "
            "free some space or use another -o"
        )
    if isinstance(exc, OSError) and exc.strerror:
        hint = permission_hint() if exc.errno in (errno.EACCES, errno.EPERM) else ""
        return f"{exc.filename or path}: {exc.strerror}{hint}"
    text = str(exc) if isinstance(exc, LoFiError) else f"{type(exc).__name__}: {exc}"
    return text if text.startswith(str(path)) else f"{path}: {text}"


def _stamps(paths: dict[str, Path]) -> dict[str, tuple[int, int] | None]:
    """Each output's (inode, mtime) now, or None where there is none."""
    out: dict[str, tuple[int, int] | None] = {}
    for key, p in paths.items():
        try:
            st = p.stat()
            out[key] = (st.st_ino, st.st_mtime_ns)
        except OSError:
            out[key] = None
    return out


def _remove_written(paths: dict[str, Path], before: dict[str, tuple[int, int] | None]) -> None:
    """Delete the outputs a failed attempt wrote (new or replaced since ``before``)."""
    for key, stamp in _stamps(paths).items():
        if stamp is not None and stamp != before.get(key):
            try:
                paths[key].unlink()
            except OSError as exc:
                log.warning("could not remove the partial output %s: %s", paths[key], exc)


def _record_failure(path: Path, case: str, source: Path, message: str) -> None:
    """Write the failed case's one-line error (read by the cohort report); never raises."""
    try:
        save_json({"case": case, "input": str(source), "status": "failed", "error": message}, path)
    except OSError as exc:
        log.warning("%s: could not record the failure in %s: %s", case, path, exc)


class ScanReader:
    """Reads scans, the next one in a background thread while the current one is segmented
    (reading and decompressing a scan takes a twentieth to a tenth of its segmentation on a
    CPU). A scan that cannot be read raises its error when it is taken, in its own case."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lofihippseg-read")
        self._pending: dict[Path, Future[Volume]] = {}

    def start(self, path: Path) -> None:
        """Begin reading ``path`` (once)."""
        if path not in self._pending:
            self._pending[path] = self._pool.submit(load_image, path)

    def take(self, path: Path) -> Volume:
        """The scan at ``path``: the one read ahead, else read now."""
        pending = self._pending.pop(path, None)
        return pending.result() if pending is not None else load_image(path)

    def __enter__(self) -> ScanReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop what was read ahead and not taken; stop the thread."""
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


def _write_case(
    predictor: Predictor,
    path: Path,
    out_dir: Path,
    paths: dict[str, Path],
    settings: PredictSettings,
    model: LoadedModel,
    layout: OutputLayout | None = None,
    *,
    volume: Volume | None = None,
    prediction: Prediction | None = None,
    case: str | None = None,
    extra: dict[str, Any] | None = None,
) -> CaseResult:
    """Segment one case and write its outputs (the sidecar last).

    ``volume`` (an already loaded or combined image, e.g. a session's stacks on one grid),
    ``prediction`` (made elsewhere on that volume's grid), ``case`` (its name) and ``extra``
    (more sidecar keys) let ``lofihippseg.stacks`` write a session like any other case.
    """
    layout = layout or FlatLayout(settings.lisa_names)
    case = case or layout.case_id(path)
    volume = volume if volume is not None else load_image(path)
    pred: Prediction = prediction or predictor.predict_volume(volume)
    written: dict[str, str] = {}
    save_like(pred.labels, volume, paths["labels"], dtype=np.uint8)
    written["labels"] = str(paths["labels"])
    if settings.save_probabilities:
        for channel, key in enumerate(("prob_left", "prob_right")):
            save_like(pred.full(pred.fused[channel]), volume, paths[key], dtype=np.float32)
            written[key] = str(paths[key])
    if settings.save_uncertainty:
        save_like(pred.uncertainty, volume, paths["uncertainty"], dtype=np.float32)
        written["uncertainty"] = str(paths["uncertainty"])
    row = volume_row(case, pred.labels, volume.voxel_volume_ml, pred.view_dice)
    quality = case_status(
        row["left_ml"], row["right_ml"], pred.view_dice, volume.data.shape, volume.spacing,
        crop=bool(pred.info.get("crop")),
    )  # fmt: skip
    row.update(status=quality.status, status_reason=quality.reason)
    row["contrast_family"] = pred.info.get("contrast_family") or ""
    # per side: predicted Dice (the model's quality estimator, if fitted for it) and review
    side_quality, pred.timings["quality_s"] = assess_prediction(
        volume.data, volume.spacing, pred, row["left_ml"], row["right_ml"],
        *find_estimator(model.source), settings.threshold,
    )  # fmt: skip
    row.update(quality_columns(side_quality))
    if settings.qc:
        title = qc_title(case, row, side_quality)
        save_qc_png(volume.data, pred.labels, volume.spacing, paths["qc"], title)
        written["qc"] = str(paths["qc"])
    table = layout.table(out_dir)
    if table is not None:
        update_volumes_csv(table, [row])
    sidecar = {
        "tool": "lofihippseg",
        "version": __version__,
        "input": str(path),
        "outputs": written,
        "model": {"source": model.source, "spec": to_dict(model.spec)},
        "settings": to_dict(settings),
        "effective": pred.info,
        "timings": {k: round(v, 4) for k, v in pred.timings.items()},
        "volumes": row,
        # is the outline evidence (edge in the image, >~1) or a prior (~0)? metrics.visibility
        "edge_visibility": sides_visibility(volume.data, pred.labels),
        "status": quality.status,
        "status_reason": quality.reason,
        "quality": side_quality,
        "flags": list(quality.flags),
        "input_shape": [int(n) for n in volume.source.shape[:3]],
        "spacing_mm": [float(v) for v in volume.spacing],
    }
    sidecar.update(layout.sidecar_extra(case, path))
    sidecar.update(extra or {})
    save_json(sidecar, paths["sidecar"])  # last: marks the case as finished
    layout.failure_path(out_dir, case).unlink(missing_ok=True)
    return CaseResult(case, path, "ok", outputs=written, row=row, seconds=pred.timings["total_s"])


def predict(
    inputs: str | Path | list[str | Path],
    out_dir: str | Path,
    model: LoadedModel | str | Path | None = None,
    settings: PredictSettings | None = None,
    progress: bool = True,
    layout: OutputLayout | None = None,
) -> BatchReport:
    """Segment every input scan; write label maps, sidecars, QC pictures and ``volumes.csv``.

    Args:
        inputs: a file, several, a folder or a glob pattern (or a list of these).
        out_dir: output folder (created).
        model: a loaded model, a run folder / bundle file, or None for the packaged default.
        settings: how to run and what to write.
        progress: show a progress bar.
        layout: where each case's outputs go (default :class:`FlatLayout`; the BIDS App
            passes its derivatives layout).

    Returns:
        The batch report; ``report.failed`` lists cases that could not be done.

    Raises:
        LoFiError: no inputs found, duplicate case names, no usable model.

    Example:
        >>> report = predict("scans/", "out/", "runs/my_run")  # doctest: +SKIP
        >>> print(report.table())  # doctest: +SKIP
    """
    settings = settings or PredictSettings()
    layout = layout or FlatLayout(settings.lisa_names)
    out_dir = Path(out_dir)
    paths_in = gather_inputs(inputs)
    if settings.shard is not None:
        i, n = settings.shard
        paths_in = paths_in[i - 1 :: n]
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    predictor = Predictor(model, settings)
    ensure_writable_dir(out_dir)
    inputs_resolved = {p.resolve() for p in paths_in}
    results: list[CaseResult] = []
    with ScanReader() as reader:
        for index, path in enumerate(
            tqdm(paths_in, desc="predict", unit="case", disable=not progress)
        ):
            case = layout.case_id(path)
            before: dict[str, tuple[int, int] | None] | None = None  # this case's, not the last
            try:
                paths = layout.paths(out_dir, case, path)
                clash = [p for p in paths.values() if p.resolve() in inputs_resolved]
                if clash:
                    raise LoFiError(f"{clash[0]}: refusing to overwrite an input; use another -o")
                if (
                    not settings.overwrite
                    and paths["labels"].is_file()
                    and paths["sidecar"].is_file()
                ):
                    problem = outputs_problem(paths["labels"], paths["sidecar"])
                    if problem is None:
                        results.append(CaseResult(case, path, "skipped", "already done"))
                        continue
                    log.warning("%s: redoing it, its outputs do not read back: %s", case, problem)
                _remove_stale_temps(paths)
                before = _stamps(paths)
                volume = reader.take(path)
                if index + 1 < len(paths_in):  # read the next scan while this one is segmented
                    reader.start(paths_in[index + 1])
                results.append(
                    _write_case(
                        predictor, path, out_dir, paths, settings, model, layout, volume=volume
                    )
                )
            except Exception as exc:  # report the case and go on with the batch
                if before is not None:
                    _remove_written(paths, before)  # a failed case leaves none of its outputs
                message = failure_message(path, exc, out_dir)
                log.debug("%s: failed: %s", case, message, exc_info=not isinstance(exc, LoFiError))
                results.append(CaseResult(case, path, "failed", message))
                _record_failure(layout.failure_path(out_dir, case), case, path, message)
    csv_path = layout.table(out_dir)
    if csv_path is None:
        return BatchReport(out_dir, results, None)
    failed_rows = [
        {"case": r.case, "status": "failed", "status_reason": r.message}
        for r in results
        if r.status == "failed"
    ]
    if failed_rows:
        update_volumes_csv(csv_path, failed_rows)
    previous = {row["case"]: row for row in read_rows(csv_path)}
    for r in results:
        if r.status == "skipped":
            r.row = previous.get(r.case)
    return BatchReport(out_dir, results, csv_path if csv_path.is_file() else None)
