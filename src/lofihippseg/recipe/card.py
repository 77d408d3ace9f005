"""Print the figures of the release model's card (rerun it to check them).

1. Synthetic validation: ``--n`` scans per set made (fixed seeds) from the held-back label
   maps 14-16, which the release model never saw in training (``eval_config``): the generator's
   defaults (whole head, 1 mm, three stacks); fully random contrast at 1-3 mm; low-field T2 at a
   random isotropic voxel size of 1-2 mm (the first card's set). Dice, HD95 and volumes per side
   against the exact labels, sides, ROI use and CPU seconds.
2. The packaged real T1 head (no labels): volumes per side, whether label 1 lies on the left
   (smaller world x), and the CPU time of one prediction.
3. The packaged synthetic low-field example scan, if present, against its labels.
4. ``--msd DIR``: the real MSD test crops of ``lofihippseg.recipe.msd`` (``DIR/images``,
   ``DIR/labels``; never trained on), Dice with the sides merged (a crop has no side) and the
   predicted / true volume; as stored (all left-like) and mirrored left-right (right-like).
5. Where the boundary can be trusted: each synthetic scan's per-side edge visibility (the
   hippocampus's contrast to a shell 2-3 voxels outside it, over the spread inside it) beside
   its Dice, the correlation of the two, and mean Dice by visibility tercile.

Every prediction uses ``predict``'s default settings on the CPU (ROI strategy included).

Example:
    OMP_NUM_THREADS=1 python -m lofihippseg.recipe.card --n 6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.datasets import Case
from lofihippseg.io.nifti import load_image, load_label, save_volume
from lofihippseg.metrics.evaluate import compute_case_metrics
from lofihippseg.metrics.visibility import edge_visibility
from lofihippseg.recipe.pools import make_case, random_config, split_maps, t2_config
from lofihippseg.synth.dataset import save_scaled_image
from lofihippseg.synth.generator import SyntheticGenerator
from lofihippseg.training.unsided import merged_dice

PACKAGE = Path(__file__).resolve().parents[1] / "data"
EXAMPLE_T1 = PACKAGE / "examples" / "example_brain_t1.nii.gz"
EXAMPLE_SYN = PACKAGE / "examples" / "synthetic_lowfield_example.nii.gz"
EXAMPLE_SYN_LABEL = PACKAGE / "examples" / "synthetic_lowfield_example_hipp.nii.gz"


def side_summary(labels: np.ndarray, affine: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volume (mL) and mean world x (mm) of labels 1 and 2.

    Example:
        >>> side_summary(np.ones((2, 2, 2), np.uint8), np.eye(4), 1.0)["left_ml"]
        8.0
    """
    out: dict[str, float] = {}
    for value, side in ((1, "left"), (2, "right")):
        idx = np.argwhere(labels == value)
        out[f"{side}_ml"] = float(len(idx) * voxel_ml)
        out[f"{side}_x"] = (
            float((affine[:3, :3] @ idx.mean(0) + affine[:3, 3])[0]) if len(idx) else float("nan")
        )
    return out


def plausible(s: dict[str, float], low: float = 1.5, high: float = 6.0) -> bool:
    """Two hippocampi of plausible size, label 1 on the left (smaller world x)."""
    sizes = all(low <= s[f"{side}_ml"] <= high for side in ("left", "right"))
    return sizes and s["left_x"] < s["right_x"]


def run_case(predictor: Predictor, image: Path, label: Path | None) -> dict:
    """Predict one scan; metrics against ``label`` when given."""
    vol = load_image(image)
    t = time.perf_counter()
    pred = predictor.predict_volume(vol)
    seconds = time.perf_counter() - t
    row = {
        "seconds": seconds,
        "roi": pred.info.get("roi_boxes") or pred.info.get("roi_fallback"),
        "roi_source": pred.info.get("roi_source"),
        "roi_regrown": bool(pred.info.get("roi_regrown")),
        "family": pred.info.get("contrast_family"),
        "side_search": (pred.info.get("roi_side_search") or {}).get("by"),
        **side_summary(pred.labels, vol.affine, vol.voxel_volume_ml),
    }
    if label is not None:
        gt = load_label(label, reference=vol, allowed={0, 1, 2}).data
        metrics = compute_case_metrics(pred.labels, gt, vol.spacing)
        for value, side in ((1, "left"), (2, "right")):
            row[f"dice_{side}"] = float(metrics[value]["dice"])
            row[f"hd95_{side}"] = float(metrics[value]["hd95"])
            row[f"gt_{side}_ml"] = float(metrics[value]["volume_gt_ml"])
            row[f"visibility_{side}"] = edge_visibility(vol.data, gt == value) or 0.0
    return row


