"""Bad and unusual inputs (issue 14): one honest line and the right exit code, or a right answer.

Each test builds a tiny input in tmp_path and runs the command as a user would (``cli.main``),
checking the exit code, that stderr holds one ``error:`` line and no traceback, and the number
where there is one.
"""

from __future__ import annotations

import csv
import json
import os
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import run_cli, write_nifti
from training_data import make_lisa_dataset, small_config

from lofihippseg.config import save_json
from lofihippseg.errors import LoFiError
from lofihippseg.inference.api import PredictSettings, ScanReader, gather_inputs, predict
from lofihippseg.inference.model_loading import LoadedModel
from lofihippseg.io import atomic
from lofihippseg.io.datasets import split_dataset
from lofihippseg.io.nifti import load_image
from lofihippseg.models.registry import ModelSpec, build_vnet, bundle_dict
from lofihippseg.reporting.status import case_status
from lofihippseg.reporting.volumes import read_rows
from lofihippseg.training import loop


def one_error_line(err: str) -> str:
    """The single ``error:`` line of stderr (asserting there is exactly one, no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


class ConstNet(torch.nn.Module):
    """Segments fixed boxes: left in the first third of axis 0, right in the last third."""

    def __init__(self, on: bool = True):
        super().__init__()
        self.on = on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], 2, *x.shape[2:]), -20.0)
        if self.on:
            n = x.shape[2]
            out[:, 0, : n // 3] = 20.0
            out[:, 1, 2 * n // 3 :] = 20.0
        return out


def const_model(on: bool = True) -> LoadedModel:
    net = ConstNet(on)
    return LoadedModel(spec=ModelSpec(n_filters=4), vnet1=net, vnet2=net, source="test")


def head(shape=(24, 24, 24)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (100 + 10 * rng.standard_normal(shape)).astype(np.float32)


SETTINGS = PredictSettings(device="cpu", roi="off", qc=False, lcc=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    """A tiny random-weight model bundle (n_filters 4)."""
    torch.manual_seed(0)
    spec = ModelSpec(n_filters=4)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(bundle_dict(spec, *(build_vnet(spec).state_dict() for _ in range(2))), path)
    return str(path)


def predict_args(bundle: str, *inputs, out) -> list:
    return ["predict", *inputs, "-o", out, "--model", bundle, "--device", "cpu", "--quiet"]


# --- wrong answers and crashes on valid input ----------------------------------------------


def test_mgz_scan_gets_a_strict_json_sidecar(tmp_path, bundle, capsys):
    """Item 1: MGH headers hold numpy ints; the sidecar must still be written (strict JSON)."""
    scan = tmp_path / "scan.mgz"
    nib.save(nib.MGHImage(head(), np.diag([2.0, 2.0, 2.0, 1.0])), str(scan))
    code, out, err = run_cli(predict_args(bundle, scan, out=tmp_path / "o"), capsys)
    assert code == 0, err
    text = (tmp_path / "o" / "scan_hipp.json").read_text()
    sidecar = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert sidecar["input_shape"] == [24, 24, 24] and sidecar["status"] in out


def test_sheared_affine_volume_is_the_determinant(tmp_path):
    """Item 2: voxel volume = |det| of the affine's 3x3 part, not the column lengths' product."""
    affine = np.eye(4)
    affine[0, 1] = 1.0  # shear: columns (1,0,0) and (1,1,0) have lengths 1 and sqrt(2)
    scan = write_nifti(tmp_path / "sheared.nii.gz", head(), affine)
    vol = load_image(scan)
    assert vol.voxel_volume_ml == pytest.approx(0.001)  # det = 1 mm^3
    assert np.prod(vol.spacing) / 1000 == pytest.approx(0.001 * np.sqrt(2))
    report = predict(scan, tmp_path / "o", const_model(), SETTINGS, progress=False)
    labels = np.asarray(nib.load(str(tmp_path / "o" / "sheared_hipp.nii.gz")).dataobj)
    assert report.results[0].row["left_ml"] == pytest.approx((labels == 1).sum() * 0.001)


def test_analyze_image_is_refused_with_how_to_convert(tmp_path, bundle, capsys):
    """Item 3: Analyze .hdr/.img carries no orientation: refused, not segmented L/R-swapped."""
    nib.save(nib.AnalyzeImage(head(), np.eye(4)), str(tmp_path / "scan.img"))
    code, _, err = run_cli(predict_args(bundle, tmp_path / "scan.hdr", out=tmp_path / "o"), capsys)
    line = one_error_line(err)
    assert code == 2 and "scan.hdr" in line and "Analyze" in line and "convert" in line


def test_every_case_gets_a_status_and_empty_agreement_is_null(tmp_path, capsys):
    """Item 4: implausible results are flagged; an empty view agreement is null, not 1.0."""
    tiny = write_nifti(tmp_path / "in" / "tiny.nii.gz", head((5, 5, 5)))
    brain = write_nifti(tmp_path / "in" / "brain.nii.gz", head(), np.diag([4.0, 4.0, 4.0, 1]))
    report = predict([tiny, brain], tmp_path / "o", const_model(on=False), SETTINGS, False)
    rows = {r["case"]: r for r in read_rows(tmp_path / "o" / "volumes.csv")}
    assert rows["tiny"]["status"] == "implausible_input"
    assert rows["brain"]["status"] == "empty" and rows["brain"]["view_dice"] == ""
    sidecar = json.loads((tmp_path / "o" / "brain_hipp.json").read_text())
    assert sidecar["status"] == "empty" and sidecar["volumes"]["view_dice"] is None
    assert sidecar["volumes"]["asymmetry_index"] is None  # no bare NaN anywhere
    assert "empty" in report.table() and "implausible_input" in report.table()
    # the other rules, on their numbers
    head_mm = ((160, 192, 176), (1.0, 1.0, 1.0))
    assert case_status(1349.0, 1349.0, 0.9, *head_mm).status == "implausible_volume"
    assert case_status(3.0, 3.2, 0.3, *head_mm).status == "low_agreement"
    assert case_status(3.0, 3.2, 0.8, (192, 192, 30), (1.0, 1.0, 7.0)).status == (
        "implausible_input"
    )
    assert case_status(3.0, 3.2, 0.8, (400, 400, 300), (1.0, 1.0, 1.0)).status == (
        "implausible_input"
    )
    assert case_status(3.0, 3.2, 0.8, *head_mm).status == "ok"


def test_nan_weights_are_refused(tmp_path, capsys):
    """Item 4: a model with NaN weights would segment nothing; it is refused by name."""
    spec = ModelSpec(n_filters=4)
    sd = build_vnet(spec).state_dict()
    sd["encoder.block_one.conv.0.weight"][:] = float("nan")
    torch.save(bundle_dict(spec, sd, sd), tmp_path / "nan.pt")
    scan = write_nifti(tmp_path / "s.nii.gz", head())
    args = predict_args(str(tmp_path / "nan.pt"), scan, out=tmp_path / "o")
    code, _, err = run_cli(args, capsys)
    line = one_error_line(err)
    assert code == 2 and "nan.pt" in line and "NaN" in line


@pytest.mark.parametrize("bad", ["pred255", "gt3"])
def test_evaluate_refuses_unknown_label_values(tmp_path, capsys, bad):
    """Item 5: a 0/255 prediction or a stray label 3 is an error naming the file."""
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[2:5, 2:5, 2:5] = 1
    gt[7:10, 7:10, 7:10] = 2
    pred = gt.copy()
    if bad == "pred255":
        pred[pred > 0] = 255
    else:
        gt[0, 0, 0] = 3
    p = write_nifti(tmp_path / "case_pred.nii.gz", pred)
    g = write_nifti(tmp_path / "case_gt.nii.gz", gt)
    code, _, err = run_cli(["evaluate", p, g, "-o", tmp_path / "scores"], capsys)
    line = one_error_line(err)
    wrong = p if bad == "pred255" else g
    assert code == 2 and str(wrong) in line and ("[255]" in line or "[3]" in line)


def test_split_lists_may_name_files(tmp_path):
    """Item 6: the authors' train.list/val.list name files, ours case ids: both work."""
    data = make_lisa_dataset(tmp_path / "lisa", n_cases=3, size=12)
    (data / "train.list").write_text("LISA_0001_ciso.nii.gz\nimagesTr/LISA_0002_ciso.nii.gz\n")
    (data / "val.list").write_text("LISA_0003\n")
    train, val = split_dataset(data)
    assert [c.case_id for c in train] == ["LISA_0001", "LISA_0002"]
    assert [c.case_id for c in val] == ["LISA_0003"]


