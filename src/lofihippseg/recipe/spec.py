"""The recipe file (``release/recipe.toml``): stages as data, with profiles and a scale knob.

``load_recipe`` reads it, merges a profile (``smoke``: toy scale) and applies the scale knob:
``scale`` multiplies every stage's ``iterations`` and ``count`` and a pair's synthetic box
pool (a lent GPU runs the same recipe longer), ``batch_scale`` multiplies its batches
(``batch``; a pair's ``overrides.batch_size``). What it returns is the recipe as run: it is
saved in the campaign folder and in the bundle.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from lofihippseg.errors import LoFiError

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "release" / "recipe.toml"
KINDS = ("msd_split", "ixi_split", "pool", "localiser", "pair", "assemble", "refiner_data",
         "refiner", "quality", "export", "card")  # fmt: skip
SCALED = ("iterations", "count")  # stage keys the scale knob multiplies


def _merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra``'s values, tables merged key by key."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(
    path: str | Path = RECIPE,
    profile: str | None = None,
    scale: float = 1.0,
    batch_scale: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """The recipe as run: the file, its ``profile`` merged in, the scale knob applied.

    Raises:
        LoFiError: unreadable file, unknown profile or stage kind, a bad scale.

    Example:
        >>> r = load_recipe(profile="smoke")
        >>> r["stages"]["pair_t2"]["iterations"]
        4
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LoFiError(f"{path}: cannot read the recipe ({exc})") from None
    profiles = data.pop("profiles", {})
    if profile is not None:
        if profile not in profiles:
            raise LoFiError(f"{path}: no profile {profile!r} (has {sorted(profiles)})")
        data = _merge(data, profiles[profile])
    if not scale > 0 or batch_scale < 1:
        raise LoFiError(f"scale {scale} / batch scale {batch_scale}: give scale > 0, batch >= 1")
    stages = data.get("stages") or {}
    if not stages:
        raise LoFiError(f"{path}: no [stages.*] tables")
    for name, stage in stages.items():
        if stage.get("kind") not in KINDS:
            raise LoFiError(f"{path}: stage {name}: unknown kind {stage.get('kind')!r}")
        for key in SCALED:
            if key in stage:
                stage[key] = max(1, round(stage[key] * scale))
        pool = stage.get("overrides", {}).get("synthetic_pool")
        if pool:  # as many draws per box at every scale
            stage["overrides"]["synthetic_pool"] = max(1, round(pool * scale))
        if "batch" in stage:
            stage["batch"] *= batch_scale
        if stage["kind"] == "pair" and batch_scale > 1:
            stage.setdefault("overrides", {})["batch_size"] = 4 * batch_scale
    data["run"] = {"profile": profile, "scale": scale, "batch_scale": batch_scale,
                   "device": device, "file": str(path)}  # fmt: skip
    return data


def stage_hash(stage: dict, inputs: dict[str, str]) -> str:
    """A short hash of a stage's settings and of its inputs' hashes (what decides redoing it)."""
    text = json.dumps({"stage": stage, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_inputs(stage: dict) -> list[str]:
    """Names of the stages a stage reads (its ``stage:NAME`` values, nested ones included)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith("stage:"):
            found.append(value.removeprefix("stage:"))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(stage)
    return found