def run_crop(predictor: Predictor, image: Path, label: Path) -> dict:
    """Predict one crop without side: Dice and volumes with the sides merged."""
    vol = load_image(image)
    pred = predictor.predict_volume(vol)
    truth = load_label(label, reference=vol, allowed={0, 1, 2}).data
    dice = merged_dice(torch.from_numpy(pred.labels), truth)
    ratio = float((pred.labels > 0).sum()) / max(int((truth > 0).sum()), 1)
    return {"dice": dice, "ratio": ratio, "family": pred.info.get("contrast_family")}


def mirrored_copy(path: Path, out: Path) -> Path:
    """Write ``path`` flipped along its voxel axis nearest world x, on the same affine: the
    anatomy mirrored left-right (an MSD crop, stored left-like, becomes a right hippocampus)."""
    img = nib.load(path)
    axis = int(np.argmax(np.abs(img.affine[0, :3])))
    data = np.flip(np.asanyarray(img.dataobj), axis).copy()
    nib.save(nib.Nifti1Image(data, img.affine, img.header), out)
    return out


def msd_summary(folder: Path, predictor: Predictor) -> None:
    """Print the merged Dice over the MSD test crops in ``folder`` (images/, labels/), as stored
    (all left-like) and mirrored left-right (right hippocampi)."""
    images = sorted((folder / "images").glob("*.nii.gz"))
    if not images:
        print(f"[msd] no crops in {folder}/images")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for mirrored in (False, True):
            rows = []
            for p in images:
                image, label = p, folder / "labels" / p.name
                if mirrored:
                    image = mirrored_copy(image, Path(tmp) / f"image_{p.name}")
                    label = mirrored_copy(label, Path(tmp) / f"label_{p.name}")
                rows.append(run_crop(predictor, image, label))
            dice = np.array([r["dice"] for r in rows])
            ratio = np.array([r["ratio"] for r in rows])
            kind = "mirrored to right-like" if mirrored else "as stored (left-like)"
            print(f"[msd] {len(rows)} real test crops {kind}, sides merged: mean Dice "
                  f"{dice.mean():.4f} (median {np.median(dice):.3f}, min {dice.min():.3f}); "
                  f"predicted / true volume median {np.median(ratio):.2f} (mean "
                  f"{ratio.mean():.2f}){_families(rows)}")  # fmt: skip


def _families(rows: list[dict]) -> str:
    """``; contrast family t1 38, t2 3`` when the model chose among families, else ''."""
    counts = Counter(r["family"] for r in rows if r.get("family") is not None)
    if not counts:
        return ""
    return "; contrast family " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


def visibility_summary(name: str, rows: list[dict]) -> None:
    """Print how Dice follows the edge's visibility over the sides of a set's scans."""
    vis = np.array([r[f"visibility_{s}"] for r in rows for s in ("left", "right")])
    dice = np.array([r[f"dice_{s}"] for r in rows for s in ("left", "right")])
    if len(vis) < 3 or vis.std() == 0 or dice.std() == 0:
        return
    corr = float(np.corrcoef(vis, dice)[0, 1])
    cuts = np.quantile(vis, [1 / 3, 2 / 3])
    bins = np.digitize(vis, cuts)
    parts = [
        f"{lo:.2f}-{hi:.2f}: {dice[bins == b].mean():.3f}"
        for b, (lo, hi) in enumerate(zip([vis.min(), *cuts], [*cuts, vis.max()], strict=True))
        if (bins == b).any()
    ]
    print(f"[{name}] edge visibility vs Dice over {len(vis)} hippocampi: correlation "
          f"{corr:+.2f}; mean Dice by visibility tercile {'; '.join(parts)}")  # fmt: skip


def eval_config(name: str):
    """Generator settings of an evaluation set (all on held-back maps 14-16).

    ``defaults``: the generator's defaults (whole head, 1 mm grid, three Hyperfine stacks);
    ``random``: fully random per-label contrast, one stack at 1-3 mm along a random axis;
    ``resampled``: low-field T2 resampled to random 1-2 mm voxels (the first card's set).
    """
    import dataclasses

    from lofihippseg.synth.config import SynthConfig

    if name == "random":
        return dataclasses.replace(random_config(), p_generic_acquisition=1.0, rotation_deg=15.0,
                                   global_scale=(1.0, 1.0))  # fmt: skip
    return SynthConfig() if name == "defaults" else t2_config()


EVAL_SETS = ("defaults", "random", "resampled")


def synthetic_cases(
    maps: Path, n: int, seed: int, folder: Path, which: str = "resampled", anatomy: str = "held"
) -> list[tuple[Path, Path, str]]:
    """Write ``n`` scans (fixed seeds ``seed * 1000 + i``) of the held-back maps 14-16 (the
    card), or of the training maps 01-13 with ``anatomy="train"`` (validation twins: what levers
    are chosen on, so that choosing never looks at the card's anatomy), and return (image,
    label, description)."""
    train, held = split_maps(maps)
    gen = SyntheticGenerator(held if anatomy == "held" else train, eval_config(which))
    cases = []
    for i in range(n):
        if which == "resampled":
            img, lab, aff, voxel = make_case(gen, seed * 1000 + i, (1.0, 2.0))
            desc = f"{voxel:.2f} mm {img.shape}"
        else:
            sample = gen.sample(torch.Generator().manual_seed(seed * 1000 + i))
            img, lab, aff = sample.image.numpy(), sample.label.numpy(), sample.affine
            p = sample.params
            desc = f"1 mm grid, slices {p['slice_mm']:.1f} mm axes {p['slice_axes']}"
        ip, lp = folder / f"{which}_{i}.nii.gz", folder / f"{which}_{i}_hipp.nii.gz"
        save_scaled_image(img, aff, ip)
        save_volume(lab, aff, lp, np.uint8)
        cases.append((ip, lp, desc))
    return cases


def found_on_own_side(row: dict) -> bool:
    """Both hippocampi found (Dice > 0.1) and label 1 left of label 2 in world x."""
    found = row.get("dice_left", 1) > 0.1 and row.get("dice_right", 1) > 0.1
    return bool(found and row["left_x"] < row["right_x"])


