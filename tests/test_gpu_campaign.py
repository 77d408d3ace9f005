"""The GPU campaign's packing (release/gpu_pack.py): what travels, and that training reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import release_module, write_nifti

from lofihippseg.config import from_dict
from lofihippseg.inference.model_loading import load_model
from lofihippseg.io.datasets import discover_cases
from lofihippseg.synth.assets import packaged_label_maps
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.data import synthetic_label_maps

REPO = Path(__file__).resolve().parents[1]


def pack_inputs(tmp_path: Path) -> list[str]:
    """Label maps 01, 02, 14-16 (copies of a packaged one) and a CSV of 3 training crops;
    returns gpu_pack's arguments for them."""
    maps = tmp_path / "maps"
    maps.mkdir()
    source = packaged_label_maps()[0].read_bytes()
    for i in (1, 2, 14, 15, 16):
        (maps / f"training_seg_{i:02d}.nii.gz").write_bytes(source)
    rows = ["case_id,image,label"]
    for k in range(3):  # a training split of 3 crops; the test split is not in this CSV
        image, label = tmp_path / f"img_{k}.nii.gz", tmp_path / f"lab_{k}.nii.gz"
        write_nifti(image, np.random.default_rng(k).normal(100, 10, (12, 14, 10)))
        mask = np.zeros((12, 14, 10), np.uint8)
        mask[4:8, 4:10, 3:7] = 1
        write_nifti(label, mask)
        rows.append(f"crop_{k},{image},{label}")
    (tmp_path / "trainval.csv").write_text("\n".join(rows) + "\n")
    return ["--out", str(tmp_path / "gpu_data"), "--maps", str(maps),
            "--trainval", str(tmp_path / "trainval.csv")]  # fmt: skip


def test_pack_keeps_held_back_maps_and_test_crops_out(tmp_path):
    gpu_pack = release_module("gpu_pack")
    args = [*pack_inputs(tmp_path), "--crops", "2", "--batch", "6", "--workers", "3"]
    out = tmp_path / "gpu_data"
    assert gpu_pack.main(args) == 0

    config = from_dict(TrainConfig, json.loads((out / "config.json").read_text()))
    listed = synthetic_label_maps(config.synthetic)
    assert sorted(p.name for p in listed) == ["training_seg_01.nii.gz", "training_seg_02.nii.gz"]
    assert all(p.is_file() and out in p.parents for p in listed)  # the packed copies
    crops = discover_cases(config.unsided[0])
    assert [c.case_id for c in crops] == ["crop_0", "crop_1"]
    assert all(out in c.image.parents and out in c.label.parents for c in crops)
    assert (config.device, config.amp) == ("cuda", True)
    assert (config.batch_size, config.num_workers) == (6, 3)
    assert config.data == () and config.init_family == "t2"
    assert config.init1 == gpu_pack.BUNDLE and (gpu_pack.HERE.parent / gpu_pack.BUNDLE).is_file()

    # a second pack into the same folder, or one over the size budget, is refused
    assert gpu_pack.main(args) == 2
    over = [*args[:1], str(tmp_path / "big"), *args[2:], "--max-mb", "0.001"]
    assert gpu_pack.main(over) == 2 and not (tmp_path / "big").exists()


def test_campaign_dry_run_trains_and_exports_the_pair(tmp_path):
    assert release_module("gpu_pack").main(pack_inputs(tmp_path)) == 0
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
               GPU_DATA=str(tmp_path / "gpu_data"))  # fmt: skip
    result = subprocess.run(
        ["bash", str(REPO / "release" / "gpu_campaign.sh"), "--dry-run", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "summary.txt").read_text()
    assert "it/s with start-up; campaign: 4 iterations" in summary and "campaign: exit 0" in summary
    assert (out / "metrics.csv").read_text().splitlines()[-1].startswith("4,")
    assert json.loads((out / "config.json").read_text())["iterations"] == 4
    model = load_model(out / "gpu_t2.pt")  # a bundle that loads with weights_only
    assert list(model.pairs) == ["t2"]
