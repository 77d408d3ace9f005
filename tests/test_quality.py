"""Per-side quality estimate: features, the stored estimator, rules, and where it is written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cohort_helpers import fake_model, settings, write_scan
from conftest import shared_path

from lofihippseg.errors import LoFiError
from lofihippseg.inference.api import predict
from lofihippseg.quality.assess import side_quality
from lofihippseg.quality.estimator import (
    QualityEstimator,
    Trees,
    estimator_path,
    file_sha256,
    find_estimator,
)
from lofihippseg.quality.features import FEATURES, case_features
from lofihippseg.recipe import quality_degrade
from lofihippseg.recipe.quality_data import (
    QualityData,
    contrast_config,
    head_map_index,
    label_maps,
    plan,
    read_table,
    true_dice,
)
from lofihippseg.recipe.quality_fit import (
    FitSettings,
    auc,
    figures,
    fit_rows,
    fit_trees,
    fold_numbers,
    isotonic,
    reliability,
    review_threshold,
)
from lofihippseg.reporting.cohort import collect_cohort
from lofihippseg.reporting.cohort_report import build_report, methods_text
from lofihippseg.reporting.status import ASYMMETRIC, case_status, side_review_reasons
from lofihippseg.reporting.volumes import read_rows

BOX = (slice(0, 24),) * 3


def two_sides(shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 24^3 label map with a 4 x 4 x 4 left and right block, and its one-hot maps."""
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[4:8, 10:14, 10:14] = 1
    lab[16:20, 10:14, 10:14] = 2
    p = np.stack([lab == 1, lab == 2]).astype(np.float32)
    if shift:
        p = np.roll(p, shift, axis=2)
    return lab, p


def test_features_follow_the_views_disagreement_and_need_no_info():
    lab, p = two_sides()
    image = lab.astype(np.float32) * 10 + 1
    same = case_features(image, lab, p, p, p, BOX, (1, 1, 1), 1.0)
    _, moved = two_sides(shift=2)
    apart = case_features(image, lab, p, moved, p, BOX, (1, 1, 1), 0.5)
    for side in ("left", "right"):
        assert set(same[side]) == set(FEATURES)
        assert all(np.isfinite(v) for v in same[side].values())
        assert same[side]["side_view_dice"] == 1.0 and same[side]["view_mad"] == 0.0
        assert apart[side]["side_view_dice"] == pytest.approx(0.5)
        assert apart[side]["view_mad"] > 0.3
        # no info keys: neutral values
        assert same[side]["family_gap"] == 0.0 and same[side]["refiner_change"] == 0.0
        assert same[side]["mirror_dice"] == -1.0  # the mirror did not run
    assert same["left"]["x_separation_mm"] == 12.0
    info = {
        "family_view_agreement": {"t1": 0.8, "t2": 0.6},
        "refiner_change": {"left": 32},
        "mirror_dice": {"left": 0.9, "right": None},
    }
    with_info = case_features(image, lab, p, p, p, BOX, (1, 1, 1), 1.0, info)
    assert with_info["left"]["family_gap"] == pytest.approx(0.2)
    assert with_info["left"]["refiner_change"] == pytest.approx(0.5)  # 32 of 64 voxels
    assert with_info["left"]["mirror_dice"] == 0.9 and with_info["right"]["mirror_dice"] == 0.0


def test_features_see_a_side_cut_by_the_field_of_view():
    lab, p = two_sides()
    lab2 = np.roll(lab, -4, axis=0)  # the left block now touches the scan's edge
    p2 = np.roll(p, -4, axis=1)
    f = case_features(lab2.astype(np.float32), lab2, p2, p2, p2, BOX, (1, 1, 1), 1.0)
    assert f["left"]["border_frac"] == 0.5 and f["right"]["border_frac"] == 0.0
    # the same maps in a window of a larger scan are away from its edge
    g = case_features(
        lab2.astype(np.float32), lab2, p2, p2, p2, BOX, (1, 1, 1), 1.0,
        volume_shape=(40, 40, 40), window_start=(8, 8, 8),
    )  # fmt: skip
    assert g["left"]["border_frac"] == 0.0


