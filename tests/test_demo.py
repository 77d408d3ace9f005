"""The demo workflow end to end at a tiny size (synthesise, train, predict, evaluate)."""

from __future__ import annotations

from lofihippseg.workflows.demo import DemoConfig, run_demo


def test_demo_runs_end_to_end(tmp_path):
    config = DemoConfig(
        n_cases=3,
        image_shape=(48, 64, 48),
        iterations=2,
        n_filters=4,
        patch_size=(16, 16, 16),
        batch_size=2,
        device="cpu",
    )
    result = run_demo(tmp_path / "demo", config)
    assert (result.run_dir / "config.json").is_file()
    assert (result.run_dir / "checkpoints" / "last.pt").is_file()
    assert not result.predictions.failed and len(result.predictions.results) >= 1
    assert len(result.evaluation.per_case) == 2 * len(result.predictions.results)  # 2 labels
    assert not result.evaluation.missing
    assert result.qc_pictures and all(p.stat().st_size > 0 for p in result.qc_pictures)
    assert "Dice" in result.evaluation.table()
