"""DICOM series of every shape (issue 42): oblique, LPS, enhanced multi-frame, a real scanner
file; bad series with one line each; a session's stacks in one folder.

The geometry tests need no model: a series' dcm2niix conversion is labelled from its own
intensities, the SEG is built from those labels and read back, and each source pixel must carry
the label of its own intensity (any shift, flip or transposition would break that).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

pydicom = pytest.importorskip("pydicom", reason="needs the [dicom] extra (pydicom)")
hd = pytest.importorskip("highdicom", reason="needs the [dicom] extra (highdicom)")
pytest.importorskip("dcm2niix", reason="needs the [dicom] extra (dcm2niix)")

import nibabel as nib  # noqa: E402
from dicom_fixtures import (  # noqa: E402
    Study,
    oblique_affine,
    write_enhanced,
    write_series,
)

import lofihippseg  # noqa: E402
from lofihippseg.errors import LoFiError  # noqa: E402
from lofihippseg.io.dicom import find_series, header_fields  # noqa: E402
from lofihippseg.io.dicom_seg import build_seg  # noqa: E402
from lofihippseg.workflows.dicom import convert_inputs  # noqa: E402

EXAMPLE = Path(lofihippseg.__file__).parent / "data/examples/synthetic_lowfield_example.nii.gz"


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _rule(values: np.ndarray) -> np.ndarray:
    """Labels from intensities: 1 in one band, 2 in another (int16 values 0..2000)."""
    out = np.zeros(values.shape, np.uint8)
    out[(values > 400) & (values < 900)] = 1
    out[values >= 1500] = 2
    return out


def _random_volume(shape=(20, 24, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2001, size=shape).astype(np.int16)


def _seg_matches_pixels(conversion, case: str) -> None:
    tmp, series = next((p, s) for p, s in conversion.converted.items() if s.case == case)
    img = nib.load(str(tmp))
    labels = _rule(np.asarray(img.dataobj))
    seg = build_seg(series, labels, img.affine)
    back = hd.seg.Segmentation.from_dataset(seg)
    files = sorted({f.path for f in series.frames})
    for path in files:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            got = back.get_pixels_by_source_frame(
                ds.SOPInstanceUID, list(range(1, pixels.shape[0] + 1)), combine_segments=True
            )
        else:
            got = back.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True)
            pixels = pixels[None]
        np.testing.assert_array_equal(got, _rule(pixels), err_msg=f"{case} {path.name}")


def test_oblique_lps_and_enhanced_series_map_exactly(tmp_path):
    data = _random_volume()
    study = Study()
    root = tmp_path / "in"
    write_series(
        root / "obl", data, oblique_affine((1.5, 1.2, 3.0), data.shape, 25.0), 4, "OBL", study
    )
    flip = np.diag([-2.0, 2.0, 4.0, 1.0])  # stored right-to-left (LPS order), slices 4 mm
    write_series(root / "lps", data, flip, 5, "T2 LPS", study)
    write_enhanced(
        root / "enh" / "frames.dcm", data, oblique_affine((1, 1, 2), data.shape), 6, study=study
    )
    conversion = convert_inputs([root])
    try:
        assert conversion.failed == []
        cases = sorted(s.case for s in conversion.converted.values())
        assert cases == ["S004_OBL", "S005_T2_LPS", "S006_T2_AXI_enhanced"]
        for case in cases:
            _seg_matches_pixels(conversion, case)
    finally:
        conversion.close()
    assert not conversion.work.exists()


def test_real_scanner_file_from_pydicom(tmp_path, capsys):
    """pydicom's bundled MR_small.dcm (a real scanner's image, one 64x64 slice): read, its
    header fields kept without patient data, and skipped as derived/2D with one line."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's bundled MR_small.dcm is not there")
    folder = tmp_path / "mr"
    folder.mkdir()
    shutil.copy(path, folder / "IM0001")
    series, unreadable = find_series([folder])
    assert unreadable == [] and len(series) == 1
    (s,) = series
    assert s.header["Modality"] == "MR" and "PatientName" not in s.header
    assert s.skip == "a derived series (Image Type DERIVED)"
    assert str(pydicom.dcmread(path).PatientName) not in s.case
    fields = header_fields(pydicom.dcmread(path))
    assert set(fields) <= set(lofihippseg.io.dicom.HEADER_FIELDS)
    code, _, err = run_cli(["predict", folder, "-o", tmp_path / "out"], capsys)
    line = one_error_line(err)
    assert code == 2 and "no series to segment (1 skipped" in line, err
    assert "skipped" in err and "a derived series" in err
    assert not (tmp_path / "out").exists()


