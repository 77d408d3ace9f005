"""Training samples: loaded (or synthetic) cases -> crop, normalise, augment, views, patch.

Each sample is a pure function of ``(seed, index)``: sample ``index`` draws everything from its
own ``torch.Generator`` seeded with both. So the data stream does not depend on the number of
DataLoader workers or processes, and resuming at iteration ``i`` needs no saved data state:
iteration ``i`` uses the global indices ``i * batch .. (i + 1) * batch - 1``
(:class:`GlobalBatchSampler` hands each process its share).

Without augmentation the second view is computed on the whole normalised crop, exactly as
inference computes it, and the same patch is then cut from both views. With augmentation, a
region of the patch plus a margin (``AUGMENT_MARGIN`` of the patch on each side) is cut first,
augmented, and its view computed: augmenting whole heads costs seconds per sample on a CPU. The
view's cut-off radius is ``cutoff * max(D, H, W)`` in index units, i.e. a fixed frequency in
cycles per voxel along the longest axis, so the region's view approximates the whole crop's.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lofihippseg.errors import LoFiError
from lofihippseg.io.datasets import Case, split_dataset
from lofihippseg.io.nifti import is_image_file, load_image, load_label
from lofihippseg.models.registry import ModelSpec
from lofihippseg.preprocessing.prepare import crop_and_normalise
from lofihippseg.preprocessing.resample import resample_labelled
from lofihippseg.training.augment import augment
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.unsided import (
    declare_side,
    invert_contrast,
    mark_unsided,
    random_intensity_curve,
    to_isotropic,
)
from lofihippseg.views.frequency import frequency_view

log = logging.getLogger(__name__)
_MIX = 1_000_003  # seed * _MIX + index: distinct streams per (seed, sample)
_BOX_STREAM = 2  # the synthetic pool's boxes: SeedSequence([seed, _BOX_STREAM, k])
AUGMENT_MARGIN = 0.25  # region augmented around a patch: patch * (1 + 2 * margin) per axis


@dataclass
class PreparedCase:
    """A case after the shared preprocessing (canonical order, cropped, in [0, 1]).

    Attributes:
        case_id: name of the case.
        image: normalised crop (D, H, W) float32.
        label: label crop (D, H, W) uint8 in {0, 1, 2}, or {0, 3} for an unsided crop.
        view2: second view of the whole crop (None when not needed).
        outside: voxels of labels 1 and 2 lying outside the crop (counted as missed by Dice).
        unsided: the labels carry no side (``training.unsided``).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    view2: np.ndarray | None = None
    outside: tuple[int, int] = (0, 0)
    unsided: bool = False


def _split_all(sources: tuple[str, ...], config: TrainConfig) -> tuple[list, list]:
    train, val = [], []
    for source in sources:
        t, v = split_dataset(source, config.val_fraction, config.seed)
        train += t
        val += v
    return train, val


def collect_cases(config: TrainConfig) -> tuple[list[Case], list[Case]]:
    """Training and validation cases of all (sided) data sources, each split with its lists."""
    return _split_all(config.data or (), config)


def collect_unsided(config: TrainConfig) -> tuple[list[Case], list[Case]]:
    """Training and validation cases of the unsided sources (``TrainConfig.unsided``)."""
    return _split_all(config.unsided or (), config)  # None: none (a recipe without crops)


def prepare_arrays(
    case_id: str, image: np.ndarray, label: np.ndarray, spec: ModelSpec, with_view2: bool
) -> PreparedCase:
    """Crop and normalise an image (as inference does) and cut its label the same way.

    Example:
        >>> img = np.zeros((8, 8, 8), np.float32); img[2:6, 2:6, 2:6] = 5
        >>> prepare_arrays("c", img, np.zeros((8, 8, 8)), ModelSpec(), False).image.shape
        (6, 6, 6)
    """
    crop, box = crop_and_normalise(image, spec.crop_margin, spec.clip_percentiles)
    lab = np.asarray(label)
    inside = lab[box].astype(np.uint8)
    outside = tuple(int((lab == v).sum() - (inside == v).sum()) for v in (1, 2))
    view2 = frequency_view(crop, spec.view_mode, spec.cutoff) if with_view2 else None
    return PreparedCase(case_id, crop, inside, view2, outside)  # type: ignore[arg-type]


def load_case(
    case: Case,
    spec: ModelSpec,
    with_view2: bool,
    unsided: bool = False,
    voxel_mm: float | None = None,
) -> PreparedCase:
    """Read a labelled case from disk and prepare it.

    Args:
        case: image and label paths.
        spec: the model's preprocessing settings.
        with_view2: also compute the second (frequency) view of the whole crop.
        unsided: the labels carry no side: any label > 0 becomes ``UNSIDED``.
        voxel_mm: resample an unsided crop to this isotropic voxel size first.
    """
    if case.label is None:
        raise LoFiError(f"{case.image}: training case {case.case_id} has no label map")
    image = load_image(case.image)
    label = load_label(case.label, reference=image, allowed={0, 1, 2})
    if not unsided:
        return prepare_arrays(case.case_id, image.data, label.data, spec, with_view2)
    if voxel_mm is not None:
        data, lab = to_isotropic(image.data, label.data, image.spacing, voxel_mm)
    else:
        data, lab = image.data, mark_unsided(label.data)
    prepared = prepare_arrays(case.case_id, data, lab, spec, with_view2)
    prepared.unsided = True
    return prepared


