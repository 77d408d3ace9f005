"""Score several models scan by scan on the card's scans, with the signals that could choose
between them (for one network per contrast family).

For every scan of the card's synthetic sets (held-back maps 14-16), every real MSD test crop
(as stored, and mirrored left-right: the crops are all left-like) and the packaged synthetic
example, each model's Dice (per side; merged for crops) and its two
views' agreement are recorded, with the skewness of the image around the hippocampi (voxels
within ``--shell-mm`` of the first model's segmentation: T1-like neighbourhoods, bright white
matter and a little dark fluid, skew negative; T2-like ones positive). Printed: each model's
means, the per-scan oracle, and the choice by each signal. ``--out`` keeps the rows (JSON).

Example:
    OMP_NUM_THREADS=2 python release/compare_models.py runs/t1.pt runs/t2.pt \
        --msd runs/msd/test --n 8 --out runs/compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_card import (  # noqa: E402
    EVAL_SETS,
    EXAMPLE_SYN,
    EXAMPLE_SYN_LABEL,
    mirrored_copy,
    synthetic_cases,
)

from lofihippseg.inference.edge_refine import refine_labels  # noqa: E402
from lofihippseg.inference.fusion import fuse_to_labels  # noqa: E402
from lofihippseg.inference.model_loading import load_model  # noqa: E402
from lofihippseg.inference.postprocess import keep_largest_per_side  # noqa: E402
from lofihippseg.inference.predictor import Predictor  # noqa: E402
from lofihippseg.inference.settings import PredictSettings  # noqa: E402
from lofihippseg.io.nifti import load_image, load_label  # noqa: E402


def neighbourhood_skew(image: np.ndarray, mask: np.ndarray, spacing, shell_mm: float) -> float:
    """Skewness of the intensities within ``shell_mm`` of ``mask`` (0 when the mask is empty).

    Example:
        >>> img = np.zeros((9, 9, 9)); img[4, 4, 4] = 1
        >>> round(neighbourhood_skew(img, img > 0, (1, 1, 1), 2.0), 2) > 0
        True
    """
    if not mask.any():
        return 0.0
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
    values = image[distance <= shell_mm].astype(np.float64)
    spread = values.std()
    return float(((values - values.mean()) ** 3).mean() / spread**3) if spread > 0 else 0.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def score(labels: np.ndarray, truth: np.ndarray, merged: bool) -> list[float]:
    """Dice per side, or one Dice with the sides merged."""
    if merged:
        return [float(dice(labels > 0, truth > 0))]
    return [float(dice(labels == v, truth == v)) for v in (1, 2)]


def cases(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path, Path, bool]]:
    """(set, image, label, merged) for every scan to score."""
    out = []
    for which in args.sets:
        for image, label, _ in synthetic_cases(args.maps, args.n, args.seed, tmp, which):
            out.append((which, image, label, False))
    if args.msd is not None:
        images = sorted((args.msd / "images").glob("*.nii.gz"))
        for image in images:
            out.append(("msd", image, args.msd / "labels" / image.name, True))
        mirrored = tmp / "msd_mirrored"
        mirrored.mkdir(exist_ok=True)
        for image in images:  # real right hippocampi: the crops are all stored left-like
            label = args.msd / "labels" / image.name
            out.append((
                "msd mirrored",
                mirrored_copy(image, mirrored / image.name),
                mirrored_copy(label, mirrored / f"label_{image.name}"),
                True,
            ))  # fmt: skip
    if EXAMPLE_SYN.is_file():
        out.append(("example", EXAMPLE_SYN, EXAMPLE_SYN_LABEL, False))
    return out


def choose(rows: list[dict], n_models: int) -> None:
    """Print each model's mean, the oracle and the choice by each signal, per set."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    rules = {
        **{f"model {i}": (lambda r, i=i: i) for i in range(n_models)},
        "oracle": lambda r: int(np.argmax([np.mean(d) for d in r["dice"]])),
        "agreement": lambda r: int(np.argmax(r["agreement"])),
        "skew<0 -> model 0": lambda r: 0 if r["skew"] < 0 else 1,
    }
    if "ensemble" in rows[0]:
        rules["mean of the two"] = lambda r: "ensemble"
    for name, rule in rules.items():
        parts = []
        for s in sets:
            picked = [
                r["dice"][k] if k != "ensemble" else r[k]
                for r in rows
                if r["set"] == s
                for k in [rule(r)]
            ]
            means = np.mean(picked, axis=0)
            parts.append(f"{s} " + "/".join(f"{m:.3f}" for m in means))
        print(f"{name:>20}: " + "; ".join(parts))
    for s in sets:
        skews = [r["skew"] for r in rows if r["set"] == s]
        print(f"[{s}] neighbourhood skew {np.min(skews):+.2f} .. {np.max(skews):+.2f}, "
              f"negative in {sum(k < 0 for k in skews)}/{len(skews)}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="bundles or run folders; the first gives the shell")
    p.add_argument(
        "--maps",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg_label_maps",
    )
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--sets", nargs="*", default=list(EVAL_SETS), choices=EVAL_SETS)
    p.add_argument("--msd", type=Path, default=None)
    p.add_argument("--shell-mm", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--edge-weight", type=float, default=None, help="predict's --edge-weight")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    settings = PredictSettings(device="cpu", edge_weight=a.edge_weight)
    predictors = [Predictor(load_model(m), settings) for m in a.models]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for which, image, label, merged in cases(a, Path(tmp)):
            vol = load_image(image)
            truth = load_label(label, reference=vol, allowed={0, 1, 2}).data
            preds = [pr.predict_volume(vol) for pr in predictors]
            row = {
                "set": which,
                "case": image.name,
                "dice": [score(pr.labels, truth, merged) for pr in preds],
                "agreement": [float(pr.view_dice) for pr in preds],
                "skew": neighbourhood_skew(vol.data, preds[0].labels > 0, vol.spacing, a.shell_mm),
                "skews": {
                    str(mm): neighbourhood_skew(vol.data, preds[0].labels > 0, vol.spacing, mm)
                    for mm in (3.0, 10.0, 20.0)
                },
                "skew_foreground": neighbourhood_skew(
                    vol.data, vol.data > np.percentile(vol.data, 50), vol.spacing, 0.0
                ),
            }
            if len(preds) == 2:  # the two models' (refined) fused probabilities averaged
                maps = [pr.full(pr.fused) for pr in preds]
                labels, fused = fuse_to_labels(*maps)
                weight = predictors[0].edge_weight  # refined as predict would
                if weight > 0:
                    labels = refine_labels(vol.data, fused, labels, 0.5, weight)[0]
                labels = keep_largest_per_side(labels)
                row["ensemble"] = score(labels, truth, merged)
            rows.append(row)
            print(json.dumps(row), flush=True)
    choose(rows, len(a.models))
    if a.out is not None:
        a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
