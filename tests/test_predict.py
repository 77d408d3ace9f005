"""End-to-end prediction: geometry, recipes, batch behaviour, outputs and the CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from cohort_helpers import BrightNet
from conftest import shared_path, write_nifti
from matplotlib.image import imread
from nibabel.orientations import apply_orientation, inv_ornt_aff

from lofihippseg.cli import main
from lofihippseg.errors import LoFiError
from lofihippseg.inference import localiser as localiser_mod
from lofihippseg.inference import model_loading
from lofihippseg.inference import roi as roi_mod
from lofihippseg.inference.api import PredictSettings, gather_inputs, output_names, predict
from lofihippseg.inference.localiser import Localiser
from lofihippseg.inference.model_loading import LoadedModel, load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.io.nifti import load_image, load_label
from lofihippseg.models.registry import LocaliserSpec, ModelSpec, build_vnet, bundle_dict
from lofihippseg.preprocessing.crop import pad_to_multiple
from lofihippseg.preprocessing.prepare import crop_and_normalise
from lofihippseg.preprocessing.resample import to_coarse_grid
from lofihippseg.reporting.qc import QC_SIZE_PX
from lofihippseg.reporting.volumes import read_rows
from lofihippseg.views.frequency import frequency_view


class IntensityNet(torch.nn.Module):
    """Position-invariant stand-in: left channel = bright voxels, right = mid-grey voxels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([40 * (x - 0.55), 40 * torch.minimum(x - 0.3, 0.5 - x)], dim=1)


HalfNet = BrightNet  # left channel in the array's first half (axis 0), right in the other


def fake_model(net: torch.nn.Module, recipe: str = "paper") -> LoadedModel:
    spec = ModelSpec(n_filters=4, view_mode="lowpass", cutoff=0.5, recipe=recipe)
    return LoadedModel(spec=spec, vnet1=net, vnet2=net, source="test")


def synthetic_head(shape=(40, 36, 30), seed=0, blob=1.0, spread=0.4) -> np.ndarray:
    """A noisy ellipsoid 'head' (values ~100) with two bright blobs, left and right."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    head = (sum(g**2 for g in grid) < 0.8).astype(np.float32)
    data = head * (100 + 5 * rng.standard_normal(shape)).astype(np.float32)
    x, y, z = grid
    for cx in (-spread, spread):
        inside = ((x - cx) ** 2 / 0.03 + y**2 / 0.06 + z**2 / 0.04) / blob**2 < 1
        data[inside] = 220 + 5 * rng.standard_normal(int(inside.sum()))
    return data


@pytest.fixture
def scans(tmp_path):
    affine = np.diag([1.2, 0.9, 2.0, 1.0])
    affine[:3, 3] = [-20, -15, -30]
    return [
        write_nifti(tmp_path / "in" / f"case{i}.nii.gz", synthetic_head(seed=i), affine)
        for i in range(2)
    ]


def settings(**kw) -> PredictSettings:
    return PredictSettings(device="cpu", **kw)


# --- geometry -------------------------------------------------------------------------------


def reoriented_copy(src: nib.Nifti1Image, path) -> nib.Nifti1Image:
    """The same physical image stored with permuted, flipped axes (and other header codes)."""
    ornt = np.array([[2, -1], [0, 1], [1, -1]])  # input axis i -> output axis ornt[i, 0]
    data = apply_orientation(np.asanyarray(src.dataobj), ornt)
    affine = src.affine @ inv_ornt_aff(ornt, src.shape)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=2)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return img


def world_labels(path) -> dict[tuple[int, int, int], int]:
    """Foreground voxels as rounded world coordinates (mm x 10) -> label."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    idx = np.argwhere(data > 0)
    world = nib.affines.apply_affine(img.affine, idx)
    keys = [tuple(k) for k in np.rint(world * 10).astype(int)]
    return dict(zip(keys, data[tuple(idx.T)].astype(int).tolist(), strict=True))


