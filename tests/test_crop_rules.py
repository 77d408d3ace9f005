"""A crop around one hippocampus (the MSD crops' kind) is judged as one hippocampus."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lofihippseg.inference.api import PredictSettings, predict
from lofihippseg.inference.model_loading import DEFAULT_MODEL
from lofihippseg.io.nifti import load_image, load_label
from lofihippseg.quality.assess import side_quality
from lofihippseg.reporting.status import absent_side, case_status, side_review_reasons

CROP = ((40, 56, 40), (1.0, 1.0, 1.0))  # 40 mm from left to right: one hippocampus
HEAD = ((160, 192, 176), (1.0, 1.0, 1.0))
EXAMPLE = (
    Path(__file__).resolve().parents[1]
    / "src/lofihippseg/data/examples/synthetic_lowfield_example.nii.gz"
)


def test_a_crop_with_its_one_hippocampus_is_ok_and_its_other_side_absent():
    status = case_status(0.0, 3.1, 0.8, *CROP, crop=True)
    assert status.status == "ok", status.reason  # not implausible_input, empty or asymmetric
    assert absent_side(0.0, 3.1, True) == "left" and absent_side(0.0, 3.1, False) is None
    assert side_review_reasons(0.0, 3.1, *CROP, crop=True) == {"left": [], "right": []}
    quality = side_quality(None, 0.0, 3.1, *CROP, None, "no estimator", crop=True)
    absent = {"predicted_dice": None, "review": False, "reasons": [], "absent": True}
    assert quality["left"] == absent and quality["right"]["review"] is False
    # the same scan and volumes judged as a head (a model without a crop family): as before
    head = case_status(0.0, 3.1, 0.8, *CROP)
    assert head.status == "implausible_input" and "under 60 mm" in head.reason
    assert "not found" in side_review_reasons(0.0, 3.1, *HEAD)["left"]


def test_a_crop_is_still_judged_on_its_volume_its_voxels_and_a_second_label():
    assert case_status(0.0, 0.0, None, *CROP, crop=True).status == "empty"
    assert side_review_reasons(0.0, 0.0, *CROP, crop=True)["left"] == ["not found"]
    big = case_status(4.5, 4.6, 0.8, *CROP, crop=True)  # both labels of one hippocampus: 9.1 mL
    assert big.status == "implausible_volume" and "9.1 mL" in big.reason
    reasons = side_review_reasons(0.4, 3.0, *CROP, crop=True)  # a stray second label
    assert reasons["right"] == [] and "second label" in reasons["left"][0]
    tiny = case_status(0.0, 0.3, 0.8, (10, 30, 30), (1.0, 1.0, 1.0), crop=True)
    assert tiny.status == "implausible_input" and "under 25 mm" in tiny.reason
    thick = ((40, 56, 8), (1.0, 1.0, 7.0))  # voxel rules still hold
    assert case_status(0.0, 3.0, 0.8, *thick, crop=True).status == "implausible_input"


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"no packaged model at {DEFAULT_MODEL}")
def test_predict_on_a_crop_of_one_side_reviews_only_that_side(tmp_path):
    vol = load_image(EXAMPLE)
    truth = load_label(EXAMPLE.with_name(EXAMPLE.name.replace(".nii", "_hipp.nii")), vol).data
    x = np.nonzero((truth == 2).any(axis=(1, 2)))[0]  # the right hippocampus's left-right span
    width = int(round(60 / vol.spacing[0]))  # a 60 mm crop around it
    start = max(int(x.mean()) - width // 2, 0)
    data = vol.data[start : start + width]
    affine = vol.affine.copy()
    affine[:3, 3] = vol.affine[:3, :3] @ np.array([start, 0, 0]) + vol.affine[:3, 3]
    crop = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(crop))
    report = predict(crop, tmp_path / "out", None, PredictSettings(device="cpu", qc=False), False)
    assert report.results[0].status == "ok"
    sidecar = json.loads((tmp_path / "out" / "crop_hipp.json").read_text())
    assert sidecar["effective"]["contrast_family"] == "t1"  # the model's crop family
    assert sidecar["effective"]["crop"] is True
    # no rule of a head fires (small field of view, the other side empty, asymmetry); a T2
    # crop through the T1 family may well have views that disagree: that is its own status
    assert sidecar["status"] in ("ok", "low_agreement"), sidecar["status_reason"]
    sides = sidecar["quality"]
    found = [s for s in ("left", "right") if not sides[s].get("absent")]
    assert len(found) == 1 and sides[found[0]]["predicted_dice"] is not None
