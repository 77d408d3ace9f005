"""Time a few real training iterations on this machine (what a plan's time estimate uses).

A constant measured on another machine misplans: ``train``'s CPU plan once promised 0.74 s per
iteration where the run took 1.34 s. ``time_iterations`` builds the run's networks and data
exactly as ``train`` does, runs a few iterations (the first is a warm-up and not counted) and
returns the median seconds per iteration, data loading included. The networks are thrown away.
"""

from __future__ import annotations

import time
from statistics import median

import torch

from lofihippseg.training.config import TrainConfig


def time_iterations(config: TrainConfig, n: int = 3, warmup: int = 1) -> float:
    """Median seconds of one training iteration (sample drawing + step) under ``config``.

    Args:
        config: the run's settings (its data, patch, batch, width, device).
        n: iterations timed after ``warmup`` untimed ones.
        warmup: first iterations not counted (allocation, caches).

    Returns:
        Seconds per iteration on this machine with the current thread count.

    Example:
        >>> time_iterations(config)  # doctest: +SKIP
        1.31
    """
    from lofihippseg.training import distributed as D
    from lofihippseg.training.data import TrainingSamples, collect_cases, collect_unsided
    from lofihippseg.training.loop import _build
    from lofihippseg.training.steps import train_step

    rng = torch.get_rng_state()
    ctx = D.setup(config.device)
    try:
        cases, _ = collect_cases(config)
        unsided, _ = collect_unsided(config)
        # only the drawn cases are loaded (the run caches every case itself)
        probe = config.replace(cache_cases=False)
        state, _ = _build(probe, ctx, len(cases) + len(unsided))
        samples = TrainingSamples(cases, probe, unsided)
        seconds = []
        for it in range(warmup + n):
            start = time.perf_counter()
            items = [samples[it * config.batch_size + k] for k in range(config.batch_size)]
            batch = torch.utils.data.default_collate(items)
            sampler = torch.Generator(device=ctx.device)
            sampler.manual_seed(config.seed + it)
            train_step(state, batch, config.loss, ctx, config.amp, config.single_view, 1.0,
                       sampler)  # fmt: skip
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            if it >= warmup:
                seconds.append(time.perf_counter() - start)
    finally:
        D.teardown(ctx)
        torch.set_rng_state(rng)
    return float(median(seconds))
