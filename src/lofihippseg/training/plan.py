"""Plan a training recipe from the data and the device (as nnU-Net's fingerprint does).

``fingerprint_cases`` reads the training cases once (median crop shape and spacing, intensity
tails, hippocampus extent); ``device_budget`` reads the device (CPU threads and free memory, or
the GPU's memory); ``plan_recipe`` turns both into patch size, batch, width, intensity clipping,
learning rate and, on a CPU, a number of iterations that fits a time budget. Every choice comes
with its reason (printed by ``train`` and saved in the run's ``config.json`` as ``plan``).
``estimate_memory_gb`` and ``check_fits`` stop a run that cannot fit before it starts.

The memory model was measured with ``benchmarks/bench_train.py`` on the CPU (peak resident
memory of one process, fp32, two VNets and their optimisers): about 160 bytes per voxel of the
batch per base filter, plus about 4.8 kB per voxel of the batch for a critic run on every voxel
(scaled by ``critic_fraction``), plus 0.5 GB for the process itself.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import numpy as np

from lofihippseg.errors import LoFiError
from lofihippseg.models.precision import precision_name

BYTES_PER_VOXEL_FILTER = 160.0  # two VNets + SGD state, fp32 training, per voxel x filter
CRITIC_BYTES_PER_VOXEL = 4800.0  # full-resolution critic passes, per voxel of the batch
BASE_GB = 0.5  # the process itself (torch, data)
AMP_FACTOR = 0.6  # fp16 activations under autocast
MEMORY_SHARE = 0.8  # use at most this share of the free memory
CPU_SECONDS_REF = 1.2  # s/iteration measured at 48x64x48 x 4, 8 filters, one thread
CPU_WORK_REF = 48 * 64 * 48 * 4 * 8
RELEASED_PATCH = 128
MAX_FINGERPRINT_CASES = 40


@dataclass(frozen=True)
class Fingerprint:
    """What the planner needs to know about a dataset.

    Attributes:
        n_cases: training cases looked at.
        median_shape: median shape of the non-zero crops (voxels, canonical order).
        median_spacing: median voxel size (mm).
        tail_ratio: median over cases of ``max / p99.5`` of the non-zero intensities (large when
            a few voxels are far brighter than the rest).
        foreground_extent: median extent (voxels) of the hippocampus labels' bounding box.
    """

    n_cases: int
    median_shape: tuple[int, int, int]
    median_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    tail_ratio: float = 1.0
    foreground_extent: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class DeviceBudget:
    """The machine a run will use: ``kind`` cpu or cuda, CPU threads, memory in GB."""

    kind: str
    threads: int
    memory_gb: float
    name: str = ""


@dataclass(frozen=True)
class Plan:
    """Planned settings and why (``None`` leaves the config's value)."""

    patch_size: tuple[int, int, int]
    batch_size: int
    n_filters: int
    clip_percentiles: tuple[float, float] | None
    lr: float
    iterations: int | None
    val_every: int | None
    estimated_memory_gb: float
    estimated_seconds_per_iteration: float | None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """The plan as readable lines."""
        head = (
            f"plan: patch {'x'.join(map(str, self.patch_size))}, batch {self.batch_size}, "
            f"{self.n_filters} filters, lr {self.lr:g}, clip {self.clip_percentiles}, "
            f"iterations {self.iterations or 'as configured'}; "
            f"~{self.estimated_memory_gb:.1f} GB"
        )
        if self.estimated_seconds_per_iteration:
            head += f", ~{self.estimated_seconds_per_iteration:.2f} s/iteration"
        return "\n".join([head] + [f"  - {r}" for r in self.reasons])


def _round_up16(n: float) -> int:
    return max(16, int(math.ceil(n / 16.0)) * 16)


def fingerprint_cases(cases: list, max_cases: int = MAX_FINGERPRINT_CASES) -> Fingerprint:
    """Fingerprint of labelled cases (``io.datasets.Case``), at most ``max_cases`` of them.

    Example:
        >>> fingerprint_cases(cases).median_shape  # doctest: +SKIP
        (36, 50, 36)
    """
    from lofihippseg.io.nifti import load_image, load_label
    from lofihippseg.preprocessing.crop import nonzero_bbox

    if not cases:
        raise LoFiError("no training cases to plan from")
    step = max(1, len(cases) // max_cases)
    chosen = cases[::step][:max_cases]
    shapes, spacings, tails, extents = [], [], [], []
    for case in chosen:
        vol = load_image(case.image)
        box = nonzero_bbox(vol.data)
        shapes.append([s.stop - s.start for s in box])
        spacings.append(vol.spacing)
        values = np.abs(vol.data[vol.data != 0])
        if values.size:
            p995 = float(np.percentile(values, 99.5))
            tails.append(float(values.max()) / p995 if p995 > 0 else 1.0)
        if case.label is not None:
            lab = load_label(case.label, reference=vol)
            idx = np.argwhere(lab.data > 0)
            if len(idx):
                extents.append(idx.max(0) - idx.min(0) + 1)

    def med(rows, cast):
        return tuple(cast(median(r[i] for r in rows)) for i in range(3)) if rows else (0, 0, 0)

    return Fingerprint(
        n_cases=len(chosen),
        median_shape=med(shapes, int),
        median_spacing=med(spacings, float),
        tail_ratio=float(median(tails)) if tails else 1.0,
        foreground_extent=med(extents, int),
    )


def synthetic_fingerprint(output_shape: tuple[int, int, int] | None) -> Fingerprint:
    """Fingerprint of on-the-fly synthetic whole heads (1 mm, in [0, 1])."""
    shape = tuple(output_shape or (160, 192, 176))
    return Fingerprint(n_cases=0, median_shape=shape, foreground_extent=(90, 45, 40))


def _cpu_memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        return 8.0


def device_budget(device: str = "auto") -> DeviceBudget:
    """The budget of ``device`` (``auto``: the first GPU if there is one, else the CPU)."""
    import torch

    from lofihippseg.training.distributed import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return DeviceBudget("cuda", torch.get_num_threads(), props.total_memory / 2**30, props.name)
    return DeviceBudget("cpu", torch.get_num_threads(), _cpu_memory_gb(), "cpu")


def estimate_memory_gb(
    patch_size, batch_size: int, n_filters: int, critic_fraction: float = 0.05,
    uses_critic: bool = True, amp: bool = False,
) -> float:  # fmt: skip
    """Peak training memory (GB) of one process by the measured model (module docstring).

    Example:
        >>> round(estimate_memory_gb((128, 128, 128), 8, 16, 1.0), 1)
        123.6
    """
    voxels = float(np.prod(patch_size)) * batch_size
    nets = voxels * n_filters * BYTES_PER_VOXEL_FILTER * (AMP_FACTOR if amp else 1.0)
    critic = voxels * CRITIC_BYTES_PER_VOXEL * critic_fraction if uses_critic else 0.0
    return BASE_GB + (nets + critic) / 2**30


def estimate_cpu_seconds(patch_size, batch_size: int, n_filters: int, threads: int) -> float:
    """Seconds per iteration on a CPU, scaled from the measured reference (module docstring)."""
    work = float(np.prod(patch_size)) * batch_size * n_filters**1.5 / 8**0.5
    return CPU_SECONDS_REF * work / CPU_WORK_REF / max(1.0, threads) ** 0.7


# fine-tuning trained weights: the shipped v5 collapsed within 100-500 iterations at 0.02 (its
# own training and the demo's; release/MODEL_CARD.md) and trains stably at 0.005
FINE_TUNE_LR = 0.005


def plan_recipe(
    fp: Fingerprint,
    budget: DeviceBudget,
    critic_fraction: float = 0.05,
    time_budget_minutes: float | None = None,
    amp: bool = True,
    fine_tune: bool = False,
) -> Plan:
    """Choose patch, batch, width, clipping, learning rate (and CPU iterations).

    ``fine_tune`` (the run starts from trained weights, ``init1``): lr ``FINE_TUNE_LR``.

    Rules: the patch covers the median crop (rounded up to multiples of 16), at most 128 per
    axis (the released patch) on a GPU and at most 64 per axis and 48x64x48 voxels on a CPU;
    the width is the released 16 on a GPU and 8 on a CPU (about 3x more iterations in the same
    time); the batch is the released 8 where memory allows, else the largest that fits (GPU),
    or 4 for small patches and 2 for larger ones (CPU); heavy-tailed intensities (median
    ``max / p99.5`` above 1.5) are clipped at percentiles 0.5-99.5 before min-max
    normalisation; the learning rate is 0.05 when one patch holds a whole crop (measured best
    on the MSD crops) and the released 0.01 otherwise; on a CPU the iterations fill
    ``time_budget_minutes`` (default 20).

    Example:
        >>> fp = Fingerprint(n_cases=200, median_shape=(36, 50, 36))
        >>> plan_recipe(fp, DeviceBudget("cpu", 2, 20.0)).patch_size
        (48, 64, 48)
    """
    gpu = budget.kind == "cuda"
    reasons = [f"precision: {precision_name(budget.kind, amp)}"]
    amp = amp and gpu  # the memory model's fp16 activations
    shape = fp.median_shape
    patch = [_round_up16(s) for s in shape]
    cap = RELEASED_PATCH if gpu else 64
    patch = [min(p, cap) for p in patch]
    if not gpu:
        while np.prod(patch) > 48 * 64 * 48 and max(patch) > 48:
            patch[int(np.argmax(patch))] -= 16
    patch_t = (patch[0], patch[1], patch[2])
    whole = all(p >= s for p, s in zip(patch_t, shape, strict=True))
    reasons.append(
        f"median crop {'x'.join(map(str, shape))} voxels at "
        f"{'x'.join(f'{s:.2g}' for s in fp.median_spacing)} mm over {fp.n_cases} cases: patch "
        f"{'x'.join(map(str, patch_t))} ("
        + ("holds a whole crop" if whole else f"capped at {cap} per axis on {budget.kind}")
        + ")"
    )
    n_filters = 16 if gpu else 8
    reasons.append(
        "16 filters (released width) on a GPU"
        if gpu
        else "8 filters on a CPU (about 3x more iterations than 16 in the same time)"
    )
    limit = budget.memory_gb * MEMORY_SHARE
    if gpu:
        batch = 8
        while batch > 1 and estimate_memory_gb(patch_t, batch, n_filters, critic_fraction,
                                               amp=amp) > limit:  # fmt: skip
            batch -= 1
        reasons.append(
            f"batch {batch}: the released 8 where {budget.memory_gb:.0f} GB allows, "
            f"else the largest that fits"
        )
    else:
        batch = 4 if np.prod(patch_t) <= 48 * 64 * 48 else 2
        reasons.append(f"batch {batch} on a CPU (time per iteration)")
    memory = estimate_memory_gb(patch_t, batch, n_filters, critic_fraction, amp=amp)
    clip = (0.5, 99.5) if fp.tail_ratio > 1.5 else None
    reasons.append(
        f"intensity tails: median max/p99.5 = {fp.tail_ratio:.2f} -> "
        + ("clip at percentiles 0.5-99.5" if clip else "no clipping")
    )
    lr = FINE_TUNE_LR if fine_tune else 0.05 if whole else 0.01
    if fine_tune:
        reasons.append(f"lr {lr:g}: fine-tuning trained weights (0.02 broke the shipped model)")
    else:
        reasons.append(
            f"lr {lr:g}: "
            + ("one patch holds a whole crop (MSD benchmark)" if whole else "released")
        )
    iterations = val_every = seconds = None
    if not gpu:
        seconds = estimate_cpu_seconds(patch_t, batch, n_filters, budget.threads)
        minutes = 20.0 if time_budget_minutes is None else time_budget_minutes
        iterations = max(100, int(minutes * 60 / (seconds * 1.1)))  # 10 % for validation
        val_every = int(min(500, max(50, iterations // 10)))
        reasons.append(
            f"CPU, {budget.threads} thread(s): ~{seconds:.2f} s/iteration, {iterations} "
            f"iterations fill ~{minutes:g} min (give --iterations or --time-budget for more)"
        )
    elif time_budget_minutes is not None:
        reasons.append("GPU: the configured iterations (time budget applies on CPU only)")
    return Plan(patch_t, batch, n_filters, clip, lr, iterations, val_every, memory, seconds,
                tuple(reasons))  # fmt: skip


def with_measured_time(
    plan: Plan, seconds: float, threads: int, time_budget_minutes: float | None = None
) -> Plan:
    """The plan with its CPU iterations recomputed from ``seconds`` per iteration measured on
    this machine (``training.timing.time_iterations``) instead of the constant model.

    Example:
        >>> fp = Fingerprint(n_cases=200, median_shape=(36, 50, 36))
        >>> plan = plan_recipe(fp, DeviceBudget("cpu", 2, 20.0))
        >>> with_measured_time(plan, 1.34, 2).iterations  # 20 min at 1.34 s + 10 %
        814
    """
    if plan.iterations is None:  # a GPU plan: the configured iterations
        return plan
    minutes = 20.0 if time_budget_minutes is None else time_budget_minutes
    iterations = max(100, int(minutes * 60 / (seconds * 1.1)))  # 10 % for validation
    val_every = int(min(500, max(50, iterations // 10)))
    modelled = plan.estimated_seconds_per_iteration or 0.0
    reasons = tuple(r for r in plan.reasons if not r.startswith("CPU, ")) + (
        f"CPU, {threads} thread(s): measured {seconds:.2f} s/iteration here (a few real "
        f"iterations timed at the start; the constant model said {modelled:.2f}), {iterations} "
        f"iterations fill ~{minutes:g} min (give --iterations or --time-budget for more)",
    )
    return dataclasses.replace(
        plan, iterations=iterations, val_every=val_every,
        estimated_seconds_per_iteration=seconds, reasons=reasons,
    )  # fmt: skip


def check_fits(config, budget: DeviceBudget) -> float:
    """Raise a clear error when a config cannot fit in the device's memory; returns the GB.

    Raises:
        LoFiError: the estimate exceeds 80 % of the free memory.
    """
    loss = config.loss
    uses_critic = loss.use_adversarial or loss.train_critic or (loss.use_mutual and loss.use_gate)
    gpu = budget.kind == "cuda"
    need = estimate_memory_gb(
        config.patch_size, config.batch_size, config.model.n_filters,
        loss.critic_fraction, uses_critic, amp=config.amp and gpu,
    )  # fmt: skip
    if need > budget.memory_gb * MEMORY_SHARE:
        raise LoFiError(
            f"patch {'x'.join(map(str, config.patch_size))} x batch {config.batch_size} with "
            f"{config.model.n_filters} filters needs about {need:.1f} GB, more than "
            f"{MEMORY_SHARE:.0%} of the {budget.memory_gb:.1f} GB free on {budget.kind}: "
            f"use a smaller --patch/--batch/--n-filters, or drop them to let train plan"
        )
    return need


def apply_plan(config, plan: Plan, explicit: set[str]):
    """The config with the plan's values for every setting not given explicitly.

    ``explicit`` names the settings the user chose (``patch_size``, ``batch_size``,
    ``n_filters``, ``clip_percentiles``, ``lr``, ``iterations``, ``val_every``).
    """
    top = {}
    for key in ("patch_size", "batch_size", "lr", "iterations", "val_every"):
        value = getattr(plan, key)
        if key not in explicit and value is not None:
            top[key] = value
    model = {}
    if "n_filters" not in explicit:
        model["n_filters"] = plan.n_filters
    if "clip_percentiles" not in explicit:
        model["clip_percentiles"] = plan.clip_percentiles
    return config.replace(**top, model=dataclasses.replace(config.model, **model))


def plan_for_config(config, time_budget_minutes: float | None = None) -> tuple[Plan, DeviceBudget]:
    """Fingerprint the config's data (or its synthetic generator) and plan for its device."""
    from lofihippseg.training.data import collect_cases, collect_unsided

    budget = device_budget(config.device)
    if config.data or config.unsided:
        train_cases = collect_cases(config)[0] or collect_unsided(config)[0]
        fp = fingerprint_cases(train_cases)
    else:
        fp = synthetic_fingerprint(config.synth.output_shape)
    plan = plan_recipe(
        fp,
        budget,
        config.loss.critic_fraction,
        time_budget_minutes,
        config.amp,
        fine_tune=config.init1 is not None,
    )
    return plan, budget
