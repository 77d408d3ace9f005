"""On-the-fly synthetic hippocampus boxes: label-map lists, random voxel sizes, the pool's list."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lofihippseg.errors import LoFiError
from lofihippseg.models.registry import ModelSpec
from lofihippseg.preprocessing.resample import resample_labelled
from lofihippseg.synth.assets import packaged_label_maps
from lofihippseg.synth.config import SynthConfig
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.data import TrainingSamples, synthetic_label_maps


def box_config(tmp_path: Path, **overrides) -> TrainConfig:
    base = dict(
        synthetic="packaged",
        synth=SynthConfig.fast((56, 48, 48)),
        out_dir=str(tmp_path),
        patch_size=(32,) * 3,
        use_augmentation=False,
        num_workers=0,
        model=ModelSpec(n_filters=4),
    )
    return TrainConfig(**{**base, **overrides})


def test_resampled_labels_keep_world_position_and_side():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[3:9, 12:18, 12:18] = 1  # left hippocampus near x = 6 mm
    lab[21:27, 12:18, 12:18] = 2
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-15, -15, -15)
    img, out, aff = resample_labelled(lab.astype(np.float32), lab, affine, 1.5)
    assert img.shape == out.shape == (20, 20, 20)
    assert np.allclose(np.diag(aff)[:3], 1.5)
    for value in (1, 2):  # each side's centre stays where it was in world mm
        before = affine[:3, :3] @ np.argwhere(lab == value).mean(0) + affine[:3, 3]
        after = aff[:3, :3] @ np.argwhere(out == value).mean(0) + aff[:3, 3]
        assert np.allclose(before, after, atol=0.3)
        volume = (out == value).sum() * 1.5**3
        assert abs(volume - (lab == value).sum()) / (lab == value).sum() < 0.25


def test_label_maps_from_a_list_file(tmp_path):
    maps = packaged_label_maps()
    listing = tmp_path / "maps.list"
    listing.write_text(f"# training maps\n{maps[0]}\n\n")
    assert synthetic_label_maps(str(listing)) == [maps[0]]
    (tmp_path / "local.nii.gz").write_bytes(maps[0].read_bytes())
    listing.write_text("local.nii.gz\n")  # relative to the list's folder
    assert synthetic_label_maps(str(listing)) == [tmp_path / "local.nii.gz"]
    listing.write_text("gone.nii.gz\n")
    with pytest.raises(LoFiError, match="gone.nii.gz"):
        synthetic_label_maps(str(listing))
    listing.write_bytes(b"\x1f\x8b\xff\xfe binary")  # e.g. an archive given by mistake
    with pytest.raises(LoFiError, match="not a readable list"):
        synthetic_label_maps(str(listing))
    listing.write_text("# nothing\n")
    with pytest.raises(LoFiError, match="no label maps"):
        synthetic_label_maps(str(listing))


@pytest.mark.parametrize("voxels", [(0.2, 1.0), (2.0, 1.0), (1.0, 9.0)])
def test_bad_synthetic_voxel_range_is_refused(tmp_path, voxels):
    with pytest.raises(LoFiError, match="synthetic_voxel_mm"):
        box_config(tmp_path, synthetic_voxel_mm=voxels)


def test_synthetic_samples_come_at_the_drawn_voxel_size(tmp_path):
    """At 2 mm a 56 x 48 x 48 mm box is 28 x 24 x 24 voxels: patches are padded around it."""
    ones = box_config(tmp_path, foreground_fraction=0.0)
    coarse = box_config(tmp_path, synthetic_voxel_mm=(2.0, 2.0), foreground_fraction=0.0)
    fine = TrainingSamples([], ones)[0]
    big = TrainingSamples([], coarse)[0]
    assert fine["image"].shape == big["image"].shape == (1, 32, 32, 32)
    # the 2 mm image fills at most a 28 x 24 x 24 box of the 32^3 patch; the 1 mm one all of it
    filled = torch.nonzero(big["image"][0] != 0)
    extent = (filled.max(0).values - filled.min(0).values + 1).tolist()
    assert max(extent) <= 28 and (fine["image"][0] != 0).float().mean() > 0.9
    side_sums = [int((big["label"] == v).sum()) for v in (1, 2)]
    assert sum(side_sums) > 0  # the hippocampi survive the resampling


def test_cli_takes_a_synthetic_voxel_range(tmp_path, capsys):
    from conftest import run_cli

    from lofihippseg.config import to_dict
    from lofihippseg.training.loop import resume_config

    small = tmp_path / "small.json"  # small synthetic volumes, one validation volume
    small.write_text(json.dumps(to_dict(box_config(tmp_path, n_val_synthetic=1))))
    args = ["train", "--config", small, "--synthetic-voxel-mm", "1.2", "1.8", "--iterations",
            "1", "--batch", "1", "--val-every", "1", "--name", "boxes"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert resume_config(tmp_path / "boxes").synthetic_voxel_mm == (1.2, 1.8)
    curriculum = ["--synthetic-fraction-start", "1", "--curriculum-share", "0.25"]
    code, _, err = run_cli([*args[:-1], "curriculum", *curriculum], capsys)
    assert code == 0, err
    saved = resume_config(tmp_path / "curriculum")
    assert (saved.synthetic_fraction_start, saved.curriculum_share) == (1.0, 0.25)
    args[4:6] = ["3", "1"]
    code, _, err = run_cli([*args[:-1], "bad"], capsys)
    assert code == 2 and "synthetic_voxel_mm (3.0, 1.0)" in err and "Traceback" not in err


def test_pool_lists_only_training_maps(tmp_path, monkeypatch):
    """make_pool writes the label maps training may synthesise from, and draws its training and
    validation cases, from maps 01-13 only: the held-back 14-16 are the model card's."""
    make_pool = importlib.import_module("lofihippseg.recipe.pools")
    used = []
    real = make_pool.SyntheticGenerator

    def recording(maps, config):
        used.extend(p.name for p in maps)
        return real(maps, config)

    monkeypatch.setattr(make_pool, "SyntheticGenerator", recording)
    maps = tmp_path / "maps"
    maps.mkdir()
    source = packaged_label_maps()[0].read_bytes()
    for i in (1, 2, 14, 15, 16):
        (maps / f"training_seg_{i:02d}.nii.gz").write_bytes(source)
    out = tmp_path / "pool"
    make_pool.write_pool(maps, out, n_train=1, n_val=1, seed=1, t1_share=0.0,
                         voxel_range=(2.0, 2.0))  # fmt: skip
    training = ["training_seg_01.nii.gz", "training_seg_02.nii.gz"]
    listed = synthetic_label_maps(str(out / make_pool.MAPS_LIST))
    assert sorted(p.name for p in listed) == training
    assert used and set(used) == set(training)
    assert len((out / "val.list").read_text().split()) == 1


