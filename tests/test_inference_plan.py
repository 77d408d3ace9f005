"""The inference plan: defaults resolved once; one pair chosen by the field of view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cohort_helpers import BrightNet
from conftest import write_nifti
from test_families import Counting, EmptyNet, two_family_model
from test_predict import synthetic_head

from lofihippseg.errors import LoFiError
from lofihippseg.inference.model_loading import load_model
from lofihippseg.inference.plan import make_plan
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.probmap import ProbMap, average, union_box
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image
from lofihippseg.models.registry import ModelSpec, build_vnet, bundle_dict
from lofihippseg.preprocessing.crop import CROP_MAX_WIDTH_MM

CPU = {"device": "cpu", "roi": "off"}


def ruled_model():
    """``two_family_model`` with counting networks and the rule head -> t2, crop -> t1."""
    t2 = (Counting(BrightNet()), Counting(BrightNet()))
    t1 = (Counting(BrightNet()), Counting(EmptyNet()))
    model = two_family_model(t2, t1)
    model.family_rule = {"head": "t2", "crop": "t1"}
    return model, t2, t1


def scan(tmp_path, width_mm: float):
    """The synthetic head with 40 voxels from left to right, ``width_mm`` wide in all."""
    affine = np.diag([width_mm / 40, 1.0, 1.0, 1.0])
    return load_image(write_nifti(tmp_path / f"w{width_mm}.nii.gz", synthetic_head(), affine))


def test_a_head_runs_the_head_pair_only_and_a_crop_the_crop_pair(tmp_path):
    model, t2, t1 = ruled_model()
    predictor = Predictor(model, PredictSettings(**CPU))
    assert predictor.plan.family_rule == "field_of_view" and predictor.plan.tta == ()
    head = predictor.predict_volume(scan(tmp_path, 160.0))
    assert head.info["contrast_family"] == "t2" and "family_view_agreement" not in head.info
    assert [n.calls for n in (*t2, *t1)] == [1, 1, 0, 0]  # one pair ran, once per view
    assert head.info["field_of_view_lr_mm"] > CROP_MAX_WIDTH_MM
    crop = predictor.predict_volume(scan(tmp_path, 40.0))
    assert crop.info["contrast_family"] == "t1" and crop.info["field_of_view_lr_mm"] < 80
    assert [n.calls for n in (*t2, *t1)] == [1, 1, 1, 1]
    model.tta, model.tta_families = True, ("t2",)  # the mirror for heads only (one batch)
    mirrored = Predictor(model, PredictSettings(**CPU))
    assert mirrored.predict_volume(scan(tmp_path, 160.0)).info["tta"] is True
    assert mirrored.predict_volume(scan(tmp_path, 40.0)).info["tta"] is False
    assert [n.calls for n in (*t2, *t1)] == [2, 2, 2, 2]
    assert (head.labels > 0).any() and not (crop.labels > 0).any()  # t1: one view finds none


def test_agreement_reproduces_v12s_rule_and_a_name_forces_a_pair(tmp_path):
    model, t2, t1 = ruled_model()
    head = scan(tmp_path, 160.0)
    every = Predictor(model, PredictSettings(**CPU, family="agreement")).predict_volume(head)
    assert set(every.info["family_view_agreement"]) == {"t1", "t2"}
    assert every.info["contrast_family"] == "t2"  # its views agree; t1's do not
    assert [n.calls for n in (*t2, *t1)] == [1, 1, 1, 1]
    forced = Predictor(model, PredictSettings(**CPU, family="t1")).predict_volume(head)
    assert forced.info["contrast_family"] == "t1" and forced.info["family_rule"] == "fixed"


@pytest.mark.parametrize("family", ["agreement", "t1", "auto"])
def test_every_rule_records_whether_the_scan_is_a_crop(tmp_path, family):
    """The review rules judge a crop as one hippocampus whichever pair ran (``info["crop"]``)."""
    model, *_ = ruled_model()
    predictor = Predictor(model, PredictSettings(**CPU, family=family))
    head = predictor.predict_volume(scan(tmp_path, 160.0))
    crop = predictor.predict_volume(scan(tmp_path, 40.0))
    assert head.info["crop"] is False and head.info["field_of_view_lr_mm"] > CROP_MAX_WIDTH_MM
    assert crop.info["crop"] is True and crop.info["field_of_view_lr_mm"] < CROP_MAX_WIDTH_MM


def test_the_plan_resolves_every_default_once():
    model, *_ = ruled_model()
    plan = make_plan(model, PredictSettings(device="cpu"))
    assert (plan.fusion, plan.overlap_rule, plan.lcc, plan.roi) == (
        "mean",
        "probability",
        True,
        True,
    )
    assert plan.families == ("t2", "t1") and (plan.head_family, plan.crop_family) == ("t2", "t1")
    model.tta = True  # the bundle's advice, unless the user says otherwise
    assert make_plan(model, PredictSettings(device="cpu")).tta == ("t2", "t1")
    assert make_plan(model, PredictSettings(device="cpu", tta=False)).tta == ()
    model.tta_families = ("t2",)  # advice for one family only
    assert make_plan(model, PredictSettings(device="cpu")).tta == ("t2",)
    assert make_plan(model, PredictSettings(device="cpu", tta=True)).tta == ("t2", "t1")
    released = two_family_model()
    released.spec = ModelSpec(n_filters=4, recipe="released")
    plan = make_plan(released, PredictSettings(device="cpu", family="t2"))
    assert (plan.fusion, plan.overlap_rule, plan.lcc, plan.roi) == (
        "union",
        "released",
        False,
        False,
    )
    described = plan.describe()
    assert described["families"] == ["t2"] and described["roi_size"] == [128, 128, 128]
    with pytest.raises(LoFiError, match="no such contrast family"):
        make_plan(model, PredictSettings(device="cpu", family="flair"))


def test_a_bundle_carries_its_family_rule_and_a_bad_one_is_refused(tmp_path):
    spec = ModelSpec(n_filters=4)
    sd = build_vnet(spec).state_dict()
    data = bundle_dict(spec, sd, sd, family="t2", families={"t1": (sd, sd)})
    data["family_rule"] = {"head": "t2", "crop": "t1"}
    data["tta"] = ["t2"]
    torch.save(data, tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    assert model.family_rule == {"head": "t2", "crop": "t1"}
    assert model.tta is True and model.tta_families == ("t2",)
    data["tta"] = ["flair"]
    torch.save(data, tmp_path / "tta.pt")
    with pytest.raises(LoFiError, match="tta.pt: bad tta entry"):
        load_model(tmp_path / "tta.pt")
    data["tta"] = True
    data["family_rule"] = {"head": "t2", "crop": "flair"}
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(LoFiError, match="bad.pt: bad family_rule"):
        load_model(tmp_path / "bad.pt")


def test_probability_maps_combine_in_the_union_of_their_boxes():
    a = ProbMap(np.full((2, 2, 1, 1), 0.8, np.float32), (slice(0, 2), slice(0, 1), slice(0, 1)))
    b = ProbMap(np.full((2, 2, 1, 1), 0.4, np.float32), (slice(1, 3), slice(0, 1), slice(0, 1)))
    assert union_box([a.box, b.box])[0] == slice(0, 3)
    mean = average([a, b])
    assert mean.data[0, :, 0, 0].tolist() == pytest.approx([0.4, 0.6, 0.2])
    assert mean.full((4, 1, 1))[0, :, 0, 0].tolist() == pytest.approx([0.4, 0.6, 0.2, 0.0])


def test_the_mirror_pass_records_how_far_scan_and_mirror_agree_per_side(tmp_path):
    model, _, _ = ruled_model()
    model.tta, model.tta_families = True, ("t2",)
    predictor = Predictor(model, PredictSettings(**CPU))
    head = predictor.predict_volume(scan(tmp_path, 160.0))
    agreement = head.info["mirror_dice"]  # the mirror ran: a Dice per side, from its batch
    assert set(agreement) == {"left", "right"}
    assert all(v is None or 0.0 <= v <= 1.0 for v in agreement.values())
    assert "mirror_dice" not in predictor.predict_volume(scan(tmp_path, 40.0)).info  # a crop
