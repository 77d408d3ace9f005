"""DICOM out: the label map as a DICOM Segmentation, the volumes as a DICOM Structured Report.

Needs the optional ``[dicom]`` extra (highdicom, pydicom).

- :func:`labels_on_frames` reads the label map (on dcm2niix's NIfTI grid) back onto each source
  image's own pixel grid, from the source's Image Position/Orientation and Pixel Spacing: every
  pixel centre must fall on a voxel centre (to 0.05 voxel), so nothing is resampled.
- :func:`build_seg` makes a binary DICOM SEG (highdicom) on the source series' frame of
  reference, referencing its instances, with two segments: 1 = left hippocampus, 2 = right
  (SNOMED CT 5366008 *Hippocampus*, with the laterality 7771000 *Left* / 24028007 *Right* as the
  segmented property's modifier and on the anatomic region), made by the algorithm
  "LoFiHippSeg" of this version.
- :func:`build_sr` makes a Comprehensive 3D SR (TID 1500 measurement report) with each side's
  volume in mL, referencing its SEG segment: structured, coded numbers a PACS or a script can
  read, tied to the segment they measure (an encapsulated PDF would be a picture of them).

The SEG and SR carry the source's patient and study modules (that is how a PACS files them with
the scan); they are the only outputs that do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lofihippseg import __version__
from lofihippseg.errors import InputError, LoFiError
from lofihippseg.io.atomic import atomic_path
from lofihippseg.io.dicom import INSTALL_HINT, DicomSeries, Frame

logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every module it copies
SIDES = ((1, "left"), (2, "right"))
# SEG / SR series numbers: the source's plus these (so a viewer lists them beside it)
SEG_SERIES_OFFSET = 1000
SR_SERIES_OFFSET = 2000
COLOURS = {1: (220, 40, 40), 2: (40, 90, 230)}  # left red, right blue, as in the QC pictures


def require_highdicom() -> Any:
    """The ``highdicom`` module, or a one-line error saying how to install it."""
    try:
        import highdicom
    except ImportError:
        raise LoFiError(f"--dicom-seg needs highdicom; {INSTALL_HINT}") from None
    return highdicom


def frame_to_voxel(frame: Frame, affine: np.ndarray) -> np.ndarray:
    """The 4x4 map from (row, column, 0, 1) of a source frame to voxel indices of the NIfTI.

    Example:
        >>> frame_to_voxel(series.frames[0], img.affine)  # doctest: +SKIP
    """
    row_dir, col_dir = frame.orientation[:3], frame.orientation[3:]
    pixel_to_lps = np.eye(4)
    pixel_to_lps[:3, 0] = col_dir * frame.spacing[0]  # down a column: the next row
    pixel_to_lps[:3, 1] = row_dir * frame.spacing[1]  # along a row: the next column
    pixel_to_lps[:3, 3] = frame.position
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return np.linalg.inv(affine) @ lps_to_ras @ pixel_to_lps


def labels_on_frames(labels: np.ndarray, affine: np.ndarray, frames: list[Frame]) -> np.ndarray:
    """The label map on each source frame's pixel grid, shape ``(n_frames, rows, columns)``.

    Args:
        labels: the label map on the NIfTI grid (voxel indices i, j, k).
        affine: its voxel-to-RAS affine.
        frames: the source frames (any order; the result follows it).

    Raises:
        LoFiError: a frame's pixels do not fall on the label map's voxels (the conversion's
            grid is not the series' own).

    Example:
        >>> labels_on_frames(img.get_fdata(), img.affine, series.frames)  # doctest: +SKIP
    """
    out = np.zeros((len(frames), *frames[0].shape), dtype=np.uint8)
    for n, frame in enumerate(frames):
        m = frame_to_voxel(frame, affine)
        rows, cols = frame.shape
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        ijk = m[:3, 0, None, None] * r + m[:3, 1, None, None] * c + m[:3, 3, None, None]
        index = np.rint(ijk).astype(int)
        if np.abs(ijk - index).max() > 0.05:
            raise LoFiError(
                f"{frame.path}: its pixels do not lie on the converted volume's voxels "
                f"(off by {np.abs(ijk - index).max():.2f} voxel); cannot write a SEG on it"
            )
        inside = np.all((index >= 0) & (index < np.array(labels.shape)[:, None, None]), axis=0)
        if not inside.all():
            raise LoFiError(f"{frame.path}: outside the converted volume; cannot write a SEG")
        out[n] = labels[index[0], index[1], index[2]]
    return out


def _source_datasets(series: DicomSeries) -> tuple[list[Any], list[Frame]]:
    """The source datasets (pixel data left out) and the frames in the order highdicom wants:
    single-frame images one per file, sorted along the normal; a multi-frame file's frames in
    their own order."""
    import pydicom

    paths = list(dict.fromkeys(f.path for f in series.frames))
    datasets = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in paths]
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        return datasets, sorted(series.frames, key=lambda f: f.index)
    return datasets, list(series.frames)


def _segment(hd: Any, number: int, side: str) -> Any:
    from pydicom.sr.codedict import codes

    laterality = codes.SCT.Left if side == "left" else codes.SCT.Right
    region = hd.sr.CodedConcept(
        codes.SCT.Hippocampus.value, codes.SCT.Hippocampus.scheme_designator, "Hippocampus"
    )
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"{side.capitalize()} hippocampus",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Hippocampus,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="LoFiHippSeg", family=codes.DCM.ArtificialIntelligence, version=__version__
        ),
        tracking_uid=hd.UID(),
        tracking_id=f"{side} hippocampus",
        anatomic_regions=[region],
        display_color=hd.color.CIELabColor.from_rgb(*COLOURS[number]),
    )
    modifier = hd.sr.CodedConcept(laterality.value, laterality.scheme_designator, side.title())
    description.SegmentedPropertyTypeModifierCodeSequence = [modifier]
    description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [modifier]
    return description


def build_seg(series: DicomSeries, labels: np.ndarray, affine: np.ndarray) -> Any:
    """A DICOM SEG of the left (1) and right (2) labels on the source series' own grid.

    Args:
        series: the source series (its frames' geometry as read by ``io.dicom``).
        labels: the label map on the NIfTI grid the series was converted to.
        affine: that grid's voxel-to-RAS affine.

    Returns:
        The highdicom Segmentation (a pydicom Dataset).

    Example:
        >>> seg = build_seg(series, img.get_fdata(), img.affine)  # doctest: +SKIP
    """
    hd = require_highdicom()
    datasets, frames = _source_datasets(series)
    on_frames = labels_on_frames(np.asarray(labels), affine, frames)
    masks = np.stack([on_frames == value for value, _ in SIDES], axis=-1)
    try:
        return hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=masks,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment(hd, value, side) for value, side in SIDES],
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_OFFSET + series.number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="LoFiHippSeg",
            manufacturer_model_name="LoFiHippSeg",
            software_versions=__version__,
            device_serial_number="0",
            series_description="LoFiHippSeg hippocampus"[:64],
            content_label="HIPPOCAMPUS",
            content_description="Left and right hippocampus (LoFiHippSeg)",
            omit_empty_frames=False,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(series.label, f"cannot make a DICOM SEG on it ({exc})") from None


def build_sr(series: DicomSeries, seg: Any, volumes_ml: dict[str, float | None]) -> Any:
    """A Comprehensive 3D SR (TID 1500) with each side's volume in mL, referencing ``seg``.

    Example:
        >>> sr = build_sr(series, seg, {"left": 2.29, "right": 2.57})  # doctest: +SKIP
    """
    hd = require_highdicom()
    from pydicom.sr.codedict import codes

    datasets, _ = _source_datasets(series)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="LoFiHippSeg", model_name=f"LoFiHippSeg {__version__}"
        ),
    )
    algorithm = hd.sr.AlgorithmIdentification(name="LoFiHippSeg", version=__version__)
    millilitre = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
    groups = []
    for number, side in SIDES:
        value = volumes_ml.get(side)
        if value is None or not np.isfinite(value):
            continue
        laterality = codes.SCT.Left if side == "left" else codes.SCT.Right
        site = hd.sr.FindingSite(codes.SCT.Hippocampus, laterality=laterality)
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=f"{side} hippocampus"
                ),
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, number),
                finding_type=codes.SCT.Hippocampus,
                finding_sites=[site],
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.Volume,
                        value=round(float(value), 3),
                        unit=millilitre,
                        algorithm_id=algorithm,
                    )
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("24590-2", "LN", "MRI Brain"),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*datasets, seg],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_OFFSET + series.number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="LoFiHippSeg",
        is_complete=True,
        series_description="LoFiHippSeg hippocampal volumes",
    )


def save_dicom(dataset: Any, path: str | Path) -> Path:
    """Write a DICOM dataset atomically (a reader never sees half a file)."""
    with atomic_path(path, ".dcm") as tmp:
        dataset.save_as(str(tmp), enforce_file_format=True)
    return Path(path)
