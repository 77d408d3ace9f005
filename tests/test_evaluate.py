"""``evaluate`` API and ``lofihippseg evaluate`` CLI: pairing by case id, missing cases, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from lofihippseg.cli import main
from lofihippseg.errors import InputError
from lofihippseg.metrics.evaluate import MISSING_VALUES, evaluate

AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def label_map(seed: int, shape=(16, 14, 12)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.uint8)
    lo = rng.integers(1, 4, 3)
    data[lo[0] : lo[0] + 5, lo[1] : lo[1] + 5, lo[2] : lo[2] + 4] = 1
    data[lo[0] + 7 : lo[0] + 11, lo[1] : lo[1] + 6, lo[2] : lo[2] + 5] = 2
    return data


@pytest.fixture
def cases(tmp_path: Path):
    """Three ground-truth maps; predictions for cases 1 and 2 only, named differently."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    maps = {i: label_map(i) for i in (1, 2, 3)}
    for i, data in maps.items():
        write_nifti(gt_dir / f"LISA_000{i}_hipp.nii.gz", data, AFFINE)
    # sorted names put case 2 before case 1: pairing by order would cross them
    write_nifti(pred_dir / "LISA_HF_0001_hipp_prediction.nii.gz", maps[1], AFFINE)
    write_nifti(pred_dir / "LISA_0002.nii.gz", maps[2], AFFINE)
    return gt_dir, pred_dir, maps


def test_pairs_by_case_id_and_scores_missing(cases, tmp_path):
    gt_dir, pred_dir, _ = cases
    out = tmp_path / "scores"
    result = evaluate(pred_dir, gt_dir, out_dir=out)
    assert result.missing == ["LISA_0003"]
    rows = {(r["case_id"], r["label"]): r for r in result.per_case}
    assert len(rows) == 6
    for case in ("LISA_0001", "LISA_0002"):
        for label in (1, 2):
            assert rows[case, label]["dice"] == 1.0
            assert rows[case, label]["hd95"] == 0.0
    for label in (1, 2):
        row = rows["LISA_0003", label]
        assert row["status"] == "missing"
        for key, value in MISSING_VALUES.items():
            assert row[key] == value
    # summary: mean of (1, 1, 0) per label, finite everywhere
    dice = result.summary["per_label"]["1"]["dice"]
    assert dice["mean"] == pytest.approx(2 / 3) and dice["median"] == 1.0
    assert result.summary["label_average"]["hd"]["mean"] == pytest.approx(256 / 3)
    # files
    with open(out / "metrics_per_case.csv") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 6 and {r["case_id"] for r in written} == {
        "LISA_0001",
        "LISA_0002",
        "LISA_0003",
    }
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["missing"] == ["LISA_0003"] and summary["n_cases"] == 3
    assert "label 1" in result.table() and "LISA_0003" in result.table()


def test_imperfect_prediction_and_other_voxel_order(tmp_path):
    """A prediction stored flipped (LAS) on the same world grid is compared in world space."""
    gt = label_map(5)
    write_nifti(tmp_path / "gt" / "case_7.nii.gz", gt, AFFINE)
    pred = gt.copy()
    pred[pred == 2] = 0  # right label lost
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = gt.shape[0] - 1
    write_nifti(tmp_path / "pred" / "case_7_seg.nii.gz", pred[::-1], AFFINE @ flip)
    result = evaluate(tmp_path / "pred", tmp_path / "gt", labels=(1, 2))
    rows = {r["label"]: r for r in result.per_case}
    assert rows[1]["dice"] == 1.0
    assert rows[2]["status"] == "pred_empty" and rows[2]["hd"] == 256.0
    assert rows[1]["volume_gt_ml"] == pytest.approx((gt == 1).sum() * 1.2 * 2.0 / 1000)


def test_grid_mismatch_names_the_prediction(tmp_path):
    write_nifti(tmp_path / "gt.nii.gz", label_map(1), AFFINE)
    bad = write_nifti(tmp_path / "pred.nii.gz", label_map(1)[:-1], AFFINE)
    with pytest.raises(InputError, match="pred.nii.gz"):
        evaluate(bad, tmp_path / "gt.nii.gz")


