"""Atomic file writes: write beside the target, then rename onto it.

A reader (or a rerun after a crash) sees either the old file or the complete new one, never a
partial one. Temporary files are named ``.NAME.HOST-PID.XXXX.tmpSUFFIX``: unique per process,
so a rerun can find and delete the leftovers of a killed run (:func:`remove_stale_temps`)
without touching another live process's file.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_OWNER = re.compile(r"\.([A-Za-z0-9]+)-(\d+)\.[^.]+\.tmp")
STALE_AFTER_S = 3600.0  # a temporary file untouched this long is a leftover, whoever wrote it


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}"


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
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_tag()}.", suffix=f".tmp{suffix}", dir=path.parent
    )
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def is_stale_temp(tmp: str | Path, now: float | None = None) -> bool:
    """True when a temporary file of :func:`atomic_path` can be deleted safely.

    Ours (this process) or of a process of this host that no longer runs: stale. Of another
    host (shared file systems) or of a live process: stale only when untouched for
    :data:`STALE_AFTER_S`. Without an owner tag (older versions): stale.
    """
    tmp = Path(tmp)
    match = _OWNER.search(tmp.name)
    if match is None:
        return True
    host, pid = match.group(1), int(match.group(2))
    if host == _HOST and (pid == os.getpid() or not _pid_alive(pid)):
        return True
    try:
        age = (time.time() if now is None else now) - tmp.stat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S


def remove_stale_temps(targets: Iterable[str | Path]) -> list[Path]:
    """Delete stale temporary files of these target files (see :func:`is_stale_temp`).

    Example:
        >>> remove_stale_temps(["out/CASE_hipp.nii.gz"])  # doctest: +SKIP
    """
    removed = []
    for target in targets:
        target = Path(target)
        for tmp in target.parent.glob(f".{glob.escape(target.name)}.*tmp*"):
            if is_stale_temp(tmp):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
