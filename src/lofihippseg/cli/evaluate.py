"""``lofihippseg evaluate PRED GT``: the LISA challenge metrics, paired by case id."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lofihippseg.errors import LoFiError


def _parse_labels(value: str) -> tuple[int, ...]:
    try:
        labels = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise LoFiError(f"--labels: expected integers separated by commas, got {value!r}") from None
    if not labels or any(lab <= 0 for lab in labels):
        raise LoFiError(f"--labels: expected positive label values, got {value!r}")
    return labels


@click.command("evaluate")
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("gt", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for metrics_per_case.csv and metrics_summary.json "
    "(default: PRED's folder, or PRED itself when it is a folder).",
)
@click.option(
    "--labels",
    default="1,2",
    show_default=True,
    help="Label values to score, comma-separated (1 = left, 2 = right hippocampus).",
)
def command(pred: Path, gt: Path, out_dir: Path | None, labels: str) -> None:
    """Score label maps PRED against ground truth GT (files or folders).

    Files are paired by case id, not by order (e.g. LISA_HF_0001_hipp_prediction.nii.gz with
    LISA_0001_hipp.nii.gz). Prints mean ± std [median] per label of Dice, HD, HD95, ASSD
    (mm), RVE, precision, recall and volumes. A ground-truth case without a prediction is
    scored with the challenge's missing values (Dice 0, HD/HD95 256, ASSD 1000, RVE 1),
    listed, and makes the exit code 1.
    """
    from lofihippseg.metrics.evaluate import evaluate

    if out_dir is None:
        out_dir = pred if pred.is_dir() else pred.parent
    result = evaluate(pred, gt, out_dir=out_dir, labels=_parse_labels(labels))
    click.echo(result.table())
    click.echo(f"wrote {out_dir / 'metrics_per_case.csv'} and {out_dir / 'metrics_summary.json'}")
    if result.unmatched:
        click.echo(f"not scored (no ground truth): {', '.join(result.unmatched)}", err=True)
    if result.missing:
        click.echo(
            f"missing predictions for {len(result.missing)} case(s): {', '.join(result.missing)}",
            err=True,
        )
        sys.exit(1)
