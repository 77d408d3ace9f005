"""The outline refiner: cube geometry, identity at start, the window it reads, bundles, CLI."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cohort_helpers import fake_model
from conftest import run_cli, write_nifti
from test_predict import synthetic_head

from lofihippseg.errors import LoFiError
from lofihippseg.inference import refiner as rf
from lofihippseg.inference.model_loading import load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image
from lofihippseg.models.registry import ModelSpec, build_vnet, bundle_dict, half_precision


class BrightRefiner(rf.Refiner):
    """Follows the scan: 'hippocampus' where the cube's normalised intensity is high within
    5 voxels of the prior's outline."""

    def __init__(self):
        super().__init__(n_filters=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        near = torch.nn.functional.max_pool3d(x[:, 1:2], 11, stride=1, padding=5) > 0.5
        return torch.where(near, 40 * (x[:, :1] - 0.6), torch.full_like(x[:, :1], -40.0))


def ball(shape, centre, radius) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def test_cube_is_centred_on_the_side_and_padded_outside_the_scan():
    mask = ball((80, 80, 80), (10, 40, 40), 5)
    cube = rf.cube_around(mask, (1.0, 1.0, 1.0))
    assert cube.size == (64, 64, 64) and cube.start == (-22, 8, 8)
    image = np.ones((80, 80, 80), np.float32)
    part = rf.cut(image, cube)
    assert part[:22].sum() == 0 and part[22:].min() == 1  # zero outside the scan
    # 2 mm voxels: 32 of them span the cube; the 1 mm grid and back keeps a smooth blob
    cube2 = rf.cube_around(ball((40, 40, 40), (20, 20, 20), 6), (2.0, 2.0, 2.0))
    assert cube2.size == (32, 32, 32)
    blob = ball((32, 32, 32), (16, 16, 16), 6).astype(np.float32)
    up = rf.to_mm_grid(blob)
    assert tuple(up.shape) == (64, 64, 64)
    back = rf.from_mm_grid(up, cube2.size)
    assert ((back > 0.5) == (blob > 0.5)).mean() > 0.99
    assert rf.cube_around(ball((20, 20, 20), (5, 5, 5), 1), (1, 1, 1)) is None  # too small


def test_an_untrained_refiner_is_the_identity():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (70, 70, 70)).astype(np.float32)
    fused = np.zeros((2, 70, 70, 70), np.float32)
    fused[0][ball((70, 70, 70), (20, 35, 35), 6)] = 0.9
    fused[1][ball((70, 70, 70), (50, 35, 35), 5)] = 0.7
    refined, change = rf.refine_probabilities(rf.Refiner(4).eval(), image, fused, (1, 1, 1))
    np.testing.assert_allclose(refined, fused, atol=4e-4)  # log-odds clipped to +-8
    assert change == {"left": 0, "right": 0}


def test_the_refiner_reads_the_scan_beyond_the_probabilities_window():
    shape = (90, 90, 90)
    image = np.full(shape, 10.0, np.float32)
    image[ball(shape, (30, 45, 45), 9)] = 100.0  # the bright structure the refiner follows
    box = (slice(22, 38), slice(37, 53), slice(37, 53))  # a window tighter than the structure
    fused = np.zeros((2, 16, 16, 16), np.float32)
    fused[0][ball((16, 16, 16), (8, 8, 8), 4)] = 0.9
    refined, grown, change = rf.refine_window(
        BrightRefiner(), image, fused, box, (1.0, 1.0, 1.0), 0.5
    )
    assert all(g.start <= b.start and g.stop >= b.stop for g, b in zip(grown, box, strict=True))
    found = np.zeros(shape, bool)
    found[grown] = refined[0] > 0.5
    truth = ball(shape, (30, 45, 45), 9)
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    assert dice > 0.95 and change["left"] > 1000 and "right" not in change


def small_bundle(tmp_path, refiner: rf.Refiner | None):
    spec = ModelSpec(n_filters=4)
    data = bundle_dict(spec, build_vnet(spec).state_dict(), build_vnet(spec).state_dict())
    path = tmp_path / "bundle.pt"
    torch.save(data, path)
    if refiner is None:
        return path
    torch.save(refiner.state_dict(), tmp_path / "refiner.pt")
    out = tmp_path / "with_refiner.pt"
    add = importlib.import_module("lofihippseg.recipe.refiner_training").add_to_bundle
    add(tmp_path / "refiner.pt", path, out)
    return out


