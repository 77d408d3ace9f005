"""Write DICOM MR series from NIfTI-like arrays for the DICOM tests (pydicom only).

A volume ``data[i, j, k]`` with a RAS affine becomes one MR image per ``k`` slice: pixel
(row r, column c) of slice k is voxel (c, r, k), so every series lies exactly on the volume's
grid and its dcm2niix conversion can be compared with the volume voxel for voxel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
PATIENT_NAME = "Doeveldt^Johanna"
PATIENT_ID = "PID7731942"
LPS = np.diag([-1.0, -1.0, 1.0])


class Study:
    """One patient's study: shared UIDs and patient data for its series."""

    def __init__(self, name: str = PATIENT_NAME, patient_id: str = PATIENT_ID) -> None:
        self.name = name
        self.patient_id = patient_id
        self.study_uid = generate_uid()
        self.frame_uid = generate_uid()


def _base(study: Study, sop_class: str, number: int, description: str, series_uid: str):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = study.name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyID = "1"
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC123"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.Modality = "MR"
    ds.Manufacturer = "Hyperfine"
    ds.ManufacturerModelName = "Swoop"
    ds.MagneticFieldStrength = 0.064
    ds.FrameOfReferenceUID = study.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 2500.0
    ds.EchoTime = 200.0
    ds.EchoTrainLength = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def geometry(affine: np.ndarray, k: int) -> tuple[list[float], list[float], list[float]]:
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) of slice ``k``."""
    affine = np.asarray(affine, float)
    col_step, row_step = affine[:3, 0], affine[:3, 1]  # along a row (c -> i), down (r -> j)
    position = LPS @ (affine[:3, :3] @ np.array([0.0, 0.0, k]) + affine[:3, 3])
    orientation = np.concatenate(
        [LPS @ col_step / np.linalg.norm(col_step), LPS @ row_step / np.linalg.norm(row_step)]
    )
    spacing = [float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))]

    def ds(values) -> list[float]:  # DS values fit 16 characters
        return [round(float(v), 6) for v in values]

    return ds(position), ds(orientation), ds(spacing)


def to_int16(data: np.ndarray) -> np.ndarray:
    """The volume scaled into 0..2000 as int16 (integer data is kept as it is)."""
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.int16)
    lo, hi = float(data.min()), float(data.max())
    return np.round((data - lo) / max(hi - lo, 1e-6) * 2000).astype(np.int16)


def write_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    number: int = 3,
    description: str = "T2 AXI",
    study: Study | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    skip_slices: tuple[int, ...] = (),
    modality: str = "MR",
    pixels: bool = True,
) -> Path:
    """Write ``data`` (i, j, k; RAS ``affine``) as a classic MR series, one file per slice."""
    study = study or Study()
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    values = to_int16(data)
    thickness = round(float(np.linalg.norm(np.asarray(affine, float)[:3, 2])), 6)
    for k in range(values.shape[2]):
        if k in skip_slices:
            continue
        ds = _base(study, MR_STORAGE, number, description, series_uid)
        ds.Modality = modality
        ds.ImageType = list(image_type)
        ds.InstanceNumber = k + 1
        position, orientation, spacing = geometry(affine, k)
        ds.ImagePositionPatient = position
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = spacing
        ds.SliceThickness = thickness
        ds.Rows, ds.Columns = values.shape[1], values.shape[0]
        if pixels:
            ds.PixelData = np.ascontiguousarray(values[:, :, k].T).tobytes()
        ds.save_as(folder / f"IM{number:03d}_{k + 1:04d}", enforce_file_format=True)
    return folder


def write_enhanced(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    number: int = 5,
    description: str = "T2 AXI enhanced",
    study: Study | None = None,
) -> Path:
    """Write ``data`` as one Enhanced MR Image Storage file (one frame per slice)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    study = study or Study()
    ds = _base(study, ENHANCED_MR_STORAGE, number, description, generate_uid())
    values = to_int16(data)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    ds.InstanceNumber = 1
    ds.ContentDate = "20240301"
    ds.ContentTime = "101500"
    ds.AcquisitionDateTime = "20240301101500"
    ds.NumberOfFrames = values.shape[2]
    ds.Rows, ds.Columns = values.shape[1], values.shape[0]
    thickness = round(float(np.linalg.norm(np.asarray(affine, float)[:3, 2])), 6)
    _, orientation, spacing = geometry(affine, 0)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = spacing
    measures.SliceThickness = thickness
    shared.PixelMeasuresSequence = Sequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = orientation
    shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(values.shape[2]):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = geometry(affine, k)[0]
        item.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.ascontiguousarray(np.transpose(values, (2, 1, 0))).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def oblique_affine(spacing: tuple[float, float, float], shape, degrees: float = 20.0):
    """A RAS affine rotated about the left-right and the vertical axis, centred on the volume."""
    a = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    b = np.deg2rad(degrees / 2)
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(shape, float) / 2)
    return affine


def read_patient(path: Path) -> tuple[str, str]:
    """(PatientName, PatientID) of a DICOM file."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.PatientName), str(ds.PatientID)
