"""User-facing errors: one readable line, no traceback."""

from __future__ import annotations

from pathlib import Path


class LoFiError(Exception):
    """An error caused by the user's input or settings; the CLI prints it on one line.

    Example:
        >>> raise LoFiError("scan.nii.gz: not a NIfTI file")
    """


class InputError(LoFiError):
    """A bad input file (missing, corrupt, wrong shape, NaN, ...)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
