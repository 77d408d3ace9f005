"""The BIDS App: finding images, derivative names and files, failures, reruns, group level."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
from cohort_helpers import fake_model, make_bids, write_scan

from lofihippseg.bids.dataset import find_images
from lofihippseg.bids.entities import ENTITY_ORDER, build_name, parse_name, strip_prefix
from lofihippseg.cli import main
from lofihippseg.errors import LoFiError
from lofihippseg.inference import model_loading

DSEG = "space-orig_desc-hippocampus_dseg"


@pytest.fixture
def cli(monkeypatch):
    """Run ``lofihippseg ...`` with the fake model; returns the exit code."""
    monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: fake_model())

    def run(*args: str) -> int:
        try:
            main([*map(str, args), "--device", "cpu", "--quiet"])
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    return run


def tree(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_entities_parse_build_and_reject():
    name = parse_name("sub-01_ses-pre_acq-lowfield_run-2_T2w.nii.gz")
    assert name.entities == {"sub": "01", "ses": "pre", "acq": "lowfield", "run": "2"}
    assert (name.suffix, name.extension) == ("T2w", ".nii.gz")
    out = name.replace(desc="hippocampus", space="orig", suffix="dseg")
    assert (
        out.filename == "sub-01_ses-pre_acq-lowfield_run-2_space-orig_desc-hippocampus_dseg.nii.gz"
    )
    assert (
        build_name({"desc": "a", "sub": "x"}, "mask", ".json").filename == "sub-x_desc-a_mask.json"
    )
    for bad in (
        "T2w.nii.gz",  # no entities
        "ses-1_sub-01_T2w.nii.gz",  # sub not first
        "sub-01_run-1_acq-x_T2w.nii.gz",  # out of order
        "sub-01_run-a_T2w.nii.gz",  # index must be digits
        "sub-0_1_T2w.nii.gz",  # '1' is not key-value
        "sub-01_foo-1_T2w.nii.gz",  # unknown entity
        "sub-01_acq-1_acq-2_T2w.nii.gz",  # repeated
    ):
        with pytest.raises(LoFiError):
            parse_name(bad)
    assert strip_prefix("sub-01", "sub") == strip_prefix("01", "sub") == "01"
    with pytest.raises(LoFiError):
        strip_prefix("sub-0_1", "sub")


def test_find_images_selection(tmp_path):
    bids = make_bids(tmp_path / "bids", broken=False)
    (bids / "sub-01/anat/sub-01_T2w_bad-name.nii.gz").write_bytes(b"x")  # not BIDS: skipped
    rel = [im.relpath for im in find_images(bids)]
    assert rel == [
        "sub-01/anat/sub-01_T2w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_acq-lowfield_T2w.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_acq-lowfield_T2w.nii.gz",
    ]
    # T1w only where there is no T2w
    write_scan(bids / "sub-03/anat/sub-03_T1w.nii.gz")
    chosen = {im.subject: im.name.suffix for im in find_images(bids, suffixes=("T2w", "T1w"))}
    assert chosen == {"01": "T2w", "02": "T2w", "03": "T1w"}
    assert [im.session for im in find_images(bids, ["sub-02"], ["ses-2"])] == ["2"]
    assert [im.subject for im in find_images(bids, ["01 02"], acquisitions=["lowfield"])] == [
        "02",
        "02",
    ]
    with pytest.raises(LoFiError, match="sub-09"):
        find_images(bids, ["09"])
    with pytest.raises(LoFiError, match="dataset_description"):
        find_images(tmp_path)


def test_participant_level_writes_bids_derivatives(tmp_path, cli):
    bids = make_bids(tmp_path / "bids")
    out = tmp_path / "out"
    code = cli(
        "bids",
        bids,
        out,
        "participant",
        "--participant_label",
        "sub-01",
        "02",
        "--save-probabilities",
    )
    assert code == 1  # sub-02's second session is broken: reported, the rest done
    stem01, stem02 = "sub-01", "sub-02_ses-1_acq-lowfield"
    assert tree(out) == {
        "dataset_description.json",
        "desc-hippocampus_dseg.tsv",
        ".bidsignore",
        f"sub-01/anat/{stem01}_{DSEG}.nii.gz",
        f"sub-01/anat/{stem01}_{DSEG}.json",
        f"sub-01/anat/{stem01}_space-orig_label-LeftHippocampus_desc-hippocampus_probseg.nii.gz",
        f"sub-01/anat/{stem01}_space-orig_label-RightHippocampus_desc-hippocampus_probseg.nii.gz",
        f"sub-01/figures/{stem01}_{DSEG}.png",
        "sub-01/sub-01_desc-hippocampus_volumes.tsv",
        f"sub-02/ses-1/anat/{stem02}_{DSEG}.nii.gz",
        f"sub-02/ses-1/anat/{stem02}_{DSEG}.json",
        f"sub-02/ses-1/anat/{stem02}_space-orig_label-LeftHippocampus_desc-hippocampus_probseg.nii.gz",
        f"sub-02/ses-1/anat/{stem02}_space-orig_label-RightHippocampus_desc-hippocampus_probseg.nii.gz",
        f"sub-02/figures/{stem02}_{DSEG}.png",
        "sub-02/sub-02_desc-hippocampus_volumes.tsv",
        "logs/sub-02_ses-2_acq-lowfield_T2w_failed.json",
    }
    # label map on the input's grid, both sides found
    src = nib.load(bids / "sub-01/anat/sub-01_T2w.nii.gz")
    seg = nib.load(out / f"sub-01/anat/{stem01}_{DSEG}.nii.gz")
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
    assert set(np.unique(np.asanyarray(seg.dataobj))) == {0, 1, 2}
    sidecar = json.loads((out / f"sub-01/anat/{stem01}_{DSEG}.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2w.nii.gz"]
    assert sidecar["volumes"]["left_ml"] > 0
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    generated = desc["GeneratedBy"][0]
    assert generated["Name"] == "lofihippseg" and generated["Version"]
    assert generated["Model"]["Source"] == "fake-bright-blobs"
    assert len(generated["Model"]["SHA256"]) == 64
    assert desc["SourceDatasets"][0]["DOI"] == "10.0/tiny"
    assert desc["SourceDatasets"][0]["URL"] == bids.resolve().as_uri()
    labels = (out / "desc-hippocampus_dseg.tsv").read_text().splitlines()
    assert labels[0].split("\t") == ["index", "name", "abbreviation", "color"]
    assert [line.split("\t")[:2] for line in labels[2:]] == [
        ["1", "Left-Hippocampus"],
        ["2", "Right-Hippocampus"],
    ]
    rows = [
        line.split("\t")
        for line in (out / "sub-02/sub-02_desc-hippocampus_volumes.tsv").read_text().splitlines()
    ]
    header = rows[0]
    by_session = {
        r[header.index("session_id")]: dict(zip(header, r, strict=True)) for r in rows[1:]
    }
    assert by_session["ses-1"]["status"] != "failed" and float(by_session["ses-1"]["left_ml"]) > 0
    assert by_session["ses-2"]["status"] == "failed"
    assert "truncated" in by_session["ses-2"]["error"] or "corrupt" in by_session["ses-2"]["error"]
    assert list((bids / "derivatives/other").iterdir()) == []  # never read or written


def test_rerun_skips_finished_and_redoes_the_fixed_subject(tmp_path, cli):
    bids = make_bids(tmp_path / "bids")
    out = tmp_path / "out"
    assert cli("bids", bids, out, "participant") == 1
    done = out / f"sub-01/anat/sub-01_{DSEG}.nii.gz"
    before = done.stat().st_mtime_ns
    assert cli("bids", bids, out, "participant") == 1  # the broken image still fails
    assert done.stat().st_mtime_ns == before  # finished subject skipped
    write_scan(bids / "sub-02/ses-2/anat/sub-02_ses-2_acq-lowfield_T2w.nii.gz", seed=5)
    assert cli("bids", bids, out, "participant") == 0
    assert done.stat().st_mtime_ns == before
    assert (out / f"sub-02/ses-2/anat/sub-02_ses-2_acq-lowfield_{DSEG}.nii.gz").is_file()
    assert not list((out / "logs").glob("*_failed.json"))  # the failure record is gone
    assert cli("bids", bids, out, "group") == 0
    table = (out / "group_volumes.tsv").read_text().splitlines()
    assert len(table) == 4 and all("\tfailed\t" not in line for line in table)
    assert (out / "report.html").is_file()


def test_group_level_reports_failures_and_needs_participant_results(tmp_path, cli):
    bids = make_bids(tmp_path / "bids")
    out = tmp_path / "out"
    assert cli("bids", bids, out, "group") == 2  # nothing to gather yet: one-line error
    cli("bids", bids, out, "participant")
    assert cli("bids", bids, out, "group", "--no-report") == 0
    rows = (out / "group_volumes.tsv").read_text().splitlines()
    assert rows[0].startswith("participant_id\tsession_id\tsource\tleft_ml")
    assert sorted(r.split("\t")[0] for r in rows[1:]) == ["sub-01", "sub-02", "sub-02"]
    assert sum("\tfailed\t" in r for r in rows) == 1
    assert not (out / "report.html").exists()


def test_other_model_in_the_same_folder_is_refused(tmp_path, cli, monkeypatch):
    bids = make_bids(tmp_path / "bids", broken=False)
    out = tmp_path / "out"
    assert cli("bids", bids, out, "participant", "--participant-label", "01") == 0
    other = fake_model()
    other.spec = type(other.spec)(n_filters=4, view_mode="lowpass", cutoff=0.5, recipe="released")
    monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: other)
    assert cli("bids", bids, out, "participant", "--participant-label", "02") == 2
    assert not (out / "sub-02").exists()


def _schema():
    schema_mod = pytest.importorskip(
        "bidsschematools.schema", reason="bidsschematools (test extra) checks names against BIDS"
    )
    return schema_mod.load_schema()


def _matches_derivative_rule(schema, relpath: str) -> bool:
    """True when relpath follows a BIDS derivative imaging rule (entities, order, values)."""
    keys = {name: schema.objects.entities[name]["name"] for name in schema.rules.entities}
    order = [keys[name] for name in schema.rules.entities]
    parts = relpath.split("/")
    filename = parts[-1]
    extension = next(e for e in (".nii.gz", ".nii", ".json", ".tsv") if filename.endswith(e))
    *pairs, suffix = filename[: -len(extension)].split("_")
    entities = dict(pair.split("-", 1) for pair in pairs)
    got = list(entities)
    if len(got) != len(pairs) or not set(got) <= set(order):
        return False
    if got != sorted(got, key=order.index):
        return False
    for entity, value in entities.items():
        long = next(k for k, v in keys.items() if v == entity)
        fmt = schema.objects.entities[long].get("format", "label")
        if not re.fullmatch(schema.objects.formats[fmt]["pattern"], value):
            return False
    datatype = parts[-2]
    for rule in schema.rules.files.deriv.imaging.values():
        allowed = {keys[k] for k in rule["entities"]}
        if (
            suffix in rule["suffixes"]
            and extension in rule["extensions"]
            and datatype in rule.get("datatypes", [])
            and set(got) <= allowed
        ):
            return True
    return False


def test_derivative_names_follow_the_bids_schema(tmp_path, cli):
    schema = _schema()
    keys = [schema.objects.entities[n]["name"] for n in schema.rules.entities]
    assert [k for k in keys if k in ENTITY_ORDER] == list(ENTITY_ORDER)  # our order is BIDS's
    bids = make_bids(tmp_path / "bids", broken=False)
    out = tmp_path / "out"
    assert cli("bids", bids, out, "participant", "--save-probabilities") == 0
    images = [p for p in tree(out) if "/anat/" in p]
    assert len(images) == 12  # 3 images x (dseg + json + 2 probseg)
    for relpath in images:
        assert _matches_derivative_rule(schema, relpath), relpath
    assert not _matches_derivative_rule(schema, "sub-01/anat/sub-01_desc-x_space-orig_dseg.nii.gz")


def _annexed(path):
    """Make ``path`` a git-annex style symbolic link whose content was never fetched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("../../.git/annex/objects/Xk/K1/SHA256E-s1--0.nii.gz/SHA256E-s1--0.nii.gz")
    return path


