"""The container image in a real runtime (podman, or docker with a daemon): the BIDS App on a
tiny dataset mounted read-only, predict on the shipped example, checked from the host; and
docs/hpc.md's sbatch scripts run with container/lofihippseg-container as their lofihippseg.

Slow (minutes): it builds the image with container/build.sh when it is missing (set
LOFIHIPPSEG_CONTAINER_BUILD=0 to skip instead). The checks themselves live in
container/check_container.py, which also runs on its own and measures the timings.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _check_module():
    spec = importlib.util.spec_from_file_location(
        "check_container", REPO / "container" / "check_container.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image():
    """(check module, engine, image): built when missing, or the test skipped."""
    cc = _check_module()
    engine = cc.detect_engine()
    if engine is None:
        pytest.skip("no container runtime: neither podman nor a docker daemon is available")
    tag = os.environ.get("LOFIHIPPSEG_IMAGE", cc.DEFAULT_IMAGE)
    if not cc.image_exists(engine, tag):
        if os.environ.get("LOFIHIPPSEG_CONTAINER_BUILD", "1") == "0":
            pytest.skip(f"no image {tag} in {engine} (build it with container/build.sh)")
        cc.build(engine, tag)
    return cc, engine, tag


def test_bids_app_and_predict_in_the_container(tmp_path, image):
    cc, engine, image = image
    host_cli = Path(sys.executable).parent / "lofihippseg"
    if not host_cli.exists():
        pytest.skip(f"no lofihippseg beside {sys.executable} to compare the container with")
    result = cc.run_checks(engine, image, tmp_path, str(host_cli), repeats=1, verbose=False)
    assert not result["failures"], "\n".join(result["failures"])
    assert len(result["passed"]) >= 30


def test_hpc_scripts_with_the_container_wrapper(tmp_path, image):
    """docs/hpc.md's participant (2 array tasks) and group scripts, LOFIHIPPSEG = the wrapper."""
    from cohort_helpers import make_bids
    from test_hpc_doc import bash_blocks, run_script

    cc, engine, image = image
    participant, group, _ = bash_blocks()
    bids = make_bids(tmp_path / "bids", broken=False)
    before = cc.fingerprint(bids)
    out = tmp_path / "derivatives"
    env = {
        "BIDS_DIR": str(bids),
        "OUT_DIR": str(out),
        "LOFIHIPPSEG": str(REPO / "container" / "lofihippseg-container"),
        "CONTAINER_ENGINE": engine,
        "LOFIHIPPSEG_IMAGE": image,
        "SLURM_CPUS_PER_TASK": "1",
    }
    for task in (0, 1):
        slurm = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2"}
        result = run_script(participant, tmp_path, {**env, **slurm})
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"sub-0{task + 1}" in {p.name for p in out.glob("sub-*")}
    result = run_script(group, tmp_path, env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = (out / "group_volumes.tsv").read_text().splitlines()[1:]
    assert sorted(r.split("\t")[0] for r in rows) == ["sub-01", "sub-02", "sub-02"]
    assert (out / "report.html").is_file()
    assert not cc.foreign_owned(out)
    assert cc.fingerprint(bids) == before
