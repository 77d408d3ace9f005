"""``lofihippseg example``: segment a shipped example scan with the shipped model.

The main job of the Quick start: it needs no data of the user's and downloads nothing. The
synthetic low-field example comes with its exact labels (it was made from an anatomical label
map the shipped model never saw in training), so the result is scored as well as measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lofihippseg.errors import LoFiError
from lofihippseg.inference.api import BatchReport, predict
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image, load_label
from lofihippseg.metrics.evaluate import compute_case_metrics

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "examples"
EXAMPLES = {
    # name -> (scan, exact labels or None)
    "synthetic": (
        EXAMPLES_DIR / "synthetic_lowfield_example.nii.gz",
        EXAMPLES_DIR / "synthetic_lowfield_example_hipp.nii.gz",
    ),
    "t1": (EXAMPLES_DIR / "example_brain_t1.nii.gz", None),
}


@dataclass
class ExampleResult:
    """What ``run_example`` produced."""

    scan: Path
    report: BatchReport
    dice: dict[str, float] | None  # left/right Dice against the exact labels, when known

    @property
    def qc_picture(self) -> Path | None:
        """The QC picture of the example (None if the case failed)."""
        outputs = self.report.results[0].outputs
        return Path(outputs["qc"]) if "qc" in outputs else None


def run_example(
    out_dir: str | Path = "example_output",
    which: str = "synthetic",
    model: LoadedModel | str | Path | None = None,
    settings: PredictSettings | None = None,
) -> ExampleResult:
    """Predict a shipped example scan; score it when its exact labels ship too.

    Args:
        out_dir: output folder (label map, sidecar, QC picture, volumes.csv).
        which: ``synthetic`` (low-field-like, with labels) or ``t1`` (a real high-field head).
        model: a model, run folder or bundle; None for the packaged model.
        settings: prediction settings (default: ``predict``'s defaults); the example is always
            recomputed (``overwrite``), so its figures are those of this run.

    Raises:
        LoFiError: unknown example name, or no model.

    Example:
        >>> result = run_example("example_output")  # doctest: +SKIP
        >>> print(result.report.table(), result.dice)  # doctest: +SKIP
    """
    if which not in EXAMPLES:
        raise LoFiError(f"unknown example {which!r}; choose one of {', '.join(EXAMPLES)}")
    scan, labels = EXAMPLES[which]
    settings = replace(settings or PredictSettings(), overwrite=True)
    report = predict(scan, out_dir, model, settings, progress=False)
    dice = None
    case = report.results[0]
    if labels is not None and case.status != "failed":
        image = load_image(scan)
        pred = load_label(case.outputs["labels"], reference=image, allowed={0, 1, 2})
        truth = load_label(labels, reference=image, allowed={0, 1, 2})
        metrics = compute_case_metrics(pred.data, truth.data, image.spacing)
        dice = {"left": float(metrics[1]["dice"]), "right": float(metrics[2]["dice"])}
    return ExampleResult(scan, report, dice)
