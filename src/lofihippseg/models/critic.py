"""The per-voxel critic (discriminator) shared by both VNets, as released."""

from __future__ import annotations

import torch
from torch import nn

from lofihippseg.models.vnet import MEMORY_FORMAT


def _layer(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(n_in, n_out, 1, bias=False), nn.BatchNorm3d(n_out), nn.LeakyReLU(0.2)
    )


class Critic(nn.Module):
    """Four 1x1x1 conv layers 2->16->32->64->2 with batch norm and LeakyReLU(0.2).

    ``forward`` returns logits; ``sigmoid(logits)`` is the per-voxel confidence map.

    Example:
        >>> Critic()(torch.rand(1, 2, 4, 4, 4)).shape
        torch.Size([1, 2, 4, 4, 4])
    """

    def __init__(self, n_classes: int = 2):
        super().__init__()
        self.conv1 = _layer(n_classes, 16)
        self.conv2 = _layer(16, 32)
        self.conv3 = _layer(32, 64)
        self.conv4 = _layer(64, n_classes)
        self.to(memory_format=MEMORY_FORMAT)

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        x = probabilities.contiguous(memory_format=MEMORY_FORMAT)
        return self.conv4(self.conv3(self.conv2(self.conv1(x))))
