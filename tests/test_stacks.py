"""A session's separate stacks: synthesis, registration, combination, predict --stacks, BIDS.

Sessions are drawn by ``synth --stacks``'s generator from the packaged label maps on a small
grid centred on the hippocampi (96^3 mm), so every test runs in seconds without shared data.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import run_cli, write_nifti

from lofihippseg.io.nifti import load_image
from lofihippseg.stacks.combine import average_stacks, fine_grid, superres_stacks
from lofihippseg.stacks.register import RegisterSettings, prepare_fixed, register_stack
from lofihippseg.stacks.session import combine_session, session_name
from lofihippseg.synth.assets import packaged_label_maps
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.stacks import (
    ORIENTATION_AXIS,
    StackGenerator,
    StacksConfig,
    motion_size,
    write_stack_sessions,
)

# bias log-std up to 0.3 (SynthSR's): the default 0.7 on a coarse grid spread over a 96 mm crop
# varies several times faster than a head-sized field (and moves the registration by ~1 mm)
CONFIG = SynthConfig.fast((96, 96, 96), bias_log_std=(0.0, 0.3))
MOTION = StacksConfig(motion_deg=(3.0, 5.0), motion_mm=(3.0, 5.0))


def _write(session, folder: Path, prefix: str = "s") -> list[Path]:
    paths = []
    for st in session.stacks:
        paths.append(write_nifti(folder / f"{prefix}_{st.name}.nii.gz", st.image, st.affine))
    return paths


@pytest.fixture(scope="module")
def session():
    gen = StackGenerator([packaged_label_maps()[0]], CONFIG, MOTION)
    return gen.session(torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def files(session, tmp_path_factory) -> list[Path]:
    return _write(session, tmp_path_factory.mktemp("session"))


@pytest.fixture(scope="module")
def other_subject(tmp_path_factory) -> list[Path]:
    """Another label map drawn with the same protocol (contrast, noise, motion)."""
    gen = StackGenerator([packaged_label_maps()[2]], CONFIG, MOTION)
    s = gen.session(torch.Generator().manual_seed(1))
    return _write(s, tmp_path_factory.mktemp("other"), "o")


def _hippocampus_error(found: np.ndarray, true: np.ndarray, label, affine) -> float:
    pts = np.argwhere(label > 0).astype(float) @ affine[:3, :3].T + affine[:3, 3]
    a = pts @ found[:3, :3].T + found[:3, 3]
    b = pts @ true[:3, :3].T + true[:3, 3]
    return float(np.linalg.norm(a - b, axis=1).max())


# ---- synth --stacks ---------------------------------------------------------------------------
def test_generated_stacks_have_their_own_grids_and_motion(session):
    assert [st.name for st in session.stacks] == ["axi", "cor", "sag"]
    for st in session.stacks:
        spacing = np.sqrt((st.affine[:3, :3] ** 2).sum(axis=0))
        # written as dcm2niix does: slice axis third, 1.5 x 1.5 mm in plane, 4-6 mm slices
        assert spacing[:2] == pytest.approx([1.5, 1.5])
        assert 4.0 <= spacing[2] <= 6.0
        thick_world = int(np.argmax(np.abs(st.affine[:3, 2])))
        assert thick_world == ORIENTATION_AXIS[st.name]
        assert 0.0 <= st.image.min() and st.image.max() <= 1.0
    assert np.allclose(session.motions[0], np.eye(4))
    centre = np.zeros(3)
    for motion in session.motions[1:]:
        angle, shift = motion_size(motion, centre)
        assert 3.0 - 1e-6 <= angle <= 5.0 + 1e-6
        assert 3.0 - 1e-6 <= shift <= 5.0 + 1e-6
        assert np.allclose(motion[:3, :3] @ motion[:3, :3].T, np.eye(3), atol=1e-9)  # rigid
    assert set(np.unique(session.label)) == {0, 1, 2}
    assert session.ciso.shape == session.label.shape


def test_synth_cli_writes_sessions(tmp_path, capsys):
    out = tmp_path / "synth"
    code, stdout, _ = run_cli(
        ["synth", "--stacks", "--n", "1", "--size", "64", "64", "64", "--out", out,
         "--device", "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 0, stdout
    records = json.loads((out / "sessions.json").read_text())
    assert [e["orientation"] for e in records[0]["stacks"]] == ["axi", "cor", "sag"]
    for entry in records[0]["stacks"]:
        assert (out / entry["file"]).is_file()
        assert entry["rotation_deg"] <= 5.0 + 1e-6 and entry["translation_mm"] <= 5.0 + 1e-6
    label = nib.load(str(out / "labels" / "LISA_0001_hipp.nii.gz"))
    assert label.shape == (64, 64, 64)
    assert (out / "ciso" / "LISA_0001_ciso.nii.gz").is_file()


def test_write_stack_sessions_is_reproducible(tmp_path):
    maps = [packaged_label_maps()[1]]
    cfg = SynthConfig.fast((48, 48, 48))
    write_stack_sessions(maps, 1, tmp_path / "a", 3, cfg, progress=False)
    write_stack_sessions(maps, 1, tmp_path / "b", 3, cfg, progress=False)
    a = np.asarray(nib.load(str(tmp_path / "a/stacks/LISA_0001_cor.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "b/stacks/LISA_0001_cor.nii.gz")).dataobj)
    assert np.array_equal(a, b)


# ---- registration -------------------------------------------------------------------------------
def test_registration_recovers_the_motion_at_the_hippocampi(session, files):
    vols = [load_image(p) for p in files]
    fixed = prepare_fixed(vols[0], RegisterSettings())
    for vol, motion in zip(vols[1:], session.motions[1:], strict=True):
        reg = register_stack(fixed, vol)
        error = _hippocampus_error(reg.transform, motion, session.label, session.affine)
        assert error < 1.0, error
        assert reg.quality > max(reg.quality_before, RegisterSettings().min_quality)
        assert reg.overlap > 0.9


def test_another_subjects_stack_scores_low(files, other_subject):
    vols = [load_image(files[0]), load_image(other_subject[1])]
    reg = register_stack(prepare_fixed(vols[0], RegisterSettings()), vols[1])
    assert reg.quality < RegisterSettings().min_quality


# ---- combination --------------------------------------------------------------------------------
def test_fine_grid_keeps_the_first_stacks_frame_and_field_of_view(files):
    first = load_image(files[0])
    shape, affine = fine_grid(first, 1.0)
    direction = first.affine[:3, :3] / np.asarray(first.spacing)
    assert np.allclose(affine[:3, :3], direction)
    corner = lambda a, s: a[:3, :3] @ (np.asarray(s) - 1) / 2 + a[:3, 3]  # noqa: E731
    assert np.allclose(corner(affine, shape), corner(first.affine, first.data.shape), atol=1.0)


@pytest.mark.parametrize("combine", [average_stacks, superres_stacks])
def test_combined_image_matches_the_motion_free_one(session, files, combine):
    s = combine_session(files)
    combined, cover = combine(s.stacks, s.transforms, 1.0)
    assert combined.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert cover.max() == pytest.approx(3.0, abs=0.01)
    # compare on the 1 mm truth grid (same world, the combined grid can be a voxel larger)
    ref = session.ciso
    off = np.round(np.linalg.inv(combined.affine) @ session.affine[:, 3])[:3].astype(int)
    n = [min(r, c - o) for r, c, o in zip(ref.shape, combined.data.shape, off, strict=True)]
    crop = combined.data[off[0] : off[0] + n[0], off[1] : off[1] + n[1], off[2] : off[2] + n[2]]
    hipp = session.label[: n[0], : n[1], : n[2]] > 0
    box = tuple(slice(max(i.min() - 10, 0), i.max() + 10) for i in np.nonzero(hipp))
    r = np.corrcoef(crop[box].ravel(), ref[: n[0], : n[1], : n[2]][box].ravel())[0, 1]
    assert r > 0.85, r


def test_without_registration_the_combination_is_worse(session, files):
    s = combine_session(files)
    aligned = superres_stacks(s.stacks, s.transforms)[0].data
    unaligned = superres_stacks(s.stacks, [np.eye(4)] * 3)[0].data
    n = [min(a, b) for a, b in zip(session.ciso.shape, aligned.shape, strict=True)]
    ref = session.ciso[: n[0], : n[1], : n[2]].ravel()
    corr = [np.corrcoef(x[: n[0], : n[1], : n[2]].ravel(), ref)[0, 1] for x in (aligned, unaligned)]
    assert corr[0] > corr[1] + 0.02, corr


def test_session_name():
    paths = [Path("sub-1_ses-a_acq-axi_T2w.nii.gz"), Path("sub-1_ses-a_acq-cor_T2w.nii.gz")]
    assert session_name(paths) == "sub-1_ses-a_T2w"
    assert session_name([Path("LISA_0001_axi.nii"), Path("LISA_0001_sag.nii")]) == "LISA_0001"
    assert session_name([Path("x/a.nii.gz"), Path("y/a.nii.gz")]) == "a_stacks"


# ---- predict --stacks: bad input ----------------------------------------------------------------
def _predict(args, out, capsys):
    return run_cli(["predict", "--stacks", *args, "-o", out, "--threads", "1", "--quiet"], capsys)


def _one_line_error(code, err, name):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and name in lines[0], err
    assert "Traceback" not in err


def test_missing_stack(files, tmp_path, capsys):
    missing = tmp_path / "gone_sag.nii.gz"
    code, _, err = _predict([files[0], files[1], missing], tmp_path / "out", capsys)
    _one_line_error(code, err, "gone_sag.nii.gz")
    assert "not found" in err
    assert not (tmp_path / "out").exists()


def test_4d_stack(files, tmp_path, capsys):
    image = nib.load(str(files[1]))
    data = np.stack([np.asarray(image.dataobj)] * 2, axis=-1)
    four = write_nifti(tmp_path / "cor_4d.nii.gz", data, image.affine)
    code, _, err = _predict([files[0], four], tmp_path / "out", capsys)
    _one_line_error(code, err, "cor_4d.nii.gz")
    assert "3D" in err
    assert not (tmp_path / "out").exists()


def test_stack_of_another_subject(files, other_subject, tmp_path, capsys):
    code, _, err = _predict([files[0], files[1], other_subject[2]], tmp_path / "out", capsys)
    _one_line_error(code, err, other_subject[2].name)
    assert "another subject" in err
    assert not (tmp_path / "out").exists()


def test_a_stack_named_twice(files, tmp_path, capsys):
    code, _, err = _predict([files[0], files[0]], tmp_path / "out", capsys)
    _one_line_error(code, err, files[0].name)


def test_a_stack_that_barely_covers_the_head_is_refused(files, tmp_path, capsys):
    image = nib.load(str(files[2]))  # sagittal: slices along the third voxel axis
    data = np.asarray(image.dataobj)[:, :, :2]
    slab = write_nifti(tmp_path / "slab.nii.gz", data, image.affine)
    code, _, err = _predict([files[0], slab], tmp_path / "out", capsys)
    _one_line_error(code, err, "slab.nii.gz")
    assert "covers only" in err


def test_partial_stack_and_same_orientation_work(tmp_path):
    """Two axial stacks (a repeat after moving) and half a coronal stack register correctly."""
    config = StacksConfig(("axi", "cor", "axi"), motion_deg=(3.0, 5.0), motion_mm=(3.0, 5.0))
    s = StackGenerator([packaged_label_maps()[1]], CONFIG, config).session(
        torch.Generator().manual_seed(4)
    )
    files = [  # two stacks are axial: numbered names
        write_nifti(tmp_path / f"{i}_{st.name}.nii.gz", st.image, st.affine)
        for i, st in enumerate(s.stacks)
    ]
    image = nib.load(str(files[1]))
    data = np.asarray(image.dataobj)
    quarter = data.shape[2] // 4
    affine = image.affine @ _shift(quarter)
    files[1] = write_nifti(tmp_path / "cor_part.nii.gz", data[:, :, quarter:-quarter], affine)
    session = combine_session(files)
    assert 0.25 < session.registrations[1].overlap < 0.95
    for i in (1, 2):
        error = _hippocampus_error(session.transforms[i], s.motions[i], s.label, s.affine)
        assert error < 1.0, (i, error)
    assert session.cover.max() == pytest.approx(3.0, abs=0.01) and session.cover.min() < 2.5


def _centroid(image, value: int) -> np.ndarray:
    """World (RAS mm) centre of one label of a NIfTI label map."""
    idx = np.argwhere(np.asarray(image.dataobj) == value).mean(axis=0)
    return image.affine[:3, :3] @ idx + image.affine[:3, 3]


def _shift(slices: int) -> np.ndarray:
    out = np.eye(4)
    out[2, 3] = slices
    return out


# ---- predict --stacks: outputs ------------------------------------------------------------------
def test_predict_stacks_writes_one_case_with_its_registration(session, files, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _predict([*files, "--save-stack-labels"], out, capsys)
    assert code == 0, err
    assert "(3 stacks) ok" in stdout
    labels = nib.load(str(out / "s_hipp.nii.gz"))
    sidecar = json.loads((out / "s_hipp.json").read_text())
    assert labels.header.get_zooms() == pytest.approx((1.0, 1.0, 1.0))
    assert "first stack" in sidecar["label_grid"] and files[0].name in sidecar["label_grid"]
    assert [Path(e["file"]).name for e in sidecar["stacks"]] == [p.name for p in files]
    for entry, motion in zip(sidecar["stacks"][1:], session.motions[1:], strict=True):
        found = np.asarray(entry["transform_ras_mm"])
        assert _hippocampus_error(found, motion, session.label, session.affine) < 1.0
        assert entry["quality_correlation"] > 0.6
    # both hippocampi found on their own side (left = subject's left = lower RAS x)
    data = np.asarray(labels.dataobj)
    x = [labels.affine[0, 0] * np.nonzero(data == k)[0].mean() for k in (1, 2)]
    truth_x = [np.nonzero(session.label == k)[0].mean() for k in (1, 2)]
    assert np.sign(x[1] - x[0]) == np.sign(truth_x[1] - truth_x[0])
    # the label map on each stack's own grid keeps that stack's header, and lies where the
    # combined one does once the stack's motion is applied
    centre = [_centroid(labels, k) for k in (1, 2)]
    for i, (path, motion) in enumerate(zip(files, session.motions, strict=True), 1):
        on_stack = nib.load(str(out / f"s_hipp_stack{i}.nii.gz"))
        stack = nib.load(str(path))
        assert on_stack.shape == stack.shape
        assert np.allclose(on_stack.affine, stack.affine)
        assert set(np.unique(np.asarray(on_stack.dataobj))) <= {0, 1, 2}
        for k in (1, 2):
            expected = motion[:3, :3] @ centre[k - 1] + motion[:3, 3]
            assert np.linalg.norm(_centroid(on_stack, k) - expected) < 2.0
    assert sidecar["stack_outputs"]["labels_stack1"].endswith("s_hipp_stack1.nii.gz")
    assert (out / "s_qc.png").is_file()
    # a rerun skips the finished session
    code, stdout, _ = _predict(files, out, capsys)
    assert code == 0 and "skipped" in stdout


# ---- BIDS ---------------------------------------------------------------------------------------
def test_bids_groups_a_sessions_stacks(files, tmp_path, capsys):
    from test_bids import _matches_derivative_rule, _schema

    bids = tmp_path / "bids"
    (bids / "dataset_description.json").parent.mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    anat = bids / "sub-01" / "ses-1" / "anat"
    for path, acq in zip(files, ("axi", "cor", "sag"), strict=True):
        image = nib.load(str(path))
        target = anat / f"sub-01_ses-1_acq-{acq}_T2w.nii.gz"
        write_nifti(target, np.asarray(image.dataobj), image.affine)
    out = tmp_path / "deriv"
    code, stdout, err = run_cli(
        ["bids", bids, out, "participant", "--group-stacks", "--save-stack-labels",
         "--threads", "1", "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    dseg = out / "sub-01/ses-1/anat/sub-01_ses-1_rec-stacks_desc-hippocampus_dseg.nii.gz"
    assert dseg.is_file()
    sidecar = json.loads(dseg.with_name(dseg.name.replace(".nii.gz", ".json")).read_text())
    assert len(sidecar["Sources"]) == 3 and sidecar["Sources"][0].endswith("acq-axi_T2w.nii.gz")
    assert sidecar["SpatialReference"].endswith("acq-axi_T2w.nii.gz")
    per_stack = sorted(p.name for p in (out / "sub-01/ses-1/anat").glob("*space-orig*"))
    assert per_stack == [
        f"sub-01_ses-1_acq-{a}_rec-stacks_space-orig_desc-hippocampus_dseg.nii.gz"
        for a in ("axi", "cor", "sag")
    ]
    table = (out / "sub-01" / "sub-01_desc-hippocampus_volumes.tsv").read_text().splitlines()
    assert len(table) == 2  # one row: the session, not three images
    try:
        schema = _schema()
    except pytest.skip.Exception:
        return
    for path in [dseg, *(out / "sub-01/ses-1/anat").glob("*space-orig*")]:
        assert _matches_derivative_rule(schema, path.relative_to(out).as_posix()), path


def test_a_registration_is_the_same_every_run(files):
    """The metric's sample has a fixed seed (SimpleITK's seed 0 means the wall clock)."""
    settings = RegisterSettings()
    assert settings.seed >= 1
    fixed = prepare_fixed(load_image(files[0]), settings)
    runs = [register_stack(fixed, load_image(files[1]), settings) for _ in range(2)]
    assert runs[0].quality == runs[1].quality
    np.testing.assert_array_equal(runs[0].transform, runs[1].transform)