def test_cli_missing_case_exit_code(cases, tmp_path, capsys):
    gt_dir, pred_dir, _ = cases
    out = tmp_path / "cli_out"
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--labels", "1,2"])
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert "LISA_0003" in captured.err and "Dice" in captured.out
    assert (out / "metrics_per_case.csv").exists() and (out / "metrics_summary.json").exists()


def test_cli_complete_set_exit_zero(cases, tmp_path, capsys):
    gt_dir, pred_dir, maps = cases
    write_nifti(pred_dir / "LISA_0003_hipp.nii.gz", maps[3], AFFINE)
    main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "o"), "--labels", "1"])
    out = capsys.readouterr().out
    assert "3 case(s) evaluated, 0 missing" in out and "label 2" not in out


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    write_nifti(tmp_path / "gt.nii.gz", label_map(1), AFFINE)
    (tmp_path / "pred.nii.gz").write_text("not an image")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "pred.nii.gz" in err and "\n" not in err


def test_single_files_pair_directly(tmp_path):
    data = label_map(2)
    gt = write_nifti(tmp_path / "truth.nii.gz", data, AFFINE)
    pred = tmp_path / "whatever.nii"
    nib.save(nib.Nifti1Image(data, AFFINE), str(pred))
    result = evaluate(pred, gt)
    assert [r["dice"] for r in result.per_case] == [1.0, 1.0] and not result.missing


@pytest.mark.parametrize(
    "change, words",
    [
        ("shift", "origins 20 mm apart"),
        ("voxels", "voxel sizes 1x1.2x2.5 mm vs 1x1.2x2 mm"),
        ("rotate", "orientations differ by 10 degrees"),
        ("shape", "shapes (15, 14, 12) vs (16, 14, 12)"),
    ],
)
def test_grid_mismatch_says_what_differs(tmp_path, capsys, change, words):
    gt = write_nifti(tmp_path / "gt.nii.gz", label_map(1), AFFINE)
    data, affine = label_map(1), AFFINE.copy()
    if change == "shift":
        affine[:3, 3] = [12.0, 16.0, 0.0]
    elif change == "voxels":
        affine = np.diag([1.0, 1.2, 2.5, 1.0])
    elif change == "rotate":
        angle = np.radians(10)
        rotation = np.array(
            [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        )
        affine[:3, :3] = rotation @ AFFINE[:3, :3]
    else:
        data = data[:-1]
    pred = write_nifti(tmp_path / "pred.nii.gz", data, affine)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(pred), str(gt)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith(f"error: {pred}: grid does not match")
    assert words in err and "\n" not in err
    if change != "shape":  # shapes equal: the message does not print two equal shapes
        assert "(16, 14, 12)" not in err


@pytest.mark.parametrize("pattern", ["LISA_000{i}_ciso", "LISA_000{i}_ciso_hipp", "LISA_{i}"])
def test_predictions_named_after_their_inputs_pair_by_case_id(tmp_path, cases, pattern):
    gt_dir, _, maps = cases
    pred_dir = tmp_path / "other_tool"
    for i, data in maps.items():
        write_nifti(pred_dir / (pattern.format(i=i) + ".nii.gz"), data, AFFINE)
    result = evaluate(pred_dir, gt_dir)
    assert not result.missing and not result.unmatched and result.summary["n_cases"] == 3
    assert all(r["dice"] == 1.0 for r in result.per_case)
    assert {r["case_id"] for r in result.per_case} == {"LISA_0001", "LISA_0002", "LISA_0003"}


def test_scans_beside_their_labels_are_not_predictions(tmp_path):
    folder = tmp_path / "lisa"
    for i in (1, 2):
        write_nifti(folder / f"LISA_000{i}_ciso.nii.gz", np.full((16, 14, 12), 5.5), AFFINE)
        write_nifti(folder / f"LISA_000{i}_hipp.nii.gz", label_map(i), AFFINE)
    result = evaluate(folder, folder)
    assert result.summary["n_cases"] == 2 and not result.unmatched
