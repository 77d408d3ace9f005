"""docs/hpc.md: its sbatch scripts run as written, with a SLURM array's variables set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cohort_helpers import make_bids

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "hpc.md"
LOFIHIPPSEG = Path(sys.executable).with_name("lofihippseg")


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)


def sbatch_options(script: str) -> dict[str, str]:
    options = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH ") :].partition("=")
            options[key] = value
    return options


def run_script(script: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = tmp_path / "job.sh"
    path.write_text(script)
    return subprocess.run(
        ["bash", str(path)],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_scripts_parse():
    participant, group, submit = bash_blocks()
    options = sbatch_options(participant)
    first, last = map(int, options["--array"].split("-"))
    assert (first, last) == (0, 9) and options["--cpus-per-task"].isdigit()
    assert "--shard slurm" in participant and " participant " in participant
    assert " group" in group and "--array" not in sbatch_options(group)
    assert "--dependency=afterany" in submit
    for script in (participant, group, submit):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_array_tasks_then_group_cover_every_participant(tmp_path):
    participant, group, submit = bash_blocks()
    bids = make_bids(tmp_path / "bids", broken=False)
    out = tmp_path / "derivatives"
    env = {"BIDS_DIR": str(bids), "OUT_DIR": str(out), "LOFIHIPPSEG": str(LOFIHIPPSEG)}
    env["SLURM_CPUS_PER_TASK"] = "1"
    # without the array variables the participant script stops with a clear error
    result = run_script(participant, tmp_path, env)
    assert result.returncode == 2 and "SLURM_ARRAY_TASK_ID is not set" in result.stderr
    for task in (0, 1):  # the script's array, shrunk to 2 tasks for 2 participants
        slurm = {
            "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_COUNT": "2",
            "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_STEP": "1",
        }
        result = run_script(participant, tmp_path, {**env, **slurm})
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"sub-0{task + 1}" in {p.name for p in out.glob("sub-*")}
    result = run_script(group, tmp_path, env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = (out / "group_volumes.tsv").read_text().splitlines()[1:]
    assert sorted(r.split("\t")[0] for r in rows) == ["sub-01", "sub-02", "sub-02"]
    assert (out / "report.html").is_file()
    # the submission lines, with a stand-in sbatch that records its arguments
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/bash\necho "$@" >> "$SBATCH_LOG"\necho 4242\n')
    (fake / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.log"
    result = run_script(
        submit, tmp_path, {"PATH": f"{fake}:{os.environ['PATH']}", "SBATCH_LOG": str(log)}
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].endswith("participant.sbatch")
    assert "--dependency=afterany:4242" in calls[1] and calls[1].endswith("group.sbatch")
