"""NIfTI/MGZ I/O: canonical reading, writing back on the input's exact grid, and bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from lofihippseg.errors import InputError
from lofihippseg.io.nifti import load_image, load_label, save_like, strip_suffix


def rotation(ax: float, ay: float) -> np.ndarray:
    cx, sx, cy, sy = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rx @ ry


def affine_of(axes: np.ndarray, spacing, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = axes * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


PIR = np.array([[0, 0, -1.0], [-1, 0, 0], [0, 1, 0]])
LIA = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # FreeSurfer conformed voxel axes
GEOMETRIES = {
    "ras": affine_of(np.eye(3), (1.0, 1.0, 1.0), (-5, -6, -7)),
    "lia": affine_of(LIA, (1.0, 1.5, 2.0), (10, -20, 30)),
    "lps_oblique": affine_of(
        rotation(0.3, -0.2) @ np.diag([-1.0, -1.0, 1.0]), (0.9, 1.1, 2.5), (40, 35, -12)
    ),
    "pir_oblique": affine_of(
        rotation(-0.15, 0.25) @ PIR,
        (1.2, 0.8, 1.0),
        (3, 2, 1),
    ),
}


def test_strip_suffix():
    assert strip_suffix("a/b/LISA_0001_ciso.nii.gz") == "LISA_0001_ciso"
    assert strip_suffix("x.mgz") == "x"


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_round_trip_overlays_input_in_world_space(tmp_path, name):
    affine = GEOMETRIES[name]
    rng = np.random.default_rng(0)
    raw = rng.normal(100, 20, (9, 11, 7)).astype(np.float32)
    src = write_nifti(tmp_path / "img.nii.gz", raw, affine)
    vol = load_image(src)
    # the canonical axis 0 runs towards the subject's right (world x increases)
    assert (vol.affine[0, 0]) > 0 and abs(vol.affine[0, 0]) >= np.abs(vol.affine[1:3, 0]).max()
    np.testing.assert_allclose(sorted(vol.spacing), sorted(np.sqrt((affine[:3, :3] ** 2).sum(0))))
    # label some canonical voxels, remember their world coordinates
    labels = np.zeros(vol.data.shape, np.uint8)
    picked = [(0, 0, 0), (1, 2, 3), (vol.data.shape[0] - 1, 1, 0)]
    for i, idx in enumerate(picked):
        labels[idx] = 1 + i % 2
    expected_world = {
        tuple(np.round(vol.affine @ (*idx, 1), 4)[:3]): 1 + i % 2 for i, idx in enumerate(picked)
    }
    # voxel intensities are the same voxels in world space too
    for idx in picked:
        world = vol.affine @ (*idx, 1)
        src_idx = np.rint(np.linalg.solve(affine, world)[:3]).astype(int)
        assert raw[tuple(src_idx)] == vol.data[idx]
    out = save_like(labels, vol, tmp_path / "out" / "seg.nii.gz")
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert written.shape == raw.shape
    assert written.get_data_dtype() == np.uint8
    data = np.asanyarray(written.dataobj)
    got_world = {
        tuple(np.round(written.affine @ (*idx, 1), 4)[:3]): int(data[tuple(idx)])
        for idx in np.argwhere(data > 0)
    }
    assert got_world == expected_world
    # and it reads back as the same canonical map, on the image's grid
    back = load_label(out, reference=vol, allowed={0, 1, 2})
    np.testing.assert_array_equal(back.data, labels)


def test_qform_sform_codes_kept(tmp_path):
    affine = GEOMETRIES["lia"]
    img = nib.Nifti1Image(np.random.default_rng(1).random((5, 6, 7)).astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    nib.save(img, str(tmp_path / "in.nii"))
    vol = load_image(tmp_path / "in.nii")
    out = nib.load(str(save_like(np.zeros(vol.data.shape, np.uint8), vol, tmp_path / "o.nii.gz")))
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    np.testing.assert_allclose(out.header.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(out.header.get_sform(), affine, atol=1e-5)


def test_mgz_round_trip(tmp_path):
    affine = GEOMETRIES["lia"]
    data = np.random.default_rng(2).random((6, 5, 4)).astype(np.float32)
    nib.save(nib.MGHImage(data, affine), str(tmp_path / "in.mgz"))
    vol = load_image(tmp_path / "in.mgz")
    labels = (vol.data > 0.5).astype(np.uint8)
    out = save_like(labels, vol, tmp_path / "seg.mgz")
    written = nib.load(str(out))
    assert isinstance(written, nib.MGHImage) and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (data > 0.5).astype(np.uint8))


def test_warns_on_disagreeing_or_missing_orientation(tmp_path, caplog):
    data = np.random.default_rng(3).random((4, 4, 4)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.set_qform(np.eye(4), code=1)
    img.set_sform(GEOMETRIES["lia"], code=1)
    nib.save(img, str(tmp_path / "disagree.nii.gz"))
    with caplog.at_level(logging.WARNING):
        load_image(tmp_path / "disagree.nii.gz")
    assert "disagree" in caplog.text and "disagree.nii.gz" in caplog.text
    caplog.clear()
    img = nib.Nifti1Image(data, np.eye(4))
    img.set_qform(np.eye(4), code=0)
    img.set_sform(np.eye(4), code=0)
    nib.save(img, str(tmp_path / "nocode.nii.gz"))
    with caplog.at_level(logging.WARNING):
        load_image(tmp_path / "nocode.nii.gz")
    assert "both 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_image(write_nifti(tmp_path / "fine.nii.gz", data))
    assert caplog.text == ""


def bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected message fragment) for load_image."""
    good = np.random.default_rng(4).random((4, 5, 6)).astype(np.float32)
    (tmp / "text.nii.gz").write_text("this is not an image\n")
    nan = good.copy()
    nan[1, 1, 1] = np.nan
    return {
        "missing": (tmp / "absent.nii.gz", "not found"),
        "not_nifti": (tmp / "text.nii.gz", "not a readable"),
        "4d": (write_nifti(tmp / "four.nii.gz", np.stack([good, good], -1)), "3D"),
        "nan": (write_nifti(tmp / "nan.nii.gz", nan), "NaN"),
        "empty": (write_nifti(tmp / "flat.nii.gz", np.zeros((4, 5, 6), np.float32)), "empty"),
        "complex": (write_nifti(tmp / "cplx.nii.gz", good.astype(np.complex64)), "complex"),
    }