def test_real_head_any_orientation_same_world_segmentation(tmp_path):
    head = shared_path("data", "real_head_t1", "example_brain_t1.nii.gz")
    src = nib.load(str(head))
    copy_path = tmp_path / "copy" / "head_reoriented.nii.gz"
    copy_path.parent.mkdir()
    reoriented_copy(src, copy_path)
    report = predict(
        [head, copy_path], tmp_path / "out", fake_model(IntensityNet()), settings(qc=False)
    )
    assert not report.failed
    for inp in (head, copy_path):
        ref = nib.load(str(inp))
        out = nib.load(str(tmp_path / "out" / output_names(load_image(inp).name)["labels"]))
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.affine, ref.affine)
        assert int(out.header["qform_code"]) == int(ref.header["qform_code"])
        assert int(out.header["sform_code"]) == int(ref.header["sform_code"])
        assert out.get_data_dtype() == np.uint8
    labels_a = world_labels(tmp_path / "out" / "example_brain_t1_hipp.nii.gz")
    labels_b = world_labels(tmp_path / "out" / "head_reoriented_hipp.nii.gz")
    assert {1, 2} <= set(labels_a.values())  # meaningful: both labels present
    assert labels_a == labels_b


def test_label_one_is_on_the_subjects_left_in_world(tmp_path):
    data = synthetic_head((32, 32, 32))
    affine = np.array([[-1.0, 0, 0, 10], [0, 0, 1, -5], [0, 1, 0, 3], [0, 0, 0, 1]])  # LSA-ish
    path = write_nifti(tmp_path / "lsa.nii.gz", data, affine)
    predict(path, tmp_path / "out", fake_model(HalfNet()), settings(qc=False, lcc=False))
    world = world_labels(tmp_path / "out" / "lsa_hipp.nii.gz")
    xs = {v: [k[0] for k, lab in world.items() if lab == v] for v in (1, 2)}
    assert xs[1] and xs[2] and max(xs[1]) < min(xs[2])  # left = smaller world x (RAS)


# --- models and recipes ---------------------------------------------------------------------


def random_states(n_filters=4, seed=0):
    torch.manual_seed(seed)
    nets = [build_vnet(ModelSpec(n_filters=n_filters)) for _ in range(2)]
    return [n.state_dict() for n in nets]


def centred(state: dict, view: np.ndarray) -> dict:
    """Shift a random VNet's output bias so that about half the voxels pass 0.5 per channel."""
    net = build_vnet(ModelSpec(n_filters=4))
    net.load_state_dict(state)
    padded = torch.from_numpy(pad_to_multiple(np.asarray(view), 16)[0])[None, None].float()
    with torch.no_grad():
        logits = net.eval()(padded)
    state = {k: v.clone() for k, v in state.items()}
    state["decoder1.out_conv.bias"] -= logits[0].flatten(1).median(dim=1).values
    return state


def test_released_recipe_end_to_end(tmp_path, scans):
    crop0, _ = crop_and_normalise(load_image(scans[0]).data)
    sd1, sd2 = random_states()
    sd1, sd2 = centred(sd1, crop0), centred(sd2, frequency_view(crop0, "legacy", 0.1))
    c1, c2 = tmp_path / "best_model_1.pth", tmp_path / "best_model_2.pth"
    torch.save(sd1, c1)
    torch.save(sd2, c2)
    model = load_model(checkpoint1=c1, checkpoint2=c2, recipe="released")
    assert model.spec == ModelSpec(n_filters=4, view_mode="legacy", cutoff=0.1, recipe="released")
    predict(scans[0], tmp_path / "out", model, settings(qc=False))  # auto ROI: off here
    got = load_label(tmp_path / "out" / "case0_hipp.nii.gz").data
    # independent reference: the released inference written out by hand
    vol = load_image(scans[0])
    crop, box = crop_and_normalise(vol.data)
    masks = []
    for sd, view in ((sd1, crop), (sd2, frequency_view(crop, "legacy", 0.1))):
        net = build_vnet(ModelSpec(n_filters=4))
        net.load_state_dict(sd)
        padded, inner = pad_to_multiple(np.asarray(view), 16)
        with torch.no_grad():
            prob = torch.sigmoid(net.eval()(torch.from_numpy(padded)[None, None].float()))[0]
        masks.append(prob.numpy()[(slice(None), *inner)] > 0.5)
    union = masks[0] | masks[1]
    expected = np.zeros(vol.data.shape, np.int16)
    expected[box] = np.where(union[1], 2, np.where(union[0], 1, 0))  # overlaps -> right
    assert (expected == 1).any() and (expected == 2).any()
    np.testing.assert_array_equal(got, expected)


