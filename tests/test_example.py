"""``lofihippseg example``: the Quick start's main job, with and without the shipped model."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from lofihippseg.cli import main
from lofihippseg.errors import LoFiError
from lofihippseg.inference import api, model_loading
from lofihippseg.io.nifti import load_image, load_label
from lofihippseg.models.registry import ModelSpec, build_vnet, bundle_dict
from lofihippseg.workflows.example import EXAMPLES, run_example

SCAN, TRUTH = EXAMPLES["synthetic"]


@pytest.fixture()
def tiny_bundle(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(n_filters=4)
    path = tmp_path / "tiny.pt"
    sds = [build_vnet(spec).state_dict() for _ in range(2)]
    torch.save(bundle_dict(spec, *sds), path)
    return path


def _predict_as(monkeypatch, labels_of):
    """Make the predictor return ``labels_of(truth)`` (canonical order) instead of its own."""
    real = api.Predictor.predict_volume

    def fake(self, volume):
        pred = real(self, volume)
        truth = load_label(TRUTH, reference=volume, allowed={0, 1, 2}).data.astype(np.uint8)
        return dataclasses.replace(pred, labels=labels_of(truth))

    monkeypatch.setattr(api.Predictor, "predict_volume", fake)


def test_example_scores_a_perfect_prediction_as_one(tmp_path, tiny_bundle, monkeypatch):
    _predict_as(monkeypatch, lambda truth: truth)
    result = run_example(tmp_path / "out", model=tiny_bundle)
    assert result.dice == {"left": 1.0, "right": 1.0}
    assert result.qc_picture is not None and result.qc_picture.stat().st_size > 1000
    truth = load_label(TRUTH, reference=load_image(SCAN), allowed={0, 1, 2})
    row = next(csv.DictReader(open(result.report.csv_path)))
    voxel_ml = float(np.prod(truth.spacing)) / 1000
    assert float(row["left_ml"]) == pytest.approx((truth.data == 1).sum() * voxel_ml, rel=1e-3)
    assert float(row["right_ml"]) == pytest.approx((truth.data == 2).sum() * voxel_ml, rel=1e-3)


def test_example_sees_swapped_sides(tmp_path, tiny_bundle, monkeypatch):
    swap = np.array([0, 2, 1], np.uint8)
    _predict_as(monkeypatch, lambda truth: swap[truth])
    result = run_example(tmp_path / "out", model=tiny_bundle)
    assert result.dice == {"left": 0.0, "right": 0.0}


def test_example_reruns_into_the_same_folder(tmp_path, tiny_bundle):
    first = run_example(tmp_path / "out", model=tiny_bundle)
    again = run_example(tmp_path / "out", model=tiny_bundle)
    assert [r.status for r in (first.report.results + again.report.results)] == ["ok", "ok"]


def test_example_cli_and_errors(tmp_path, tiny_bundle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["example", "-o", str(tmp_path / "o"), "--model", str(tiny_bundle), "--device", "cpu"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Dice against the exact labels" in out and "QC picture:" in out
    with pytest.raises(LoFiError, match="unknown example"):
        run_example(tmp_path / "x", which="nope", model=tiny_bundle)
    # predict's outline options reach the sidecar (the tiny bundle has no refiner)
    with pytest.raises(SystemExit) as exit_info:
        main(["example", "-o", str(tmp_path / "e"), "--model", str(tiny_bundle), "--device",
              "cpu", "--edge-weight", "0.5", "--no-refiner"])  # fmt: skip
    assert exit_info.value.code == 0
    sidecar = json.loads(next((tmp_path / "e").glob("*_hipp.json")).read_text())
    assert sidecar["effective"]["edge_weight"] == 0.5 and sidecar["effective"]["refiner"] is False


def test_example_without_shipped_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(model_loading, "DEFAULT_MODEL", tmp_path / "absent.pt")
    with pytest.raises(LoFiError, match="ships no default model"):
        run_example(tmp_path / "out")
