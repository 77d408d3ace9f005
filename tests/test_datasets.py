"""Dataset discovery in every supported layout, from tiny fixtures, and train/val splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path, write_nifti

from lofihippseg.errors import LoFiError
from lofihippseg.io.datasets import (
    Case,
    case_id_from_name,
    discover_cases,
    match_key,
    read_case_list,
    split_cases,
    split_dataset,
    write_case_list,
)

IMG = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
LAB = np.zeros((2, 3, 4), np.uint8)


def touch(root: Path, *names: str) -> None:
    for name in names:
        write_nifti(root / name, LAB if "labels" in name else IMG)


def ids(cases: list[Case]) -> list[str]:
    return [c.case_id for c in cases]


def test_lisa_layout_both_releases(tmp_path):
    touch(
        tmp_path,
        "imagesTr/LISA_0001_ciso.nii.gz",
        "imagesTr/LISA_0002_ciso.nii.gz",
        "labelsTr/LISA_0001_hipp.nii.gz",
        "labelsTr/LISA_0002_HF_hipp.nii",
    )
    cases = discover_cases(tmp_path)
    assert ids(cases) == ["LISA_0001", "LISA_0002"]
    assert cases[1].label.name == "LISA_0002_HF_hipp.nii"
    assert cases[0].image.name == "LISA_0001_ciso.nii.gz"


def test_lisa_flat_folder_and_test_subset(tmp_path):
    touch(tmp_path, "LISA_0003_ciso.nii.gz", "LISA_0003_hipp.nii.gz")
    (case,) = discover_cases(tmp_path)
    assert (case.case_id, case.label.name) == ("LISA_0003", "LISA_0003_hipp.nii.gz")
    touch(
        tmp_path / "ds",
        "imagesTr/LISA_0001_ciso.nii.gz",
        "labelsTr/LISA_0001_hipp.nii.gz",
        "imagesTs/LISA_0009_ciso.nii.gz",
    )
    (test_case,) = discover_cases(tmp_path / "ds", subset="test")
    assert test_case.case_id == "LISA_0009" and test_case.label is None


def test_nnunet_layout(tmp_path):
    touch(
        tmp_path,
        "imagesTr/hip_001_0000.nii.gz",
        "imagesTr/hip_002_0000.nii.gz",
        "labelsTr/hip_001.nii.gz",
        "labelsTr/hip_002.nii.gz",
        "imagesTs/hip_010_0000.nii.gz",
    )
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": "MRI"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}
        )
    )
    cases = discover_cases(tmp_path)
    assert ids(cases) == ["hip_001", "hip_002"]
    assert cases[0].image.name == "hip_001_0000.nii.gz" and cases[0].label.name == "hip_001.nii.gz"
    (test_case,) = discover_cases(tmp_path, subset="test")
    assert test_case.case_id == "hip_010" and test_case.label is None


def test_msd_dataset_json_training_list(tmp_path):
    touch(
        tmp_path,
        "imagesTr/hippocampus_004.nii.gz",
        "labelsTr/hippocampus_004.nii.gz",
        "imagesTr/hippocampus_007.nii.gz",
        "labelsTr/hippocampus_007.nii.gz",
    )
    training = [
        {
            "image": f"./imagesTr/hippocampus_00{i}.nii.gz",
            "label": f"./labelsTr/hippocampus_00{i}.nii.gz",
        }
        for i in (7, 4)
    ]
    (tmp_path / "dataset.json").write_text(json.dumps({"training": training, "test": []}))
    assert ids(discover_cases(tmp_path)) == ["hippocampus_004", "hippocampus_007"]
    training.append({"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": training}))
    with pytest.raises(LoFiError, match="gone.nii.gz"):
        discover_cases(tmp_path)


def test_nnunet_v1_json_lists_names_without_channel(tmp_path):
    touch(tmp_path, "imagesTr/la_003_0000.nii.gz", "labelsTr/la_003.nii.gz")
    entry = {"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [entry]}))
    (case,) = discover_cases(tmp_path)
    assert case.image.name == "la_003_0000.nii.gz"


def test_msd_plain_folders_without_json(tmp_path):
    touch(
        tmp_path,
        "imagesTr/hippocampus_001.nii.gz",
        "labelsTr/hippocampus_001.nii.gz",
        "imagesTr/._hippocampus_001.nii.gz",
    )
    assert ids(discover_cases(tmp_path)) == ["hippocampus_001"]
    touch(tmp_path, "imagesTr/hippocampus_002.nii.gz")
    with pytest.raises(LoFiError, match="no label map.*hippocampus_002"):
        discover_cases(tmp_path)


def test_shared_msd_dataset():
    cases = discover_cases(shared_path("data", "msd_hippocampus"))
    assert len(cases) == 201
    assert all(c.label is not None and c.image.name == c.label.name for c in cases)


def test_csv_with_and_without_header(tmp_path):
    touch(tmp_path, "a/img1.nii.gz", "a/labels1.nii.gz", "a/img2.nii.gz")
    (tmp_path / "with.csv").write_text(
        "case_id,image,label\nfirst,a/img1.nii.gz,a/labels1.nii.gz\nsecond,a/img2.nii.gz,\n"
    )
    cases = discover_cases(tmp_path / "with.csv")
    assert ids(cases) == ["first", "second"]
    assert cases[0].label == tmp_path / "a/labels1.nii.gz" and cases[1].label is None
    absolute = tmp_path / "a/img1.nii.gz"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/plain.csv").write_text(f"{absolute},../a/labels1.nii.gz\n")
    (case,) = discover_cases(tmp_path / "sub/plain.csv")
    assert case.case_id == "img1" and case.label.resolve() == (tmp_path / "a/labels1.nii.gz")
    (tmp_path / "bad.csv").write_text("image,label\na/missing.nii.gz,a/labels1.nii.gz\n")
    with pytest.raises(LoFiError, match="missing.nii.gz"):
        discover_cases(tmp_path / "bad.csv")


def test_nothing_found_is_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoFiError, match="no train cases found"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(LoFiError, match="not found"):
        discover_cases(tmp_path / "absent")


def test_case_ids_and_match_keys():
    assert case_id_from_name("LISA_0001_ciso.nii.gz") == "LISA_0001"
    assert case_id_from_name("LISA_0001_HF_hipp.nii") == "LISA_0001"
    assert match_key("LISA_HF_0001_hipp_prediction.nii.gz") == match_key("LISA_0001_hipp.nii.gz")
    assert match_key("case_12_seg.nii.gz") == match_key("case_012.nii.gz")
    assert match_key("case_12.nii.gz") != match_key("case_13.nii.gz")


def make_cases(n: int) -> list[Case]:
    return [Case(f"c{i:02d}", Path(f"c{i:02d}.nii.gz"), Path(f"l{i:02d}.nii.gz")) for i in range(n)]


def test_split_deterministic_and_order_independent():
    cases = make_cases(20)
    train, val = split_cases(cases, val_fraction=0.2, seed=3)
    assert len(val) == 4 and len(train) == 16 and not set(ids(train)) & set(ids(val))
    again = split_cases(list(reversed(cases)), val_fraction=0.2, seed=3)
    assert ids(again[1]) == ids(val) and ids(again[0]) == ids(train)
    other = split_cases(cases, val_fraction=0.2, seed=4)
    assert ids(other[1]) != ids(val)
    assert len(split_cases(make_cases(3), val_fraction=0.1)[1]) == 1


def test_split_from_lists_and_files(tmp_path):
    cases = make_cases(5)
    train, val = split_cases(cases, val_list=["c03", "c01"])
    assert ids(val) == ["c03", "c01"] and ids(train) == ["c00", "c02", "c04"]
    with pytest.raises(LoFiError, match="unknown"):
        split_cases(cases, train_list=["c00", "zz"])
    write_case_list(tmp_path / "train.list", ["c00", "c04"])
    assert read_case_list(tmp_path / "train.list") == ["c00", "c04"]
    train, val = split_cases(cases, train_list=tmp_path / "train.list")
    assert ids(train) == ["c00", "c04"] and ids(val) == ["c01", "c02", "c03"]


def test_split_dataset_uses_lists_in_folder(tmp_path):
    for i in (1, 2, 3):
        touch(tmp_path, f"imagesTr/LISA_000{i}_ciso.nii.gz", f"labelsTr/LISA_000{i}_hipp.nii.gz")
    (tmp_path / "val.list").write_text("# held out\nLISA_0002\n\n")
    train, val = split_dataset(tmp_path, val_fraction=0.5, seed=0)
    assert ids(val) == ["LISA_0002"] and ids(train) == ["LISA_0001", "LISA_0003"]
