"""One pair of networks per contrast family: bundles, loading, the choice by view agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cohort_helpers import BrightNet
from conftest import write_nifti
from test_predict import synthetic_head

from lofihippseg.cli import main
from lofihippseg.errors import LoFiError
from lofihippseg.inference.model_loading import LoadedModel, load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image
from lofihippseg.models.registry import ModelSpec, build_vnet, bundle_dict
from lofihippseg.reporting.volumes import read_rows


class EmptyNet(torch.nn.Module):
    """Finds nothing anywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2, *x.shape[2:]), -40.0)


def two_family_model(
    t2: tuple[torch.nn.Module, torch.nn.Module] | None = None,
    t1: tuple[torch.nn.Module, torch.nn.Module] | None = None,
) -> LoadedModel:
    """Pairs ``t2`` (first) and ``t1``; by default the ``t2`` views disagree (one finds the
    blobs, one nothing) and the ``t1`` views agree."""
    t2 = t2 or (BrightNet(), EmptyNet())
    t1 = t1 or (BrightNet(), BrightNet())
    spec = ModelSpec(n_filters=4, view_mode="lowpass", cutoff=0.5)
    return LoadedModel(spec, *t2, source="test", family="t2", alternatives={"t1": t1})


@pytest.fixture
def head(tmp_path):
    return load_image(write_nifti(tmp_path / "head.nii.gz", synthetic_head()))


def test_the_pair_whose_views_agree_best_is_kept(head):
    pred = Predictor(two_family_model(), PredictSettings(device="cpu", roi="off")).predict_volume(
        head
    )
    assert pred.info["contrast_family"] == "t1"
    agreement = pred.info["family_view_agreement"]
    assert agreement["t2"] == 0.0 and agreement["t1"] > 0.5
    assert pred.view_dice == pytest.approx(agreement["t1"], abs=1e-4)  # the kept pair's
    pair_s = pred.timings["pair_t1_s"], pred.timings["pair_t2_s"]
    # each pair's time, then the kept pair's post-processing (once); the field of view is
    # measured on the first pair's prepared scan before the pairs run (its preprocessing)
    total = sum(pair_s) + pred.timings["postprocess_s"]
    glue = max(0.05, 0.05 * total)  # a few hundredths, more on a loaded machine
    assert min(pair_s) > 0 and total - 0.01 <= pred.timings["total_s"]
    assert pred.timings["total_s"] <= total + pred.timings["preprocess_s"] + glue
    assert (pred.labels == 1).sum() > 20 and (pred.labels == 2).sum() > 20


