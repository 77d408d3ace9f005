"""``lofihippseg demo``: fine-tune the shipped model on a small cohort, Dice before and after."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lofihippseg.cli.options import device_option


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="demo_output",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder.",
)
@click.option(
    "--data",
    type=click.Path(exists=True),
    help="Your labelled folder (LISA / nnU-Net / MSD layout, or a CSV) instead of synthetic "
    "scans; its validation split is scored.",
)
@click.option("--n-cases", default=10, show_default=True, help="Synthetic cases to generate.")
@click.option(
    "--contrast",
    type=click.Choice(["t1", "t2"]),
    default="t1",
    show_default=True,
    help="Contrast of the synthetic cohort (t1: new to the shipped model; t2: low-field).",
)
@click.option("--iterations", default=300, show_default=True, help="Training iterations.")
@click.option(
    "--from-scratch",
    is_flag=True,
    help="Train a new small model instead of fine-tuning the shipped one.",
)
@click.option("--n-filters", default=8, show_default=True, help="VNet width with --from-scratch.")
@click.option("--seed", default=0, show_default=True, help="Seed for everything.")
@device_option("Where to compute.")
def command(
    out_dir: Path,
    data: str | None,
    n_cases: int,
    contrast: str,
    iterations: int,
    from_scratch: bool,
    n_filters: int,
    seed: int,
    device: str,
) -> None:
    """Watch the model learn: score the shipped model on held-out cases of a small cohort,
    fine-tune it on the rest, score it again, and print Dice before and after.

    The cohort is synthesised from the packaged label maps (held-out cases from a label map
    the fine-tuning never sees), or is your own labelled folder (--data). No download needed.
    """
    from lofihippseg.workflows.demo import DemoConfig, run_demo

    if iterations < 1 or n_cases < 2:
        raise click.BadParameter("--iterations must be >= 1 and --n-cases >= 2")
    config = DemoConfig(
        n_cases=n_cases, data=data, contrast=contrast, iterations=iterations,
        from_scratch=from_scratch, n_filters=n_filters, seed=seed, device=device,
        lr=0.1 if from_scratch else DemoConfig.lr,
        patch_size=(32, 32, 32) if from_scratch else DemoConfig.patch_size,
    )  # fmt: skip
    result = run_demo(out_dir, config)
    if result.before is not None:
        click.echo("")
        click.echo("shipped model, before fine-tuning:")
        click.echo(result.before.table())
    click.echo("")
    click.echo("after fine-tuning:" if result.before is not None else "after training:")
    click.echo(result.evaluation.table())
    click.echo("")
    click.echo(result.predictions.table())
    click.echo("")
    click.echo("QC pictures:")
    for path in result.qc_pictures:
        click.echo(f"  {path}")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    click.echo(f"time: {timing}")
    click.echo(f"run folder (model): {result.run_dir}")
    click.echo(result.summary_line())
    if result.predictions.failed:
        sys.exit(1)
