"""The cohort report in a real headless browser (Chromium): no console errors, figures drawn,
the table sorts, and a screenshot that is not blank. Skips where no Chromium is installed
(``.ci/run`` installs Debian's ``chromium``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from cohort_helpers import fake_model, make_flat_cohort, settings
from matplotlib.image import imread

from lofihippseg.inference.api import predict
from lofihippseg.reporting.cohort import collect_cohort
from lofihippseg.reporting.cohort_report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
)
# installed before the report's scripts run: collects uncaught errors and console.error calls
PROBE_HEAD = """<script>window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
var __consoleError = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments); };</script>"""
# after load: writes what the test checks into the DOM, which --dump-dom prints
PROBE_TAIL = """<script>window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (i) {
    return {alt: i.alt, width: i.naturalWidth, complete: i.complete}; });
  window.lofihippsegSortBy(4);  // "left mL", ascending
  var first = document.querySelector("#cases tbody tr td").textContent.trim();
  var out = document.createElement("pre"); out.id = "probe-result";
  out.textContent = JSON.stringify({images: images, errors: window.__errors, first: first});
  document.body.appendChild(out); });</script>"""


def browser() -> str:
    found = os.environ.get("LOFIHIPPSEG_BROWSER") or next(
        (path for name in BROWSERS if (path := shutil.which(name))), None
    )
    if not found:
        pytest.skip(
            "no Chromium/Chrome installed (apt-get install chromium; .ci/run does it), "
            "so the report is not opened in a real browser here"
        )
    return found


def run_browser(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    make_flat_cohort(root / "in", 6)
    (root / "in" / "broken.nii.gz").write_bytes(b"not an image")
    predict(root / "in", root / "out", fake_model(), settings(), progress=False)
    return write_report(root / "out")


def test_console_errors_are_detected(tmp_path):
    exe = browser()
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); nope();</script></body></html>")
    result = run_browser(exe, tmp_path, "--dump-dom", bad.as_uri())
    assert any("boom" in line for line in console_lines(result.stderr))  # the check can fail


def test_report_loads_without_errors_and_renders(report, tmp_path):
    exe = browser()
    result = run_browser(exe, tmp_path, "--dump-dom", report.resolve().as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_lines(result.stderr) == []
    assert "QC pictures" in result.stdout

    probe = tmp_path / "probe.html"
    html = report.read_text()
    probe.write_text(
        html.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_TAIL + "</body>")
    )
    result = run_browser(exe, tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stderr[-2000:]
    state = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert state["errors"] == []
    assert len(state["images"]) == 3 + 6  # three distributions, six QC thumbnails
    assert all(i["complete"] and i["width"] > 0 for i in state["images"]), state["images"]
    lefts = {c.case: c.values["left_ml"] for c in collect_cohort(report.parent).done}
    assert state["first"] == min(lefts, key=lefts.get)  # sorting by left volume works


def test_report_screenshot_is_not_blank(report, tmp_path):
    exe = browser()
    shot = tmp_path / "shot.png"
    result = run_browser(
        exe, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", report.resolve().as_uri()
    )
    assert shot.is_file(), result.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels.std() > 0.05  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # text, figures and pictures
