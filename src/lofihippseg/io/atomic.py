"""Atomic file writes: write beside the target, then rename onto it.

A reader (or a rerun after a crash) sees either the old file or the complete new one, never a
partial one. Temporary files are named ``.NAME.XXXX.tmpSUFFIX`` so a rerun can find and delete
leftovers of a killed run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Args:
        path: the final file (its folder is created).
        suffix: ending the temporary file needs (e.g. ``.nii.gz`` for nibabel, ``.png``).

    Example:
        >>> with atomic_path("out/table.csv") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("a,b\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically and return its path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
