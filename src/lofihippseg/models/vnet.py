"""The VNet of the released LoFiHippSeg code, with identical state-dict keys.

Four down-samplings (strided 2x2x2 convs) from ``n_filters`` to ``16 * n_filters`` channels,
batch norm, plain (residual-free) conv blocks, transposed-conv up-sampling with additive skips.
With ``n_filters=16`` the state dict matches the authors' released checkpoints key for key.
"""

from __future__ import annotations

import torch
from torch import nn

# Each resolution level needs an even size four times over.
SIZE_MULTIPLE = 16

# Channels-last 3D tensors take oneDNN's fast convolution paths on the CPU (about 1.5-3x for a
# training step here) and suit cuDNN's tensor cores under mixed precision on the GPU.
MEMORY_FORMAT = torch.channels_last_3d


class ConvBlock(nn.Module):
    """``n_stages`` x (3x3x3 conv, batch norm, ReLU)."""

    def __init__(self, n_stages: int, n_in: int, n_out: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_stages):
            layers += [
                nn.Conv3d(n_in if i == 0 else n_out, n_out, 3, padding=1),
                nn.BatchNorm3d(n_out),
                nn.ReLU(inplace=True),
            ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownBlock(nn.Module):
    """Strided 2x2x2 conv, batch norm, ReLU: halves each spatial size."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv3d(n_in, n_out, 2, stride=2), nn.BatchNorm3d(n_out), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UpBlock(nn.Module):
    """Transposed 2x2x2 conv, batch norm, ReLU: doubles each spatial size."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.ConvTranspose3d(n_in, n_out, 2, stride=2),
            nn.BatchNorm3d(n_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Encoder(nn.Module):
    def __init__(self, n_channels: int, f: int):
        super().__init__()
        self.block_one = ConvBlock(1, n_channels, f)
        self.block_one_dw = DownBlock(f, 2 * f)
        self.block_two = ConvBlock(2, 2 * f, 2 * f)
        self.block_two_dw = DownBlock(2 * f, 4 * f)
        self.block_three = ConvBlock(3, 4 * f, 4 * f)
        self.block_three_dw = DownBlock(4 * f, 8 * f)
        self.block_four = ConvBlock(3, 8 * f, 8 * f)
        self.block_four_dw = DownBlock(8 * f, 16 * f)
        self.block_five = ConvBlock(3, 16 * f, 16 * f)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        return [x1, x2, x3, x4, x5]


class Decoder(nn.Module):
    def __init__(self, n_classes: int, f: int):
        super().__init__()
        self.block_five_up = UpBlock(16 * f, 8 * f)
        self.block_six = ConvBlock(3, 8 * f, 8 * f)
        self.block_six_up = UpBlock(8 * f, 4 * f)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f)
        self.block_seven_up = UpBlock(4 * f, 2 * f)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f)
        self.block_eight_up = UpBlock(2 * f, f)
        self.block_nine = ConvBlock(1, f, f)
        self.out_conv = nn.Conv3d(f, n_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x1, x2, x3, x4, x5 = features
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        x = self.block_nine(self.block_eight_up(x) + x1)
        return self.out_conv(x)


class VNet(nn.Module):
    """VNet returning per-channel logits (read through a sigmoid: channel 0 left, 1 right).

    Args:
        n_channels: input channels (1).
        n_classes: output channels (2: left and right hippocampus).
        n_filters: base width; 16 is the released model (9,448,866 parameters).

    Example:
        >>> net = VNet(n_filters=4)
        >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 2, 16, 16, 16])
    """

    def __init__(self, n_channels: int = 1, n_classes: int = 2, n_filters: int = 16):
        super().__init__()
        self.encoder = Encoder(n_channels, n_filters)
        self.decoder1 = Decoder(n_classes, n_filters)
        self.to(memory_format=MEMORY_FORMAT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder1(self.encoder(x.contiguous(memory_format=MEMORY_FORMAT)))
