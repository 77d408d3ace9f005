"""``predict`` as a user runs it, lean against the v12 pipeline, in one run.

Writes synthetic heads with exact labels (held-back SynthSeg maps 14-16 from ``--maps`` when
present, else the package's own label maps, which the model trained on: fine for timing, not
for Dice), then runs ``lofihippseg predict`` on each set once per profile, each run in its own
process so that its wall time (start-up, model loading and writing included) and its peak
memory (max RSS) are its own:

- ``v12``: the pipeline as shipped with v12 (every contrast family's pair runs, the best-agreeing
  is kept and mirrored; float32): ``--family agreement --tta --no-amp``;
- ``lean_f32``: today's default in float32 (``--no-amp``: what a CPU without native bfloat16
  runs);
- ``lean``: today's default (one pair chosen by the field of view, the mirror for heads only,
  in one batch with the scan; bfloat16 networks where the CPU computes them natively);
- ``v12_code`` (with ``--v12-src DIR``): the v12 code itself and its bundle, as shipped, e.g.
  ``git worktree add /tmp/v12 0442ba7`` then ``--v12-src /tmp/v12/src`` (its own defaults).

Sets: ``t2`` (low-field T2-like heads, the generator's defaults: 1 mm grid, three thick-slice
stacks), ``t1`` (T1-like heads resampled to 1-2 mm voxels), ``t1_1mm`` (one T1-like head at 1 mm:
the memory target). Prints per set and profile: seconds per head for each stage (sidecars'
``timings``, mean), the process's wall time and seconds per head, peak memory, Dice per side,
and the ratio lean / v12 of the process's time.

Usage: ``python benchmarks/bench_predict.py [--n 4] [--threads 2] [--maps DIR] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROFILES = {
    "v12": ["--family", "agreement", "--tta", "--no-amp"],
    "lean_f32": ["--no-amp"],
    "lean": [],
}
SHARED_MAPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg_label_maps"
PACKAGED_MAPS = Path(__file__).resolve().parents[1] / "src" / "lofihippseg" / "data" / "label_maps"
STAGES = ("preprocess_s", "locate_s", "inference_s", "regrid_s", "tta_s", "postprocess_s")


def write_sets(folder: Path, n: int, maps: Path, seed: int = 61) -> dict[str, Path]:
    """Write the benchmark's heads (images and ``_hipp`` labels) into ``folder/SET``."""
    import torch

    from lofihippseg.io.nifti import save_volume
    from lofihippseg.recipe.card import eval_config
    from lofihippseg.recipe.pools import make_case, split_maps, t1_config
    from lofihippseg.synth.dataset import save_scaled_image
    from lofihippseg.synth.generator import SyntheticGenerator

    train, held = split_maps(maps)
    anatomy = held or sorted(maps.glob("*.nii.gz"))
    plans = {"t2": (eval_config("defaults"), n, None), "t1": (t1_config(), n, (1.0, 2.0))}
    plans["t1_1mm"] = (t1_config(), 1, (1.0, 1.0))
    sets = {}
    for name, (config, count, voxels) in plans.items():
        gen = SyntheticGenerator(anatomy, config)
        out = folder / name
        (out / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            case_seed = seed * 1000 + i
            if voxels is None:
                s = gen.sample(torch.Generator().manual_seed(case_seed))
                img, lab, aff = s.image.numpy(), s.label.numpy(), s.affine
            else:
                img, lab, aff, _ = make_case(gen, case_seed, voxels)
            save_scaled_image(img, aff, out / f"{name}_{i}.nii.gz")
            save_volume(lab, aff, out / "labels" / f"{name}_{i}.nii.gz", np.uint8)
        sets[name] = out
    return sets


def run_profile(
    images: Path, out: Path, flags: list[str], threads: int, src: Path | None = None
) -> dict:
    """One ``predict`` process over a folder (the package in ``src`` when given): wall seconds
    and peak memory (MB)."""
    cmd = [sys.executable, "-m", "lofihippseg", "predict", str(images), "-o", str(out)]
    cmd += ["--no-qc", "--device", "cpu", "--threads", str(threads), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    log = proc.stdout.read().decode() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed on {images}:\n{log}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}


def score(out: Path, labels: Path) -> dict:
    """Mean stage seconds (sidecars) and mean Dice per side against ``labels``."""
    from lofihippseg.io.nifti import load_label

    stages: dict[str, list[float]] = {}
    dice: dict[str, list[float]] = {"left": [], "right": []}
    sidecars = sorted(out.glob("*_hipp.json"))
    for sidecar in sidecars:
        meta = json.loads(sidecar.read_text())
        for key, value in meta["timings"].items():
            stages.setdefault(key, []).append(value)
        case = sidecar.name.removesuffix("_hipp.json")
        pred = load_label(out / f"{case}_hipp.nii.gz", allowed={0, 1, 2}).data
        truth = load_label(labels / f"{case}.nii.gz", allowed={0, 1, 2}).data
        for value, side in ((1, "left"), (2, "right")):
            a, b = pred == value, truth == value
            dice[side].append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    n = len(sidecars)
    return {
        "n": n,
        "stages": {k: float(np.sum(v)) / n for k, v in stages.items()},
        "dice": {k: float(np.mean(v)) for k, v in dice.items()},
    }


def lean_precision() -> str:
    """What ``lean`` computes in on this machine (``inference.plan``)."""
    from lofihippseg.models.precision import cpu_bfloat16_native

    return "bfloat16 (native on this CPU)" if cpu_bfloat16_native() else "float32"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4, help="heads per set (t2, t1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--maps", type=Path, default=SHARED_MAPS, help="SynthSeg label maps")
    p.add_argument("--keep", type=Path, default=None, help="keep the heads and outputs here")
    p.add_argument("--v12-src", type=Path, default=None, help="src/ of a v12 checkout to time")
    a = p.parse_args()
    profiles = {name: (flags, None) for name, flags in PROFILES.items()}
    if a.v12_src is not None:
        profiles["v12_code"] = ([], a.v12_src)
    maps = a.maps if a.maps.is_dir() else PACKAGED_MAPS
    held = maps != PACKAGED_MAPS
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        sets = write_sets(root / "heads", a.n, maps)
        which = "held-back maps 14-16" if held else "training maps"
        print(f"heads from {maps} ({which}); {a.threads} threads; QC pictures off; "
              f"lean's networks in {lean_precision()}")  # fmt: skip
        header = f"{'set':<7} {'profile':<8} " + " ".join(f"{s[:-2]:>10}" for s in STAGES)
        print(f"{header} {'process s':>9} {'s/head':>6} {'peak MB':>7} {'Dice L':>6} {'Dice R':>6}")
        for name, folder in sets.items():
            times = {}
            for profile, (flags, src) in profiles.items():
                out = root / "out" / name / profile
                run = run_profile(folder, out, flags, a.threads, src)
                got = score(out, folder / "labels")
                times[profile] = run["seconds"]
                stage_s = " ".join(f"{got['stages'].get(s, 0.0):>10.3f}" for s in STAGES)
                print(f"{name:<7} {profile:<8} {stage_s} {run['seconds']:>9.2f} "
                      f"{run['seconds'] / got['n']:>6.2f} {run['peak_mb']:>7.0f} "
                      f"{got['dice']['left']:>6.3f} {got['dice']['right']:>6.3f}")  # fmt: skip
            ratios = ", ".join(
                f"lean / {k} {times['lean'] / v:.2f}" for k, v in times.items() if k != "lean"
            )
            print(f"{name:<7} process time: {ratios}")


if __name__ == "__main__":
    main()
