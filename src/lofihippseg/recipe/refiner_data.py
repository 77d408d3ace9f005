"""Training cubes for the outline refiner (``lofihippseg.inference.refiner``).

Synthetic scans of the training label maps 01-13 (never the held-back 14-16) in the card's
recipes (random contrast, the generator's low-field T2 defaults, T2 resampled to 1-2 mm, T1-like),
the MSD training crops and (in the recipe) the real IXI training heads go through the shipped
model's ``predict`` without edge refinement; each found side's cube (scan, fused probability,
truth) is saved at 1 mm as one ``.npz`` per scan.

    python -m lofihippseg.recipe.refiner_data --out runs/refiner_data --start 0 --count 400
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lofihippseg.inference import refiner as rf
from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image, load_label, save_volume
from lofihippseg.recipe import card as mc
from lofihippseg.recipe.pools import make_case, split_maps, t1_config, t2_config
from lofihippseg.synth.dataset import save_scaled_image
from lofihippseg.synth.generator import SyntheticGenerator

KINDS = ("random", "random", "defaults", "resampled", "t1")  # drawn in turn
SEED_BASE = 700_000  # far from the card's and the validation twins' seeds


def side_cubes(vol, fused_full: np.ndarray, truth: np.ndarray, merged: bool = False) -> dict:
    """(image, prior, truth) cubes at 1 mm for each side found by the model."""
    out = {}
    for c in (0, 1):
        prior = fused_full[c]
        if merged:  # MSD crops: one hippocampus, either channel
            prior = np.maximum(fused_full[0], fused_full[1])
        cube = rf.cube_around(prior > 0.5, vol.spacing)
        if cube is None:
            continue
        target = (truth > 0) if merged else (truth == c + 1)
        image = rf.to_mm_grid(rf.cut(vol.data, cube)).numpy()
        # scaled into float16's range (the refiner's normalisation does not see the scale)
        out[f"image{c}"] = (image / max(float(np.abs(image).max()), 1e-6)).astype(np.float16)
        out[f"prior{c}"] = rf.to_mm_grid(rf.cut(prior, cube)).numpy().astype(np.float16)
        t = rf.to_mm_grid(rf.cut(target.astype(np.float32), cube)).numpy()
        out[f"truth{c}"] = (t > 0.5).astype(np.uint8)
        if merged:
            break
    return out


def save(dest: Path, cubes: dict) -> None:
    """Write atomically (a trainer may be reading the folder)."""
    tmp = dest.with_suffix(".part.npz")
    np.savez(tmp, **cubes)
    tmp.replace(dest)


def predict_full(predictor: Predictor, vol) -> np.ndarray:
    pred = predictor.predict_volume(vol)
    return pred.full(pred.fused)


def synthetic(kind: str, gens: dict, seed: int, tmp: Path):
    g = gens[kind]
    if kind in ("resampled", "t1"):
        img, lab, aff, _ = make_case(g, seed, (1.0, 2.0) if kind == "resampled" else (1.0, 1.5))
    else:
        s = g.sample(torch.Generator().manual_seed(seed))
        img, lab, aff = s.image.numpy(), s.label.numpy(), s.affine
    ip, lp = tmp / "img.nii", tmp / "lab.nii"
    save_scaled_image(img, aff, ip)
    save_volume(lab, aff, lp, np.uint8)
    vol = load_image(ip)
    return vol, load_label(lp, reference=vol, allowed={0, 1, 2}).data


def labelled_cubes(
    out: Path, predictor: Predictor, scans: list[tuple[str, Path, Path]], merged: bool = False
) -> int:
    """Write one ``NAME.npz`` per labelled scan (``(NAME, image, labels)``) not yet done;
    ``merged``: one unsided hippocampus (MSD crops), else labels 1 left, 2 right. Returns the
    count written."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, image, label in scans:
        dest = out / f"{name}.npz"
        if dest.exists():
            continue
        vol = load_image(image)
        allowed = None if merged else {0, 1, 2}
        truth = load_label(label, reference=vol, allowed=allowed).data
        save(dest, side_cubes(vol, predict_full(predictor, vol), truth, merged=merged))
        written += 1
    return written


def msd_cubes(out: Path, predictor: Predictor, msd: Path, cases: list[str]) -> int:
    """Write one ``msd_ID.npz`` per MSD training crop not yet done; returns the count written."""
    scans = [(f"msd_{c}", msd / "imagesTr" / f"{c}.nii.gz", msd / "labelsTr" / f"{c}.nii.gz")
             for c in cases]  # fmt: skip
    return labelled_cubes(out, predictor, scans, merged=True)


def real_head_cubes(out: Path, predictor: Predictor, heads: list) -> int:
    """Write one ``real_NAME.npz`` per labelled real head (``io.datasets.Case``: image and
    hippocampus labels 1 left, 2 right) not yet done; returns the count written."""
    scans = [(f"real_{c.case_id}", Path(c.image), Path(c.label)) for c in heads]
    return labelled_cubes(out, predictor, scans)


def synthetic_cubes(
    out: Path, predictor: Predictor, maps: Path, start: int, count: int, log=print
) -> int:
    """Write the cubes of synthetic scans ``start`` .. ``start + count - 1`` of the training maps
    (seeds ``SEED_BASE + i``; resumable: done scans are skipped); returns the count written."""
    out.mkdir(parents=True, exist_ok=True)
    train_maps, _ = split_maps(maps)
    configs = {"random": mc.eval_config("random"), "defaults": mc.eval_config("defaults"),
               "resampled": t2_config(), "t1": t1_config()}  # fmt: skip
    gens = {k: SyntheticGenerator(train_maps, dataclasses.replace(c)) for k, c in configs.items()}
    t0, written = time.time(), 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(start, start + count):
            kind = KINDS[i % len(KINDS)]
            dest = out / f"{kind}_{i:05d}.npz"
            if dest.exists():
                continue
            vol, truth = synthetic(kind, gens, SEED_BASE + i, Path(tmp))
            save(dest, side_cubes(vol, predict_full(predictor, vol), truth))
            written += 1
            log(f"{i - start + 1}/{count} {kind} {time.time() - t0:.0f}s")
    return written


def pairs_predictor(model: Path) -> Predictor:
    """``predict`` as it runs a bundle's pairs, without its refiner or edge refinement (the
    outlines the refiner learns to correct; with the mirror average when the bundle advises it)."""
    return Predictor(load_model(str(model)), PredictSettings(edge_weight=0.0, refine=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--maps", type=Path, default=Path("../shared/data/synthseg_label_maps"))
    ap.add_argument("--msd", type=Path, default=None, help="MSD folder: also its training crops")
    ap.add_argument("--msd-train", type=Path, default=Path("runs/msd/train.list"),
                    help="the MSD training split's list (lofihippseg.recipe.msd)")  # fmt: skip
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    predictor = pairs_predictor(args.model)
    if args.msd is not None:
        msd_cubes(args.out, predictor, args.msd, args.msd_train.read_text().split())
        print("msd done", flush=True)
        return
    synthetic_cubes(args.out, predictor, args.maps, args.start, args.count)


if __name__ == "__main__":
    main()
