"""``lofihippseg report``: (re)build the cohort QC report of a finished output folder."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    default=None,
    type=click.Path(dir_okay=False),
    help="HTML file to write. Default: OUT_DIR/report.html.",
)
@click.option("--title", default=None, help="Page title.")
@click.option("--no-thumbnails", is_flag=True, help="Do not embed QC thumbnails.")
def command(out_dir, output, title, no_thumbnails) -> None:
    """Write the self-contained HTML cohort report of OUT_DIR.

    OUT_DIR is a `predict -o` folder or a `bids` derivatives folder. The report reads only what
    predict wrote (sidecars, failure records, volumes.csv, QC pictures); no model runs.
    """
    from lofihippseg.reporting.cohort_report import build_report

    path, cohort = build_report(out_dir, output, title, thumbnails=not no_thumbnails)
    flagged = sum(c.flagged for c in cohort.cases)
    click.echo(
        f"{len(cohort.cases)} cases: {len(cohort.done)} segmented ({flagged} flagged for "
        f"review), {len(cohort.failures)} failed; report: {path}"
    )
    for case in cohort.failures:
        click.echo(f"failed: {case.case}: {case.error}", err=True)
