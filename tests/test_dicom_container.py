"""The container for DICOM (issue 42): the image installs the [dicom] extra, and a run without
``--user`` that cannot write its output folder says, in one line, to pass ``--user``.

The entry point is a shell script: it runs here under ``sh`` as user 1000 (the image's user),
with a stand-in ``lofihippseg`` on ``PATH``; building the image is ``test_container.py``'s
(slow) job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "container" / "entrypoint.sh"


def test_image_installs_the_dicom_extra():
    assert '"/src[dicom]"' in (REPO / "container" / "Containerfile").read_text()
    assert '"/src[dicom]"' in (REPO / "container" / "lofihippseg.def").read_text()
    assert '"$repo[dicom]"' in (REPO / "container" / "build.sh").read_text()  # the wheelhouse


@pytest.fixture
def space():
    """A folder user 1000 can reach (pytest's own are root's, mode 700)."""
    folder = Path(tempfile.mkdtemp(prefix="lofi-entrypoint-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_image_user(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the entry point as user 1000")
    stand_in = tmp_path / "bin"
    stand_in.mkdir(exist_ok=True)
    fake = stand_in / "lofihippseg"
    fake.write_text('#!/bin/sh\necho ran lofihippseg "$@"\n')
    fake.chmod(0o755)
    stand_in.chmod(0o755)
    env = {"PATH": f"{stand_in}:/usr/bin:/bin", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    return subprocess.run(
        ["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "sh", str(ENTRYPOINT)]
        + args,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def test_unwritable_output_says_pass_user(space):
    tmp_path = space
    locked = tmp_path / "out"
    locked.mkdir()
    locked.chmod(0o755)  # root's, not writable for user 1000
    for args in (
        ["lofihippseg", "predict", "/in/dicom", "-o", str(locked / "sub")],
        ["/bids", str(locked), "participant"],
    ):
        run = _as_image_user(args, tmp_path)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1, run.stderr
        assert lines[0].startswith("error: ") and "permission denied" in lines[0]
        assert "--user $(id -u):$(id -g)" in lines[0]
    writable = tmp_path / "open"
    writable.mkdir()
    writable.chmod(0o777)
    run = _as_image_user(["lofihippseg", "predict", "/in", "-o", str(writable)], tmp_path)
    assert run.returncode == 0 and run.stdout.startswith("ran lofihippseg predict"), run.stderr
