"""VNet/critic compatibility with the released checkpoints, and safe checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import release_module, shared_path

from lofihippseg.errors import LoFiError
from lofihippseg.models.critic import Critic
from lofihippseg.models.registry import (
    ModelSpec,
    build_critic,
    build_vnet,
    bundle_dict,
    infer_n_filters,
    load_weights,
    safe_torch_load,
)
from lofihippseg.models.vnet import VNet


def _manifest() -> dict:
    path = shared_path("reference", "released_state_dict_manifest.json")
    return json.loads(path.read_text())


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _from_manifest(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
        for k, s in shapes.items()
    }


def test_state_dict_keys_and_shapes_match_the_release():
    manifest = _manifest()
    assert _shapes(build_vnet(ModelSpec.released())) == manifest["vnet"]
    assert _shapes(build_critic()) == manifest["critic"]
    # Same order of keys too (a plain state dict written by the released code).
    assert list(build_vnet().state_dict()) == list(manifest["vnet"])


def test_state_dict_built_from_manifest_loads_strictly():
    manifest = _manifest()
    vnet, critic = VNet(n_filters=16), Critic()
    state = _from_manifest(manifest["vnet"])
    load_weights(vnet, state, "released.pth")
    for key, value in vnet.state_dict().items():
        assert torch.equal(value, state[key]), key
    critic_state = _from_manifest(manifest["critic"], seed=1)
    load_weights(critic, critic_state, "critic.pth")
    assert torch.equal(critic.state_dict()["conv4.0.weight"], critic_state["conv4.0.weight"])
    # DDP-prefixed keys load too; width is read back from the weights.
    load_weights(VNet(n_filters=16), {f"module.{k}": v for k, v in state.items()}, "ddp.pth")
    assert infer_n_filters(state) == 16


def test_parameter_count_of_released_width():
    assert sum(p.numel() for p in VNet(n_filters=16).parameters()) == 9_448_866


@pytest.mark.parametrize("n_filters", [4, 8, 16])
@pytest.mark.parametrize("shape", [(16, 16, 16), (32, 48, 16)])
def test_vnet_output_shape(n_filters, shape):
    net = VNet(n_channels=1, n_classes=2, n_filters=n_filters).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, *shape))
    assert out.shape == (1, 2, *shape)
    assert torch.isfinite(out).all()


def test_critic_is_per_voxel():
    critic = Critic().eval()
    probs = torch.rand(2, 2, 5, 6, 7)
    with torch.no_grad():
        full = critic(probs)
        one = critic(probs[:, :, 2:3, 3:4, 4:5])
    assert full.shape == probs.shape
    torch.testing.assert_close(full[:, :, 2:3, 3:4, 4:5], one)


class _Payload:
    """Something that is not plain weights."""

    def __init__(self) -> None:
        self.x = 1


def _payload_function() -> None:
    return None


@pytest.mark.parametrize(
    "obj", [_Payload(), {"fn": _payload_function}, {"w": torch.ones(2), "o": _Payload()}]
)
def test_safe_torch_load_refuses_code_carrying_pickles(tmp_path, obj):
    path = tmp_path / "evil.pt"
    torch.save(obj, path)
    with pytest.raises(LoFiError, match="refused to load") as exc:
        safe_torch_load(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_safe_torch_load_corrupt_truncated_and_missing(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(VNet(n_filters=4).state_dict(), good)
    assert set(safe_torch_load(good)) == set(VNet(n_filters=4).state_dict())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    for path in (truncated, garbage, tmp_path / "missing.pt"):
        with pytest.raises(LoFiError) as exc:
            safe_torch_load(path)
        assert "\n" not in str(exc.value) and path.name in str(exc.value)


def test_load_weights_rejects_foreign_state_dicts():
    net = VNet(n_filters=8)
    cases = [
        {"fc.weight": torch.ones(3, 3), "fc.bias": torch.ones(3)},  # another model
        VNet(n_filters=4).state_dict(),  # right keys, wrong width
        [torch.ones(1)],  # not a dict
    ]
    for state in cases:
        with pytest.raises(LoFiError) as exc:
            load_weights(net, state, "foreign.pth")
        message = str(exc.value)
        assert message.startswith("foreign.pth") and "\n" not in message
    with pytest.raises(LoFiError):
        infer_n_filters({"fc.weight": torch.ones(1)})


def test_widening_keeps_what_the_networks_compute(tmp_path):
    widen_main = release_module("widen").main
    from lofihippseg.inference.model_loading import load_model
    from lofihippseg.models.registry import LocaliserSpec, build_localiser

    torch.manual_seed(0)
    nets = [VNet(n_filters=4) for _ in range(2)]
    for net in nets:  # non-trivial batch-norm statistics
        net.train()
        for _ in range(2):
            net(torch.randn(2, 1, 32, 32, 32))
    bundle = bundle_dict(ModelSpec(n_filters=4, grid_mm=1.5), *(n.state_dict() for n in nets))
    bundle["localiser"] = {
        "spec": {"n_filters": 4},
        "state": build_localiser(LocaliserSpec(n_filters=4)).state_dict(),
    }
    torch.save(bundle, tmp_path / "narrow.pt")
    assert widen_main([str(tmp_path / "narrow.pt"), str(tmp_path / "wide.pt"), "--noise", "0"]) == 0
    wide = load_model(str(tmp_path / "wide.pt"))
    assert wide.spec.n_filters == 8 and wide.spec.grid_mm == 1.5
    assert wide.localiser is not None and wide.localiser.spec.n_filters == 4
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for narrow, widened in zip(nets, (wide.vnet1, wide.vnet2), strict=True):
            torch.testing.assert_close(widened.eval()(x), narrow.eval()(x), atol=1e-5, rtol=1e-4)
    # the default noise makes the copies differ, but only slightly
    assert widen_main([str(tmp_path / "narrow.pt"), str(tmp_path / "noisy.pt")]) == 0
    noisy = load_model(str(tmp_path / "noisy.pt"))
    with torch.no_grad():
        diff = (noisy.vnet1.eval()(x) - nets[0](x)).abs().max()
    assert 0 < diff < 0.5
    assert widen_main([str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 1


def test_folded_batch_norm_gives_the_same_probabilities():
    from lofihippseg.models.fold import fold_batch_norm
    from lofihippseg.models.vnet import VNet

    torch.manual_seed(0)
    net = VNet(n_filters=4)
    for m in net.modules():  # non-trivial statistics, as a trained network has
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.rand(2, 1, 16, 32, 16)
    with torch.no_grad():
        before = net(x)
        after = fold_batch_norm(net)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(VNet(n_filters=4).train())
