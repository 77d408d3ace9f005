"""bfloat16 networks on CPUs that compute it natively: the plan's rule, the copies, the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lofihippseg.inference import plan as plan_mod
from lofihippseg.inference.model_loading import DEFAULT_MODEL, load_model
from lofihippseg.inference.predictor import Predictor
from lofihippseg.inference.settings import PredictSettings
from lofihippseg.io.nifti import load_image, load_label
from lofihippseg.models.fold import fold_batch_norm
from lofihippseg.models.onednn import prefer_onednn
from lofihippseg.models.precision import AtPrecision, at_precision, cpu_bfloat16_native
from lofihippseg.models.vnet import VNet

EXAMPLE = (
    Path(__file__).resolve().parents[1]
    / "src/lofihippseg/data/examples/synthetic_lowfield_example.nii.gz"
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / (np.sum(a) + np.sum(b)))


native = pytest.mark.skipif(
    not cpu_bfloat16_native(), reason="this CPU has no native bfloat16 (predict uses float32)"
)


def test_the_plan_uses_bfloat16_only_on_a_native_cpu_and_never_for_the_released_recipe(
    monkeypatch,
):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(plan_mod, "cpu_bfloat16_native", lambda: True)
    assert plan_mod._precision(True, cpu) == "bfloat16"
    assert plan_mod._precision(False, cpu) == "float32"  # --no-amp
    assert plan_mod._precision(True, cpu, released=True) == "float32"
    assert plan_mod._precision(True, cuda) == "float16"
    monkeypatch.setattr(plan_mod, "cpu_bfloat16_native", lambda: False)
    assert plan_mod._precision(True, cpu) == "float32"


def test_plain_avx512_without_bfloat16_instructions_stays_float32(monkeypatch):
    from lofihippseg.models import precision

    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"})
    assert not cpu_bfloat16_native()  # oneDNN would emulate it
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert cpu_bfloat16_native()
    monkeypatch.setattr(precision, "_cpu_flags", set)  # flags unreadable: float32
    assert not cpu_bfloat16_native()


@native
def test_a_bfloat16_copy_computes_nearly_the_same_and_leaves_the_original_alone():
    torch.manual_seed(0)
    net = prefer_onednn(fold_batch_norm(VNet(n_filters=4).eval()))
    copy = at_precision(net, torch.bfloat16)
    assert isinstance(copy, AtPrecision) and copy.net is not net
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(p.dtype == torch.bfloat16 for p in copy.net.parameters())
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.inference_mode():
        exact, fast = torch.sigmoid(net(x)), torch.sigmoid(copy(x))
    assert fast.dtype == torch.float32
    assert float((exact - fast).abs().max()) < 0.05
    assert at_precision(net, torch.float32) is net
    convless = nn.Sequential(nn.Linear(2, 2))
    assert at_precision(convless, torch.bfloat16) is convless  # nothing to gain


@native
@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"no packaged model at {DEFAULT_MODEL}")
def test_the_shipped_model_in_bfloat16_segments_the_example_as_float32_does():
    model = load_model()
    vol = load_image(EXAMPLE)
    fast = Predictor(model, PredictSettings(device="cpu"))
    assert fast.plan.precision == "bfloat16" and fast.describe()["precision"] == "bfloat16"
    exact = Predictor(model, PredictSettings(device="cpu", amp=False))  # same model afterwards
    assert exact.plan.precision == "float32"
    truth = load_label(EXAMPLE.with_name(EXAMPLE.name.replace(".nii", "_hipp.nii")), vol).data
    a, b = exact.predict_volume(vol).labels, fast.predict_volume(vol).labels
    for side in (1, 2):  # a 1.8 mm scan: a few hundred voxels a side, each one counts
        assert dice(a == side, b == side) > 0.9
        assert abs(dice(a == side, truth == side) - dice(b == side, truth == side)) < 0.03
    assert all(p.dtype == torch.float32 for p in model.refiner.parameters())


@native
def test_training_autocasts_to_bfloat16_and_keeps_its_losses_in_float32():
    from lofihippseg.models.precision import autocast_dtype, precision_name
    from lofihippseg.training import distributed as D
    from lofihippseg.training.config import TrainConfig
    from lofihippseg.training.loop import _build
    from lofihippseg.training.steps import train_step

    assert autocast_dtype("cpu") is torch.bfloat16 and autocast_dtype("cpu", amp=False) is None
    assert precision_name("cpu").startswith("bfloat16")
    config = TrainConfig(synthetic="packaged", patch_size=(32,) * 3, batch_size=2, amp=True,
                         device="cpu")  # fmt: skip
    ctx = D.setup("cpu")
    torch.manual_seed(0)
    state, _ = _build(config, ctx, 1)
    image = torch.rand(2, 1, 32, 32, 32)
    label = torch.zeros(2, 32, 32, 32, dtype=torch.long)
    label[:, 8:16, 8:16, 8:16], label[:, 18:26, 8:16, 8:16] = 1, 2
    seen = []
    hook = state.vnet1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = [p.detach().clone() for p in state.vnet1.parameters()]
    out = train_step(state, {"image": image, "label": label}, config.loss, ctx, amp=True)
    hook.remove()
    # the network ran in bfloat16 (then once more in float32 if that step was not finite)
    assert seen[0] == torch.bfloat16 and seen[1:] in ([], [torch.float32])
    assert all(np.isfinite(v) for k, v in out.items() if k != "lr")
    after = list(state.vnet1.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(p.dtype == torch.float32 for p in state.vnet1.parameters())  # master weights


def _tiny_bfloat16_state(monkeypatch, corrupt):
    """A 2-filter pair whose first network's bfloat16 pass is spoiled by ``corrupt(out)``."""
    from lofihippseg.training import distributed as D
    from lofihippseg.training import steps
    from lofihippseg.training.config import TrainConfig
    from lofihippseg.training.loop import _build

    monkeypatch.setattr(steps, "autocast_dtype", lambda device, amp=True: torch.bfloat16)
    config = TrainConfig(synthetic="packaged", patch_size=(16,) * 3, batch_size=2, device="cpu")
    ctx = D.setup("cpu")
    torch.manual_seed(0)
    state, _ = _build(config.replace(model=config.model.__class__(n_filters=2)), ctx, 1)
    original = state.vnet1.forward

    def spoiled(x):
        out = original(x)
        return corrupt(out) if torch.is_autocast_enabled("cpu") else out

    state.vnet1.forward = spoiled
    return steps, state, config, ctx


def _nan_output(out):  # what a tiny network's bfloat16 batch statistics can do
    return out * float("nan")


def _nan_gradient(out):  # a finite loss whose backward overflows
    out.register_hook(lambda g: g * float("nan"))
    return out


@pytest.mark.parametrize("corrupt", [_nan_output, _nan_gradient], ids=["loss", "gradient"])
def test_a_non_finite_bfloat16_step_is_recomputed_in_float32(monkeypatch, caplog, corrupt):
    steps, state, config, ctx = _tiny_bfloat16_state(monkeypatch, corrupt)
    batch = {"image": torch.rand(2, 1, 16, 16, 16), "label": torch.zeros(2, 16, 16, 16).long()}
    with caplog.at_level("WARNING"):
        out = steps.train_step(state, batch, config.loss, ctx, amp=True)
    assert np.isfinite(out["loss"]) and "recomputed in float32" in caplog.text
    assert all(torch.isfinite(p).all() for p in state.vnet1.parameters())
