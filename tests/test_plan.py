"""The recipe planner: small crops on a CPU, whole heads on a GPU, explicit options, memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_nifti
from training_data import make_lisa_dataset

from lofihippseg.errors import LoFiError
from lofihippseg.io.datasets import discover_cases
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.plan import (
    DeviceBudget,
    Fingerprint,
    apply_plan,
    check_fits,
    estimate_memory_gb,
    fingerprint_cases,
    plan_recipe,
)

MSD_LIKE = Fingerprint(n_cases=160, median_shape=(36, 50, 35), tail_ratio=3.2)
WHOLE_HEAD = Fingerprint(n_cases=63, median_shape=(159, 231, 195), foreground_extent=(80, 40, 35))


def test_small_crops_on_a_cpu_get_a_small_patch_and_batch():
    plan = plan_recipe(MSD_LIKE, DeviceBudget("cpu", 2, 20.0))
    assert plan.patch_size == (48, 64, 48)  # one patch holds a whole crop
    assert plan.batch_size == 4 and plan.n_filters == 8
    assert plan.lr == pytest.approx(0.05)
    assert plan.clip_percentiles == (0.5, 99.5)  # heavy intensity tails
    assert plan.estimated_memory_gb < 2.0
    # iterations fill the time budget (with 10 % for validation)
    assert plan.iterations * plan.estimated_seconds_per_iteration * 1.1 == pytest.approx(
        20 * 60, rel=0.01
    )
    longer = plan_recipe(MSD_LIKE, DeviceBudget("cpu", 2, 20.0), time_budget_minutes=60)
    assert longer.iterations == pytest.approx(3 * plan.iterations, rel=0.01)
    assert any("clip" in r for r in plan.reasons)


def test_whole_heads_on_a_large_gpu_get_the_released_recipe():
    plan = plan_recipe(WHOLE_HEAD, DeviceBudget("cuda", 16, 139.0))
    assert plan.patch_size == (128, 128, 128)
    assert plan.batch_size == 8 and plan.n_filters == 16
    assert plan.lr == pytest.approx(0.01) and plan.clip_percentiles is None
    assert plan.iterations is None  # the configured (released) 30,000


def test_a_small_gpu_gets_a_smaller_batch_and_a_cpu_a_capped_patch():
    small = plan_recipe(WHOLE_HEAD, DeviceBudget("cuda", 8, 12.0))
    assert small.patch_size == (128, 128, 128) and 1 <= small.batch_size < 8
    assert small.estimated_memory_gb <= 12.0 * 0.8
    cpu = plan_recipe(WHOLE_HEAD, DeviceBudget("cpu", 2, 20.0))
    assert max(cpu.patch_size) <= 64 and np.prod(cpu.patch_size) <= 48 * 64 * 48
    assert cpu.lr == pytest.approx(0.01)  # a patch no longer holds a whole crop


def test_memory_model_flags_the_released_size_with_a_full_critic_on_a_24gb_machine():
    config = TrainConfig(synthetic="packaged")  # 128^3 x 8, 16 filters
    full = config.replace(loss=config.loss.__class__(critic_fraction=1.0))
    with pytest.raises(LoFiError, match="needs about .* GB"):
        check_fits(full, DeviceBudget("cpu", 2, 24.0))
    assert estimate_memory_gb((128,) * 3, 8, 16, 1.0) > estimate_memory_gb((128,) * 3, 8, 16)
    assert check_fits(config, DeviceBudget("cuda", 16, 139.0)) < 139.0


def test_explicit_settings_win_over_the_plan():
    plan = plan_recipe(MSD_LIKE, DeviceBudget("cpu", 2, 20.0))
    config = TrainConfig(synthetic="packaged", batch_size=2)
    out = apply_plan(config, plan, explicit={"batch_size", "n_filters"})
    assert out.batch_size == 2 and out.model.n_filters == config.model.n_filters
    assert out.patch_size == plan.patch_size and out.lr == plan.lr


def test_fingerprint_reads_shapes_tails_and_foreground(tmp_path):
    root = make_lisa_dataset(tmp_path / "d", n_cases=3, size=28)
    fp = fingerprint_cases(discover_cases(root))
    assert fp.n_cases == 3 and all(16 <= s <= 28 for s in fp.median_shape)
    assert all(e > 0 for e in fp.foreground_extent)
    # one very bright voxel per case: heavy tail
    img = np.ones((20, 20, 20), np.float32)
    img[5, 5, 5] = 1e5
    path = write_nifti(tmp_path / "tail.nii.gz", img)
    from lofihippseg.io.datasets import Case

    assert fingerprint_cases([Case("t", path, None)]).tail_ratio > 1.5


def _train_args(data, out, *extra):
    return [str(data), "--out", str(out), "--device", "cpu", "--num-workers", "0",
            "--no-amp", *extra]  # fmt: skip


def test_cli_plans_prints_and_saves_the_plan_and_keeps_explicit_options(tmp_path):
    from lofihippseg.cli.train import command

    data = make_lisa_dataset(tmp_path / "d", n_cases=4, size=28)
    args = _train_args(data, tmp_path, "--name", "p", "--iterations", "2", "--val-every", "2",
                       "--batch", "2")  # fmt: skip
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert "plan: patch 32x32x32" in result.output
    assert "explicit options replace the plan's: batch_size 2, iterations 2, val_every 2" in (
        result.output
    )
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved["patch_size"] == [32, 32, 32] and saved["batch_size"] == 2
    assert saved["iterations"] == 2 and saved["model"]["n_filters"] == 8
    assert saved["plan"] and saved["plan"][0].startswith("plan:")
    assert saved["loss"]["critic_fraction"] == pytest.approx(0.05)  # full recipe, sampled


def test_cli_refuses_an_explicit_recipe_that_cannot_fit_before_training(tmp_path, capsys):
    from lofihippseg.cli import main

    data = make_lisa_dataset(tmp_path / "d", n_cases=4, size=28)
    args = ["train", *_train_args(data, tmp_path, "--name", "big", "--patch", "512",
            "--batch", "8", "--n-filters", "16", "--critic-fraction", "1")]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "needs about" in err and "\n" not in err
    assert not (tmp_path / "big").exists()  # nothing started


def test_fine_tuning_from_trained_weights_plans_a_low_rate():
    from lofihippseg.training.plan import FINE_TUNE_LR

    fresh = plan_recipe(MSD_LIKE, DeviceBudget("cpu", 2, 20.0))
    tuned = plan_recipe(MSD_LIKE, DeviceBudget("cpu", 2, 20.0), fine_tune=True)
    assert tuned.lr == FINE_TUNE_LR < fresh.lr
    assert any("fine-tuning" in r for r in tuned.reasons)
