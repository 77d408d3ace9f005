"""The prepared GPU script runs end to end on a CPU at toy sizes (``--dry-run``)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["tests", "train", "predict", "synth"]
    assert all(": exit 0," in line for line in summary)
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert [r["recipe"] for r in rows] == ["critic-free", "critic, all voxels", "critic, sampled"]
    assert all(float(r["seconds_per_iteration"]) > 0 and float(r["peak_mib"]) > 0 for r in rows)
    predict = json.loads((out / "predict.json").read_text())
    assert predict["roi"]["seconds"] > 0
    assert "s/case" in (out / "synth.txt").read_text()
    assert (
        "passed" in (out / "tests.txt").read_text() or "skipped" in (out / "tests.txt").read_text()
    )
