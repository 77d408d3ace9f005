"""``lofihippseg demo``: synthesise, train, predict and evaluate in about 10 minutes on a CPU."""

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
@click.option("--n-cases", default=10, show_default=True, help="Synthetic cases to generate.")
@click.option("--iterations", default=800, show_default=True, help="Training iterations.")
@click.option("--n-filters", default=8, show_default=True, help="VNet base width (16 = released).")
@click.option("--seed", default=0, show_default=True, help="Seed for everything.")
@device_option("Where to compute.")
def command(
    out_dir: Path, n_cases: int, iterations: int, n_filters: int, seed: int, device: str
) -> None:
    """Run the whole method on synthetic low-field scans, no data or download needed.

    Synthesises a small cohort from the packaged label maps, trains a small dual-view model on
    the CPU, predicts held-out cases (from a label map training never saw), evaluates them and
    prints the metrics table and the paths of the QC pictures.
    """
    from lofihippseg.workflows.demo import DemoConfig, run_demo

    config = DemoConfig(
        n_cases=n_cases, iterations=iterations, n_filters=n_filters, seed=seed, device=device
    )
    result = run_demo(out_dir, config)
    click.echo("")
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
    if result.predictions.failed:
        sys.exit(1)
