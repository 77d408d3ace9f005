"""Settings as dataclasses, saved as JSON with every run and every prediction."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import write_text_atomic

T = TypeVar("T")


def to_dict(settings: Any) -> dict[str, Any]:
    """A dataclass (nested ones too) as a JSON-ready dict; tuples become lists, paths strings."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return convert(settings)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from a dict, converting nested dataclasses and lists to tuples.

    Unknown keys raise a clear error; missing keys take the defaults.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise LoFiError(f"unknown settings for {cls.__name__}: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        ftype = fields[name].type
        default = fields[name].default
        factory = fields[name].default_factory  # type: ignore[misc]
        template = factory() if factory is not dataclasses.MISSING else default
        if dataclasses.is_dataclass(template) and isinstance(value, dict):
            value = from_dict(type(template), value)
        elif isinstance(value, list) and (isinstance(template, tuple) or "tuple" in str(ftype)):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def json_ready(value: Any) -> Any:
    """A copy of ``value`` that strict JSON accepts.

    NumPy scalars and arrays become Python numbers and lists (MGH headers hold numpy ints),
    NaN and infinite floats become None (``null``), tuples become lists, paths strings.

    Example:
        >>> json_ready({"n": np.int32(3), "ai": float("nan"), "shape": (2, np.int64(4))})
        {'n': 3, 'ai': None, 'shape': [2, 4]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = to_dict(value)
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_json(data: dict[str, Any] | Any, path: str | Path) -> Path:
    """Write a dict or dataclass as indented strict JSON (NaN -> null), atomically."""
    payload = json_ready(data)
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def read_json_settings(path: str | Path) -> dict[str, Any]:
    """Read a settings JSON file as a dict, with one-line errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoFiError(f"{path}: settings file not found") from None
    except json.JSONDecodeError as exc:
        raise LoFiError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise LoFiError(f"{path}: expected a JSON object of settings")
    return data


def load_settings(cls: type[T], path: str | Path) -> T:
    """Read a dataclass saved by :func:`save_json`."""
    return from_dict(cls, read_json_settings(path))
