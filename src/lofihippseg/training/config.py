"""Training settings: one frozen dataclass, saved as ``config.json`` in every run folder.

Two recipes (``recipe``):

- ``paper`` (default): the method done right. Network 2 sees the frequency-masked view in
  training, the mutual loss is gated per voxel by a critic that learns (own AdamW step), one
  cosine over the whole run, augmentation and foreground-aware patch sampling on.
- ``released``: the authors' released training with its quirks, for comparison. Both networks
  see the unmasked image in training (the ``legacy`` masked view only at validation/test), the
  critic keeps its random weights, the mutual loss is ungated (mask x averaged BCE), no
  augmentation, plain random crops, and the cosine is a per-epoch schedule stepped every
  iteration: ``T_max = iterations // epoch_length`` with ``epoch_length = ceil(n_train / batch)``
  (the released loop), so the rate cycles; with no finite training set (synthetic only)
  ``T_max = iterations // 8``, i.e. four full cycles as the released 30k-iteration run had.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lofihippseg.models.registry import ModelSpec
from lofihippseg.synth.config import SynthConfig
from lofihippseg.training.augment import AugmentConfig
from lofihippseg.training.losses import LossConfig

RECIPES = ("paper", "released")
LR_SCHEDULES = ("cosine", "cosine_per_epoch")
UNSIDED_SIDES = ("resolve", "left", "right")


@dataclass(frozen=True)
class TrainConfig:
    """All settings of a training run.

    Attributes:
        data: folders (LISA / nnU-Net / MSD layout) or CSV files of labelled cases.
        unsided: folders or CSV files of labelled crops whose labels carry no side (e.g. the
            MSD hippocampus crops, labels 1/2 = head/body): every label > 0 is "hippocampus,
            either side", and the loss takes the output channel that already overlaps it
            more (``training.unsided``); validated with the sides merged.
        unsided_fraction: probability that a training sample is an unsided crop (when other
            data is given; 1.0 is forced when there is none).
        unsided_voxel_mm: resample unsided crops to this isotropic voxel size when loaded
            (e.g. the model's working grid); ``None`` keeps their own grid.
        unsided_side: ``resolve`` (each sample's hippocampus goes to the channel that overlaps it
            more, ``training.unsided``), or ``left`` / ``right``: every crop, as stored, holds
            that side's hippocampus (the MSD crops are all left-like: their right hippocampi
            were evidently mirrored); each sample is then mirrored left-right half of the time
            and labelled the other side, so both channels learn from every crop.
        unsided_invert_prob: probability that an unsided crop's contrast is inverted before
            augmentation (T1 crops toward T2-like: fluid bright, white matter dark).
        unsided_remap_prob: probability that an unsided crop's intensities then go through a
            random curve (``training.unsided.random_intensity_curve``): real anatomy and real
            edges under a random tissue contrast, like the generator's random-contrast images.
        synthetic: folder of label maps for on-the-fly synthetic images, or a text file
            listing them one per line (``"packaged"`` = the label maps shipped with the
            package); ``None`` = real cases only.
        synth: settings of the synthetic generator (image size, contrast, artefact ranges).
        synthetic_fraction: probability that a training sample is synthetic (when both are
            given; 1.0 is forced when there are no real cases).
        synthetic_fraction_start: a curriculum from visible to invisible contrasts: the share
            of synthetic samples at the first iteration, falling linearly to
            ``synthetic_fraction`` over the first ``curriculum_share`` of the run (with
            random-contrast synthesis, every boundary is visible in those samples; the cases'
            contrasts, e.g. low-field T2, come in as it falls); ``None``: no curriculum.
        curriculum_share: the share of the iterations over which the curriculum runs.
        synthetic_voxel_mm: (low, high): resample each synthetic image (made on a 1 mm grid)
            to an isotropic voxel size drawn from this range; ``None`` keeps 1 mm.
        synthetic_pool: 0: every synthetic sample is a freshly generated box (the generator
            costs most of a CPU iteration); N > 0: samples draw one of N seeded boxes, each
            generated (and resampled) once, when first drawn, and kept in memory (about 1 MB
            each); every draw gets its own patch and augmentation. Deterministic: box k is the
            same whatever the order of draws, so resumed runs repeat it.
        val_fraction: share of real cases held out for validation.
        n_val_synthetic: validation volumes generated when there are no real validation cases.
        seed: seeds weights, data sampling and augmentation.
        patch_size: training patch (D, H, W); multiples of 16.
        batch_size: global batch (split over processes in distributed training).
        iterations: number of training iterations.
        lr, momentum, weight_decay: SGD settings of each VNet.
        lr_schedule: ``cosine`` (one cosine over the run) or ``cosine_per_epoch`` (released).
        critic_lr, critic_weight_decay: AdamW settings of the critic.
        val_every: validate (and save ``last.pt``) every this many iterations.
        val_max_voxels: validate whole (padded) volumes up to this size, else sliding window.
        recipe: ``paper`` or ``released`` (see the module docstring).
        model: network width and the view / preprocessing settings (saved with checkpoints).
        loss: weights and switches of each loss term.
        augment: augmentation settings; ``use_augmentation`` switches it.
        train_second_view: network 2 sees the frequency view in training (``False``: released).
        single_view: train network 1 only (ablation; no mutual loss).
        foreground_fraction: probability that a patch is centred on a random foreground voxel.
        amp: mixed precision: float16 autocast with loss scaling on CUDA, bfloat16 autocast on
            a CPU that computes it natively (``models.precision.autocast_dtype``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        num_workers: DataLoader worker processes.
        cache_cases: keep loaded (cropped, normalised) cases in memory.
        sync_batchnorm: use SyncBatchNorm across processes on CUDA (batch norm statistics of
            the global batch); on CPU batch-norm statistics are per process.
        init1, init2, init_critic: checkpoints to start from (ours, or released plain state
            dicts); ``init1`` alone initialises both VNets.
        init_family: the contrast family of ``init1`` to start from when it is a bundle with
            several (e.g. ``t1`` of the shipped model); None = its first pair.
        out_dir: parent folder of run folders; name: run folder name (default: time stamp).
        plan: what ``train``'s planner chose and why (``training.plan``); empty when the
            settings were not planned (``--config`` or ``--no-plan``).
    """

    data: tuple[str, ...] = ()
    unsided: tuple[str, ...] = ()
    unsided_fraction: float = 0.0
    unsided_voxel_mm: float | None = None
    unsided_invert_prob: float = 0.0
    unsided_remap_prob: float = 0.0
    unsided_side: str = "resolve"
    synthetic: str | None = None
    synthetic_fraction: float = 0.0
    synthetic_fraction_start: float | None = None
    curriculum_share: float = 0.5
    synth: SynthConfig = field(default_factory=SynthConfig)
    synthetic_voxel_mm: tuple[float, float] | None = None
    synthetic_pool: int = 0
    val_fraction: float = 0.2
    n_val_synthetic: int = 4
    seed: int = 1337
    patch_size: tuple[int, int, int] = (128, 128, 128)
    batch_size: int = 8
    iterations: int = 30000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    critic_lr: float = 1e-4
    critic_weight_decay: float = 0.01
    val_every: int = 150
    val_max_voxels: int = 256**3
    recipe: str = "paper"
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    use_augmentation: bool = True
    train_second_view: bool = True
    single_view: bool = False
    foreground_fraction: float = 0.5
    amp: bool = True
    device: str = "auto"
    num_workers: int = 2
    cache_cases: bool = True
    sync_batchnorm: bool = True
    init1: str | None = None
    init2: str | None = None
    init_critic: str | None = None
    init_family: str | None = None
    out_dir: str = "runs"
    name: str | None = None
    plan: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from lofihippseg.errors import LoFiError

        if self.recipe not in RECIPES:
            raise LoFiError(f"unknown recipe {self.recipe!r}; expected one of {RECIPES}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise LoFiError(f"unknown lr_schedule {self.lr_schedule!r}; expected {LR_SCHEDULES}")
        if len(self.patch_size) != 3 or any(int(p) % 16 or int(p) <= 0 for p in self.patch_size):
            raise LoFiError(f"patch size {self.patch_size} must be three positive multiples of 16")
        if not 0.0 <= self.lr < float("inf"):  # also refuses NaN
            raise LoFiError(f"learning rate must be a finite number >= 0, got {self.lr}")
        if self.synthetic_pool < 0:
            raise LoFiError(f"synthetic_pool must be >= 0, got {self.synthetic_pool}")
        if self.batch_size < 1 or self.iterations < 1 or self.val_every < 1:
            raise LoFiError("batch size, iterations and val_every must be >= 1")
        fractions = (self.synthetic_fraction, self.foreground_fraction, self.unsided_fraction)
        probs = (self.unsided_invert_prob, self.unsided_remap_prob)
        if not all(0.0 <= f <= 1.0 for f in fractions + probs):
            raise LoFiError(
                "synthetic_fraction, foreground_fraction, unsided_fraction, "
                "unsided_invert_prob and unsided_remap_prob must be in [0, 1]"
            )
        start = self.synthetic_fraction_start
        if start is not None and not 0.0 <= start <= 1.0:
            raise LoFiError(f"synthetic_fraction_start must be in [0, 1], got {start}")
        if not 0.0 < self.curriculum_share <= 1.0:
            raise LoFiError(f"curriculum_share must be in (0, 1], got {self.curriculum_share}")
        if self.unsided_side not in UNSIDED_SIDES:
            raise LoFiError(
                f"unknown unsided_side {self.unsided_side!r}; expected one of {UNSIDED_SIDES}"
            )
        if self.unsided_voxel_mm is not None and not 0.1 <= self.unsided_voxel_mm <= 10.0:
            raise LoFiError(f"unsided_voxel_mm {self.unsided_voxel_mm}: expected 0.1-10 mm")
        voxels = self.synthetic_voxel_mm
        if voxels is not None and not (len(voxels) == 2 and 0.5 <= voxels[0] <= voxels[1] <= 5):
            raise LoFiError(
                f"synthetic_voxel_mm {voxels}: expected two sizes, 0.5 <= low <= high <= 5 mm"
            )
        if any(isinstance(k, str) for k in self.synth.tissue_of_label):  # after a JSON round trip
            table = {int(k): v for k, v in self.synth.tissue_of_label.items()}
            object.__setattr__(
                self, "synth", dataclasses.replace(self.synth, tissue_of_label=table)
            )
        if not self.data and not self.unsided and self.synthetic is None:
            raise LoFiError(
                "no training data: give DATA (labelled cases), --unsided DIR and/or --synthetic DIR"
            )

    @classmethod
    def released(cls, **overrides) -> TrainConfig:
        """The released recipe's settings, with ``overrides`` applied on top.

        Example:
            >>> TrainConfig.released(data=("lisa/",)).loss.train_critic
            False
        """
        return released_recipe(cls(**overrides))

    def synthetic_fraction_at(self, iteration: int) -> float:
        """The share of synthetic samples at ``iteration`` (the curriculum, when there is one).

        Example:
            >>> c = TrainConfig(synthetic="packaged", synthetic_fraction=0.2,
            ...                 synthetic_fraction_start=1.0, iterations=100)
            >>> [round(c.synthetic_fraction_at(i), 2) for i in (0, 25, 50, 99)]
            [1.0, 0.6, 0.2, 0.2]
        """
        if self.synthetic_fraction_start is None:
            return self.synthetic_fraction
        done = min(1.0, iteration / max(1.0, self.curriculum_share * self.iterations))
        start, end = self.synthetic_fraction_start, self.synthetic_fraction
        return start + (end - start) * done

    def synth_config(self) -> SynthConfig:
        """The synthetic generator's settings."""
        return self.synth

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def released_recipe(config: TrainConfig) -> TrainConfig:
    """Turn a config into the released recipe (keeps data, sizes, seeds and output settings).

    Example:
        >>> released_recipe(TrainConfig(data=("lisa/",))).model.view_mode
        'legacy'
    """
    model = dataclasses.replace(config.model, view_mode="legacy", recipe="released")
    loss = dataclasses.replace(config.loss, use_gate=False, train_critic=False, mutual_rampup=0.0)
    return dataclasses.replace(
        config,
        recipe="released",
        model=model,
        loss=loss,
        lr_schedule="cosine_per_epoch",
        train_second_view=False,
        use_augmentation=False,
        foreground_fraction=0.0,
    )
