"""The critic's terms at a fraction of the cost: a uniform voxel sample and a gate look-up table.

The critic is a per-voxel network (1x1x1 convolutions) whose only coupling between voxels is
batch norm. Run on every voxel of a 48x64x48 x 4 batch six times per iteration, its 64-channel
activations cost about 9 times a critic-free iteration on a CPU. Here:

- **Critic loss and adversarial term** are means over voxels of a per-voxel loss, so they are
  estimated on a uniform sample of voxels (drawn with replacement): for fixed batch-norm
  statistics, the sample mean of the per-voxel loss (and of its gradient) is an unbiased
  estimate of the full mean. The batch-norm statistics are those of the sample, which
  estimate those of the batch with an error of order ``1/sqrt(n)``; with the default 5 %
  (29,000 voxels at 48x64x48 x 4) the bias this leaves is far below the estimator's noise.
  Uniform, not stratified towards the hippocampi: batch norm must see the batch's own voxel
  distribution, and a stratified sample would need weighted statistics (a different module).
- **Gate of the mutual loss** (``1[sigmoid(critic(p_o)) > t]``, needed at every voxel where the
  mutual loss is computed): with batch-norm statistics fixed, the critic is a fixed function of
  a voxel's two probabilities. We take the statistics from the sample, evaluate that function
  once on a ``grid x grid`` table over [0, 1]^2 and read every voxel's value by bilinear
  interpolation (no gradient). The critic is piecewise linear in its input, so the table is
  exact up to interpolation at the kinks; the gate agrees with the full computation on more
  than 99 % of voxels (``tests/test_critic_sampling.py``).

The module's parameters and state-dict keys are untouched: this only changes which voxels the
critic is run on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATE_GRID = 129  # table resolution: 1/128 in probability


def sample_count(n_voxels: int, fraction: float, minimum: int = 4096) -> int:
    """How many voxels to sample: ``fraction`` of them, at least ``minimum`` (capped at all).

    Example:
        >>> sample_count(1_000_000, 0.05), sample_count(1000, 0.05)
        (50000, 1000)
    """
    return int(min(n_voxels, max(minimum, round(fraction * n_voxels))))


def sample_voxels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of a (B, C, D, H, W) map at flat voxel indices (over B*D*H*W) -> (N, C).

    Example:
        >>> x = torch.arange(16.).reshape(1, 2, 2, 2, 2)
        >>> sample_voxels(x, torch.tensor([0, 7])).tolist()
        [[0.0, 8.0], [7.0, 15.0]]
    """
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1).transpose(0, 1).reshape(c, -1)  # (C, B*V)
    return flat[:, index].transpose(0, 1)


def random_index(
    x: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A uniform sample (with replacement) of flat voxel indices of a (B, C, ...) map.

    ``generator`` (on ``x``'s device) makes the sample reproducible; the training loop seeds
    one per iteration, so a resumed run draws the same voxels as an uninterrupted one.
    """
    n = x.shape[0] * x[0, 0].numel()
    return torch.randint(n, (sample_count(n, fraction),), device=x.device, generator=generator)


def critic_on_points(critic: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """Run the critic's own layers on voxels given as rows (N, C) -> logits (N, C).

    The same parameters and buffers as ``critic.forward``, written as matrix products (a 1x1x1
    convolution on a list of voxels; PyTorch's 3D convolution backward is slow on that shape).
    Batch norm behaves as the module would on a batch of these voxels: in train mode it uses
    their statistics and updates the running statistics.
    """
    x = points
    for conv, bn, act in _layers(critic):
        x = F.linear(x, conv.weight.flatten(1))
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm does
                momentum = 1.0 / float(bn.num_batches_tracked)
        x = F.batch_norm(
            x,
            bn.running_mean if not bn.training or bn.track_running_stats else None,
            bn.running_var if not bn.training or bn.track_running_stats else None,
            bn.weight,
            bn.bias,
            training=bn.training or bn.running_mean is None,
            momentum=momentum,
            eps=bn.eps,
        )
        x = act(x)
    return x


def _layers(critic: nn.Module) -> list[nn.Sequential]:
    return [critic.conv1, critic.conv2, critic.conv3, critic.conv4]


def _mlp(critic: nn.Module, x: torch.Tensor, stats: list | None) -> tuple[torch.Tensor, list]:
    """The critic as a per-point MLP on (N, C); batch norm with ``stats`` or the points' own."""
    out_stats = []
    for i, (conv, bn, act) in enumerate(_layers(critic)):
        x = F.linear(x, conv.weight.flatten(1))
        if stats is None:
            mean, var = x.mean(0), x.var(0, unbiased=False)
        else:
            mean, var = stats[i]
        out_stats.append((mean, var))
        x = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
        x = act(x)
    return x, out_stats


@torch.no_grad()
def gate_logits(
    critic: nn.Module, probs: torch.Tensor, index: torch.Tensor, grid: int = GATE_GRID
) -> torch.Tensor:
    """Critic logits at every voxel of ``probs`` (B, 2, ...), batch-norm statistics of a sample.

    The statistics come from the voxels at ``index``; the critic with those statistics is
    tabulated on a ``grid x grid`` lattice of [0, 1]^2 and read at each voxel by bilinear
    interpolation. In eval mode the running statistics are used, as the module would.

    Returns:
        Logits of the same shape as ``probs`` (float32).
    """
    if probs.shape[1] != 2:
        raise ValueError("the gate table needs two probability channels")
    probs = probs.float()
    stats = None
    if critic.training:
        _, stats = _mlp(critic, sample_voxels(probs, index), None)
    else:
        stats = [(bn.running_mean, bn.running_var) for _, bn, _ in _layers(critic)]
    axis = torch.linspace(0.0, 1.0, grid, device=probs.device)
    p0, p1 = torch.meshgrid(axis, axis, indexing="ij")  # rows: channel 0, columns: channel 1
    table, _ = _mlp(critic, torch.stack([p0.flatten(), p1.flatten()], 1), stats)
    table = table.transpose(0, 1).reshape(1, 2, grid, grid)
    b = probs.shape[0]
    # grid_sample: x (last) indexes columns = channel 1, y indexes rows = channel 0.
    coords = torch.stack([probs[:, 1], probs[:, 0]], dim=-1).reshape(1, 1, -1, 2) * 2 - 1
    values = F.grid_sample(table, coords, mode="bilinear", align_corners=True)  # (1, 2, 1, N)
    return values.reshape(2, b, *probs.shape[2:]).transpose(0, 1)
