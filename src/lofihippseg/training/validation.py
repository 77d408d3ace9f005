"""Validation on full volumes: Dice of view 1, view 2 and the fused output.

Each network runs on its whole view of the prepared crop, padded to a multiple of 16 (or with
MONAI's sliding window when the volume is larger than ``max_voxels``). The fused output is the
mean of the two probability maps. A voxel is labelled when its larger channel exceeds 0.5, with
the side of the larger probability; label voxels outside the crop count as missed. Crops
without side (``PreparedCase.unsided``) are scored with both sides merged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lofihippseg.models.onednn import prefer_onednn
from lofihippseg.models.precision import autocast_dtype
from lofihippseg.models.vnet import SIZE_MULTIPLE
from lofihippseg.preprocessing.crop import pad_to_multiple
from lofihippseg.training.data import PreparedCase
from lofihippseg.training.unsided import merged_dice


def probabilities(
    net: nn.Module,
    volume: np.ndarray,
    device: torch.device,
    patch: tuple[int, int, int],
    max_voxels: int,
    amp: bool = False,
) -> torch.Tensor:
    """Sigmoid output (2, D, H, W) of a network on one whole volume (on the CPU).

    Example:
        >>> from lofihippseg.models.vnet import VNet
        >>> probabilities(VNet(n_filters=2).eval(), np.zeros((5, 6, 7), np.float32),
        ...               torch.device("cpu"), (16, 16, 16), 10**6).shape
        torch.Size([2, 5, 6, 7])
    """
    prefer_onednn(net)  # single volumes: oneDNN for every layer on the CPU (models.onednn)
    padded, box = pad_to_multiple(np.asarray(volume, np.float32), SIZE_MULTIPLE)
    x = torch.from_numpy(padded)[None, None].to(device)
    with (
        torch.no_grad(),
        torch.autocast(
            device.type,
            dtype=autocast_dtype(device.type, amp) or torch.float32,
            enabled=autocast_dtype(device.type, amp) is not None,
        ),
    ):
        if padded.size <= max_voxels:
            logits = net(x)
        else:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(x, patch, 1, net, overlap=0.25, mode="gaussian")
    return torch.sigmoid(logits.float())[0][(slice(None), *box)].cpu()


def labels_from_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """(2, ...) probabilities -> label map: 0, or 1 + argmax where the max exceeds 0.5.

    Example:
        >>> labels_from_probabilities(torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.3, 0.7]]))
        tensor([1, 0, 2])
    """
    best, side = probs.max(dim=0)
    return torch.where(best > 0.5, side + 1, torch.zeros_like(side))


def dice_scores(pred: torch.Tensor, case: PreparedCase) -> tuple[float, float]:
    """Dice of labels 1 and 2 (1.0 when both prediction and truth are empty); for a crop
    without side, the merged Dice twice."""
    if case.unsided:
        merged = merged_dice(pred, case.label)
        return merged, merged
    truth = torch.from_numpy(case.label.astype(np.int64))
    scores = []
    for value, outside in zip((1, 2), case.outside, strict=True):
        p, t = pred == value, truth == value
        inter = float((p & t).sum())
        denom = float(p.sum()) + float(t.sum()) + outside
        scores.append(1.0 if denom == 0 else 2.0 * inter / denom)
    return scores[0], scores[1]


def validate(
    vnet1: nn.Module,
    vnet2: nn.Module | None,
    cases: list[PreparedCase],
    device: torch.device,
    patch: tuple[int, int, int],
    max_voxels: int,
    amp: bool = False,
) -> dict[str, float]:
    """Mean Dice over the cases: ``dice1``, ``dice2``, ``dice_fused`` (+ left/right of fused
    over the cases with sides, and ``dice_unsided``, fused, over the crops without side;
    ``dice_unsided_mirrored``, the same crops mirrored left-right: crops all stored as one side
    teach that side only unless they are mirrored in training; NaN where there are none).

    ``vnet2=None`` (single-view ablation): everything is network 1 on view 1. The networks are
    put in eval mode and back in train mode afterwards.

    Example:
        >>> cpu = torch.device("cpu")
        >>> validate(net1, net2, val_cases, cpu, (128,) * 3, 256**3)  # doctest: +SKIP
        {'dice1': 0.71, 'dice2': 0.69, 'dice_fused': 0.73, 'dice_left': 0.72, 'dice_right': 0.74}
    """
    nets = [n for n in (vnet1, vnet2) if n is not None]
    modes = [n.training for n in nets]
    for n in nets:
        n.eval()

    def both(image: np.ndarray, view2: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        prob1 = probabilities(vnet1, image, device, patch, max_voxels, amp)
        if vnet2 is None:
            return prob1, prob1
        view = view2 if view2 is not None else image
        return prob1, probabilities(vnet2, view, device, patch, max_voxels, amp)

    rows = []
    nan = float("nan")
    try:
        for case in cases:
            prob1, prob2 = both(case.image, case.view2)
            d1 = dice_scores(labels_from_probabilities(prob1), case)
            d2 = dice_scores(labels_from_probabilities(prob2), case)
            df = dice_scores(labels_from_probabilities((prob1 + prob2) / 2), case)
            sides = (nan, nan, df[0]) if case.unsided else (df[0], df[1], nan)
            mirrored = nan
            if case.unsided:  # axis 0 is world x in the canonical (RAS) crop
                view2 = None if case.view2 is None else np.flip(case.view2, 0).copy()
                m1, m2 = both(np.flip(case.image, 0).copy(), view2)
                fused = labels_from_probabilities((m1 + m2) / 2)
                mirrored = merged_dice(fused, np.flip(case.label, 0).copy())
            rows.append([np.mean(d1), np.mean(d2), np.mean(df), *sides, mirrored])
    finally:
        for n, mode in zip(nets, modes, strict=True):
            n.train(mode)
    names = ("dice1", "dice2", "dice_fused", "dice_left", "dice_right", "dice_unsided",
             "dice_unsided_mirrored")  # fmt: skip
    table = np.array(rows, dtype=float).reshape(-1, len(names))
    means = [float(np.nanmean(col)) if np.isfinite(col).any() else float("nan") for col in table.T]
    return dict(zip(names, means, strict=True))
