"""Time and peak memory of ``predict`` on the same head at 1 mm and at 0.5 mm voxels.

The shipped model runs on a 1.5 mm working grid, so a 0.5 mm scan (7 T, or upsampled) should
cost little more than a 1 mm one: only reading, cropping, resampling to the working grid and
writing the label map back on the input's grid see its eight times more voxels.

The head is the shipped synthetic example (1.8 mm voxels) resampled to 1 mm and to 0.5 mm
(trilinear), written as int16 NIfTI. Both runs use the shipped model, the CPU and the same
process (one warm-up run first); peak memory is the largest resident set size sampled every
2 ms during the run, minus the resident set size just before it. Also prints the Dice of the
0.5 mm label map against the 1 mm one (brought onto the 0.5 mm grid by nearest neighbour).

Usage: ``python benchmarks/bench_fine_voxels.py [--threads 2] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from lofihippseg.inference.api import PredictSettings, predict
from lofihippseg.inference.model_loading import load_model

EXAMPLE = (
    Path(__file__).resolve().parents[1]
    / "src/lofihippseg/data/examples/synthetic_lowfield_example.nii.gz"
)
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakSampler:
    """Samples the resident set size in a thread; ``peak`` is the largest seen."""

    def __init__(self, every_s: float = 0.002) -> None:
        self.every_s, self.peak, self._stop = every_s, rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def resampled_head(mm: float, path: Path) -> Path:
    """The example head on an ``mm`` isotropic grid (same field of view), as int16 NIfTI."""
    img = nib.load(str(EXAMPLE))
    data = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32))
    zooms = np.array(img.header.get_zooms()[:3], float)
    shape = tuple(int(round(n * z / mm)) for n, z in zip(data.shape, zooms, strict=True))
    fine = F.interpolate(data[None, None], size=shape, mode="trilinear", align_corners=False)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] / zooms * mm
    scaled = 1000 * fine[0, 0] / max(float(fine.max()), 1e-6)  # the example holds 0-1 values
    out = nib.Nifti1Image(scaled.round().numpy().astype(np.int16), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, str(path))
    return path


def run_once(scan: Path, out: Path, model, settings: PredictSettings) -> tuple[float, int]:
    """Seconds and peak extra resident memory (bytes) of one ``predict`` call."""
    shutil.rmtree(out, ignore_errors=True)
    before = rss_bytes()
    with PeakSampler() as sampler:
        start = time.perf_counter()
        report = predict(scan, out, model, settings, progress=False)
        seconds = time.perf_counter() - start
    if report.failed:
        raise SystemExit(f"predict failed: {report.failed[0].message}")
    return seconds, sampler.peak - before


def dice_on_fine_grid(coarse_labels: Path, fine_labels: Path) -> float:
    """Mean Dice of both sides: the 1 mm label map (nearest neighbour) against the 0.5 mm one."""
    fine = np.asarray(nib.load(str(fine_labels)).dataobj)
    coarse = torch.from_numpy(np.asarray(nib.load(str(coarse_labels)).dataobj).astype(np.float32))
    up = F.interpolate(coarse[None, None], size=fine.shape, mode="nearest")[0, 0].numpy()
    scores = []
    for side in (1, 2):
        a, b = up == side, fine == side
        scores.append(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="Keep scans and outputs here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.keep or Path(tempfile.mkdtemp(prefix="lofi_fine_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        model = load_model(None, device="cpu")
        settings = PredictSettings(device="cpu", qc=True)
        scans = {mm: resampled_head(mm, root / f"head_{mm:g}mm.nii.gz") for mm in (1.0, 0.5)}
        run_once(scans[1.0], root / "warmup", model, settings)
        figures = {}
        for mm, scan in scans.items():
            seconds, peak = run_once(scan, root / f"out_{mm:g}mm", model, settings)
            shape = nib.load(str(scan)).shape
            figures[mm] = (seconds, peak)
            print(f"{mm:g} mm {shape}: {seconds:.2f} s, peak extra memory {peak / 2**20:.0f} MiB")
        t1, m1 = figures[1.0]
        t05, m05 = figures[0.5]
        print(f"0.5 mm vs 1 mm: time x{t05 / t1:.2f}, peak memory x{m05 / max(m1, 1):.2f}")
        labels = {mm: root / f"out_{mm:g}mm" / f"head_{mm:g}mm_hipp.nii.gz" for mm in scans}
        print(f"Dice 0.5 mm vs 1 mm result: {dice_on_fine_grid(labels[1.0], labels[0.5]):.3f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
