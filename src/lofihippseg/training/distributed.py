"""Distributed data parallel training through ``torchrun`` (``torch.distributed``).

``torchrun --nproc_per_node N -m lofihippseg train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` (and the rendezvous variables); the same command without torchrun runs one
process. Backend: NCCL on GPUs, gloo on CPU.

Semantics: N processes with ``batch / N`` samples each compute the same update as one process
with the whole batch. VNet gradients are averaged by DDP, the critic's by :func:`average_gradients`,
and the soft Dice sums are added over processes (:func:`sum_reducer`) so Dice is over the global
batch. Batch-norm statistics are per process on CPU; on GPUs ``sync_batchnorm`` (default on)
makes them global with ``SyncBatchNorm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lofihippseg.errors import LoFiError
from lofihippseg.training.losses import Reducer


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, number of processes, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, validates and logs."""
        return self.rank == 0


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU if there is one, else the CPU; ``cuda`` -> ``cuda:local_rank``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LoFiError("--device cuda: no CUDA GPU is available; use --device cpu")
        return (
            torch.device("cuda", local_rank) if preference == "cuda" else torch.device(preference)
        )
    if preference != "cpu":
        raise LoFiError(f"unknown device {preference!r}; expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup(device_preference: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, device)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (if this module joined one)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, ctx: DistContext, sync_batchnorm: bool = True) -> nn.Module:
    """DDP-wrap a module for multi-process training (identity on one process)."""
    if not ctx.enabled:
        return module
    if sync_batchnorm and ctx.device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def sum_reducer(ctx: DistContext) -> Reducer | None:
    """An autograd-aware sum over processes (for the Dice sums), or None on one process."""
    return _AllReduceSum.apply if ctx.enabled else None


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient is summed too (every process holds the same loss)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def average_gradients(module: nn.Module, ctx: DistContext) -> None:
    """Average parameter gradients over processes (for the critic, which is not DDP-wrapped)."""
    if not ctx.enabled:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world_size)


def any_true(flag: bool, ctx: DistContext) -> bool:
    """True when ``flag`` is true on any process (so all stop together)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ctx: DistContext) -> None:
    """Wait for all processes."""
    if ctx.enabled:
        dist.barrier()
