"""Checks that need a CUDA GPU (skipped without one; ``benchmarks/gpu_check.sh`` runs them)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_sampled_critic_step_with_amp_on_the_gpu():
    from lofihippseg.training import loop
    from lofihippseg.training.config import TrainConfig
    from lofihippseg.training.distributed import DistContext
    from lofihippseg.training.steps import train_step

    device = torch.device("cuda")
    config = TrainConfig(synthetic="packaged", patch_size=(32, 32, 32), batch_size=2, amp=True)
    ctx = DistContext(device=device)
    state, _ = loop._build(config, ctx, n_train=4)
    label = torch.zeros(2, 32, 32, 32, dtype=torch.long)
    label[:, 8:14, 8:24, 8:24], label[:, 18:24, 8:24, 8:24] = 1, 2
    batch = {"image": torch.rand(2, 1, 32, 32, 32), "label": label}
    sampler = torch.Generator(device=device).manual_seed(0)
    before = state.critic.conv1[0].weight.detach().clone()
    for _ in range(3):
        out = train_step(state, batch, config.loss, ctx, amp=True, generator=sampler)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert not torch.equal(before, state.critic.conv1[0].weight.detach())


def test_gate_table_on_the_gpu_matches_the_full_critic():
    from lofihippseg.models.critic import Critic
    from lofihippseg.training.critic_sampling import gate_logits, random_index

    torch.manual_seed(0)
    critic = Critic().cuda().train()
    probs = torch.sigmoid(torch.randn(2, 2, 40, 40, 40, device="cuda") * 4)
    with torch.no_grad():
        full = critic(probs)
    approx = gate_logits(critic, probs, random_index(probs, 0.05))
    agree = ((torch.sigmoid(full) > 0.2) == (torch.sigmoid(approx) > 0.2)).float().mean()
    assert agree > 0.99


def test_prediction_on_the_gpu_matches_the_cpu(tmp_path):
    import numpy as np

    from lofihippseg.inference.settings import PredictSettings
    from lofihippseg.io.nifti import load_label
    from lofihippseg.workflows.example import run_example

    cpu = run_example(tmp_path / "cpu", settings=PredictSettings(device="cpu"))
    gpu = run_example(tmp_path / "gpu", settings=PredictSettings(device="cuda"))
    a = load_label(cpu.report.results[0].outputs["labels"]).data
    b = load_label(gpu.report.results[0].outputs["labels"]).data
    assert np.mean(a == b) > 0.999