def synthetic_label_maps(source: str) -> list[Path]:
    """Label maps for the synthetic generator: a folder of NIfTI files, a text file listing
    them (one path per line, relative to the file's folder or absolute), or ``"packaged"``."""
    if source == "packaged":
        from lofihippseg.synth.assets import packaged_label_maps

        return list(packaged_label_maps())
    path = Path(source)
    if path.is_file() and not is_image_file(path):
        try:
            lines = [ln.strip() for ln in path.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise LoFiError(f"{source}: not a readable list of label maps ({exc})") from None
        maps = [path.parent / ln for ln in lines if ln and not ln.startswith("#")]
        missing = [str(p) for p in maps if not p.is_file()]
        if missing:
            raise LoFiError(f"{source}: listed label map not found: {missing[0]}")
    else:
        maps = sorted(p for p in path.rglob("*") if is_image_file(p)) if path.is_dir() else []
    if not maps:
        raise LoFiError(f"{source}: no label maps (.nii/.nii.gz/.mgz) found for --synthetic")
    return maps


def sample_patch(
    arrays: list[torch.Tensor],
    label: torch.Tensor,
    patch: tuple[int, int, int],
    foreground_fraction: float,
    g: torch.Generator,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Zero-pad each axis up to the patch (centred), then cut one patch from all arrays.

    With probability ``foreground_fraction`` (and a non-empty label) the patch is centred on a
    random foreground voxel; otherwise its position is uniform.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> (x,), y = sample_patch([torch.rand(20, 9, 40)], torch.zeros(20, 9, 40), (16,) * 3, 0, g)
        >>> tuple(x.shape), tuple(y.shape)
        ((16, 16, 16), (16, 16, 16))
    """
    pads = []
    for size, p in zip(label.shape, patch, strict=True):
        extra = max(p - size, 0)
        pads.append((extra // 2, extra - extra // 2))
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad order: last axis first
    arrays = [torch.nn.functional.pad(a, flat) for a in arrays]
    label = torch.nn.functional.pad(label, flat)
    shape = label.shape
    use_fg = foreground_fraction > 0 and float(torch.rand((), generator=g)) < foreground_fraction
    fg = torch.nonzero(label) if use_fg else None
    if fg is not None and len(fg):
        centre = fg[int(torch.randint(len(fg), (), generator=g))].tolist()
        starts = [
            min(max(c - p // 2, 0), s - p) for c, p, s in zip(centre, patch, shape, strict=True)
        ]
    else:
        starts = [
            int(torch.randint(s - p + 1, (), generator=g))
            for s, p in zip(shape, patch, strict=True)
        ]
    box = tuple(slice(s, s + p) for s, p in zip(starts, patch, strict=True))
    return [a[box] for a in arrays], label[box]


class TrainingSamples(Dataset):
    """Map-style dataset of training samples; item ``index`` is deterministic given the seed.

    Items are dicts: ``image`` (1, *patch) float32, ``label`` (*patch) int64, and ``view2``
    (1, *patch) float32 when the second network sees the frequency view in training.

    Example:
        >>> ds = TrainingSamples(cases, config)  # doctest: +SKIP
        >>> ds[0]["image"].shape  # doctest: +SKIP
        torch.Size([1, 128, 128, 128])
    """

    def __init__(self, cases: list[Case], config: TrainConfig, unsided: list[Case] | None = None):
        self.cases = list(cases)
        self.unsided = list(unsided or [])
        self.config = config
        self.with_view2 = config.train_second_view and not config.single_view
        self._cache: dict[tuple[bool, int], PreparedCase] = {}
        self._boxes: dict[int, PreparedCase] = {}  # the synthetic pool's boxes made so far
        self._synth = None
        if not self.cases and not self.unsided and config.synthetic is None:
            raise LoFiError(
                "no training cases: every case went to validation; lower --val-fraction"
            )
        if config.cache_cases:
            for i in range(len(self.cases)):
                self._case(i)
            for i in range(len(self.unsided)):
                self._case(i, unsided=True)

    def __len__(self) -> int:
        return sys.maxsize  # an endless stream; the sampler decides which indices are drawn

    def _case(self, i: int, unsided: bool = False) -> PreparedCase:
        key = (unsided, i)
        if key in self._cache:
            return self._cache[key]
        view_now = self.with_view2 and not self.config.use_augmentation
        case = (self.unsided if unsided else self.cases)[i]
        voxel = self.config.unsided_voxel_mm if unsided else None
        prepared = load_case(case, self.config.model, view_now, unsided, voxel)
        if self.config.cache_cases:
            self._cache[key] = prepared
        return prepared

    def _synthetic(self, g: torch.Generator) -> PreparedCase:
        """A synthetic box: fresh, or one of ``synthetic_pool`` seeded boxes made once."""
        pool = self.config.synthetic_pool
        if pool <= 0:
            return self._new_synthetic(g)
        k = int(torch.randint(pool, (), generator=g))
        if k not in self._boxes:
            seed = np.random.SeedSequence([self.config.seed, _BOX_STREAM, k]).generate_state(1)
            self._boxes[k] = self._new_synthetic(torch.Generator().manual_seed(int(seed[0])))
        return self._boxes[k]

    def _new_synthetic(self, g: torch.Generator) -> PreparedCase:
        if self._synth is None:  # built lazily: in each DataLoader worker
            from lofihippseg.synth.generator import SyntheticGenerator

            self._synth = SyntheticGenerator(
                synthetic_label_maps(self.config.synthetic), self.config.synth_config()
            )
        s = self._synth.sample(g)
        image, label = s.image.numpy(), s.label.numpy()
        if self.config.synthetic_voxel_mm is not None:
            low, high = self.config.synthetic_voxel_mm
            mm = low + (high - low) * float(torch.rand((), generator=g))
            image, label, _ = resample_labelled(image, label, s.affine, mm)
        return prepare_arrays("synthetic", image, label, self.config.model, with_view2=False)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        g = torch.Generator().manual_seed((cfg.seed * _MIX + int(index)) % (2**63 - 1))
        others = bool(self.cases) or cfg.synthetic is not None
        unsided = bool(self.unsided) and (
            not others or float(torch.rand((), generator=g)) < cfg.unsided_fraction
        )
        # an item's index is iteration * batch size + its place in the batch (GlobalBatchSampler)
        synthetic_share = cfg.synthetic_fraction_at(int(index) // cfg.batch_size)
        synthetic = (
            not unsided
            and cfg.synthetic is not None
            and (not self.cases or float(torch.rand((), generator=g)) < synthetic_share)
        )
        if unsided:
            case = self._case(int(torch.randint(len(self.unsided), (), generator=g)), True)
        elif synthetic:
            case = self._synthetic(g)
        else:
            case = self._case(int(torch.randint(len(self.cases), (), generator=g)))
        image = torch.from_numpy(case.image)[None]
        label = torch.from_numpy(case.label.astype(np.int64))
        view2 = None if case.view2 is None else torch.from_numpy(case.view2)[None]
        if unsided and cfg.unsided_side != "resolve":
            mirror = float(torch.rand((), generator=g)) < 0.5
            image, view2, label = declare_side(image, view2, label, cfg.unsided_side, mirror)
        if unsided and float(torch.rand((), generator=g)) < cfg.unsided_invert_prob:
            image, view2 = invert_contrast(image), None  # the view follows the new contrast
        remap = unsided and cfg.unsided_remap_prob > 0  # no draw when off: streams unchanged
        if remap and float(torch.rand((), generator=g)) < cfg.unsided_remap_prob:
            image, view2 = random_intensity_curve(image, g), None
        if cfg.use_augmentation:
            region = tuple(p + 2 * max(int(p * AUGMENT_MARGIN), 8) for p in cfg.patch_size)
            (image,), label = sample_patch([image[0]], label, region, cfg.foreground_fraction, g)
            image, label = augment(image[None], label, cfg.augment, g)
            view2 = None
        if self.with_view2 and view2 is None:
            view2 = frequency_view(image, cfg.model.view_mode, cfg.model.cutoff)
        arrays = [image[0]] + ([view2[0]] if self.with_view2 else [])
        patches, label = sample_patch(arrays, label, cfg.patch_size, cfg.foreground_fraction, g)
        item = {"image": patches[0][None].float(), "label": label.long()}
        if self.with_view2:
            item["view2"] = patches[1][None].float()
        return item


class GlobalBatchSampler(Sampler[int]):
    """Indices of iterations ``start .. stop - 1``: this process's share of each global batch.

    Global batch ``i`` is indices ``i * B .. i * B + B - 1``; process ``r`` of ``W`` takes the
    ``r``-th contiguous block of ``B / W``. So W processes see exactly one process's batches.

    Example:
        >>> list(GlobalBatchSampler(1, 2, batch_size=4, rank=1, world_size=2))
        [6, 7]
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise LoFiError(f"batch size {batch_size} must be divisible by {world_size} processes")
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.local = batch_size // world_size
        self.offset = rank * self.local

    def __iter__(self) -> Iterator[int]:
        for it in range(self.start, self.stop):
            base = it * self.batch_size + self.offset
            yield from range(base, base + self.local)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0) * self.local
