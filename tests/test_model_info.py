"""``lofihippseg model-info``: what a bundle holds and its provenance, readable and as JSON."""

from __future__ import annotations

import json

import torch
from conftest import run_cli

from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model
from lofihippseg.models.registry import ModelSpec, build_vnet, bundle_dict

PROVENANCE = {
    "format": "lofihippseg-provenance-1",
    "recipe": {"name": "toy-recipe", "run": {"profile": "smoke", "scale": 1.0,
                                              "batch_scale": 1, "device": "cpu"}},
    "git": {"commit": "a" * 40, "dirty": False},
    "libraries": {"python": "3.11.7", "torch": "2.13.0"},
    "threads": 1,
    "created": "2026-12-06T02:00:00Z",
    "stages": {
        "msd": {"train": [{"name": "hippocampus_001", "image_sha256": "0" * 64}], "seed": 0},
        "pair_t2": {"iterations": 4, "seed": 3031, "batch": 4, "family": "t2",
                    "timing": {"unit": "iteration", "per_unit": 2.5}},
        "quality": {"estimator": None, "note": "no estimator yet"},
    },
}  # fmt: skip


def _bundle(path, provenance=None):
    spec = ModelSpec(n_filters=2, grid_mm=1.5)
    sd = build_vnet(spec).state_dict()
    data = bundle_dict(spec, sd, sd, "t2", {"t1": (sd, sd)}, {"t1": 1.0})
    if provenance is not None:
        data["provenance"] = provenance
    torch.save(data, path)
    return path


def test_model_info_prints_the_provenance_of_a_recipe_bundle(tmp_path, capsys):
    path = _bundle(tmp_path / "m.pt", PROVENANCE)
    assert load_model(str(path)).grid_of("t1") == 1.0  # the key does not disturb loading
    code, out, err = run_cli(["model-info", path], capsys)
    assert code == 0, err
    assert "pairs t2 (1.5 mm grid), t1 (1.0 mm grid)" in out
    assert f"commit: {'a' * 40}" in out and "recipe toy-recipe (profile smoke" in out
    assert "pair_t2: iterations 4, seed 3031, batch 4, family t2, 2.5 s/iteration" in out
    assert "msd: seed 0, 1 train files hashed" in out
    assert "quality: no estimator yet" in out
    code, out, _ = run_cli(["model-info", path, "--json"], capsys)
    info = json.loads(out)
    assert info["provenance"] == PROVENANCE and info["families"] == {"t2": 1.5, "t1": 1.0}


def test_model_info_says_when_a_bundle_records_no_provenance(tmp_path, capsys):
    code, out, _ = run_cli(["model-info", _bundle(tmp_path / "old.pt")], capsys)
    assert code == 0 and "provenance: none recorded" in out


def test_model_info_defaults_to_the_shipped_bundle(capsys):
    code, out, _ = run_cli(["model-info"], capsys)
    assert code == 0 and str(DEFAULT_MODEL) in out and "outline refiner" in out


def test_model_info_bad_input_is_one_line(tmp_path, capsys):
    for bad in (tmp_path / "missing.pt", tmp_path / "text.pt"):
        if bad.name == "text.pt":
            bad.write_text("not a model")
        code, out, err = run_cli(["model-info", bad], capsys)
        assert code == 2 and err.startswith("error:") and str(bad) in err
        assert err.strip().count("\n") == 0
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    code, _, err = run_cli(["model-info", tmp_path / "other.pt"], capsys)
    assert code == 2 and "not a lofihippseg model bundle" in err
