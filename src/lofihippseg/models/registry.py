"""Building the networks and loading weights safely.

A *model bundle* is everything inference needs: a :class:`ModelSpec` (width and preprocessing
that the networks were trained with) and the two VNets' state dicts. It can come from
- a training run folder (``config.json`` + ``checkpoints/best.pt``), see ``lofihippseg.training``;
- a single bundle file (``torch.save({"spec": {...}, "vnet1": sd, "vnet2": sd})``);
- the authors' two released checkpoint files (plain VNet state dicts).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lofihippseg.config import from_dict, to_dict
from lofihippseg.errors import LoFiError
from lofihippseg.models.critic import Critic
from lofihippseg.models.vnet import VNet


@dataclass(frozen=True)
class ModelSpec:
    """How a pair of VNets was built and what input it expects.

    Attributes:
        n_filters: base width of each VNet (16 = released).
        view_mode: second-view frequency mask: ``highpass``, ``lowpass`` or ``legacy``.
        cutoff: radius of the frequency ball as a fraction of max(D, H, W).
        clip_percentiles: percentile clip before min-max normalisation (None = plain min-max).
        crop_margin: voxels kept around the non-zero bounding box.
        recipe: ``paper`` or ``released`` (informative; inference settings follow from it).
        grid_mm: isotropic voxel size (mm) the networks were trained on; inference resamples
            inputs on other grids to it and maps the result back (None = each input's own
            grid, as for models trained on the user's scans at their native resolution).
    """

    n_filters: int = 16
    view_mode: str = "highpass"
    cutoff: float = 0.1
    clip_percentiles: tuple[float, float] | None = None
    crop_margin: int = 1
    recipe: str = "paper"
    grid_mm: float | None = None

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> LoFiError:
            return LoFiError(f"model spec {name} must be {want}, got {getattr(self, name)!r}")

        if not _is_int(self.n_filters) or self.n_filters < 1:
            raise bad("n_filters", "a whole number >= 1")
        if not _is_int(self.crop_margin) or self.crop_margin < 0:
            raise bad("crop_margin", "a whole number >= 0")
        if isinstance(self.cutoff, bool) or not isinstance(self.cutoff, int | float):
            raise bad("cutoff", "a number")
        if not isinstance(self.view_mode, str):
            raise bad("view_mode", "a string (highpass, lowpass or legacy)")
        clip = self.clip_percentiles
        if clip is not None and (
            len(clip) != 2 or not all(isinstance(v, int | float) for v in clip)
        ):
            raise bad("clip_percentiles", "null or two numbers")
        grid = self.grid_mm
        if grid is not None and (
            isinstance(grid, bool) or not isinstance(grid, int | float) or not 0.2 <= grid <= 5
        ):
            raise bad("grid_mm", "null or a voxel size between 0.2 and 5 mm")

    @classmethod
    def released(cls) -> ModelSpec:
        """The settings of the authors' released checkpoints."""
        return cls(n_filters=16, view_mode="legacy", cutoff=0.1, recipe="released")


@dataclass(frozen=True)
class LocaliserSpec:
    """The hippocampus localiser: a small VNet on the whole head at ``mm`` mm per voxel.

    Attributes:
        n_filters: base width of its VNet.
        mm: voxel size of its grid.
        threshold: a coarse voxel is a detection above this probability.
    """

    n_filters: int = 8
    mm: float = 4.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not _is_int(self.n_filters) or self.n_filters < 1:
            raise LoFiError(
                f"localiser n_filters must be a whole number >= 1, got {self.n_filters!r}"
            )
        for name in ("mm", "threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise LoFiError(f"localiser {name} must be a positive number, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_vnet(spec: ModelSpec | None = None) -> VNet:
    """A VNet of the spec's width (one input channel, two output channels)."""
    spec = spec or ModelSpec()
    return VNet(n_channels=1, n_classes=2, n_filters=spec.n_filters)


def build_localiser(spec: LocaliserSpec | None = None) -> VNet:
    """The localiser's VNet (one input channel, one output channel per side)."""
    spec = spec or LocaliserSpec()
    return VNet(n_channels=1, n_classes=2, n_filters=spec.n_filters)


def without_init(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` on the CPU without its random initialisation, for a module whose every
    weight is about to be loaded (``load_weights`` is strict): a fifth of loading the shipped
    model went to drawing random weights it then overwrote.

    Example:
        >>> net = without_init(lambda: torch.nn.Linear(2, 3))
        >>> tuple(net.weight.shape), net.weight.device.type
        ((3, 2), 'cpu')
    """
    with torch.device("meta"):
        module = build()
    # what ``to_empty`` does, without ``empty_like`` on meta tensors (its first call imports
    # sympy: 0.4 s of start-up); the strides (channels-last) are kept
    return module._apply(
        lambda t: torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="cpu")
    )


def build_critic() -> Critic:
    """The shared per-voxel critic."""
    return Critic(n_classes=2)


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors for bad files.

    Raises:
        LoFiError: missing, corrupt, or code-carrying (unsafe) checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise LoFiError(f"{path}: checkpoint not found")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # zip (torch.save) or a legacy pickle
        raise LoFiError(
            f"{path}: not a PyTorch checkpoint (expected a .pt/.pth file written by torch.save)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise LoFiError(f"{path}: corrupt or unreadable checkpoint ({msg})") from None
    except Exception as exc:  # pickle.UnpicklingError for objects outside the weights-only set
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise LoFiError(
            f"{path}: refused to load (not a plain weights checkpoint: {msg}); "
            "only state dicts of tensors are accepted"
        ) from None


def load_weights(module: torch.nn.Module, state: Any, source: str | Path) -> None:
    """Load a state dict strictly, explaining a mismatch in one line."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise LoFiError(f"{source}: not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved weights
    # Compare keys without loading (a non-strict load still raises on size mismatches).
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise LoFiError(
            f"{source}: weights do not fit a {type(module).__name__} "
            f"({len(missing)} missing keys, e.g. {missing[:2]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [line for line in str(exc).splitlines() if "size mismatch" in line][:1]
        raise LoFiError(
            f"{source}: weights do not fit ({first[0].strip() if first else exc})"
        ) from None
    for name, tensor in module.state_dict().items():  # NaN weights would segment nothing
        # a NaN or infinity makes the sum non-finite: one fast pass (60x faster than
        # isfinite().all()); an overflowing sum of finite weights is told apart by the full test
        if (
            tensor.is_floating_point()
            and not torch.isfinite(tensor.sum())
            and not torch.isfinite(tensor).all()
        ):
            raise LoFiError(f"{source}: the weights contain NaN or infinite values ({name})")


def infer_n_filters(state: dict[str, torch.Tensor]) -> int:
    """Base width of a VNet state dict (output channels of its first conv)."""
    key = "encoder.block_one.conv.0.weight"
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if key not in state:
        raise LoFiError(f"not a VNet state dict (no {key})")
    return int(state[key].shape[0])


def half_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating-point tensors in float16 (for shipped files).

    Example:
        >>> half_precision({"w": torch.ones(1), "n": torch.ones(1, dtype=torch.long)})["w"].dtype
        torch.float16
    """
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


INT8_MIN_NUMEL = 4096  # smaller tensors (biases, batch norm, thin convs) stay float16


def int8_precision(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A state dict for shipped files with its large weights in 8 bits: each becomes
    ``{"int8": q, "scale": s}`` with one float scale per slice along the first axis
    (``w ~ q * s``, symmetric, |q| <= 127); other floating-point tensors go to float16.

    Example:
        >>> packed = int8_precision({"w": torch.linspace(-1, 1, 8192).reshape(2, -1)})
        >>> (packed["w"]["int8"].dtype, tuple(packed["w"]["scale"].shape))
        (torch.int8, (2,))
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        if value.is_floating_point() and value.dim() >= 2 and value.numel() >= INT8_MIN_NUMEL:
            flat = value.float().reshape(value.shape[0], -1)
            scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127
            q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[key] = {"int8": q.reshape(value.shape), "scale": scale}
        else:
            out[key] = value.half() if value.is_floating_point() else value
    return out


def expand_precision(state: Any, source: str | Path) -> Any:
    """Undo :func:`int8_precision` (a plain state dict passes through unchanged).

    Raises:
        LoFiError: an 8-bit entry without an int8 tensor and one scale per slice.
    """
    if not isinstance(state, dict):
        return state
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            q, scale = value.get("int8"), value.get("scale")
            if not (
                isinstance(q, torch.Tensor)
                and q.dtype == torch.int8
                and q.dim() >= 1
                and isinstance(scale, torch.Tensor)
                and tuple(scale.shape) == (q.shape[0],)
            ):
                raise LoFiError(f"{source}: bad 8-bit weights for {key}")
            value = q.float() * scale.float().reshape(-1, *[1] * (q.dim() - 1))
        out[key] = value
    return out


def bundle_dict(
    spec: ModelSpec,
    vnet1: dict,
    vnet2: dict,
    family: str | None = None,
    families: dict[str, tuple[dict, dict]] | None = None,
    family_grid_mm: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """What a single-file bundle holds (weights_only-safe: dicts, lists, tensors, numbers).

    Args:
        spec: the networks' spec (every pair shares it).
        vnet1: network 1's state dict; with ``vnet2`` the first pair.
        vnet2: network 2's state dict.
        family: name of the contrast family the first pair was trained for (e.g. ``t2``).
        families: more pairs of the same spec, by family name (e.g. ``{"t1": (sd1, sd2)}``);
            inference runs every pair and keeps the one whose two views agree best.
        family_grid_mm: the working grid of a family in ``families`` that runs on another grid
            than ``spec.grid_mm`` (e.g. ``{"t1": 1.0}``).

    Example:
        >>> sd = build_vnet(ModelSpec(n_filters=2)).state_dict()
        >>> sorted(bundle_dict(ModelSpec(n_filters=2), sd, sd, "t2", {"t1": (sd, sd)}))
        ['families', 'family', 'format', 'spec', 'vnet1', 'vnet2']
    """
    bundle = {"format": "lofihippseg-bundle-1", "spec": to_dict(spec)}
    bundle.update(vnet1=vnet1, vnet2=vnet2)
    if families:
        if family is None or family in families:
            raise LoFiError("each contrast family needs its own name, the first pair's included")
        bundle["family"] = family
        bundle["families"] = {name: {"vnet1": a, "vnet2": b} for name, (a, b) in families.items()}
        for name, mm in (family_grid_mm or {}).items():
            if name not in families:
                raise LoFiError(f"a working grid for {name!r}, which is not one of the families")
            bundle["families"][name]["grid_mm"] = mm
    elif family is not None:
        bundle["family"] = family
    return bundle


def spec_from_dict(data: dict[str, Any]) -> ModelSpec:
    """ModelSpec from its saved dict."""
    return from_dict(ModelSpec, data)