def test_bad_series_one_line_each_batch_goes_on(tmp_path, capsys):
    data = _random_volume((32, 36, 16))
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    study = Study()
    root = tmp_path / "Doeveldt_export"
    write_series(root / "good", data, affine, 2, "T2 good", study)
    write_series(root / "gap", data, affine, 3, "T2 gap", study, skip_slices=(5,))
    write_series(root / "nopix", data[:, :, :4], affine, 4, "no pixels", study, pixels=False)
    write_series(root / "flat", data[:, :, :1], affine, 5, "one slice", study)
    mixed = write_series(root / "mixed", data[:, :, :4], affine, 6, "mixed", study)
    other_study = pydicom.uid.generate_uid()
    for i, f in enumerate(sorted(mixed.iterdir())):
        if i % 2:
            ds = pydicom.dcmread(f)
            ds.StudyInstanceUID = other_study
            ds.save_as(f)
    broken = write_series(root / "broken", data[:, :, :4], affine, 7, "32 bit", study)
    for f in sorted(broken.iterdir()):  # says 32 bits, holds 16: dcm2niix refuses it
        ds = pydicom.dcmread(f)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
        ds.save_as(f)
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", root, empty, "-o", out, "--no-qc"], capsys)
    assert "Traceback" not in err
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    expected = {
        "gap": "the slice spacing jumps from 3.00 mm to 6.00 mm after slice 5 of 15",
        "nopix": "DICOM without pixel data",
        "mixed": "its instances belong to 2 different studies",
        "broken": "dcm2niix could not convert this series",
        "nothing": "no DICOM files and no NIfTI/MGZ images in this folder",
    }
    assert len(errors) == len(expected), err
    for folder, words in expected.items():
        assert any(f"/{folder}" in line and words in line for line in errors), (folder, err)
    assert "(series 5 'one slice'): a 2D series (one slice)" in err
    assert "S002_T2_good" in stdout and (out / "S002_T2_good_hipp.nii.gz").is_file()
    after = [p for p in tmp_path.rglob("*") if p != out and out not in p.parents]
    assert sorted((p, p.stat().st_mtime_ns) for p in after) == before  # no file in the input
    failed = sorted(p.name for p in (out / "logs").iterdir())
    assert "S003_T2_gap_failed.json" in failed and len(failed) == len(expected)
    for line in errors:  # the patient's name in a folder name is removed from every line
        assert "Doeveldt" not in line and "[removed]_export" in line or "nothing" in line


def _stacks(folder: Path, study: Study, first: int = 3) -> list[Path]:
    """The example as a session's three thick-slice stacks (axial, coronal, sagittal)."""
    img = nib.load(str(EXAMPLE))
    data, a = np.asanyarray(img.dataobj), img.affine
    layouts = [  # (array with slices last, voxel axes of that array, description)
        (data[:, :, ::3], (0, 1, 2), "T2 AXI"),
        (data[:, ::3, :].transpose(0, 2, 1), (0, 2, 1), "T2 COR"),
        (data[::3].transpose(1, 2, 0), (1, 2, 0), "T2 SAG"),
    ]
    written = []
    for n, (array, axes, description) in enumerate(layouts):
        affine = np.eye(4)
        affine[:3, :3] = a[:3, list(axes)] @ np.diag([1, 1, 3])
        affine[:3, 3] = a[:3, 3]
        written.append(write_series(folder / f"s{n}", array, affine, first + n, description, study))
    return written


