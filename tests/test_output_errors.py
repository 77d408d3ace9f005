"""Errors of the output folder: a full disk, no permission (the container's user)."""

from __future__ import annotations

import errno
import tempfile

import pytest
from cohort_helpers import BrightNet
from conftest import write_nifti
from test_predict import fake_model, settings, synthetic_head

from lofihippseg import config
from lofihippseg.errors import LoFiError
from lofihippseg.inference import api
from lofihippseg.inference.api import predict
from lofihippseg.io.paths import ensure_writable_dir


def test_a_full_disk_names_the_output_folder_and_leaves_no_outputs(tmp_path, monkeypatch):
    scans = [write_nifti(tmp_path / "in" / f"case{i}.nii.gz", synthetic_head()) for i in (0, 1)]
    out = tmp_path / "out"
    real_save_json = config.save_json

    def full_for_case1(data, path, *args, **kwargs):
        if str(path).endswith("case1_hipp.json"):  # the sidecar, the last file of a case
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_json(data, path, *args, **kwargs)

    monkeypatch.setattr(api, "save_json", full_for_case1)
    report = predict(scans, out, fake_model(BrightNet()), settings(roi="off"), progress=False)
    assert report.exit_code == 1 and [r.case for r in report.failed] == ["case1"]
    line = report.error_lines()[0]
    assert line.startswith(f"error: {out}: no space left on device") and "case1" in line
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("case1"))
    assert left == [], left  # the label map and QC picture written before it are gone
    assert (out / "case0_hipp.json").is_file() and (out / "case0_hipp.nii.gz").is_file()


def test_an_unwritable_output_folder_says_what_to_do(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    monkeypatch.delenv("LOFIHIPPSEG_CONTAINER", raising=False)
    with pytest.raises(LoFiError, match="Permission denied.*permissions or choose another -o"):
        ensure_writable_dir(tmp_path / "out")
    monkeypatch.setenv("LOFIHIPPSEG_CONTAINER", "1")  # set in the container image
    with pytest.raises(LoFiError) as exc:
        ensure_writable_dir(tmp_path / "out")
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'out'}: cannot write there (Permission denied)")
    assert '--user "$(id -u):$(id -g)"' in message and "\n" not in message
