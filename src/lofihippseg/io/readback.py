"""Do finished outputs read back? (A rerun redoes a case whose outputs do not.)

Outputs are written atomically, but a disk that filled up before the rename was possible, a
copy cut short or a hand edit can still leave a truncated label map or sidecar behind. These
checks are cheap: the sidecar is parsed, the label map's header read and its data streamed to
the end (gzip checks its CRC and length there) without keeping it in memory.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

CHUNK = 1 << 22  # bytes read at a time


def sidecar_problem(path: str | Path) -> str | None:
    """Why a JSON sidecar does not read back as lofihippseg's (None: it does).

    Example:
        >>> sidecar_problem("out/CASE_hipp.json")  # doctest: +SKIP
        'unreadable sidecar (truncated or not JSON: Expecting value ...)'
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        return f"unreadable sidecar ({exc.strerror or exc})"
    except ValueError as exc:
        return f"unreadable sidecar (truncated or not JSON: {exc})"
    if not isinstance(data, dict) or data.get("tool") != "lofihippseg":
        return "sidecar not written by lofihippseg"
    if not isinstance(data.get("volumes"), dict):
        return "sidecar without volumes"
    return None


def image_problem(path: str | Path) -> str | None:
    """Why an image file does not read back whole (None: it does).

    Example:
        >>> image_problem("out/CASE_hipp.nii.gz")  # doctest: +SKIP
    """
    try:
        img = nib.load(str(path))
        expected = int(np.prod(img.shape)) * np.dtype(img.get_data_dtype()).itemsize
        offset = int(img.header.get_data_offset())
        total = 0
        with ImageOpener(str(path), "rb") as handle:
            while chunk := handle.read(CHUNK):
                total += len(chunk)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        return f"unreadable label map ({type(exc).__name__}: {exc})"
    if total < offset + expected:
        return f"truncated label map ({total} of {offset + expected} bytes)"
    return None


def outputs_problem(labels: Path, sidecar: Path) -> str | None:
    """Why a finished case's label map and sidecar do not read back (None: they do).

    Example:
        >>> outputs_problem(Path("out/c_hipp.nii.gz"), Path("out/c_hipp.json"))  # doctest: +SKIP
    """
    problem = sidecar_problem(sidecar)
    if problem is not None:
        return f"{sidecar}: {problem}"
    problem = image_problem(labels)
    return None if problem is None else f"{labels}: {problem}"
