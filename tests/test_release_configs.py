"""The release recipe's settings files load, and synthesise only from the pool's map list."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from lofihippseg.config import load_settings
from lofihippseg.training.config import TrainConfig

RELEASE = Path(__file__).resolve().parents[1] / "release"
CONFIGS = [RELEASE / f"release_config{s}.json" for s in ("", "_t1", "_t1_1mm", "_t1_mirrored")]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_release_config_loads_and_keeps_held_back_maps_out(path):
    config = load_settings(TrainConfig, path)
    assert config.iterations > 0 and config.model.n_filters == 8
    # on-the-fly synthesis only from the list make_pool.py writes (maps 01-13, never 14-16)
    assert config.synthetic is None or Path(config.synthetic).name == "training_maps.list"
    assert all(Path(u).name == "msd_trainval.csv" for u in config.unsided)  # never the test crops


def test_family_pools_split_the_pool_by_contrast(tmp_path):
    main = importlib.import_module("lofihippseg.recipe.family_pools").main
    pool = tmp_path / "pool"
    for sub in ("imagesTr", "labelsTr"):
        (pool / sub).mkdir(parents=True)
    randoms = [f"R{i}" for i in range(8)]
    rows = ["case_id,split,contrast", "A,train,t2", "B,train,t1", "D,val,t2"]
    rows += [f"{r},train,random" for r in randoms]
    (pool / "sources.csv").write_text("\n".join(rows) + "\n")
    (pool / "val.list").write_text("D\n")
    assert main([str(pool)]) == 0
    assert (tmp_path / "pool_t2" / "train.list").read_text().split() == ["A", *randoms]
    assert (tmp_path / "pool_t1" / "train.list").read_text().split() == ["B", *randoms]
    # random contrast only, validated on random cases held out of its own training list
    assert (tmp_path / "pool_rand" / "train.list").read_text().split() == randoms[:2]
    assert (tmp_path / "pool_rand" / "val.list").read_text().split() == randoms[2:]
    for family in ("t1", "t2"):
        out = tmp_path / f"pool_{family}"
        assert (out / "val.list").read_text() == "D\n"
        assert (out / "imagesTr").resolve() == (pool / "imagesTr").resolve()
    assert main([str(tmp_path / "nothing")]) == 1


def test_family_pools_skips_a_family_with_too_few_cases(tmp_path, capsys):
    main = importlib.import_module("lofihippseg.recipe.family_pools").main
    pool = tmp_path / "pool"
    rows = ["case_id,split,contrast", "A,train,t2", "B,train,t1", "C,train,random"]
    (pool).mkdir()
    (pool / "sources.csv").write_text("\n".join(rows) + "\n")
    assert main([str(pool)]) == 0
    assert (tmp_path / "pool_t2" / "train.list").read_text().split() == ["A", "C"]
    assert not (tmp_path / "pool_rand").exists()
    assert "skipped rand" in capsys.readouterr().err


def test_release_training_refuses_bad_settings_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.json"
    bad.write_text('{"iterations": 0}')
    module = "lofihippseg.recipe.pairs"
    result = subprocess.run([sys.executable, "-m", module, "--config", str(bad)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip() == "error: batch size, iterations and val_every must be >= 1"
