#!/usr/bin/env bash
# Download (here, with network) the wheels a bare GPU machine lacks for benchmarks/gpu_check.sh:
# nibabel and MONAI (pure Python; the GPU image has numpy, scipy, click, tqdm, matplotlib, torch).
# Usage: benchmarks/gpu_wheels.sh [DEST]   (default .whl/, which git ignores)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-.whl}"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DEST" \
  "nibabel>=5.0" "monai>=1.3"
ls -l "$DEST"
