"""What a training iteration's data costs beside its network step, fresh boxes against a pool.

The recipe's ``pair_t2`` mix (``release/recipe.toml``: the pool's ``t2`` heads, the MSD crops
inverted toward T2, synthetic boxes from maps 01-13 at 1-2 mm) from a campaign folder's data
stages. Printed, in one process on ``--threads`` threads:

1. one synthetic box by part: generation (``SyntheticGenerator.sample``), resampling to the drawn
   voxel size, crop and normalisation; a cached case's sample (patch, augmentation, view);
2. an iteration's data (a batch of ``TrainingSamples`` items) with fresh boxes
   (``synthetic_pool`` 0) and from a pool of boxes made once (``--pool``; the first draws of each
   box are not counted: it is made once per run), beside the network step (both VNets forward
   and backward, SGD, in bfloat16 where native) and the share of the iteration that is data.

Usage: ``python benchmarks/bench_train_data.py [--campaign runs/model] [--threads 1]
[--pool 16] [--run-pool 1000] [--batches 12]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_heads_gain import run_config  # noqa: E402


def seconds(fn, n: int) -> float:
    """Median seconds of ``n`` calls."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> int:
    from lofihippseg.preprocessing.resample import resample_labelled
    from lofihippseg.synth.generator import SyntheticGenerator
    from lofihippseg.training import distributed as D
    from lofihippseg.training.data import (
        TrainingSamples,
        collect_cases,
        collect_unsided,
        prepare_arrays,
        synthetic_label_maps,
    )
    from lofihippseg.training.loop import _build
    from lofihippseg.training.steps import train_step

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, default=Path("runs/model"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pool", type=int, default=16, help="boxes made and drawn from (timing)")
    ap.add_argument("--run-pool", type=int, default=1000, help="a run's pool (its making cost)")
    ap.add_argument("--batches", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = run_config(args.campaign, Path("/tmp/bench_train_data"), "b", 100, 0.01, False)
    config = config.replace(init1=None, init_family=None)
    gen = SyntheticGenerator(synthetic_label_maps(config.synthetic), config.synth_config())
    g = torch.Generator().manual_seed(0)
    box = gen.sample(g)
    image, label = box.image.numpy(), box.label.numpy()
    parts = {
        "generate a synthetic box": seconds(lambda: gen.sample(g), 5),
        "resample it (1.5 mm)": seconds(
            lambda: resample_labelled(image, label, box.affine, 1.5), 5
        ),
        "crop and normalise": seconds(
            lambda: prepare_arrays("s", image, label, config.model, False), 5
        ),
    }
    cases, _ = collect_cases(config)
    unsided, _ = collect_unsided(config)
    real = TrainingSamples(cases[:8], config.replace(synthetic=None), unsided[:8])
    parts["a cached case's sample (patch, augmentation, view)"] = seconds(lambda: real[0], 9)
    print(f"one sample, by part ({args.threads} thread(s)):")
    for name, s in parts.items():
        print(f"  {name:52s} {s:.3f} s")

    ctx = D.setup("cpu")
    state, _ = _build(config, ctx, len(cases) + len(unsided))
    batch_size = config.batch_size

    def batch_of(samples: TrainingSamples, it: int) -> dict:
        items = [samples[it * batch_size + k] for k in range(batch_size)]
        return torch.utils.data.default_collate(items)

    batch = batch_of(real, 0)
    step = seconds(lambda: train_step(state, batch, config.loss, ctx, True), 4)
    rows = {}
    for pool in (0, args.pool):
        samples = TrainingSamples(cases[:8], config.replace(synthetic_pool=pool), unsided[:8])
        if pool:  # a run makes each box once: fill the pool first, then time the draws
            for k in range(pool):
                samples._boxes[k] = samples._boxes.get(k) or samples._new_synthetic(
                    torch.Generator().manual_seed(k)
                )
        data = [seconds(lambda it=it, s=samples: batch_of(s, it), 1) for it in range(args.batches)]
        rows[pool] = statistics.mean(data)
    print(f"\nper iteration (batch {batch_size}; synthetic share {config.synthetic_fraction}):")
    print(f"  network step (bfloat16 where native)                 {step:.3f} s")
    for pool, data in rows.items():
        name = "fresh boxes (synthetic_pool 0)" if not pool else f"a pool of {pool} boxes"
        share = data / (data + step)
        print(f"  data, {name:46s} {data:.3f} s: {100 * share:.0f} % of the iteration")
    made = parts["generate a synthetic box"] + parts["resample it (1.5 mm)"]
    print(
        f"  (a run's pool of {args.run_pool} boxes costs {args.run_pool * made / 60:.1f} min "
        f"to make, once; fresh boxes cost that every {args.run_pool} synthetic samples)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
