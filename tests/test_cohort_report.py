"""The cohort QC report: what it reads, the outlier rule, a self-contained page, the CLI."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from cohort_helpers import fake_model, make_flat_cohort, settings
from conftest import run_cli

from lofihippseg.cli import main
from lofihippseg.inference import model_loading
from lofihippseg.inference.api import predict
from lofihippseg.reporting.cohort import CohortCase, collect_cohort, flag_outliers, robust_z
from lofihippseg.reporting.cohort_report import write_report


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    """10 segmented cases (case09 with much bigger hippocampi) and one broken file."""
    root = tmp_path_factory.mktemp("cohort")
    make_flat_cohort(root / "in", 10)
    (root / "in" / "broken.nii.gz").write_bytes(b"\x1f\x8b not an image")
    predict(root / "in", root / "out", fake_model(), settings(), progress=False)
    return root / "out"


def test_robust_z_and_outlier_rule():
    z = robust_z(np.array([2.0, 2.1, 2.2, 2.3, 2.4, 9.0]))
    assert abs(z[-1]) > 3 and np.all(np.abs(z[:-1]) < 3)
    assert np.all(robust_z(np.ones(6)) == 0)
    cases = [
        CohortCase(f"c{i}", values={"left_ml": 3 + 0.1 * i, "view_dice": 0.9}) for i in range(6)
    ]
    cases += [
        CohortCase("low", values={"left_ml": 3.2, "view_dice": 0.3}),
        CohortCase("empty", status="empty", values={"left_ml": 3.1, "view_dice": 0.9}),
        CohortCase("broken", status="failed", error="bad"),
    ]
    flagged = {c.case: c.flags for c in flag_outliers(cases)}
    assert set(flagged) == {"low", "empty"}
    assert "view agreement 0.30 < 0.5" in flagged["low"]
    assert flagged["empty"] == ["predict status empty"]
    few = [CohortCase(f"c{i}", values={"left_ml": v}) for i, v in enumerate((3, 3, 30))]
    # robust z needs at least 5 cases (30 mL is still flagged, by the absolute rule)
    assert [c.flags for c in flag_outliers(few)] == [["left volume 30.00 mL outside 0.5-8 mL"]]


def test_collect_reads_sidecars_failures_and_status(cohort_dir):
    cohort = collect_cohort(cohort_dir)
    assert len(cohort.cases) == 11 and len(cohort.done) == 10
    [failure] = cohort.failures
    assert failure.case == "broken" and "broken.nii.gz" in failure.error
    assert "\n" not in failure.error
    by_case = {c.case: c for c in cohort.cases}
    assert {c.case for c in cohort.cases if c.flagged} == {"case09"}
    assert any("left volume robust z" in f for f in by_case["case09"].flags)
    assert all(c.qc is not None and c.qc.is_file() for c in cohort.done)
    assert cohort.models.most_common(1)[0][0] == ("fake-bright-blobs", "paper")
    # the report copes with sidecars written before predict had a status field
    sidecar = cohort_dir / "case00_hipp.json"
    data = json.loads(sidecar.read_text())
    data.pop("status", None)
    data["volumes"].pop("status", None)
    old = cohort_dir.parent / "old"
    shutil.copytree(cohort_dir, old)
    (old / "case00_hipp.json").write_text(json.dumps(data))
    assert {c.case: c.status for c in collect_cohort(old).cases}["case00"] == "ok"


def test_report_is_self_contained_and_complete(cohort_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(cohort_dir, moved)  # rebuilt from a folder moved elsewhere, no model run
    path = write_report(moved)
    html = path.read_text()
    assert path == moved / "report.html"
    # nothing loaded from the network; every picture embedded
    assert not re.search(r"""<(?:script|img|link|iframe)[^>]+(?:src|href)=["']https?:""", html)
    assert "<link" not in html and "@import" not in html
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,', html)
    figures = re.findall(r'<img id="fig-\w+" src="data:image/png;base64,', html)
    assert len(thumbs) == 10 and len(figures) == 3
    # thumbnails link to the full pictures beside the report
    assert 'href="case09_qc.png"' in html
    assert "broken" in html and "broken.nii.gz" in html  # the failure and its error
    assert html.index('id="tile-case09"') < html.index('id="tile-case00"')  # flagged first
    table = html[html.index('<table id="cases">') :]
    assert len(re.findall(r"<tr class=", table)) == 11
    for text in ("lofihippseg 0", "fake-bright-blobs", "robust z", "Methods", "fusion="):
        assert text in html
    methods = re.search(r'<blockquote id="methods-text">(.*?)</blockquote>', html, re.S).group(1)
    assert "11 images" in methods and "1 image(s) could not be processed" in methods


