"""``lofihippseg predict``: segment scans with a trained or released model."""

from __future__ import annotations

import sys

import click

from lofihippseg.cli.options import (
    device_option,
    edge_weight_option,
    family_option,
    refiner_option,
)
from lofihippseg.errors import LoFiError


def _shard(value: str | None) -> tuple[int, int] | None:
    from lofihippseg.sharding import parse_shard

    return parse_shard(value)


def _roi_size(value: str) -> tuple[int, int, int]:
    try:
        parts = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        raise LoFiError(f"--roi-size must be one or three integers, got {value!r}") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise LoFiError(f"--roi-size must be one or three integers, got {value!r}")
    return tuple(parts)  # type: ignore[return-value]


def _predict_stacks(inputs, out_dir, loaded, settings, combine, stack_labels, combined) -> None:
    """``predict --stacks``: one session; a bad session raises one line, nothing written."""
    from lofihippseg.stacks.api import predict_stacks
    from lofihippseg.stacks.session import StacksSettings

    stack_settings = StacksSettings(
        combine=combine, save_stack_labels=stack_labels, save_combined=combined
    )
    result = predict_stacks(inputs, out_dir, loaded, settings, stack_settings)
    row = result.row or {}
    volumes = (
        f": left {float(row['left_ml']):.2f} mL, right {float(row['right_ml']):.2f} mL"
        if row.get("left_ml") not in (None, "")
        else ""
    )
    click.echo(
        f"{result.case} ({len(inputs)} stacks) {result.status}{volumes}; outputs in {out_dir}"
    )


def _dicom_inputs(inputs: list[str], stacks: bool, dicom_seg: bool) -> bool:
    """True when some input is DICOM (then ``workflows.dicom`` runs); checks the options."""
    from lofihippseg.workflows.dicom import is_dicom_input

    dicom = [i for i in inputs if is_dicom_input(i)]
    if dicom_seg and not dicom:
        raise LoFiError("--dicom-seg needs DICOM input (a folder of DICOM series or files)")
    if stacks and dicom and len(dicom) != len(inputs):
        other = next(i for i in inputs if i not in dicom)
        raise LoFiError(f"{other}: --stacks takes either DICOM folders or NIfTI stacks, not both")
    if dicom:  # a missing [dicom] extra says so before the model loads
        from lofihippseg.io.dcm2niix import dcm2niix_binary
        from lofihippseg.io.dicom import require_pydicom

        require_pydicom()
        dcm2niix_binary()
    return bool(dicom)


def _predict_dicom(
    inputs, out_dir, loaded, settings, stacks, extras, dicom_seg, quiet, report_html
) -> None:
    """``predict`` with DICOM inputs: one case per series (or one session with --stacks)."""
    from lofihippseg.workflows.dicom import predict_dicom, predict_dicom_stacks

    def note(line: str) -> None:
        click.echo(line, err=True)

    if stacks:
        from lofihippseg.stacks.session import StacksSettings

        combine, save_stack_labels, save_combined = extras
        stack_settings = StacksSettings(
            combine=combine, save_stack_labels=save_stack_labels, save_combined=save_combined
        )
        result = predict_dicom_stacks(
            inputs, out_dir, loaded, settings, stack_settings, dicom_seg, echo=note
        )
        row = result.row or {}
        volumes = (
            f": left {float(row['left_ml']):.2f} mL, right {float(row['right_ml']):.2f} mL"
            if row.get("left_ml") not in (None, "")
            else ""
        )
        click.echo(f"{result.case} {result.status}{volumes}; outputs in {out_dir}")
        return
    report = predict_dicom(inputs, out_dir, loaded, settings, dicom_seg, not quiet, echo=note)
    _summarise(report, report_html)


