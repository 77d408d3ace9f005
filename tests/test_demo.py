"""The demo workflow end to end at a tiny size: score, fine-tune, score again."""

from __future__ import annotations

import pytest

from lofihippseg.workflows.demo import DemoConfig, run_demo

TINY = dict(
    n_cases=3, image_shape=(48, 64, 48), iterations=2, patch_size=(16, 16, 16), batch_size=2,
    device="cpu",
)  # fmt: skip


def test_demo_fine_tunes_the_shipped_model_and_scores_before_and_after(tmp_path):
    result = run_demo(tmp_path / "demo", DemoConfig(**TINY))
    config = (result.run_dir / "config.json").read_text()
    assert "lofihippseg_default.pt" in config  # started from the shipped weights
    assert '"init_family": "t1"' in config  # the T1-like cohort starts from the t1 pair
    assert '"grid_mm": 1.0' in config  # and keeps that pair's working grid
    assert (result.run_dir / "checkpoints" / "last.pt").is_file()
    assert result.before is not None and not result.before.missing
    assert not result.predictions.failed and len(result.predictions.results) >= 1
    assert len(result.evaluation.per_case) == 2 * len(result.predictions.results)  # 2 labels
    assert result.qc_pictures and all(p.stat().st_size > 0 for p in result.qc_pictures)
    before, after = result.dice(result.before), result.dice(result.evaluation)
    assert set(before) == set(after) == {"left", "right"}
    assert all(0.0 <= v <= 1.0 for v in (*before.values(), *after.values()))
    line = result.summary_line()
    assert "shipped model" in line and "fine-tuned" in line
    again = run_demo(tmp_path / "demo", DemoConfig(**TINY))  # a rerun starts again
    assert again.run_dir == result.run_dir


@pytest.mark.slow
def test_demo_from_scratch_and_on_a_users_folder(tmp_path):
    from training_data import make_lisa_dataset

    scratch = run_demo(tmp_path / "s", DemoConfig(**TINY, from_scratch=True, n_filters=4))
    assert scratch.before is None and "after training" in scratch.summary_line()
    data = make_lisa_dataset(tmp_path / "mine", n_cases=5, size=32)
    mine = run_demo(tmp_path / "u", DemoConfig(**{**TINY, "n_cases": 0}, data=str(data)))
    assert mine.before is not None and not mine.evaluation.missing
