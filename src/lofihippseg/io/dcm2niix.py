"""dcm2niix: one DICOM series into one NIfTI volume, in a temporary folder.

The converter is the binary that the ``dcm2niix`` PyPI package ships (part of the ``[dicom]``
extra), else a ``dcm2niix`` on ``PATH``. Each series is linked into a folder of its own under
a temporary folder outside the input, so dcm2niix sees that series only and nothing is ever
written beside the input; its messages name the input's files, with patient data removed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lofihippseg.errors import InputError, LoFiError
from lofihippseg.io.dicom import INSTALL_HINT, DicomSeries, scrub


def dcm2niix_binary() -> str:
    """The dcm2niix executable: the one the ``dcm2niix`` PyPI package ships, else ``PATH``'s.

    Raises:
        LoFiError: neither is there.

    Example:
        >>> dcm2niix_binary()  # doctest: +SKIP
        '.../site-packages/dcm2niix/dcm2niix'
    """
    try:
        import dcm2niix

        if Path(dcm2niix.bin).is_file() and os.access(dcm2niix.bin, os.X_OK):
            return str(dcm2niix.bin)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("dcm2niix")
    if found:
        return found
    raise LoFiError(f"DICOM input needs the dcm2niix converter; {INSTALL_HINT}")


def convert_series(series: DicomSeries, work: Path, binary: str | None = None) -> Path:
    """Convert one usable series with dcm2niix into ``work/CASE.nii``.

    The series' files are linked into a folder of their own under ``work`` (so dcm2niix sees
    this series only, and nothing is written beside the input); the NIfTI header's free-text
    fields are cleared.

    Raises:
        InputError: dcm2niix failed, or made no single 3D volume (the series named).

    Example:
        >>> convert_series(series, Path("/tmp/work"))  # doctest: +SKIP
        PosixPath('/tmp/work/S003_T2_AXI.nii')
    """
    import nibabel as nib

    binary = binary or dcm2niix_binary()
    src = work / f"{series.case}.in"
    dst = work / f"{series.case}.out"
    src.mkdir(parents=True)
    dst.mkdir()
    for i, path in enumerate(series.files):
        (src / f"{i:06d}.dcm").symlink_to(path.resolve())
    args = [binary, "-z", "n", "-b", "n", "-f", "series", "-i", "n", "-v", "0", "-o", str(dst)]
    try:
        run = subprocess.run(
            [*args, str(src)], capture_output=True, text=True, errors="replace", timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(series.label, f"dcm2niix did not run ({exc})") from None
    made = sorted(dst.glob("*.nii"))
    if run.returncode != 0 or not made:
        said = [
            line.strip()
            for line in (run.stderr + run.stdout).splitlines()
            if re.search(r"error|warning|unsupported|unable", line, re.I)
        ]
        reason = said[-1] if said else f"exit {run.returncode}"
        reason = re.sub(  # name the input's file, not its link in the temporary folder
            re.escape(str(src)) + r"/(\d{6})\.dcm",
            lambda m: str(series.files[int(m.group(1))]),
            reason,
        )
        reason = scrub(reason.replace(str(work), "TMP"), series.identifying)[:300]
        raise InputError(series.label, f"dcm2niix could not convert this series ({reason})")
    if len(made) > 1:
        raise InputError(
            series.label,
            f"dcm2niix made {len(made)} volumes of it (echoes or varying slice spacing?); "
            "export one 3D volume per series",
        )
    img = nib.load(str(made[0]))
    if len(img.shape) > 3 and int(np.prod(img.shape[3:])) > 1:
        raise InputError(series.label, f"a 4D series {img.shape}; export one 3D volume")
    for key in ("descrip", "aux_file", "db_name", "intent_name"):
        if key in img.header:
            img.header[key] = b""
    out = work / f"{series.case}.nii"
    nib.save(img, str(out))
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    return out


def work_folder() -> Path:
    """A new temporary folder for conversions (the system's, never inside an input).

    Example:
        >>> work_folder()  # doctest: +SKIP
        PosixPath('/tmp/lofihippseg-dicom-x1y2z3')
    """
    return Path(tempfile.mkdtemp(prefix="lofihippseg-dicom-"))
