"""Time of mapping probabilities back from the working grid to the input's grid.

``inference.regrid.resize_window`` resamples (2, ...) probability maps from the 1.5 mm working
grid onto the input's grid only in the window that can hold a label, reading only the input
voxels that window needs. The reference, in the same process, is the whole resampling
(``preprocessing.resample.resize``) cut to the same window. The case is a head stored at
1 x 1 x 2 mm (as the model card's resampled heads): its third axis shrinks (area average), the
others grow (linear); the window is a hippocampus-sized box on each side.

Usage: ``python benchmarks/bench_regrid.py [--threads 2] [--repeats 10]``
"""

from __future__ import annotations

import argparse
import time

import torch

from lofihippseg.inference.regrid import resize_window, window_for
from lofihippseg.preprocessing.resample import resize

COARSE = (110, 140, 120)  # a head's crop on the 1.5 mm grid
FINE = (165, 210, 90)  # the same field of view at 1 x 1 x 2 mm
SUPPORT = (slice(25, 85), slice(50, 90), slice(40, 70))  # both hippocampi, coarse voxels


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    maps = torch.rand(2, *COARSE)
    window = window_for(SUPPORT, COARSE, FINE, FINE)
    got = resize_window(maps, FINE, window)
    full = resize(maps, FINE)[(Ellipsis, *window)]
    error = float((got - full).abs().max())
    fast = timed(lambda: resize_window(maps, FINE, window), args.repeats)
    whole = timed(lambda: resize(maps, FINE)[(Ellipsis, *window)], args.repeats)
    shape = tuple(s.stop - s.start for s in window)
    print(f"maps 2 x {COARSE} (1.5 mm) -> {FINE} (1 x 1 x 2 mm), window {shape}")
    print(f"resize_window: {fast * 1000:.1f} ms; whole resize then window: {whole * 1000:.1f} ms")
    print(f"time ratio window / whole: {fast / whole:.3f} (largest difference {error:.1e})")


if __name__ == "__main__":
    main()
