"""Training the hippocampus localiser: a small VNet that sees the whole head at 4 mm.

The fine networks then run only in a box around each hippocampus (``inference.roi``). The
localiser sees every scan exactly as inference prepares it (the fine model's crop and
normalisation, averaged onto the coarse grid) and learns, per side, which coarse voxels are at
least ``target_fraction`` hippocampus. Its training is cheap: a 48 x 64 x 64 grid at 4 mm holds
a 192 x 256 x 256 mm head, so one iteration of a batch of 8 costs about as much as one
small-crop iteration of the fine networks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lofihippseg.io.atomic import atomic_path
from lofihippseg.io.datasets import Case
from lofihippseg.io.nifti import load_image, load_label
from lofihippseg.models.precision import autocast_dtype, precision_name
from lofihippseg.models.registry import LocaliserSpec, ModelSpec, build_localiser, safe_torch_load
from lofihippseg.models.vnet import SIZE_MULTIPLE
from lofihippseg.preprocessing.prepare import crop_and_normalise
from lofihippseg.preprocessing.resample import coarse_targets, localiser_input
from lofihippseg.training.losses import soft_dice_loss
from lofihippseg.training.validation import probabilities


@dataclass
class LocaliserConfig:
    """How the localiser is trained.

    Attributes:
        size: coarse patch (voxels of ``spec.mm``) each head is placed in (random position;
            longer heads are randomly cropped).
        batch_size: heads per iteration.
        iterations: optimiser steps.
        lr: AdamW learning rate (cosine to 0).
        target_fraction: a coarse voxel is hippocampus when at least this fraction of it is.
        target_dilation: coarse voxels the targets are grown by (more positives to learn from;
            the boxes get a little larger).
        gamma_log_std: random gamma of the normalised image (log-normal exponent).
        pos_weight: weight of hippocampus voxels in the cross-entropy (they are about 1 in
            1,000 coarse voxels; without it the network first learns to say "none" everywhere).
        seed: random seed.
        val_every: iterations between validations (and checkpoints).
        amp: bfloat16 autocast on a CPU that computes it natively, float16 on CUDA
            (``models.precision.autocast_dtype``); off: float32.
    """

    size: tuple[int, int, int] = (48, 64, 64)
    batch_size: int = 8
    iterations: int = 1000
    lr: float = 3e-3
    target_fraction: float = 0.1
    target_dilation: int = 1
    gamma_log_std: float = 0.3
    pos_weight: float = 20.0
    seed: int = 0
    val_every: int = 50
    amp: bool = True

    def __post_init__(self) -> None:
        if any(n % SIZE_MULTIPLE for n in self.size):
            raise ValueError(f"localiser patch {self.size} must be multiples of {SIZE_MULTIPLE}")


@dataclass
class CoarseCase:
    """One case on the coarse grid: image (d, h, w) and binary targets (2, d, h, w)."""

    case_id: str
    image: torch.Tensor
    target: torch.Tensor


def prepare_case(
    case: Case, fine: ModelSpec, spec: LocaliserSpec, fraction: float, dilation: int = 0
) -> CoarseCase:
    """Crop and normalise as inference does, then average onto the localiser's grid."""
    volume = load_image(case.image)
    if case.label is None:
        raise ValueError(f"{case.image}: the localiser needs a label map")
    label = load_label(case.label, volume)
    crop, box = crop_and_normalise(volume.data, fine.crop_margin, fine.clip_percentiles)
    image = localiser_input(torch.from_numpy(crop), volume.spacing, spec.mm)
    target = (coarse_targets(label.data[box], volume.spacing, spec.mm) >= fraction).numpy()
    if dilation:
        target = np.stack([ndimage.binary_dilation(t, iterations=dilation) for t in target])
    return CoarseCase(case.case_id, image, torch.from_numpy(target).float())


def place(array: torch.Tensor, size: Sequence[int], rng: np.random.Generator) -> torch.Tensor:
    """Put the last three axes of ``array`` at a random position of a zero canvas of ``size``
    (a random crop along axes that are longer than the canvas)."""
    lead = array.shape[:-3]
    out = array.new_zeros((*lead, *size))
    src, dst = [], []
    for n, m in zip(array.shape[-3:], size, strict=True):
        if n <= m:
            o = int(rng.integers(0, m - n + 1))
            src.append(slice(0, n))
            dst.append(slice(o, o + n))
        else:
            o = int(rng.integers(0, n - m + 1))
            src.append(slice(o, o + m))
            dst.append(slice(0, m))
    out[(..., *dst)] = array[(..., *src)]
    return out


