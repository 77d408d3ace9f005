"""``lofihippseg demo``: the whole method on synthetic low-field scans, on a laptop CPU.

Synthesises a small cohort from the packaged anatomical label maps (validation cases from a
label map the training never sees), trains a small dual-view model briefly, predicts the
held-out cases, evaluates them and returns the metrics table and the QC pictures' paths.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lofihippseg.config import save_json
from lofihippseg.inference.api import BatchReport, predict
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.metrics.evaluate import EvaluationResult, evaluate
from lofihippseg.models.registry import ModelSpec
from lofihippseg.synth.assets import packaged_label_maps
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.dataset import write_synthetic_dataset
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.loop import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (sized for about 10 minutes on 2 CPU cores).

    Attributes:
        n_cases: synthetic cases to generate (about a fifth are held out).
        image_shape: synthetic image grid (1 mm), centred on the hippocampi.
        iterations: training iterations.
        n_filters: VNet width (16 = released size; 8 is four times cheaper).
        patch_size: training patch.
        batch_size: training batch.
        lr: SGD learning rate (higher than the released 0.01: a short run from scratch).
        foreground_fraction: share of patches centred on a hippocampus voxel (small patches
            centred on the target give many more useful iterations per CPU minute).
        seed: seeds everything.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    n_cases: int = 10
    image_shape: tuple[int, int, int] = (96, 112, 96)
    iterations: int = 800
    n_filters: int = 8
    patch_size: tuple[int, int, int] = (32, 32, 32)
    batch_size: int = 4
    lr: float = 0.1
    foreground_fraction: float = 0.9
    seed: int = 0
    device: str = "auto"


@dataclass
class DemoResult:
    """What the demo produced."""

    out_dir: Path
    run_dir: Path
    predictions: BatchReport
    evaluation: EvaluationResult
    qc_pictures: list[Path]
    seconds: dict[str, float]


def run_demo(out_dir: str | Path = "demo_output", config: DemoConfig | None = None) -> DemoResult:
    """Synthesise, train, predict and evaluate; returns the results (nothing is downloaded).

    Example:
        >>> result = run_demo("demo_output")  # doctest: +SKIP
        >>> print(result.evaluation.table())  # doctest: +SKIP
    """
    config = config or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_json(config, out / "demo_config.json")
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    log.info(
        "1/4 synthesising %d low-field-like scans from the packaged label maps", config.n_cases
    )
    synth = SynthConfig.fast(shape=config.image_shape)
    data = write_synthetic_dataset(
        packaged_label_maps(), config.n_cases, out / "data", seed=config.seed, config=synth
    )
    seconds["synthesis"] = time.perf_counter() - start

    start = time.perf_counter()
    log.info("2/4 training a small dual-view model for %d iterations", config.iterations)
    train_config = TrainConfig(
        data=(str(out / "data"),),
        seed=config.seed,
        patch_size=config.patch_size,
        batch_size=config.batch_size,
        iterations=config.iterations,
        lr=config.lr,
        val_every=max(config.iterations // 4, 1),
        model=ModelSpec(n_filters=config.n_filters),
        foreground_fraction=config.foreground_fraction,
        use_augmentation=False,  # the synthetic generator already randomises every case
        device=config.device,
        num_workers=0,
        out_dir=str(out / "runs"),
        name="demo",
    )
    run_dir = train(train_config)
    seconds["training"] = time.perf_counter() - start

    start = time.perf_counter()
    log.info("3/4 predicting the %d held-out cases", len(data.val))
    images = [out / "data" / "imagesTr" / f"{cid}_ciso.nii.gz" for cid in data.val]
    settings = PredictSettings(device=config.device, overwrite=True)
    report = predict(images, out / "predictions", run_dir, settings)
    seconds["prediction"] = time.perf_counter() - start

    start = time.perf_counter()
    log.info("4/4 evaluating against the synthetic ground truth")
    labels = [out / "data" / "labelsTr" / f"{cid}_hipp.nii.gz" for cid in data.val]
    gt_dir = out / "ground_truth"
    gt_dir.mkdir(exist_ok=True)
    for path in labels:  # evaluate pairs by case id: give it just the held-out labels
        link = gt_dir / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    result = evaluate(out / "predictions", gt_dir, out_dir=out / "metrics")
    seconds["evaluation"] = time.perf_counter() - start

    qc = sorted((out / "predictions").glob("*_qc.png"))
    return DemoResult(out, run_dir, report, result, qc, seconds)