@pytest.mark.parametrize("case", ["missing", "not_nifti", "4d", "nan", "empty", "complex"])
def test_bad_image_one_line_error_naming_file(tmp_path, case):
    path, fragment = bad_inputs(tmp_path)[case]
    with pytest.raises(InputError) as exc:
        load_image(path)
    message = str(exc.value)
    assert path.name in message and fragment in message and "\n" not in message


def test_label_errors(tmp_path):
    img = write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(5).random((4, 5, 6)))
    vol = load_image(img)
    wrong_grid = write_nifti(tmp_path / "small.nii.gz", np.zeros((4, 5, 5), np.uint8))
    with pytest.raises(InputError, match=r"small\.nii\.gz.*does not match") as exc:
        load_label(wrong_grid, reference=vol)
    assert "\n" not in str(exc.value)
    shifted = write_nifti(
        tmp_path / "shifted.nii.gz",
        np.zeros((4, 5, 6), np.uint8),
        affine_of(np.eye(3), (1, 1, 1), (5, 0, 0)),
    )
    with pytest.raises(InputError, match="shifted.nii.gz"):
        load_label(shifted, reference=vol)
    unknown = np.zeros((4, 5, 6), np.uint8)
    unknown[0, 0, 0] = 7
    path = write_nifti(tmp_path / "seven.nii.gz", unknown)
    with pytest.raises(InputError, match=r"seven\.nii\.gz.*unknown label values \[7\]"):
        load_label(path, allowed={0, 1, 2})
    big = np.zeros((4, 5, 6), np.int32)
    big[1, 1, 1] = 40000  # would wrap to a negative int16
    path = write_nifti(tmp_path / "big.nii.gz", big)
    with pytest.raises(InputError, match=r"big\.nii\.gz.*40000 do not fit int16"):
        load_label(path)
    fractional = write_nifti(tmp_path / "frac.nii.gz", np.full((4, 5, 6), 0.5, np.float32))
    with pytest.raises(InputError, match="frac.nii.gz.*non-integer"):
        load_label(fractional)
