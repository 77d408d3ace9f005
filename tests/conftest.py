"""Shared test fixtures: tiny NIfTI writers and access to ../shared data (skipped if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOFIHIPPSEG_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs {path} (the project's shared data, present in CI, absent in a user clone)"
        )
    return path


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a small NIfTI with both qform and sform set (code 1)."""
    affine = np.eye(4) if affine is None else affine
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


@pytest.fixture
def nifti_writer(tmp_path: Path):
    """Returns ``write(name, data, affine=None) -> Path`` writing under tmp_path."""

    def write(name: str, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
        return write_nifti(tmp_path / name, data, affine)

    return write


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """Run ``lofihippseg ARGS`` in this process; return (exit code, stdout, stderr)."""
    from lofihippseg.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


RELEASE_DIR = Path(__file__).resolve().parents[1] / "release"


def release_module(name: str):
    """Import one of the ``release/`` scripts (not a package) as a module."""
    import importlib
    import sys

    sys.path.insert(0, str(RELEASE_DIR))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(RELEASE_DIR))
