"""NIfTI/MGZ reading and writing that keeps every input's geometry.

Images are read into a float32 array in the closest canonical (RAS+) voxel order, so that the
first array axis runs from the subject's left to right. Label maps are written back on exactly
the input's voxel grid, affine and header (qform/sform codes kept), as uint8.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from lofihippseg.errors import InputError
from lofihippseg.io.atomic import atomic_path
from lofihippseg.io.geometry import grid_difference
from lofihippseg.io.paths import absent_problem, is_absent_file

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def strip_suffix(path: str | Path) -> str:
    """Return the file name without its image suffix (``a/b/CASE.nii.gz`` -> ``CASE``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_image_file(path: str | Path) -> bool:
    """True when the path has a NIfTI or MGH suffix."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@dataclass
class Volume:
    """A 3D image in canonical (RAS+) voxel order, with what is needed to go back.

    Attributes:
        data: float32 array in canonical order (axis 0 = left->right, 1 = posterior->anterior,
            2 = inferior->superior, up to obliquity).
        affine: voxel-to-world (RAS mm) affine of ``data``.
        spacing: voxel size in mm along the three axes of ``data``.
        source: the image as it was loaded (its header, affine and shape are kept for writing).
        path: where it was read from, if anywhere.
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source: nib.spatialimages.SpatialImage
    path: Path | None = None

    @property
    def name(self) -> str:
        """Case name: the file name without its suffix."""
        return strip_suffix(self.path) if self.path else "volume"

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres: |det| of the affine's 3x3 part / 1000.

        Equal to the product of the voxel sizes for orthogonal axes; right for sheared
        (non-orthogonal) affines too, where that product overestimates the volume.
        """
        return voxel_volume_ml(self.affine)

    def to_source_grid(self, array: np.ndarray) -> np.ndarray:
        """Reorder an array from canonical order back to the source file's voxel order."""
        ornt = io_orientation(self.source.affine)
        back = ornt_transform(io_orientation(self.affine), ornt)
        # io_orientation(self.affine) is the identity (canonical), so this undoes ``ornt``.
        return apply_orientation(array, back)


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL from a voxel-to-world affine (|det| of its 3x3 part / 1000).

    Example:
        >>> voxel_volume_ml(np.diag([2.0, 1.0, 1.5, 1.0]))
        0.003
    """
    return abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def _check_geometry(img: nib.spatialimages.SpatialImage, path: Path) -> None:
    """Warn about headers whose orientation cannot be trusted."""
    header = img.header
    if not isinstance(header, nib.Nifti1Header):
        return
    qcode = int(header["qform_code"])
    scode = int(header["sform_code"])
    if qcode == 0 and scode == 0:
        log.warning("%s: qform and sform codes are both 0; orientation is a guess", path)
    elif qcode > 0 and scode > 0:
        qform = header.get_qform()
        sform = header.get_sform()
        if not np.allclose(qform, sform, atol=1e-3):
            log.warning("%s: qform and sform disagree; using the sform", path)


def looks_like_dicom(path: str | Path) -> bool:
    """True for a DICOM file (``.dcm`` suffix or the ``DICM`` marker at byte 128)."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_folder_hint(folder: str | Path) -> str | None:
    """A conversion hint when a folder holds DICOM files (checks a few files only), else None."""
    folder = Path(folder)
    try:
        files = [p for p in sorted(folder.iterdir())[:50] if p.is_file()]
    except OSError:
        return None
    if any(looks_like_dicom(p) for p in files[:20]):
        return (
            "holds DICOM files; convert the series to NIfTI first, e.g. "
            f"`dcm2niix -z y -o OUT_FOLDER {folder}`"
        )
    return None


def _check_affine(affine: np.ndarray, path: Path) -> None:
    """Refuse affines that do not map voxels into 3D space (non-finite or singular)."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    if not np.isfinite(linear).all():
        raise InputError(path, "the affine has NaN or infinite entries; fix the qform/sform")
    scale = float(np.prod(np.sqrt((linear**2).sum(axis=0))))
    if scale == 0 or abs(float(np.linalg.det(linear))) < 1e-6 * scale:
        raise InputError(
            path,
            "singular affine: the voxel axes do not span 3D space (a zero voxel size or two "
            "parallel axes in the qform/sform); fix the header",
        )


def _load_raw(
    path: str | Path, as_float32: bool = False
) -> tuple[nib.spatialimages.SpatialImage, np.ndarray, Path]:
    """The image and its (scaled) voxel array; ``as_float32``: scaled in float32 (half the
    memory and time of nibabel's float64) unless it is stored in float64."""
    path = Path(path)
    if is_absent_file(path):
        raise InputError(path, absent_problem(path))
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        hint = dicom_folder_hint(path)
        raise InputError(path, hint or "is a folder, expected a .nii, .nii.gz or .mgz file")
    if looks_like_dicom(path):
        raise InputError(
            path,
            "a DICOM file; convert the series to NIfTI first, e.g. "
            f"`dcm2niix -z y -o OUT_FOLDER {path.parent}`",
        )
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for foreign files
        raise InputError(path, f"not a readable NIfTI/MGZ image ({type(exc).__name__})") from None
    if isinstance(img, nib.AnalyzeImage) and not isinstance(img, nib.Nifti1Pair):
        raise InputError(
            path,
            "Analyze 7.5 (.hdr/.img) images carry no orientation, so left and right cannot be "
            "told apart; convert the original scan to NIfTI (e.g. `dcm2niix` from the DICOMs) "
            "or set its orientation (e.g. `fslorient`/`fslswapdim`, 3D Slicer) and save .nii.gz",
        )
    stored = np.dtype(img.get_data_dtype())
    if stored.kind == "c":
        raise InputError(path, "complex-valued image; give a magnitude image")
    dtype = np.float32 if as_float32 and stored.itemsize < 8 else None
    try:
        array = np.asanyarray(img.dataobj, dtype=dtype)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(path, f"corrupt or truncated image data ({exc})") from None
    if np.iscomplexobj(array):
        raise InputError(path, "complex-valued image; give a magnitude image")
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 2 or (array.ndim == 3 and 1 in array.shape):
        raise InputError(
            path, f"a 2D image (shape {tuple(array.shape)}); a 3D volume (several slices) is needed"
        )
    if array.ndim != 3:
        raise InputError(path, f"expected a 3D image, got shape {tuple(array.shape)}")
    if min(array.shape) < 1:
        raise InputError(path, f"image has an empty dimension, shape {tuple(array.shape)}")
    _check_affine(img.affine, path)
    _check_geometry(img, path)
    return img, array, path


def _canonical(
    img: nib.spatialimages.SpatialImage, array: np.ndarray, dtype: type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The array in canonical voxel order (one C-ordered copy, cast to ``dtype`` on the way)."""
    ornt = io_orientation(img.affine)
    data = apply_orientation(array, ornt)
    affine = img.affine @ inv_ornt_aff(ornt, array.shape)
    return np.ascontiguousarray(data, dtype=dtype), affine


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def load_image(path: str | Path, allow_empty: bool = False) -> Volume:
    """Read a 3D scan into canonical RAS order as float32.

    Args:
        path: a .nii, .nii.gz or .mgz file.
        allow_empty: accept an image whose voxels are all equal.

    Returns:
        The volume; ``data`` is float32.

    Raises:
        InputError: missing, unreadable, not 3D, complex, NaN/inf or empty image.

    Example:
        >>> vol = load_image("scan.nii.gz")  # doctest: +SKIP
        >>> vol.data.shape, vol.spacing  # doctest: +SKIP
    """
    img, array, path = _load_raw(path, as_float32=True)  # scl_slope/inter applied
    # two passes tell it all: a NaN makes the minimum NaN, an infinity the minimum or maximum
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(path, "image contains NaN or infinite values")
    peak = max(abs(low), abs(high))
    if peak > _FLOAT32_MAX:
        raise InputError(
            path, f"values up to {peak:.3g} do not fit float32; rescale the image (e.g. to 0-1000)"
        )
    data, affine = _canonical(img, array, np.float32)  # one copy, however large the image
    # float32 rounding keeps the order, so its extremes are the rounded ones
    if not allow_empty and (data.size == 0 or np.float32(high) == np.float32(low)):
        raise InputError(path, "image is empty (all voxels have the same value)")
    return Volume(data=data, affine=affine, spacing=_spacing(affine), source=img, path=path)


def load_label(
    path: str | Path,
    reference: Volume | None = None,
    allowed: set[int] | None = None,
) -> Volume:
    """Read a label map into canonical order as int16 data (in a float-free ``Volume``).

    Values outside the int16 range (|v| > 32767) are refused rather than wrapped.

    Args:
        path: label map file.
        reference: the image it belongs to; the grids (shape and affine) must match.
        allowed: the label values permitted (e.g. ``{0, 1, 2}``); others raise.

    Raises:
        InputError: unreadable file, non-integer values, unknown labels, grid mismatch.
    """
    img, array, path = _load_raw(path)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(path, "label map contains NaN or infinite values")
        rounded = np.rint(array)
        if not np.allclose(array, rounded, atol=1e-3):
            raise InputError(path, "label map has non-integer values; is this an image?")
        array = rounded
    if array.size and (array.min() < -32768 or array.max() > 32767):
        raise InputError(
            path,
            f"label values up to {float(np.abs(array).max()):.6g} do not fit int16; "
            "is this a label map?",
        )
    array = array.astype(np.int16)
    if allowed is not None:
        unknown = sorted(set(np.unique(array).tolist()) - set(allowed))
        if unknown:
            raise InputError(
                path, f"unknown label values {unknown[:10]}; expected only {sorted(allowed)}"
            )
    data, affine = _canonical(img, array)
    if reference is not None:
        if data.shape != reference.data.shape or not np.allclose(
            affine, reference.affine, atol=1e-3
        ):
            what = grid_difference(affine, data.shape, reference.affine, reference.data.shape)
            raise InputError(
                path,
                f"label grid does not match its image {reference.path} "
                f"({what or 'affines differ slightly'}); resample the label map first",
            )
    return Volume(data=data, affine=affine, spacing=_spacing(affine), source=img, path=path)


def save_image_atomic(img: nib.spatialimages.SpatialImage, path: str | Path) -> Path:
    """Save a nibabel image atomically (temporary file with the same suffix, then rename)."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix) as tmp:
        nib.save(img, str(tmp))
    return path


def save_like(
    array_canonical: np.ndarray,
    reference: Volume,
    path: str | Path,
    dtype: type = np.uint8,
) -> Path:
    """Write an array computed in canonical order onto the reference's exact grid and header.

    The file keeps the reference's affine, qform/sform (and their codes) and voxel order; only
    the data type changes. The write is atomic (temporary file, then rename).

    Args:
        array_canonical: array with the shape of ``reference.data``.
        reference: the volume the array belongs to.
        path: output file (.nii, .nii.gz or .mgz).
        dtype: output data type (uint8 for label maps, float32 for probabilities).

    Example:
        >>> save_like(labels, vol, "out/CASE_hipp.nii.gz")  # doctest: +SKIP
    """
    path = Path(path)
    if array_canonical.shape != reference.data.shape:
        raise ValueError(f"shape {array_canonical.shape} != reference {reference.data.shape}")
    if reference.path is not None and path.resolve() == Path(reference.path).resolve():
        raise InputError(path, "refusing to overwrite the input image")
    data = np.ascontiguousarray(reference.to_source_grid(array_canonical)).astype(dtype)
    source = reference.source
    if isinstance(source, nib.Nifti1Image | nib.Nifti2Image):
        header = source.header.copy()
        header.set_data_dtype(dtype)
        header.set_slope_inter(1.0, 0.0)
        out = type(source)(data, None, header=header)
        out.set_qform(source.header.get_qform(), code=int(source.header["qform_code"]))
        out.set_sform(source.header.get_sform(), code=int(source.header["sform_code"]))
    else:
        header = source.header.copy()
        header.set_data_dtype(dtype)
        out = type(source)(data, source.affine, header=header)
    save_image_atomic(out, path)
    return path


def save_volume(
    array: np.ndarray, affine: np.ndarray, path: str | Path, dtype: type = np.float32
) -> Path:
    """Write a new NIfTI image (for data with no source grid, e.g. synthetic scans), atomically."""
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(array).astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    save_image_atomic(img, path)
    return path
