"""Training loop: critic learning, recipes, resume, NaN handling, checkpoints, init, CLI."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from training_data import make_lisa_dataset, small_config

from lofihippseg.errors import LoFiError
from lofihippseg.models.registry import ModelSpec, build_vnet
from lofihippseg.training import loop, steps
from lofihippseg.training.checkpoint import load_checkpoint, load_init
from lofihippseg.training.config import TrainConfig, released_recipe
from lofihippseg.training.data import GlobalBatchSampler, TrainingSamples, collect_cases
from lofihippseg.training.distributed import DistContext


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_lisa_dataset(tmp_path_factory.mktemp("lisa"), n_cases=4, size=28)


def initial_state(config: TrainConfig):
    state, _ = loop._build(config, DistContext(), n_train=3)
    return state


def params(sd: dict) -> dict:
    """Trainable weights only (batch-norm running statistics change even without a step)."""
    return {k: v for k, v in sd.items() if "running" not in k and "num_batches" not in k}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_paper_run_trains_critic_and_writes_run_folder(dataset, tmp_path, monkeypatch):
    config = small_config(dataset, tmp_path, iterations=3)
    seen = []
    real_step = steps.train_step

    def spy(*args, **kwargs):
        seen.append((tmp_path / "run" / "config.json").exists())
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    run = loop.train(config)
    assert seen and all(seen), "config.json must exist before the first training step"
    assert loop.resume_config(run) == config
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 3
    init = initial_state(config)
    assert not same(params(ckpt["critic"]), params(init.critic.state_dict()))
    assert not same(params(ckpt["vnet2"]), params(init.vnet2.state_dict()))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [2, 3]
    assert all(0.0 <= float(r["dice_fused"]) <= 1.0 for r in rows)
    assert (run / "checkpoints" / "best.pt").exists()
    assert "Dice view1" in (run / "train.log").read_text()


def test_released_recipe_leaves_critic_untrained(dataset, tmp_path):
    config = released_recipe(small_config(dataset, tmp_path, iterations=2))
    assert not config.train_second_view and config.model.view_mode == "legacy"
    run = loop.train(config)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    init = initial_state(config)
    assert same(params(ckpt["critic"]), params(init.critic.state_dict()))
    assert not same(params(ckpt["vnet1"]), params(init.vnet1.state_dict()))


def test_released_training_feeds_the_image_to_both_networks(dataset, tmp_path):
    paper = small_config(dataset, tmp_path, use_augmentation=False)
    cases, _ = collect_cases(paper)
    assert "view2" in TrainingSamples(cases, paper)[0]
    assert "view2" not in TrainingSamples(cases, released_recipe(paper))[0]


def test_resume_equals_uninterrupted_run(dataset, tmp_path):
    full = loop.train(small_config(dataset, tmp_path, name="full", iterations=3, val_every=3))
    config = small_config(dataset, tmp_path, name="split", iterations=3, val_every=3)
    part = loop.train(config, stop_at=1)
    assert load_checkpoint(part / "checkpoints" / "last.pt")["iteration"] == 1
    loop.train(loop.resume_config(part), resume=part)
    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(part / "checkpoints" / "last.pt")
    assert a["iteration"] == b["iteration"] == 3
    for key in ("vnet1", "vnet2", "critic"):
        assert same(a[key], b[key]), key
    assert a["scheduler1"]["last_epoch"] == b["scheduler1"]["last_epoch"] == 3


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(
    dataset, tmp_path, monkeypatch
):
    calls = {"n": 0}
    real = steps.supervised_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 4 else loss  # two calls per iteration

    monkeypatch.setattr(steps, "supervised_loss", poisoned)
    config = small_config(dataset, tmp_path, iterations=6)
    with pytest.raises(LoFiError, match=r"iteration 3.*last good checkpoint.*iteration 2"):
        loop.train(config)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["vnet1"].values() if v.is_floating_point())


def test_corrupt_and_foreign_checkpoints_give_clear_errors(dataset, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(LoFiError, match="bad.pt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(LoFiError, match="not a lofihippseg training checkpoint"):
        load_checkpoint(foreign)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(LoFiError, match="last.pt"):
        loop.train(small_config(dataset, tmp_path), resume=run)


def test_init_from_released_plain_state_dicts(dataset, tmp_path):
    torch.manual_seed(99)
    released = build_vnet(ModelSpec(n_filters=4)).state_dict()
    path = tmp_path / "best_model_1.pth"
    torch.save(released, path)
    config = small_config(
        dataset, tmp_path, iterations=1, lr=0.0, weight_decay=0.0, init1=str(path)
    )
    ckpt = load_checkpoint(loop.train(config) / "checkpoints" / "last.pt")
    assert same(params(ckpt["vnet1"]), params(released))
    assert same(params(ckpt["vnet2"]), params(released))  # init1 alone starts both networks
    wide = tmp_path / "wide.pth"
    torch.save(build_vnet(ModelSpec(n_filters=8)).state_dict(), wide)
    nets = initial_state(config)
    with pytest.raises(LoFiError, match="wide.pth"):
        load_init(nets.vnet1, nets.vnet2, nets.critic, str(wide), None, None)


def test_global_batches_split_over_processes():
    one = list(GlobalBatchSampler(0, 3, batch_size=4))
    two = [list(GlobalBatchSampler(0, 3, 4, rank=r, world_size=2)) for r in (0, 1)]
    merged = [i for it in range(3) for r in (0, 1) for i in two[r][2 * it : 2 * it + 2]]
    assert merged == one
    with pytest.raises(LoFiError):
        GlobalBatchSampler(0, 1, batch_size=3, world_size=2)


def test_samples_are_deterministic_and_foreground_sampling_finds_labels(dataset, tmp_path):
    config = small_config(dataset, tmp_path, foreground_fraction=1.0, patch_size=(16, 16, 16))
    cases, _ = collect_cases(config)
    ds = TrainingSamples(cases, config)
    a, b = ds[5], ds[5]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["image"].shape == (1, 16, 16, 16) and a["view2"].shape == (1, 16, 16, 16)
    assert all(int((ds[i]["label"] > 0).sum()) > 0 for i in range(4))


def test_cli_train_smoke(dataset, tmp_path):
    from click.testing import CliRunner

    from lofihippseg.cli.train import command

    args = [
        str(dataset),
        "--out",
        str(tmp_path),
        "--name",
        "cli",
        "--iterations",
        "2",
        "--batch",
        "2",
        "--patch",
        "32",
        "--n-filters",
        "4",
        "--val-every",
        "2",
        "--device",
        "cpu",
        "--no-amp",
        "--num-workers",
        "0",
        "--no-gate",
        "--recipe",
        "paper",
        "--seed",
        "5",
    ]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "cli"
    for name in (
        "config.json",
        "metrics.csv",
        "train.log",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    ):
        assert (run / name).exists(), name
    config = loop.resume_config(run)
    assert config.model.n_filters == 4 and not config.loss.use_gate and config.seed == 5
    assert not config.loss.train_critic and not config.loss.use_adversarial  # the default
    with_critic = [*args[: args.index("cli")], "with-critic", *args[args.index("cli") + 1 :]]
    result = CliRunner().invoke(command, [*with_critic, "--critic"])
    assert result.exit_code == 0, result.output
    critic = loop.resume_config(tmp_path / "with-critic").loss
    assert critic.train_critic and critic.use_adversarial and not critic.use_gate  # --no-gate won
    saved = json.loads((run / "config.json").read_text())
    saved["loss"].update(train_critic=True, use_adversarial=True)
    (tmp_path / "mine.json").write_text(json.dumps(saved))
    from_config = CliRunner().invoke(
        command,
        [
            "--config",
            str(tmp_path / "mine.json"),
            "--name",
            "from-config",
            "--out",
            str(tmp_path),
            "--iterations",
            "1",
        ],  # fmt: skip
    )
    assert from_config.exit_code == 0, from_config.output
    assert loop.resume_config(tmp_path / "from-config").loss.train_critic  # --config kept it
    help_text = CliRunner().invoke(command, ["--help"]).output
    for option in (
        "--synthetic",
        "--recipe",
        "--resume",
        "--init1",
        "--single-view",
        "--no-critic",
        "--critic",
    ):
        assert option in help_text
    again = CliRunner().invoke(command, args)  # same run name: refused, nothing overwritten
    assert again.exit_code != 0 and "already exists" in str(again.exception)


def test_single_view_trains_only_network_one(dataset, tmp_path):
    config = small_config(dataset, tmp_path, iterations=2, single_view=True)
    ckpt = load_checkpoint(loop.train(config) / "checkpoints" / "last.pt")
    init = initial_state(config)
    assert ckpt["single_view"] is True
    assert same(params(ckpt["vnet2"]), params(init.vnet2.state_dict()))
    assert not same(params(ckpt["vnet1"]), params(init.vnet1.state_dict()))


def test_synthetic_only_run_validates_on_fixed_synthetic_volumes(tmp_path):
    from lofihippseg.synth.config import SynthConfig

    config = TrainConfig(
        synthetic="packaged",
        synth=SynthConfig.fast((40, 40, 40)),
        n_val_synthetic=1,
        out_dir=str(tmp_path),
        name="synth",
        iterations=1,
        batch_size=1,
        patch_size=(32,) * 3,
        val_every=1,
        device="cpu",
        amp=False,
        num_workers=0,
        model=ModelSpec(n_filters=4),
    )
    run = loop.train(config)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and 0.0 <= float(rows[0]["dice_fused"]) <= 1.0
    assert loop.resume_config(run) == config  # the generator settings survive the JSON


@pytest.mark.slow
def test_short_training_on_ellipsoids_learns(tmp_path):
    """Minutes on 2 CPU cores: the full paper loss (mutual weight ramped up) learns.

    Validation Dice of the fused output goes well above chance (about 0 here: the ellipsoids
    fill well under 1% of each volume).
    """
    data = make_lisa_dataset(tmp_path / "lisa", n_cases=6, size=28, seed=1)
    config = small_config(
        data,
        tmp_path,
        iterations=200,
        val_every=50,
        lr=0.1,
        use_augmentation=False,
        val_fraction=0.34,
    )
    run = loop.train(config)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert max(float(r["dice_fused"]) for r in rows) > 0.3


def test_config_file_without_data_takes_data_from_the_command_line(tmp_path):
    from lofihippseg.cli.train import build_config

    settings = tmp_path / "recipe.json"
    settings.write_text('{"iterations": 7, "patch_size": [32, 32, 32], "model": {"n_filters": 4}}')
    config = build_config(("cases/",), settings, None, {}, {}, {})
    assert config.data == ("cases/",) and config.iterations == 7
    assert config.patch_size == (32, 32, 32) and config.model.n_filters == 4
