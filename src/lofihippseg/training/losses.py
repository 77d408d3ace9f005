"""The losses of the dual-view method (METHOD.md, "The losses").

All functions take *logits* (network or critic outputs before the sigmoid) and use
``binary_cross_entropy_with_logits`` for numerical stability (also under fp16 autocast).
Targets are two-channel float maps: channel 0 = left (label 1), channel 1 = right (label 2).

Network k minimises ``supervised + alpha * mutual + mu * adversarial``; the critic minimises
:func:`critic_loss` with its own optimiser.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lofihippseg.errors import LoFiError

# Sums a tensor over processes (distributed training); identity on one process.
Reducer = Callable[[torch.Tensor], torch.Tensor]
UNSIDED_OTHER = ("empty", "free")


@dataclass(frozen=True)
class LossConfig:
    """Weights and switches of each loss term (defaults: the paper's values).

    Attributes:
        dice_weight: ``dl_w``, weight of the soft Dice term of the supervised loss.
        ce_weight: ``ce_w``, weight of the BCE term of the supervised loss.
        use_mutual: add the mutual (cross-view) loss.
        mutual_weight: ``alpha``.
        use_gate: gate the mutual loss per voxel by the critic's confidence (paper); ``False``
            reproduces the released code, where the mask multiplied an already averaged BCE.
        gate_threshold: ``t_m``; a voxel teaches when ``sigmoid(critic(p_o)) > t_m``.
        use_adversarial: add the generator-side adversarial loss.
        adversarial_weight: ``mu``.
        train_critic: give the critic its own AdamW step (``False``: released, untrained critic).
        dice_smooth: smoothing of the soft Dice.
        mutual_rampup: fraction of the run over which the mutual weight ramps up from 0 to
            ``alpha`` (sigmoid ramp ``exp(-5 (1 - t)^2)``, as in Co-BioNet). From scratch, two
            untrained networks otherwise teach each other "background everywhere" before they
            learn from the labels; 0 = no ramp (released, which started from a pretrained model).
        critic_fraction: share of voxels the critic's loss and the adversarial term are
            estimated on (uniform sample; the gate uses the sample's batch-norm statistics and a
            look-up table, see ``training.critic_sampling``); 1.0 runs the critic on every
            voxel, as the released code did (about 9x the cost of a critic-free step on a CPU).
        unsided_other: what the channel a crop without side was *not* given learns inside that
            crop's hippocampus (``training.unsided``): ``empty`` (trained to stay empty there:
            a crop holds one hippocampus) or ``free`` (not trained there: a crop of a right
            hippocampus that the prediction gave to the left channel does not teach the right
            channel that hippocampi are background).
        boundary_weight: extra weight of the cross-entropy on voxels within
            ``boundary_radius`` of a target's edge (``1 + boundary_weight`` there, 1 elsewhere):
            the networks' errors lie at the edge (the model card), where a whole-volume loss
            counts them little; 0 = every voxel alike (the paper).
        boundary_radius: how far from an edge, in voxels, a voxel counts as on it.
    """

    dice_weight: float = 1.0
    ce_weight: float = 0.2
    use_mutual: bool = True
    mutual_weight: float = 0.3
    use_gate: bool = True
    gate_threshold: float = 0.2
    use_adversarial: bool = True
    adversarial_weight: float = 0.01
    train_critic: bool = True
    dice_smooth: float = 1.0
    mutual_rampup: float = 0.2
    critic_fraction: float = 0.05
    unsided_other: str = "empty"
    boundary_weight: float = 0.0
    boundary_radius: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.critic_fraction <= 1.0:
            raise LoFiError(f"critic_fraction must be in (0, 1], got {self.critic_fraction}")
        if not 0.0 <= self.boundary_weight <= 100.0:
            raise LoFiError(f"boundary_weight must be in [0, 100], got {self.boundary_weight}")
        if not 1 <= self.boundary_radius <= 8:
            raise LoFiError(f"boundary_radius must be 1-8 voxels, got {self.boundary_radius}")
        if self.unsided_other not in UNSIDED_OTHER:
            raise LoFiError(
                f"unknown unsided_other {self.unsided_other!r}; expected one of {UNSIDED_OTHER}"
            )

    def mutual_scale(self, iteration: int, iterations: int) -> float:
        """Ramp-up factor in [0, 1] of the mutual weight at ``iteration`` (0-based).

        Example:
            >>> cfg = LossConfig(mutual_rampup=0.5)
            >>> round(cfg.mutual_scale(0, 100), 4), cfg.mutual_scale(50, 100)
            (0.0067, 1.0)
        """
        length = self.mutual_rampup * iterations
        if length <= 0:
            return 1.0
        t = min(max(iteration / length, 0.0), 1.0)
        return math.exp(-5.0 * (1.0 - t) ** 2)

    @property
    def needs_critic(self) -> bool:
        """Whether the critic is used at all (for the gate, the adversarial term or training)."""
        return self.use_adversarial or self.train_critic or (self.use_mutual and self.use_gate)


def critic_switches(on: bool) -> dict[str, bool]:
    """The ``LossConfig`` fields that turn the paper's critic on or off together: the gate of
    the mutual loss, the adversarial term and the critic's own training.

    Example:
        >>> LossConfig(**critic_switches(False)).needs_critic
        False
    """
    return {"use_adversarial": on, "train_critic": on, "use_gate": on}


def one_hot_targets(label: torch.Tensor, n_classes: int = 2) -> torch.Tensor:
    """Label map (B, D, H, W) with values 0..n_classes -> float targets (B, n_classes, D, H, W).

    Example:
        >>> one_hot_targets(torch.tensor([[[[0, 1, 2]]]])).shape
        torch.Size([1, 2, 1, 1, 3])
    """
    return torch.stack([(label == c + 1) for c in range(n_classes)], dim=1).float()


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 1.0,
    reduce: Reducer | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over channels of ``1 - softDice``, each channel's Dice over the whole batch.

    ``softDice = (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)`` with ``p`` the sigmoid.
    ``reduce`` sums the three sums over processes so that Dice is over the global batch.
    ``weight`` (same shape as ``target``): 0 leaves a voxel of a channel out of the sums.

    Example:
        >>> y = torch.ones(1, 2, 2, 2, 2)
        >>> float(soft_dice_loss(torch.full_like(y, 50.0), y)) < 1e-6
        True
    """
    p = torch.sigmoid(logits.float())
    if weight is not None:
        p, target = p * weight, target * weight
    dims = [0] + list(range(2, p.ndim))  # all but the channel axis
    sums = torch.stack([(p * target).sum(dims), p.sum(dims), target.sum(dims)])  # (3, C)
    if reduce is not None:
        sums = reduce(sums)
    dice = (2 * sums[0] + smooth) / (sums[1] + sums[2] + smooth)
    return (1 - dice).mean()


