"""Seconds per synthetic 1 mm case (default 160 x 192 x 176 grid, three stacks) on CPU and GPU.

Goal: under 3 s per case on 2 CPU cores. Uses the full shared label maps when present, else the
packaged ones. Run: ``python benchmarks/bench_synth.py [--n 5] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from lofihippseg.synth.assets import packaged_label_maps
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.generator import SyntheticGenerator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg_label_maps"


def bench(maps: list[Path], config: SynthConfig, device: str, n: int) -> float:
    gen = SyntheticGenerator(maps, config, device)
    for i in range(len(maps)):  # load (and cache) outside the timing
        gen.label_map(i)
    g = torch.Generator().manual_seed(0)
    gen.sample(g)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        s = gen.sample(g)
    if device == "cuda":
        torch.cuda.synchronize()
    assert s.image.shape == tuple(config.output_shape)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5, help="cases timed per setting")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: all)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="output grid (dry runs)")
    parser.add_argument("--packaged", action="store_true", help="the package's small label maps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    use_shared = SHARED.is_dir() and not args.packaged
    maps = sorted(SHARED.glob("*.nii.gz"))[:4] if use_shared else packaged_label_maps()
    settings = {
        "default (3 stacks)": SynthConfig(),
        "single stack": SynthConfig(p_three_stacks=0.0),
        "fast (SynthConfig.fast)": SynthConfig.fast(),
    }
    if args.shape:
        settings = {k: replace(v, output_shape=tuple(args.shape)) for k, v in settings.items()}
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"label maps: {len(maps)} from {maps[0].parent}; CPU threads: {args.threads}")
    for device in devices:
        for name, cfg in settings.items():
            sec = bench(maps, cfg, device, args.n)
            print(f"{device:5s} {name:20s} {tuple(cfg.output_shape)}: {sec:.3f} s/case")


if __name__ == "__main__":
    main()
