"""The BIDS App: ``lofihippseg bids BIDS_DIR OUTPUT_DIR participant|group``.

Participant level: find the selected anatomical images, take this shard's participants, and
segment them with the same :func:`lofihippseg.inference.api.predict` as ``lofihippseg predict``
(finished images are skipped, a failing image is recorded and the rest go on), writing BIDS
derivatives (:mod:`lofihippseg.bids.derivatives`) and each participant's volumes TSV.

Group level: gather every participant's results (from the sidecars and failure records, so the
outputs of shards run on different machines merge) into ``group_volumes.tsv`` and the cohort
report ``report.html``. It runs no model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lofihippseg import __version__
from lofihippseg.bids.dataset import (
    BidsImage,
    check_output_folder,
    find_images,
    group_stacks,
    normalise_labels,
    read_description,
)
from lofihippseg.bids.derivatives import (
    TABLE_COLUMNS,
    BidsLayout,
    BidsStacksLayout,
    dataset_description,
    derivative_subjects,
    model_identity,
    subject_rows,
    write_dataset_files,
    write_subject_table,
    write_tsv,
)
from lofihippseg.config import to_dict
from lofihippseg.errors import LoFiError
from lofihippseg.inference.api import (
    BatchReport,
    CaseResult,
    PredictSettings,
    _record_failure,
    failure_message,
    predict,
)
from lofihippseg.inference.model_loading import LoadedModel, load_model
from lofihippseg.sharding import take_shard
from lofihippseg.stacks.session import StacksSettings

GROUP_TABLE = "group_volumes.tsv"
REPORT_NAME = "report.html"


def model_fingerprint(model: LoadedModel) -> str:
    """SHA-256 of both networks' weights (names, shapes, values), independent of file paths."""
    digest = hashlib.sha256()
    for net in (model.vnet1, model.vnet2):
        for name, tensor in sorted(net.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ParticipantRun:
    """What a participant-level run did."""

    subjects: list[str]
    report: BatchReport

    @property
    def failed_subjects(self) -> list[str]:
        """Participants with at least one failed image."""
        layout_failed = {r.case.split("_", 1)[0][4:] for r in self.report.failed}
        return sorted(s for s in self.subjects if s in layout_failed)


def run_participant(
    bids_dir: str | Path,
    out_dir: str | Path,
    model: LoadedModel | str | Path | None = None,
    settings: PredictSettings | None = None,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
    suffixes: Sequence[str] = ("T2w",),
    acquisitions: Sequence[str] | None = None,
    progress: bool = True,
    group_stacks: bool = False,
    stack_settings: StacksSettings | None = None,
) -> ParticipantRun:
    """Segment the selected participants of a BIDS dataset into BIDS derivatives.

    Args:
        bids_dir: the input BIDS dataset.
        out_dir: the derivatives folder (created).
        model: a loaded model, a run folder / bundle file, or None for the packaged default.
        settings: predict settings; ``settings.shard`` splits the sorted participant list
            (a participant's sessions stay together); uncertainty maps and LISA names are off.
        participant_labels: participants to do (``01`` or ``sub-01``); None = all.
        session_labels: sessions to do; None = all.
        suffixes: image suffixes in order of preference (e.g. ``("T2w", "T1w")``).
        acquisitions: only these ``acq-`` labels; None = any.
        progress: show a progress bar.
        group_stacks: images of one subject and session that differ only in ``acq-`` or
            ``run-`` are one session's stacks: registered, combined and segmented as one case
            (``lofihippseg predict --stacks``), named ``..._rec-stacks_...``.
        stack_settings: how grouped stacks are registered and combined.

    Returns:
        The participants of this shard and predict's report.

    Raises:
        LoFiError: bad dataset or labels, no image found, or an output folder made by
            another model.

    Example:
        >>> run = run_participant("bids/", "bids/derivatives/lofihippseg", None)  # doctest: +SKIP
    """
    bids_dir, out_dir = Path(bids_dir), Path(out_dir)
    settings = settings or PredictSettings()
    check_output_folder(bids_dir, out_dir)
    images = find_images(bids_dir, participant_labels, session_labels, suffixes, acquisitions)
    subjects = take_shard(sorted({im.subject for im in images}), settings.shard)
    images = [im for im in images if im.subject in subjects]
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    identity = model_identity(model.source, to_dict(model.spec), model_fingerprint(model))
    description = dataset_description(bids_dir, read_description(bids_dir), __version__, identity)
    write_dataset_files(out_dir, description, settings.overwrite)
    if not images:  # this shard has no participant (more shards than participants)
        return ParticipantRun([], BatchReport(out_dir, [], None))
    settings = dataclasses.replace(settings, shard=None, save_uncertainty=False, lisa_names=False)
    if group_stacks:
        report = _predict_groups(images, out_dir, model, settings, stack_settings, progress)
    else:
        report = predict(
            [im.path for im in images], out_dir, model, settings, progress, BidsLayout(images)
        )
    for subject in subjects:
        write_subject_table(out_dir, subject)
    return ParticipantRun(subjects, report)


def _predict_groups(
    images: list[BidsImage],
    out_dir: Path,
    model: LoadedModel,
    settings: PredictSettings,
    stack_settings: StacksSettings | None,
    progress: bool,
) -> BatchReport:
    """Segment single images with ``predict`` and each group of stacks as one case."""
    from lofihippseg.stacks.api import predict_stacks

    groups = group_stacks(images)
    layout = BidsStacksLayout(groups)
    singles = [g[0].path for g in groups if len(g) == 1]
    results = []
    if singles:
        results = predict(singles, out_dir, model, settings, progress, layout=layout).results
    for group in (g for g in groups if len(g) > 1):
        first = group[0].path
        case = layout.case_id(first)
        try:
            paths = [im.path for im in group]
            result = predict_stacks(paths, out_dir, model, settings, stack_settings, layout, case)
        except Exception as exc:  # report the session and go on, as predict does
            message = failure_message(first, exc)
            result = CaseResult(case, first, "failed", message)
            _record_failure(layout.failure_path(out_dir, case), case, first, message)
        results.append(result)
    return BatchReport(out_dir, results, None)


@dataclass
class GroupRun:
    """What a group-level run wrote."""

    subjects: list[str]
    table: Path
    report: Path | None
    n_failed: int


def _is_our_description(path: Path) -> bool:
    """True when ``dataset_description.json`` was written by lofihippseg's participant level."""
    try:
        generated = json.loads(path.read_text()).get("GeneratedBy") or []
        return any(g.get("Name") == "lofihippseg" for g in generated)
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def run_group(
    out_dir: str | Path,
    participant_labels: Sequence[str] | None = None,
    report: bool = True,
    bids_dir: str | Path | None = None,
) -> GroupRun:
    """Gather every participant's results into ``group_volumes.tsv`` and the cohort report.

    Reads only what the participant runs wrote, so it merges shards and can be rerun.

    Args:
        out_dir: the derivatives folder the participant level wrote.
        participant_labels: only these participants; None = all.
        report: also write ``report.html``.
        bids_dir: the input dataset, if known: an ``out_dir`` that is (or lies inside) it
            is refused, as at the participant level.

    Raises:
        LoFiError: the folder is the input dataset, holds no lofihippseg derivatives (or
            none of the participants).

    Example:
        >>> run_group("bids/derivatives/lofihippseg")  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    if bids_dir is not None:
        check_output_folder(bids_dir, out_dir)
    description = out_dir / "dataset_description.json"
    if not description.is_file() or not _is_our_description(description):
        raise LoFiError(
            f"{out_dir}: no lofihippseg derivatives here (run the participant level first)"
        )
    subjects = derivative_subjects(out_dir)
    wanted = normalise_labels(participant_labels, "sub")
    if wanted is not None:
        subjects = [s for s in subjects if s in wanted]
    if not subjects:
        raise LoFiError(f"{out_dir}: no participant results found (run the participant level)")
    rows = []
    for subject in subjects:
        write_subject_table(out_dir, subject)
        rows.extend(subject_rows(out_dir, subject))
    table = write_tsv(out_dir / GROUP_TABLE, rows, TABLE_COLUMNS)
    html = None
    if report:
        from lofihippseg.reporting.cohort_report import write_report

        html = write_report(out_dir, out_dir / REPORT_NAME)
    return GroupRun(subjects, table, html, sum(r["status"] == "failed" for r in rows))
