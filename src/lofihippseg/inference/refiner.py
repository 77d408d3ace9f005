"""The outline refiner: a small network that re-reads the scan around each predicted hippocampus.

The pairs of networks place each hippocampus; the refiner sees, one side at a time, the scan and
the fused probability of that side in a 64 mm cube at 1 mm around what they found (with the
scan's intensity evidence for that outline, as edge refinement reads it), and returns
a correction of the probability's log-odds (zero at initialisation: it starts as the identity).
It is side-agnostic: the same network serves both sides, so a left or right hippocampus is
never told which it is (and mirroring it is a valid augmentation).

Geometry: the cube is centred on the centroid of the side's thresholded probability, cut from
the scan's own (canonical) grid with zero padding outside it, and resampled linearly to 1 mm
voxels; the corrected probability goes back to the scan's grid the same way and replaces the
fused probability inside the cube.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lofihippseg.errors import LoFiError
from lofihippseg.inference.edge_refine import CLIP as EVIDENCE_CLIP
from lofihippseg.inference.edge_refine import side_evidence
from lofihippseg.models.registry import (
    expand_precision,
    int8_precision,
    load_weights,
    without_init,
)
from lofihippseg.models.vnet import VNet
from lofihippseg.preprocessing.crop import within

CUBE_MM = 64  # the refiner's field: a 64 mm cube at 1 mm (divisible by the VNet's 16)
LOGIT_CLIP = 8.0  # prior log-odds are clipped to +-8 before the correction is added
MIN_VOXELS = 20  # sides with fewer voxels above threshold are left as they are
CLIP_PERCENTILES = (0.5, 99.5)
CONTEXT = 12  # the network runs on the part of the cube within this many voxels of the prior
EVIDENCE_THRESHOLD = 0.5  # the prior's outline the evidence channel describes (as in training)


@dataclass(frozen=True)
class Cube:
    """Where a refiner cube lies on the scan's grid.

    Attributes:
        start: first voxel of the cube on the scan's grid (may be negative).
        size: the cube's extent in the scan's voxels per axis.
    """

    start: tuple[int, int, int]
    size: tuple[int, int, int]

    def clipped(self, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """(slices into the scan, slices into the cube) for the part inside the scan."""
        vol, cube = [], []
        for s, n, dim in zip(self.start, self.size, shape, strict=True):
            lo, hi = max(s, 0), min(s + n, dim)
            vol.append(slice(lo, max(hi, lo)))
            cube.append(slice(lo - s, lo - s + max(hi - lo, 0)))
        return tuple(vol), tuple(cube)

    def shifted(self, offset: tuple[int, ...]) -> Cube:
        """The same cube in an array whose origin lies at ``offset`` of this one's."""
        start = tuple(s - o for s, o in zip(self.start, offset, strict=True))
        return Cube(start=start, size=self.size)  # type: ignore[arg-type]


def cube_around(mask: np.ndarray, spacing: tuple[float, float, float]) -> Cube | None:
    """The refiner's cube centred on ``mask``'s centroid (None: too few voxels)."""
    idx = np.nonzero(mask)
    if len(idx[0]) < MIN_VOXELS:
        return None
    size = tuple(max(1, int(round(CUBE_MM / s))) for s in spacing)
    centre = [float(np.mean(i)) for i in idx]
    start = tuple(int(round(c - n / 2)) for c, n in zip(centre, size, strict=True))
    return Cube(start=start, size=size)  # type: ignore[arg-type]


def cut(array: np.ndarray, cube: Cube) -> np.ndarray:
    """The cube's part of a scan-grid array, zero outside the scan (float32, scan voxels)."""
    out = np.zeros(cube.size, dtype=np.float32)
    vol, part = cube.clipped(array.shape)
    out[part] = array[vol]
    return out


def to_mm_grid(array: np.ndarray, mode: str = "trilinear") -> torch.Tensor:
    """A cube in scan voxels resampled to the refiner's 1 mm grid (CUBE_MM per axis)."""
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if tuple(x.shape[-3:]) == (CUBE_MM,) * 3:
        return x[0, 0]
    if mode == "nearest":
        return F.interpolate(x, size=(CUBE_MM,) * 3, mode="nearest")[0, 0]
    return F.interpolate(x, size=(CUBE_MM,) * 3, mode="trilinear", align_corners=False)[0, 0]


