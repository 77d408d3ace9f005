"""The hippocampus localiser: coarse grids, its training data, training, and bundles."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from conftest import write_nifti

from lofihippseg.inference.model_loading import load_model
from lofihippseg.io.datasets import Case
from lofihippseg.models.registry import LocaliserSpec, ModelSpec, build_vnet, bundle_dict
from lofihippseg.preprocessing.resample import coarse_shape, coarse_targets, to_coarse_grid
from lofihippseg.training.localiser import (
    CoarseCase,
    LocaliserConfig,
    place,
    prepare_case,
    sample_batch,
    train_localiser,
)


def head_with_hippocampi(seed: int, shape=(48, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid 'head' with two brighter blobs: label 1 at low x (left, the larger),
    label 2 at high x (right)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    image = np.where((grid**2).sum(0) < 0.8, 100.0, 0.0) + rng.normal(0, 2, shape)
    image = np.clip(image, 0, None)
    label = np.zeros(shape, np.int16)
    label[10:18, 16:24, 16:22] = 1
    label[32:36, 16:24, 16:22] = 2
    image[label > 0] = 200.0
    return image.astype(np.float32), label


def test_coarse_grid_keeps_the_field_of_view():
    assert coarse_shape((159, 231, 195), (1.0, 1.0, 1.0), 4.0) == (40, 58, 49)
    assert coarse_shape((80, 115, 98), (2.0, 2.0, 2.0), 4.0) == (40, 58, 49)
    volume = torch.zeros(40, 40, 20)
    volume[:20] = 1.0
    coarse = to_coarse_grid(volume, (1.0, 1.0, 2.0), 4.0)
    assert coarse.shape == (10, 10, 10)
    assert float(coarse[:5].min()) == 1.0 and float(coarse[5:].max()) == 0.0  # mean is kept
    label = np.zeros((8, 8, 8), np.int16)
    label[:2, :4, :4] = 2
    fraction = coarse_targets(label, (1, 1, 1), 4.0)
    assert float(fraction[1, 0, 0, 0]) == 0.5 and float(fraction[0].max()) == 0.0


def test_batches_flip_left_right_with_the_sides_swapped():
    image, label = head_with_hippocampi(0)
    case = CoarseCase(
        "c",
        to_coarse_grid(torch.from_numpy(image / image.max()), (1, 1, 1), 2.0),
        (coarse_targets(label, (1, 1, 1), 2.0) > 0.25).float(),
    )
    config = LocaliserConfig(size=(32, 32, 32), batch_size=16)
    images, targets = sample_batch([case], config, np.random.default_rng(0))
    assert images.shape == (16, 1, 32, 32, 32) and targets.shape == (16, 2, 32, 32, 32)
    xs = torch.arange(32.0)
    flipped = 0
    for image, target in zip(images, targets, strict=True):
        centre = [float((target[c].sum((1, 2)) * xs).sum() / target[c].sum()) for c in (0, 1)]
        assert centre[0] < centre[1]  # left (channel 0) always at lower x than right
        for c in (0, 1):  # the image moved with its targets: the blobs are under them
            assert float(image[0][target[c] > 0].min()) > 0.9
        flipped += int(target[0].sum() < target[1].sum())  # the larger (left) blob went right
    assert 0 < flipped < 16  # both flipped and unflipped heads were drawn
    assert images.min() >= 0
    big = torch.ones(1, 40, 8, 8)
    assert place(big, (32, 8, 8), np.random.default_rng(1)).shape == (1, 32, 8, 8)


def test_train_resume_and_bundle(tmp_path):
    cases = []
    for i in range(3):
        image, label = head_with_hippocampi(i)
        cases.append(Case(f"c{i}", write_nifti(tmp_path / f"c{i}.nii.gz", image),
                          write_nifti(tmp_path / f"c{i}_hipp.nii.gz", label)))  # fmt: skip
    fine = ModelSpec(n_filters=4)
    spec = LocaliserSpec(n_filters=2, mm=2.0)
    prepared = prepare_case(cases[0], fine, spec, 0.25)
    assert prepared.image.shape == (24, 20, 20) and prepared.target[0].sum() > 0
    config = LocaliserConfig(size=(32, 32, 32), batch_size=2, iterations=2, val_every=1)
    logs: list[str] = []
    out = train_localiser(cases[:2], cases[2:], tmp_path / "loc", fine, spec, config, logs.append)
    assert out.is_file() and "iteration 2:" in logs[-1]
    resumed: list[str] = []
    config = LocaliserConfig(size=(32, 32, 32), batch_size=2, iterations=3, val_every=1)
    train_localiser(cases[:2], cases[2:], tmp_path / "loc", fine, spec, config, resumed.append)
    assert resumed[0] == "resumed at iteration 2" and "iteration 3:" in resumed[-1]

    bundle = tmp_path / "model.pt"
    torch.save(
        bundle_dict(fine, build_vnet(fine).state_dict(), build_vnet(fine).state_dict()), bundle
    )
    add_to_bundle = importlib.import_module("lofihippseg.recipe.localiser").add_to_bundle
    add_to_bundle(tmp_path / "loc" / "localiser.pt", bundle)
    model = load_model(str(bundle))
    assert model.localiser is not None and model.localiser.spec == spec
    probs = model.localiser.probabilities(torch.rand(48, 40, 40), (1, 1, 1), torch.device("cpu"))
    assert probs.shape == (2, 24, 20, 20)

    # a run fine-tuned from that bundle keeps its localiser; an unreadable init1 only loses it
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(torch.load(bundle, weights_only=True) | {"localiser": None},
               run / "checkpoints" / "last.pt")  # fmt: skip
    config = {"model": {"n_filters": 4}, "init1": str(bundle)}
    (run / "config.json").write_text(json.dumps(config))
    assert load_model(str(run)).localiser is not None
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    (run / "config.json").write_text(json.dumps(config | {"init1": str(tmp_path / "broken.pt")}))
    assert load_model(str(run)).localiser is None


def test_bad_localiser_entry_is_a_clear_error(tmp_path):
    from lofihippseg.errors import LoFiError

    fine = ModelSpec(n_filters=4)
    data = bundle_dict(fine, build_vnet(fine).state_dict(), build_vnet(fine).state_dict())
    data["localiser"] = {"spec": {"n_filters": 2, "mm": -1}, "state": {}}
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(LoFiError, match="localiser mm must be a positive number"):
        load_model(str(tmp_path / "m.pt"))
    data["localiser"] = {"spec": {"n_filters": 2}, "state": {"x": torch.zeros(1)}}
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(LoFiError, match="localiser.*do not fit"):
        load_model(str(tmp_path / "m.pt"))
