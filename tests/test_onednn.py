"""oneDNN convolutions for single CPU volumes: same outputs, training untouched."""

from __future__ import annotations

import torch
from torch import nn

from lofihippseg.models.onednn import prefer_onednn
from lofihippseg.models.vnet import VNet


def test_same_outputs_and_state_dict():
    torch.manual_seed(0)
    plain = VNet(n_filters=4).eval()
    fast = VNet(n_filters=4).eval()
    fast.load_state_dict(plain.state_dict())
    prefer_onednn(prefer_onednn(fast))  # idempotent
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(1, 1, 32, 48, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)


def test_routes_only_cpu_float_inference_without_gradients(monkeypatch):
    calls = []
    real = torch.ops.aten.mkldnn_convolution

    class Spy:
        def __call__(self, *args):
            calls.append(args[0].shape)
            return real(*args)

    monkeypatch.setattr(torch.ops.aten, "mkldnn_convolution", Spy())
    conv = prefer_onednn(nn.Sequential(nn.Conv3d(1, 2, 3, padding=1)))[0]
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        conv(x)
    assert len(calls) == 1
    out = conv(x.requires_grad_())  # training: PyTorch's own path, gradients flow
    out.sum().backward()
    assert len(calls) == 1 and conv.weight.grad is not None
    with torch.no_grad():
        conv.double()(x.double())  # not float32: PyTorch's own path
    assert len(calls) == 1