def test_trees_fit_and_round_trip_through_json_exactly(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((300, 3))
    y = np.clip(0.4 + 0.5 * x[:, 0] - 0.3 * (x[:, 1] > 0.7), 0, 1)
    trees = fit_trees(x, y, FitSettings(n_trees=60))
    assert np.abs(trees.predict(x) - y).mean() < 0.03
    est = QualityEstimator(("a", "b", "c"), trees, np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.6)
    path = est.save(tmp_path / "m.quality.json")
    text = path.read_text()
    assert "Infinity" not in text and len(text) < 60_000
    back = QualityEstimator.load(path)
    np.testing.assert_array_equal(back.predict_rows(x), est.predict_rows(x))
    assert back.predict({"a": 0.9, "b": 0.1, "c": 0.0}) > back.predict({"a": 0.1, "b": 0.9})


def test_isotonic_threshold_and_figures():
    cx, cy = isotonic(np.array([0.0, 1, 2, 3, 4]), np.array([0.0, 0.5, 0.2, 0.8, 0.9]), knots=5)
    assert np.all(np.diff(cy) > 0)  # rises through the pooled pair too: no flat step
    x = np.arange(6.0)
    _, cy = isotonic(x, np.array([0.8, 0.8, 0.1, 0.8, 0.8, 0.9]), knots=6)
    assert cy.min() == pytest.approx(0.8)  # medians: one outlier does not pull the curve down
    pred = np.array([0.3, 0.5, 0.55, 0.8, 0.9])
    dice = np.array([0.2, 0.4, 0.65, 0.85, 0.9])
    t = review_threshold(pred, dice, 1.0)
    assert 0.5 < t < 0.55  # the lowest threshold catching both sides under 0.6
    f = figures(pred, dice, pred < t)
    assert f["catch_rate"] == 1.0 and f["false_flag_rate"] == 0.0 and f["auc_below_0.6"] == 1.0
    assert auc(np.array([0.1, 0.9]), np.array([True, False])) == 0.0
    rows = reliability(pred, dice, n_bins=5)
    assert [r["n"] for r in rows] == [1] * 5 and rows[0]["mean_true"] == 0.2


def test_fit_rows_learns_a_signal_and_sets_a_catching_threshold():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(120):
        for side in ("left", "right"):
            dice = float(rng.uniform(0.2, 0.95))
            agree = dice + rng.normal(0, 0.03)
            rows.append({"case": f"c{i}", "side": side, "dice": dice, "side_view_dice": agree})
    est, oof = fit_rows(rows, FitSettings(n_trees=40, features=("side_view_dice",)))
    dice = np.array([r["dice"] for r in rows])
    assert est.meta["out_of_fold"]["spearman"] > 0.9
    assert (oof[dice < 0.6] < est.review_below).mean() >= 0.9


def test_folds_keep_a_label_maps_heads_together_and_spread_the_crops():
    heads = [
        {"case": f"h{i}", "kind": "head", "side": s, "map_index": i % 6}
        for i in range(60)
        for s in ("left", "right")
    ]
    crops = [{"case": f"c{i}", "kind": "crop", "side": "left"} for i in range(40)]
    rows = heads + crops
    fold = fold_numbers(rows, 3)
    maps = np.array([r.get("map_index", -1) for r in rows])
    for m in range(6):  # every head of one map in one fold: out of fold = unseen anatomy
        assert len(set(fold[maps == m].tolist())) == 1
    assert sorted(np.bincount(fold[: len(heads)]).tolist()) == [40, 40, 40]  # 2 maps a fold
    assert sorted(np.bincount(fold[len(heads) :]).tolist()) == [13, 13, 14]
    by_case = fold_numbers(rows, 3, "case")
    assert len(set(by_case[maps == 0].tolist())) == 3
    with pytest.raises(LoFiError):
        fold_numbers(rows, 3, "anatomy")


def test_table_rows_get_the_label_map_their_head_was_made_from(tmp_path):
    maps = shared_path("data", "synthseg_label_maps")
    from lofihippseg.synth.generator import SyntheticGenerator

    chosen = label_maps(maps, "held")
    gen = SyntheticGenerator(chosen, contrast_config("t2"))
    for seed in (3, 100_001):
        index = gen.sample(torch.Generator().manual_seed(seed)).params["map_index"]
        assert head_map_index(seed, len(chosen)) == index
    (tmp_path / "data.json").write_text(json.dumps({"maps": str(maps), "anatomy": "held"}))
    sides = [{"case": "held_0000", "kind": "head", "side": "left", "seed": 3, "dice": 0.7}]
    (tmp_path / "table.jsonl").write_text(json.dumps({"case": "held_0000", "sides": sides}) + "\n")
    assert read_table(tmp_path / "table.jsonl")[0]["map_index"] == head_map_index(3, 3)


def fitted_estimator(bundle: Path, review_below: float = 0.5) -> QualityEstimator:
    """An estimator for ``bundle``: predicted Dice = side view agreement (one split per tree)."""
    j = FEATURES.index("side_view_dice")
    trees = Trees(1, 0.0, np.array([[j]]), np.array([[0.5]]), np.array([[0.3, 0.9]]))
    return QualityEstimator(
        FEATURES, trees, np.array([]), np.array([]), review_below, file_sha256(bundle)
    )


def test_an_estimator_is_used_only_for_its_own_bundle(tmp_path):
    bundle = tmp_path / "model.pt"
    bundle.write_bytes(b"weights v1")
    assert find_estimator(bundle)[0] is None and "no estimator" in find_estimator(bundle)[1]
    fitted_estimator(bundle).save(estimator_path(bundle))
    est, note = find_estimator(bundle)
    assert est is not None and note == "model.quality.json"
    bundle.write_bytes(b"weights v2, retrained")
    est, note = find_estimator(bundle)
    assert est is None and "another version" in note
    estimator_path(bundle).write_text("{not json")
    assert "unreadable" in find_estimator(bundle)[1]
    assert find_estimator("runs/folder")[0] is None


def test_side_rules_send_an_asymmetric_case_to_review_in_the_status_too():
    shape, spacing = (160, 192, 176), (1.0, 1.0, 1.0)
    status = case_status(2.1, 4.4, 0.8, shape, spacing)
    assert status.status == ASYMMETRIC and "2.1 times" in status.reason
    assert case_status(3.0, 3.3, 0.8, shape, spacing).status == "ok"
    reasons = side_review_reasons(2.1, 4.4, shape, spacing)
    assert reasons["left"] and reasons["right"]
    assert side_review_reasons(9.0, 4.0, shape, spacing)["left"][0].startswith("volume 9")
    q = side_quality(None, 3.0, 3.2, shape, spacing, None, "no estimator: none fitted")
    assert q["left"] == {"predicted_dice": None, "review": False, "reasons": []}
    assert q["estimator"].startswith("no estimator") and q["review_below"] is None


def test_side_quality_flags_a_low_predicted_dice(tmp_path):
    bundle = tmp_path / "model.pt"
    bundle.write_bytes(b"w")
    est = fitted_estimator(bundle)
    feats = {"left": {"side_view_dice": 0.9}, "right": {"side_view_dice": 0.2}}
    q = side_quality(feats, 3.0, 3.2, (160, 192, 176), (1, 1, 1), est, "model.quality.json")
    assert q["left"]["predicted_dice"] == 0.9 and not q["left"]["review"]
    assert q["right"]["predicted_dice"] == 0.3 and q["right"]["review"]
    assert q["right"]["reasons"] == ["predicted Dice 0.30 below 0.50"]


def test_predict_writes_quality_in_sidecar_csv_and_report(tmp_path):
    for i in range(3):
        write_scan(tmp_path / "in" / f"case{i}.nii.gz", seed=i, blob=1.0 if i else 1.5)
    model = fake_model()
    out = tmp_path / "out"
    predict(tmp_path / "in", out, model, settings(), progress=False)
    sidecar = json.loads((out / "case1_hipp.json").read_text())
    q = sidecar["quality"]
    assert q["left"]["predicted_dice"] is None and q["estimator"].startswith("no estimator")
    rows = {r["case"]: r for r in read_rows(out / "volumes.csv")}
    assert rows["case1"]["left_predicted_dice"] == "" and rows["case1"]["left_review"] == "False"
    # a bundle with a fitted estimator: numbers everywhere
    bundle = tmp_path / "model.pt"
    bundle.write_bytes(b"weights")
    fitted_estimator(bundle, review_below=0.95).save(estimator_path(bundle))
    model = dataclasses.replace(model, source=str(bundle))
    predict(tmp_path / "in", out, model, settings(overwrite=True, qc=True), progress=False)
    q = json.loads((out / "case1_hipp.json").read_text())["quality"]
    assert q["estimator"] == "model.quality.json" and q["review_below"] == 0.95
    assert q["left"]["predicted_dice"] == 0.9  # single-view fake model: the views agree
    assert q["left"]["review"] and "below 0.95" in q["left"]["reasons"][0]
    rows = {r["case"]: r for r in read_rows(out / "volumes.csv")}
    assert rows["case1"]["left_predicted_dice"] == "0.9" and rows["case1"]["left_review"] == "True"
    cohort = collect_cohort(out)
    assert all(c.review_sides == ["left", "right"] for c in cohort.done)
    assert any("left side to review" in f for f in cohort.done[0].flags)
    text = methods_text(cohort, 3.0, 0.5)
    assert "inspected visually" not in text and "predicted Dice was below 0.95" in text
    for values, _ in cohort.settings:
        assert "family_view_agreement" not in values and "contrast_family" not in values
    html = build_report(out)[0].read_text()
    assert "pred. Dice L" in html and "sides to review" in html and "0.95" in html


def test_degradations_keep_labels_on_the_image_grid():
    rng = np.random.default_rng(0)
    img = rng.random((30, 32, 28)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[10:20, 12:20, 10:18] = 1
    for name, fn in quality_degrade.DEGRADATIONS.items():
        out, out_lab, aff = fn(img, lab, np.eye(4), np.random.default_rng(1))
        assert out.shape == out_lab.shape, name
        assert 0.0 <= out.min() and out.max() <= 1.0 + 1e-6, name
    cut, cut_lab, aff = quality_degrade.partial(img, lab, np.eye(4), np.random.default_rng(2))
    assert 0 < cut_lab.sum() < lab.sum()  # the field of view ends inside the hippocampus


def test_plan_is_deterministic_and_crops_score_their_labelled_side(tmp_path):
    data = QualityData(tmp_path, n_heads=12, seed=3)
    assert plan(data) == plan(data)
    assert {c["contrast"] for c in plan(data)} == {"t1", "t2", "random"}
    assert plan(dataclasses.replace(data, n_heads=6)) == plan(data)[:6]  # resumable
    pred = np.zeros((4, 4, 4), np.uint8)
    pred[:2] = 2
    truth = np.zeros_like(pred)
    truth[:2] = 1
    truth[2, 0, 0] = 2
    assert true_dice(pred, truth, "crop") == {"right": pytest.approx(64 / 65)}
    assert true_dice(pred, truth, "head") == {"left": 0.0, "right": 0.0}


def test_shipped_estimator_matches_the_shipped_model():
    from lofihippseg.inference.model_loading import DEFAULT_MODEL

    path = estimator_path(DEFAULT_MODEL)
    if not path.is_file() or not DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model or quality estimator in this checkout")
    est, note = find_estimator(DEFAULT_MODEL)
    assert est is not None, note
    assert est.features == FitSettings().features and 0.3 < est.review_below < 0.9
    assert set(est.features) <= set(FEATURES)
    assert path.stat().st_size < 100_000


@pytest.mark.slow
def test_build_table_on_two_real_heads(tmp_path):
    maps = shared_path("data", "synthseg_label_maps")
    from lofihippseg.inference.model_loading import load_model
    from lofihippseg.inference.predictor import Predictor
    from lofihippseg.inference.settings import PredictSettings
    from lofihippseg.recipe.quality_data import build_table, read_table

    predictor = Predictor(load_model(None), PredictSettings(device="cpu", threads=1))
    data = QualityData(maps, n_heads=2, seed=5)
    table = build_table(predictor, data, tmp_path, limit=1)
    assert len(read_table(table)) == 2
    build_table(predictor, data, tmp_path)  # resumes: only the second head is new
    rows = read_table(table)
    assert len(rows) == 4 and all(0 <= r["dice"] <= 1 for r in rows)
    assert all(0 <= r["map_index"] < 13 for r in rows)  # which map: folds keep it together


def test_bids_volumes_table_has_the_quality_columns(tmp_path):
    from lofihippseg.bids.derivatives import TABLE_COLUMNS, subject_rows, write_tsv

    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    quality = {
        "left": {"predicted_dice": 0.81, "review": False, "reasons": []},
        "right": {"predicted_dice": 0.42, "review": True, "reasons": ["predicted Dice 0.42"]},
    }
    sidecar = {"volumes": {"left_ml": 3.0, "right_ml": 2.9}, "status": "ok", "quality": quality}
    (anat / "sub-01_acq-a_space-orig_desc-hippocampus_dseg.json").write_text(json.dumps(sidecar))
    del sidecar["quality"]  # an older sidecar: n/a
    (anat / "sub-01_acq-b_space-orig_desc-hippocampus_dseg.json").write_text(json.dumps(sidecar))
    rows = subject_rows(tmp_path, "01")
    table = write_tsv(tmp_path / "t.tsv", rows, TABLE_COLUMNS).read_text().splitlines()
    header = table[0].split("\t")
    cells = [dict(zip(header, line.split("\t"), strict=True)) for line in table[1:]]
    by_dice = {c["right_predicted_dice"]: c for c in cells}
    assert by_dice["0.42"]["right_review"] == "True"
    assert by_dice["0.42"]["review_reasons"] == "right: predicted Dice 0.42"
    assert by_dice["n/a"]["left_review"] == "n/a"


def test_fit_quality_estimator_writes_a_file_for_its_bundle(tmp_path):
    from lofihippseg.recipe.quality_fit import fit_quality_estimator

    rng = np.random.default_rng(2)
    for part, n in (("train", 60), ("held", 20)):
        folder = tmp_path / "work" / part
        folder.mkdir(parents=True)
        with open(folder / "table.jsonl", "w") as handle:
            for i in range(n):
                sides = []
                for side in ("left", "right"):
                    dice = float(rng.uniform(0.3, 0.9))
                    sides.append(
                        {"case": f"{part}{i}", "kind": "head", "side": side, "dice": dice,
                         "vol_ml": 3.0, "side_view_dice": dice + rng.normal(0, 0.02)}
                    )  # fmt: skip
                handle.write(json.dumps({"case": f"{part}{i}", "sides": sides}) + "\n")
    bundle = tmp_path / "model.pt"
    bundle.write_bytes(b"weights")
    est = fit_quality_estimator(
        bundle, None, QualityData(tmp_path), 0, tmp_path / "work",
        QualityData(tmp_path, "held"), FitSettings(n_trees=30, features=("side_view_dice",)),
        build=False,
    )  # fmt: skip
    found, note = find_estimator(bundle)
    assert found is not None and note == "model.quality.json"
    assert found.meta["held_back"]["heads"]["spearman"] > 0.8
    assert found.meta["trained_on"]["maps"] == str(tmp_path)
    assert found.review_below == pytest.approx(est.review_below, abs=1e-4)


def test_the_summary_table_shows_predicted_dice_and_the_sides_to_review(tmp_path):
    from lofihippseg.inference.api import BatchReport, CaseResult

    rows = [
        {"status": "ok", "left_ml": 3.1, "right_ml": 2.9, "left_predicted_dice": 0.81,
         "right_predicted_dice": 0.52, "left_review": False, "right_review": True},
        {"status": "ok", "left_ml": 3.0, "right_ml": 3.0, "left_predicted_dice": "nan",
         "right_predicted_dice": "", "left_review": "False", "right_review": "False"},
    ]  # fmt: skip
    results = [
        CaseResult(f"c{i}", tmp_path / f"c{i}.nii.gz", "ok", row=r) for i, r in enumerate(rows)
    ]
    lines = BatchReport(tmp_path, results).table().splitlines()
    assert lines[0].split()[-5:] == ["pDice", "L", "pDice", "R", "review"]
    assert lines[1].split()[-3:] == ["0.81", "0.52", "R"]
    assert lines[2].split()[-3:] == ["-", "-", "-"]  # no estimator, nothing to review