def boundary_band(target: torch.Tensor, radius: int) -> torch.Tensor:
    """1 on voxels within ``radius`` voxels (a cube) of an edge of a (B, C, D, H, W) binary
    target, inside or outside it; 0 elsewhere. Max-pooling: no distance transform, any device.

    Example:
        >>> y = torch.zeros(1, 1, 9, 9, 9); y[..., 3:6, 3:6, 3:6] = 1
        >>> band = boundary_band(y, 1)
        >>> int(band[0, 0, 4, 4, 4]), int(band[0, 0, 3, 4, 4]), int(band[0, 0, 2, 4, 4])
        (0, 1, 1)
        >>> int(band[0, 0, 0, 4, 4])
        0
    """
    size = 2 * radius + 1
    grown = F.max_pool3d(target, size, stride=1, padding=radius)
    shrunk = -F.max_pool3d(-target, size, stride=1, padding=radius)
    return grown - shrunk


def supervised_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    config: LossConfig = LossConfig(),
    reduce: Reducer | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dl_w * mean_c(1 - softDice) + ce_w * mean_c BCE`` (BCE averaged over voxels).

    ``weight`` (same shape as ``target``, 0 or 1): voxels of a channel left out of both terms.
    With ``config.boundary_weight`` the BCE counts voxels near a target's edge more
    (:func:`boundary_band`).

    Example:
        >>> y = torch.zeros(1, 2, 4, 4, 4); y[:, 0, :2] = 1
        >>> float(supervised_loss(torch.zeros_like(y), y)) > 0
        True
    """
    dice = soft_dice_loss(logits, target, config.dice_smooth, reduce, weight)
    ce_weight = weight
    if config.boundary_weight > 0:
        emphasis = 1 + config.boundary_weight * boundary_band(target, config.boundary_radius)
        ce_weight = emphasis if weight is None else emphasis * weight
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, weight=ce_weight)
    return config.dice_weight * dice + config.ce_weight * bce


def confidence_mask(critic_logits: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """``1[sigmoid(critic_logits) > threshold]`` as a float map (no gradient)."""
    return (torch.sigmoid(critic_logits.detach().float()) > threshold).float()


def mutual_loss(
    logits_k: torch.Tensor,
    probs_o: torch.Tensor,
    critic_logits_o: torch.Tensor | None,
    threshold: float = 0.2,
    gated: bool = True,
) -> torch.Tensor:
    """Network k learns from the other network's probabilities where the critic trusts them.

    Gated (paper): ``mean over voxels and channels of 1[sigmoid(critic(p_o)) > t_m] *
    BCE(p_k, stopgrad(p_o))``, per voxel. Ungated (released code): the same mask multiplies the
    BCE already averaged over all voxels, so the gate cannot select voxels (only rescales).
    ``critic_logits_o=None`` means no critic: every voxel teaches.

    Example:
        >>> logits, probs = torch.zeros(1, 2, 2, 2, 2), torch.ones(1, 2, 2, 2, 2)
        >>> gate = torch.full_like(logits, -10.0)  # critic confident nowhere
        >>> float(mutual_loss(logits, probs, gate))
        0.0
    """
    target = probs_o.detach().float()
    bce = F.binary_cross_entropy_with_logits(logits_k.float(), target, reduction="none")
    if critic_logits_o is None:
        return bce.mean()
    mask = confidence_mask(critic_logits_o, threshold)
    if gated:
        return (mask * bce).mean()
    return (mask * bce.mean()).mean()


def generator_adversarial_loss(critic_logits_k: torch.Tensor) -> torch.Tensor:
    """``BCE(critic(p_k), 1)``: network k tries to make the critic call its output real.

    Example:
        >>> round(float(generator_adversarial_loss(torch.zeros(1, 2, 1, 1, 1))), 4)
        0.6931
    """
    logits = critic_logits_k.float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def critic_loss(critic_logits_real: torch.Tensor, critic_logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (BCE(critic(y), 1) + BCE(critic(stopgrad(p)), 0))``.

    The caller passes ``critic(p.detach())`` as ``critic_logits_fake``.

    Example:
        >>> z = torch.zeros(1, 2, 1, 1, 1)
        >>> round(float(critic_loss(z, z)), 4)
        0.6931
    """
    real, fake = critic_logits_real.float(), critic_logits_fake.float()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )
