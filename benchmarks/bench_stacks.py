"""Three separate stacks against one motion-free ``_ciso``-like image, on held-back anatomy.

For each session drawn by ``synth --stacks``'s generator from the held-back SynthSeg maps
(14-16; never used to train a shipped model), with random motion between the stacks, it prints:

- Dice (mean of the two sides) in the first stack's frame of: ``predict --stacks`` (the
  default, ``superres``: the stacks combined frequency by frequency on a 1 mm grid), the
  ``average`` way (stacks averaged on that grid), the ``fuse`` way (each stack segmented,
  probabilities averaged), each stack alone (its label map carried to the first stack's frame
  through the TRUE motion, which favours the single stacks; ``*_raw``: without it, as a user
  with one stack and no registration would compare), and the motion-free ``_ciso``-like 1 mm
  image of the same anatomy and noise;
- the registration error at the hippocampi (mean and largest distance, over every hippocampus
  voxel, between where the found and the true transform put it);
- side swaps (a predicted side overlapping the other true side more than its own);
- seconds per session of ``predict_stacks`` (reading the three files, registration,
  combination, segmentation, writing label map, sidecar and QC picture), the model loaded once;
- the registration quality of correct sessions against that of a stack registered to another
  subject's first stack, drawn with the same protocol (contrast, noise, motion): the threshold
  that refuses a session lies between them.

Run: ``python benchmarks/bench_stacks.py --threads 1 [--per-map 4] [--no-fuse]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from scipy.ndimage import affine_transform

from lofihippseg.inference.model_loading import load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image, save_volume
from lofihippseg.stacks.api import predict_stacks
from lofihippseg.stacks.register import RegisterSettings, prepare_fixed, register_stack
from lofihippseg.stacks.session import StacksSettings, combine_session, fuse_prediction
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.stacks import StackGenerator, StacksConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg_label_maps"
COLUMNS = (
    "stacks",
    "average",
    "fuse",
    "axi",
    "cor",
    "sag",
    "axi_raw",
    "cor_raw",
    "sag_raw",
    "ciso",
)
HELD_BACK = ("training_seg_14", "training_seg_15", "training_seg_16")


def dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice of each side (1 left, 2 right)."""
    out = []
    for k in (1, 2):
        a, b = pred == k, truth == k
        total = int(a.sum()) + int(b.sum())
        out.append(2.0 * int((a & b).sum()) / total if total else 1.0)
    return out[0], out[1]


def swapped(pred: np.ndarray, truth: np.ndarray) -> bool:
    """A predicted side lies more on the other true side than on its own."""
    for k, other in ((1, 2), (2, 1)):
        mask = pred == k
        if int((mask & (truth == other)).sum()) > int((mask & (truth == k)).sum()):
            return True
    return False


def onto(labels: np.ndarray, affine: np.ndarray, ref_shape, ref_affine, motion=None) -> np.ndarray:
    """Labels on another grid (nearest); ``motion`` maps the reference world to ``affine``'s."""
    world = ref_affine if motion is None else motion @ ref_affine
    m = np.linalg.inv(affine) @ world
    return affine_transform(labels, m[:3, :3], m[:3, 3], output_shape=ref_shape, order=0)


def write_session(session, folder: Path) -> list[Path]:
    """Write a session's stacks the way ``synth --stacks`` does; return their paths."""
    paths = []
    for st in session.stacks:
        path = folder / f"session_{st.name}.nii.gz"
        save_volume(st.image, st.affine, path, np.float32)
        paths.append(path)
    return paths


