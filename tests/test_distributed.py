"""DDP on CPU: 2 gloo processes with half the batch each == 1 process with the whole batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from training_data import make_lisa_dataset, small_config

from lofihippseg.training import distributed as D
from lofihippseg.training import loop
from lofihippseg.training.checkpoint import load_checkpoint
from lofihippseg.training.data import TrainingSamples, collect_cases
from lofihippseg.training.losses import LossConfig
from lofihippseg.training.steps import train_step

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The critic on every voxel: a voxel sample of half a batch cannot equal one of the whole batch,
# and this test checks that DDP averages gradients exactly.
EXACT = LossConfig(critic_fraction=1.0)


def global_batch(config, n: int = 4) -> dict[str, torch.Tensor]:
    cases, _ = collect_cases(config)
    ds = TrainingSamples(cases, config)
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def freeze_batchnorm(state) -> None:
    """BN in eval mode: per-process batch statistics would otherwise differ from one process."""
    for net in (state.vnet1, state.vnet2, state.critic):
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def one_step(config, batch, ctx) -> dict[str, torch.Tensor]:
    state, _ = loop._build(config, ctx, n_train=3)
    freeze_batchnorm(state)
    train_step(state, batch, config.loss, ctx)
    out = {f"vnet1.{k}": v for k, v in D.unwrap(state.vnet1).state_dict().items()}
    out |= {f"vnet2.{k}": v for k, v in D.unwrap(state.vnet2).state_dict().items()}
    out |= {f"critic.{k}": v for k, v in state.critic.state_dict().items()}
    return out


def _worker(rank: int, world: int, data: str, out: str, ports: tuple[int, int]) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    config = small_config(Path(data), Path(out), use_augmentation=False, loss=EXACT)
    # 1) one step on this process's half of the global batch
    os.environ["MASTER_PORT"] = str(ports[0])
    ctx = D.setup("cpu")
    half = config.batch_size * 2 // world
    batch = {k: v[rank * half : (rank + 1) * half] for k, v in global_batch(config).items()}
    weights = one_step(config.replace(batch_size=4), batch, ctx)
    if rank == 0:
        torch.save(weights, Path(out) / "ddp_step.pt")
    D.teardown(ctx)
    # 2) the whole training loop under DDP
    os.environ["MASTER_PORT"] = str(ports[1])
    loop.train(config.replace(name="ddp", iterations=2))


def test_two_processes_match_one_process_and_train(tmp_path):
    data = make_lisa_dataset(tmp_path / "lisa", n_cases=4, size=28)
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, str(data), str(out), (free_port(), free_port())), nprocs=2)

    config = small_config(data, out, use_augmentation=False, batch_size=4, loss=EXACT)
    single = one_step(config, global_batch(config), D.DistContext())
    ddp = torch.load(out / "ddp_step.pt", weights_only=True)
    reference = one_step(
        config.replace(lr=0.0, critic_lr=0.0), global_batch(config), D.DistContext()
    )
    for key in single:  # compare the updates of the one step
        if not single[key].is_floating_point():
            continue
        step1, step2 = single[key] - reference[key], ddp[key] - reference[key]
        scale = float(step1.abs().max())
        assert float((step1 - step2).abs().max()) <= 1e-3 * scale + 1e-8, key
    moved = max(float((single[k] - reference[k]).abs().max()) for k in single)
    assert moved > 1e-4  # the step really changed the weights

    ckpt = load_checkpoint(out / "ddp" / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 2
    assert not any(k.startswith("module.") for k in ckpt["vnet1"])
    assert (out / "ddp" / "metrics.csv").exists()
