"""Pre-generate the synthetic training pool of the release model (LISA layout).

Synthetic generation costs seconds per case on a CPU, far more than one training iteration of
the small release network, so the CPU release run trains on a fixed pool of synthetic cases
(with the training augmentation on top) instead of drawing new ones on the fly.

Each case: a SynthSeg-style synthetic scan (:class:`~lofihippseg.synth.SyntheticGenerator`)
from one label map, then resampled to a random isotropic voxel size (so the network sees
hippocampi at 1-2 mm voxels, as in low-field ``_ciso`` images, 1.75 mm heads and the ROI
predictor's half-resolution pass). Two contrast profiles:

- ``t2``: the generator's low-field T2 priors (CSF brightest), the paper's target;
- ``t1``: T1-like priors (CSF dark, white matter brighter than grey), for domain randomisation
  so the model also copes with the packaged high-field T1 example head.

All cases use label maps 01-13 only: the held-back maps 14-16 are the model card's alone, so
choosing a checkpoint on validation never looks at them. Validation cases are other draws of
the training maps (unseen deformations and contrasts with the generator's priors), so they
measure contrast and shape variation, not unseen anatomy (the card does that).

Example:
    python -m lofihippseg.recipe.pools --maps ../shared/data/synthseg_label_maps --out pool --n 80
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from lofihippseg.io.nifti import save_volume
from lofihippseg.preprocessing.resample import resample_labelled
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.dataset import case_id, save_scaled_image
from lofihippseg.synth.generator import SyntheticGenerator

HELD_BACK = ("14", "15", "16")  # label maps never used in training
MAPS_LIST = "training_maps.list"  # written into the pool: the maps training may synthesise from


def t2_config() -> SynthConfig:
    """Low-field T2 priors of the generator (the paper's target contrast)."""
    return SynthConfig()


def t1_config() -> SynthConfig:
    """T1-like priors: dark CSF, white matter brighter than grey, thinner slices."""
    return dataclasses.replace(
        SynthConfig(),
        csf_mean=(0.05, 0.3),
        gm_mean=(0.35, 0.6),
        wm_gm_ratio=(1.15, 1.6),
        slice_mm=(1.0, 5.0),
        inplane_mm=(1.0, 1.8),
        p_three_stacks=0.5,
        snr_range=(20.0, 80.0),
    )


def randomised(config: SynthConfig) -> SynthConfig:
    """Domain randomisation for training cases (SynthSeg-style; issue 12).

    Larger head rotations (real positioning), smaller heads (young children), a share of single
    stacks at 1-3 mm along a random axis, a wider SNR and stronger bias field.
    """
    return dataclasses.replace(
        config,
        rotation_deg=25.0,
        global_scale=(0.75, 1.1),
        p_generic_acquisition=0.3,
        snr_range=(8.0, 60.0) if config.snr_range else None,
        bias_log_std=(0.0, 0.8),
    )


def random_config() -> SynthConfig:
    """Fully random per-label intensities (any contrast), with the randomised acquisition."""
    return randomised(dataclasses.replace(SynthConfig(), p_random_contrast=1.0))


CONTRASTS = ("t2", "t1", "random")


def split_maps(folder: Path) -> tuple[list[Path], list[Path]]:
    """(training maps, held-back maps) of ``training_seg_XX.nii.gz`` files."""
    maps = sorted(folder.glob("training_seg_*.nii.gz"))
    held = [p for p in maps if p.name.split("_")[-1].split(".")[0] in HELD_BACK]
    return [p for p in maps if p not in held], held


def make_case(gen: SyntheticGenerator, seed: int, voxel_range: tuple[float, float]):
    """One synthetic case at a random voxel size; returns (image, label, affine, voxel)."""
    g = torch.Generator().manual_seed(seed)
    s = gen.sample(g)
    voxel = float(voxel_range[0] + (voxel_range[1] - voxel_range[0]) * torch.rand((), generator=g))
    img, lab, aff = resample_labelled(s.image.numpy(), s.label.numpy(), s.affine, voxel)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
    return img, lab, aff, voxel


def write_pool(
    maps_dir: Path,
    out: Path,
    n_train: int,
    n_val: int,
    seed: int,
    t1_share: float,
    voxel_range: tuple[float, float],
    random_share: float = 0.0,
) -> None:
    """Write ``n_train`` + ``n_val`` cases with ``train.list``/``val.list`` and ``sources.csv``."""
    train_maps, _ = split_maps(maps_dir)
    if not train_maps:
        raise SystemExit(f"{maps_dir}: no training label maps (training_seg_01..13)")
    # Training cases get domain randomisation; validation cases keep the generator's priors.
    configs = {
        "train": {"t2": randomised(t2_config()), "t1": randomised(t1_config()),
                  "random": random_config()},
        "val": {"t2": t2_config(), "t1": t1_config(), "random": random_config()},
    }  # fmt: skip
    gens = {
        (part, kind): SyntheticGenerator(train_maps, configs[part][kind])
        for part in ("train", "val")
        for kind in CONTRASTS
    }
    rng = np.random.default_rng(seed)
    rows, lists = [], {"train": [], "val": []}
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    for k, (part, _) in enumerate(jobs, 1):
        cid = case_id(k)
        img_path = out / "imagesTr" / f"{cid}_ciso.nii.gz"
        lab_path = out / "labelsTr" / f"{cid}_hipp.nii.gz"
        u = rng.random()
        kind = "t2"
        if part == "train":
            kind = "t1" if u < t1_share else "random" if u < t1_share + random_share else "t2"
        if not (img_path.exists() and lab_path.exists()):  # resumable
            t = time.time()
            img, lab, aff, voxel = make_case(gens[part, kind], seed * 100003 + k, voxel_range)
            save_scaled_image(img, aff, img_path)
            save_volume(lab, aff, lab_path, np.uint8)
            print(
                f"{cid} {part} {kind} {voxel:.2f} mm {img.shape} {time.time() - t:.1f} s",
                flush=True,
            )
        lists[part].append(cid)
        rows.append(f"{cid},{part},{kind}\n")
    (out / "train.list").write_text("".join(f"{c}\n" for c in lists["train"]))
    (out / "val.list").write_text("".join(f"{c}\n" for c in lists["val"]))
    (out / "sources.csv").write_text("case_id,split,contrast\n" + "".join(rows))
    # the training label maps (never 14-16), for on-the-fly synthesis (TrainConfig.synthetic)
    (out / MAPS_LIST).write_text("".join(f"{p.resolve()}\n" for p in train_maps))


def write_example(
    maps_dir: Path, image_path: Path, label_path: Path, seed: int = 14, voxel_mm: float = 1.8
) -> None:
    """Write one low-field T2 example scan (and its labels) from held-back label map 14.

    Example:
        >>> write_example(Path("maps"), Path("ex.nii.gz"), Path("ex_hipp.nii.gz"))  # doctest: +SKIP
    """
    _, held = split_maps(maps_dir)
    gen = SyntheticGenerator([p for p in held if p.name.startswith("training_seg_14")], t2_config())
    img, lab, aff, _ = make_case(gen, seed, (voxel_mm, voxel_mm))
    save_scaled_image(img, aff, image_path)
    save_volume(lab, aff, label_path, np.uint8)
    print(f"wrote {image_path} ({image_path.stat().st_size / 1e6:.2f} MB) and {label_path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--maps",
        type=Path,
        default=Path("/work/shared/data/synthseg_label_maps"),
        help="folder with training_seg_01..16.nii.gz",
    )
    p.add_argument("--out", type=Path, required=True, help="pool folder (LISA layout)")
    p.add_argument("--n", type=int, default=80, help="training cases (maps 01-13)")
    p.add_argument("--n-val", type=int, default=2, help="validation cases (maps 01-13)")
    p.add_argument("--seed", type=int, default=2024, help="master seed")
    p.add_argument("--t1-share", type=float, default=0.4, help="share of T1-like training cases")
    p.add_argument(
        "--random-share", type=float, default=0.0, help="share of fully random-contrast cases"
    )
    p.add_argument("--voxel", type=float, nargs=2, default=(1.0, 2.0), help="voxel size range mm")
    a = p.parse_args()
    write_pool(a.maps, a.out, a.n, a.n_val, a.seed, a.t1_share, tuple(a.voxel), a.random_share)


if __name__ == "__main__":
    main()
