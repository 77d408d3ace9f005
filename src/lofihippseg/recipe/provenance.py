"""What a bundle records about how it was made: commit, library versions, data with hashes.

Everything here is plain data (strings, numbers, lists, dicts), so that a bundle holding it
still loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("lofihippseg", "torch", "numpy", "scipy", "nibabel", "monai", "SimpleITK")


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes.

    Example:
        >>> sha256(Path("pyproject.toml"))[:8]  # doctest: +SKIP
        '3f1c0a9e'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_list(paths: list[Path], root: Path | None = None) -> list[dict[str, str]]:
    """``[{"name": ..., "sha256": ...}]`` of files (names relative to ``root`` when given)."""
    rows = []
    for path in paths:
        name = str(path.relative_to(root)) if root is not None else path.name
        rows.append({"name": name, "sha256": sha256(path)})
    return rows


def list_digest(rows: list[dict[str, str]]) -> str:
    """One SHA-256 over a file list's names and hashes (a short way to compare two lists)."""
    text = "".join(f"{r['name']} {r['sha256']}\n" for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()


def git_commit(repo: Path) -> dict[str, str | bool | None]:
    """The repository's commit and whether tracked files differ from it (``None``: no git)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def library_versions() -> dict[str, str]:
    """Python's and the main libraries' versions (those installed)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
