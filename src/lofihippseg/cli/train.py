"""``lofihippseg train``: train the dual-view model; one run = one folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from lofihippseg.config import from_dict, read_json_settings


def _patch(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give one size (128) or three (128,128,96)") from None
    if len(parts) not in (1, 3):
        raise click.BadParameter(f"{value!r}: give one size (128) or three (128,128,96)")
    return tuple(parts * 3 if len(parts) == 1 else parts)  # type: ignore[return-value]


# the only settings ``--resume`` may change; every other option given is refused
RESUME_CHANGEABLE = ("iterations", "val_every", "device", "num_workers")


def _refuse_changes_on_resume(ctx: click.Context) -> None:
    """Refuse DATA and every option given explicitly with ``--resume`` except the changeable.

    Uses click's parameter source, so options added later are refused too.
    """
    explicit = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    given = [
        param
        for param in ctx.command.params
        if param.name not in (*RESUME_CHANGEABLE, "resume")
        and ctx.get_parameter_source(param.name) in explicit
    ]
    if given:
        names = ", ".join(
            p.opts[0] if isinstance(p, click.Option) else p.human_readable_name for p in given
        )
        raise click.UsageError(
            f"--resume continues a run with its saved settings, so {names} cannot be given; "
            "only --iterations, --val-every, --device and --num-workers may change",
            ctx,
        )


def build_config(
    data: tuple[str, ...],
    config_json: str | None,
    recipe: str | None,
    top: dict[str, Any],
    model: dict[str, Any],
    loss: dict[str, Any],
):
    """TrainConfig from (in order) defaults or ``--config``, the recipe, then explicit options."""
    from lofihippseg.training.config import TrainConfig, released_recipe

    top = {k: v for k, v in top.items() if v is not None}
    model = {k: v for k, v in model.items() if v is not None}
    loss = {k: v for k, v in loss.items() if v is not None}
    base: dict[str, Any] = read_json_settings(config_json) if config_json else {}
    if data:
        base["data"] = list(data)
    for key in ("synthetic", "unsided", "out_dir", "name"):  # validated with the base config
        if key in top:
            base[key] = top[key]
    config = from_dict(TrainConfig, base)
    if recipe == "released":
        config = released_recipe(config)
    if recipe is not None:
        config = config.replace(recipe=recipe)
    return config.replace(
        **top,
        model=dataclasses.replace(config.model, **model),
        loss=dataclasses.replace(config.loss, **loss),
    )


@click.command(name="train")
@click.argument("data", nargs=-1, type=click.Path(exists=True, path_type=str))
@click.option(
    "--config",
    "config_json",
    type=click.Path(exists=True, dir_okay=False),
    help="Start from the settings in this JSON file (e.g. a run's config.json).",
)
@click.option("--val-fraction", type=float, help="Share of cases held out for validation (0.2).")
@click.option(
    "--synthetic",
    type=str,
    help="Folder of label maps for on-the-fly synthetic images, a text file listing them, "
    "or 'packaged' for the shipped ones. DATA is optional when given.",
)
@click.option(
    "--synthetic-fraction",
    type=float,
    help="Probability that a training sample is synthetic when DATA is also given.",
)
@click.option(
    "--synthetic-fraction-start",
    type=float,
    help="A curriculum from visible to invisible contrasts: the synthetic share at the first "
    "iteration, falling linearly to --synthetic-fraction over --curriculum-share of the run "
    "(with --config settings of random contrast, every boundary is visible in those samples).",
)
@click.option(
    "--curriculum-share",
    type=float,
    help="Share of the iterations over which --synthetic-fraction-start falls (0.5).",
)
@click.option(
    "--synthetic-voxel-mm",
    type=float,
    nargs=2,
    help="Resample each synthetic image to an isotropic voxel size drawn from LOW HIGH mm "
    "(made at 1 mm otherwise).",
)
@click.option(
    "--synthetic-pool",
    type=click.IntRange(min=0),
    help="Draw synthetic samples from N seeded boxes, each generated once and reused with "
    "its own patch and augmentation (0, the default: a fresh box every sample; generating "
    "one costs most of a CPU iteration).",
)
@click.option(
    "--unsided",
    multiple=True,
    type=click.Path(exists=True, path_type=str),
    help="Labelled crops whose labels carry no side (e.g. the MSD hippocampus crops; any label "
    "> 0 is the hippocampus): trained on whichever output channel already overlaps them more, "
    "validated with the sides merged. Repeatable.",
)
@click.option(
    "--unsided-fraction",
    type=float,
    help="Probability that a training sample is an unsided crop when other data is given.",
)
@click.option(
    "--unsided-voxel-mm",
    type=float,
    help="Resample unsided crops to this isotropic voxel size (e.g. the working grid, 1.5).",
)
@click.option(
    "--unsided-invert-prob",
    type=float,
    help="Probability of inverting an unsided crop's contrast (T1 toward T2-like; 0).",
)
@click.option(
    "--unsided-remap-prob",
    type=float,
    help="Probability of passing an unsided crop's intensities through a random curve (real "
    "edges under a random tissue contrast; 0).",
)
@click.option(
    "--unsided-side",
    type=click.Choice(["resolve", "left", "right"]),
    help="Side of every stored crop, if known: 'left' or 'right' (each sample is then mirrored "
    "half of the time and labelled the other side; the MSD crops are all left-like), or "
    "'resolve' (the channel that overlaps it more; the default).",
)
@click.option(
    "--unsided-other",
    type=click.Choice(["empty", "free"]),
    help="Inside a side-less crop's hippocampus, the channel it was not given is trained "
    "empty (a crop holds one hippocampus) or left free (no pull toward background; 'empty').",
)
@click.option(
    "--boundary-weight",
    type=click.FloatRange(0, 100),
    help="Extra cross-entropy weight on voxels within 2 voxels of a label's edge (0: none, "
    "the default; 2 counts them 3x).",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Parent folder of runs (runs/)."
)
@click.option("--name", help="Run folder name (default: a time stamp).")
@click.option(
    "--recipe",
    type=click.Choice(["paper", "released"]),
    help="paper (default): the method done right; released: the authors' training "
    "with its quirks (unmasked view in training, untrained critic, ungated mutual loss, "
    "cycling cosine, legacy view, no augmentation).",
)
@click.option("--iterations", type=int, help="Training iterations (30000).")
@click.option("--batch", "batch_size", type=int, help="Global batch size (8).")
@click.option(
    "--patch", type=str, help="Patch size: one number (128) or three (128,128,96); multiples of 16."
)
@click.option(
    "--n-filters", type=click.IntRange(min=1), help="Base width of each VNet (16 = released)."
)
@click.option(
    "--val-every", type=int, help="Validate and save a checkpoint every N iterations (150)."
)
@click.option("--lr", type=float, help="SGD learning rate of each VNet (0.01).")
@click.option("--device", type=str, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on GPU (default on).")
@click.option("--seed", type=int, help="Random seed (1337).")
@click.option(
    "--foreground-fraction",
    type=float,
    help="Probability that a patch is centred on a hippocampus voxel (0.5; released 0).",
)
@click.option(
    "--view-mode",
    type=click.Choice(["highpass", "lowpass", "legacy"]),
    help="Second-view frequency mask (highpass; released: legacy).",
)
@click.option(
    "--cutoff", type=float, help="Frequency ball radius as a fraction of max(D,H,W) (0.1)."
)
@click.option("--no-augment", is_flag=True, default=None, help="Switch augmentation off.")
@click.option(
    "--critic/--no-critic",
    default=None,
    help="The paper's critic: it gates the mutual loss, adds the adversarial term and is "
    "trained (on a voxel sample, --critic-fraction). Off by default (--no-critic: ungated "
    "mutual loss): on real labels it lost accuracy at equal iterations and at equal time "
    "(docs/benchmarks.md). --config and --recipe released keep their own setting.",
)
@click.option(
    "--no-gate",
    is_flag=True,
    default=None,
    help="Mutual loss without the per-voxel confidence gate (released variant).",
)
@click.option("--no-mutual", is_flag=True, default=None, help="Drop the mutual (cross-view) loss.")
@click.option(
    "--single-view",
    is_flag=True,
    default=None,
    help="Train only network 1 on the image (ablation).",
)
@click.option(
    "--init1",
    type=click.Path(exists=True, dir_okay=False),
    help="Start VNet 1 (and VNet 2 unless --init2) from this checkpoint: ours, a bundle, "
    "or a released plain state dict (best_model_1.pth).",
)
@click.option(
    "--init-family",
    help="With --init1 a bundle of several contrast families (the shipped model: t2, t1): "
    "the family to start from (default: its first, t2).",
)
@click.option(
    "--init2",
    type=click.Path(exists=True, dir_okay=False),
    help="Start VNet 2 from this checkpoint.",
)
@click.option(
    "--init-critic",
    type=click.Path(exists=True, dir_okay=False),
    help="Start the critic from this checkpoint.",
)
@click.option(
    "--num-workers", type=click.IntRange(min=0), help="Data-loading worker processes (2)."
)
@click.option(
    "--plan/--no-plan",
    "plan",
    default=None,
    help="Plan patch, batch, width, clipping, lr (and CPU iterations) from the data and the "
    "device (default: on, unless --config); explicit options always win.",
)
@click.option(
    "--time-budget",
    type=float,
    help="Minutes of training the CPU plan fills with iterations (20).",
)
@click.option(
    "--critic-fraction",
    type=float,
    help="Share of voxels the critic's terms are estimated on (0.05; 1 = every voxel).",
)
@click.option(
    "--clip",
    type=str,
    help="Intensity clipping before min-max normalisation: 'LOW,HIGH' percentiles or 'none'.",
)
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False),
    help="Continue the run in this folder from its last checkpoint (only --iterations, "
    "--val-every, --device and --num-workers may change).",
)
def command(data, config_json, recipe, resume, **opts) -> None:
    """Train the dual-view model on labelled DATA (folders in LISA / nnU-Net / MSD layout, or
    CSV files of image,label paths) and/or synthetic images.

    \b
    Examples:
      lofihippseg train LISA_train/ --iterations 30000 --name paper
      lofihippseg train LISA_train/ --recipe released \
          --init1 best_model_1.pth --init2 best_model_2.pth
      torchrun --nproc_per_node 4 -m lofihippseg train LISA_train/ --batch 8
      lofihippseg train --resume runs/paper --iterations 40000
    """
    from lofihippseg.training.loop import resume_config, train

    if resume:
        _refuse_changes_on_resume(click.get_current_context())
        keep = {k: opts[k] for k in RESUME_CHANGEABLE if opts[k] is not None}
        run = train(resume_config(resume, **keep), resume=Path(resume))
        click.echo(f"run folder: {run}")
        return
    opts["unsided"] = tuple(opts["unsided"]) or None
    if not data and not opts["synthetic"] and not opts["unsided"] and not config_json:
        raise click.UsageError("give DATA (labelled cases), --unsided DIR and/or --synthetic DIR")
    loss: dict[str, Any] = {}
    critic = opts.pop("critic")
    if critic is None and not config_json and recipe != "released":
        critic = False  # the default recipe (see --critic)
    if critic is not None:
        from lofihippseg.training.losses import critic_switches

        loss.update(critic_switches(critic))
    if opts.pop("no_gate"):
        loss["use_gate"] = False
    if opts.pop("no_mutual"):
        loss["use_mutual"] = False
    unsided_other = opts.pop("unsided_other")
    if unsided_other is not None:
        loss["unsided_other"] = unsided_other
    boundary_weight = opts.pop("boundary_weight")
    if boundary_weight is not None:
        loss["boundary_weight"] = boundary_weight
    if opts.get("critic_fraction") is not None:
        loss["critic_fraction"] = opts["critic_fraction"]
    opts.pop("critic_fraction", None)
    plan, time_budget = opts.pop("plan"), opts.pop("time_budget")
    if time_budget is not None and not time_budget > 0:
        raise click.BadParameter(
            f"{time_budget}: give a number of minutes above 0", param_hint="--time-budget"
        )
    model = {k: opts.pop(k) for k in ("n_filters", "view_mode", "cutoff")}
    clip = opts.pop("clip")
    if clip is not None:
        model["clip_percentiles"] = _clip(clip)
    if opts.pop("no_augment"):
        opts["use_augmentation"] = False
    opts["patch_size"] = _patch(opts.pop("patch"))
    config = build_config(data, config_json, recipe, opts, model, loss)
    if plan is None:
        plan = config_json is None
    if plan:
        explicit = {k for k, v in {**opts, **model}.items() if v is not None}
        if clip is not None:
            explicit.add("clip_percentiles")
        config = _planned(config, explicit, time_budget)
    run = train(config)
    click.echo(f"run folder: {run}")


def _clip(value: str) -> tuple[float, float] | None:
    if value.strip().lower() == "none":
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give 'LOW,HIGH' percentiles or 'none'") from None
    if not 0 <= low < high <= 100:
        raise click.BadParameter(f"{value!r}: need 0 <= LOW < HIGH <= 100")
    return (low, high)


def _planned(config, explicit: set[str], time_budget: float | None):
    """The config with the planner's choices for every setting not given explicitly."""
    from lofihippseg.training.plan import apply_plan, plan_for_config

    plan, budget = plan_for_config(config, time_budget)
    planned = apply_plan(config, plan, explicit)
    if budget.kind == "cpu" and "iterations" not in explicit:
        from lofihippseg.training.plan import check_fits, with_measured_time
        from lofihippseg.training.timing import time_iterations

        # the constant was measured elsewhere: time a few real iterations here and plan on them
        check_fits(planned, budget)  # a clear error first, not an allocation failure
        seconds = time_iterations(planned)
        plan = with_measured_time(plan, seconds, budget.threads, time_budget)
        planned = apply_plan(config, plan, explicit)
    kept = sorted(explicit & {"patch_size", "batch_size", "n_filters", "lr", "iterations",
                              "val_every", "clip_percentiles"})  # fmt: skip
    lines = plan.describe().splitlines()
    if kept:

        def value(key: str) -> object:
            source = planned.model if key in ("n_filters", "clip_percentiles") else planned
            return getattr(source, key)

        chosen = ", ".join(f"{key} {value(key)}" for key in kept)
        lines.append(f"  - explicit options replace the plan's: {chosen}")
    where = budget.name if budget.kind == "cuda" else f"{budget.threads} thread(s)"
    click.echo(f"planned for {budget.kind} ({where}, {budget.memory_gb:.0f} GB free):")
    click.echo("\n".join(lines))
    return planned.replace(plan=tuple(lines))