def registration_error(
    found: list[np.ndarray], true: list[np.ndarray], label: np.ndarray, affine: np.ndarray
) -> tuple[float, float]:
    """Mean and largest distance (mm) over hippocampus voxels, all moving stacks together."""
    pts = np.argwhere(label > 0).astype(float) @ affine[:3, :3].T + affine[:3, 3]
    errors = []
    for f, t in zip(found[1:], true[1:], strict=True):
        a = pts @ f[:3, :3].T + f[:3, 3]
        b = pts @ t[:3, :3].T + t[:3, 3]
        errors.append(np.linalg.norm(a - b, axis=1))
    e = np.concatenate(errors)
    return float(e.mean()), float(e.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=Path, default=SHARED)
    parser.add_argument("--per-map", type=int, default=4, help="sessions per held-back map")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--motion-deg", type=float, nargs=2, default=(2.0, 5.0))
    parser.add_argument("--motion-mm", type=float, nargs=2, default=(2.0, 5.0))
    parser.add_argument("--no-fuse", action="store_true", help="skip the per-stack fusion")
    parser.add_argument("--no-single", action="store_true", help="skip the single stacks")
    parser.add_argument(
        "--only-stacks",
        action="store_true",
        help="time and score predict --stacks only (no average, fuse, single, ciso, mismatch)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--model", default=None, help="model bundle or run folder (default: the packaged model)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    maps = [args.maps / f"{name}.nii.gz" for name in HELD_BACK]
    missing = [str(p) for p in maps if not p.is_file()]
    if missing:
        raise SystemExit(f"held-back maps not found: {', '.join(missing)} (give --maps)")
    stacks_cfg = StacksConfig(motion_deg=tuple(args.motion_deg), motion_mm=tuple(args.motion_mm))  # type: ignore[arg-type]
    model = load_model(args.model)
    bundle = Path(args.model) if args.model else None
    if bundle is None:
        from importlib import resources

        bundle = Path(str(resources.files("lofihippseg") / "data/model/lofihippseg_default.pt"))
    if bundle.is_file():
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()[:12]
        print(f"model {model.source} (sha256 {digest}...)")
    settings = PredictSettings(threads=args.threads, overwrite=True)
    predictor = Predictor(model, settings)
    rows = []
    firsts = []  # (first stack volume, second stack volume) per session, for the mismatch test
    print(
        f"held-back maps {', '.join(HELD_BACK)}; motion {args.motion_deg} deg, "
        f"{args.motion_mm} mm; {args.threads} thread(s); load {os.getloadavg()[0]:.1f}"
    )
    for path in maps:
        gen = StackGenerator([path], SynthConfig(), stacks_cfg)
        for k in range(args.per_map):
            # session k of every map draws the same protocol (contrast, noise, motion): the
            # mismatch check below then differs in anatomy only
            g = torch.Generator().manual_seed(args.seed * 1000 + k)
            s = gen.session(g)
            truth, t_aff, shape = s.label, s.affine, s.label.shape
            row: dict = {"map": path.name, "session": k}
            with tempfile.TemporaryDirectory() as tmp:
                files = write_session(s, Path(tmp))
                start, cpu = time.perf_counter(), time.process_time()
                result = predict_stacks(files, Path(tmp) / "out", model, settings)
                row["seconds"] = time.perf_counter() - start
                row["cpu_seconds"] = time.process_time() - cpu
                out = nib.load(result.outputs["labels"])
                labels = onto(np.asarray(out.dataobj), out.affine, shape, t_aff)
                row["stacks"] = dice(labels, truth)
                row["swap"] = swapped(labels, truth)
                labels_path = Path(result.outputs["labels"])
                sidecar_path = labels_path.with_name(labels_path.name.replace(".nii.gz", ".json"))
                sidecar = json.loads(sidecar_path.read_text())
                found = [np.eye(4)] + [
                    np.asarray(e["transform_ras_mm"]) for e in sidecar["stacks"][1:]
                ]
                row["quality"] = [e["quality_correlation"] for e in sidecar["stacks"][1:]]
                row["reg_mean_mm"], row["reg_max_mm"] = registration_error(
                    found, s.motions, truth, t_aff
                )
                vols = [load_image(f) for f in files]
                firsts.append((vols[0], vols[1]))
                if args.only_stacks:
                    rows.append(row)
                    print(
                        f"{path.name[:-7]} #{k}: stacks {np.mean(row['stacks']):.3f} | "
                        f"{row['seconds']:.1f} s wall, {row['cpu_seconds']:.1f} s CPU",
                        flush=True,
                    )
                    continue
                session = combine_session(files, StacksSettings(combine="average"))
                c = session.combined
                pred = predictor.predict_volume(c)
                row["average"] = dice(onto(pred.labels, c.affine, shape, t_aff), truth)
                if not args.no_fuse:
                    pred = fuse_prediction(session, predictor, settings.threshold)
                    row["fuse"] = dice(onto(pred.labels, c.affine, shape, t_aff), truth)
                if not args.no_single:
                    for st, vol, motion in zip(s.stacks, vols, s.motions, strict=True):
                        pred = predictor.predict_volume(vol)
                        lab = onto(pred.labels, vol.affine, shape, t_aff, motion)
                        row[st.name] = dice(lab, truth)
                        lab = onto(pred.labels, vol.affine, shape, t_aff)
                        row[f"{st.name}_raw"] = dice(lab, truth)
            ciso = nib.Nifti1Image(s.ciso, t_aff)
            ciso.set_sform(t_aff, 1)
            with tempfile.TemporaryDirectory() as tmp:
                nib.save(ciso, Path(tmp) / "ciso.nii.gz")
                pred = predictor.predict_volume(load_image(Path(tmp) / "ciso.nii.gz"))
            row["ciso"] = dice(pred.labels, truth)
            rows.append(row)
            cols = [
                c for c in ("stacks", "average", "fuse", "axi", "cor", "sag", "ciso") if c in row
            ]
            print(
                f"{path.name[:-7]} #{k}: "
                + " ".join(f"{c} {np.mean(row[c]):.3f}" for c in cols)
                + f" | reg {row['reg_mean_mm']:.2f}/{row['reg_max_mm']:.2f} mm"
                + f" q {min(row['quality']):.2f} | {row['seconds']:.1f} s"
                + (" SWAP" if row["swap"] else ""),
                flush=True,
            )
    # another subject's stack registered to a session's first stack
    mismatch = []
    for i, (first, _) in enumerate([] if args.only_stacks else firsts):
        other = firsts[(i + args.per_map) % len(firsts)][1]  # the next map's second stack
        reg = register_stack(prepare_fixed(first, RegisterSettings()), other)
        mismatch.append(reg.quality)
    print("\nsummary over", len(rows), "sessions (Dice = mean of the two sides)")
    for col in COLUMNS:
        values = [float(np.mean(r[col])) for r in rows if col in r]
        if values:
            print(
                f"  {col:<7} mean {statistics.mean(values):.3f}  median "
                f"{statistics.median(values):.3f}  min {min(values):.3f}"
            )
    mean = {
        c: statistics.mean(float(np.mean(r[c])) for r in rows)
        for c in ("stacks", "ciso", "axi", "cor", "sag")
        if c in rows[0]
    }
    if "axi" in mean:
        best = max(mean[c] for c in ("axi", "cor", "sag"))
        print(f"  stacks - ciso = {mean['stacks'] - mean['ciso']:+.3f} (target >= -0.03)")
        print(f"  stacks - best single stack = {mean['stacks'] - best:+.3f} (target >= +0.05)")
        raw = max(
            statistics.mean(float(np.mean(r[f"{c}_raw"])) for r in rows)
            for c in ("axi", "cor", "sag")
        )
        print(f"  stacks - best single stack, no motion correction = {mean['stacks'] - raw:+.3f}")
    reg_mean = [r["reg_mean_mm"] for r in rows]
    reg_max = [r["reg_max_mm"] for r in rows]
    print(
        f"  registration error at the hippocampi: mean {statistics.mean(reg_mean):.2f} mm, "
        f"worst session mean {max(reg_mean):.2f} mm, largest voxel {max(reg_max):.2f} mm"
    )
    print(f"  side swaps: {sum(r['swap'] for r in rows)} of {len(rows)}")
    secs = [r["seconds"] for r in rows]
    cpu = [r["cpu_seconds"] for r in rows]
    print(
        f"  seconds per session ({args.threads} thread(s), load {os.getloadavg()[0]:.1f}): "
        f"wall median {statistics.median(secs):.2f}, max {max(secs):.2f}; CPU time (all "
        f"threads) median {statistics.median(cpu):.2f}, max {max(cpu):.2f}"
    )
    quality = [q for r in rows for q in r["quality"]]
    if mismatch:
        print(
            f"  registration quality: same session min {min(quality):.2f} (median "
            f"{statistics.median(quality):.2f}); another subject's stack max {max(mismatch):.2f} "
            f"(median {statistics.median(mismatch):.2f}); refused below "
            f"{RegisterSettings().min_quality:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