def test_a_bundle_carries_its_refiner_and_bad_entries_are_clear(tmp_path):
    torch.manual_seed(0)
    net = rf.Refiner(2)
    torch.nn.init.normal_(net.net.decoder1.out_conv.weight)
    path = small_bundle(tmp_path, net)
    model = load_model(str(path))
    assert model.refiner is not None
    state = model.refiner.state_dict()
    data = torch.load(path, weights_only=True)
    stored = data["refiner"]["state"]
    eight_bit = [k for k, v in stored.items() if isinstance(v, dict)]
    assert eight_bit and all(stored[k]["int8"].dtype == torch.int8 for k in eight_bit)
    for key, value in net.state_dict().items():  # 8 bits per slice for large weights, else half
        if key in eight_bit:
            step = value.reshape(value.shape[0], -1).abs().amax(1) / 127
            error = (state[key] - value).reshape(value.shape[0], -1).abs().amax(1)
            assert (error <= step / 2 + 1e-6).all(), key
        else:
            expected = value.half().float() if value.is_floating_point() else value
            torch.testing.assert_close(state[key], expected)
    assert load_model(str(small_bundle(tmp_path, None))).refiner is None
    add = importlib.import_module("lofihippseg.recipe.refiner_training").add_to_bundle
    assert not load_model(str(path)).tta  # no advice: no mirror TTA
    add(tmp_path / "refiner.pt", path, tmp_path / "tta.pt", tta=True)
    assert load_model(str(tmp_path / "tta.pt")).tta
    data["tta"] = "yes"
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(LoFiError, match="bad tta entry 'yes'"):
        load_model(str(tmp_path / "bad.pt"))
    del data["tta"]

    data["refiner"]["state"] = half_precision(net.state_dict())  # bundles before 8 bits
    torch.save(data, tmp_path / "half.pt")
    for key, value in load_model(str(tmp_path / "half.pt")).refiner.state_dict().items():
        expected = value if not value.is_floating_point() else net.state_dict()[key].half().float()
        torch.testing.assert_close(value, expected)

    data["refiner"]["state"] = dict(stored, **{eight_bit[0]: {"int8": torch.zeros(3)}})
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(LoFiError, match="bad 8-bit weights"):
        load_model(str(tmp_path / "bad.pt"))
    data["refiner"] = {"n_filters": 0, "state": {}}
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(LoFiError, match="bad refiner entry"):
        load_model(str(tmp_path / "bad.pt"))
    data["refiner"] = {"n_filters": 4, "state": data["vnet1"]}
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(LoFiError, match="refiner.*do not fit"):
        load_model(str(tmp_path / "bad.pt"))


@pytest.fixture
def head(tmp_path):
    return load_image(write_nifti(tmp_path / "head.nii.gz", synthetic_head(shape=(60, 56, 50))))


def test_predict_runs_the_refiner_when_the_model_has_one(head):
    model = fake_model()
    model.refiner = BrightRefiner()
    plain = Predictor(fake_model(), PredictSettings(device="cpu", roi="off"))
    assert plain.describe()["refiner"] is False
    base = plain.predict_volume(head)
    pred = Predictor(model, PredictSettings(device="cpu", roi="off")).predict_volume(head)
    assert pred.info["refiner"] is True and set(pred.info["refiner_change"]) == {"left", "right"}
    assert pred.labels.shape == head.data.shape
    for value in (1, 2):  # the bright blobs stay found, on their own side
        overlap = ((pred.labels == value) & (base.labels == value)).sum()
        assert overlap > 0.8 * (base.labels == value).sum()
    assert pred.fused.shape[1:] == pred.prob1.shape[1:] == tuple(b.stop - b.start for b in pred.box)
    off = Predictor(model, PredictSettings(device="cpu", roi="off", refine=False))
    assert "refiner_change" not in off.predict_volume(head).info
    released = fake_model()
    released.refiner = BrightRefiner()
    released.spec = ModelSpec(n_filters=4, recipe="released")
    assert Predictor(released, PredictSettings(device="cpu")).describe()["refiner"] is False
    with pytest.raises(LoFiError, match="has no outline refiner"):
        Predictor(fake_model(), PredictSettings(device="cpu", refine=True))


