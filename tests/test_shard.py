"""Sharding a cohort: --shard I/N and --shard slurm (SLURM job arrays), for predict and bids."""

from __future__ import annotations

import pytest
from cohort_helpers import fake_model, make_bids, make_flat_cohort, write_scan

from lofihippseg.cli import main
from lofihippseg.errors import LoFiError
from lofihippseg.inference import model_loading
from lofihippseg.reporting.volumes import read_rows
from lofihippseg.sharding import parse_shard, slurm_shard, take_shard

SLURM_VARS = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
)


def slurm_env(task: int, count: int, first: int = 0, step: int = 1) -> dict[str, str]:
    return dict(zip(SLURM_VARS, map(str, (task, count, first, step)), strict=True))


def test_parse_shard_forms():
    assert parse_shard(None) is None
    assert parse_shard("2/3") == (2, 3)
    assert parse_shard("slurm", slurm_env(0, 4)) == (1, 4)
    assert parse_shard("SLURM", slurm_env(4, 4, first=1)) == (4, 4)  # --array=1-4
    assert slurm_shard(slurm_env(6, 4, first=0, step=2)) == (4, 4)  # --array=0-6:2
    # without MIN/STEP (set by SLURM for every array) a 0-based array is assumed
    assert slurm_shard({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3"}) == (1, 3)
    for bad in ("0/2", "3/2", "1-2", "x"):
        with pytest.raises(LoFiError):
            parse_shard(bad)
    with pytest.raises(LoFiError, match="SLURM_ARRAY_TASK_ID is not set"):
        parse_shard("slurm", {})
    with pytest.raises(LoFiError, match="SLURM_ARRAY_TASK_COUNT is not set"):
        parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "1"})
    with pytest.raises(LoFiError, match="not an integer"):
        parse_shard("slurm", slurm_env(0, 2) | {"SLURM_ARRAY_TASK_ID": "a"})
    with pytest.raises(LoFiError, match="contiguous"):
        parse_shard("slurm", slurm_env(9, 3, first=1))  # --array=1,5,9
    items = list("abcdefg")
    parts = [take_shard(items, (i, 3)) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == items and max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: fake_model())
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)


def run_cli(*args) -> int:
    try:
        main([*map(str, args), "--device", "cpu", "--quiet"])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_predict_shard_slurm_covers_the_cohort_once(tmp_path, fake, monkeypatch, capsys):
    make_flat_cohort(tmp_path / "in", 5)
    out = tmp_path / "out"
    common = ("predict", tmp_path / "in", "-o", out, "--roi", "off", "--no-qc")
    assert run_cli(*common, "--shard", "slurm") == 2
    assert "SLURM_ARRAY_TASK_ID is not set" in capsys.readouterr().err
    seen: list[set[str]] = []
    for task in range(1, 4):  # sbatch --array=1-3
        for name, value in slurm_env(task, 3, first=1).items():
            monkeypatch.setenv(name, value)
        before = {r["case"] for r in read_rows(out / "volumes.csv")}
        assert run_cli(*common, "--shard", "slurm") == 0
        seen.append({r["case"] for r in read_rows(out / "volumes.csv")} - before)
    assert seen == [{"case00", "case03"}, {"case01", "case04"}, {"case02"}]
    assert set().union(*seen) == {f"case{i:02d}" for i in range(5)}


def test_bids_participant_shard_slurm_splits_by_participant(tmp_path, fake, monkeypatch):
    bids = make_bids(tmp_path / "bids", broken=False)
    write_scan(bids / "sub-03/anat/sub-03_T2w.nii.gz", seed=7)
    out = tmp_path / "out"
    done: list[set[str]] = []
    for task in range(2):  # sbatch --array=0-1
        for name, value in slurm_env(task, 2).items():
            monkeypatch.setenv(name, value)
        assert run_cli("bids", bids, out, "participant", "--shard", "slurm") == 0
        done.append({p.name for p in out.glob("sub-*") if p.is_dir()} - set().union(*done))
    assert done == [{"sub-01", "sub-03"}, {"sub-02"}]  # sub-02's two sessions stay together
    assert len(list(out.rglob("*_dseg.nii.gz"))) == 4
    assert run_cli("bids", bids, out, "group", "--no-report") == 0
    assert len((out / "group_volumes.tsv").read_text().splitlines()) == 5