def from_mm_grid(cube_1mm: torch.Tensor, size: tuple[int, int, int]) -> np.ndarray:
    """A 1 mm refiner cube resampled back to the scan's voxels (``Cube.size``)."""
    if tuple(cube_1mm.shape) == tuple(size):
        return cube_1mm.numpy()
    x = cube_1mm[None, None].float()
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def normalise_cube(image: torch.Tensor) -> torch.Tensor:
    """Robust scaling of the cube's intensities to about [0, 1] (percentiles of the non-zero
    voxels, so padding outside the scan does not count)."""
    values = image[image != 0]
    if values.numel() < 10:
        return torch.zeros_like(image)
    q = torch.tensor([p / 100 for p in CLIP_PERCENTILES])
    sample = values if values.numel() <= 200_000 else values[:: values.numel() // 200_000 + 1]
    lo, hi = torch.quantile(sample.float(), q).tolist()
    return ((image - lo) / max(hi - lo, 1e-6)).clamp(-0.5, 1.5)


def refiner_input(image: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The network's input (1, 3, D, H, W): the normalised cube, the prior probability and
    the scan's intensity evidence for the prior's outline (``edge_refine.side_evidence``,
    scaled to +-1: what the histograms of its core and its surroundings say of each voxel)."""
    evidence = torch.zeros_like(image)
    mask = (prior > EVIDENCE_THRESHOLD).numpy()
    if mask.sum() >= MIN_VOXELS:
        values = image.numpy()
        found = side_evidence(values, mask, values)
        if found is not None:
            evidence = torch.from_numpy(found.astype(np.float32)) / EVIDENCE_CLIP
    return torch.stack([normalise_cube(image), prior.float(), evidence])[None]


def prior_logits(prior: torch.Tensor) -> torch.Tensor:
    """Clipped log-odds of a probability."""
    p = prior.float().clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p)).clamp(-LOGIT_CLIP, LOGIT_CLIP)


def network_window(prior: torch.Tensor, floor: float = 0.01) -> tuple[slice, ...]:
    """The part of a 1 mm cube the network needs to see: the prior's support (above
    ``floor``) with ``CONTEXT`` voxels around it, each side a multiple of 16 (the VNet's
    stride); outside it the refined probability is the prior's (below ``floor``)."""
    idx = torch.nonzero(prior > floor)
    if len(idx) == 0:
        return (slice(0, CUBE_MM),) * 3
    window = []
    for lo, hi in zip(idx.min(0).values.tolist(), idx.max(0).values.tolist(), strict=True):
        size = min(CUBE_MM, -(-(hi - lo + 1 + 2 * CONTEXT) // 16) * 16)
        start = min(max((lo + hi + 1) // 2 - size // 2, 0), CUBE_MM - size)
        window.append(slice(start, start + size))
    return tuple(window)


class Refiner(torch.nn.Module):
    """Prior log-odds plus a VNet's correction from (image, prior); starts as the identity.

    Args:
        n_filters: the VNet's base width.
    """

    def __init__(self, n_filters: int = 8):
        super().__init__()
        self.net = VNet(n_channels=3, n_classes=1, n_filters=n_filters)
        last = self.net.decoder1.out_conv
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)

    @classmethod
    def around(cls, net: torch.nn.Module) -> Refiner:
        """A refiner computing with ``net`` (e.g. a bfloat16 copy of another refiner's)."""
        refiner = cls.__new__(cls)
        torch.nn.Module.__init__(refiner)
        refiner.net = net
        return refiner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refined log-odds (N, 1, ...) from input (N, 3, ...) = (image, prior, evidence)."""
        return prior_logits(x[:, 1:2]) + self.net(x)


@torch.no_grad()
def refine_probabilities(
    refiner: Refiner,
    image: np.ndarray,
    fused: np.ndarray,
    spacing: tuple[float, float, float],
    threshold: float = 0.5,
    device: torch.device | None = None,
    cubes: list[Cube | None] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Each side's fused probability refined inside its cube (scan grid in, scan grid out).

    Args:
        refiner: the trained refiner (eval mode).
        image: the scan (or the window of it that ``fused`` covers), scan voxels.
        fused: (2, ...) fused probabilities on the same voxels as ``image``.
        spacing: the scan's voxel size (mm).
        threshold: where a side is considered found (the cube's centre).
        device: where to run the network.
        cubes: each side's cube when already known (:func:`side_cubes`), else found here.

    Returns:
        (refined (2, ...) probabilities, per side the voxels above threshold after - before).
    """
    out = fused.astype(np.float32, copy=True)
    change = {}
    cubes = side_cubes(fused, spacing, threshold) if cubes is None else cubes
    found = [(c, cube) for c, cube in enumerate(cubes) if cube is not None]
    priors = [to_mm_grid(cut(fused[c], cube)) for c, cube in found]
    inputs = [
        refiner_input(to_mm_grid(cut(image, cube)), p)
        for (_, cube), p in zip(found, priors, strict=True)
    ]
    windows = common_windows([network_window(p) for p in priors])
    if inputs:  # both sides in one batch: one pass of the network (faster on a CPU)
        batch = torch.cat(
            [x[(slice(None), slice(None), *w)] for x, w in zip(inputs, windows, strict=True)]
        )
        if device is not None:
            batch = batch.to(device)
        refined = torch.sigmoid(refiner(batch))[:, 0].cpu()
    for i, ((c, cube), prior, window) in enumerate(zip(found, priors, windows, strict=True)):
        p = prior.clone()
        p[window] = refined[i]
        back = from_mm_grid(p, cube.size)
        vol, part = cube.clipped(out.shape[1:])
        out[c][vol] = back[part]
        side = ("left", "right")[c]
        change[side] = int((out[c] > threshold).sum()) - int((fused[c] > threshold).sum())
    return out, change


def common_windows(windows: list[tuple[slice, ...]]) -> list[tuple[slice, ...]]:
    """Windows of one size (the largest along each axis), each kept centred where it was and
    inside the cube, so that the sides run as one batch.

    Example:
        >>> a, b = common_windows([(slice(0, 32),) * 3, (slice(16, 64),) * 3])
        >>> a[0], b[0]
        (slice(0, 48, None), slice(16, 64, None))
    """
    if not windows:
        return []
    size = [max(w[a].stop - w[a].start for w in windows) for a in range(3)]
    out = []
    for w in windows:
        axes = []
        for a, n in enumerate(size):
            centre = (w[a].start + w[a].stop) // 2
            start = min(max(centre - n // 2, 0), CUBE_MM - n)
            axes.append(slice(start, start + n))
        out.append(tuple(axes))
    return out


def side_cubes(
    fused: np.ndarray, spacing: tuple[float, float, float], threshold: float
) -> list[Cube | None]:
    """The refiner's cube of each side of (2, ...) probabilities (None: side not found)."""
    return [cube_around(fused[c] > threshold, spacing) for c in (0, 1)]


def refiner_entry(refiner: Refiner) -> dict:
    """The bundle entry of a trained refiner (large weights in 8 bits, the rest in float16)."""
    n_filters = int(refiner.net.decoder1.out_conv.in_channels)
    return {"n_filters": n_filters, "state": int8_precision(refiner.state_dict())}


def refiner_from_entry(entry: dict, where: str, device: str | torch.device) -> Refiner:
    """Build the refiner stored in a bundle under ``"refiner"``."""
    n_filters = entry.get("n_filters") if isinstance(entry, dict) else None
    if not isinstance(n_filters, int) or isinstance(n_filters, bool) or not 1 <= n_filters <= 64:
        raise LoFiError(f"{where}: bad refiner entry (needs n_filters 1-64 and state)")
    refiner = without_init(lambda: Refiner(n_filters))
    source = f"{where} (refiner)"
    load_weights(refiner, expand_precision(entry.get("state"), source), source)
    return refiner.float().eval().to(device)


def refine_window(
    refiner: Refiner,
    data: np.ndarray,
    fused: np.ndarray,
    box: tuple[slice, ...],
    spacing: tuple[float, float, float],
    threshold: float,
    device: torch.device | None = None,
) -> tuple[np.ndarray, tuple[slice, ...], dict[str, int]]:
    """Refine ``fused`` (2, ...) lying at ``box`` of the scan ``data``: the window is first
    grown to hold both sides' cubes (so the refiner sees the scan there, not padding).

    Returns:
        (refined probabilities, the box they lie in (``box`` or larger), per-side change).
    """
    origin = tuple(-b.start for b in box)  # cubes in the scan's voxels
    cubes = [c and c.shifted(origin) for c in side_cubes(fused, spacing, threshold)]
    lo = [b.start for b in box]
    hi = [b.stop for b in box]
    for cube in filter(None, cubes):
        for a in range(3):
            lo[a] = min(lo[a], max(cube.start[a], 0))
            hi[a] = max(hi[a], min(cube.start[a] + cube.size[a], data.shape[a]))
    grown = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    window = np.zeros((2, *(b - a for a, b in zip(lo, hi, strict=True))), dtype=np.float32)
    window[(slice(None), *within(box, grown))] = fused
    cubes = [c and c.shifted(tuple(lo)) for c in cubes]  # in the grown window's voxels
    refined, change = refine_probabilities(
        refiner, data[grown], window, spacing, threshold, device, cubes
    )
    return refined, grown, change
