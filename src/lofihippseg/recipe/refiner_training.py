"""Train the outline refiner (``lofihippseg.inference.refiner``) on cubes from
``lofihippseg.recipe.refiner_data``; resumable, a checkpoint every ``--every`` iterations.

    python -m lofihippseg.recipe.refiner_training --data runs/refiner_data \
        --out runs/refiner --iterations 4000
    python -m lofihippseg.recipe.refiner_training --data runs/refiner_data --out runs/wide \
        --filters 16 --widen-from runs/refiner/refiner_4000.pt --lr 3e-4 --iterations 2000
    python -m lofihippseg.recipe.refiner_training --export runs/refiner/refiner_4000.pt \
        --bundle src/lofihippseg/data/model/lofihippseg_default.pt --export-to model.pt
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lofihippseg.inference import refiner as rf


def held_out(path: Path) -> bool:
    """Every 20th scan is kept for the run's own validation."""
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return int(digits or 0) % 20 == 0


def load_side(path: Path, rng: random.Random) -> tuple[torch.Tensor, ...] | None:
    """(image, prior, truth) of one side of a stored scan (None: unreadable or no side)."""
    try:
        d = np.load(path)
        sides = [c for c in (0, 1) if f"prior{c}" in d]
        if not sides:
            return None
        c = rng.choice(sides)
        return tuple(
            torch.from_numpy(d[f"{name}{c}"].astype(np.float32))
            for name in ("image", "prior", "truth")
        )
    except (OSError, ValueError, KeyError):  # being written
        return None


def augment(image: torch.Tensor, prior: torch.Tensor, truth: torch.Tensor, rng: random.Random):
    """Mirror (the refiner is side-agnostic), intensity gamma, a perturbed prior; returns the
    network's input (3, ...) and target (1, ...)."""
    if rng.random() < 0.5:
        image, prior, truth = image.flip(0), prior.flip(0), truth.flip(0)
    if rng.random() < 0.5:
        image = image.clamp(min=0) ** math.exp(rng.uniform(-0.4, 0.4))
    if rng.random() < 0.5:  # a sharper or softer, slightly shifted prior
        logit = rf.prior_logits(prior) * rng.uniform(0.6, 1.4)
        shift = [rng.randint(-1, 1) for _ in range(3)]
        prior = torch.sigmoid(torch.roll(logit, shifts=shift, dims=(0, 1, 2)))
    return rf.refiner_input(image, prior)[0], truth[None]


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * y).sum(dim=(1, 2, 3, 4))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3, 4)) + y.sum(dim=(1, 2, 3, 4)) + 1)
    return F.binary_cross_entropy_with_logits(logits, y) + dice.mean()


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


@torch.no_grad()
def validate(net: rf.Refiner, files: list[Path]) -> tuple[float, float]:
    net.eval()
    before, after = [], []
    for f in files:
        d = np.load(f)
        for c in (0, 1):
            if f"prior{c}" not in d:
                continue
            image, prior, truth = (
                torch.from_numpy(d[f"{name}{c}"].astype(np.float32))
                for name in ("image", "prior", "truth")
            )
            truth = truth > 0
            out = net(rf.refiner_input(image, prior))[0, 0] > 0
            before.append(dice(prior > 0.5, truth))
            after.append(dice(out, truth))
    net.train()
    return float(np.mean(before)), float(np.mean(after))


def width(state: dict) -> int:
    """The base width (filters) of a refiner's state dict."""
    return int(state["net.decoder1.out_conv.weight"].shape[1])


def widen(net: rf.Refiner, narrow_state: dict) -> None:
    """Load a narrower refiner's weights into ``net`` so that it computes the same function:
    the narrow channels take the old weights, the new channels keep their random start but
    feed the old ones through zero weights (so they start silent and learn from there).
    Unlike ``release/widen.py``'s Net2Net copies of the pairs, no noise is needed to tell the
    new channels from the old; v11's refiner was made this way (8 -> 16 filters)."""
    narrow = rf.Refiner(width(narrow_state))
    narrow.load_state_dict(narrow_state)
    small = dict(narrow.named_modules())
    with torch.no_grad():
        for name, big in net.named_modules():
            old = small[name]
            if isinstance(big, torch.nn.ConvTranspose3d):  # weight (in, out, ...)
                i, o = old.weight.shape[:2]
                big.weight[i:, :o] = 0
                big.weight[:i, :o] = old.weight
                big.bias[:o] = old.bias
            elif isinstance(big, torch.nn.Conv3d):  # weight (out, in, ...)
                o, i = old.weight.shape[:2]
                big.weight[:o, i:] = 0
                big.weight[:o, :i] = old.weight
                big.bias[:o] = old.bias
            elif isinstance(big, torch.nn.BatchNorm3d):
                o = old.num_features
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(big, attr)[:o] = getattr(old, attr)