def test_absent_annexed_image_is_named_and_counted_failed(tmp_path, cli, capsys):
    bids = make_bids(tmp_path / "bids", broken=False)
    absent = _annexed(bids / "sub-07/anat/sub-07_T2w.nii.gz")
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli("bids", bids, out, "participant", "--participant-label", "07", "01") == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {absent}: absent")
    assert f"datalad get {absent}" in errors[0] and "not fetched" in errors[0]
    assert "1 failed" in captured.out
    assert (out / "sub-01/anat" / f"sub-01_{DSEG}.nii.gz").is_file()
    assert (out / "logs" / "sub-07_T2w_failed.json").is_file()
    # alone: the image is there (absent content), so it is not "no T2w images found"
    assert cli("bids", bids, tmp_path / "out2", "participant", "--participant-label", "07") == 1
    captured = capsys.readouterr()
    assert "no T2w images" not in captured.err and f"error: {absent}: absent" in captured.err


def test_participant_failures_print_one_line_each_with_the_reason(tmp_path, cli, capsys):
    bids = make_bids(tmp_path / "bids")  # sub-02 ses-2 is a truncated gzip
    capsys.readouterr()
    assert cli("bids", bids, tmp_path / "out", "participant") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    broken = bids / "sub-02/ses-2/anat/sub-02_ses-2_acq-lowfield_T2w.nii.gz"
    assert len(errors) == 1 and errors[0].startswith(f"error: {broken}: ")
    assert "corrupt" in errors[0] or "not a readable" in errors[0]


