"""Running one VNet over a volume: whole volume, or Gaussian-weighted sliding windows.

Whole-volume inference pads the volume to a multiple of 16 (four down-samplings) and runs the
network once, as the released code did. For large volumes or small memory, MONAI's
``sliding_window_inference`` runs windows of ``roi_size`` and blends them with Gaussian
weights, accumulating the result on the CPU so that device memory stays bounded.
Mixed precision (float16 autocast) is used on CUDA when ``amp`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lofihippseg.errors import LoFiError
from lofihippseg.models.vnet import SIZE_MULTIPLE

SLIDING_MODES = ("auto", "on", "off")
# Largest padded volume run in one piece by `auto` for a width-16 VNet (peak about 3 GB on CPU).
WHOLE_VOLUME_MAX_VOXELS = 9_000_000


def check_roi_size(roi_size: Sequence[int]) -> tuple[int, int, int]:
    """Validate a window size: three positive multiples of 16."""
    roi = tuple(int(v) for v in roi_size)
    if len(roi) != 3 or any(v <= 0 or v % SIZE_MULTIPLE for v in roi):
        raise LoFiError(f"--roi-size must be three positive multiples of 16, got {roi_size}")
    return roi  # type: ignore[return-value]


def use_sliding(shape: Sequence[int], mode: str, n_filters: int = 16) -> bool:
    """Whether ``mode`` (auto|on|off) means sliding windows for a volume of this shape."""
    if mode not in SLIDING_MODES:
        raise LoFiError(f"unknown sliding-window mode {mode!r}; expected one of {SLIDING_MODES}")
    if mode != "auto":
        return mode == "on"
    padded = np.prod([int(np.ceil(s / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in shape])
    return padded * max(n_filters, 1) / 16 > WHOLE_VOLUME_MAX_VOXELS


def _autocast(device: torch.device, amp: bool):
    enabled = amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


def _sigmoid_net(net: torch.nn.Module, device: torch.device, amp: bool):
    def run(x: torch.Tensor) -> torch.Tensor:
        with _autocast(device, amp):
            return torch.sigmoid(net(x.to(device)).float())

    return run


@torch.inference_mode()
def whole_volume(
    net: torch.nn.Module, volume: torch.Tensor, device: torch.device, amp: bool = True
) -> torch.Tensor:
    """Sigmoid probabilities (2, D, H, W) on the CPU of one (D, H, W) volume, in one pass; of
    a batch of volumes (B, D, H, W), (B, 2, D, H, W) in one pass.

    Example:
        >>> from lofihippseg.models.vnet import VNet
        >>> net, cpu = VNet(n_filters=4).eval(), torch.device("cpu")
        >>> whole_volume(net, torch.rand(17, 20, 9), cpu).shape
        torch.Size([2, 17, 20, 9])
        >>> whole_volume(net, torch.rand(3, 8, 8, 8), cpu).shape
        torch.Size([3, 2, 8, 8, 8])
    """
    shape, lead = volume.shape[-3:], volume.shape[:-3]
    target = [int(np.ceil(s / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in shape]
    before = [(t - s) // 2 for t, s in zip(target, shape, strict=True)]
    pad: list[int] = []
    for b, t, s in reversed(list(zip(before, target, shape, strict=True))):
        pad += [b, t - s - b]
    x = F.pad(volume.reshape(-1, 1, *shape).float(), pad)
    probs = _sigmoid_net(net, device, amp)(x)
    box = tuple(slice(b, b + s) for b, s in zip(before, shape, strict=True))
    return probs[(slice(None), slice(None), *box)].cpu().reshape(*lead, 2, *shape)


@torch.inference_mode()
def sliding_windows(
    net: torch.nn.Module,
    volume: torch.Tensor,
    device: torch.device,
    roi_size: Sequence[int] = (128, 128, 128),
    overlap: float = 0.25,
    amp: bool = True,
) -> torch.Tensor:
    """Gaussian-blended sliding-window probabilities (2, D, H, W) on the CPU (MONAI).

    Example:
        >>> from lofihippseg.models.vnet import VNet
        >>> net = VNet(n_filters=4).eval()
        >>> sliding_windows(net, torch.rand(40, 20, 9), torch.device("cpu"), (32, 16, 16)).shape
        torch.Size([2, 40, 20, 9])
    """
    # imported here: MONAI costs ~1 s of start-up, and most scans never need sliding windows
    from monai.inferers import sliding_window_inference

    roi = check_roi_size(roi_size)
    x = volume.reshape(1, 1, *volume.shape[-3:]).float()
    out = sliding_window_inference(
        x,
        roi_size=roi,
        sw_batch_size=1,
        predictor=_sigmoid_net(net, device, amp),
        overlap=overlap,
        mode="gaussian",
        sw_device=device,
        device=torch.device("cpu"),
    )
    return out[0].float()


def network_probabilities(
    net: torch.nn.Module,
    volume: torch.Tensor,
    device: torch.device,
    sliding: bool = False,
    roi_size: Sequence[int] = (128, 128, 128),
    overlap: float = 0.25,
    amp: bool = True,
) -> torch.Tensor:
    """One network's probabilities, whole volume or sliding windows."""
    if sliding:
        return sliding_windows(net, volume, device, roi_size, overlap, amp)
    return whole_volume(net, volume, device, amp)
