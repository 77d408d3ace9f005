"""SynthSeg-style generator of synthetic low-field T2 images from whole-head label maps.

For each sample: pick a label map; deform it (random affine and smooth elastic field on a coarse
grid, nearest-neighbour so labels stay exact) onto a fixed 1 mm output grid; draw a T2-like
intensity per label with randomisation; multiply by a smooth bias field; acquire it as Hyperfine
stacks (partial-volume blur, thick slices, Rician noise; :mod:`lofihippseg.synth.acquisition`);
normalise to [0, 1] and apply a random gamma. Every range lives in :class:`SynthConfig`.
Everything runs in torch, on the GPU when ``device="cuda"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lofihippseg.errors import LoFiError
from lofihippseg.synth.acquisition import Stack, acquire
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.labelmaps import LabelMap, load_label_map

__all__ = ["SynthConfig", "SynthSample", "SyntheticGenerator", "generate_case"]


@dataclass
class SynthSample:
    """One synthetic case on a 1 mm RAS grid.

    Attributes:
        image: float32 (D, H, W), min-max normalised to [0, 1].
        label: uint8 (D, H, W): 1 left hippocampus, 2 right, 0 elsewhere.
        affine: 4x4 voxel-to-world (RAS mm); world x increases with axis 0.
        source: name of the label map it was made from.
        anatomy: int16 (D, H, W) FreeSurfer labels of the deformed anatomy (for previews/checks).
        params: the values drawn for this sample (slice axes, SNR, gamma, ...).
    """

    image: torch.Tensor
    label: torch.Tensor
    affine: np.ndarray
    source: str
    anatomy: torch.Tensor | None = None
    params: dict = field(default_factory=dict)


def _uniform(g: torch.Generator, low: float, high: float, n: int | None = None):
    u = torch.rand(n or 1, generator=g, dtype=torch.float64)
    out = low + (high - low) * u
    return out if n else float(out[0])


def _rotation(angles: np.ndarray) -> np.ndarray:
    a, b, c = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class SyntheticGenerator:
    """Draws synthetic low-field images with exact left/right hippocampus labels.

    Args:
        label_maps: whole-head FreeSurfer label maps (17 = left, 53 = right hippocampus).
            Loaded lazily into canonical RAS order and cached.
        config: parameter ranges.
        device: "cpu", "cuda" or a torch.device.

    Example:
        >>> from lofihippseg.synth.assets import packaged_label_maps
        >>> gen = SyntheticGenerator(packaged_label_maps(), SynthConfig.fast())  # doctest: +SKIP
        >>> s = gen.sample(torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> s.image.shape, s.label.unique()  # doctest: +SKIP
    """

    def __init__(
        self,
        label_maps: list[str | Path],
        config: SynthConfig | None = None,
        device: str | torch.device = "cpu",
    ):
        self.paths = [Path(p) for p in label_maps]
        if not self.paths:
            raise LoFiError("no label maps given to the synthetic generator")
        self.config = config or SynthConfig()
        self.device = torch.device(device)
        self._cache: dict[int, LabelMap] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def label_map(self, index: int) -> LabelMap:
        """The loaded (cached) label map number ``index``."""
        if index not in self._cache:
            self._cache[index] = load_label_map(self.paths[index], self.config, self.device)
        return self._cache[index]

    # ---- spatial -------------------------------------------------------------------------------
    def _affine(self, g: torch.Generator, lmap: LabelMap, flip: bool) -> np.ndarray:
        """3x3 matrix mapping output offsets (mm) to source offsets (mm)."""
        cfg = self.config
        scale = _uniform(g, 1 - cfg.scaling, 1 + cfg.scaling, 3).numpy()
        if cfg.global_scale[0] != cfg.global_scale[1] or cfg.global_scale[0] != 1.0:
            scale = scale * _uniform(g, *cfg.global_scale)  # (drawn only when on: same stream)
        angles = _uniform(g, -cfg.rotation_deg, cfg.rotation_deg, 3).numpy()
        shear = np.eye(3)
        shear[np.triu_indices(3, 1)] = _uniform(g, -cfg.shear, cfg.shear, 3).numpy()
        # forward (source -> output) transform; we sample with its inverse
        forward = _rotation(angles) @ shear @ np.diag(scale)
        matrix = np.linalg.inv(forward)
        if flip:
            matrix = matrix @ np.diag([-1.0, 1.0, 1.0])
        # keep both hippocampi within the plausible volume range (isotropic rescale)
        # (aim 10% inside the range: the elastic field changes volumes a little too)
        low, high = cfg.hippocampus_volume_ml[0] * 1.1, cfg.hippocampus_volume_ml[1] / 1.1
        det = abs(np.linalg.det(matrix))
        vols = [v / det for v in lmap.hippocampus_ml]
        factor = 1.0
        if max(vols) > high:
            factor = max(vols) / high  # shrink the output (sample source more sparsely)
        elif min(vols) < low:
            factor = max(min(vols) / low, max(vols) / high)
        return matrix * factor ** (1.0 / 3.0)

    def _sampling_grid(
        self, g: torch.Generator, dg: torch.Generator, lmap: LabelMap, shape, flip: bool
    ) -> torch.Tensor:
        cfg, dev = self.config, self.device
        matrix = torch.as_tensor(self._affine(g, lmap, flip), dtype=torch.float32, device=dev)
        centre = torch.as_tensor(
            lmap.hippocampus_centre_mm if cfg.centre_on == "hippocampi" else lmap.brain_centre_mm,
            dtype=torch.float32,
            device=dev,
        )
        jitter = torch.randn(3, generator=g, dtype=torch.float64) * cfg.centre_jitter_mm
        shift = _uniform(g, -cfg.translation_mm, cfg.translation_mm, 3) + jitter
        centre = centre + shift.to(dtype=torch.float32, device=dev)
        axes = [torch.arange(n, device=dev, dtype=torch.float32) - (n - 1) / 2 for n in shape]
        coords = []
        for i in range(3):  # source mm = matrix @ output mm + centre (+ elastic)
            c = (
                matrix[i, 0] * axes[0][:, None, None]
                + matrix[i, 1] * axes[1][None, :, None]
                + matrix[i, 2] * axes[2][None, None, :]
                + centre[i]
            )
            coords.append(c)
        grid = torch.stack(coords, dim=0)  # (3, D, H, W)
        if cfg.elastic_std > 0:
            n = cfg.elastic_grid
            coarse = torch.randn((1, 3, n, n, n), generator=dg, device=dev) * cfg.elastic_std
            grid += F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0]
        # source mm -> grid_sample's [-1, 1] (align_corners=True); grid_sample wants (x=W, y=H, z=D)
        spacing = torch.as_tensor(lmap.spacing, dtype=torch.float32, device=dev)
        size = torch.as_tensor(lmap.compact.shape, dtype=torch.float32, device=dev)
        norm = 2.0 / (spacing * (size - 1)).view(3, 1, 1, 1)
        grid = grid * norm - 1.0
        return grid.flip(0).permute(1, 2, 3, 0)[None]

    # ---- intensities ---------------------------------------------------------------------------
    def _label_intensities(self, g: torch.Generator, lmap: LabelMap) -> tuple[torch.Tensor, ...]:
        """Mean and std per label of this map (index = compact label)."""
        cfg = self.config
        gm = _uniform(g, *cfg.gm_mean)
        tissue = {
            "csf": _uniform(g, *cfg.csf_mean),
            "gm": gm,
            "wm": gm * _uniform(g, *cfg.wm_gm_ratio),
            "deep_gm": gm * _uniform(g, *cfg.deep_gm_ratio),
            "thalamus": gm * _uniform(g, *cfg.thalamus_ratio),
            "pallidum": gm * _uniform(g, *cfg.pallidum_ratio),
            "hippocampus": gm * _uniform(g, *cfg.hippocampus_ratio),
            "amygdala": gm * _uniform(g, *cfg.amygdala_ratio),
        }
        n = len(lmap.labels)
        jitter = 1.0 + cfg.label_jitter * torch.randn(n, generator=g, dtype=torch.float64)
        other = _uniform(g, *cfg.other_mean, n)
        texture = _uniform(g, *cfg.texture_std, n)
        means = torch.empty(n, dtype=torch.float64)
        for i, lab in enumerate(lmap.labels):
            kind = cfg.tissue_of_label.get(lab)
            means[i] = tissue[kind] * jitter[i] if kind in tissue else other[i]
        if cfg.p_random_contrast > 0 and _uniform(g, 0.0, 1.0) < cfg.p_random_contrast:
            means = _uniform(g, *cfg.random_mean, n)  # SynthSeg: any contrast at all
        bg = lmap.labels.index(0) if 0 in lmap.labels else None
        if bg is not None:
            means[bg] = _uniform(g, *cfg.background_mean)
            texture[bg] = 0.0
        to = {"dtype": torch.float32, "device": self.device}
        return means.clamp(min=0).to(**to), (texture * means.clamp(min=0)).to(**to), tissue["wm"]

    def _bias(self, dg: torch.Generator, shape) -> torch.Tensor:
        std = self.config.bias_log_std
        if std[1] <= 0:
            return torch.ones(shape, device=self.device)
        u = float(torch.rand(1, generator=dg, device=self.device))
        log_std = std[0] + (std[1] - std[0]) * u
        n = self.config.bias_grid
        coarse = torch.randn((1, 1, n, n, n), generator=dg, device=self.device) * log_std
        field_ = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
        return field_[0, 0].exp()

    # ---- acquisition ---------------------------------------------------------------------------
    def _stacks(self, g: torch.Generator, signal: float) -> list[Stack]:
        cfg = self.config
        inplane = _uniform(g, *cfg.inplane_mm)
        slice_mm = _uniform(g, *cfg.slice_mm)
        thickness = slice_mm * _uniform(g, *cfg.slice_thickness_frac)
        three = _uniform(g, 0.0, 1.0) < cfg.p_three_stacks
        if cfg.p_generic_acquisition > 0 and _uniform(g, 0.0, 1.0) < cfg.p_generic_acquisition:
            inplane, slice_mm = _uniform(g, *cfg.generic_mm), _uniform(g, *cfg.generic_mm)
            thickness = slice_mm * _uniform(g, *cfg.slice_thickness_frac)
            three = False
        axes = [0, 1, 2] if three else [int(torch.randint(3, (1,), generator=g))]
        snr = _uniform(g, *cfg.snr_range) if cfg.snr_range else None
        stacks = []
        for axis in axes:
            shift = torch.randn(3, generator=g, dtype=torch.float64) * cfg.stack_misalign_mm
            stacks.append(
                Stack(
                    slice_axis=axis,
                    inplane_mm=inplane,
                    slice_mm=slice_mm,
                    thickness_mm=thickness,
                    shift_mm=tuple(float(v) for v in shift) if three else (0.0, 0.0, 0.0),
                    noise_std=signal / snr if snr else 0.0,
                )
            )
        return stacks

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, generator: torch.Generator) -> SynthSample:
        """Draw one synthetic case; deterministic given the generator's state.

        Args:
            generator: a CPU torch.Generator (its state advances).

        Returns:
            A :class:`SynthSample` on ``self.device``.
        """
        cfg, g, dev = self.config, generator, self.device
        index = int(torch.randint(len(self.paths), (1,), generator=g))
        lmap = self.label_map(index)
        seed = int(torch.randint(2**62, (1,), generator=g))
        dg = torch.Generator(device=dev).manual_seed(seed)
        shape = tuple(cfg.output_shape or lmap.compact.shape)
        flip = _uniform(g, 0.0, 1.0) < cfg.p_flip

        grid = self._sampling_grid(g, dg, lmap, shape, flip)
        src = lmap.compact[None, None].to(torch.float32)
        compact = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=True)
        compact = compact[0, 0].to(torch.long)  # 0 = the map's first label (background)
        del grid

        means, stds, wm = self._label_intensities(g, lmap)
        image = means[compact] + stds[compact] * torch.randn(shape, generator=dg, device=dev)
        image = image * self._bias(dg, shape)
        head = compact != lmap.background_index
        signal = float(image[head].mean()) if bool(head.any()) else 1.0
        stacks = self._stacks(g, signal)
        pv_sigma = _uniform(g, *cfg.pv_sigma)
        image = acquire(image, stacks, pv_sigma, dg)

        if _uniform(g, 0.0, 1.0) < cfg.p_zero_background:
            mask = F.max_pool3d(head[None, None].float(), 5, stride=1, padding=2)[0, 0]
            image = image * mask
        image = _normalise(image)
        gamma = math.exp(float(torch.randn(1, generator=g)) * cfg.gamma_log_std)
        image = _normalise(image.clamp(min=0) ** gamma)

        label = torch.zeros(shape, dtype=torch.uint8, device=dev)
        left, right = (2, 1) if flip else (1, 2)
        label[compact == lmap.left_index] = left
        label[compact == lmap.right_index] = right
        fs = lmap.flipped_labels if flip else lmap.labels_tensor
        anatomy = fs.to(dev)[compact].to(torch.int16)

        affine = np.eye(4)
        affine[:3, 3] = -(np.asarray(shape, dtype=float) - 1) / 2
        params = {
            "map_index": index,
            "flip": flip,
            "slice_axes": [s.slice_axis for s in stacks],
            "inplane_mm": stacks[0].inplane_mm,
            "slice_mm": stacks[0].slice_mm,
            "noise_std": stacks[0].noise_std,
            "pv_sigma": pv_sigma,
            "gamma": gamma,
            "wm_mean": wm,
        }
        return SynthSample(image.float(), label, affine, lmap.name, anatomy, params)


def _normalise(image: torch.Tensor) -> torch.Tensor:
    low, high = image.min(), image.max()
    if float(high - low) <= 0:
        return torch.zeros_like(image)
    return (image - low) / (high - low)


def generate_case(
    label_map_path: str | Path, seed: int, config: SynthConfig | None = None, device: str = "cpu"
) -> SynthSample:
    """Generate one synthetic case from one label map with an integer seed.

    Example:
        >>> s = generate_case("training_seg_01.nii.gz", seed=0)  # doctest: +SKIP
    """
    gen = SyntheticGenerator([label_map_path], config, device)
    return gen.sample(torch.Generator().manual_seed(int(seed)))
