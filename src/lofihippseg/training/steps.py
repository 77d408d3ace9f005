"""One training iteration: both VNets (SGD) and the critic (AdamW), AMP on CUDA.

Network 1 sees the image; network 2 sees the frequency view (``batch["view2"]``) or, in the
released recipe, the same image. Network k minimises
``supervised + alpha * mutual + mu * adversarial`` (terms switchable in :class:`LossConfig`);
then the critic takes its own step on ``critic_loss`` (paper), or none (released).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from lofihippseg.errors import LoFiError
from lofihippseg.models.precision import autocast_dtype
from lofihippseg.training.critic_sampling import (
    critic_on_points,
    gate_logits,
    random_index,
    sample_voxels,
)
from lofihippseg.training.distributed import DistContext, any_true, average_gradients, sum_reducer
from lofihippseg.training.losses import (
    LossConfig,
    critic_loss,
    generator_adversarial_loss,
    mutual_loss,
    one_hot_targets,
    supervised_loss,
)
from lofihippseg.training.unsided import free_other_channel, resolve_unsided

log = logging.getLogger(__name__)


class NonFiniteLoss(LoFiError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything a step changes (the VNets may be DDP-wrapped)."""

    vnet1: nn.Module
    vnet2: nn.Module
    critic: nn.Module
    opt1: torch.optim.Optimizer
    opt2: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    sched1: torch.optim.lr_scheduler.LRScheduler
    sched2: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def lr_factor(schedule: str, iterations: int, period: int):
    """Multiplier of the base rate at step t (for ``LambdaLR``).

    ``cosine``: one half-cosine from 1 to 0 over the run. ``cosine_per_epoch`` (released): the
    closed form of ``CosineAnnealingLR(T_max=period)`` stepped every iteration, which rises again
    after ``period`` steps, so it cycles with period ``2 * period``.

    Example:
        >>> f = lr_factor("cosine", 100, 0); f(0), round(f(50), 3), f(100)
        (1.0, 0.5, 0.0)
    """
    total = max(int(period if schedule == "cosine_per_epoch" else iterations), 1)
    if schedule == "cosine_per_epoch":
        return lambda t: 0.5 * (1.0 + math.cos(math.pi * t / total))
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _critic_logits(
    critic: nn.Module, probs: torch.Tensor, fraction: float, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic logits and matching probabilities: every voxel, or a uniform sample of them.

    Returns ``(logits, probs)`` with equal shapes: (B, C, ...) when ``fraction`` is 1, else
    (N, C) rows of sampled voxels. Per-voxel losses averaged over either are the same in
    expectation (``training.critic_sampling``).
    """
    if fraction >= 1.0:
        return critic(probs), probs
    points = sample_voxels(probs, random_index(probs, fraction, gen))
    return critic_on_points(critic, points), points


def _gate(
    critic: nn.Module, probs: torch.Tensor, fraction: float, gen: torch.Generator | None = None
) -> torch.Tensor:
    """The critic's logits on ``probs`` at every voxel, for the mutual loss's gate (no grad)."""
    with torch.no_grad():
        if fraction >= 1.0:
            return critic(probs.detach())
        return gate_logits(critic, probs.detach(), random_index(probs, fraction, gen))


def _network_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    other_probs: torch.Tensor | None,
    critic: nn.Module | None,
    cfg: LossConfig,
    reduce,
    terms: dict,
    tag: str,
    mutual_scale: float = 1.0,
    gen: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss of one network; adds its terms (as tensors) to ``terms``. Called outside autocast:
    the terms are float32 whatever dtype the network ran in (bfloat16's 8-bit mantissa
    overflows or cancels in sums over a patch)."""
    logits = logits.float()
    loss = supervised_loss(logits, target, cfg, reduce, weight)
    terms[f"sup{tag}"] = loss.detach()
    if cfg.use_mutual and other_probs is not None:
        gate = None if critic is None else _gate(critic, other_probs, cfg.critic_fraction, gen)
        mutual = mutual_loss(logits, other_probs, gate, cfg.gate_threshold, gated=cfg.use_gate)
        terms[f"mutual{tag}"] = mutual.detach()
        loss = loss + cfg.mutual_weight * mutual_scale * mutual
    if cfg.use_adversarial and critic is not None:
        critic_logits, _ = _critic_logits(
            critic, torch.sigmoid(logits.float()), cfg.critic_fraction, gen
        )
        adv = generator_adversarial_loss(critic_logits)
        terms[f"adv{tag}"] = adv.detach()
        loss = loss + cfg.adversarial_weight * adv
    return loss


def train_step(
    state: TrainState,
    batch: dict[str, torch.Tensor],
    cfg: LossConfig,
    ctx: DistContext | None = None,
    amp: bool = False,
    single_view: bool = False,
    mutual_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Run one iteration on this process's part of the global batch.

    Args:
        state: networks, optimisers, schedulers, grad scaler.
        batch: ``image`` (B, 1, D, H, W), ``label`` (B, D, H, W), optional ``view2``.
        cfg: loss weights and switches.
        ctx: distributed context (device, ranks).
        amp: mixed precision (``models.precision.autocast_dtype``): float16 autocast with
            loss scaling on CUDA, bfloat16 autocast on a CPU that computes it natively.
        single_view: train network 1 only.
        mutual_scale: ramp-up factor of the mutual weight (see ``LossConfig.mutual_scale``).
        generator: draws the critic's voxel samples (on the training device); the loop seeds
            one per iteration so that resumed runs repeat them.

    Returns:
        The losses (floats) and the learning rate.

    Raises:
        NonFiniteLoss: a NaN/inf loss on any process (nothing is updated).
    """
    ctx = ctx or DistContext()
    device = ctx.device
    image = batch["image"].to(device, non_blocking=True)
    view2 = batch["view2"].to(device, non_blocking=True) if "view2" in batch else image
    label = batch["label"].to(device, non_blocking=True)
    reduce = sum_reducer(ctx)
    critic = state.critic if cfg.needs_critic else None
    dtype = autocast_dtype(device.type, amp)

    def forward(dtype: torch.dtype | None):
        """Both networks and their losses under autocast to ``dtype`` (None: float32)."""
        terms: dict[str, torch.Tensor] = {}
        _set_requires_grad(state.critic, False)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits1 = state.vnet1(image)
            logits2 = None if single_view else state.vnet2(view2)
        p1 = torch.sigmoid(logits1.float())
        p2 = None if logits2 is None else torch.sigmoid(logits2.float())
        # crops without side: their hippocampus goes to the channel that overlaps it more
        resolved = resolve_unsided(label, p1 if p2 is None else p1 + p2)
        target = one_hot_targets(resolved)
        weight = free_other_channel(label, resolved) if cfg.unsided_other == "free" else None
        total = _network_loss(
            logits1, target, p2, critic, cfg, reduce, terms, "1", mutual_scale, generator, weight
        )
        if logits2 is not None:
            total = total + _network_loss(
                logits2, target, p1, critic, cfg, reduce, terms, "2", mutual_scale, generator,
                weight,
            )  # fmt: skip
        return total, terms, p1, p2, target

    optimisers = [state.opt1] + ([] if single_view else [state.opt2])
    nets = [state.vnet1] + ([] if single_view else [state.vnet2])

    def backward(dtype: torch.dtype | None):
        """Forward and backward under ``dtype``: (loss, terms, p1, p2, target, grads finite)."""
        total, terms, p1, p2, target = forward(dtype)
        if not any_true(not bool(torch.isfinite(total)), ctx):
            for opt in optimisers:
                opt.zero_grad(set_to_none=True)
            state.scaler.scale(total).backward()
        finite = _grads_finite(nets) if dtype is torch.bfloat16 else True
        return total, terms, p1, p2, target, not any_true(not finite, ctx)

    total, terms, p1, p2, target, grads_ok = backward(dtype)
    bad = not grads_ok or any_true(not bool(torch.isfinite(total)), ctx)
    if dtype is torch.bfloat16 and bad:
        # bfloat16's 8-bit mantissa can turn a tiny network's batch statistics or gradients
        # into NaN (seen on 2- and 4-filter toys): the iteration again in float32, before any
        # weight is updated
        log.warning("non-finite loss or gradient in bfloat16: the step is recomputed in float32")
        total, terms, p1, p2, target, _ = backward(None)
    amp = dtype is not None
    if any_true(not bool(torch.isfinite(total)), ctx):
        raise NonFiniteLoss(f"loss is {float(total.detach())}")

    for opt in optimisers:
        state.scaler.step(opt)

    if cfg.train_critic:
        _set_requires_grad(state.critic, True)
        state.opt_critic.zero_grad(set_to_none=True)
        fake = p1.detach() if p2 is None else torch.cat([p1.detach(), p2.detach()])
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=amp):
            real_logits, _ = _critic_logits(state.critic, target, cfg.critic_fraction, generator)
            fake_logits, _ = _critic_logits(state.critic, fake, cfg.critic_fraction, generator)
            loss_c = critic_loss(real_logits, fake_logits)
        terms["critic"] = loss_c.detach()
        state.scaler.scale(loss_c).backward()
        state.scaler.unscale_(state.opt_critic)
        average_gradients(state.critic, ctx)
        state.scaler.step(state.opt_critic)
    state.scaler.update()
    state.sched1.step()
    if not single_view:
        state.sched2.step()

    out = {"loss": float(total.detach())} | {k: float(v) for k, v in terms.items()}
    out["lr"] = state.opt1.param_groups[0]["lr"]
    return out


def _grads_finite(nets: list[nn.Module]) -> bool:
    """Whether every gradient of ``nets`` is finite (no NaN or infinity)."""
    return all(
        bool(torch.isfinite(p.grad).all())
        for net in nets
        for p in net.parameters()
        if p.grad is not None
    )