def test_predict_report_flag_and_report_command(tmp_path, monkeypatch):
    monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: fake_model())
    make_flat_cohort(tmp_path / "in", 3)
    out = tmp_path / "out"
    main(
        [
            "predict",
            str(tmp_path / "in"),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--roi",
            "off",
            "--quiet",
            "--report",
        ]
    )
    assert (out / "report.html").is_file()
    (out / "report.html").unlink()
    main(["report", str(out), "-o", str(tmp_path / "r.html"), "--title", "My cohort"])
    html = (tmp_path / "r.html").read_text()
    assert "<title>My cohort</title>" in html and 'href="out/case00_qc.png"' in html


def test_methods_say_on_which_grid_the_networks_ran(tmp_path, monkeypatch):
    monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: fake_model())
    make_flat_cohort(tmp_path / "in", 3)
    for grid in ("native", "2"):
        out = tmp_path / grid
        args = ["predict", str(tmp_path / "in"), "-o", str(out), "--device", "cpu"]
        main([*args, "--roi", "off", "--quiet", "--grid", grid, "--report"])
        sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("*_hipp.json"))]
        assert len(sidecars) == 3
        cohort = collect_cohort(out)
        assert len(cohort.settings) == 1  # per-case grid spacings do not split the settings
        html = (out / "report.html").read_text()
        methods = re.search(r'<blockquote id="methods-text">(.*?)</blockquote>', html, re.S)[1]
        if grid == "native":
            assert "segmented on their own voxel grid" in methods
            assert all("grid_spacing_mm" not in s["effective"] for s in sidecars)
        else:
            assert "resampled to a 2 mm isotropic working grid" in methods
            assert all(s["effective"]["grid_spacing_mm"] for s in sidecars)


def test_unreadable_sidecar_is_a_failed_case_and_a_rerun_redoes_it(tmp_path, capsys):
    make_flat_cohort(tmp_path / "in", 3)
    out = tmp_path / "out"
    predict(tmp_path / "in", out, fake_model(), settings(), progress=False)
    sidecar = out / "case01_hipp.json"
    sidecar.write_text(sidecar.read_text()[:40])  # truncated
    cohort = collect_cohort(out)
    [failure] = cohort.failures
    assert failure.case == "case01" and "unreadable sidecar" in failure.error
    assert len(cohort.done) == 2
    code, stdout, stderr = run_cli(["report", out], capsys)
    assert code == 0 and "1 failed" in stdout and "failed: case01:" in stderr
    html = (out / "report.html").read_text()
    assert "unreadable sidecar" in html
    # a truncated label map is found too; a rerun redoes both cases and skips the good one
    labels = out / "case02_hipp.nii.gz"
    labels.write_bytes(labels.read_bytes()[:-40])
    report = predict(tmp_path / "in", out, fake_model(), settings(), progress=False)
    status = {r.case: r.status for r in report.results}
    assert status == {"case00": "skipped", "case01": "ok", "case02": "ok"}
    assert json.loads(sidecar.read_text())["tool"] == "lofihippseg"
    assert not collect_cohort(out).failures


def test_bids_group_lists_an_unreadable_sidecar_as_failed(tmp_path, monkeypatch, capsys):
    from cohort_helpers import make_bids

    monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: fake_model())
    bids = make_bids(tmp_path / "bids", broken=False)
    out = tmp_path / "deriv"
    run_cli(["bids", bids, out, "participant", "--device", "cpu", "--quiet"], capsys)
    [sidecar] = (out / "sub-01").rglob("*_dseg.json")
    sidecar.write_text("{")
    code, stdout, _ = run_cli(["bids", bids, out, "group", "--no-report"], capsys)
    assert code == 0 and "1 failed image(s)" in stdout
    rows = (out / "group_volumes.tsv").read_text().splitlines()
    assert sum("\tfailed\t" in r and "unreadable sidecar" in r for r in rows) == 1