def test_run_folder_and_bundle_loading(tmp_path):
    spec = ModelSpec(n_filters=4, view_mode="highpass", clip_percentiles=(0.5, 99.5))
    sd1, sd2 = random_states()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": bundle_dict(spec, {}, {})["spec"]}))
    ckpt = {"format": "lofihippseg-checkpoint-1", "iteration": 3, **bundle_dict(spec, sd1, sd2)}
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    loaded = load_model(run)
    assert loaded.spec == spec and loaded.source.endswith("last.pt")
    torch.testing.assert_close(loaded.vnet2.state_dict(), sd2)
    torch.save(bundle_dict(spec, sd1, sd2), tmp_path / "bundle.pt")
    assert load_model(tmp_path / "bundle.pt", recipe="released").spec.recipe == "released"
    with pytest.raises(LoFiError, match="checkpoint2"):
        load_model(checkpoint1=tmp_path / "bundle.pt")
    with pytest.raises(LoFiError, match="not a LoFiHippSeg model"):
        torch.save(sd1, tmp_path / "plain.pth")
        load_model(tmp_path / "plain.pth")


def test_no_model_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(model_loading, "DEFAULT_MODEL", tmp_path / "none.pt")
    with pytest.raises(LoFiError, match="--model"):
        load_model()


class BrightNet(torch.nn.Module):
    """Pointwise: 'left' wherever the voxel is bright, never 'right'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([40 * (x - 0.55), torch.full_like(x, -40.0)], dim=1)


class TwoLevelNet(torch.nn.Module):
    """Pointwise: 'left' for bright voxels, 'right' for the brightest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = torch.where(x < 0.88, 40 * (x - 0.6), torch.full_like(x, -40.0))
        return torch.cat([left, 40 * (x - 0.88)], dim=1)


def two_level_head(shape=(128, 128, 96)) -> np.ndarray:
    """``synthetic_head`` whose right blob (second half of axis 0) is brighter than the left."""
    data = synthetic_head(shape, blob=0.5, spread=0.25)
    right = np.zeros(shape, bool)
    right[shape[0] // 2 :] = True
    data[right & (data > 180)] += 50
    return data


def test_roi_path_matches_whole_volume(tmp_path):
    vol = load_image(write_nifti(tmp_path / "big.nii.gz", two_level_head()))
    model = fake_model(TwoLevelNet())
    whole = Predictor(model, settings(roi="off")).predict_volume(vol)
    roi = Predictor(model, settings(roi="on")).predict_volume(vol)
    assert "roi_boxes" in roi.info, roi.info  # the located box was used, no fallback
    assert (whole.labels == 1).sum() > 50 and (whole.labels == 2).sum() > 50
    np.testing.assert_array_equal(roi.labels, whole.labels)


def test_the_mirror_runs_in_the_located_boxes(tmp_path):
    vol = load_image(write_nifti(tmp_path / "big.nii.gz", two_level_head()))
    model = fake_model(TwoLevelNet())
    roi = Predictor(model, settings(roi="on", tta=True)).predict_volume(vol)
    whole = Predictor(model, settings(roi="off", tta=True)).predict_volume(vol)
    assert "roi_boxes" in roi.info and "roi_fallback" not in roi.info, roi.info
    assert roi.info["tta"] is True and (roi.labels > 0).any()
    np.testing.assert_array_equal(roi.labels, whole.labels)


def test_roi_falls_back_when_a_side_is_missing(tmp_path, monkeypatch):
    vol = load_image(write_nifti(tmp_path / "big.nii.gz", two_level_head()))
    one_side = fake_model(BrightNet())  # never finds 'right': no box
    pred = Predictor(one_side, settings(roi="on")).predict_volume(vol)
    assert "not both located" in pred.info["roi_fallback"]
    whole = Predictor(one_side, settings(roi="off")).predict_volume(vol)
    np.testing.assert_array_equal(pred.labels, whole.labels)
    # boxes that hold one side only (the coarse pass was fooled)
    real_boxes = roi_mod.side_boxes

    def left_box_only(probs, shape, margin, threshold=roi_mod.COARSE_THRESHOLD):
        box = real_boxes(probs, shape, margin, threshold)[0]
        half = (box[0].stop - box[0].start) // 32 * 16  # the lower half of x: the left blob
        return [(slice(box[0].start, box[0].start + half), *box[1:])]

    monkeypatch.setattr(roi_mod, "side_boxes", left_box_only)
    calls = []

    class CountingTwoLevel(TwoLevelNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape[-3:]))
            return super().forward(x)

    pred = Predictor(fake_model(CountingTwoLevel()), settings(roi="on")).predict_volume(vol)
    # a side the boxes' segmentation misses is searched for: the boxes came from the coarse
    # pass, so the whole volume runs (once more per view)
    search = pred.info["roi_side_search"]
    assert search["by"] == "whole volume" and search["from"] == "coarse pass" and search["boxes"]
    assert "roi_missing_side" not in pred.info and "roi_boxes" not in pred.info
    assert len(calls) == 2 + 2 + 2  # coarse pass, the box, the whole volume; per view
    both = Predictor(fake_model(TwoLevelNet()), settings(roi="off")).predict_volume(vol)
    np.testing.assert_array_equal(pred.labels, both.labels)


