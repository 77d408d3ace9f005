"""Augmentation for low-field robustness, in torch (runs on the tensors' device).

Each transform fires with its own probability; all randomness comes from one ``torch.Generator``
so a sample can be replayed. Ranges come from ``../shared/docs/LOWFIELD.md`` (SynthSeg, SynthSR,
ULF-Synth and the Hyperfine protocol); each field of :class:`AugmentConfig` says which.

Order: spatial (rotation/scaling, flips) -> bias field -> blur -> thick-slice anisotropy ->
noise -> gamma -> intensity scale/shift -> clamp to [0, 1]. A left-right flip (axis 0, the
subject's left->right) always swaps labels 1 and 2; it is off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from lofihippseg.errors import LoFiError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (intensities assume an image in [0, 1])."""

    # Spatial: rotation +-15 deg about each axis, per-axis scaling +-20% (SynthSeg/SynthSR).
    spatial_prob: float = 0.5
    rotation_deg: float = 15.0
    scaling: float = 0.2
    # Left-right flip (axis 0) with labels 1<->2 swapped; OFF by default (METHOD.md: flipping
    # without swapping teaches the network to confuse sides). Other axes: plain flips.
    lr_flip_prob: float = 0.0
    axis_flip_prob: float = 0.0
    # Multiplicative bias field: smooth field from a coarse grid of ~2.5% of the image size
    # (at least 2 nodes), log-std ~ U(0, bias_std_max), exponentiated (SynthSeg 0.7, SynthSR 0.3).
    bias_prob: float = 0.5
    bias_std_max: float = 0.5
    bias_grid_fraction: float = 0.025
    # Gaussian blur, sigma ~ U(range) voxels per axis (partial-volume / registration smoothing).
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    # Thick slices along one random axis: Hyperfine T2 FSE has ~5 mm slices for ~1.5 mm in plane,
    # so a factor of 2-5 at 1 mm; blur sigma = 0.75 * factor (SynthSeg), down- then up-sample.
    anisotropy_prob: float = 0.3
    slice_factor: tuple[float, float] = (2.0, 5.0)
    # Noise std ~ U(range) of full scale; ULF-Synth SNR U(15, 50) on a foreground of ~0.3-0.6
    # gives ~0.006-0.04. A share ``rician_share`` is Rician (magnitude of complex Gaussian).
    noise_prob: float = 0.5
    noise_std: tuple[float, float] = (0.005, 0.04)
    rician_share: float = 0.5
    # Gamma = exp(N(0, gamma_std)) on the [0, 1] image (SynthSeg).
    gamma_prob: float = 0.5
    gamma_std: float = 0.5
    # x * scale + shift then clamp: mimics min-max ranges shifted by outlier voxels.
    intensity_prob: float = 0.5
    scale: tuple[float, float] = (0.8, 1.2)
    shift: tuple[float, float] = (-0.1, 0.1)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.endswith("_prob") or f.name == "rician_share":
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise LoFiError(f"augmentation {f.name}={value}: must be in [0, 1]")

    @classmethod
    def none(cls) -> AugmentConfig:
        """A config that changes nothing (the released recipe has no augmentation)."""
        return replace(cls(), **{f.name: 0.0 for f in fields(cls) if f.name.endswith("_prob")})


# --------------------------------------------------------------------------- random draws
def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g, device=g.device))


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * _rand(g)