@pytest.mark.parametrize("where", ["", "sub-01", "derivatives"])
def test_output_in_the_raw_dataset_is_refused_at_both_levels(tmp_path, cli, capsys, where):
    bids = make_bids(tmp_path / "bids", broken=False)
    out = bids / where if where else bids
    before = tree(bids)
    for level in ("participant", "group"):
        capsys.readouterr()
        assert cli("bids", bids, out, level) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and "never write into it" in errors[0], errors
    assert tree(bids) == before  # nothing written into the raw dataset
    # derivatives/NAME is the usual place and stays allowed
    assert cli("bids", bids, bids / "derivatives" / "lofihippseg", "participant") == 0
    assert cli("bids", bids, bids / "derivatives" / "lofihippseg", "group") == 0


@pytest.mark.parametrize("weight", ["0", "2"])
def test_edge_weight_reaches_the_bids_sidecars(tmp_path, cli, weight):
    bids = make_bids(tmp_path / "bids")
    out = tmp_path / "out"
    code = cli("bids", bids, out, "participant", "--participant_label", "01",
               "--edge-weight", weight)  # fmt: skip
    assert code == 0
    sidecar = json.loads((out / f"sub-01/anat/sub-01_{DSEG}.json").read_text())
    assert f'"edge_weight": {float(weight)}' in json.dumps(sidecar)
    assert ('"edge_refinement"' in json.dumps(sidecar)) == (weight != "0")