def test_roi_regrows_boxes_that_cut_the_segmentation(tmp_path, monkeypatch):
    vol = load_image(write_nifti(tmp_path / "big.nii.gz", two_level_head()))
    model = fake_model(TwoLevelNet())
    whole = Predictor(model, settings(roi="off")).predict_volume(vol)
    real_boxes = roi_mod.side_boxes
    calls = []

    def cut_boxes(probs, shape, margin, threshold=roi_mod.COARSE_THRESHOLD):
        boxes = real_boxes(probs, shape, margin, threshold)
        calls.append(boxes)
        if len(calls) > 1:
            return boxes  # the second call: boxes around what the first pass found
        found = np.nonzero(whole.labels.any(axis=(1, 2)))[0]  # x extent of both blobs
        stop = int(found.max()) - 4 - whole.box[0].start  # cuts into the right blob
        return [(slice(b[0].start, stop), *b[1:]) for b in boxes]

    monkeypatch.setattr(roi_mod, "side_boxes", cut_boxes)
    pred = Predictor(model, settings(roi="on")).predict_volume(vol)
    assert pred.info.get("roi_regrown") and "roi_boxes" in pred.info, pred.info
    assert "roi_fallback" not in pred.info and len(calls) == 2
    np.testing.assert_array_equal(pred.labels, whole.labels)


def test_roi_from_localiser_matches_whole_volume(tmp_path, monkeypatch):
    monkeypatch.setattr(roi_mod, "LOCALISER_MARGIN_MM", 6.0)  # a small head: less context
    monkeypatch.setattr(roi_mod, "ROI_MARGIN_MM", 6.0)
    # a stand-in localiser on a 1 mm grid that sees the fine networks' input: it finds exactly
    # what they find
    monkeypatch.setattr(localiser_mod, "localiser_input", to_coarse_grid)
    vol = load_image(write_nifti(tmp_path / "big.nii.gz", two_level_head()))
    model = fake_model(TwoLevelNet())
    whole = Predictor(model, settings(roi="off")).predict_volume(vol)
    model.localiser = Localiser(LocaliserSpec(mm=1.0), TwoLevelNet())
    roi = Predictor(model, settings(roi="on")).predict_volume(vol)
    assert roi.info["roi_source"] == "localiser" and "roi_boxes" in roi.info, roi.info
    inside = sum(np.prod([hi - lo for lo, hi in box]) for box in roi.info["roi_boxes"])
    assert inside < 0.5 * np.prod(vol.data.shape)  # the fine networks ran on part of the head
    np.testing.assert_array_equal(roi.labels, whole.labels)
    # a localiser that misses a side hands over to the coarse pass of the fine networks
    model.localiser = Localiser(LocaliserSpec(mm=1.0), BrightNet())
    again = Predictor(model, settings(roi="on")).predict_volume(vol)
    assert again.info["roi_source"] == "coarse pass" and "roi_boxes" in again.info
    np.testing.assert_array_equal(again.labels, whole.labels)