def test_session_stacks_in_one_folder_with_a_seg_per_stack(tmp_path, capsys):
    study = Study()
    root = tmp_path / "session"
    _stacks(root, study)
    scout = np.random.default_rng(1).integers(0, 2000, (16, 16, 3)).astype(np.int16)
    write_series(root / "loc", scout, np.eye(4), 1, "Survey", study)
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["predict", "--stacks", root, "-o", out, "--dicom-seg", "--no-qc", "--combine", "average"],
        capsys,
    )  # average: a third faster than superres here, the same grouping and SEG path
    assert code == 0 and "Traceback" not in err, err
    assert "(series 1 'Survey'): a localiser/scout" in err
    assert "S003_S004_S005_stacks ok" in stdout
    series, _ = find_series([root])
    stacks = [s for s in series if s.skip is None]
    sidecar = json.loads((out / "S003_S004_S005_stacks_hipp.json").read_text())
    assert [r["header"]["SeriesNumber"] for r in sidecar["dicom"]["stacks"]] == [3, 4, 5]
    assert "series 4 'T2 COR'" in sidecar["input"]
    for i, s in enumerate(stacks):
        labels = nib.load(str(out / f"S003_S004_S005_stacks_hipp_stack{i + 1}.nii.gz"))
        seg = hd.seg.segread(out / f"S003_S004_S005_stacks_stack{i + 1}_seg.dcm")
        assert (out / f"S003_S004_S005_stacks_stack{i + 1}_sr.dcm").is_file()
        from lofihippseg.io.dicom_seg import labels_on_frames

        expected = labels_on_frames(np.asarray(labels.dataobj), labels.affine, s.frames)
        got = seg.get_pixels_by_source_instance(
            [f.sop_uid for f in s.frames], combine_segments=True
        )
        np.testing.assert_array_equal(got, expected)
        assert {1, 2} <= set(np.unique(got))


def test_stacks_of_two_studies_one_line(tmp_path, capsys):
    root = tmp_path / "two"
    small = np.random.default_rng(2).integers(0, 2000, (24, 24, 8)).astype(np.int16)
    write_series(root / "a", small, np.diag([2, 2, 4, 1.0]), 3, "T2 AXI", Study())
    cor = np.array([[2, 0, 0, 0], [0, 0, 4, 0], [0, 2, 0, 0], [0, 0, 0, 1.0]])
    write_series(root / "b", small, cor, 4, "T2 COR", Study())
    code, _, err = run_cli(["predict", "--stacks", root, "-o", tmp_path / "out"], capsys)
    line = one_error_line(err)
    assert code == 2 and "series of 2 different studies; --stacks takes one session's" in line
    assert not (tmp_path / "out").exists()


def test_without_the_extra_one_line_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    import lofihippseg.io.dcm2niix as converter
    import lofihippseg.io.dicom as dicom

    write_series(tmp_path / "in", _random_volume((8, 8, 4)), np.eye(4))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now fails
    with pytest.raises(LoFiError, match=r'pip install "lofihippseg\[dicom\]"'):
        dicom.find_series([tmp_path / "in"])
    args = ["predict", tmp_path / "in", "-o", tmp_path / "out"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "DICOM input needs pydicom; install" in one_error_line(err)
    monkeypatch.setitem(sys.modules, "pydicom", pydicom)
    monkeypatch.setitem(sys.modules, "dcm2niix", None)
    monkeypatch.setattr(converter.shutil, "which", lambda name: None)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "needs the dcm2niix converter; install" in one_error_line(err)
    assert not (tmp_path / "out").exists()
