"""Networks run in bfloat16 on CPUs that compute it natively, for inference.

Where the CPU has bfloat16 instructions (AVX-512 BF16 or AMX, which oneDNN uses), a VNet's
convolutions in bfloat16 take about half the time of float32 (measured on the 2-core benchmark
machine: the 20-filter refiner 0.32 -> 0.15 s on a 64 x 48 x 64 batch of two, a pair's network
0.20 -> 0.10 s). Weights and activations are rounded to bfloat16 (8 bits of mantissa); inputs
arrive and outputs leave in float32, so nothing around the network changes. Elsewhere bfloat16
would be emulated (slower), so :func:`cpu_bfloat16_native` decides.
"""

from __future__ import annotations

import copy
import platform

import torch
from torch import nn

X86 = ("x86_64", "amd64", "i386", "i686")
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # /proc/cpuinfo's names of the native instructions


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bfloat16_native() -> bool:
    """Whether this CPU computes bfloat16 convolutions natively: oneDNN's test (which on x86
    also passes for plain AVX-512, where bfloat16 is emulated, no faster than float32) and, on
    x86, the AVX-512 BF16 or AMX instructions themselves (float32 where they cannot be read)."""
    try:
        supported = bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):  # a build without the test: assume not
        return False
    if supported and platform.machine().lower() in X86:
        return bool(_cpu_flags() & BF16_FLAGS)
    return supported  # Arm: oneDNN's test is of the BF16 extension itself


class AtPrecision(nn.Module):
    """A network run in another dtype: float32 in, float32 out.

    Args:
        net: the network (already in ``dtype``).
        dtype: the dtype its weights and activations use.

    Example:
        >>> net = AtPrecision(nn.Conv3d(1, 1, 1).to(torch.bfloat16), torch.bfloat16)
        >>> net(torch.ones(1, 1, 2, 2, 2)).dtype
        torch.float32
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()


def at_precision(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``net`` in ``dtype`` wrapped in :class:`AtPrecision` (the original is left as
    it is: other predictors may share it); ``net`` itself for float32 or a network without 3D
    convolutions (nothing to gain).

    Example:
        >>> net = nn.Sequential(nn.Conv3d(1, 1, 1))
        >>> at_precision(net, torch.float32) is net, type(at_precision(net, torch.bfloat16))
        (True, <class 'lofihippseg.models.precision.AtPrecision'>)
    """
    if dtype == torch.float32 or not any(isinstance(m, nn.Conv3d) for m in net.modules()):
        return net
    # the structure copied, each floating tensor converted once (no float32 clone first)
    memo: dict[int, torch.Tensor] = {}
    for tensor in [*net.parameters(), *net.buffers()]:
        if tensor.is_floating_point():
            converted = tensor.detach().to(dtype)
            is_param = isinstance(tensor, nn.Parameter)
            memo[id(tensor)] = (
                nn.Parameter(converted, requires_grad=False) if is_param else converted
            )
    return AtPrecision(copy.deepcopy(net, memo), dtype)


def autocast_dtype(device_type: str, amp: bool = True) -> torch.dtype | None:
    """The dtype training (and its validation) autocasts to: float16 on CUDA, bfloat16 on a
    CPU that computes it natively (``cpu_bfloat16_native``), None (float32) otherwise or
    without ``amp``. bfloat16 keeps float32's exponent range: no loss scaling is needed.

    Example:
        >>> autocast_dtype("cuda"), autocast_dtype("cpu", amp=False)
        (torch.float16, None)
    """
    if not amp:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and cpu_bfloat16_native():
        return torch.bfloat16
    return None


def precision_name(device_type: str, amp: bool = True) -> str:
    """What ``autocast_dtype`` chooses, in words (for plans and logs).

    Example:
        >>> precision_name("cpu", amp=False)
        'float32 (--no-amp)'
    """
    dtype = autocast_dtype(device_type, amp)
    if dtype is torch.float16:
        return "float16 autocast with loss scaling (CUDA)"
    if dtype is torch.bfloat16:
        return "bfloat16 autocast (this CPU computes it natively)"
    return "float32 (--no-amp)" if not amp else "float32 (this CPU has no native bfloat16)"
