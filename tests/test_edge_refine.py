"""Edge refinement: the outline follows a visible edge and stays put where there is none."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, write_nifti
from scipy import ndimage
from test_predict import IntensityNet, fake_model, synthetic_head

from lofihippseg.errors import LoFiError
from lofihippseg.inference.edge_refine import refine_labels, refine_side
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def cube_scene(step: float, seed: int = 0, fluid: float = -0.8) -> tuple[np.ndarray, np.ndarray]:
    """A 12^3 'hippocampus' whose intensity is ``step`` above its surroundings, noise sd 0.2,
    with a second tissue ``fluid`` away from them on one face (the outside is not one class)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((32, 32, 32), bool)
    truth[10:22, 10:22, 10:22] = True
    image = rng.normal(0.0, 0.2, truth.shape)
    image[:, :, 22:] += fluid
    return image + step * truth, truth


def network_guess(mask: np.ndarray) -> np.ndarray:
    """A probability map that is 0.6 inside ``mask`` fading to 0.4 two voxels outside: a
    network sure of the location, unsure of the edge."""
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, 0.6, np.clip(0.45 - 0.05 * outside, 0.0, 1.0))


@pytest.mark.parametrize("wrong", ["too_large", "too_small"])
def test_outline_moves_to_a_visible_edge(wrong):
    image, truth = cube_scene(step=1.0)
    if wrong == "too_large":
        guess = ndimage.binary_dilation(truth, iterations=2)
    else:
        guess = ndimage.binary_erosion(truth, iterations=1)
    refined = refine_side(image, network_guess(guess), guess, 0.5, 1.0)
    assert dice(guess, truth) < 0.85
    assert dice(refined, truth) > 0.95


def test_outline_stays_where_the_edge_is_invisible():
    image, truth = cube_scene(step=0.0, fluid=0.0)  # the intensity of its neighbours
    guess = ndimage.binary_dilation(truth, iterations=1)
    refined = refine_side(image, network_guess(guess), guess, 0.5, 1.0)
    changed = int((refined ^ guess).sum())
    assert changed < 0.05 * guess.sum()


def test_no_weight_flat_image_or_tiny_mask_change_nothing():
    image, truth = cube_scene(step=1.0)
    guess = ndimage.binary_dilation(truth)
    prob = network_guess(guess)
    np.testing.assert_array_equal(refine_side(image, prob, guess, 0.5, 0.0), guess)
    np.testing.assert_array_equal(refine_side(np.ones_like(image), prob, guess, 0.5, 1.0), guess)
    tiny = np.zeros_like(guess)
    tiny[5, 5, 5:8] = True
    np.testing.assert_array_equal(refine_side(image, prob, tiny, 0.5, 1.0), tiny)


def test_a_confident_network_is_never_overruled():
    image, truth = cube_scene(step=1.0)
    guess = ndimage.binary_dilation(truth, iterations=2)
    sure = np.where(guess, 0.999, 0.001)  # logit +-6.9, beyond what the image may add
    np.testing.assert_array_equal(refine_side(image, sure, guess, 0.5, 1.0), guess)


def test_refine_labels_keeps_sides_apart_and_counts_changes():
    image, truth = cube_scene(step=1.0)
    right_truth = np.roll(truth, -9, axis=0) & ~truth  # touching the left one
    image = image + 1.0 * right_truth
    labels = np.zeros(truth.shape, np.uint8)
    labels[ndimage.binary_dilation(truth)] = 1
    labels[ndimage.binary_dilation(right_truth) & (labels == 0)] = 2
    fused = np.stack([network_guess(labels == 1), network_guess(labels == 2)])
    refined, changes = refine_labels(image, fused, labels, 0.5, 1.0)
    assert set(np.unique(refined)) <= {0, 1, 2}
    for value, side in ((1, "left"), (2, "right")):
        grew = int((refined == value).sum()) - int((labels == value).sum())
        assert grew == changes[side]["added"] - changes[side]["removed"]
    assert dice(refined == 1, truth) > dice(labels == 1, truth)
    assert changes["left"]["removed"] > 0


def test_result_does_not_depend_on_how_tightly_the_window_is_cut():
    image, truth = cube_scene(step=1.0)
    labels = ndimage.binary_dilation(truth, iterations=2).astype(np.uint8)
    fused = np.stack([network_guess(labels == 1), np.zeros(labels.shape)])
    fused[0][fused[0] < 0.3] = 0.0  # a network's window holds what can still be labelled
    whole, _ = refine_labels(image, fused, labels, 0.5, 1.0)
    window = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(fused[0]))
    assert any(w.stop - w.start < n - 6 for w, n in zip(window, image.shape, strict=True))
    inside, changes = refine_labels(
        image, fused[(slice(None), *window)], labels[window], 0.5, 1.0, window=window
    )
    np.testing.assert_array_equal(inside, whole[window])
    assert whole.sum() == whole[window].sum()  # nothing outside the window is labelled
    assert changes["left"]["removed"] > 0


def scan(tmp_path, blob=1.0):
    return load_image(write_nifti(tmp_path / "head.nii.gz", synthetic_head(blob=blob)))


def test_predictor_refines_only_when_asked(tmp_path):
    vol = scan(tmp_path)
    model = fake_model(IntensityNet())
    off = Predictor(model, PredictSettings(device="cpu", edge_weight=0.0, roi="off"))
    on = Predictor(model, PredictSettings(device="cpu", edge_weight=1.0, roi="off"))
    a, b = off.predict_volume(vol), on.predict_volume(vol)
    assert "edge_refinement" not in a.info
    assert set(b.info["edge_refinement"]) == {"left", "right"}
    assert b.info["edge_weight"] == 1.0 and a.info["edge_weight"] == 0.0
    # the blobs' edges are sharp, so the networks' outline already lies on them
    for value in (1, 2):
        assert dice(a.labels == value, b.labels == value) > 0.95
    assert b.labels.shape == vol.data.shape


def test_released_recipe_never_refines_by_default():
    model = fake_model(IntensityNet(), recipe="released")
    assert Predictor(model, PredictSettings(device="cpu")).plan.edge_weight == 0.0
    assert Predictor(model, PredictSettings(device="cpu", edge_weight=2.0)).plan.edge_weight == 2.0


def test_cli_edge_weight_reaches_the_sidecar_and_bad_values_are_one_line(tmp_path, capsys):
    path = write_nifti(tmp_path / "head.nii.gz", synthetic_head())
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", path, "-o", out, "--edge-weight", "-2"], capsys)
    assert code == 2 and "--edge-weight" in err and "Traceback" not in err
    assert not out.exists()
    code, _, err = run_cli(["predict", path, "-o", out, "--edge-weight", "0.5", "--no-qc"], capsys)
    assert code == 0, err
    sidecar = json.loads(next(out.glob("*.json")).read_text())
    assert '"edge_weight": 0.5' in json.dumps(sidecar)
    with pytest.raises(LoFiError, match="edge-weight"):
        PredictSettings(edge_weight=-1.0)


def test_a_side_touching_the_volume_edge_is_refined_without_error():
    image, truth = cube_scene(step=1.0)
    image, truth = image[10:], truth[10:]  # the cube now starts at the first slice
    guess = ndimage.binary_dilation(truth, iterations=1)
    refined = refine_side(image, network_guess(guess), guess, 0.5, 1.0)
    assert refined.shape == guess.shape
    assert dice(refined, truth) > dice(guess, truth)
