"""``lofihippseg example``: segment a shipped example scan with the shipped model."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lofihippseg.cli.options import device_option, edge_weight_option, refiner_option


@click.command("example")
@click.option(
    "-o",
    "--out",
    "out_dir",
    default="example_output",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder.",
)
@click.option(
    "--scan",
    "which",
    default="synthetic",
    show_default=True,
    type=click.Choice(["synthetic", "t1"]),
    help="synthetic: a low-field-like scan with exact labels; t1: a real high-field head.",
)
@click.option(
    "--model", default=None, help="Model run folder or bundle (default: the shipped one)."
)
@device_option("Where to compute.")
@refiner_option()
@edge_weight_option()
def command(
    out_dir: Path,
    which: str,
    model: str | None,
    device: str,
    refiner: bool | None,
    edge_weight: float | None,
) -> None:
    """Segment a shipped example scan: label map, volumes and a QC picture, no data needed.

    The synthetic example ships with its exact labels, so its Dice is printed too.
    """
    from lofihippseg.inference.settings import PredictSettings
    from lofihippseg.workflows.example import run_example

    settings = PredictSettings(device=device, refine=refiner, edge_weight=edge_weight)
    result = run_example(out_dir, which, model, settings)
    click.echo(f"scan: {result.scan}")
    click.echo(result.report.table())
    if result.dice is not None:
        click.echo(
            f"Dice against the exact labels: left {result.dice['left']:.3f}, "
            f"right {result.dice['right']:.3f}"
        )
    if result.report.csv_path is not None:
        click.echo(f"volumes: {result.report.csv_path}")
    if result.qc_picture is not None:
        click.echo(f"QC picture: {result.qc_picture}")
    for line in result.report.error_lines():
        click.echo(line, err=True)
    sys.exit(result.report.exit_code)
