"""The release recipe's settings files load, and synthesise only from the pool's map list."""

from __future__ import annotations

from pathlib import Path

import pytest

from lofihippseg.config import load_settings
from lofihippseg.training.config import TrainConfig

RELEASE = Path(__file__).resolve().parents[1] / "release"
CONFIGS = [RELEASE / "release_config.json"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_release_config_loads_and_keeps_held_back_maps_out(path):
    config = load_settings(TrainConfig, path)
    assert config.iterations > 0 and config.model.n_filters == 8
    # on-the-fly synthesis only from the list make_pool.py writes (maps 01-13, never 14-16)
    assert config.synthetic is None or Path(config.synthetic).name == "training_maps.list"
    assert all(Path(u).name == "msd_trainval.csv" for u in config.unsided)  # never the test crops
