"""The MSD hippocampus benchmark (benchmarks/msd_hippocampus): split, table, nnU-Net conversion,
and (slow) the quick mode end to end so the benchmark cannot rot."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, shared_path

BENCH = REPO / "benchmarks" / "msd_hippocampus"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"msd_bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _summary(dice1: float, dice2: float, n: int = 3) -> dict:
    def stats(mean: float) -> dict:
        return {"mean": mean, "std": 0.1, "median": mean}

    per_label = {
        str(lab): {"dice": stats(d), "hd95": stats(2.0), "assd": stats(0.5)}
        for lab, d in ((1, dice1), (2, dice2))
    }
    return {"n_cases": n, "per_label": per_label}


def test_split_is_seeded_disjoint_and_complete() -> None:
    run = _load("run")
    cases = run.find_cases(shared_path("data", "msd_hippocampus"))
    assert len(cases) == 201 and cases == sorted(cases, key=lambda c: c.case_id)
    a = run.make_split(cases, n_test=41, n_val=16, n_train=None, seed=0)
    again = run.make_split(cases, n_test=41, n_val=16, n_train=None, seed=0)
    other = run.make_split(cases, n_test=41, n_val=16, n_train=None, seed=1)
    ids = {k: [x.case_id for x in v] for k, v in a.items()}
    assert {k: len(v) for k, v in ids.items()} == {"train": 144, "val": 16, "test": 41}
    assert len(set().union(*ids.values())) == 201  # disjoint and complete
    assert again == a and other["test"] != a["test"]
    quick = run.make_split(cases, n_test=4, n_val=2, n_train=10, seed=0)
    assert [len(quick[k]) for k in ("train", "val", "test")] == [10, 2, 4]
    assert all(x.label.is_file() and x.image.is_file() for x in quick["test"])


def test_split_files_written(tmp_path: Path) -> None:
    run = _load("run")
    case = run.Case
    cases = [case(f"c{i:02d}", Path(f"/x/c{i}.nii.gz"), Path(f"/y/c{i}.nii.gz")) for i in range(9)]
    split = run.make_split(cases, n_test=3, n_val=2, n_train=None, seed=0)
    run.write_split(split, tmp_path, seed=0)
    for name, n in (("train", 4), ("val", 2), ("test", 3)):
        lines = (tmp_path / f"{name}.list").read_text().split()
        assert lines == [x.case_id for x in split[name]] and len(lines) == n
    assert json.loads((tmp_path / "split.json").read_text())["n_test"] == 3
    with pytest.raises(SystemExit):
        run.make_split(cases, n_test=8, n_val=2, n_train=None, seed=0)


def test_results_table_and_verdict(tmp_path: Path) -> None:
    table = _load("results_table")
    ours = table.Row("lofihippseg", "paper", _summary(0.80, 0.70), 15, 900.0, 0.5, "x")
    theirs = table.Row("nnU-Net v2", "3d_fullres", _summary(0.60, 0.65), 15, 880.0, 2.0)
    md = table.markdown_table([ours, theirs])
    assert md.count("\n") == 3 and "0.800 ± 0.100" in md and "0.650 ± 0.100" in md
    assert "at or above" in table.verdict([ours, theirs])
    worse = table.Row("lofihippseg", "paper", _summary(0.5, 0.5), 15, 900.0, 0.5)
    assert "BELOW" in table.verdict([worse, theirs])
    assert "No comparison" in table.verdict([ours])
    path = table.write_csv([ours, theirs], tmp_path / "results.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["method"] for r in rows] == ["lofihippseg", "nnU-Net v2"]
    assert float(rows[0]["dice_anterior_mean"]) == pytest.approx(0.8)
    assert float(rows[1]["dice_posterior_mean"]) == pytest.approx(0.65)
    assert float(rows[0]["budget_used"]) == pytest.approx(1.0)


def test_nnunet_raw_dataset_layout(tmp_path: Path, nifti_writer) -> None:
    import numpy as np

    side = _load("nnunet_side")
    run = _load("run")
    vol = np.zeros((4, 4, 4), np.float32)
    cases = [
        run.Case(f"hippocampus_{i:03d}", nifti_writer(f"i{i}.nii.gz", vol),
                 nifti_writer(f"l{i}.nii.gz", vol.astype(np.uint8)))
        for i in range(3)
    ]  # fmt: skip
    root = side.write_raw_dataset(tmp_path / "raw", cases[:2], cases[2:])
    assert root.name == side.DATASET_NAME
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        "hippocampus_000_0000.nii.gz",
        "hippocampus_001_0000.nii.gz",
    ]
    assert (root / "labelsTr" / "hippocampus_001.nii.gz").resolve() == cases[1].label.resolve()
    assert [p.name for p in (root / "imagesTs").iterdir()] == ["hippocampus_002_0000.nii.gz"]
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["labels"]["background"] == 0
    env = side.nnunet_env(tmp_path, 1.5, 10, 2)
    assert env["LOFI_NNUNET_BUDGET_MINUTES"] == "1.5"
    assert env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path: Path) -> None:
    data = shared_path("data", "msd_hippocampus")
    out = tmp_path / "results"
    cmd = [sys.executable, str(BENCH / "run.py"), "--quick", "--data", str(data),
           "--out", str(out), "--budget-minutes", "0.5"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| lofihippseg | paper |" in result.stdout
    assert [len((out / "split" / f"{n}.list").read_text().split()) for n in
            ("train", "val", "test")] == [10, 2, 4]  # fmt: skip
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["config"]) for r in rows] == [("lofihippseg", "paper")]
    row = rows[0]
    assert row["n_test"] == "4"
    for name in ("anterior", "posterior"):
        assert 0.0 <= float(row[f"dice_{name}_mean"]) <= 1.0
        assert float(row[f"hd95_{name}_mean"]) >= 0.0
    assert float(row["train_wall_s"]) > 0 and float(row["inference_s_per_case"]) > 0
    md = (out / "results.md").read_text()
    assert "QUICK MODE" in md and "| lofihippseg | paper |" in md


def test_rows_and_defaults() -> None:
    run = _load("run")
    quick = run.parse_args(["--quick"])
    assert (quick.n_test, quick.n_val, quick.n_train, quick.skip_nnunet) == (4, 2, 10, True)
    assert [r.name for r, _ in run.our_rows(quick)] == ["paper"]
    assert not run.parse_args(["--quick", "--with-nnunet"]).skip_nnunet
    full = run.parse_args(["--ablations", "--budget-minutes", "15"])
    assert (full.n_test, full.n_val, full.n_train, full.n_filters) == (41, 16, None, None)
    rows = dict((r.name, (r, budget)) for r, budget in run.our_rows(full))
    assert rows["paper"][1] == 15 and rows["no-gate"][1] == full.ablation_budget_minutes == 5
    assert rows["paper-no-critic"][1] == 15 and rows["paper-no-critic"][0].train_args == [
        "--no-critic"
    ]
    # the ablations change one thing of the paper recipe (critic on) on every device, and the
    # fusion rows re-predict its model trained at the ablation budget
    assert rows["paper"][0].train_args == ["--critic"]
    assert rows["paper-ablation-budget"][0].train_args == ["--critic"]
    assert rows["paper-ablation-budget"][1] == 5
    assert rows["fusion-union"][0].reuse == "paper-ablation-budget"
    assert rows["fusion-union"][0].predict_args == ["--fusion", "union"]
    assert rows["single-view"][0].train_args == ["--critic", "--single-view"]
    assert rows["view-legacy"][0].train_args == ["--critic", "--view-mode", "legacy"]
    assert rows["released"][0].train_args == ["--recipe", "released"]
    same = run.parse_args(["--ablations", "--ablation-budget-minutes", "15"])
    assert "paper-ablation-budget" not in [r.name for r, _ in run.our_rows(same)]
    assert dict((r.name, r) for r, _ in run.our_rows(same))["fusion-mean"].reuse == "paper"
    ours = _load("ours_side")
    assert ours.base_train_args("cpu", 3)[-4:] == ["--device", "cpu", "--seed", "3"]
    assert "--n-filters" not in ours.base_train_args("cpu", 3)  # the planner picks the width
