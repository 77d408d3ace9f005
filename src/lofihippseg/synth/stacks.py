"""A low-field session as the scanner writes it: separate orthogonal thick-slice stacks.

A Hyperfine session holds three T2 FSE stacks (axial, coronal, sagittal; about 1.5 x 1.5 mm in
plane, 4-6 mm slices; LOWFIELD.md), and a child moves between them. For each session this module
draws one anatomy and contrast (the generator's own steps), then per stack:

1. a random rigid motion of the head (none for the first stack; up to ``motion_deg`` degrees
   about a random axis through the grid centre and ``motion_mm`` mm in a random direction);
2. the scanner-fixed bias field (the coil does not move with the head);
3. the acquisition in k-space: partial-volume blur, in-plane truncation at 1 / (2 r), the slice
   profile (rect of the slice thickness), complex noise in the acquired band;
4. sampling onto the stack's own grid (r x r in plane, s mm between slices), then the magnitude.

Labels stay in the first stack's frame (the 1 mm grid, which the first stack shares with the
head). The same anatomy, acquired with three motion-free stacks and averaged on the 1 mm grid,
is the ``_ciso``-like reference (:func:`lofihippseg.synth.acquisition.acquire`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import atomic_path
from lofihippseg.io.nifti import save_volume
from lofihippseg.synth.acquisition import Stack, acquire, gaussian_transfer
from lofihippseg.synth.config import Range, SynthConfig
from lofihippseg.synth.dataset import case_id, save_scaled_image
from lofihippseg.synth.generator import SyntheticGenerator, _normalise, _uniform

__all__ = [
    "StacksConfig",
    "StackImage",
    "StackSession",
    "StackGenerator",
    "ORIENTATION_AXIS",
    "write_stack_sessions",
]

# slice axis (canonical RAS array axis) of each named orientation
ORIENTATION_AXIS = {"sag": 0, "cor": 1, "axi": 2}


@dataclass(frozen=True)
class StacksConfig:
    """How a session's stacks are acquired (the anatomy and contrast come from ``SynthConfig``).

    Example:
        >>> StacksConfig(orientations=("cor", "axi")).motion_deg
        (0.0, 5.0)
    """

    # order of the stacks; the first is the reference frame of the labels
    orientations: tuple[str, ...] = ("axi", "cor", "sag")
    inplane_mm: Range = (1.5, 1.5)  # Hyperfine T2 FSE: about 1.5 x 1.5 mm in plane
    slice_mm: Range = (4.0, 6.0)  # each stack's own slice spacing (Hyperfine 5 mm)
    # rigid motion between stacks (children move): rotation magnitude (deg) about a random axis,
    # translation magnitude (mm) in a random direction; the first stack has none
    motion_deg: Range = (0.0, 5.0)
    motion_mm: Range = (0.0, 5.0)
    # write the stacks with the slice axis as the third voxel axis, as dcm2niix does
    slice_axis_last: bool = True

    def __post_init__(self) -> None:
        unknown = [o for o in self.orientations if o not in ORIENTATION_AXIS]
        if unknown or not self.orientations:
            raise ValueError(
                f"orientations must be among {sorted(ORIENTATION_AXIS)}, got {unknown}"
            )


@dataclass
class StackImage:
    """One stack: its image (float32, [0, 1], voxel order as written) and voxel-to-world affine."""

    name: str
    image: np.ndarray
    affine: np.ndarray
    slice_mm: float
    inplane_mm: float


@dataclass
class StackSession:
    """One synthetic session.

    Attributes:
        stacks: the stacks, the first being the reference.
        label: uint8 (D, H, W) labels on the 1 mm grid (first stack's frame): 1 left, 2 right.
        affine: the 1 mm grid's voxel-to-world affine (RAS mm).
        ciso: the motion-free ``_ciso``-like image of the same anatomy on the 1 mm grid.
        motions: per stack, the 4x4 world transform taking a point of the head in the first
            stack's frame to where it lies in that stack (identity for the first).
        source: the label map's name.
        params: the values drawn.
    """

    stacks: list[StackImage]
    label: np.ndarray
    affine: np.ndarray
    ciso: np.ndarray
    motions: list[np.ndarray]
    source: str
    params: dict = field(default_factory=dict)


def _axis_angle(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def random_motion(g: torch.Generator, degrees: Range, mm: Range) -> np.ndarray:
    """A 4x4 rigid transform: a rotation of U(degrees) about a random axis, a shift of U(mm)."""
    axis = torch.randn(3, generator=g, dtype=torch.float64).numpy()
    direction = torch.randn(3, generator=g, dtype=torch.float64).numpy()
    angle = math.radians(_uniform(g, *degrees))
    shift = _uniform(g, *mm)
    out = np.eye(4)
    out[:3, :3] = _axis_angle(axis, angle)
    out[:3, 3] = direction / np.linalg.norm(direction) * shift
    return out


def move(image: torch.Tensor, motion: np.ndarray) -> torch.Tensor:
    """The head moved by ``motion`` (world mm about the grid centre): out(x) = in(M^-1 x)."""
    shape = image.shape
    inv = torch.as_tensor(np.linalg.inv(motion), dtype=torch.float32, device=image.device)
    axes = [torch.arange(n, device=image.device, dtype=torch.float32) - (n - 1) / 2 for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # world mm (D, H, W, 3)
    src = grid @ inv[:3, :3].T + inv[:3, 3]
    size = torch.as_tensor(shape, dtype=torch.float32, device=image.device)
    norm = src / ((size - 1) / 2)  # [-1, 1], align_corners=True
    # border: a crop's edge does not turn into a black wedge that the other stacks lack
    grid_ = norm.flip(-1)[None]
    out = F.grid_sample(
        image[None, None], grid_, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0, 0]


def _interp_matrix(n_in: int, spacing: float, device: torch.device) -> tuple[torch.Tensor, int]:
    """Linear interpolation (n_out x n_in) from a centred 1 mm axis to a centred ``spacing`` one."""
    n_out = max(int(math.floor((n_in - 1) / spacing)) + 1, 1)
    pos = (torch.arange(n_out, dtype=torch.float64) - (n_out - 1) / 2) * spacing + (n_in - 1) / 2
    lo = pos.floor().clamp(0, n_in - 1).long()
    hi = (lo + 1).clamp(max=n_in - 1)
    w = (pos - lo).clamp(0, 1)
    m = torch.zeros((n_out, n_in), dtype=torch.float64)
    m[torch.arange(n_out), lo] += 1 - w
    m[torch.arange(n_out), hi] += w
    return m.to(device=device, dtype=torch.float32), n_out


def acquire_stack(
    image: torch.Tensor, stack: Stack, pv_sigma: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, np.ndarray]:
    """Acquire one stack of a clean 1 mm image on the stack's own grid.

    Args:
        image: clean 1 mm image (D, H, W), world = voxel - centre.
        stack: slice axis, in-plane and slice resolution, thickness, noise std.
        pv_sigma: partial-volume blur (voxels).
        generator: random generator (noise), on ``image.device``.

    Returns:
        The magnitude image on the stack grid (canonical axis order) and its affine.

    Example:
        >>> img = torch.rand(32, 32, 32)
        >>> out, aff = acquire_stack(img, Stack(2, 1.5, 5.0, 5.0, (0, 0, 0), 0.0), 0.5, None)
        >>> tuple(out.shape), float(aff[2, 2])
        ((21, 21, 7), 5.0)
    """
    shape = tuple(image.shape)
    freqs = [torch.fft.fftfreq(n, d=1.0, device=image.device) for n in shape]
    signal, band = [], []
    for axis, k in enumerate(freqs):
        h = gaussian_transfer(k, pv_sigma)
        if axis == stack.slice_axis:
            h = h * torch.sinc(stack.thickness_mm * k)  # the slice profile; sampled below
            b = (k.abs() <= 0.5 / stack.slice_mm).to(k.dtype)
        else:
            b = (k.abs() <= 0.5 / stack.inplane_mm).to(k.dtype)
            h = h * b
        signal.append(h)
        band.append(b)
    k_space = torch.fft.fftn(image) * (signal[1][:, None] * signal[2][None, :])
    k_space *= signal[0][:, None, None]
    if stack.noise_std > 0:
        index = [torch.nonzero(b > 0).flatten() for b in band]
        block = tuple(len(i) for i in index)
        n_band = float(np.prod(block))
        scale = stack.noise_std * image.numel() / max(n_band, 1.0) ** 0.5
        noise = torch.randn((2, *block), generator=generator, device=image.device)
        sel = (index[0][:, None, None], index[1][None, :, None], index[2][None, None, :])
        k_space[sel] += torch.complex(noise[0], noise[1]) * scale
    complex_image = torch.fft.ifftn(k_space)
    spacing = [stack.slice_mm if a == stack.slice_axis else stack.inplane_mm for a in range(3)]
    parts = []
    for part in (complex_image.real, complex_image.imag):
        for axis in range(3):
            m, _ = _interp_matrix(shape[axis], spacing[axis], image.device)
            part = torch.movedim(torch.tensordot(m, torch.movedim(part, axis, 0), dims=1), 0, axis)
        parts.append(part)
    out = torch.sqrt(parts[0] ** 2 + parts[1] ** 2)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(out.shape, spacing, strict=True)]
    return out, affine


def _slice_axis_last(image: np.ndarray, affine: np.ndarray, axis: int):
    """Reorder voxel axes so that the slice axis is the third (the affine follows)."""
    order = [a for a in range(3) if a != axis] + [axis]
    perm = np.eye(4)
    perm[:3, :3] = np.eye(3)[:, order]
    return np.ascontiguousarray(np.transpose(image, order)), affine @ perm


class StackGenerator(SyntheticGenerator):
    """Draws synthetic sessions of separate stacks with known motion between them.

    Args:
        label_maps: whole-head FreeSurfer label maps.
        config: anatomy, contrast and artefact ranges (``SynthConfig``; its ``inplane_mm`` and
            ``slice_mm`` are replaced by ``stacks``').
        stacks: the stacks' acquisition and motion.
        device: torch device.

    Example:
        >>> gen = StackGenerator(packaged_label_maps(), SynthConfig.fast())  # doctest: +SKIP
        >>> s = gen.session(torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> [st.name for st in s.stacks]  # doctest: +SKIP
        ['axi', 'cor', 'sag']
    """

    def __init__(
        self,
        label_maps: list[str | Path],
        config: SynthConfig | None = None,
        stacks: StacksConfig | None = None,
        device: str | torch.device = "cpu",
    ):
        super().__init__(label_maps, config, device)
        self.stacks_config = stacks or StacksConfig()

    def session(self, generator: torch.Generator) -> StackSession:
        """Draw one session; deterministic given the generator's state."""
        cfg, scfg, g, dev = self.config, self.stacks_config, generator, self.device
        index = int(torch.randint(len(self.paths), (1,), generator=g))
        lmap = self.label_map(index)
        seed = int(torch.randint(2**62, (1,), generator=g))
        dg = torch.Generator(device=dev).manual_seed(seed)
        shape = tuple(cfg.output_shape or lmap.compact.shape)
        flip = _uniform(g, 0.0, 1.0) < cfg.p_flip
        grid = self._sampling_grid(g, dg, lmap, shape, flip)
        src = lmap.compact[None, None].to(torch.float32)
        compact = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=True)
        compact = compact[0, 0].to(torch.long)
        del grid
        means, stds, _ = self._label_intensities(g, lmap)
        clean = means[compact] + stds[compact] * torch.randn(shape, generator=dg, device=dev)
        bias = self._bias(dg, shape)
        head = compact != lmap.background_index
        signal = float((clean * bias)[head].mean()) if bool(head.any()) else 1.0
        pv_sigma = _uniform(g, *cfg.pv_sigma)
        gamma = math.exp(float(torch.randn(1, generator=g)) * cfg.gamma_log_std)
        inplane = _uniform(g, *scfg.inplane_mm)
        stacks: list[StackImage] = []
        motions: list[np.ndarray] = []
        plain: list[Stack] = []
        for i, name in enumerate(scfg.orientations):
            slice_mm = _uniform(g, *scfg.slice_mm)
            snr = _uniform(g, *cfg.snr_range) if cfg.snr_range else None
            stack = Stack(
                slice_axis=ORIENTATION_AXIS[name],
                inplane_mm=inplane,
                slice_mm=slice_mm,
                thickness_mm=slice_mm * _uniform(g, *cfg.slice_thickness_frac),
                shift_mm=(0.0, 0.0, 0.0),
                noise_std=signal / snr if snr else 0.0,
            )
            plain.append(stack)
            motion = np.eye(4) if i == 0 else random_motion(g, scfg.motion_deg, scfg.motion_mm)
            moved = clean if i == 0 else move(clean, motion)
            data, affine = acquire_stack(moved * bias, stack, pv_sigma, dg)
            data = _normalise(_normalise(data).clamp(min=0) ** gamma).cpu().numpy()
            if scfg.slice_axis_last:
                data, affine = _slice_axis_last(data, affine, stack.slice_axis)
            stacks.append(StackImage(name, data.astype(np.float32), affine, slice_mm, inplane))
            motions.append(motion)
        # the _ciso-like reference: three motion-free orthogonal stacks averaged at 1 mm
        by_axis = {s.slice_axis: s for s in reversed(plain)}
        ciso_stacks = [
            Stack(a, inplane, s.slice_mm, s.thickness_mm, (0.0, 0.0, 0.0), s.noise_std)
            for a, s in ((a, by_axis.get(a, plain[0])) for a in (0, 1, 2))
        ]
        ciso = acquire(clean * bias, ciso_stacks, pv_sigma, dg)
        ciso = _normalise(_normalise(ciso).clamp(min=0) ** gamma).cpu().numpy()
        label = np.zeros(shape, dtype=np.uint8)
        left, right = (2, 1) if flip else (1, 2)
        compact_np = compact.cpu().numpy()
        label[compact_np == lmap.left_index] = left
        label[compact_np == lmap.right_index] = right
        affine = np.eye(4)
        affine[:3, 3] = -(np.asarray(shape, dtype=float) - 1) / 2
        params = {
            "map_index": index,
            "flip": flip,
            "inplane_mm": inplane,
            "slice_mm": [s.slice_mm for s in plain],
            "noise_std": [s.noise_std for s in plain],
            "pv_sigma": pv_sigma,
            "gamma": gamma,
        }
        return StackSession(
            stacks, label, affine, ciso.astype(np.float32), motions, lmap.name, params
        )


def motion_size(motion: np.ndarray, centre: np.ndarray | None = None) -> tuple[float, float]:
    """Rotation (degrees) and displacement (mm, of ``centre``: default the world origin)."""
    angle = math.degrees(math.acos(float(np.clip((np.trace(motion[:3, :3]) - 1) / 2, -1, 1))))
    c = np.zeros(3) if centre is None else np.asarray(centre, dtype=float)
    return angle, float(np.linalg.norm(motion[:3, :3] @ c + motion[:3, 3] - c))


def write_stack_sessions(
    label_maps: list[str | Path],
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    config: SynthConfig | None = None,
    stacks: StacksConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> list[str]:
    """Write ``n`` synthetic sessions of separate stacks (``lofihippseg synth --stacks``).

    Writes ``stacks/CASE_axi.nii.gz`` (one file per stack, on its own grid, slice axis third),
    ``labels/CASE_hipp.nii.gz`` (1 mm, in the first stack's frame), ``ciso/CASE_ciso.nii.gz``
    (the motion-free ``_ciso``-like image of the same anatomy), and ``sessions.json`` (per
    case: label map, stack files, the true motion of each stack). Case ``i`` uses seed
    ``seed * 100003 + i``.

    Returns:
        The case ids.

    Example:
        >>> write_stack_sessions(packaged_label_maps(), 2, "stacks_out")  # doctest: +SKIP
    """
    if n < 1:
        raise LoFiError(f"--n must be at least 1, got {n}")
    root = Path(out_dir)
    gen = StackGenerator(label_maps, config, stacks, device)
    records = []
    for i in tqdm(range(1, n + 1), desc="synth stacks", unit="session", disable=not progress):
        s = gen.session(torch.Generator().manual_seed(seed * 100003 + i))
        cid = case_id(i)
        entries = []
        for st, motion in zip(s.stacks, s.motions, strict=True):
            path = root / "stacks" / f"{cid}_{st.name}.nii.gz"
            save_scaled_image(st.image, st.affine, path)
            angle, shift = motion_size(motion)
            entries.append(
                {
                    "file": str(path.relative_to(root)),
                    "orientation": st.name,
                    "inplane_mm": round(st.inplane_mm, 3),
                    "slice_mm": round(st.slice_mm, 3),
                    "motion_ras_mm": np.round(motion, 6).tolist(),
                    "motion_maps": "first stack's frame -> this stack (RAS mm)",
                    "rotation_deg": round(angle, 3),
                    "translation_mm": round(shift, 3),
                }
            )
        save_volume(s.label, s.affine, root / "labels" / f"{cid}_hipp.nii.gz", np.uint8)
        save_scaled_image(s.ciso, s.affine, root / "ciso" / f"{cid}_ciso.nii.gz")
        records.append({"case": cid, "label_map": s.source, "stacks": entries})
    with atomic_path(root / "sessions.json", ".json") as tmp:
        tmp.write_text(json.dumps(records, indent=1))
    return [r["case"] for r in records]
