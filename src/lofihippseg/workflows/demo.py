"""``lofihippseg demo``: fine-tune the shipped model on a small cohort and see it learn.

Takes a small labelled cohort (synthesised from the packaged anatomical label maps, or the
user's own labelled folder), scores the shipped model on the held-out cases, fine-tunes it
briefly with ``train``'s default recipe (the paper's, without the critic) on the training
cases, scores it again and returns both tables. ``from_scratch=True`` trains a new small model
instead (the whole method end to end; it shows the pipeline, not accuracy, in a few CPU
minutes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lofihippseg.config import save_json
from lofihippseg.errors import LoFiError
from lofihippseg.inference.api import BatchReport, predict
from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.datasets import split_dataset
from lofihippseg.metrics.evaluate import EvaluationResult, evaluate
from lofihippseg.models.registry import ModelSpec
from lofihippseg.synth.assets import packaged_label_maps
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.dataset import write_synthetic_dataset
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.loop import train
from lofihippseg.training.losses import LossConfig, critic_switches
from lofihippseg.training.plan import FINE_TUNE_LR

# what ``lofihippseg train`` uses by default (its --critic option says why)
NO_CRITIC = LossConfig(**critic_switches(False))

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (sized for a few minutes on 2 CPU cores).

    Attributes:
        n_cases: synthetic cases to generate (about a fifth are held out); ignored with ``data``.
        image_shape: synthetic image grid (1 mm), centred on the hippocampi.
        data: the user's labelled folder (LISA / nnU-Net / MSD layout, or a CSV) instead of the
            synthetic cohort; its validation split is the held-out set.
        contrast: synthetic cohort contrast: ``t2`` (the generator's low-field priors) or
            ``t1`` (dark CSF, bright white matter: a new contrast for the shipped model).
        iterations: fine-tuning (or training) iterations.
        patch_size: training patch.
        batch_size: training batch.
        lr: SGD learning rate (``FINE_TUNE_LR`` fine-tuning; 0.1 from scratch).
        foreground_fraction: share of patches centred on a hippocampus voxel.
        from_scratch: train a new small model (``n_filters``) instead of fine-tuning.
        n_filters: VNet width when training from scratch.
        seed: seeds everything.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    n_cases: int = 10
    image_shape: tuple[int, int, int] = (96, 112, 96)
    data: str | None = None
    contrast: str = "t1"
    iterations: int = 300
    patch_size: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 4
    lr: float = FINE_TUNE_LR
    foreground_fraction: float = 0.9
    from_scratch: bool = False
    n_filters: int = 8
    seed: int = 0
    device: str = "auto"


@dataclass
class DemoResult:
    """What the demo produced (``before`` is None when training from scratch)."""

    out_dir: Path
    run_dir: Path
    predictions: BatchReport
    evaluation: EvaluationResult
    before: EvaluationResult | None
    qc_pictures: list[Path]
    seconds: dict[str, float]

    def dice(self, result: EvaluationResult | None) -> dict[str, float] | None:
        """Mean Dice per side (labels 1, 2) of an evaluation."""
        if result is None:
            return None
        per = result.summary["per_label"]
        return {
            side: float(per[lab]["dice"]["mean"]) for side, lab in (("left", "1"), ("right", "2"))
        }

    def summary_line(self) -> str:
        """``Dice before -> after`` (or just after, from scratch)."""
        after = self.dice(self.evaluation)
        text = f"left {after['left']:.3f}, right {after['right']:.3f}"
        before = self.dice(self.before)
        if before is None:
            return f"held-out Dice after training: {text}"
        return (
            f"held-out Dice: shipped model left {before['left']:.3f}, right "
            f"{before['right']:.3f} -> fine-tuned {text}"
        )


def _cohort_config(config: DemoConfig) -> SynthConfig:
    if config.contrast not in ("t1", "t2"):
        raise LoFiError(f"unknown demo contrast {config.contrast!r}; choose t1 or t2")
    synth = SynthConfig.fast(shape=config.image_shape)
    if config.contrast == "t1":  # a contrast the shipped model saw little of
        synth = replace(synth, csf_mean=(0.05, 0.3), gm_mean=(0.35, 0.6), wm_gm_ratio=(1.15, 1.6))
    return synth


def _cohort(config: DemoConfig, out: Path) -> tuple[str, list[Path], list[Path]]:
    """(training data source, held-out images, held-out labels)."""
    if config.data is not None:
        _, val = split_dataset(config.data, 0.2, config.seed)
        if not val:
            raise LoFiError(f"{config.data}: no validation cases to score the model on")
        return config.data, [c.image for c in val], [c.label for c in val]
    log.info("synthesising %d %s-like scans from the packaged label maps", config.n_cases,
             config.contrast)  # fmt: skip
    data = write_synthetic_dataset(
        packaged_label_maps(), config.n_cases, out / "data", seed=config.seed,
        config=_cohort_config(config),
    )  # fmt: skip
    images = [out / "data" / "imagesTr" / f"{cid}_ciso.nii.gz" for cid in data.val]
    labels = [out / "data" / "labelsTr" / f"{cid}_hipp.nii.gz" for cid in data.val]
    return str(out / "data"), images, labels


def _score(model, images: list[Path], labels: list[Path], out: Path, name: str, device: str):
    settings = PredictSettings(device=device, overwrite=True)
    report = predict(images, out / name, model, settings, progress=False)
    gt_dir = out / "ground_truth"
    gt_dir.mkdir(exist_ok=True)
    for path in labels:  # evaluate pairs by case id: give it just the held-out labels
        link = gt_dir / Path(path).name
        if not link.exists():
            link.symlink_to(Path(path).resolve())
    return report, evaluate(out / name, gt_dir, out_dir=out / f"metrics_{name}")


def run_demo(out_dir: str | Path = "demo_output", config: DemoConfig | None = None) -> DemoResult:
    """Score the shipped model, fine-tune it, score it again (nothing is downloaded).

    Example:
        >>> result = run_demo("demo_output")  # doctest: +SKIP
        >>> print(result.summary_line())  # doctest: +SKIP
    """
    config = config or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_json(config, out / "demo_config.json")
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    data, images, labels = _cohort(config, out)
    seconds["data"] = time.perf_counter() - start

    before, family = None, None
    if config.from_scratch:
        spec, init = ModelSpec(n_filters=config.n_filters), None
    else:
        start = time.perf_counter()
        log.info("scoring the shipped model on the %d held-out cases", len(images))
        shipped = load_model(None, device="cpu")
        spec, init = shipped.spec, str(DEFAULT_MODEL)
        if config.data is None and config.contrast in shipped.pairs:
            family = config.contrast  # the synthetic cohort's contrast family, if it has one
            spec = replace(spec, grid_mm=shipped.grid_of(family))  # and its grid
        _, before = _score(None, images, labels, out, "predictions_before", config.device)
        seconds["score before"] = time.perf_counter() - start

    start = time.perf_counter()
    what = "training a new small model" if config.from_scratch else "fine-tuning the shipped model"
    if family is not None:
        what += f" (its {family} pair of networks)"
    log.info("%s for %d iterations", what, config.iterations)
    train_config = TrainConfig(
        data=(data,),
        seed=config.seed,
        patch_size=config.patch_size,
        batch_size=config.batch_size,
        iterations=config.iterations,
        lr=config.lr,
        val_every=max(config.iterations // 3, 1),
        model=spec,
        foreground_fraction=config.foreground_fraction,
        use_augmentation=config.data is not None,  # synthetic cases are randomised already
        device=config.device,
        num_workers=0,
        init1=init,
        init_family=family,
        out_dir=str(out / "runs"),
        name="demo",
        amp=False,
        loss=NO_CRITIC,
    )
    previous = out / "runs" / "demo"
    if previous.is_dir():  # the demo's own earlier run: a rerun starts again
        import shutil

        shutil.rmtree(previous)
    run_dir = train(train_config)
    seconds["training"] = time.perf_counter() - start

    start = time.perf_counter()
    log.info("scoring the %s model on the held-out cases", "new" if init is None else "fine-tuned")
    report, after = _score(run_dir, images, labels, out, "predictions", config.device)
    seconds["score after"] = time.perf_counter() - start
    qc = sorted((out / "predictions").glob("*_qc.png"))
    return DemoResult(out, run_dir, report, after, before, qc, seconds)