@pytest.mark.parametrize("content", ["empty", "csv_only", "missing"])
def test_report_on_a_folder_without_results_is_one_line_error(tmp_path, capsys, content):
    folder = tmp_path / "out"
    if content != "missing":
        folder.mkdir()
    if content == "csv_only":
        (folder / "volumes.csv").write_text("case,left_ml,right_ml,status\nc1,3.0,3.1,ok\n")
    code, _, err = run_cli(["report", folder], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert str(folder) in errors[0]
    if content == "csv_only":
        assert "volumes.csv lists 1 case(s) but no lofihippseg sidecar" in errors[0]
    elif content == "empty":
        assert "no lofihippseg results here" in errors[0]
    assert not (folder / "report.html").exists()


def test_values_that_cannot_be_right_are_flagged_whatever_the_cohort(tmp_path):
    # asymmetry spread evenly over -0.44..+0.44: no robust-z outlier, but the ends are wrong
    ais = np.linspace(-0.44, 0.44, 9)
    cases = [
        CohortCase(f"c{i}", values={"left_ml": 3.0, "right_ml": 3.0, "asymmetry_index": a})
        for i, a in enumerate(ais)
    ]
    cases.append(CohortCase("tiny", values={"left_ml": 0.3, "right_ml": 3.0}))
    cases.append(
        CohortCase("said", status="implausible_volume", values={"left_ml": 9.0, "right_ml": 3.0})
    )
    flagged = {c.case: c.flags for c in flag_outliers(cases)}
    assert not any("robust z" in f for c in ("c0", "c8") for f in flagged[c])
    assert flagged["c0"] == ["|asymmetry index| 0.44 > 0.2"] and "c8" in flagged
    assert {"c3", "c4", "c5"}.isdisjoint(flagged)  # |AI| <= 0.11
    assert "left volume 0.30 mL outside 0.5-8 mL" in flagged["tiny"]
    assert "predict status implausible_volume" in flagged["said"]
    assert not any("outside" in f for f in flagged["said"])  # not said twice
    # the report states the rule, in the summary and the methods
    make_flat_cohort(tmp_path / "in", 2)
    predict(tmp_path / "in", tmp_path / "out", fake_model(), settings(), progress=False)
    html = write_report(tmp_path / "out").read_text()
    assert "|asymmetry index| &gt; 0.2" in html and "outside 0.5-8 mL" in html
    assert "absolute asymmetry index exceeded 0.2" in html


def test_what_predict_finds_per_scan_is_not_a_cohort_setting(tmp_path):
    """Scans of different widths (and a crop among heads) were run with the same settings: one
    settings group, no "different settings" badge; a different fusion is a second group."""
    from cohort_helpers import head
    from conftest import write_nifti

    for i, width_mm in enumerate((96.0, 120.0, 60.0)):  # the last one is a crop
        write_nifti(
            tmp_path / "in" / f"case{i}.nii.gz", head(seed=i), np.diag([width_mm / 24, 3, 3, 1])
        )
    predict(tmp_path / "in", tmp_path / "out", fake_model(), settings(), progress=False)
    sidecars = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*_hipp.json"))]
    assert len({s["effective"]["field_of_view_lr_mm"] for s in sidecars}) == 3
    assert [s["effective"]["crop"] for s in sidecars] == [False, False, True]
    cohort = collect_cohort(tmp_path / "out")
    assert len(cohort.settings) == 1 and cohort.settings[0][1] == 3
    assert not any(k in cohort.settings[0][0] for k in ("crop", "field_of_view_lr_mm"))
    assert "crop_family" in cohort.settings[0][0]  # a setting, though its name begins alike
    assert "different settings" not in write_report(tmp_path / "out").read_text()
    predict(
        tmp_path / "in", tmp_path / "out2", fake_model(), settings(fusion="union"), progress=False
    )
    for p in (tmp_path / "out2").glob("case0*"):
        shutil.copy(p, tmp_path / "out" / p.name.replace("case0", "case9"))
    assert len(collect_cohort(tmp_path / "out").settings) == 2
