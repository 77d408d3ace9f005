"""Time per training iteration and peak memory of the default model (n_filters 16).

One iteration = both VNets forward/backward, the critic's step, SGD steps (paper recipe).
Sizes are small so that the CPU run finishes in minutes; on a GPU fp32 and AMP are compared in
the same process (ratio printed).

Usage:
    python benchmarks/bench_train.py [--patch 32 64] [--batch 2] [--n-filters 16] [--steps 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from lofihippseg.models.registry import ModelSpec
from lofihippseg.training import loop
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.distributed import DistContext
from lofihippseg.training.steps import train_step


def make_batch(patch: int, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, patch, patch, patch, generator=g)
    label = torch.zeros(batch, patch, patch, patch, dtype=torch.long)
    c = patch // 2
    label[:, c - 4 : c, c - 6 : c + 6, c - 4 : c + 4] = 1
    label[:, c : c + 4, c - 6 : c + 6, c - 4 : c + 4] = 2
    return {
        "image": image.to(device),
        "view2": image.flip(-1).to(device),
        "label": label.to(device),
    }


def bench(patch: int, batch: int, n_filters: int, device: torch.device, amp: bool, steps: int):
    config = TrainConfig(
        synthetic="none",
        model=ModelSpec(n_filters=n_filters),
        patch_size=(patch,) * 3,
        batch_size=batch,
        amp=amp,
        device=device.type,
    )
    state, _ = loop._build(config, DistContext(device=device), n_train=8)
    data = make_batch(patch, batch, device)
    train_step(state, data, config.loss, DistContext(device=device), amp)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(state, data, config.loss, DistContext(device=device), amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process max RSS
    return (time.perf_counter() - t0) / steps, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--n-filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"n_filters {args.n_filters}, batch {args.batch}"
    )
    print(f"{'device':8} {'patch':>6} {'precision':>9} {'s/iter':>9} {'peak MiB':>9}")
    for patch in args.patch:
        t, mem = bench(patch, args.batch, args.n_filters, torch.device("cpu"), False, args.steps)
        print(f"{'cpu':8} {patch:>6} {'fp32':>9} {t:9.3f} {mem:9.0f}  (max RSS of the process)")
    if torch.cuda.is_available() and not args.cpu_only:
        dev = torch.device("cuda")
        for patch in args.patch + [128]:
            res = {
                amp: bench(patch, args.batch, args.n_filters, dev, amp, args.steps * 3)
                for amp in (False, True)
            }
            for amp, (t, mem) in res.items():
                print(f"{'cuda':8} {patch:>6} {'amp' if amp else 'fp32':>9} {t:9.3f} {mem:9.0f}")
            print(
                f"{'':8} {patch:>6} amp speed-up x{res[False][0] / res[True][0]:.2f}, "
                f"memory x{res[True][1] / res[False][1]:.2f}"
            )
    else:
        print("no CUDA GPU: GPU figures (fp32 vs AMP) skipped")


if __name__ == "__main__":
    main()