def _summarise(report, report_html: bool) -> None:
    """Print a batch's table, counts and errors (and its HTML report); exit non-zero when a
    case failed (2: every case; 1: some)."""
    click.echo(report.table())
    done = sum(r.status == "ok" for r in report.results)
    skipped = sum(r.status == "skipped" for r in report.results)
    click.echo(
        f"{done} done, {skipped} skipped (already done), {len(report.failed)} failed; "
        f"outputs in {report.out_dir}"
        + (f", volumes in {report.csv_path}" if report.csv_path else "")
    )
    if report_html:
        from lofihippseg.reporting.cohort_report import write_report

        click.echo(f"report: {write_report(report.out_dir)}")
    for line in report.error_lines():
        click.echo(line, err=True)
    if report.failed:
        sys.exit(report.exit_code)


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (created).",
)
@click.option(
    "--model",
    default=None,
    help="Training run folder or model bundle file. Default: the packaged model.",
)
@click.option(
    "--checkpoint1",
    default=None,
    type=click.Path(dir_okay=False),
    help="The authors' released view-1 network (best_model_1.pth).",
)
@click.option(
    "--checkpoint2",
    default=None,
    type=click.Path(dir_okay=False),
    help="The authors' released view-2 network (best_model_2.pth).",
)
@click.option(
    "--recipe",
    type=click.Choice(["paper", "released"]),
    default=None,
    help="Inference recipe; 'released' = legacy view, threshold 0.5, union fusion, "
    "overlaps to the right, no LCC. Default: the model's own (released for two "
    "checkpoint files).",
)
@click.option(
    "--fusion",
    type=click.Choice(["mean", "union"]),
    default=None,
    help="Fuse the two views by mean probability or union of masks. Default: recipe's.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Probability threshold for each side.",
)
@edge_weight_option()
@refiner_option()
@click.option(
    "--lcc/--no-lcc",
    default=None,
    help="Keep only the largest connected component per side. Default: on for the "
    "paper recipe, off for released.",
)
@click.option(
    "--tta/--no-tta",
    default=None,
    help="Also run the pair of networks on the left-right mirror image and average (sides "
    "swapped back; one batch). Default: the model's advice (the shipped model: on for heads, "
    "where it gained up to 0.02 Dice on held-back heads, off for crops, where it lost 0.007).",
)
@click.option(
    "--sliding-window",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Gaussian-weighted sliding windows (MONAI); auto = only for volumes too big "
    "for one pass; off = whole volume padded to a multiple of 16.",
)
@click.option(
    "--roi-size",
    default="128",
    show_default=True,
    help="Sliding-window size: one or three multiples of 16 (e.g. 128 or 96,128,96).",
)
@click.option(
    "--overlap",
    type=float,
    default=0.25,
    show_default=True,
    help="Sliding-window overlap fraction.",
)
@click.option(
    "--roi",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Locate the hippocampi (the model's localiser, else a half-resolution pass), then run "
    "full resolution only in a box around each (falls back to the whole volume when unsure); "
    "auto = on CPU, off for --recipe released.",
)
@click.option(
    "--grid",
    default="auto",
    show_default=True,
    help="Voxel grid the networks run on: auto = the model's working grid (the shipped model: "
    "1.5 mm; the result is mapped back onto the input's grid), native = the input's own grid, "
    "or a voxel size in mm.",
)
@family_option()
@device_option("Where to run; auto = CUDA when available.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option(
    "--amp/--no-amp",
    default=True,
    show_default=True,
    help="Mixed precision: float16 on CUDA; bfloat16 on a CPU that computes it natively (about "
    "2x faster networks, Dice within 0.002). --no-amp: float32 everywhere.",
)
@click.option(
    "--save-probabilities", is_flag=True, help="Also write the fused left/right probability maps."
)
@click.option(
    "--save-uncertainty", is_flag=True, help="Also write the view-disagreement (uncertainty) map."
)
@click.option("--no-qc", is_flag=True, help="Do not write QC pictures.")
@click.option(
    "--lisa-names",
    is_flag=True,
    help="Name outputs LISA_HF_XXXX_hipp_prediction.nii.gz (LISA challenge).",
)
@click.option("--overwrite", is_flag=True, help="Redo cases whose outputs already exist.")
@click.option(
    "--shard",
    default=None,
    help="I/N: process only part I of N (1-based) of the sorted case list; 'slurm': the part "
    "of this SLURM array task (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT).",
)
@click.option(
    "--report",
    "report_html",
    is_flag=True,
    help="Also write OUT/report.html: the self-contained cohort QC report of the output folder.",
)
@click.option(
    "--stacks",
    is_flag=True,
    help="INPUTS are the separate stacks of ONE session (two or more, any orientation; e.g. "
    "axial, coronal, sagittal): each is registered rigidly to the first, they are combined on "
    "a 1 mm grid in the first stack's frame and segmented once (docs/stacks.md).",
)
@click.option(
    "--combine",
    type=click.Choice(["superres", "average", "fuse"]),
    default="superres",
    show_default=True,
    help="With --stacks: superres = the stacks combined frequency by frequency; average = "
    "averaged; fuse = each stack segmented and the probabilities averaged.",
)
@click.option(
    "--save-stack-labels",
    is_flag=True,
    help="With --stacks: also write the label map on each stack's own grid (CASE_hipp_stackK).",
)
@click.option(
    "--save-combined",
    is_flag=True,
    help="With --stacks: also write the combined image (CASE_combined.nii.gz).",
)
@click.option(
    "--dicom-seg",
    is_flag=True,
    help="With DICOM input: also write per series CASE_seg.dcm (a DICOM Segmentation of the "
    "left and right hippocampus on the series' own grid, for a PACS viewer) and CASE_sr.dcm "
    "(a DICOM Structured Report of the volumes). Needs the [dicom] extra.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(
    inputs,
    out_dir,
    model,
    checkpoint1,
    checkpoint2,
    recipe,
    fusion,
    threshold,
    edge_weight,
    refiner,
    lcc,
    tta,
    sliding_window,
    roi_size,
    overlap,
    roi,
    grid,
    family,
    device,
    threads,
    amp,
    save_probabilities,
    save_uncertainty,
    no_qc,
    lisa_names,
    overwrite,
    shard,
    report_html,
    quiet,
    stacks,
    combine,
    save_stack_labels,
    save_combined,
    dicom_seg,
) -> None:
    """Segment the left and right hippocampus in INPUTS (files, folders or globs).

    What runs with the shipped model: the localiser puts a box around each hippocampus; one
    pair of networks segments inside the boxes, chosen by the field of view (a head: the t2
    pair, with its left-right mirror averaged in; a crop narrower than 80 mm: the t1 pair); the
    refiner re-reads each outline; the result is mapped back onto the input's grid. On a CPU
    with native bfloat16 the networks run in bfloat16 (--no-amp: float32).

    Writes per case CASE_hipp.nii.gz (on the input's grid), a JSON sidecar, a QC picture,
    and a row of volumes.csv (left/right mL, asymmetry index, view agreement Dice, quality
    status, predicted Dice and review flag per side). A failed case prints `error: FILE:
    problem` and the rest go on; the exit code is 0 when no case failed, 1 when some failed,
    2 when every case failed.

    DICOM: a folder tree of DICOM files (needs the [dicom] extra) gives one case per series,
    named S{SeriesNumber}_{SeriesDescription} (never by patient data), converted with dcm2niix
    into a temporary NIfTI; localisers, derived, non-MR and 2D series are skipped with one line
    each. --dicom-seg also writes a DICOM SEG and SR per series.
    """
    from lofihippseg.inference.api import PredictSettings, predict
    from lofihippseg.inference.model_loading import load_model
    from lofihippseg.inference.settings import resolve_device

    settings = PredictSettings(
        fusion=fusion,
        threshold=threshold,
        edge_weight=edge_weight,
        refine=refiner,
        lcc=lcc,
        tta=tta,
        sliding_window=sliding_window,
        roi_size=_roi_size(roi_size),
        overlap=overlap,
        roi=roi,
        grid=grid,
        family=family,
        device=device,
        threads=threads,
        amp=amp,
        save_probabilities=save_probabilities,
        save_uncertainty=save_uncertainty,
        qc=not no_qc,
        lisa_names=lisa_names,
        overwrite=overwrite,
        shard=_shard(shard),
    )
    dicom = _dicom_inputs(list(inputs), stacks, dicom_seg)
    if stacks and not dicom:  # a missing, unreadable or 4D stack fails before the model loads
        from lofihippseg.stacks.session import load_stacks

        load_stacks(list(inputs))
    loaded = load_model(model, checkpoint1, checkpoint2, recipe, device=str(resolve_device(device)))
    if dicom:
        extras = (combine, save_stack_labels, save_combined)
        dicom_args = (stacks, extras, dicom_seg, quiet, report_html)
        _predict_dicom(list(inputs), out_dir, loaded, settings, *dicom_args)
        return
    if stacks:
        extras = (combine, save_stack_labels, save_combined)
        _predict_stacks(list(inputs), out_dir, loaded, settings, *extras)
        return
    report = predict(list(inputs), out_dir, loaded, settings, progress=not quiet)
    _summarise(report, report_html)
