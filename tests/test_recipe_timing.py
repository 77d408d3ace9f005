"""Plans that hold on the user's machine: a few real iterations timed where the run starts."""

from __future__ import annotations

import pytest
from training_data import make_lisa_dataset

from lofihippseg.io.datasets import discover_cases  # noqa: F401 - the dataset layout train reads
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.plan import DeviceBudget, Fingerprint, plan_recipe, with_measured_time
from lofihippseg.training.timing import time_iterations


def test_measured_seconds_replace_the_constant_and_say_so():
    fp = Fingerprint(n_cases=200, median_shape=(36, 50, 36))
    plan = plan_recipe(fp, DeviceBudget("cpu", 2, 20.0))
    slow = with_measured_time(plan, 1.34, 2, time_budget_minutes=20)
    # 20 minutes at the measured 1.34 s per iteration (10 % kept for validation)
    assert slow.iterations == int(20 * 60 / (1.34 * 1.1))
    assert slow.estimated_seconds_per_iteration == pytest.approx(1.34)
    assert slow.iterations < plan.iterations  # the constant promised more here
    said = [r for r in slow.reasons if r.startswith("CPU, ")]
    assert len(said) == 1 and "measured 1.34 s/iteration here" in said[0]
    gpu = plan_recipe(fp, DeviceBudget("cuda", 8, 40.0))
    assert with_measured_time(gpu, 0.1, 8) == gpu  # GPU plans keep the configured iterations


def test_time_iterations_runs_real_steps_and_leaves_the_random_stream(tmp_path):
    import torch

    data = make_lisa_dataset(tmp_path / "d", n_cases=3, size=28)
    config = TrainConfig(data=(str(data),), patch_size=(16, 16, 16), batch_size=2,
                         device="cpu", num_workers=0, out_dir=str(tmp_path))  # fmt: skip
    config = config.replace(model=config.model.__class__(n_filters=2))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    seconds = time_iterations(config, n=2)
    assert 0 < seconds < 60
    assert torch.equal(torch.rand(3), expected)  # the run's own draws are not shifted
    assert not (tmp_path / "run").exists()  # nothing written


def test_train_plan_says_the_seconds_it_measured(tmp_path, capsys):
    from lofihippseg.cli.train import _planned

    data = make_lisa_dataset(tmp_path / "d", n_cases=3, size=28)
    config = TrainConfig(data=(str(data),), device="cpu", num_workers=0, out_dir=str(tmp_path))
    config = config.replace(model=config.model.__class__(n_filters=2))
    planned = _planned(config, {"n_filters", "batch_size"}, 0.05)  # what train does first
    out = capsys.readouterr().out
    assert "s/iteration here (a few real iterations timed at the start" in out
    line = next(r for r in planned.plan if "measured" in r)
    measured = float(line.split("measured ")[1].split(" s/iteration")[0])
    assert planned.iterations == max(100, int(0.05 * 60 / (measured * 1.1)))
