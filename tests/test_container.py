"""The container image in a real runtime (podman, or docker with a daemon): the BIDS App on a
tiny dataset mounted read-only, predict on the shipped example, checked from the host.

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


def test_bids_app_and_predict_in_the_container(tmp_path):
    cc = _check_module()
    engine = cc.detect_engine()
    if engine is None:
        pytest.skip("no container runtime: neither podman nor a docker daemon is available")
    image = os.environ.get("LOFIHIPPSEG_IMAGE", cc.DEFAULT_IMAGE)
    if not cc.image_exists(engine, image):
        if os.environ.get("LOFIHIPPSEG_CONTAINER_BUILD", "1") == "0":
            pytest.skip(f"no image {image} in {engine} (build it with container/build.sh)")
        cc.build(engine, image)
    host_cli = Path(sys.executable).parent / "lofihippseg"
    if not host_cli.exists():
        pytest.skip(f"no lofihippseg beside {sys.executable} to compare the container with")
    result = cc.run_checks(engine, image, tmp_path, str(host_cli), repeats=1, verbose=False)
    assert not result["failures"], "\n".join(result["failures"])
    assert len(result["passed"]) >= 30