class Counting(torch.nn.Module):
    """Wraps a network and counts the volumes it sees."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_tta_mirrors_only_the_kept_pair(head):
    t2 = (Counting(BrightNet()), Counting(EmptyNet()))
    t1 = (Counting(BrightNet()), Counting(BrightNet()))
    model = two_family_model(t2, t1)
    plain = Predictor(model, PredictSettings(device="cpu", roi="off")).predict_volume(head)
    assert [n.calls for n in (*t2, *t1)] == [1, 1, 1, 1]
    pred = Predictor(model, PredictSettings(device="cpu", roi="off", tta=True)).predict_volume(head)
    # the choice is made without the mirror; then only the kept pair (t1) sees it
    assert pred.info["contrast_family"] == "t1"
    assert [n.calls for n in (*t2, *t1)] == [2, 2, 3, 3]
    assert pred.timings["tta_s"] > 0
    total = pred.timings["pair_t1_s"] + pred.timings["pair_t2_s"] + pred.timings["tta_s"]
    total += pred.timings["postprocess_s"]
    assert pred.timings["total_s"] == pytest.approx(total, abs=max(0.05, 0.05 * total))
    np.testing.assert_array_equal(pred.labels, plain.labels)  # BrightNet is mirror-symmetric


def test_a_family_can_be_asked_for_by_name(head):
    model = two_family_model()
    forced = Predictor(model, PredictSettings(device="cpu", roi="off", family="t2"))
    pred = forced.predict_volume(head)
    assert pred.info["contrast_family"] == "t2" and "family_view_agreement" not in pred.info
    assert pred.view_dice == 0.0  # the disagreeing pair, as asked
    with pytest.raises(LoFiError, match="no such contrast family.*t2, t1"):
        Predictor(model, PredictSettings(device="cpu", family="flair"))


def test_a_pair_that_finds_nothing_is_never_chosen(head):
    model = two_family_model(t2=(EmptyNet(), EmptyNet()), t1=(BrightNet(), EmptyNet()))
    pred = Predictor(model, PredictSettings(device="cpu", roi="off")).predict_volume(head)
    assert pred.info["contrast_family"] == "t1"  # agreement 0 beats nothing found (NaN)


def test_bundle_with_families_round_trips(tmp_path, head):
    spec = ModelSpec(n_filters=4)
    torch.manual_seed(0)
    pairs = {name: (build_vnet(spec).state_dict(), build_vnet(spec).state_dict()) for name in "ab"}
    torch.save(
        bundle_dict(spec, *pairs["a"], family="t2", families={"t1": pairs["b"]}), tmp_path / "m.pt"
    )
    model = load_model(tmp_path / "m.pt")
    assert model.family == "t2" and list(model.pairs) == ["t2", "t1"]
    for name, (net1, _) in zip(("a", "b"), model.pairs.values(), strict=True):
        torch.testing.assert_close(
            net1.state_dict()["decoder1.out_conv.weight"],
            pairs[name][0]["decoder1.out_conv.weight"],
        )
    pred = Predictor(model, PredictSettings(device="cpu", roi="off")).predict_volume(head)
    assert pred.info["contrast_family"] in ("t1", "t2")
    assert set(pred.info["family_view_agreement"]) == {"t1", "t2"}
    # a bundle without families still loads as one unnamed pair
    torch.save(bundle_dict(spec, *pairs["a"]), tmp_path / "one.pt")
    one = load_model(tmp_path / "one.pt")
    assert one.family is None and list(one.pairs) == [None]
    info = Predictor(one, PredictSettings(device="cpu", roi="off")).predict_volume(head).info
    assert "contrast_family" not in info


def test_bad_family_bundles_are_refused_in_one_line(tmp_path):
    spec = ModelSpec(n_filters=4)
    sd = build_vnet(spec).state_dict()
    with pytest.raises(LoFiError, match="own name"):
        bundle_dict(spec, sd, sd, families={"t1": (sd, sd)})  # the first pair unnamed
    with pytest.raises(LoFiError, match="own name"):
        bundle_dict(spec, sd, sd, family="t1", families={"t1": (sd, sd)})
    broken = bundle_dict(spec, sd, sd, family="t2", families={"t1": (sd, sd)})
    broken["families"]["t1"] = {"vnet1": sd}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(LoFiError, match="broken.pt: contrast family 't1' has no vnet1/vnet2"):
        load_model(tmp_path / "broken.pt")
    narrow = build_vnet(ModelSpec(n_filters=2)).state_dict()
    torch.save(
        bundle_dict(spec, sd, sd, family="t2", families={"t1": (narrow, narrow)}), tmp_path / "w.pt"
    )
    with pytest.raises(LoFiError, match=r"w.pt \(t1\) \(vnet1\): weights do not fit"):
        load_model(tmp_path / "w.pt")


def test_cli_family_option(tmp_path, capsys):
    spec = ModelSpec(n_filters=4)
    sd = build_vnet(spec).state_dict()
    torch.save(bundle_dict(spec, sd, sd, family="t2", families={"t1": (sd, sd)}), tmp_path / "m.pt")
    scan = write_nifti(tmp_path / "scan.nii.gz", synthetic_head())
    out = tmp_path / "out"
    args = ["predict", str(scan), "-o", str(out), "--model", str(tmp_path / "m.pt"), "--no-qc"]
    assert main([*args, "--family", "t1", "--device", "cpu"]) in (None, 0)
    sidecar = json.loads(next(out.glob("*.json")).read_text())
    assert sidecar["effective"]["contrast_family"] == "t1"
    assert read_rows(out / "volumes.csv")[0]["contrast_family"] == "t1"  # the cohort table too
    with pytest.raises(SystemExit) as exc:
        main([*args, "--family", "pd", "--device", "cpu", "--overwrite"])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "no such contrast family" in err and "Traceback" not in err


def _fake_run(folder: Path, spec: ModelSpec, seed: int, iteration: int) -> dict:
    torch.manual_seed(seed)
    ckpt = {
        "spec": {"n_filters": spec.n_filters},
        "vnet1": build_vnet(spec).state_dict(),
        "vnet2": build_vnet(spec).state_dict(),
        "iteration": iteration,
        "best_dice": 0.5,
    }
    (folder / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, folder / "checkpoints" / "last.pt")
    (folder / "config.json").write_text(json.dumps({"init1": None}))
    return ckpt


def test_release_export_writes_one_pair_per_family(tmp_path):
    from lofihippseg.recipe.pairs import export

    spec = ModelSpec(n_filters=4)
    t2 = _fake_run(tmp_path / "t2", spec, 0, 30)
    t1 = _fake_run(tmp_path / "t1", spec, 1, 20)
    others, grids = {"t1": tmp_path / "t1"}, {"t1": 1.0}
    out = export(tmp_path / "t2", tmp_path / "b.pt", "last.pt", 1.5, "t2", others, grids)
    model = load_model(out)
    assert model.spec.grid_mm == 1.5 and list(model.pairs) == ["t2", "t1"]
    assert model.grid_of("t1") == 1.0 and model.grid_of("t2") == 1.5
    for ckpt, (net1, net2) in zip((t2, t1), model.pairs.values(), strict=True):
        for want, net in ((ckpt["vnet1"], net1), (ckpt["vnet2"], net2)):
            got = net.state_dict()["decoder1.out_conv.weight"]
            np.testing.assert_allclose(got, want["decoder1.out_conv.weight"].half().float())
    assert torch.load(out, weights_only=True)["family_iterations"] == {"t2": 30, "t1": 20}
    _fake_run(tmp_path / "wide", ModelSpec(n_filters=8), 2, 5)
    with pytest.raises(SystemExit, match="spec differs"):
        export(tmp_path / "t2", tmp_path / "c.pt", "last.pt", 1.5, "t2", {"t1": tmp_path / "wide"})


def test_training_can_start_from_either_family(tmp_path):
    from lofihippseg.training.checkpoint import init_state_dicts, load_init

    spec = ModelSpec(n_filters=4)
    torch.manual_seed(0)
    t2 = (build_vnet(spec).state_dict(), build_vnet(spec).state_dict())
    t1 = (build_vnet(spec).state_dict(), build_vnet(spec).state_dict())
    path = tmp_path / "m.pt"
    torch.save(bundle_dict(spec, *t2, family="t2", families={"t1": t1}), path)
    key = "decoder1.out_conv.weight"
    for family, want in ((None, t2), ("t2", t2), ("t1", t1)):
        sd1, sd2, _ = init_state_dicts(path, family)
        torch.testing.assert_close(sd1[key], want[0][key])
        torch.testing.assert_close(sd2[key], want[1][key])
    with pytest.raises(LoFiError, match="no contrast family 'pd' to start from.*t2, t1"):
        init_state_dicts(path, "pd")
    nets = [build_vnet(spec), build_vnet(spec), torch.nn.Linear(1, 1)]
    assert load_init(*nets, str(path), None, None, "t1") == [f"vnet1 <- {path}", f"vnet2 <- {path}"]
    torch.testing.assert_close(nets[1].state_dict()[key], t1[1][key])
    with pytest.raises(LoFiError, match="needs --init1"):
        load_init(*nets, None, None, None, "t1")


def test_each_family_runs_on_its_own_working_grid(tmp_path):
    spec = ModelSpec(n_filters=4, grid_mm=1.5)
    sd = build_vnet(spec).state_dict()
    path = tmp_path / "m.pt"
    torch.save(bundle_dict(spec, sd, sd, "t2", {"t1": (sd, sd)}, {"t1": 1.0}), path)
    model = load_model(path)
    assert model.grid_of("t1") == 1.0 and model.grid_of("t2") == 1.5
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    scan = load_image(write_nifti(tmp_path / "s.nii.gz", synthetic_head((40, 36, 30)), affine))
    for family, mm in (("t1", 1.0), ("t2", 1.5)):
        settings = PredictSettings(device="cpu", roi="off", family=family)
        pred = Predictor(model, settings).predict_volume(scan)
        assert pred.info["working_grid_mm"] == mm and pred.info["grid_spacing_mm"][0] == mm
        assert pred.labels.shape == scan.data.shape  # back on the input's grid
    # the mirrored pass maps back through its own window; both go into their union
    net = BrightNet()
    mirror_model = LoadedModel(ModelSpec(n_filters=4, grid_mm=1.5), net, net, source="test")
    plain = Predictor(mirror_model, PredictSettings(device="cpu", roi="off")).predict_volume(scan)
    settings = PredictSettings(device="cpu", roi="off", tta=True)
    mirrored = Predictor(mirror_model, settings).predict_volume(scan)
    assert mirrored.labels.shape == scan.data.shape and (mirrored.labels == 1).sum() > 20
    half = scan.data.shape[0] // 2
    assert (mirrored.labels[:half] == 2).sum() == 0 and (mirrored.labels[half:] == 1).sum() == 0
    agree = (mirrored.labels == plain.labels).mean()
    assert agree > 0.99, agree
    predictor = Predictor(model, PredictSettings(device="cpu", roi="off"))
    prepared = []
    original = predictor._prepare
    predictor._prepare = lambda *a: prepared.append(a[1]) or original(*a)
    both = predictor.predict_volume(scan)
    assert both.info["working_grid_mm"] == model.grid_of(both.info["contrast_family"])
    assert sorted(prepared) == [1.0, 1.5]  # one preparation per working grid
    with pytest.raises(LoFiError, match="not one of the families"):
        bundle_dict(spec, sd, sd, "t2", {"t1": (sd, sd)}, {"pd": 1.0})
    bad = bundle_dict(spec, sd, sd, "t2", {"t1": (sd, sd)}, {"t1": 1.0})
    bad["families"]["t1"]["grid_mm"] = 50.0
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(LoFiError, match=r"bad.pt: contrast family 't1': model spec grid_mm"):
        load_model(tmp_path / "bad.pt")


def test_bids_tables_name_the_family_of_each_image(tmp_path, monkeypatch):
    from cohort_helpers import make_bids

    from lofihippseg.inference import model_loading

    monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: two_family_model())
    bids, out = make_bids(tmp_path / "bids", broken=False), tmp_path / "out"
    for level in ("participant", "group"):
        args = ["bids", str(bids), str(out), level, "--device", "cpu", "--quiet", "--no-qc"]
        if level == "group":
            args = [*args[:-1], "--no-report"]
        assert main(args) in (None, 0)
    for table in (out / "sub-01/sub-01_desc-hippocampus_volumes.tsv", out / "group_volumes.tsv"):
        header, *rows = [line.split("\t") for line in table.read_text().splitlines()]
        column = header.index("contrast_family")
        assert rows and all(row[column] == "t1" for row in rows)  # t1's views agree


def test_pairs_on_one_grid_share_the_preparation_and_give_their_own_results(head):
    model = two_family_model()
    predictor = Predictor(model, PredictSettings(device="cpu", roi="off"))
    prepared = []
    original = predictor._prepare
    predictor._prepare = lambda *a: prepared.append(a[1]) or original(*a)
    shared = predictor.predict_volume(head)
    assert len(prepared) == 1  # both pairs on the model's one grid: prepared once
    alone = Predictor(model, PredictSettings(device="cpu", roi="off", family="t1"))
    assert np.array_equal(shared.labels, alone.predict_volume(head).labels)
    assert shared.view_dice == pytest.approx(alone.predict_volume(head).view_dice)


def test_the_localiser_runs_once_for_the_pairs_on_one_grid(monkeypatch):
    """The shipped model's localiser and ``t2`` pair, given twice on one grid."""
    from test_shipped_model import SYNTHETIC

    from lofihippseg.inference.localiser import Localiser

    shipped, calls = load_model(), []
    original = Localiser.probabilities
    monkeypatch.setattr(
        Localiser, "probabilities", lambda self, *a: calls.append(1) or original(self, *a)
    )
    model = LoadedModel(
        shipped.spec,
        shipped.vnet1,
        shipped.vnet2,
        source="test",
        localiser=shipped.localiser,
        family="t2",
        alternatives={"copy": (shipped.vnet1, shipped.vnet2)},
    )
    scan = load_image(SYNTHETIC)
    pred = Predictor(model, PredictSettings(device="cpu", roi="on")).predict_volume(scan)
    assert len(calls) == 1 and pred.info["roi_source"] == "localiser"
    agreement = pred.info["family_view_agreement"]
    assert agreement["t2"] == agreement["copy"] and pred.info["contrast_family"] == "t2"