def test_edge_refinement_defaults_off_when_the_refiner_runs():
    from lofihippseg.inference.settings import DEFAULT_EDGE_WEIGHT

    model = fake_model()
    model.refiner = BrightRefiner()
    cpu = {"device": "cpu"}
    assert Predictor(model, PredictSettings(**cpu)).plan.edge_weight == 0.0
    assert (
        Predictor(model, PredictSettings(**cpu, refine=False)).plan.edge_weight
        == DEFAULT_EDGE_WEIGHT
    )
    assert Predictor(model, PredictSettings(**cpu, edge_weight=0.5)).plan.edge_weight == 0.5
    assert Predictor(fake_model(), PredictSettings(**cpu)).plan.edge_weight == DEFAULT_EDGE_WEIGHT


def test_cli_refiner_flags(tmp_path, capsys):
    scan = write_nifti(tmp_path / "in" / "a.nii.gz", synthetic_head())
    bundle = small_bundle(tmp_path, None)
    code, _, err = run_cli(
        ["predict", str(scan), "-o", str(tmp_path / "out"), "--model", str(bundle),
         "--refiner", "--device", "cpu"], capsys,
    )  # fmt: skip
    assert code != 0 and "has no outline refiner" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        ["predict", str(scan), "-o", str(tmp_path / "out"), "--model", str(bundle),
         "--no-refiner", "--device", "cpu"], capsys,
    )  # fmt: skip
    assert code == 0, err


def _cubes(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in (1, 2, 20):  # 20 is held out for the run's validation
        truth = ball((64, 64, 64), (32, 32, 32), 8)
        cubes = {
            "image0": (truth * 0.8 + rng.normal(0.1, 0.05, truth.shape)).astype(np.float16),
            "prior0": (ball((64, 64, 64), (34, 32, 32), 8) * 0.9).astype(np.float16),
            "truth0": truth.astype(np.uint8),
        }
        np.savez(folder / f"random_{i:05d}.npz", **cubes)
    return folder


@pytest.mark.parametrize("amp", [True, False])
def test_the_refiner_trains_in_bfloat16_where_native_and_float32_without_amp(
    tmp_path, monkeypatch, amp
):
    from lofihippseg.recipe import refiner_training as rt

    seen = []
    real_autocast = torch.autocast

    def spy(device_type, dtype=None, enabled=True):
        seen.append(dtype if enabled else None)
        return real_autocast(device_type, dtype=dtype, enabled=enabled)

    monkeypatch.setattr(rt.torch, "autocast", spy)
    monkeypatch.setattr("lofihippseg.models.precision.cpu_bfloat16_native", lambda: True)
    lines = []
    out = tmp_path / "run"
    rt.train_refiner([_cubes(tmp_path / "cubes")], out, 2, batch=2, filters=2, every=2,
                     log=lines.append, amp=amp)  # fmt: skip
    assert seen == [torch.bfloat16 if amp else None] * 2
    assert any(("bfloat16" if amp else "float32") in line for line in lines)
    state = torch.load(out / "refiner_2.pt", weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in state.values())  # the weights stay float32
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_train_refiner_trains_and_resumes(tmp_path):
    data = _cubes(tmp_path / "cubes")
    train = importlib.import_module("lofihippseg.recipe.refiner_training").main
    out = tmp_path / "run"
    args = ["--data", str(data), "--out", str(out), "--filters", "2", "--batch", "2"]
    argv = sys.argv
    try:
        sys.argv = ["train_refiner", *args, "--iterations", "2", "--every", "1"]
        train()
        assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 2
        sys.argv = ["train_refiner", *args, "--iterations", "3", "--every", "1"]
        train()
    finally:
        sys.argv = argv
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 3
    assert (out / "refiner_1.pt").is_file() and (out / "refiner_3.pt").is_file()


def test_a_widened_refiner_starts_as_the_narrow_one():
    """``train_refiner --widen-from``: the wider network computes what the narrow one did (its
    new channels feed the old through zeros), in training and evaluation mode, and it learns."""
    widen = importlib.import_module("lofihippseg.recipe.refiner_training").widen
    torch.manual_seed(0)
    narrow = rf.Refiner(2)
    for p in narrow.parameters():  # a trained-looking narrow net (its last layer not zero)
        p.data.normal_(0, 0.3)
    wide = rf.Refiner(4)
    widen(wide, narrow.state_dict())
    x = torch.rand(2, 3, 16, 16, 16)
    for mode in (True, False):
        narrow.train(mode)
        wide.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(wide(x), narrow(x))
    wide.train()
    wide(x).sum().backward()
    grad = wide.net.decoder1.out_conv.weight.grad[0, 2:]  # the new channels' way to the output
    assert grad.abs().sum() > 0
