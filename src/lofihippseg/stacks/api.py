"""``lofihippseg predict --stacks``: one session's stacks in, one case's outputs out.

The outputs are ``predict``'s (label map, sidecar, QC picture, ``volumes.csv`` row, written by
``inference.api._write_case``), on the combined grid in the first stack's frame; with
``save_stack_labels`` also ``CASE_hipp_stackK.nii.gz`` on stack K's own grid, and with
``save_combined`` the combined image ``CASE_combined.nii.gz``. A session that cannot be trusted
(see :func:`lofihippseg.stacks.session.combine_session`) raises before anything is written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from lofihippseg.errors import LoFiError
from lofihippseg.inference.api import CaseResult, FlatLayout, _remove_stale_temps, _write_case
from lofihippseg.inference.layout import OutputLayout
from lofihippseg.inference.model_loading import LoadedModel, load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import save_like
from lofihippseg.io.paths import ensure_writable_dir
from lofihippseg.io.readback import outputs_problem
from lofihippseg.stacks.session import (
    StacksSettings,
    combine_session,
    fuse_prediction,
    labels_on_stack,
    session_name,
)

__all__ = ["predict_stacks", "stack_label_path"]

log = logging.getLogger(__name__)


def stack_label_path(labels: Path, index: int) -> Path:
    """Where the label map on stack ``index``'s grid goes (beside the combined one).

    Example:
        >>> stack_label_path(Path("out/S_hipp.nii.gz"), 1).name
        'S_hipp_stack2.nii.gz'
    """
    name = labels.name
    for suffix in (".nii.gz", ".nii", ".mgz"):
        if name.endswith(suffix):
            return labels.with_name(f"{name[: -len(suffix)]}_stack{index + 1}{suffix}")
    return labels.with_name(f"{name}_stack{index + 1}")


def predict_stacks(
    stacks: list[str | Path],
    out_dir: str | Path,
    model: LoadedModel | str | Path | None = None,
    settings: PredictSettings | None = None,
    stack_settings: StacksSettings | None = None,
    layout: OutputLayout | None = None,
    case: str | None = None,
) -> CaseResult:
    """Register, combine and segment one session's stacks; write one case's outputs.

    Args:
        stacks: the session's stacks (two or more; the first is the reference frame).
        out_dir: output folder (created once the session is known to be usable).
        model: a loaded model, a run folder / bundle, or None for the packaged default.
        settings: ``predict``'s settings (threshold, QC, probabilities ...).
        stack_settings: how the stacks are registered and combined.
        layout: where outputs go (default ``predict``'s flat layout).
        case: the case name (default: :func:`~lofihippseg.stacks.session.session_name`).

    Returns:
        The case's result (``status`` ``ok`` or ``skipped``).

    Raises:
        LoFiError: one line naming the file (missing, 4D, another subject, failed registration,
            too little overlap); nothing is written then.

    Example:
        >>> predict_stacks(["axi.nii.gz", "cor.nii.gz", "sag.nii.gz"], "out/")  # doctest: +SKIP
    """
    settings = settings or PredictSettings()
    stack_settings = stack_settings or StacksSettings()
    layout = layout or FlatLayout(settings.lisa_names)
    paths_in = [Path(p) for p in stacks]
    case = case or session_name(paths_in)
    out_dir = Path(out_dir)
    paths = layout.paths(out_dir, case, paths_in[0])
    inputs = {p.resolve() for p in paths_in}
    clash = [p for p in paths.values() if p.resolve() in inputs]
    if clash:
        raise LoFiError(f"{clash[0]}: refusing to overwrite an input; use another -o")
    if not settings.overwrite and paths["labels"].is_file() and paths["sidecar"].is_file():
        if outputs_problem(paths["labels"], paths["sidecar"]) is None:
            return CaseResult(case, paths_in[0], "skipped", "already done")
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(settings.threads))
    start = time.perf_counter()
    session = combine_session(paths_in, stack_settings)  # raises before anything is written
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    predictor = Predictor(model, settings)
    lcc = settings.lcc is not False
    t0 = time.perf_counter()
    if stack_settings.combine == "fuse":
        pred = fuse_prediction(session, predictor, settings.threshold, lcc)
    else:
        pred = predictor.predict_volume(session.combined)
    session.timings["segment_s"] = time.perf_counter() - t0
    ensure_writable_dir(out_dir)
    _remove_stale_temps(paths)
    extra = session.sidecar(stack_settings)
    outputs: dict[str, str] = {}
    if stack_settings.save_stack_labels:
        if hasattr(layout, "stack_paths"):  # the BIDS App names them
            targets = layout.stack_paths(out_dir, paths_in[0])
        else:
            targets = [stack_label_path(paths["labels"], i) for i in range(len(paths_in))]
        for i, (volume, target) in enumerate(zip(session.stacks, targets, strict=True)):
            labels = labels_on_stack(session, pred, i, settings.threshold, lcc)
            save_like(labels, volume, target, dtype=np.uint8)
            outputs[f"labels_stack{i + 1}"] = str(target)
        extra["stack_labels"] = (
            "on each stack's own grid: the combined grid's fused probabilities resampled "
            "(linear) through the registration, then thresholded"
        )
    if stack_settings.save_combined:
        target = paths.get("combined") or paths["labels"].with_name(f"{case}_combined.nii.gz")
        save_like(session.combined.data, session.combined, target, dtype=np.float32)
        outputs["combined"] = str(target)
    extra["stack_outputs"] = outputs
    session.timings["session_s"] = time.perf_counter() - start
    extra["stack_timings"] = {k: round(v, 4) for k, v in session.timings.items()}
    result = _write_case(
        predictor,
        paths_in[0],
        out_dir,
        paths,
        settings,
        model,
        layout,
        volume=session.combined,
        prediction=pred,
        case=case,
        extra=extra,
    )
    result.outputs.update(outputs)
    result.seconds = time.perf_counter() - start
    return result
