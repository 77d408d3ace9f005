"""Time the second view: our vectorised ``frequency_view`` against the released triple loop.

Usage:
    python benchmarks/bench_views.py [--shape 159 231 195] [--repeats 5] [--no-reference]

Prints seconds per volume for each mode on CPU (and on GPU when ``torch.cuda.is_available()``),
the speed-up over the released loop reference (timed once: it takes a while) and the largest
difference between our ``legacy`` mode and that reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from released_reference import released_view_reference  # noqa: E402

from lofihippseg.views.frequency import FREQUENCY_MODES, frequency_view  # noqa: E402


def _time(fn, repeats: int, sync: bool = False) -> float:
    fn()  # warm-up (plans, mask cache)
    if sync:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(159, 231, 195))
    parser.add_argument("--cutoff", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="GPU batch of 128^3 crops")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow loop")
    args = parser.parse_args()

    shape = tuple(args.shape)
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    print(
        f"volume {shape}, cutoff {args.cutoff}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )

    ref_time = None
    if not args.no_reference:
        start = time.perf_counter()
        reference = released_view_reference(volume, args.cutoff)
        ref_time = time.perf_counter() - start
        diff = np.abs(frequency_view(volume, "legacy", args.cutoff) - reference).max()
        print(
            f"released loop reference (once): {ref_time:8.3f} s;  "
            f"max |legacy - reference| = {diff:.2e}"
        )

    cpu = torch.from_numpy(volume)
    for mode in FREQUENCY_MODES:
        t = _time(lambda m=mode: frequency_view(cpu, m, args.cutoff), args.repeats)
        ratio = f"  speed-up x{ref_time / t:,.0f}" if ref_time else ""
        print(f"cpu  {mode:9s}: {t:8.4f} s/volume{ratio}")

    if torch.cuda.is_available():
        gpu = cpu.cuda()
        print(f"gpu: {torch.cuda.get_device_name()}")
        for mode in FREQUENCY_MODES:
            t = _time(lambda m=mode: frequency_view(gpu, m, args.cutoff), args.repeats, sync=True)
            ratio = f"  speed-up x{ref_time / t:,.0f}" if ref_time else ""
            print(f"gpu  {mode:9s}: {t:8.5f} s/volume{ratio}")
        batch = torch.rand(args.batch, 1, 128, 128, 128, device="cuda")
        for mode in FREQUENCY_MODES:
            t = _time(lambda m=mode: frequency_view(batch, m, args.cutoff), args.repeats, sync=True)
            print(f"gpu  {mode:9s}: {t:8.5f} s per batch of {args.batch} x 128^3")
    else:
        print("gpu: not available")


if __name__ == "__main__":
    main()
