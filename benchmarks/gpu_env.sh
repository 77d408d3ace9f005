# Sourced by the GPU scripts (benchmarks/gpu_check.sh, release/gpu_campaign.sh), from the
# repository root: make the package importable on a bare GPU machine (its own python3 and
# torch, no nibabel/monai, no network). Missing packages are installed from the wheels made
# here beforehand by benchmarks/gpu_wheels.sh (folder $WHEELS, default .whl/) into a private
# folder; the package then runs from src/. Sets PY; returns non-zero when it cannot.
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
if ! "$PY" -c "import nibabel, monai, click, scipy, tqdm" 2>/dev/null; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "missing packages and no wheels in $WHEELS: run benchmarks/gpu_wheels.sh first"
    return 1
  fi
  SITE="${SITE:-/tmp/lofihippseg-site}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { echo "wheel install failed"; return 1; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
