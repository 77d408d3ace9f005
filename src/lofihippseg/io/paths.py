"""Output path safety."""

from __future__ import annotations

import errno
import os
import tempfile
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


def ensure_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it.

    Raises:
        LoFiError: one line naming the folder and the reason (read-only file system, a file
            where a folder should be, no permission ...).

    Example:
        >>> ensure_writable_dir("out")  # doctest: +SKIP
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise LoFiError(f"{folder}: cannot write there (a file, not a folder)") from None
    except OSError as exc:
        hint = permission_hint() if exc.errno in (errno.EACCES, errno.EPERM) else ""
        raise LoFiError(f"{folder}: cannot write there ({exc.strerror or exc}){hint}") from None
    return folder


def permission_hint() -> str:
    """What to do when an output folder is not writable: inside the container (which runs as
    user 1000 unless told otherwise), run it as yourself; elsewhere, fix the folder.

    Example:
        >>> permission_hint()  # doctest: +SKIP
        '; check the folder's permissions or choose another -o'
    """
    if os.environ.get("LOFIHIPPSEG_CONTAINER"):
        return (
            f"; the container runs as user {os.getuid()}: run it with "
            '--user "$(id -u):$(id -g)" (docker/podman) so it writes as you, '
            "or make the folder writable for that user"
        )
    return "; check the folder's permissions or choose another -o"


def is_absent_file(path: str | Path) -> bool:
    """True for a symbolic link whose target is not there (content not fetched, e.g. git-annex).

    Example:
        >>> is_absent_file("scan.nii.gz")  # doctest: +SKIP
        False
    """
    path = Path(path)
    return path.is_symlink() and not path.exists()


def is_file_or_absent(path: str | Path) -> bool:
    """A regular file, or a dangling link standing for one (so that it is named, not dropped).

    Example:
        >>> is_file_or_absent("scans/a.nii.gz")  # doctest: +SKIP
        True
    """
    return Path(path).is_file() or is_absent_file(path)


def absent_problem(path: str | Path) -> str:
    """Why a dangling link cannot be read, with the command that fetches annexed content.

    Example:
        >>> absent_problem("sub-07_T2w.nii.gz")[:31]
        'absent: its content is not here'
    """
    path = Path(path)
    try:
        target = os.readlink(path)
    except OSError:
        target = ""
    annexed = ".git/annex/" in target.replace(os.sep, "/")
    where = "git-annex/DataLad content not fetched" if annexed else "a dangling link"
    return f"absent: its content is not here ({where}); fetch it first, e.g. `datalad get {path}`"
