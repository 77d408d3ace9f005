"""The working grid: a model trained at one voxel size runs there, answers on the input grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_nifti
from test_predict import IntensityNet, fake_model, settings, synthetic_head

from lofihippseg.cli import main
from lofihippseg.errors import LoFiError
from lofihippseg.inference.api import PredictSettings
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.inference.predictor import Predictor
from lofihippseg.io.nifti import load_image
from lofihippseg.models.registry import ModelSpec
from lofihippseg.preprocessing.resample import resize, working_grid


def centre_mm(values: torch.Tensor, spacing) -> np.ndarray:
    """Intensity-weighted centre in mm from the grid's corner (voxel i covers
    [i, i + 1) * spacing)."""
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in values.shape], indexing="ij"))
    centres = (idx.double() + 0.5) * torch.as_tensor(spacing, dtype=torch.float64)[
        :, None, None, None
    ]
    weights = values.double()
    return ((centres * weights).flatten(1).sum(1) / weights.sum()).numpy()


def test_working_grid_keeps_the_field_of_view():
    grid = working_grid((150, 120, 30), (1.0, 1.0, 5.0), 1.5)
    assert grid.shape == (100, 80, 100)
    np.testing.assert_allclose(np.array(grid.shape) * grid.spacing, (150, 120, 150))
    assert working_grid((100, 100, 100), (1.4, 1.5, 1.6), 1.5) is None  # within 10 %
    assert working_grid((100, 100, 100), (1.0, 1.5, 1.5), 1.5) is not None

    blob = torch.zeros(90, 90, 60)
    blob[20:41, 50:66, 10:31] = 1.0  # 1 mm voxels
    # 1.5 mm voxels (area windows of a non-integer ratio are off by up to a quarter voxel)
    there = resize(blob, grid_shape := (60, 60, 40))
    np.testing.assert_allclose(centre_mm(there, (1.5,) * 3), centre_mm(blob, (1,) * 3), atol=0.3)
    back = resize(there, blob.shape)
    np.testing.assert_allclose(centre_mm(back, (1,) * 3), centre_mm(blob, (1,) * 3), atol=0.3)
    overlap = 2 * ((back > 0.5) & (blob > 0.5)).sum() / ((back > 0.5).sum() + blob.sum())
    assert overlap > 0.9
    # mixed axes (shrink one, grow another); a constant stays constant; channels are kept
    mixed = resize(torch.full((2, 30, 10, 20), 3.0), (20, 25, 20))
    assert mixed.shape == (2, 20, 25, 20) and torch.allclose(mixed, torch.tensor(3.0))
    assert grid_shape == there.shape


def with_grid(model: LoadedModel, mm: float | None) -> LoadedModel:
    spec = ModelSpec(**{**model.spec.__dict__, "grid_mm": mm})
    return LoadedModel(spec=spec, vnet1=model.vnet1, vnet2=model.vnet2, source="test")


def test_prediction_on_the_working_grid_lies_on_the_input_grid(tmp_path):
    affine = np.diag([0.8, 0.8, 1.0, 1.0])
    affine[:3, 3] = [-30, -20, -10]
    vol = load_image(write_nifti(tmp_path / "fine.nii.gz", synthetic_head((96, 80, 64)), affine))
    native = fake_model(IntensityNet())
    gridded = with_grid(native, 1.6)
    base = Predictor(native, settings(roi="off")).predict_volume(vol)
    pred = Predictor(gridded, settings(roi="off")).predict_volume(vol)
    assert "grid_spacing_mm" not in base.info
    np.testing.assert_allclose(pred.info["grid_spacing_mm"], 1.6, atol=0.3)
    assert pred.labels.shape == vol.data.shape
    assert pred.full(pred.fused[0]).shape == vol.data.shape  # maps cover the labels' window
    outside = pred.labels.copy()
    outside[pred.box] = 0
    assert not outside.any()  # every label lies in the maps' window
    for side in (1, 2):  # the same structures, in the same place, on the input's grid
        a, b = base.labels == side, pred.labels == side
        assert a.sum() > 200
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85
        # within a quarter voxel: a scale error of 2 % would move these blobs by more
        np.testing.assert_allclose(np.argwhere(b).mean(0), np.argwhere(a).mean(0), atol=0.25)
    # --grid native ignores the model's grid; a number replaces it
    same = Predictor(gridded, settings(roi="off", grid="native")).predict_volume(vol)
    np.testing.assert_array_equal(same.labels, base.labels)
    other = Predictor(native, settings(roi="off", grid="2")).predict_volume(vol)
    np.testing.assert_allclose(other.info["grid_spacing_mm"], 2.0, atol=0.3)


def test_bad_grid_is_a_clear_error(tmp_path):
    for bad in ("fine", "0", "-1.5", "nan"):
        with pytest.raises(LoFiError, match="--grid must be auto, native or a voxel size"):
            PredictSettings(grid=bad)
    with pytest.raises(LoFiError, match="grid_mm"):
        ModelSpec(grid_mm=20.0)
    path = write_nifti(tmp_path / "a.nii.gz", synthetic_head())
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(path), "-o", str(tmp_path / "out"), "--grid", "coarse"])
    assert exc.value.code != 0


@pytest.mark.parametrize("shape", [(12, 9, 20), (5, 30, 7)])
def test_resize_window_is_a_window_of_resize(shape):
    from lofihippseg.inference.regrid import resize_window, window_for

    x = torch.rand(2, 9, 14, 10)
    full = resize(x, shape)  # shrinking, growing and equal axes
    for support in [
        (slice(2, 5), slice(0, 3), slice(9, 10)),
        (slice(0, 9), slice(0, 14), slice(0, 10)),
    ]:
        window = window_for(support, x.shape[1:], shape, shape)
        got = resize_window(x, shape, window)
        torch.testing.assert_close(got, full[(Ellipsis, *window)], atol=1e-5, rtol=1e-5)
        # outside the window no output voxel reads the support: zeroing the rest changes nothing
        y = torch.zeros_like(x)
        y[(Ellipsis, *support)] = x[(Ellipsis, *support)]
        outside = resize(y, shape).clone()
        outside[(Ellipsis, *window)] = 0
        assert float(outside.abs().max()) == 0.0


def test_fine_scan_is_pooled_before_the_heavy_steps_and_labelled_on_its_grid(tmp_path, monkeypatch):
    import nibabel as nib
    from test_predict import HalfNet

    from lofihippseg.inference import predictor as predictor_mod
    from lofihippseg.inference import regrid
    from lofihippseg.inference.api import predict

    coarse = synthetic_head((60, 54, 48), spread=0.45)
    fine = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)  # the same head at 0.5 mm
    affine_1, affine_05 = np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([0.5, 0.5, 0.5, 1.0])
    affine_05[:3, 3] = -0.25  # the same field of view
    one = write_nifti(tmp_path / "one.nii.gz", coarse, affine_1)
    half = write_nifti(tmp_path / "half.nii.gz", fine, affine_05)
    model = with_grid(fake_model(HalfNet()), 1.5)
    seen = []
    original = predictor_mod.crop_and_normalise

    def recording(data, **kw):
        seen.append(data.shape)
        return original(data, **kw)

    monkeypatch.setattr(predictor_mod, "crop_and_normalise", recording)
    pred = Predictor(model, settings(roi="off")).predict_volume(load_image(half))
    assert seen == [(40, 36, 32)]  # cropped and normalised on 3x3x3 blocks, not 0.5 mm voxels
    assert pred.info["pooled_voxels"] == [3, 3, 3] and pred.info["grid_spacing_mm"] == [1.5] * 3
    assert pred.labels.shape == fine.shape
    # the same structures as at 1 mm, in the same place
    ref = Predictor(model, settings(roi="off")).predict_volume(load_image(one))
    up = ref.labels.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    for side in (1, 2):
        a, b = up == side, pred.labels == side
        assert a.sum() > 1000 and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85
        np.testing.assert_allclose(np.argwhere(b).mean(0), np.argwhere(a).mean(0), atol=2.0)
    # the window changes nothing: resampling every voxel gives the same label map
    monkeypatch.setattr(
        regrid, "support_box", lambda maps, floor: tuple(slice(0, n) for n in maps[0].shape[-3:])
    )
    whole = Predictor(model, settings(roi="off")).predict_volume(load_image(half))
    np.testing.assert_array_equal(whole.labels, pred.labels)
    # written on exactly the input's grid
    predict(half, tmp_path / "out", model, settings(roi="off", qc=False), progress=False)
    written = nib.load(str(tmp_path / "out" / "half_hipp.nii.gz"))
    assert written.shape == fine.shape and np.array_equal(
        written.affine, nib.load(str(half)).affine
    )
    np.testing.assert_array_equal(np.asarray(written.dataobj), pred.labels)