def test_tta_keeps_sides(scans):
    vol = load_image(scans[0])
    model = fake_model(HalfNet())
    base = Predictor(model, settings(roi="off", lcc=False)).predict_volume(vol)
    tta = Predictor(model, settings(roi="off", lcc=False, tta=True)).predict_volume(vol)
    half = vol.data.shape[0] // 2
    for pred in (base, tta):
        assert (pred.labels[:half] == 2).sum() == 0 and (pred.labels[half:] == 1).sum() == 0
        assert (pred.labels == 1).any() and (pred.labels == 2).any()
    np.testing.assert_array_equal(tta.labels, base.labels)


class CountingNet(HalfNet):
    """HalfNet that counts the volumes it has seen."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += x.shape[0]  # a batch of the scan and its mirror counts two
        return super().forward(x)


def test_tta_default_follows_the_models_advice(scans):
    vol = load_image(scans[0])
    for advice, recipe, asked, expected in [
        (False, "paper", None, False),
        (True, "paper", None, True),
        (True, "paper", False, False),  # the user's choice wins
        (False, "paper", True, True),
        (True, "released", None, False),  # the released recipe runs as it was run
    ]:
        net = CountingNet()
        model = fake_model(net, recipe)
        model.tta = advice
        pred = Predictor(model, settings(roi="off", tta=asked)).predict_volume(vol)
        assert pred.info["tta"] is expected
        assert net.calls == (4 if expected else 2)  # two views, each once or mirrored too


class UprightNet(torch.nn.Module):
    """Finds 'hippocampi' by position only: upper half of axis 2, left / right half of axis 0
    (a network that knows which way is up, as ours do: none is trained on flipped heads)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, _, w = x.shape[-3:]
        upper = (torch.arange(w) >= w // 2).view(1, 1, w)
        left = (torch.arange(d) < d // 2).view(d, 1, 1)
        inside = x[:, 0] > 0.2  # (batch, D, H, W)
        on = [upper & left & inside, upper & ~left & inside]
        return (torch.stack(on, dim=1).float() - 0.5) * 40


def test_tta_never_shows_the_network_an_upside_down_head(scans):
    vol = load_image(scans[0])
    model = fake_model(UprightNet())
    base = Predictor(model, settings(roi="off", lcc=False)).predict_volume(vol)
    tta = Predictor(model, settings(roi="off", lcc=False, tta=True)).predict_volume(vol)
    assert (base.labels == 1).sum() > 100 and (base.labels == 2).sum() > 100
    # mirrored left-right only: every copy agrees (an up-down flip would halve the probabilities)
    np.testing.assert_allclose(tta.fused, base.fused, atol=1e-6)
    np.testing.assert_array_equal(tta.labels, base.labels)


def test_sliding_windows_match_whole_volume(scans):
    vol = load_image(scans[0])
    model = fake_model(IntensityNet())
    whole = Predictor(model, settings(roi="off", sliding_window="off")).predict_volume(vol)
    sw = Predictor(
        model, settings(roi="off", sliding_window="on", roi_size=(16, 16, 16))
    ).predict_volume(vol)
    np.testing.assert_allclose(sw.fused, whole.fused, atol=1e-4)
    assert (whole.labels > 0).sum() > 50


# --- batch behaviour and outputs ------------------------------------------------------------


def test_batch_outputs_volumes_and_qc(tmp_path, scans):
    out = tmp_path / "out"
    report = predict(
        tmp_path / "in",
        out,
        fake_model(IntensityNet()),
        settings(save_probabilities=True, save_uncertainty=True),
    )
    assert [r.status for r in report.results] == ["ok", "ok"]
    rows = {r["case"]: r for r in read_rows(out / "volumes.csv")}
    for scan in scans:
        case = load_image(scan).name
        labels = load_label(out / f"{case}_hipp.nii.gz").data
        voxel_ml = 1.2 * 0.9 * 2.0 / 1000
        assert float(rows[case]["left_ml"]) == pytest.approx((labels == 1).sum() * voxel_ml)
        assert float(rows[case]["right_ml"]) == pytest.approx((labels == 2).sum() * voxel_ml)
        assert (labels == 1).any()
        # the tiny test head (48 mm from left to right) is judged as a crop around one
        # hippocampus, and what it labels is far too small for one: flagged, not "ok"
        assert rows[case]["status"] == "implausible_volume"
        assert "mL" in rows[case]["status_reason"]
        png = imread(out / f"{case}_qc.png")
        assert png.shape[:2] == QC_SIZE_PX and png.std() > 0.01
        sidecar = json.loads((out / f"{case}_hipp.json").read_text())
        assert sidecar["model"]["source"] == "test" and "total_s" in sidecar["timings"]
        # IntensityNet labels the bright voxels: their edge is in the image
        assert sidecar["edge_visibility"]["left"] > 1.0
        prob = nib.load(str(out / f"{case}_prob_left.nii.gz"))
        assert prob.get_data_dtype() == np.float32 and 0 <= prob.get_fdata().max() <= 1
        assert (out / f"{case}_uncertainty.nii.gz").is_file()
    rerun = predict(tmp_path / "in", out, fake_model(IntensityNet()), settings())
    assert [r.status for r in rerun.results] == ["skipped", "skipped"]
    assert rerun.results[0].row["case"] == "case0"


def test_corrupt_case_is_skipped_and_exit_code_nonzero(tmp_path, scans, monkeypatch):
    bad = tmp_path / "in" / "broken.nii.gz"
    bad.write_bytes(scans[0].read_bytes()[:300])  # truncated gzip
    torch.save(bundle_dict(ModelSpec(n_filters=4), *random_states()), tmp_path / "m.pt")
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(tmp_path / "m.pt")]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--device", "cpu", "--roi", "off", "--quiet", "--no-qc"])
    assert exc.value.code == 1
    assert (out / "case0_hipp.nii.gz").is_file() and (out / "case1_hipp.nii.gz").is_file()
    assert not (out / "broken_hipp.nii.gz").exists()
    rows = {r["case"]: r["status"] for r in read_rows(out / "volumes.csv")}
    # segmented cases get their quality status (the tiny test heads, judged as crops: too
    # little labelled for a hippocampus)
    assert rows == {
        "broken": "failed",
        "case0": "implausible_volume",
        "case1": "implausible_volume",
    }


def test_killed_batch_rerun_leaves_no_partial_file(tmp_path, scans, monkeypatch):
    out = tmp_path / "out"
    real_save = nib.save
    calls = {"n": 0}

    def dying_save(img, filename):
        calls["n"] += 1
        if calls["n"] == 2:  # second label map: half written, then the process is interrupted
            with open(filename, "wb") as handle:
                handle.write(b"\x1f\x8b partial")
            raise KeyboardInterrupt
        return real_save(img, filename)

    monkeypatch.setattr(nib, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        predict(scans, out, fake_model(IntensityNet()), settings(qc=False))
    monkeypatch.setattr(nib, "save", real_save)
    assert not (out / "case1_hipp.nii.gz").exists()
    # a SIGKILLed run cannot clean up: leave a stale temporary file as it would
    (out / ".case1_hipp.nii.gz.abc123.tmp.nii.gz").write_bytes(b"partial")
    report = predict(scans, out, fake_model(IntensityNet()), settings(qc=False))
    assert [r.status for r in report.results] == ["skipped", "ok"]
    assert not [p.name for p in out.iterdir() if "tmp" in p.name]
    for case in ("case0", "case1"):
        assert load_label(out / f"{case}_hipp.nii.gz", allowed={0, 1, 2}).data.any()
        assert json.loads((out / f"{case}_hipp.json").read_text())["volumes"]["case"] == case


def test_lisa_names_and_shards(tmp_path):
    data = synthetic_head((32, 32, 32))
    for i in (3, 1, 2):
        write_nifti(tmp_path / "in" / f"LISA_VALIDATION_000{i}_ciso.nii.gz", data)
    out = tmp_path / "out"
    model = fake_model(IntensityNet())
    report = predict(tmp_path / "in", out, model, settings(lisa_names=True, qc=False, shard=(2, 2)))
    assert [r.case for r in report.results] == ["LISA_VALIDATION_0002_ciso"]
    assert (out / "LISA_HF_0002_hipp_prediction.nii.gz").is_file()
    report = predict(tmp_path / "in", out, model, settings(lisa_names=True, qc=False, shard=(1, 2)))
    assert [r.case for r in report.results] == [
        "LISA_VALIDATION_0001_ciso",
        "LISA_VALIDATION_0003_ciso",
    ]
    # outputs in the input folder are not taken for inputs on the next run
    assert len(gather_inputs([tmp_path / "in", out])) == 3
    with pytest.raises(LoFiError):
        PredictSettings(shard=(0, 2))


def test_output_path_escape_and_inputs_are_refused(tmp_path, scans):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.nii.gz"
    outside.write_bytes(b"keep me")
    (out / "case0_hipp.nii.gz").symlink_to(outside)  # would write through to outside out/
    report = predict(scans[0], out, fake_model(IntensityNet()), settings(qc=False))
    assert report.failed and "escapes" in report.failed[0].message
    assert outside.read_bytes() == b"keep me"
    # an input named like another case's output is never overwritten
    twin = tmp_path / "in" / "case0_prob_left.nii.gz"
    twin.write_bytes(scans[1].read_bytes())
    before = twin.read_bytes()
    report = predict(
        [scans[0], twin],
        tmp_path / "in",
        fake_model(IntensityNet()),
        settings(qc=False, save_probabilities=True),
    )
    assert twin.read_bytes() == before and any(
        "overwrite an input" in r.message for r in report.failed
    )


def test_qc_png_with_an_empty_side(tmp_path):
    from lofihippseg.reporting.qc import save_qc_png

    image = synthetic_head((30, 34, 26))
    labels = np.zeros(image.shape, np.uint8)
    labels[8:12, 15:20, 10:14] = 1  # only a left hippocampus
    path = save_qc_png(image, labels, (1.0, 1.0, 1.5), tmp_path / "qc.png", "only left")
    png = imread(path)
    assert png.shape[:2] == QC_SIZE_PX
    red = (png[..., 0] > 0.8) & (png[..., 1] < 0.4) & (png[..., 2] < 0.4)
    assert red.sum() > 20  # the left outline is drawn in red
    empty = save_qc_png(image, labels * 0, (1.0, 1.0, 1.0), tmp_path / "empty.png")
    assert imread(empty).shape[:2] == QC_SIZE_PX


def test_cli_help_describes_every_option():
    from click.testing import CliRunner

    from lofihippseg.cli.predict import command

    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for param in command.params:
        if isinstance(param, __import__("click").Option):
            assert param.help, param.name
    assert "--lisa-names" in result.output and "--shard" in result.output


def test_single_view_run_uses_network_one_on_the_image(tmp_path):
    spec = ModelSpec(n_filters=4)
    sd1, sd2 = random_states()
    ckpt = {**bundle_dict(spec, sd1, sd2), "single_view": True}
    torch.save(ckpt, tmp_path / "single.pt")
    loaded = load_model(tmp_path / "single.pt")
    assert loaded.single_view and loaded.vnet2 is loaded.vnet1
    vol_path = write_nifti(tmp_path / "case.nii.gz", synthetic_head())
    pred = Predictor(loaded, PredictSettings(device="cpu", roi="off")).predict_volume(
        load_image(vol_path)
    )
    np.testing.assert_array_equal(pred.prob1, pred.prob2)  # the untrained net 2 is never used