def summarise(name: str, rows: list[dict]) -> None:
    """Print one evaluation set's means and counts."""
    for key in ("dice_left", "dice_right", "hd95_left", "hd95_right", "seconds"):
        vals = np.array([r[key] for r in rows])
        print(
            f"[{name}] mean {key}: {vals.mean():.3f} "
            f"(median {np.median(vals):.3f}, min {vals.min():.3f}, max {vals.max():.3f})"
        )
    ratios = [r[f"{s}_ml"] / r[f"gt_{s}_ml"] for r in rows for s in ("left", "right")]
    print(f"[{name}] predicted / true volume: median {np.median(ratios):.2f} "
          f"(mean {np.mean(ratios):.2f}, {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    roi = sum(isinstance(r["roi"], list) for r in rows)
    by_localiser = sum(isinstance(r["roi"], list) and r["roi_source"] == "localiser" for r in rows)
    own = sum(found_on_own_side(r) for r in rows)
    ok = sum(plausible(r) for r in rows)
    print(f"[{name}] both found on their own side {own}/{len(rows)}; ROI used (no fallback) "
          f"{roi}/{len(rows)} (located by the localiser {by_localiser}); "
          f"plausible volumes (2 x 1.5-6 mL) {ok}/{len(rows)}{_families(rows)}")  # fmt: skip


def _roi(row: dict) -> str:
    regrown = ", regrown" if row["roi_regrown"] else ""
    return f"roi ({row['roi_source']}{regrown}) {row['roi']}"


def _fmt(row: dict) -> str:
    parts = [f"L {row['left_ml']:.2f} mL, R {row['right_ml']:.2f} mL"]
    if "dice_left" in row:
        parts.append(f"(truth L {row['gt_left_ml']:.2f}, R {row['gt_right_ml']:.2f})")
        parts.append(f"Dice L {row['dice_left']:.3f} R {row['dice_right']:.3f}")
        parts.append(f"HD95 L {row['hd95_left']:.1f} R {row['hd95_right']:.1f} mm")
    if "visibility_left" in row:
        parts.append(f"visibility L {row['visibility_left']:.2f} R {row['visibility_right']:.2f}")
    parts.append(f"left-on-left {row['left_x'] < row['right_x']}")
    if row.get("family") is not None:
        parts.append(f"family {row['family']}")
    parts.append(f"{row['seconds']:.1f} s")
    return ", ".join(parts)


def _set_figures(rows: list[dict]) -> dict:
    """One synthetic set's figures (what the card's tables show)."""
    ratios = [r[f"{s}_ml"] / r[f"gt_{s}_ml"] for r in rows for s in ("left", "right")]
    return {
        "n": len(rows),
        "dice_left": float(np.mean([r["dice_left"] for r in rows])),
        "dice_right": float(np.mean([r["dice_right"] for r in rows])),
        "hd95_left": float(np.mean([r["hd95_left"] for r in rows])),
        "hd95_right": float(np.mean([r["hd95_right"] for r in rows])),
        "volume_ratio_median": float(np.median(ratios)),
        "plausible": int(sum(plausible(r) for r in rows)),
        "own_side": int(sum(found_on_own_side(r) for r in rows)),
        "both_found": int(sum(r["left_ml"] > 0 and r["right_ml"] > 0 for r in rows)),
        "side_search": int(sum(bool(r.get("side_search")) for r in rows)),
        "seconds_median": float(np.median([r["seconds"] for r in rows])),
    }


def _crop_figures(predictor: Predictor, images: list[Path], labels: Path) -> dict:
    """Merged Dice over crops as stored and mirrored left-right."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mirrored in (False, True):
            rows = []
            for p in images:
                image, label = p, labels / p.name
                if mirrored:
                    image = mirrored_copy(image, Path(tmp) / f"image_{p.name}")
                    label = mirrored_copy(label, Path(tmp) / f"label_{p.name}")
                rows.append(run_crop(predictor, image, label))
            dice = [r["dice"] for r in rows]
            out["mirrored" if mirrored else "stored"] = {
                "n": len(rows),
                "dice": float(np.mean(dice)),
                "dice_min": float(np.min(dice)),
                "volume_ratio_median": float(np.median([r["ratio"] for r in rows])),
            }
    return out


def card_figures(
    model: str | Path | None,
    maps: Path | None,
    n: int = 8,
    seed: int = 7,
    msd_test: Path | None = None,
    msd_limit: int = 0,
    sets: tuple[str, ...] = EVAL_SETS,
    log=print,
    real_heads: Sequence[Case] = (),
    settings: PredictSettings | None = None,
) -> dict:
    """The card's figures as data, every scan through ``predict``'s own ``Predictor`` with its
    default settings on the CPU (or ``settings``, e.g. without the refiner): the synthetic sets
    of the held-back maps 14-16 (skipped when ``maps`` holds none), the MSD test crops
    (``msd_test``: ``images/``, ``labels/``; the first ``msd_limit`` when above 0), the
    held-back real heads (``real_heads``: image and label 1 left / 2 right;
    ``recipe.real_heads``), the packaged synthetic example and the real T1 head.

    Example:
        >>> card_figures(None, Path("../shared/data/synthseg_label_maps"), n=1)  # doctest: +SKIP
    """
    settings = settings or PredictSettings(device="cpu")
    predictor = Predictor(load_model(str(model) if model else None), settings)
    figures: dict = {"model": str(model or DEFAULT_MODEL), "settings": predictor.describe(),
                     "n": n, "seed": seed, "sets": {}}  # fmt: skip
    held = split_maps(maps)[1] if maps is not None and maps.is_dir() else []
    if n > 0 and held:
        for which in sets:
            with tempfile.TemporaryDirectory() as tmp:
                rows = [
                    run_case(predictor, image, label)
                    for image, label, _ in synthetic_cases(maps, n, seed, Path(tmp), which)
                ]
            figures["sets"][which] = _set_figures(rows)
            log(f"card: {which}: {figures['sets'][which]}")
    else:
        figures["sets_skipped"] = f"no held-back label maps (training_seg_14..16) in {maps}"
    if msd_test is not None and (msd_test / "images").is_dir():
        images = sorted((msd_test / "images").glob("*.nii.gz"))
        images = images[:msd_limit] if msd_limit > 0 else images
        figures["msd"] = _crop_figures(predictor, images, msd_test / "labels")
        log(f"card: msd: {figures['msd']}")
    if real_heads:
        rows = [run_case(predictor, case.image, case.label) for case in real_heads]
        figures["real_heads"] = _set_figures(rows)
        log(f"card: real heads: {figures['real_heads']}")
    if EXAMPLE_SYN.is_file():
        row = run_case(predictor, EXAMPLE_SYN, EXAMPLE_SYN_LABEL)
        figures["example"] = {k: row[k] for k in ("dice_left", "dice_right", "seconds")}
    row = run_case(predictor, EXAMPLE_T1, None)
    figures["t1_head"] = {
        "left_ml": row["left_ml"],
        "right_ml": row["right_ml"],
        "left_on_left": bool(row["left_x"] < row["right_x"]),
        "seconds": row["seconds"],
    }
    return figures


def set_dice(figures: dict) -> dict[str, list[float]]:
    """Each set's Dice from :func:`card_figures`'s data: [left, right] for heads (synthetic sets,
    ``real_heads``), [merged] for the MSD crops (``msd_stored``, ``msd_mirrored``).

    Example:
        >>> set_dice({"sets": {"random": {"dice_left": 0.7, "dice_right": 0.8}}})
        {'random': [0.7, 0.8]}
    """
    out = {name: [f["dice_left"], f["dice_right"]] for name, f in figures.get("sets", {}).items()}
    if "real_heads" in figures:
        out["real_heads"] = [
            figures["real_heads"]["dice_left"],
            figures["real_heads"]["dice_right"],
        ]
    for kind, f in figures.get("msd", {}).items():
        out[f"msd_{kind}"] = [f["dice"]]
    return out


def no_worse_than(new: dict, old: dict, tolerance: float = 0.01) -> dict:
    """Whether ``new``'s card figures are no worse than ``old``'s on every set both hold (each
    side's Dice, the crops' merged Dice), within ``tolerance``: the rule for shipping a rebuilt
    bundle in place of the shipped one.

    Example:
        >>> a = {"sets": {"random": {"dice_left": 0.78, "dice_right": 0.77}}}
        >>> b = {"sets": {"random": {"dice_left": 0.781, "dice_right": 0.776}}}
        >>> no_worse_than(a, b)["all"]
        True
    """
    mine, theirs = set_dice(new), set_dice(old)
    rows = {name: {"new": d, "old": theirs[name]} for name, d in mine.items() if name in theirs}
    for row in rows.values():
        row["ok"] = all(a >= b - tolerance for a, b in zip(row["new"], row["old"], strict=True))
    return {
        "tolerance": tolerance,
        "sets": rows,
        "all": bool(rows) and all(r["ok"] for r in rows.values()),
    }


def card_table(figures: dict, title: str = "this model") -> str:
    """The card's main table (markdown, 7 columns) from :func:`card_figures`'s data."""
    head = "| set | Dice left | Dice right | HD95 (mm) L / R | volume ratio | plausible | s/head |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, f in figures.get("sets", {}).items():
        lines.append(
            f"| {name} ({f['n']} heads) | {f['dice_left']:.3f} | {f['dice_right']:.3f} | "
            f"{f['hd95_left']:.1f} / {f['hd95_right']:.1f} | {f['volume_ratio_median']:.2f} | "
            f"{f['plausible']}/{f['n']} | {f['seconds_median']:.2f} |"
        )
    if "real_heads" in figures:
        f = figures["real_heads"]
        lines.append(
            f"| held-back real IXI T1 heads ({f['n']}; both sides found {f['both_found']}) | "
            f"{f['dice_left']:.3f} | {f['dice_right']:.3f} | "
            f"{f['hd95_left']:.1f} / {f['hd95_right']:.1f} | {f['volume_ratio_median']:.2f} | "
            f"{f['plausible']}/{f['n']} | {f['seconds_median']:.2f} |"
        )
    for kind, f in figures.get("msd", {}).items():
        lines.append(
            f"| MSD test crops {kind} ({f['n']}), sides merged | {f['dice']:.4f} | | | "
            f"{f['volume_ratio_median']:.2f} | | |"
        )
    if "example" in figures:
        e = figures["example"]
        lines.append(f"| packaged example | {e['dice_left']:.3f} | {e['dice_right']:.3f} | | | | "
                     f"{e['seconds']:.2f} |")  # fmt: skip
    t = figures["t1_head"]
    lines.append(f"| real T1 head (mL) | {t['left_ml']:.2f} | {t['right_ml']:.2f} | | | "
                 f"{'left on left' if t['left_on_left'] else 'SIDES SWAPPED'} | "
                 f"{t['seconds']:.2f} |")  # fmt: skip
    return f"Figures of {title}\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description="Print the release model card's figures.")
    p.add_argument("--model", default=None, help="model (default: the packaged one)")
    p.add_argument(
        "--maps",
        type=Path,
        default=Path(__file__).resolve().parents[4] / "shared" / "data" / "synthseg_label_maps",
        help="folder with training_seg_14..16.nii.gz (held back)",
    )
    p.add_argument("--n", type=int, default=6, help="synthetic validation scans")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic validation scans")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--sets", nargs="+", default=list(EVAL_SETS), choices=EVAL_SETS)
    p.add_argument(
        "--anatomy",
        choices=("held", "train"),
        default="held",
        help="held: the card's maps 14-16; train: validation twins of maps 01-13 (choose on these, "
        "e.g. --anatomy train --seed 91 --n 18)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="predict's --tta/--no-tta (default: the model's advice)",
    )
    p.add_argument("--edge-weight", type=float, default=None, help="predict's --edge-weight")
    p.add_argument(
        "--refiner",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="predict's --refiner/--no-refiner (default: on when the model has one)",
    )
    p.add_argument("--grid", default="auto", help="working grid: auto, native or mm (predict's)")
    p.add_argument(
        "--msd",
        type=Path,
        default=None,
        help="MSD test crops (lofihippseg.recipe.msd OUT/test) to score with the sides merged",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    print(f"model: {a.model or DEFAULT_MODEL}; spec {model.spec}")
    predictor = Predictor(
        model,
        PredictSettings(
            device="cpu", tta=a.tta, grid=a.grid, edge_weight=a.edge_weight, refine=a.refiner
        ),
    )
    print(f"predict settings: {predictor.describe()}")

    if a.n > 0 and a.maps.is_dir():
        for which in a.sets:
            with tempfile.TemporaryDirectory() as tmp:
                rows = []
                for image, label, desc in synthetic_cases(
                    a.maps, a.n, a.seed, Path(tmp), which, a.anatomy
                ):
                    row = run_case(predictor, image, label)
                    rows.append(row)
                    print(f"[{which}] {image.name} [{desc}]: {_fmt(row)}; {_roi(row)}")
            summarise(which, rows)
            visibility_summary(which, rows)
    else:
        print(f"synthetic validation skipped (no label maps at {a.maps})")

    if a.msd is not None:
        msd_summary(a.msd, predictor)

    if EXAMPLE_SYN.is_file():
        row = run_case(predictor, EXAMPLE_SYN, EXAMPLE_SYN_LABEL)
        print(f"packaged synthetic example: {_fmt(row)}; plausible {plausible(row)}; {_roi(row)}")
    row = run_case(predictor, EXAMPLE_T1, None)
    print(f"packaged real T1 head: {_fmt(row)}; plausible {plausible(row)}; {_roi(row)}")


if __name__ == "__main__":
    main()