def sample_batch(
    cases: Sequence[CoarseCase], config: LocaliserConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (B, 1, *size) of heads and targets (B, 2, *size).

    Augmentation: left-right flip with the two target channels swapped (axis 0 is the
    subject's left-right axis in canonical order), random gamma, random position.
    """
    images, targets = [], []
    for _ in range(config.batch_size):
        case = cases[int(rng.integers(len(cases)))]
        both = torch.cat([case.image[None], case.target])  # (3, d, h, w)
        both = place(both, config.size, rng)
        image, target = both[:1], both[1:]
        if rng.random() < 0.5:
            image, target = image.flip(1), target.flip(1)[[1, 0]]
        gamma = float(np.exp(rng.normal(0.0, config.gamma_log_std)))
        images.append(image.clamp(min=0) ** gamma)
        targets.append(target)
    return torch.stack(images), torch.stack(targets)


def localiser_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Soft Dice (per side, over the batch) plus cross-entropy with hippocampus up-weighted.

    Example:
        >>> y = torch.zeros(1, 2, 4, 4, 4); y[:, :, 1] = 1
        >>> good, unsure = localiser_loss(20 * (2 * y - 1), y, 20.0), localiser_loss(0 * y, y, 20.0)
        >>> bool(good < unsure)
        True
    """
    weight = torch.tensor(pos_weight, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=weight)
    return soft_dice_loss(logits, target) + bce


@torch.no_grad()
def coarse_dice(net: torch.nn.Module, cases: Sequence[CoarseCase]) -> float:
    """Mean Dice per side of the thresholded localiser output on ``cases`` (whole heads)."""
    net.eval()
    scores = []
    for case in cases:
        # a whole head at 4 mm is small: one pass (the patch is used only above max_voxels)
        probs = probabilities(net, case.image.numpy(), torch.device("cpu"), (64,) * 3, 2**31)
        for side in range(2):
            pred, true = probs[side] > 0.5, case.target[side] > 0.5
            denom = int(pred.sum() + true.sum())
            scores.append(2 * int((pred & true).sum()) / denom if denom else 1.0)
    net.train()
    return float(np.mean(scores)) if scores else float("nan")


def train_localiser(
    train: Sequence[Case],
    val: Sequence[Case],
    out: Path,
    fine: ModelSpec,
    spec: LocaliserSpec | None = None,
    config: LocaliserConfig | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train (or resume, from ``out/localiser_last.pt``) and write ``out/localiser.pt``.

    Returns:
        The path of ``localiser.pt``: ``{"localiser": {"spec": ..., "state": ...}}``.
    """
    spec, config = spec or LocaliserSpec(), config or LocaliserConfig()
    out.mkdir(parents=True, exist_ok=True)
    (out / "localiser_config.json").write_text(
        json.dumps(
            {"config": dataclasses.asdict(config), "spec": dataclasses.asdict(spec)}, indent=2
        )
    )
    torch.manual_seed(config.seed)
    net = build_localiser(spec)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    start, rng = 0, np.random.default_rng(config.seed)
    last = out / "localiser_last.pt"
    if last.is_file():
        state = safe_torch_load(last)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        start = int(state["iteration"])
        rng = np.random.default_rng([config.seed, start])
        log(f"resumed at iteration {start}")
    t = time.perf_counter()

    def prepare(c: Case) -> CoarseCase:
        return prepare_case(c, fine, spec, config.target_fraction, config.target_dilation)

    train_cases, val_cases = [prepare(c) for c in train], [prepare(c) for c in val]
    log(f"{len(train_cases)} training and {len(val_cases)} validation heads on the "
        f"{spec.mm:g} mm grid in {time.perf_counter() - t:.0f} s")  # fmt: skip
    net.train()
    dtype = autocast_dtype("cpu", config.amp)
    log(f"precision: {precision_name('cpu', config.amp)}")
    t = time.perf_counter()
    for it in range(start, config.iterations):
        lr = 0.5 * config.lr * (1 + math.cos(math.pi * it / config.iterations))
        for group in opt.param_groups:
            group["lr"] = lr
        image, target = sample_batch(train_cases, config, rng)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(image)
        loss = localiser_loss(logits.float(), target, config.pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = it + 1
        if done % config.val_every == 0 or done == config.iterations:
            dice = coarse_dice(net, val_cases)
            log(f"iteration {done}: loss {loss.item():.4f}, validation coarse Dice {dice:.3f}, "
                f"{(time.perf_counter() - t) / (done - start):.2f} s/iteration")  # fmt: skip
            _save({"net": net.state_dict(), "opt": opt.state_dict(), "iteration": done}, last)
    path = out / "localiser.pt"
    _save({"localiser": localiser_entry(spec, net.state_dict())}, path)
    return path


def _save(state: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def localiser_entry(spec: LocaliserSpec, state: dict) -> dict:
    """What a model bundle stores under ``"localiser"``."""
    return {"spec": dataclasses.asdict(spec), "state": state}
