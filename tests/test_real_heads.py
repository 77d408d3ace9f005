"""Real heads: the IXI split and labels, and predict's search for a side the localiser missed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from lofihippseg.inference.localiser import Localiser
from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.ixi import IxiCase, find_cases, hippocampus_labels, split_cases
from lofihippseg.io.nifti import load_image, load_label
from lofihippseg.metrics.overlap import mask_dice

EXAMPLE = (
    Path(__file__).resolve().parents[1]
    / "src/lofihippseg/data/examples/synthetic_lowfield_example.nii.gz"
)
needs_model = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no packaged model")


def test_the_split_is_seeded_disjoint_and_independent_of_order():
    cases = [IxiCase(f"IXI{i:03d}", Path(f"{i}.nii.gz"), Path(f"{i}_l.nii.gz")) for i in range(60)]
    a, b = split_cases(cases), split_cases(list(reversed(cases)))
    assert a == b
    assert [len(a[k]) for k in ("train", "val", "held")] == [20, 10, 30]
    names = [{c.name for c in a[k]} for k in ("train", "val", "held")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert split_cases(cases, seed=1)["held"] != a["held"]


def test_dlmuse_hippocampus_labels_become_ours():
    muse = np.array([0, 47, 48, 31, 32, 48])
    assert hippocampus_labels(muse).tolist() == [0, 2, 1, 0, 0, 1]


def test_the_shared_heads_left_hippocampus_is_on_the_subjects_left():
    root = shared_path("data", "ixi_dlmuse")
    cases = find_cases(root)
    assert len(cases) == 175
    for case in split_cases(cases)["held"][:3]:
        volume = load_image(case.image)
        labels = hippocampus_labels(load_label(case.label, volume).data)
        # canonical RAS order: axis 0 runs from the subject's left to right
        x = [np.argwhere(labels == side)[:, 0].mean() for side in (1, 2)]
        assert x[0] < x[1]


def _misleading_localiser(monkeypatch) -> None:
    """The localiser sees both hippocampi in the bottom front corner (as on real heads whose
    field of view runs into the neck)."""

    def probabilities(self, view, spacing, device):
        probs = torch.zeros(2, 16, 16, 16)
        probs[0, 1:3, 12:14, 1:3] = probs[1, 12:14, 12:14, 1:3] = 0.9
        return probs

    monkeypatch.setattr(Localiser, "probabilities", probabilities)


@needs_model
def test_a_side_the_localiser_missed_is_searched_for_and_found(monkeypatch):
    volume = load_image(EXAMPLE)
    model = load_model()
    normal = Predictor(model).predict_volume(volume)
    assert "roi_side_search" not in normal.info  # no cost where the localiser works
    _misleading_localiser(monkeypatch)
    searched = Predictor(model).predict_volume(volume)
    search = searched.info["roi_side_search"]
    assert search["by"] in ("coarse pass", "whole volume") and search["from"] == "localiser"
    assert "roi_missing_side" not in searched.info
    truth = load_label(EXAMPLE.with_name(EXAMPLE.name.replace(".nii", "_hipp.nii")), volume).data
    for side in (1, 2):  # other boxes, other context: nearly, not exactly, the same outline
        assert mask_dice(normal.labels == side, searched.labels == side) > 0.8
        found, usual = (mask_dice(truth == side, x.labels == side) for x in (searched, normal))
        assert found > usual - 0.05


@needs_model
def test_a_crop_is_not_searched_for_its_other_side(monkeypatch):
    volume = load_image(EXAMPLE)
    cropped = type(volume)(
        volume.data[: volume.data.shape[0] // 2].copy(),
        volume.affine,
        volume.spacing,
        volume.source,
        volume.path,
    )
    _misleading_localiser(monkeypatch)
    info = Predictor(load_model()).predict_volume(cropped).info
    assert info["crop"] and "roi_side_search" not in info


@needs_model
def test_real_heads_the_localiser_missed_get_both_sides():
    """Held-back IXI heads on which the synthetic-only localiser boxed the wrong place."""
    root = shared_path("data", "ixi_dlmuse")
    held = {c.name: c for c in split_cases(find_cases(root))["held"]}
    predictor = Predictor(load_model(), PredictSettings(threads=2))
    for name in ("IXI132-HH-1415", "IXI206-HH-1650"):
        volume = load_image(held[name].image)
        truth = hippocampus_labels(load_label(held[name].label, volume).data)
        pred = predictor.predict_volume(volume)
        assert "roi_missing_side" not in pred.info
        for side in (1, 2):
            assert mask_dice(truth == side, pred.labels == side) > 0.7, (name, side, pred.info)


def test_the_recipe_writes_the_split_labels_and_csvs_train_reads(tmp_path):
    from lofihippseg.io.datasets import split_dataset
    from lofihippseg.recipe import real_heads

    root = shared_path("data", "ixi_dlmuse")
    record = real_heads.write(root, tmp_path, seed=41, held_out=30, n_val=10, limit=2)
    assert record["written"] == 6 and [len(record[p]) for p in real_heads.PARTS] == [2, 2, 2]
    train, val = split_dataset(tmp_path / real_heads.TRAINVAL_CSV)  # as train's data reads it
    assert [c.case_id for c in train] == [r["name"] for r in record["train"]]
    assert [c.case_id for c in val] == [r["name"] for r in record["val"]]
    held = real_heads.cases(tmp_path, "held")
    assert {c.case_id for c in held}.isdisjoint(c.case_id for c in train + val)
    volume = load_image(held[0].image)
    labels = load_label(held[0].label, volume, allowed={0, 1, 2}).data
    assert {1, 2} <= set(np.unique(labels).tolist())
    again = real_heads.write(root, tmp_path, seed=41, held_out=30, n_val=10, limit=2)
    assert again["written"] == 0  # resumable: labels already there are kept
    # a larger share of real heads in a pair's mix: each training head listed twice, the
    # validation heads once, as train's data reads them
    assert real_heads.repeated_csv(tmp_path, tmp_path / "x1", 1) == tmp_path / "heads.csv"
    twice, twice_val = split_dataset(real_heads.repeated_csv(tmp_path, tmp_path / "x2", 2))
    assert [c.case_id for c in twice] == [f"{c.case_id}_r{k}" for k in (0, 1) for c in train]
    assert [c.image for c in twice] == [c.image for c in train] * 2
    assert [c.case_id for c in twice_val] == [c.case_id for c in val]
