"""Where :func:`lofihippseg.inference.api.predict` writes each case's outputs.

An output layout names a case, its output files, the cohort table its row goes to and the
record of its failure. ``predict`` uses :class:`lofihippseg.inference.api.FlatLayout` (every
case's files side by side in one folder, ``volumes.csv`` beside them) unless told otherwise;
the BIDS App passes :class:`lofihippseg.bids.derivatives.BidsLayout` instead, so both commands
run the same prediction code.

Keys of :meth:`OutputLayout.paths`: ``labels``, ``sidecar`` (both required: together they mark
a finished case), ``prob_left``, ``prob_right``, ``uncertainty``, ``qc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lofihippseg.io.nifti import strip_suffix

FAILURES_DIR = "logs"
FAILURE_SUFFIX = "_failed.json"


class OutputLayout:
    """Base layout: subclasses implement :meth:`paths`; the rest has flat defaults."""

    def case_id(self, path: Path) -> str:
        """The case name of an input (its file name without the image extension)."""
        return strip_suffix(path)

    def paths(self, out_dir: Path, case: str, path: Path) -> dict[str, Path]:
        """Output files of one case (see the module docstring for the keys)."""
        raise NotImplementedError

    def table(self, out_dir: Path) -> Path | None:
        """The cohort CSV that gets the case's row (None: no shared table is written)."""
        return None

    def sidecar_extra(self, case: str, path: Path) -> dict[str, Any]:
        """Extra keys merged into the case's JSON sidecar."""
        return {}

    def failure_path(self, out_dir: Path, case: str) -> Path:
        """Where a failed case's one-line error is recorded (removed once the case succeeds).

        One file per case, so shards running at the same time never write the same file;
        the cohort report lists these.
        """
        return out_dir / FAILURES_DIR / f"{case}{FAILURE_SUFFIX}"