def test_curriculum_moves_from_synthetic_samples_to_the_cases(tmp_path):
    """Early iterations draw (visible-contrast) synthetic boxes, late ones the cases."""
    from lofihippseg.training.data import PreparedCase

    config = box_config(
        tmp_path,
        iterations=40,
        batch_size=2,
        synthetic_fraction=0.0,
        synthetic_fraction_start=1.0,
        curriculum_share=0.5,
        cache_cases=False,
    )
    ds = TrainingSamples([object()], config)  # one stand-in case (loaded by _case below)
    drawn = []

    def fake(name: str) -> PreparedCase:
        drawn.append(name)
        return PreparedCase(name, np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8))

    ds._synthetic = lambda g: fake("synthetic")
    ds._case = lambda i, unsided=False: fake("case")

    def share(iterations: range) -> float:
        drawn.clear()
        for it in iterations:
            for k in range(config.batch_size):
                ds[it * config.batch_size + k]
        return drawn.count("synthetic") / len(drawn)

    assert share(range(0, 2)) > 0.9  # the curriculum's start: synthetic boxes
    assert 0.2 < share(range(8, 12)) < 0.8  # half-way down
    assert share(range(20, 40)) == 0.0  # from half the run: the cases alone (fraction 0)
    without = box_config(tmp_path, synthetic_fraction=0.0, iterations=40, batch_size=2)
    assert all(without.synthetic_fraction_at(i) == 0.0 for i in (0, 20, 39))
    with pytest.raises(LoFiError, match="synthetic_fraction_start"):
        box_config(tmp_path, synthetic_fraction_start=1.5)
    with pytest.raises(LoFiError, match="curriculum_share"):
        box_config(tmp_path, synthetic_fraction_start=1.0, curriculum_share=0.0)


def test_a_synthetic_pool_makes_each_box_once_whatever_the_order(tmp_path, monkeypatch):
    config = box_config(tmp_path, synthetic_pool=3, use_augmentation=True, seed=5)
    made = []
    original = TrainingSamples._new_synthetic

    def counting(self, g):
        made.append(1)
        return original(self, g)

    monkeypatch.setattr(TrainingSamples, "_new_synthetic", counting)
    forward, backward = TrainingSamples([], config), TrainingSamples([], config)
    items = [forward[i] for i in range(10)]
    reverse = [backward[i] for i in reversed(range(10))][::-1]
    for a, b in zip(items, reverse, strict=True):  # resumed runs draw the same samples
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert len(forward._boxes) <= 3 and len(made) == len(forward._boxes) + len(backward._boxes)
    # ten draws from at most three boxes: each draw still has its own patch and augmentation
    assert len({a["image"].numpy().tobytes() for a in items}) == 10
    fresh = TrainingSamples([], box_config(tmp_path, use_augmentation=True, seed=5))
    assert not torch.equal(fresh[0]["image"], items[0]["image"])  # pool 0: fresh boxes
    with pytest.raises(LoFiError, match="synthetic_pool"):
        box_config(tmp_path, synthetic_pool=-1)