def _normal(g: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal tensor drawn on the generator's device, moved to ``device``."""
    return torch.randn(shape, generator=g, device=g.device).to(device)


# --------------------------------------------------------------------------- flips
def swap_lr_labels(label: torch.Tensor) -> torch.Tensor:
    """Swap label values 1 (left) and 2 (right); others unchanged.

    Example:
        >>> swap_lr_labels(torch.tensor([0, 1, 2]))
        tensor([0, 2, 1])
    """
    out = label.clone()
    out[label == 1] = 2
    out[label == 2] = 1
    return out


def flip_left_right(
    image: torch.Tensor, label: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mirror along axis 0 (third from last) and swap labels 1<->2 so left stays left.

    Args:
        image: (..., D, H, W) tensor.
        label: (D, H, W) label map, or None.

    Example:
        >>> lab = torch.zeros(4, 1, 1, dtype=torch.long); lab[0] = 1; lab[3] = 2
        >>> flip_left_right(torch.zeros(1, 4, 1, 1), lab)[1].flatten()
        tensor([1, 0, 0, 2])
    """
    image = torch.flip(image, dims=(-3,))
    if label is not None:
        label = swap_lr_labels(torch.flip(label, dims=(-3,)))
    return image, label


# --------------------------------------------------------------------------- spatial
def _rotation(angles: list[float]) -> torch.Tensor:
    """3x3 rotation from angles (radians) about axes 0, 1, 2, in float64."""
    mats = []
    for axis, a in enumerate(angles):
        c, s = math.cos(a), math.sin(a)
        m = torch.eye(3, dtype=torch.float64)
        i, j = [k for k in range(3) if k != axis]
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        mats.append(m)
    return mats[0] @ mats[1] @ mats[2]


def _spatial(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig, g: torch.Generator):
    """Random rotation and per-axis scaling about the centre (bilinear image, nearest label)."""
    angles = [math.radians(_uniform(g, -cfg.rotation_deg, cfg.rotation_deg)) for _ in range(3)]
    scales = [_uniform(g, 1.0 - cfg.scaling, 1.0 + cfg.scaling) for _ in range(3)]
    # Output voxel -> input voxel (about the centre), in (D, H, W) voxel units.
    matrix = _rotation(angles) @ torch.diag(torch.tensor(scales, dtype=torch.float64)).inverse()
    half = torch.tensor(image.shape[-3:], dtype=torch.float64) / 2
    # Normalised coordinates: n = v / half; then reverse to affine_grid's (x=W, y=H, z=D) order.
    norm = torch.diag(1 / half) @ matrix @ torch.diag(half)
    theta = torch.zeros(1, 3, 4, dtype=torch.float64)
    theta[0, :, :3] = norm.flip(0).flip(1)
    size = (1, 1, *image.shape[-3:])
    grid = F.affine_grid(theta.to(image.device, torch.float32), size, align_corners=False)
    warped = F.grid_sample(image[None].float(), grid, mode="bilinear", align_corners=False)[0]
    lab = F.grid_sample(label[None, None].float(), grid, mode="nearest", align_corners=False)
    return warped.to(image.dtype), lab[0, 0].round().to(label.dtype)


# --------------------------------------------------------------------------- intensity
def _blur_axis(x: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """Gaussian blur of a (C, D, H, W) tensor along spatial ``axis`` (0..2), edge-replicated."""
    if sigma <= 1e-3:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = kernel.numel()
    pad = [0] * 6
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius  # F.pad lists the last axis first
    channels = x.shape[0]
    y = F.pad(x[None], pad, mode="replicate")
    w = kernel.reshape(shape).expand(channels, 1, *shape[2:])
    return F.conv3d(y, w, groups=channels)[0]


def _bias_field(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    std = _uniform(g, 0.0, cfg.bias_std_max)
    grid = tuple(max(2, round(cfg.bias_grid_fraction * s)) for s in x.shape[-3:])
    coarse = _normal(g, (1, 1, *grid), x.device).to(x.dtype) * std
    field = F.interpolate(coarse, size=x.shape[-3:], mode="trilinear", align_corners=True)[0]
    out = x * torch.exp(field)
    return out / out.amax().clamp_min(1e-8)  # back into [0, 1]


def _anisotropy(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    axis = min(2, int(_rand(g) * 3))
    factor = _uniform(g, *cfg.slice_factor)
    y = _blur_axis(x, 0.75 * factor, axis)
    full = list(x.shape[-3:])
    low = list(full)
    low[axis] = max(1, round(full[axis] / factor))
    y = F.interpolate(y[None], size=low, mode="trilinear", align_corners=False)
    return F.interpolate(y, size=full, mode="trilinear", align_corners=False)[0]


def _noise(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    std = _uniform(g, *cfg.noise_std)
    rician = _rand(g) < cfg.rician_share
    n1 = _normal(g, tuple(x.shape), x.device).to(x.dtype) * std
    if rician:
        n2 = _normal(g, tuple(x.shape), x.device).to(x.dtype) * std
        return torch.sqrt((x + n1) ** 2 + n2**2)
    return x + n1


def _renormalise(x: torch.Tensor) -> torch.Tensor:
    low, high = x.amin(), x.amax()
    return (x - low) / (high - low).clamp_min(1e-8)


# --------------------------------------------------------------------------- entry point
def augment(
    image: torch.Tensor,
    label: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly augment one training sample; deterministic for a given generator state.

    Args:
        image: float tensor (1, D, H, W) in [0, 1] (any channel count works).
        label: integer tensor (D, H, W) with values in {0, 1, 2}.
        config: probabilities and ranges.
        generator: source of all randomness; one on the tensors' device avoids transfers.

    Returns:
        ``(image, label)`` with the input shapes and dtypes; image in [0, 1], labels in {0, 1, 2}.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> img, lab = augment(torch.rand(1, 8, 8, 8), torch.zeros(8, 8, 8, dtype=torch.long),
        ...                    AugmentConfig(), g)
        >>> img.shape, lab.shape
        (torch.Size([1, 8, 8, 8]), torch.Size([8, 8, 8]))
    """
    if image.ndim != 4 or label.shape != image.shape[-3:]:
        raise ValueError(
            f"expected image (C, D, H, W) and label (D, H, W), got "
            f"{tuple(image.shape)} and {tuple(label.shape)}"
        )
    cfg, g = config, generator
    dtype = image.dtype
    x = image.float()
    if _rand(g) < cfg.spatial_prob:
        x, label = _spatial(x, label, cfg, g)
    if _rand(g) < cfg.lr_flip_prob:
        x, label = flip_left_right(x, label)  # type: ignore[assignment]
    for axis in (-2, -1):
        if _rand(g) < cfg.axis_flip_prob:
            x, label = torch.flip(x, dims=(axis,)), torch.flip(label, dims=(axis,))
    if _rand(g) < cfg.bias_prob:
        x = _bias_field(x, cfg, g)
    if _rand(g) < cfg.blur_prob:
        for axis in range(3):
            x = _blur_axis(x, _uniform(g, *cfg.blur_sigma), axis)
    if _rand(g) < cfg.anisotropy_prob:
        x = _anisotropy(x, cfg, g)
    if _rand(g) < cfg.noise_prob:
        x = _renormalise(_noise(x, cfg, g))
    if _rand(g) < cfg.gamma_prob:
        gamma = math.exp(cfg.gamma_std * float(_normal(g, (), torch.device("cpu"))))
        x = x.clamp(0.0, 1.0) ** gamma
    if _rand(g) < cfg.intensity_prob:
        x = x * _uniform(g, *cfg.scale) + _uniform(g, *cfg.shift)
    return x.clamp(0.0, 1.0).to(dtype), label.contiguous()
