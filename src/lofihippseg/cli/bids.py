"""``lofihippseg bids``: the BIDS App (participant and group levels)."""

from __future__ import annotations

import sys

import click

from lofihippseg.cli.options import (
    device_option,
    edge_weight_option,
    family_option,
    refiner_option,
)

# options that take several values after one flag, as BIDS Apps (argparse nargs="+") do
MULTI_VALUE = {
    "--participant-label",
    "--participant_label",
    "--session-label",
    "--session_label",
    "--suffix",
    "--acquisition",
}


def expand_multi_values(args: list[str]) -> list[str]:
    """``--participant-label 01 02`` -> ``--participant-label 01 --participant-label 02``.

    Values run until the next token starting with ``-``, so positional arguments go first.

    Example:
        >>> expand_multi_values(["in", "out", "participant", "--participant-label", "01", "02"])
        ['in', 'out', 'participant', '--participant-label', '01', '--participant-label', '02']
    """
    out: list[str] = []
    flag = None
    for token in args:
        if token.startswith("-"):
            flag = token if token in MULTI_VALUE else None
            out.append(token)
        elif flag is not None and out[-1] != flag:
            out += [flag, token]
        else:
            out.append(token)
    return out


class BidsAppCommand(click.Command):
    """A click command accepting several values after one flag (BIDS Apps style)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Expand multi-value flags, then parse as usual."""
        return super().parse_args(ctx, expand_multi_values(list(args)))


def _stack_settings(save_stack_labels: bool):
    from lofihippseg.stacks.session import StacksSettings

    return StacksSettings(save_stack_labels=save_stack_labels)


@click.command("bids", cls=BidsAppCommand)
@click.argument("bids_dir", type=click.Path(file_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.argument("analysis_level", type=click.Choice(["participant", "group"]))
@click.option(
    "--participant-label",
    "--participant_label",
    "participant_label",
    multiple=True,
    help="Participants to process (01 or sub-01; several after one flag). Default: all.",
)
@click.option(
    "--session-label",
    "--session_label",
    "session_label",
    multiple=True,
    help="Sessions to process (1 or ses-1). Default: all.",
)
@click.option(
    "--suffix",
    multiple=True,
    help="Image suffixes in order of preference per subject and session (default T2w; "
    "e.g. --suffix T2w T1w uses T1w where there is no T2w).",
)
@click.option("--acquisition", multiple=True, help="Only images with these acq- labels.")
@click.option("--model", default=None, help="Training run folder or model bundle file.")
@click.option("--checkpoint1", default=None, type=click.Path(dir_okay=False))
@click.option("--checkpoint2", default=None, type=click.Path(dir_okay=False))
@click.option("--recipe", type=click.Choice(["paper", "released"]), default=None)
@click.option(
    "--tta/--no-tta",
    default=None,
    help="Also run the pair of networks on the left-right mirror image and average (sides "
    "swapped back; one batch). Default: the model's advice (the shipped model: on for heads, "
    "where it gained up to 0.02 Dice on held-back heads, off for crops, where it lost 0.007).",
)
@edge_weight_option()
@refiner_option()
@family_option()
@device_option("Where to run; auto = CUDA when available.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option(
    "--save-probabilities",
    is_flag=True,
    help="Also write _label-{Left,Right}Hippocampus_..._probseg.nii.gz.",
)
@click.option("--no-qc", is_flag=True, help="Do not write QC pictures.")
@click.option("--overwrite", is_flag=True, help="Redo images whose outputs already exist.")
@click.option(
    "--shard",
    default=None,
    help="Participant level: I/N = part I of N of the sorted participants; 'slurm' = this "
    "SLURM array task's part (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT).",
)
@click.option(
    "--group-stacks",
    is_flag=True,
    help="Participant level: T2w images of one session that differ only in acq- or run- (e.g. "
    "acq-axi, acq-cor, acq-sag) are one session's stacks: registered to the first (the axial "
    "one if an acq- label says so), combined and segmented as one case, named "
    "..._rec-stacks_desc-hippocampus_dseg (as `predict --stacks`).",
)
@click.option(
    "--save-stack-labels",
    is_flag=True,
    help="With --group-stacks: also write the label map on each stack's own grid "
    "(..._acq-X_rec-stacks_space-orig_desc-hippocampus_dseg.nii.gz).",
)
@click.option("--no-report", is_flag=True, help="Group level: do not write report.html.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(
    bids_dir,
    output_dir,
    analysis_level,
    participant_label,
    session_label,
    suffix,
    acquisition,
    model,
    checkpoint1,
    checkpoint2,
    recipe,
    tta,
    edge_weight,
    refiner,
    family,
    device,
    threads,
    save_probabilities,
    no_qc,
    overwrite,
    shard,
    group_stacks,
    save_stack_labels,
    no_report,
    quiet,
) -> None:
    """Segment the hippocampi of a BIDS dataset into BIDS derivatives.

    \b
    participant: segment each selected image (default suffix T2w) into OUTPUT_DIR/sub-X/...
      (_space-orig_desc-hippocampus_dseg.nii.gz on the input's grid, JSON sidecar, QC figure,
      a volumes TSV per participant); finished images are skipped on a rerun, a failing image
      is reported and the rest go on (exit code 1).
    group: gather every participant (and every shard) into group_volumes.tsv and report.html.
    """
    if analysis_level == "group":
        from lofihippseg.bids.app import run_group

        run = run_group(
            output_dir, participant_label or None, report=not no_report, bids_dir=bids_dir
        )
        click.echo(
            f"{len(run.subjects)} participants, {run.n_failed} failed image(s); "
            f"table {run.table}" + (f", report {run.report}" if run.report else "")
        )
        return

    from lofihippseg.bids.app import run_participant
    from lofihippseg.inference.api import PredictSettings
    from lofihippseg.inference.model_loading import load_model
    from lofihippseg.inference.settings import resolve_device
    from lofihippseg.sharding import parse_shard

    settings = PredictSettings(
        tta=tta,
        edge_weight=edge_weight,
        refine=refiner,
        family=family,
        device=device,
        threads=threads,
        save_probabilities=save_probabilities,
        qc=not no_qc,
        overwrite=overwrite,
        shard=parse_shard(shard),
    )
    loaded = load_model(model, checkpoint1, checkpoint2, recipe, device=str(resolve_device(device)))
    run = run_participant(
        bids_dir,
        output_dir,
        loaded,
        settings,
        participant_labels=participant_label or None,
        session_labels=session_label or None,
        suffixes=tuple(suffix) or ("T2w",),
        acquisitions=acquisition or None,
        progress=not quiet,
        group_stacks=group_stacks,
        stack_settings=_stack_settings(save_stack_labels) if group_stacks else None,
    )
    if run.report.results:
        click.echo(run.report.table())
    results = run.report.results
    done = sum(r.status == "ok" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    click.echo(
        f"{len(run.subjects)} participants ({done} images done, {skipped} already done, "
        f"{len(run.report.failed)} failed); derivatives in {output_dir}"
    )
    for line in run.report.error_lines():  # one line per failed image, with its reason
        click.echo(line, err=True)
    if run.failed_subjects:
        click.echo(f"participants with failures: {', '.join(run.failed_subjects)}", err=True)
        sys.exit(1)
