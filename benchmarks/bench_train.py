"""Seconds per training iteration and peak memory: critic-free, full critic, sampled critic.

One iteration = both VNets forward/backward, the critic's terms and step, SGD steps. For each
size, three recipes run in the same process on the same batch:

- ``critic-free``: the paper recipe without the critic (no gate, no adversarial term);
- ``critic, all voxels``: the full paper recipe as it was (``critic_fraction`` 1.0);
- ``critic, sampled``: the full paper recipe now (``critic_fraction`` default, 5 %).

Ratios are to the critic-free row of the same size. Peak memory: on CUDA the peak allocated by
torch; on the CPU the process's peak resident set, reset before each row through
``/proc/self/clear_refs`` (Linux), else the process maximum so far (marked ``*``).

Usage:
    python benchmarks/bench_train.py                       # CPU: the two issue sizes
    python benchmarks/bench_train.py --size 128x128x128:8:16 --device cuda --precision fp32 amp
    python benchmarks/bench_train.py --size 16x16x16:2:4 --steps 1 --out figures.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import resource
import time
from pathlib import Path

import torch

from lofihippseg.models.registry import ModelSpec
from lofihippseg.training import loop
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.distributed import DistContext
from lofihippseg.training.steps import train_step

RECIPES = {
    "critic-free": dict(use_gate=False, use_adversarial=False, train_critic=False),
    "critic, all voxels": dict(critic_fraction=1.0),
    "critic, sampled": {},
}
CPU_SIZES = ["48x64x48:4:8", "64x64x64:2:16"]


def parse_size(text: str) -> tuple[tuple[int, int, int], int, int]:
    """``DxHxW:batch:filters`` -> (patch, batch, n_filters).

    Example:
        >>> parse_size("48x64x48:4:8")
        ((48, 64, 48), 4, 8)
    """
    patch, batch, filters = text.split(":")
    d, h, w = (int(v) for v in patch.split("x"))
    return (d, h, w), int(batch), int(filters)


def make_batch(patch, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, *patch, generator=g)
    label = torch.zeros(batch, *patch, dtype=torch.long)
    c = [p // 2 for p in patch]
    label[:, c[0] - 4 : c[0], c[1] - 6 : c[1] + 6, c[2] - 4 : c[2] + 4] = 1
    label[:, c[0] : c[0] + 4, c[1] - 6 : c[1] + 6, c[2] - 4 : c[2] + 4] = 2
    return {
        "image": image.to(device),
        "view2": image.flip(-1).to(device),
        "label": label.to(device),
    }


def _reset_peak(device: torch.device) -> bool:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(patch, batch, n_filters, device, amp: bool, steps: int, loss_changes: dict):
    """Seconds per iteration (after one warm-up) and peak memory (MiB, flag: per-row reset)."""
    config = TrainConfig(
        synthetic="none",
        model=ModelSpec(n_filters=n_filters),
        patch_size=tuple(patch),
        batch_size=batch,
        amp=amp,
        device=device.type,
    )
    config = config.replace(loss=dataclasses.replace(config.loss, **loss_changes))
    ctx = DistContext(device=device)
    state, _ = loop._build(config, ctx, n_train=8)
    data = make_batch(patch, batch, device)
    reset = _reset_peak(device)
    train_step(state, data, config.loss, ctx, amp)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(state, data, config.loss, ctx, amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    peak = _peak_mib(device)
    del state, data
    return seconds, peak, reset


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs="+", default=None, help="DxHxW:batch:filters ...")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "amp"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as CSV")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = args.size or CPU_SIZES
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads")
    header = f"{'patch x batch':>16} {'filters':>7} {'prec':>5} {'recipe':>19} {'s/iter':>8}"
    print(header + f" {'x free':>7} {'peak MiB':>9} {'x free':>7}")
    rows = []
    for size in sizes:
        patch, batch, filters = parse_size(size)
        for precision in args.precision:
            amp = precision == "amp"
            ref = None
            for recipe in args.recipes:
                try:
                    t, mem, reset = bench(patch, batch, filters, device, amp, args.steps,
                                          RECIPES[recipe])  # fmt: skip
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"{'x'.join(map(str, patch))} x {batch} {precision} {recipe}: "
                          "out of GPU memory")  # fmt: skip
                    rows.append(dict(patch="x".join(map(str, patch)), batch=batch,
                                     n_filters=filters, precision=precision, recipe=recipe,
                                     seconds_per_iteration="OOM", time_ratio="",
                                     peak_mib="", memory_ratio="", device=str(device)))  # fmt: skip
                    continue
                ref = ref or (t, mem)
                row = dict(
                    patch="x".join(map(str, patch)), batch=batch, n_filters=filters,
                    precision=precision, recipe=recipe, seconds_per_iteration=round(t, 4),
                    time_ratio=round(t / ref[0], 3), peak_mib=round(mem, 1),
                    memory_ratio=round(mem / ref[1], 3), device=str(device),
                )  # fmt: skip
                rows.append(row)
                label = f"{row['patch']} x {batch}"
                print(
                    f"{label:>16} {filters:>7} {precision:>5} {recipe:>19} {t:8.3f} "
                    f"{t / ref[0]:7.2f} {mem:9.0f}{'' if reset else '*'} {mem / ref[1]:7.2f}"
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
