"""Training cubes for the outline refiner (``lofihippseg.inference.refiner``).

Synthetic scans of the training label maps 01-13 (never the held-back 14-16) in the card's
recipes (random contrast, the generator's low-field T2 defaults, T2 resampled to 1-2 mm, T1-like)
and the MSD training crops go through the shipped model's ``predict`` without edge refinement;
each found side's cube (scan, fused probability, truth) is saved at 1 mm as one ``.npz`` per scan.

    python release/refiner_data.py --out runs/refiner_data --start 0 --count 400
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import model_card as mc  # noqa: E402
from make_pool import make_case, split_maps, t1_config, t2_config  # noqa: E402

from lofihippseg.inference import refiner as rf  # noqa: E402
from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model  # noqa: E402
from lofihippseg.inference.predictor import Predictor  # noqa: E402
from lofihippseg.inference.settings import PredictSettings  # noqa: E402
from lofihippseg.io.nifti import load_image, load_label, save_volume  # noqa: E402
from lofihippseg.synth.dataset import save_scaled_image  # noqa: E402
from lofihippseg.synth.generator import SyntheticGenerator  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--maps", type=Path, default=Path("../shared/data/synthseg_label_maps"))
    ap.add_argument("--msd", type=Path, default=None, help="MSD folder: also its training crops")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    # the pairs' own outlines (never a refiner's): what the refiner learns to correct; with the
    # mirror average when the model advises it, as predict runs them (v12's refiner learnt from
    # v9's outlines without it)
    settings = PredictSettings(edge_weight=0.0, refine=False)
    predictor = Predictor(load_model(args.model), settings)
    tmp = Path(tempfile.mkdtemp())
    if args.msd is not None:
        for cid in Path("runs/msd/train.list").read_text().split():
            dest = args.out / f"msd_{cid}.npz"
            if dest.exists():
                continue
            vol = load_image(args.msd / "imagesTr" / f"{cid}.nii.gz")
            truth = load_label(args.msd / "labelsTr" / f"{cid}.nii.gz", reference=vol).data
            cubes = side_cubes(vol, predict_full(predictor, vol), truth, merged=True)
            save(dest, cubes)
        print("msd done", flush=True)
        return
    train_maps, _ = split_maps(args.maps)
    random_cfg = mc.eval_config("random")
    configs = {"random": random_cfg, "defaults": mc.eval_config("defaults"),
               "resampled": t2_config(), "t1": t1_config()}  # fmt: skip
    gens = {k: SyntheticGenerator(train_maps, dataclasses.replace(c)) for k, c in configs.items()}
    t0 = time.time()
    for i in range(args.start, args.start + args.count):
        kind = KINDS[i % len(KINDS)]
        dest = args.out / f"{kind}_{i:05d}.npz"
        if dest.exists():
            continue
        vol, truth = synthetic(kind, gens, SEED_BASE + i, tmp)
        cubes = side_cubes(vol, predict_full(predictor, vol), truth)
        save(dest, cubes)
        done = i - args.start + 1
        print(f"{done}/{args.count} {kind} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