def test_folder_keeps_scans_named_hipp_and_skips_only_our_outputs(tmp_path, caplog):
    """Item 7: ``sub01_hipp.nii.gz`` is a scan; our outputs and labels beside scans are not."""
    scans = tmp_path / "scans"
    write_nifti(scans / "sub01_hipp.nii.gz", head())
    write_nifti(scans / "sub02.nii.gz", head())
    write_nifti(scans / "sub02_hipp.nii.gz", np.zeros((24, 24, 24), np.uint8))  # its labels
    names = [p.name for p in gather_inputs(scans)]
    assert names == ["sub01_hipp.nii.gz", "sub02.nii.gz"]
    assert "label maps beside their scans" in caplog.text and "sub02_hipp.nii.gz" in caplog.text
    predict(scans / "sub01_hipp.nii.gz", scans / "out", const_model(), SETTINGS, progress=False)
    out_files = sorted(p.name for p in (scans / "out").glob("*.nii.gz"))
    assert out_files == ["sub01_hipp_hipp.nii.gz"]
    with pytest.raises(LoFiError, match="no NIfTI/MGZ images"):  # only our outputs there
        gather_inputs(scans / "out")


# --- tracebacks instead of one-line errors ---------------------------------------------------


def test_unwritable_outputs_give_one_line(tmp_path, bundle, capsys):
    """Outputs under a file (where a folder should be): one line naming the path, exit 2."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    scan = write_nifti(tmp_path / "s.nii.gz", head())
    labels = write_nifti(tmp_path / "s_lab.nii.gz", np.zeros((24, 24, 24), np.uint8))
    lisa = make_lisa_dataset(tmp_path / "lisa", n_cases=2, size=12)
    commands = {
        "predict": predict_args(bundle, scan, out=blocker / "o"),
        "evaluate": ["evaluate", labels, labels, "-o", blocker / "o"],
        "synth": ["synth", "--n", "1", "--out", blocker / "o", "--size", "32", "32", "32"],
        "view": ["view", scan, "-o", blocker / "v.nii.gz"],
        "train": ["train", lisa, "--out", blocker / "runs", "--iterations", "1", "--patch", "16",
                  "--batch", "1", "--n-filters", "2", "--device", "cpu", "--num-workers", "0"],
    }  # fmt: skip
    for name, args in commands.items():
        code, _, err = run_cli(args, capsys)
        line = one_error_line(err)
        assert code == 2 and str(blocker) in line, (name, err)


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--threads", "-1"], "--threads"),
        (["--shard", "1/2"], None),  # valid: control
    ],
)
def test_predict_option_values(tmp_path, bundle, capsys, args, expect):
    scan = write_nifti(tmp_path / "s.nii.gz", head())
    code, _, err = run_cli([*predict_args(bundle, scan, out=tmp_path / "o"), *args], capsys)
    if expect is None:
        assert code == 0, err
    else:
        assert code == 2 and expect in one_error_line(err)


@pytest.mark.parametrize(
    "option", [["--num-workers", "-1"], ["--n-filters", "0"], ["--name", "../escape"]]
)
def test_train_option_values_refused(tmp_path, capsys, option):
    lisa = make_lisa_dataset(tmp_path / "lisa", n_cases=2, size=12)
    args = ["train", lisa, "--out", tmp_path / "runs", "--iterations", "1", "--device", "cpu",
            "--patch", "16", "--batch", "1", *option]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 2 and option[0] in one_error_line(err)
    assert not (tmp_path / "escape").exists()


def test_bundle_with_bad_spec_and_bad_checkpoints_name_the_file(tmp_path, capsys):
    scan = write_nifti(tmp_path / "s.nii.gz", head())
    spec = ModelSpec(n_filters=4)
    sd = build_vnet(spec).state_dict()
    bad_spec = {**bundle_dict(spec, sd, sd), "spec": {"n_filters": "sixteen"}}
    torch.save(bad_spec, tmp_path / "badspec.pt")
    (tmp_path / "notes.txt").write_text("not a model\n")
    torch.save({"fc.weight": torch.ones(2)}, tmp_path / "other.pth")
    torch.save({"fc.weight": torch.ones(2)}, tmp_path / "o.pth")
    cases = {
        "badspec.pt": ["--model", tmp_path / "badspec.pt"],
        "notes.txt": ["--model", tmp_path / "notes.txt"],
        "other.pth": ["--checkpoint1", tmp_path / "other.pth", "--checkpoint2", tmp_path / "o.pth"],
    }  # fmt: skip
    for name, opts in cases.items():
        code, _, err = run_cli(["predict", scan, "-o", tmp_path / "o", *opts], capsys)
        line = one_error_line(err)
        assert code == 2 and name in line, err
    assert "n_filters" in run_cli(["predict", scan, "-o", tmp_path / "o", *cases["badspec.pt"]],
                                  capsys)[2]  # fmt: skip


def _image(kind: str, path):
    data = head()
    if kind == "2d":
        return write_nifti(path, data[:, :, :1])
    if kind == "singular":
        affine = np.eye(4)
        affine[:3, 2] = affine[:3, 1]
        return write_nifti(path, data, affine)
    if kind == "huge":
        return write_nifti(path, data.astype(np.float64) * 1e297)
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, words",
    [("2d", "2D image"), ("singular", "singular affine"), ("huge", "do not fit float32")],
)
def test_clear_messages_for_odd_images(tmp_path, bundle, capsys, kind, words):
    scan = _image(kind, tmp_path / f"{kind}.nii.gz")
    view = ["view", scan, "-o", tmp_path / "v.nii.gz"]
    for args in (predict_args(bundle, scan, out=tmp_path / "o"), view):
        code, _, err = run_cli(args, capsys)
        line = one_error_line(err)
        assert code == 2 and words in line and scan.name in line, err


def test_dicom_folder_says_convert_with_dcm2niix(tmp_path, bundle, capsys):
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    for i in range(3):
        (dicom / f"IM{i:04d}").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    code, _, err = run_cli(predict_args(bundle, dicom, out=tmp_path / "o"), capsys)
    assert code == 2 and "dcm2niix" in one_error_line(err)


def test_usage_error_is_one_line(capsys):
    code, _, err = run_cli(["predict"], capsys)
    assert code == 2 and "Missing argument" in one_error_line(err)
    assert len(err.strip().splitlines()) == 1


def test_predict_exit_codes_single_and_batch(tmp_path, bundle, capsys):
    """A bad single input: exit 2 and one line; a batch with good and bad cases: exit 1."""
    good = write_nifti(tmp_path / "in" / "good.nii.gz", head())
    bad = tmp_path / "in" / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    code, _, err = run_cli(predict_args(bundle, bad, out=tmp_path / "o1"), capsys)
    assert (
        code == 2
        and one_error_line(err) == f"error: {bad}: not a readable NIfTI/MGZ image (ImageFileError)"
    )
    code, _, err = run_cli(predict_args(bundle, bad, good, out=tmp_path / "o2"), capsys)
    assert code == 1 and str(bad) in one_error_line(err)


# --- runs and files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = make_lisa_dataset(root / "lisa", n_cases=3, size=20)
    return loop.train(small_config(data, root / "runs", iterations=4, val_every=1), stop_at=2)


def test_resume_refuses_changes_and_a_failed_resume_keeps_config(short_run, capsys, tmp_path):
    config_before = (short_run / "config.json").read_bytes()
    for extra in (["--lr", "0.5"], ["--patch", "32"], ["--batch", "4"], ["--n-filters", "8"],
                  [str(tmp_path)]):  # fmt: skip
        code, _, err = run_cli(["train", "--resume", short_run, *extra], capsys)
        line = one_error_line(err)
        assert code == 2 and "--resume" in line and "cannot be given" in line, err
    last = short_run / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    last.write_bytes(b"PK\x03\x04 truncated")
    try:
        code, _, err = run_cli(["train", "--resume", short_run, "--iterations", "9"], capsys)
        assert code == 2 and "last.pt" in one_error_line(err)
    finally:
        last.write_bytes(saved)
    assert (short_run / "config.json").read_bytes() == config_before


def test_resume_drops_rows_after_the_checkpoint_and_stale_temps(short_run, capsys):
    metrics = short_run / "metrics.csv"
    rows = list(csv.DictReader(metrics.open()))
    assert [r["iteration"] for r in rows] == ["1", "2"]
    with metrics.open("a") as fh:  # killed after the row of iteration 3, before its checkpoint
        fh.write("3" + "," * (len(rows[0]) - 1) + "\n")
    stale = short_run / "checkpoints" / f".last.pt.{atomic._HOST}-999999999.ab12.tmp"
    stale.write_bytes(b"partial")
    code, _, err = run_cli(["train", "--resume", short_run, "--iterations", "3"], capsys)
    assert code == 0, err
    assert [r["iteration"] for r in csv.DictReader(metrics.open())] == ["1", "2", "3"]
    assert not stale.exists()


def test_temp_cleanup_keeps_other_live_processes_files(tmp_path):
    """Temp names carry host and pid; only dead, own, old or untagged ones are removed."""
    target = tmp_path / "CASE_hipp.nii.gz"
    with atomic.atomic_path(target) as tmp:
        assert f"{atomic._HOST}-{os.getpid()}" in tmp.name
        tmp.write_text("x")
    live = tmp_path / f".CASE_hipp.nii.gz.{atomic._HOST}-{os.getppid()}.aa.tmp.nii.gz"
    other_host = tmp_path / ".CASE_hipp.nii.gz.elsewhere-1.bb.tmp.nii.gz"
    old = tmp_path / ".CASE_hipp.nii.gz.elsewhere-2.cc.tmp.nii.gz"
    dead = tmp_path / f".CASE_hipp.nii.gz.{atomic._HOST}-999999999.dd.tmp.nii.gz"
    for path in (live, other_host, old, dead):
        path.write_text("partial")
    hours_ago = time.time() - 2 * atomic.STALE_AFTER_S
    os.utime(old, (hours_ago, hours_ago))
    removed = {p.name for p in atomic.remove_stale_temps([target])}
    assert removed == {old.name, dead.name}
    assert live.exists() and other_host.exists() and target.read_text() == "x"


def test_sidecar_json_never_holds_bare_nan(tmp_path):
    data = {"ai": float("nan"), "n": np.int32(3), "x": [np.float32(np.inf)]}
    path = save_json(data, tmp_path / "s.json")
    assert json.loads(path.read_text()) == {"ai": None, "n": 3, "x": [None]}


def test_absent_file_in_a_folder_is_named_not_skipped(tmp_path, bundle, capsys):
    """A dangling link (unfetched annex content) in a folder fails, named, with the fix."""
    write_nifti(tmp_path / "in" / "b.nii.gz", head())
    absent = tmp_path / "in" / "a.nii.gz"
    absent.symlink_to("../.git/annex/objects/a.nii.gz")
    code, out, err = run_cli(predict_args(bundle, tmp_path / "in", out=tmp_path / "o"), capsys)
    line = one_error_line(err)
    assert code == 1 and line.startswith(f"error: {absent}: absent")
    assert f"datalad get {absent}" in line
    assert "1 done" in out and "1 failed" in out
    # named explicitly, alone: exit 2 with the same line (not "input not found")
    code, _, err = run_cli(predict_args(bundle, absent, out=tmp_path / "o2"), capsys)
    assert code == 2 and one_error_line(err).startswith(f"error: {absent}: absent")
    # evaluate: an absent label map is named too, not silently dropped from the folder
    labels = tmp_path / "labels"
    write_nifti(labels / "c1.nii.gz", np.zeros((8, 8, 8), np.uint8))
    (labels / "c2.nii.gz").symlink_to("../.git/annex/objects/c2.nii.gz")
    code, _, err = run_cli(["evaluate", labels, labels, "-o", tmp_path / "e"], capsys)
    assert code == 2 and "c2.nii.gz: absent" in one_error_line(err)


def test_a_sessions_stack_outputs_are_not_taken_for_scans(tmp_path):
    """``predict --stacks`` writes ``CASE_hipp_stackK`` and ``CASE_combined`` beside its sidecar:
    a later run over that folder skips them; a scan merely named ``x_combined`` is kept."""
    out = tmp_path / "out"
    write_nifti(out / "S_hipp.nii.gz", np.zeros((24, 24, 24), np.uint8))
    (out / "S_hipp.json").write_text('{"tool": "lofihippseg"}')
    for name in ("S_hipp_stack2", "S_combined"):
        write_nifti(out / f"{name}.nii.gz", head())
    write_nifti(out / "other_combined.nii.gz", head())  # no sidecar of ours: a scan
    assert [p.name for p in gather_inputs(out)] == ["other_combined.nii.gz"]


def test_a_scan_read_ahead_fails_in_its_own_case(tmp_path, bundle):
    """The next scan is read while one is segmented: its error is its own, the batch goes on."""
    first = write_nifti(tmp_path / "in" / "a.nii.gz", head())
    bad = tmp_path / "in" / "b.nii.gz"
    bad.write_bytes(b"not an image")
    last = write_nifti(tmp_path / "in" / "c.nii.gz", head())
    report = predict(tmp_path / "in", tmp_path / "o", bundle, PredictSettings(qc=False), False)
    assert [(r.case, r.status) for r in report.results] == [
        ("a", "ok"), ("b", "failed"), ("c", "ok")
    ]  # fmt: skip
    assert str(bad) in report.results[1].message and "not a readable" in report.results[1].message
    with ScanReader() as reader:  # read ahead or now: the same volume
        reader.start(first)
        ahead, now = reader.take(first), reader.take(last)
        reader.start(bad)  # never taken: dropped at the end
    np.testing.assert_array_equal(ahead.data, load_image(first).data)
    np.testing.assert_array_equal(now.affine, load_image(last).affine)


def test_a_refused_case_after_a_done_one_removes_nothing_of_its_inputs(tmp_path, bundle):
    """A case refused before it starts (its output would overwrite an input) must not take the
    previous case's record of what existed for its own: its input stays."""
    folder = tmp_path / "in"
    first = write_nifti(folder / "a.nii.gz", head())
    refused = write_nifti(folder / "x.nii.gz", head())
    clash = write_nifti(folder / "x_hipp.nii.gz", head())  # x's label map would overwrite it
    report = predict([first, refused, clash], folder, bundle, PredictSettings(qc=False), False)
    status = {r.case: r.status for r in report.results}
    assert status["a"] == "ok" and status["x"] == "failed"
    assert "refusing to overwrite an input" in report.results[1].message
    assert clash.is_file() and refused.is_file() and first.is_file()
    np.testing.assert_array_equal(load_image(clash).data, load_image(refused).data)
