"""Widen a model bundle's VNets (e.g. 8 -> 16 filters) without changing what they compute.

Net2Net-style widening (Chen et al., 2016): every feature channel is copied ``factor`` times,
the weights that read the copies are divided by ``factor`` and batch-norm statistics are copied,
so the wide network starts with exactly the narrow one's outputs and can be fine-tuned at the
wider width instead of trained from scratch. A little noise on the copied filters breaks their
symmetry so that training can make them differ. The VNet's skips are additions, so the copies
line up across blocks. The localiser entry, if any, is carried over unchanged.

Example:
    python release/widen.py src/lofihippseg/data/model/lofihippseg_default.pt runs/wide16.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch


def _widened(
    value: torch.Tensor, transposed: bool, width: int, factor: int, noise: float
) -> torch.Tensor:
    """One state-dict entry, with every axis that counts feature channels tiled ``factor``x
    (channel j of the wide layer is channel j mod ``width * k`` of the narrow one)."""
    if value.ndim == 0:  # num_batches_tracked
        return value.clone()
    out = value.float().clone()
    in_axis, out_axis = (0, 1) if transposed else (1, 0)  # ConvTranspose3d: (in, out, ...)
    if value.ndim == 1:  # conv bias, batch-norm weight / bias / running statistics
        return out.repeat(factor) if len(out) % width == 0 else out
    if out.shape[in_axis] % width == 0:  # reads feature channels: each copy gets a share
        reps = [1] * out.ndim
        reps[in_axis] = factor
        out = out.repeat(*reps) / factor
    if out.shape[out_axis] % width == 0:  # writes feature channels: copies, lightly perturbed
        reps = [1] * out.ndim
        reps[out_axis] = factor
        out = out.repeat(*reps)
        out = out + noise * out.std() * torch.randn_like(out)
    return out


def widen_state(state: dict, width: int, factor: int = 2, noise: float = 0.0) -> dict:
    """A VNet state dict of base width ``width`` widened to ``factor * width``.

    Example:
        >>> from lofihippseg.models.vnet import VNet
        >>> wide = widen_state(VNet(n_filters=4).state_dict(), 4)
        >>> _ = VNet(n_filters=8).load_state_dict(wide)
    """
    from lofihippseg.models.vnet import VNet

    if width < 3:
        raise ValueError(f"width {width} is too small to tell feature from class channels")
    transposed = {
        f"{name}.weight"
        for name, module in VNet(n_filters=width).named_modules()
        if isinstance(module, torch.nn.ConvTranspose3d)
    }
    return {k: _widened(v, k in transposed, width, factor, noise) for k, v in state.items()}


def widen_bundle(src: Path, dst: Path, factor: int = 2, noise: float = 0.01, seed: int = 0) -> None:
    """Write ``src``'s bundle with both VNets widened ``factor``x (float32) to ``dst``."""
    from lofihippseg.models.registry import bundle_dict, safe_torch_load, spec_from_dict

    torch.manual_seed(seed)
    data = safe_torch_load(src)
    spec = spec_from_dict(data["spec"])
    wide = dataclasses.replace(spec, n_filters=spec.n_filters * factor)
    nets = [widen_state(data[k], spec.n_filters, factor, noise) for k in ("vnet1", "vnet2")]
    families = {  # every contrast family's pair, widened alike
        name: tuple(widen_state(pair[k], spec.n_filters, factor, noise) for k in ("vnet1", "vnet2"))
        for name, pair in (data.get("families") or {}).items()
    }
    out = bundle_dict(wide, *nets, family=data.get("family"), families=families)
    if "localiser" in data:
        out["localiser"] = data["localiser"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    print(f"{src} ({spec.n_filters} filters) -> {dst} ({wide.n_filters} filters)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Widen a model bundle's VNets (Net2Net copies).")
    p.add_argument("src", type=Path, help="model bundle (.pt)")
    p.add_argument("dst", type=Path, help="widened bundle to write")
    p.add_argument("--factor", type=int, default=2, help="width multiplier")
    p.add_argument("--noise", type=float, default=0.01, help="symmetry-breaking noise (x std)")
    a = p.parse_args(argv)
    from lofihippseg.errors import LoFiError

    try:
        widen_bundle(a.src, a.dst, a.factor, a.noise)
    except (LoFiError, OSError, KeyError, ValueError) as exc:
        print(f"error: {a.src}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
