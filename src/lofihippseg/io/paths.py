"""Output path safety."""

from __future__ import annotations

from pathlib import Path

from lofihippseg.errors import LoFiError


def safe_output_path(out_dir: str | Path, name: str) -> Path:
    """Join ``name`` under ``out_dir`` and refuse results that escape it.

    Example:
        >>> safe_output_path("out", "CASE_hipp.nii.gz")
        PosixPath('out/CASE_hipp.nii.gz')
    """
    out_dir = Path(out_dir)
    candidate = out_dir / name
    root = out_dir.resolve()
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise LoFiError(f"{name}: output path escapes the output folder {out_dir}")
    return candidate
