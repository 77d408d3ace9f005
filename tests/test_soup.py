"""release/soup.py: the mean of several checkpoints' networks, written as an exportable run."""

from __future__ import annotations

import pytest
import torch
from conftest import release_module

from lofihippseg.models.registry import ModelSpec, build_vnet


def checkpoint(path, seed: int) -> dict:
    torch.manual_seed(seed)
    net1, net2 = build_vnet(ModelSpec(n_filters=4)), build_vnet(ModelSpec(n_filters=4))
    ckpt = {"format": "lofihippseg-checkpoint-1", "iteration": 10 + seed, "spec": {},
            "vnet1": net1.state_dict(), "vnet2": net2.state_dict(),
            "optimiser1": {"x": 1}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return ckpt


def test_soup_averages_networks_and_drops_optimiser_state(tmp_path):
    soup = release_module("soup")
    a = checkpoint(tmp_path / "a" / "checkpoints" / "last.pt", 0)
    b = checkpoint(tmp_path / "b" / "checkpoints" / "last.pt", 1)
    (tmp_path / "a" / "config.json").write_text("{}")
    out = tmp_path / "soup"
    assert soup.main([str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    mixed = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    key = next(k for k, v in a["vnet1"].items() if v.is_floating_point() and v.ndim > 1)
    assert torch.allclose(mixed["vnet1"][key], (a["vnet1"][key] + b["vnet1"][key]) / 2)
    assert mixed["iteration"] == a["iteration"] and "optimiser1" not in mixed
    assert (out / "config.json").is_file()
    assert soup.main([str(out), str(tmp_path / "a")]) == 2  # an existing folder is refused
    assert soup.main([str(tmp_path / "new"), str(tmp_path / "missing")]) == 2


def test_soup_refuses_networks_of_different_shapes():
    soup = release_module("soup")
    with pytest.raises(ValueError, match="differ"):
        soup.average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
