"""``lofihippseg model-info``: what a model bundle holds and how it was made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def bundle_info(path: Path) -> dict[str, Any]:
    """A bundle's description as plain data: networks, grids, localiser, refiner, advice, size
    and its ``provenance`` (recorded by ``make model``; absent in bundles made before it).

    Raises:
        LoFiError: not a readable bundle.

    Example:
        >>> bundle_info(DEFAULT_MODEL)["families"]  # doctest: +SKIP
        {'t2': 1.5, 't1': 1.0}
    """
    from lofihippseg.errors import LoFiError
    from lofihippseg.models.registry import safe_torch_load

    try:
        data = safe_torch_load(path)
    except LoFiError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file: one line
        raise LoFiError(f"{path}: not a readable model bundle ({exc})") from None
    if not isinstance(data, dict) or "vnet1" not in data or "spec" not in data:
        raise LoFiError(f"{path}: not a lofihippseg model bundle (no 'spec' and 'vnet1')")
    spec = dict(data["spec"])
    families = {data.get("family"): spec.get("grid_mm")}
    for name, entry in (data.get("families") or {}).items():
        families[name] = entry.get("grid_mm", spec.get("grid_mm"))
    info: dict[str, Any] = {
        "path": str(path),
        "megabytes": round(path.stat().st_size / 1e6, 1),
        "format": data.get("format"),
        "spec": spec,
        "families": {str(k): v for k, v in families.items()},
        "trained_iterations": data.get("family_iterations") or data.get("trained_iterations"),
        "localiser": "localiser" in data,
        "localiser_provenance": (data.get("localiser") or {}).get("provenance"),
        "refiner_filters": (data.get("refiner") or {}).get("n_filters"),
        "tta": bool(data.get("tta", False)),
        "quality_estimator": _estimator(path),
        "provenance": data.get("provenance"),
    }
    return info


def _estimator(bundle: Path) -> str | None:
    """The quality estimator's file beside the bundle (``MODEL.quality.json``), if any."""
    path = bundle.with_name(bundle.stem + ".quality.json")
    return path.name if path.is_file() else None


def _stage_line(name: str, record: dict) -> str:
    keys = ("iterations", "seed", "batch", "family", "filters", "cases", "scans", "msd_crops",
            "real_heads")  # fmt: skip
    parts = [f"{k} {record[k]}" for k in keys if record.get(k) is not None]
    for key in ("train", "val", "held", "maps"):
        if isinstance(record.get(key), list):
            parts.append(f"{len(record[key])} {key} files hashed")
    timing = record.get("timing") or {}
    if timing.get("per_unit"):
        parts.append(f"{timing['per_unit']:.3g} s/{timing.get('unit', 'unit')}")
    if record.get("note"):
        parts.append(record["note"])
    if record.get("skipped"):
        parts.append(f"skipped: {record['skipped']}")
    return f"  {name}: " + (", ".join(parts) or "done")


def describe(info: dict[str, Any]) -> str:
    """Readable lines of :func:`bundle_info`'s data."""
    fams = ", ".join(f"{k} ({v} mm grid)" for k, v in info["families"].items())
    lines = [
        f"model: {info['path']} ({info['megabytes']} MB, {info['format']})",
        f"networks: {info['spec'].get('n_filters')} filters, pairs {fams}; "
        f"trained iterations {info['trained_iterations']}",
        f"localiser: {'yes' if info['localiser'] else 'no'}; outline refiner: "
        + (f"{info['refiner_filters']} filters" if info["refiner_filters"] else "none")
        + f"; mirror TTA advised: {'yes' if info['tta'] else 'no'}",
        f"quality estimator: {info['quality_estimator'] or 'none beside the bundle'}",
    ]
    prov = info.get("provenance")
    if not prov:
        lines.append(
            "provenance: none recorded for the pairs and the refiner (made by hand steps before "
            "the recipe; see release/MODEL_CARD.md and CHANGELOG.md). `make model` rebuilds a "
            "model that records it."
        )
        if info.get("localiser_provenance"):
            lines.append("localiser " + _made_by(info["localiser_provenance"])[0])
            lines += _made_by(info["localiser_provenance"])[1:]
        return "\n".join(lines)
    lines += _made_by(prov)
    return "\n".join(lines)


def _made_by(prov: dict[str, Any]) -> list[str]:
    """Readable lines of a recipe's provenance record (the recipe, commit, libraries, stages)."""
    git = prov.get("git") or {}
    run = (prov.get("recipe") or {}).get("run") or {}
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    libs = ", ".join(f"{k} {v}" for k, v in (prov.get("libraries") or {}).items())
    threads = f"{prov['threads']} thread(s), " if prov.get("threads") else ""
    lines = [
        f"made by: recipe {(prov.get('recipe') or {}).get('name')} "
        f"(profile {run.get('profile') or 'full'}, scale {run.get('scale')}, "
        f"batch scale {run.get('batch_scale')}, device {run.get('device')}), "
        f"{threads}{prov.get('created') or ''}".rstrip(", "),
        f"commit: {git.get('commit')}{dirty}",
        f"libraries: {libs}",
        "stages:",
    ]
    return lines + [_stage_line(n, r) for n, r in (prov.get("stages") or {}).items()]


@click.command("model-info")
@click.argument("bundle", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def command(bundle, as_json) -> None:
    """Print what model BUNDLE holds and how it was made (default: the shipped model).

    The provenance (recipe as run, commit, data lists with hashes, iterations, seeds, library
    versions, measured timings) is there for bundles made by `make model`.
    """
    from lofihippseg.errors import LoFiError
    from lofihippseg.inference.model_loading import DEFAULT_MODEL

    path = Path(bundle) if bundle else DEFAULT_MODEL
    if not path.is_file():
        raise LoFiError(f"{path}: no such model bundle")
    info = bundle_info(path)
    click.echo(json.dumps(info, indent=1, default=str) if as_json else describe(info))
