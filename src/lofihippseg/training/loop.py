"""The training loop: one run = one folder.

Run folder (CONTRACTS.md): ``config.json`` (written before training starts), ``train.log``,
``metrics.csv`` (one row per validation), ``checkpoints/last.pt`` and ``checkpoints/best.pt``
(best fused validation Dice). ``train(config, resume=run)`` continues a run exactly: the data
stream is a function of (seed, iteration), and the checkpoint holds every other state.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lofihippseg.config import load_settings, save_json, to_dict
from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import atomic_path, remove_stale_temps
from lofihippseg.io.paths import ensure_writable_dir, safe_output_path
from lofihippseg.models.registry import build_critic, build_vnet, load_weights
from lofihippseg.training import distributed as D
from lofihippseg.training.checkpoint import (
    load_checkpoint,
    load_init,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.data import (
    GlobalBatchSampler,
    PreparedCase,
    TrainingSamples,
    collect_cases,
    collect_unsided,
    load_case,
    prepare_arrays,
    synthetic_label_maps,
)
from lofihippseg.training.plan import check_fits, device_budget
from lofihippseg.training.steps import NonFiniteLoss, TrainState, lr_factor, train_step
from lofihippseg.training.validation import validate

log = logging.getLogger("lofihippseg.training")
METRIC_FIELDS = [
    "iteration",
    "loss",
    "lr",
    "dice1",
    "dice2",
    "dice_fused",
    "dice_left",
    "dice_right",
    "dice_unsided",
    "dice_unsided_mirrored",
    "best_dice",
    "seconds",
    "val_seconds",
]


def validation_cases(
    config: TrainConfig, val: list, unsided_val: list | None = None
) -> list[PreparedCase]:
    """Prepared validation volumes: the real ones (sided, then unsided), else fixed synthetic
    ones."""
    spec = config.model
    voxel = config.unsided_voxel_mm
    unsided = [load_case(c, spec, True, True, voxel) for c in unsided_val or []]
    if val:
        return [load_case(c, spec, with_view2=True) for c in val] + unsided
    if config.synthetic is None or config.n_val_synthetic <= 0:
        return unsided
    from lofihippseg.synth.generator import SyntheticGenerator

    gen = SyntheticGenerator(synthetic_label_maps(config.synthetic), config.synth_config())
    out = []
    for i in range(config.n_val_synthetic):
        s = gen.sample(torch.Generator().manual_seed(config.seed + 7919 * (i + 1)))
        out.append(prepare_arrays(f"synthetic_{i}", s.image.numpy(), s.label.numpy(), spec, True))
    return out + unsided


def _run_dir(config: TrainConfig, ctx: D.DistContext) -> Path:
    name = config.name or time.strftime("%Y%m%d-%H%M%S")
    if ctx.enabled:  # every process must use rank 0's name
        names = [name]
        torch.distributed.broadcast_object_list(names, src=0)
        name = names[0]
    if name in (".", "..") or Path(name).name != name or "\\" in name:
        raise LoFiError(
            f"--name {name!r}: give a plain folder name; runs are written inside --out "
            f"{config.out_dir}"
        )
    run = safe_output_path(config.out_dir, name)
    if ctx.is_main:
        ensure_writable_dir(config.out_dir)
    if ctx.is_main and (run / "checkpoints" / "last.pt").exists():
        raise LoFiError(f"{run}: a run already exists there; use --resume {run} or another --name")
    return run


def _build(config: TrainConfig, ctx: D.DistContext, n_train: int) -> tuple[TrainState, list[str]]:
    torch.manual_seed(config.seed)
    spec = config.model
    nets = [build_vnet(spec), build_vnet(spec), build_critic()]
    done = load_init(*nets, config.init1, config.init2, config.init_critic, config.init_family)
    nets = [n.to(ctx.device).train() for n in nets]
    vnet1 = D.wrap(nets[0], ctx, config.sync_batchnorm)
    vnet2 = nets[1] if config.single_view else D.wrap(nets[1], ctx, config.sync_batchnorm)
    critic = nets[2]

    def sgd(net):
        return torch.optim.SGD(
            net.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )

    opt1, opt2 = sgd(vnet1), sgd(vnet2)
    opt_c = torch.optim.AdamW(
        critic.parameters(), lr=config.critic_lr, weight_decay=config.critic_weight_decay
    )
    epoch = -(-n_train // config.batch_size) if n_train else 0
    period = config.iterations // epoch if epoch else config.iterations // 8
    factor = lr_factor(config.lr_schedule, config.iterations, max(period, 1))
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt1, opt2)]
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and ctx.device.type == "cuda")
    return TrainState(vnet1, vnet2, critic, opt1, opt2, opt_c, *scheds, scaler), done


def _checkpoint(state: TrainState, config: TrainConfig, it: int, best: float, device) -> dict:
    return {
        "iteration": it,
        "spec": to_dict(config.model),
        "recipe": config.recipe,
        "single_view": config.single_view,
        "vnet1": D.unwrap(state.vnet1).state_dict(),
        "vnet2": D.unwrap(state.vnet2).state_dict(),
        "critic": state.critic.state_dict(),
        "optimiser1": state.opt1.state_dict(),
        "optimiser2": state.opt2.state_dict(),
        "optimiser_critic": state.opt_critic.state_dict(),
        "scheduler1": state.sched1.state_dict(),
        "scheduler2": state.sched2.state_dict(),
        "scaler": state.scaler.state_dict(),
        "rng": rng_state(device),
        "best_dice": best,
    }


def _restore(state: TrainState, ckpt: dict, source: Path) -> None:
    load_weights(D.unwrap(state.vnet1), ckpt["vnet1"], source)
    load_weights(D.unwrap(state.vnet2), ckpt["vnet2"], source)
    load_weights(state.critic, ckpt["critic"], source)
    state.opt1.load_state_dict(ckpt["optimiser1"])
    state.opt2.load_state_dict(ckpt["optimiser2"])
    state.opt_critic.load_state_dict(ckpt["optimiser_critic"])
    state.sched1.load_state_dict(ckpt["scheduler1"])
    state.sched2.load_state_dict(ckpt["scheduler2"])
    state.scaler.load_state_dict(ckpt["scaler"])


def _log_to(run: Path) -> logging.Handler:
    handler = logging.FileHandler(run / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.getLogger("lofihippseg").addHandler(handler)
    logging.getLogger("lofihippseg").setLevel(logging.INFO)
    return handler


def resume_config(run: str | Path, **overrides) -> TrainConfig:
    """The saved config of a run, with some fields changed (e.g. more ``iterations``)."""
    config = load_settings(TrainConfig, Path(run) / "config.json")
    return config.replace(**overrides) if overrides else config


def train(
    config: TrainConfig, resume: str | Path | None = None, stop_at: int | None = None
) -> Path:
    """Train both VNets (and the critic); returns the run folder.

    Args:
        config: all settings.
        resume: a run folder to continue from its ``checkpoints/last.pt``.
        stop_at: stop after this iteration (as if interrupted; the cosine still spans
            ``config.iterations``), leaving ``last.pt`` to resume from.

    Raises:
        LoFiError: bad data or settings, a NaN/inf loss (the last good checkpoint is kept).

    Example:
        >>> run = train(TrainConfig(data=("lisa/",), iterations=300))  # doctest: +SKIP
    """
    ctx = D.setup(config.device)
    try:
        return _train(config, ctx, resume, stop_at)
    finally:
        D.teardown(ctx)


def _train(config: TrainConfig, ctx: D.DistContext, resume, stop_at) -> Path:
    check_fits(config, device_budget(str(ctx.device)))  # a clear error, not an OOM kill
    run = Path(resume) if resume is not None else _run_dir(config, ctx)
    ckpt_dir = run / "checkpoints"
    if ctx.is_main:
        remove_stale_temps([ckpt_dir / "last.pt", ckpt_dir / "best.pt", run / "config.json"])
    if ctx.is_main and resume is None:
        save_json(config, run / "config.json")  # before anything can fail
    handler = _log_to(run) if ctx.is_main else None
    try:
        train_cases, val = collect_cases(config)
        unsided_train, unsided_val = collect_unsided(config)
        val_cases = validation_cases(config, val, unsided_val) if ctx.is_main else []
        state, done = _build(config, ctx, len(train_cases) + len(unsided_train))
        start, best = 0, -1.0
        if resume is not None:
            ckpt = load_checkpoint(ckpt_dir / "last.pt", map_location=ctx.device)
            _restore(state, ckpt, ckpt_dir / "last.pt")
            start, best = int(ckpt["iteration"]), float(ckpt["best_dice"])
            set_rng_state(ckpt["rng"], ctx.device)
            log.info("resumed %s at iteration %d", run, start)
            if ctx.is_main:  # only now: a resume that fails leaves config.json as it was
                _trim_metrics(run / "metrics.csv", start)
                save_json(config, run / "config.json")
        else:
            torch.manual_seed(config.seed)
        stop = min(stop_at or config.iterations, config.iterations)
        log.info(
            "run %s: recipe %s (critic %s), %d training / %d validation cases%s%s, "
            "device %s x%d; %s",
            run,
            config.recipe,
            "on" if config.loss.needs_critic else "off",
            len(train_cases) + len(unsided_train),
            len(val_cases),
            f" ({len(unsided_train)} training crops without side)" if unsided_train else "",
            " + synthetic" if config.synthetic else "",
            ctx.device,
            ctx.world_size,
            "; ".join(done) or "random init",
        )
        dataset = TrainingSamples(train_cases, config, unsided_train)
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size // ctx.world_size,
            sampler=GlobalBatchSampler(start, stop, config.batch_size, ctx.rank, ctx.world_size),
            num_workers=config.num_workers,
            pin_memory=ctx.device.type == "cuda",
        )
        if ctx.is_main and start == 0:
            save_checkpoint(_checkpoint(state, config, 0, best, ctx.device), ckpt_dir / "last.pt")
        _loop(config, ctx, state, loader, val_cases, run, start, stop, best)
    finally:
        if handler is not None:
            logging.getLogger("lofihippseg").removeHandler(handler)
            handler.close()
    return run


def _loop(config, ctx, state, loader, val_cases, run, start, stop, best) -> None:
    ckpt_dir, saved = run / "checkpoints", start
    it, losses, t0 = start, [], time.time()
    bar = tqdm(
        total=stop,
        initial=start,
        disable=not ctx.is_main,
        desc=run.name,
        dynamic_ncols=True,
        leave=True,
    )
    metrics_path = run / "metrics.csv"
    for batch in loader:
        try:
            scale = config.loss.mutual_scale(it, config.iterations)
            sampler = torch.Generator(device=ctx.device)  # critic's voxel samples
            sampler.manual_seed(config.seed * 1_000_003 + it * 8191 + ctx.rank)
            out = train_step(
                state, batch, config.loss, ctx, config.amp, config.single_view, scale, sampler
            )
        except NonFiniteLoss as exc:
            msg = (
                f"training stopped at iteration {it + 1}: {exc}; the last good checkpoint is "
                f"{ckpt_dir / 'last.pt'} (iteration {saved}); try a lower --lr or --no-amp"
            )
            log.error(msg)
            bar.close()
            raise LoFiError(msg) from None
        it += 1
        losses.append(out["loss"])
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss']:.4f}", best_dice=f"{max(best, 0):.3f}", refresh=False)
        validating = it % config.val_every == 0 or it == config.iterations
        if not (validating or it == stop):
            continue
        if ctx.is_main:
            if validating and val_cases:
                val_start = time.time()
                vnet2 = None if config.single_view else D.unwrap(state.vnet2)
                scores = validate(
                    D.unwrap(state.vnet1),
                    vnet2,
                    val_cases,
                    ctx.device,
                    config.patch_size,
                    config.val_max_voxels,
                    config.amp,
                )
                improved = scores["dice_fused"] > best
                best = max(best, scores["dice_fused"])
                row = {
                    "iteration": it,
                    "loss": sum(losses) / len(losses),
                    "lr": out["lr"],
                    **scores,
                    "best_dice": best,
                    "seconds": round(time.time() - t0, 1),
                    "val_seconds": round(time.time() - val_start, 2),
                }
                _append_csv(metrics_path, row)
                merged, mirrored = scores["dice_unsided"], scores["dice_unsided_mirrored"]
                crops = f" (crops without side, merged: {merged:.3f}; mirrored {mirrored:.3f})"
                log.info(
                    "iteration %d: loss %.4f, Dice view1 %.3f view2 %.3f fused %.3f%s",
                    it,
                    row["loss"],
                    scores["dice1"],
                    scores["dice2"],
                    scores["dice_fused"],
                    "" if merged != merged else crops,
                )
                bar.set_postfix(loss=f"{out['loss']:.4f}", val_dice=f"{scores['dice_fused']:.3f}")
                losses = []
            else:
                improved = validating and not val_cases  # no validation set: best = latest
            ckpt = _checkpoint(state, config, it, best, ctx.device)
            save_checkpoint(ckpt, ckpt_dir / "last.pt")
            if improved:
                save_checkpoint(ckpt, ckpt_dir / "best.pt")
            saved = it
        D.barrier(ctx)
    bar.close()
    log.info("stopped at iteration %d; best fused validation Dice %.3f", it, best)


def _trim_metrics(path: Path, iteration: int) -> None:
    """Drop ``metrics.csv`` rows after ``iteration``: written just before a kill, before their
    checkpoint was saved, they would be written again (a duplicate row) after the resume."""
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames or METRIC_FIELDS, list(reader)

    def at(row: dict) -> float:
        try:
            return float(row.get("iteration") or 0)
        except ValueError:
            return 0.0

    kept = [r for r in rows if at(r) <= iteration]
    if len(kept) == len(rows):
        return
    log.info("metrics.csv: dropped %d row(s) after iteration %d", len(rows) - len(kept), iteration)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    fields = METRIC_FIELDS
    if not new:  # a run resumed by a newer version keeps its file's columns
        with path.open(newline="") as fh:
            fields = next(csv.reader(fh), None) or METRIC_FIELDS
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