def add_to_bundle(
    weights: Path, bundle: Path, out: Path, tta: bool | list[str] | None = None
) -> None:
    """Write ``bundle`` with the refiner ``weights`` (as wide as they are; large weights in 8
    bits, see ``refiner.refiner_entry``) to ``out`` (atomically); ``tta``: the bundle's advice
    on mirror test-time augmentation (``LoadedModel.tta``: true, false or the families to
    mirror; None = keep the bundle's)."""
    from lofihippseg.io.atomic import atomic_path
    from lofihippseg.models.registry import safe_torch_load

    state = safe_torch_load(weights)
    net = rf.Refiner(width(state))
    net.load_state_dict(state)
    data = safe_torch_load(bundle)
    data["refiner"] = rf.refiner_entry(net)
    if tta is not None:
        data["tta"] = tta
    with atomic_path(out) as tmp:
        torch.save(data, tmp)
    print(f"{out}: {bundle} with the refiner {weights} ({out.stat().st_size / 1e6:.1f} MB)")


def train_refiner(
    data: list[Path],
    out: Path,
    iterations: int,
    batch: int = 4,
    lr: float = 1e-3,
    filters: int = 8,
    every: int = 250,
    widen_from: Path | None = None,
    seed: int = 0,
    log=print,
    amp: bool = True,
) -> Path:
    """Train (or resume from ``out/last.pt``) a refiner on the cubes in ``data``; a checkpoint
    every ``every`` iterations; returns the last weights (``out/refiner_N.pt``). ``amp``: the
    network's forward in bfloat16 where the CPU computes it natively (the loss in float32).

    Raises:
        LoFiError: no training cubes in ``data``.
    """
    from lofihippseg.errors import LoFiError
    from lofihippseg.models.precision import autocast_dtype, precision_name

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = rf.Refiner(filters)
    dtype = autocast_dtype("cpu", amp)
    log(f"precision: {precision_name('cpu', amp)}")
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    start = 0
    ckpt = out / "last.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
    elif widen_from is not None:
        widen(net, torch.load(widen_from, weights_only=True))
    settings = {"data": [str(d) for d in data], "out": str(out), "iterations": iterations,
                "batch": batch, "lr": lr, "filters": filters, "every": every,
                "widen_from": str(widen_from) if widen_from else None, "seed": seed,
                "amp": amp}  # fmt: skip
    (out / "settings.json").write_text(json.dumps(settings, indent=1))
    rng = random.Random(seed * 1_000_003 + start)
    files: list[Path] = []
    val_files: list[Path] = []
    t0, stepping = time.time(), 0.0
    for it in range(start, iterations):
        if it % 100 == 0 or not files:
            every_file = sorted(p for d in data for p in d.glob("*.npz") if ".part" not in p.name)
            files = [f for f in every_file if not held_out(f)]
            val_files = [f for f in every_file if held_out(f)]
            if not files:
                raise LoFiError(f"{', '.join(map(str, data))}: no refiner training cubes (.npz)")
        step_start = time.perf_counter()
        rate = lr * 0.5 * (1 + math.cos(math.pi * it / iterations))
        for group in opt.param_groups:
            group["lr"] = rate
        xs, ys = [], []
        while len(xs) < batch:
            got = load_side(rng.choice(files), rng)
            if got is not None:
                x, y = augment(*got, rng)
                xs.append(x)
                ys.append(y)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(torch.stack(xs))
        loss = loss_fn(logits.float(), torch.stack(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it > start:  # the first iteration (allocation) is not timed
            stepping += time.perf_counter() - step_start
        if it % 25 == 0:
            log(f"it {it} loss {loss.item():.4f} lr {rate:.2e} {time.time() - t0:.0f}s "
                f"files {len(files)}")  # fmt: skip
        if (it + 1) % every == 0 or it + 1 == iterations:
            if val_files:
                b, a = validate(net, val_files[:60])
                log(f"val it {it + 1}: prior {b:.4f} refined {a:.4f} ({len(val_files)} files)")
            state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "iteration": it + 1}
            torch.save(net.state_dict(), out / f"refiner_{it + 1}.pt")
            torch.save(state, out / "last.tmp")
            (out / "last.tmp").replace(ckpt)
    timed = iterations - start - 1
    if timed > 0:
        per = stepping / timed  # drawing cubes and the step; checkpoints and validation not
        (out / "loop_timing.json").write_text(
            json.dumps({"seconds_per_iteration": per, "iterations": timed, "batch": batch})
        )
    return out / f"refiner_{iterations}.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="+", help="folders of cubes (refiner_data)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--export", type=Path, help="refiner weights to add to --bundle")
    ap.add_argument("--bundle", type=Path, help="model bundle to add the refiner to")
    ap.add_argument("--export-to", type=Path, help="where to write the bundle with the refiner")
    ap.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --export: advise mirror test-time augmentation (default: keep the bundle's)",
    )
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--filters", type=int, default=8, help="base width of a refiner to train")
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--widen-from",
        type=Path,
        help="start from a refiner's weights (as wide as --filters, or narrower: widened)",
    )
    args = ap.parse_args()
    if args.export is not None:
        add_to_bundle(args.export, args.bundle, args.export_to, args.tta)
        return
    if args.data is None or args.out is None:
        ap.error("--data and --out are needed to train")
    torch.set_num_threads(args.threads)
    train_refiner(args.data, args.out, args.iterations, args.batch, args.lr, args.filters,
                  args.every, args.widen_from)  # fmt: skip


if __name__ == "__main__":
    main()
