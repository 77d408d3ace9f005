"""Training checkpoints: written atomically, read only through ``weights_only`` loading.

A checkpoint is a dict of tensors, dicts, lists and numbers (CONTRACTS.md):
``format`` (:data:`FORMAT`), ``iteration``, ``spec`` (ModelSpec dict), ``vnet1``, ``vnet2``,
``critic`` (state dicts), ``optimiser1``, ``optimiser2``, ``optimiser_critic``,
``scheduler1``, ``scheduler2``, ``scaler``, ``rng`` (tensors), ``best_dice``, ``single_view``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import atomic_path
from lofihippseg.models.registry import infer_n_filters, load_weights, safe_torch_load

FORMAT = "lofihippseg-checkpoint-1"
REQUIRED = ("iteration", "spec", "vnet1", "vnet2")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (adds ``format``) to ``path`` atomically: a crash never leaves half a file.

    Example:
        >>> state = {"iteration": 3, "spec": {}, "vnet1": {}, "vnet2": {}}
        >>> save_checkpoint(state, "c.pt")  # doctest: +SKIP
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read one of our training checkpoints.

    Raises:
        LoFiError: missing, corrupt or unsafe file, or a file that is not our checkpoint.

    Example:
        >>> ckpt = load_checkpoint("runs/exp/checkpoints/last.pt")  # doctest: +SKIP
        >>> ckpt["iteration"]  # doctest: +SKIP
    """
    data = safe_torch_load(path, map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LoFiError(
            f"{path}: not a lofihippseg training checkpoint (expected format {FORMAT}); "
            "to start from other weights use --init1/--init2"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise LoFiError(f"{path}: incomplete checkpoint (missing {missing})")
    return data


def init_state_dicts(
    path: str | Path, family: str | None = None
) -> tuple[dict, dict | None, dict | None]:
    """VNet/critic state dicts from a checkpoint used for ``--init``.

    Accepts our training checkpoints and bundles (``vnet1``, ``vnet2``, maybe ``critic``) and
    the authors' released plain state dicts (one VNet, or a critic). ``family``: which
    contrast family's pair of a bundle with several (None = its first pair).

    Returns:
        ``(vnet1, vnet2 or None, critic or None)``; a plain VNet state dict gives ``(sd, None,
        None)``; a plain critic state dict gives ``({}, None, sd)``.
    """
    data = safe_torch_load(path)
    if not isinstance(data, dict):
        raise LoFiError(f"{path}: not a checkpoint or state dict")
    if family is not None:
        data = _family_pair(data, family, path)
    if "vnet1" in data:
        return data["vnet1"], data.get("vnet2"), data.get("critic")
    for key in ("state_dict", "model", "net"):  # common wrappers of a plain state dict
        if isinstance(data.get(key), dict):
            data = data[key]
    keys = [k.removeprefix("module.") for k in data]
    if any(k.startswith("encoder.") for k in keys):
        infer_n_filters(data)  # raises a clear error for a broken VNet dict
        return data, None, None
    if any(k.startswith("conv1.") for k in keys):
        return {}, None, data
    raise LoFiError(f"{path}: neither a VNet nor a critic state dict, nor a lofihippseg checkpoint")


def _family_pair(data: dict, family: str, path: str | Path) -> dict:
    """The ``vnet1``/``vnet2`` entries of ``family`` in a bundle (``models.registry``)."""
    families = data.get("families") if isinstance(data.get("families"), dict) else {}
    if family == data.get("family"):
        return data
    if family in families and isinstance(families[family], dict):
        return families[family]
    named = [str(n) for n in (data.get("family"), *families) if n is not None]
    raise LoFiError(
        f"{path}: no contrast family {family!r} to start from "
        f"(it has: {', '.join(named) or 'none'})"
    )


def load_init(
    vnet1: torch.nn.Module,
    vnet2: torch.nn.Module,
    critic: torch.nn.Module,
    init1: str | None,
    init2: str | None,
    init_critic: str | None,
    init_family: str | None = None,
) -> list[str]:
    """Initialise the networks from ``--init`` files; returns what was loaded (for the log).

    ``init1`` alone initialises both VNets (from its ``vnet1``/``vnet2`` if it is a bundle, else
    the same plain weights into both), as the released training started both from one model;
    ``init_family`` picks the pair of a bundle with several contrast families.
    """
    done: list[str] = []
    if init_family is not None and not init1:
        raise LoFiError("--init-family needs --init1 (the bundle whose family to start from)")
    if init1:
        sd1, sd2, sdc = init_state_dicts(init1, init_family)
        if sd1:
            load_weights(vnet1, sd1, init1)
            done.append(f"vnet1 <- {init1}")
            if not init2:
                load_weights(vnet2, sd2 if sd2 is not None else sd1, init1)
                done.append(f"vnet2 <- {init1}")
        if sdc is not None and not init_critic:
            load_weights(critic, sdc, init1)
            done.append(f"critic <- {init1}")
    if init2:
        sd1, sd2, _ = init_state_dicts(init2)
        if not sd1:
            raise LoFiError(f"{init2}: no VNet weights for --init2")
        load_weights(vnet2, sd2 if sd2 is not None else sd1, init2)
        done.append(f"vnet2 <- {init2}")
    if init_critic:
        _, _, sdc = init_state_dicts(init_critic)
        if sdc is None:
            raise LoFiError(f"{init_critic}: no critic weights for --init-critic")
        load_weights(critic, sdc, init_critic)
        done.append(f"critic <- {init_critic}")
    return done


def rng_state(device: torch.device) -> dict[str, Any]:
    """Global torch RNG states as tensors (weights_only-safe)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
