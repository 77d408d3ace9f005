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

import glob
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lofihippseg import __version__
from lofihippseg.config import save_json, to_dict
from lofihippseg.errors import LoFiError
from lofihippseg.inference.model_loading import LoadedModel, load_model
from lofihippseg.inference.predictor import Prediction, Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import is_image_file, load_image, save_like, strip_suffix
from lofihippseg.io.paths import safe_output_path
from lofihippseg.reporting.qc import save_qc_png
from lofihippseg.reporting.volumes import read_rows, update_volumes_csv, volume_row

__all__ = ["PredictSettings", "BatchReport", "CaseResult", "predict", "gather_inputs"]

log = logging.getLogger(__name__)

CSV_NAME = "volumes.csv"
_LISA = re.compile(r"^LISA_(?:VALIDATION_|TEST_)?(\d+)(?:_ciso)?$", re.IGNORECASE)
# names that are outputs or labels, skipped when a folder or glob is expanded
_NOT_INPUTS = re.compile(
    r"(_hipp|_hipp_prediction|_HF_hipp|_prob_left|_prob_right|_uncertainty)$", re.IGNORECASE
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
        """0 when every case succeeded or was already done, else 1."""
        return 1 if self.failed else 0

    def table(self) -> str:
        """A short plain-text summary table."""
        lines = [
            f"{'case':<32} {'status':<8} {'left mL':>8} {'right mL':>9} {'AI':>7} {'view Dice':>9}"
        ]
        for r in self.results:
            row = r.row or {}

            def num(key: str, fmt: str, row: dict = row) -> str:
                value = row.get(key, "")
                try:
                    return format(float(value), fmt)
                except (TypeError, ValueError):
                    return "-"

            lines.append(
                f"{r.case[:32]:<32} {r.status:<8} {num('left_ml', '8.3f'):>8} "
                f"{num('right_ml', '9.3f'):>9} {num('asymmetry_index', '7.3f'):>7} "
                f"{num('view_dice', '9.3f'):>9}"
            )
            if r.status == "failed":
                lines.append(f"    error: {r.message}")
        return "\n".join(lines)


def _expand(item: str | Path) -> tuple[list[Path], bool]:
    """Files named by one input; the flag says it was a folder or glob (outputs filtered)."""
    path = Path(item)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p)), True
    if path.exists():
        return [path], False
    if any(ch in str(item) for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(str(item)) if is_image_file(p)), True
    raise LoFiError(f"{item}: input not found (expected a file, a folder or a glob pattern)")


def gather_inputs(inputs: str | Path | list[str | Path]) -> list[Path]:
    """Expand files, folders and globs into a sorted list of unique image files.

    Folders and globs skip files named like outputs or labels (``*_hipp.nii.gz`` ...).

    Example:
        >>> gather_inputs(["scans/", "more/*.nii.gz"])  # doctest: +SKIP
    """
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not items:
        raise LoFiError("no inputs given")
    found: dict[Path, Path] = {}
    for item in items:
        files, expanded = _expand(item)
        for f in files:
            if expanded and _NOT_INPUTS.search(strip_suffix(f)):
                continue
            found.setdefault(f.resolve(), f)
    if not found:
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


def _remove_stale_temps(out_dir: Path, names: dict[str, str]) -> None:
    """Delete temporary files left by a killed earlier run of this case."""
    for name in names.values():
        for tmp in out_dir.glob(f".{glob.escape(name)}.*tmp*"):
            tmp.unlink(missing_ok=True)


def _write_case(
    predictor: Predictor,
    path: Path,
    out_dir: Path,
    paths: dict[str, Path],
    settings: PredictSettings,
    model: LoadedModel,
) -> CaseResult:
    case = strip_suffix(path)
    volume = load_image(path)
    pred: Prediction = predictor.predict_volume(volume)
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
    if settings.qc:
        title = (
            f"{case}   left {row['left_ml']:.2f} mL   right {row['right_ml']:.2f} mL   "
            f"view Dice {row['view_dice']:.2f}"
        )
        save_qc_png(volume.data, pred.labels, volume.spacing, paths["qc"], title)
        written["qc"] = str(paths["qc"])
    update_volumes_csv(out_dir / CSV_NAME, [row])
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
        "input_shape": list(volume.source.shape[:3]),
        "spacing_mm": list(volume.spacing),
    }
    save_json(sidecar, paths["sidecar"])  # last: marks the case as finished
    return CaseResult(case, path, "ok", outputs=written, row=row, seconds=pred.timings["total_s"])


def predict(
    inputs: str | Path | list[str | Path],
    out_dir: str | Path,
    model: LoadedModel | str | Path | None = None,
    settings: PredictSettings | None = None,
    progress: bool = True,
) -> BatchReport:
    """Segment every input scan; write label maps, sidecars, QC pictures and ``volumes.csv``.

    Args:
        inputs: a file, several, a folder or a glob pattern (or a list of these).
        out_dir: output folder (created).
        model: a loaded model, a run folder / bundle file, or None for the packaged default.
        settings: how to run and what to write.
        progress: show a progress bar.

    Returns:
        The batch report; ``report.failed`` lists cases that could not be done.

    Raises:
        LoFiError: no inputs found, duplicate case names, no usable model.

    Example:
        >>> report = predict("scans/", "out/", "runs/my_run")  # doctest: +SKIP
        >>> print(report.table())  # doctest: +SKIP
    """
    settings = settings or PredictSettings()
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
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs_resolved = {p.resolve() for p in paths_in}
    results: list[CaseResult] = []
    for path in tqdm(paths_in, desc="predict", unit="case", disable=not progress):
        case = strip_suffix(path)
        try:
            names = output_names(case, settings.lisa_names)
            paths = {k: safe_output_path(out_dir, v) for k, v in names.items()}
            clash = [p for p in paths.values() if p.resolve() in inputs_resolved]
            if clash:
                raise LoFiError(f"{clash[0]}: refusing to overwrite an input; use another -o")
            if not settings.overwrite and paths["labels"].is_file() and paths["sidecar"].is_file():
                results.append(CaseResult(case, path, "skipped", "already done"))
                continue
            _remove_stale_temps(out_dir, names)
            results.append(_write_case(predictor, path, out_dir, paths, settings, model))
        except Exception as exc:  # report the case and go on with the batch
            message = str(exc) if isinstance(exc, LoFiError) else f"{type(exc).__name__}: {exc}"
            log.error("%s: failed: %s", case, message)
            results.append(CaseResult(case, path, "failed", message))
    csv_path = out_dir / CSV_NAME
    failed_rows = [{"case": r.case, "status": "failed"} for r in results if r.status == "failed"]
    if failed_rows:
        update_volumes_csv(csv_path, failed_rows)
    previous = {row["case"]: row for row in read_rows(csv_path)}
    for r in results:
        if r.status == "skipped":
            r.row = previous.get(r.case)
    return BatchReport(out_dir, results, csv_path if csv_path.is_file() else None)
