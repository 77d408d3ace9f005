"""DICOM in, DICOM SEG/SR out (issue 42), end to end with the shipped model.

A DICOM tree is written with pydicom from the shipped example scan (stored right-to-left, as
LPS scanners store it) in a folder named after the patient, beside a localiser, a scout, a 2D,
a derived and a CT series. ``lofihippseg predict TREE --dicom-seg`` runs once (in a subprocess,
so its logs are caught too); its labels and volumes are compared with the same scan given as
NIfTI (the tree's own dcm2niix conversion, on the original's grid), its SEG read back onto the
source grid voxel for voxel and validated with dciodvfy where installed, and every output is
searched for the patient's name and ID.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="needs the [dicom] extra (pydicom)")
hd = pytest.importorskip("highdicom", reason="needs the [dicom] extra (highdicom)")
pytest.importorskip("dcm2niix", reason="needs the [dicom] extra (dcm2niix)")

from dicom_fixtures import (  # noqa: E402
    PATIENT_ID,
    PATIENT_NAME,
    Study,
    write_series,
)

import lofihippseg  # noqa: E402
from lofihippseg.inference.api import PredictSettings, predict  # noqa: E402
from lofihippseg.io.dcm2niix import dcm2niix_binary  # noqa: E402
from lofihippseg.reporting.volumes import read_rows  # noqa: E402

EXAMPLE = Path(lofihippseg.__file__).parent / "data/examples/synthetic_lowfield_example.nii.gz"
IDENTIFYING = ("Doeveldt", "Johanna", PATIENT_ID, "19700101")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


@pytest.fixture(scope="module")
def example():
    img = nib.load(str(EXAMPLE))
    return np.asanyarray(img.dataobj), img.affine


@pytest.fixture(scope="module")
def tree(tmp_path_factory, example) -> Path:
    """The DICOM tree, under a folder named after the patient (as PACS exports often are)."""
    data, affine = example
    root = tmp_path_factory.mktemp("dicom") / "Doeveldt_Johanna_PID7731942"
    study = Study()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    write_series(root / "s3", data[::-1], affine @ flip, 3, "T2 AXI", study)
    small = data[::4, ::4, 40:43]
    write_series(root / "s1", small, affine, 1, "Loc", study, ("ORIGINAL", "PRIMARY", "LOCALIZER"))
    write_series(root / "s2", small, affine, 2, "3-plane scout", study)
    write_series(root / "s7", data[:, :, 50:51], affine, 7, "T2 one slice", study)
    derived = ("DERIVED", "SECONDARY", "MPR")
    write_series(root / "s8", small, affine, 8, "MPR Doeveldt", study, derived)
    write_series(root / "s9", small, affine, 9, "CT head", study, modality="CT")
    return root


@pytest.fixture(scope="module")
def dicom_run(tree, tmp_path_factory):
    """``lofihippseg predict TREE -o OUT --dicom-seg`` in a subprocess: (rc, stdout+stderr, OUT)."""
    out = tmp_path_factory.mktemp("dicom_out") / "out"
    before = snapshot(tree)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    run = subprocess.run(
        [sys.executable, "-m", "lofihippseg", "predict", str(tree), "-o", str(out)]
        + ["--dicom-seg", "--quiet", "--report"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert snapshot(tree) == before, "something was written into the input folder"
    return run.returncode, run.stdout + run.stderr, out


def test_series_found_skipped_and_named(dicom_run):
    code, text, out = dicom_run
    assert code == 0, text
    assert "Traceback" not in text
    assert "(series 1 'Loc'): a localiser/scout" in text
    assert "(series 2 '3-plane scout'): a localiser/scout" in text
    assert "(series 7 'T2 one slice'): a 2D series (one slice)" in text
    assert "a derived series (Image Type DERIVED)" in text
    assert "(series 9 'CT head'): not an MR series (modality CT)" in text
    assert (out / "S003_T2_AXI_hipp.nii.gz").is_file()
    assert sorted(p.name for p in out.glob("*_seg.dcm")) == ["S003_T2_AXI_seg.dcm"]
    assert (out / "report.html").is_file()  # searched for patient data below


def test_same_labels_and_volumes_as_nifti(dicom_run, tree, tmp_path):
    _, text, out = dicom_run
    ours = nib.load(str(out / "S003_T2_AXI_hipp.nii.gz"))
    row = next(r for r in read_rows(out / "volumes.csv") if r["case"] == "S003_T2_AXI")
    # the tree's own dcm2niix conversion, given as NIfTI
    conv = tmp_path / "conv"
    conv.mkdir()
    subprocess.run(
        [dcm2niix_binary(), "-z", "y", "-f", "T2", "-o", str(conv), str(tree / "s3")],
        check=True,
        capture_output=True,
    )
    report = predict([conv / "T2.nii.gz"], tmp_path / "o", None, PredictSettings(qc=False))
    theirs = nib.load(str(tmp_path / "o" / "T2_hipp.nii.gz"))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    for side in ("left_ml", "right_ml"):
        assert float(row[side]) == pytest.approx(float(report.results[0].row[side]), abs=1e-9)
    # the original NIfTI's grid, once in RAS voxel order
    canonical = nib.as_closest_canonical(ours)
    np.testing.assert_allclose(canonical.affine, nib.load(str(EXAMPLE)).affine, atol=1e-3)
    assert float(row["left_ml"]) > 0.5 and float(row["right_ml"]) > 0.5


def _source(tree: Path) -> list:
    files = sorted((tree / "s3").iterdir())
    return [pydicom.dcmread(f) for f in files]


def test_seg_reads_back_on_the_source_grid(dicom_run, tree, example):
    """The SEG, read back per source instance, equals the NIfTI output voxel for voxel (the
    NIfTI put in RAS order by nibabel and stored right-to-left as the series was written)."""
    _, _, out = dicom_run
    seg = hd.seg.segread(out / "S003_T2_AXI_seg.dcm")
    sources = _source(tree)
    uids = [ds.SOPInstanceUID for ds in sources]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    canonical = nib.as_closest_canonical(nib.load(str(out / "S003_T2_AXI_hipp.nii.gz")))
    np.testing.assert_allclose(canonical.affine, example[1], atol=1e-3)
    stored = np.asarray(canonical.dataobj)[::-1]  # the series stores the scan right-to-left
    assert {1, 2} <= set(np.unique(stored))
    for ds, frame in zip(sources, frames, strict=True):
        k = int(ds.InstanceNumber) - 1
        np.testing.assert_array_equal(frame, stored[:, :, k].T, err_msg=f"slice {k}")
    # left (1) on the subject's left: larger LPS x (+x points to the patient's left)
    xs = {1: [], 2: []}
    for ds, frame in zip(sources, frames, strict=True):
        row_dir = np.array(ds.ImageOrientationPatient[:3], float)
        cols = np.arange(frame.shape[1])
        x = float(ds.ImagePositionPatient[0]) + cols * float(ds.PixelSpacing[1]) * row_dir[0]
        for value in (1, 2):
            xs[value].extend(np.broadcast_to(x, frame.shape)[frame == value])
    assert np.mean(xs[1]) > 0 > np.mean(xs[2]), (np.mean(xs[1]), np.mean(xs[2]))
    # what a PACS needs: the source's frame of reference, series and patient; coded segments
    raw = pydicom.dcmread(out / "S003_T2_AXI_seg.dcm")
    assert raw.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert raw.PatientID == PATIENT_ID and raw.StudyInstanceUID == sources[0].StudyInstanceUID
    segments = raw.SegmentSequence
    assert [s.SegmentLabel for s in segments] == ["Left hippocampus", "Right hippocampus"]
    for s, laterality in zip(segments, ("7771000", "24028007"), strict=True):
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "5366008"
        assert s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert s.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == laterality
        assert s.SegmentAlgorithmName == "LoFiHippSeg"
        algorithm = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmVersion == lofihippseg.__version__


def test_sr_holds_the_volumes(dicom_run):
    _, _, out = dicom_run
    row = next(r for r in read_rows(out / "volumes.csv") if r["case"] == "S003_T2_AXI")
    sr = hd.sr.srread(out / "S003_T2_AXI_sr.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    found = {}
    for group in groups:
        side = group.finding_sites[0].laterality.meaning.lower()
        (measurement,) = group.get_measurements()
        assert measurement.unit.value == "ml"
        found[side] = measurement.value
        assert group.referenced_segment is not None
    assert found["left"] == pytest.approx(float(row["left_ml"]), abs=1e-3)
    assert found["right"] == pytest.approx(float(row["right_ml"]), abs=1e-3)


def test_no_identifying_data_in_outputs(dicom_run):
    """Names, logs, sidecars, tables, label maps and pictures carry no patient name or ID;
    only the SEG and SR (DICOM objects filed with the patient's scan) carry the patient module."""
    _, text, out = dicom_run
    for word in IDENTIFYING:
        assert word.lower() not in text.lower(), f"{word} in the console output"
    for path in out.rglob("*"):
        assert not any(w.lower() in str(path.relative_to(out)).lower() for w in IDENTIFYING)
        if path.is_dir() or path.suffix == ".dcm":
            continue
        content = path.read_bytes()
        if path.name.endswith(".gz"):
            content = gzip.decompress(content)
        for word in IDENTIFYING:
            assert word.lower().encode() not in content.lower(), f"{word} in {path.name}"
    sidecar = (out / "S003_T2_AXI_hipp.json").read_text()
    assert "[removed]" in sidecar and '"MagneticFieldStrength": 0.064' in sidecar
    assert str(PATIENT_NAME) not in sidecar


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy (Debian package dicom3tools) is not installed; CI installs it",
)
def test_seg_and_sr_pass_dciodvfy(dicom_run):
    _, _, out = dicom_run
    for name in ("S003_T2_AXI_seg.dcm", "S003_T2_AXI_sr.dcm"):
        assert _dciodvfy_errors(out / name) == [], name
