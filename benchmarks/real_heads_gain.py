"""What real heads give a pair: v12's ``t2`` pair fine-tuned with and without the IXI heads.

Two runs from the shipped bundle's ``t2`` pair, the same iterations, seed and mix (the recipe's
``pair_t2`` data: the pool's ``t2`` heads, the MSD crops inverted toward T2, fresh synthetic
boxes), one of them with the 135 IXI training heads (``recipe`` stage ``ixi``) added to the
pool's heads; each is exported as the shipped bundle with its ``t2`` pair replaced (and, with
``--localiser``, the localiser replaced too), then scored by ``bench_real_heads.py`` (held-back
IXI heads) and the card (held-back maps 14-16, MSD test crops): run those on the bundles
written to ``OUT/NAME/bundle.pt``.

Usage: ``python benchmarks/real_heads_gain.py --campaign runs/model --out runs/real_gain
[--iterations 800] [--runs with_ixi without_ixi] [--localiser LOCALISER.pt]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def run_config(
    campaign: Path,
    out: Path,
    name: str,
    iterations: int,
    lr: float,
    ixi: bool,
    pool: int = 0,
    repeat: int = 1,
):
    """The recipe's ``pair_t2`` settings, from the shipped ``t2`` pair, for ``iterations``."""
    from lofihippseg.config import load_settings
    from lofihippseg.inference.model_loading import DEFAULT_MODEL
    from lofihippseg.recipe.spec import load_recipe
    from lofihippseg.training.config import TrainConfig

    stage = load_recipe()["stages"]["pair_t2"]
    pool_dir = campaign / "03_pool"
    data = [str(pool_dir / "pool_t2")]
    if ixi:
        from lofihippseg.recipe import real_heads

        data.append(
            str(real_heads.repeated_csv(campaign / "02_ixi", out / f"{name}_heads", repeat))
        )
    config = load_settings(TrainConfig, REPO / stage["config"])
    return config.replace(
        data=tuple(data),
        unsided=(str(campaign / "01_msd" / "msd_trainval.csv"),),
        synthetic=str(pool_dir / "pool" / "training_maps.list"),
        iterations=iterations,
        lr=lr,
        seed=stage["seed"],
        val_every=iterations,
        init1=str(DEFAULT_MODEL),
        init2=None,
        init_critic=None,
        init_family="t2",
        name=name,
        out_dir=str(out),
        device="cpu",
        num_workers=0,
        amp=True,
        synthetic_pool=pool,
        plan=(),
        **{k: v for k, v in stage.get("overrides", {}).items() if k != "n_val_synthetic"},
        n_val_synthetic=1,
    )


def export_bundle(run: Path, out: Path, localiser: Path | None) -> Path:
    """The shipped bundle with its ``t2`` pair (first pair) from ``run``'s last checkpoint."""
    from lofihippseg.inference.model_loading import DEFAULT_MODEL
    from lofihippseg.io.atomic import atomic_path
    from lofihippseg.models.registry import half_precision, safe_torch_load

    bundle = safe_torch_load(DEFAULT_MODEL)
    assert bundle["family"] == "t2"
    ckpt = safe_torch_load(run / "checkpoints" / "last.pt")
    bundle["vnet1"], bundle["vnet2"] = (half_precision(ckpt[k]) for k in ("vnet1", "vnet2"))
    if localiser is not None:
        entry = safe_torch_load(localiser)["localiser"]
        entry["state"] = half_precision(entry["state"])
        bundle["localiser"] = entry
    with atomic_path(out) as tmp:
        torch.save(bundle, tmp)
    return out


def main() -> int:
    from lofihippseg.training.loop import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, default=REPO / "runs" / "model")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "real_gain")
    ap.add_argument("--iterations", type=int, default=800)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--runs", nargs="+", default=["with_ixi", "without_ixi"])
    ap.add_argument("--localiser", type=Path, default=None)
    ap.add_argument("--synthetic-pool", type=int, default=200, help="train's synthetic_pool")
    ap.add_argument("--ixi-repeat", type=int, default=1, help="list each real head N times")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.runs:
        ixi = name.startswith("with_ixi")
        config = run_config(
            args.campaign, args.out, name, args.iterations, args.lr, ixi, args.synthetic_pool,
            args.ixi_repeat,
        )  # fmt: skip
        run = args.out / name
        t = time.perf_counter()
        resume = run if (run / "checkpoints" / "last.pt").is_file() else None
        if not (resume and (run / "checkpoints" / "done").is_file()):
            train(config, resume=resume)
            (run / "checkpoints" / "done").write_text("")
        bundle = export_bundle(run, run / "bundle.pt", args.localiser)
        print(
            f"{name}: {args.iterations} iterations in {time.perf_counter() - t:.0f} s -> {bundle}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
