#!/usr/bin/env bash
# The GPU checks in one prepared run (under 9 minutes on one large GPU):
#   1. the CUDA-only tests (pytest -m cuda);
#   2. bench_train.py at the released size (128^3, batch 8, 16 filters), fp32 and AMP, peak GPU
#      memory: critic-free, the critic on every voxel, the sampled critic;
#   3. bench_roi_strategies.py --device cuda (whole volume, ROI, MONAI sliding window);
#   4. the synthetic generator's throughput on the GPU.
# Figures go to OUT_DIR (default gpu_check_out/): tests.txt, train.csv, train.txt, predict.json,
# predict.txt, synth.txt, env.txt, and summary.txt (each step's exit status and seconds).
#
# On a bare GPU machine (its own python3 and torch, no nibabel/monai, no network): bring the
# wheels made here beforehand by `benchmarks/gpu_wheels.sh` (folder .whl/); benchmarks/gpu_env.sh
# installs whatever is missing from them into a private folder, and runs the package from src/.
#
# Usage:
#   benchmarks/gpu_check.sh [OUT_DIR]            # on the GPU machine
#   benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # anywhere, CPU, toy sizes, about a minute
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-gpu_check_out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
# shellcheck source=benchmarks/gpu_env.sh
if ! source benchmarks/gpu_env.sh >> "$SUMMARY" 2>&1; then cat "$SUMMARY"; exit 1; fi

if [[ $DRY == 1 ]]; then
  DEVICE=cpu; TRAIN_SIZE="16x16x16:2:4"; STEPS=1; PRECISION="fp32"
  PREDICT_ARGS=(--device cpu --threads 1 --shape 48 64 56 --n-filters 4 --only roi)
  SYNTH_ARGS=(--device cpu --n 1 --threads 1 --shape 48 48 48 --packaged)
  LIMIT=120
else
  DEVICE=cuda; TRAIN_SIZE="128x128x128:8:16"; STEPS=3; PRECISION="fp32 amp"
  PREDICT_ARGS=(--device cuda --threads 8)
  SYNTH_ARGS=(--device cuda --n 10)
  LIMIT=240
fi

step() {  # step NAME SECONDS COMMAND... : run with a time limit, log status and seconds
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$SUMMARY"
  return 0
}

"$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

step tests "$LIMIT" "$PY" -m pytest -q -m cuda -p no:cacheprovider tests > "$OUT/tests.txt" 2>&1
# shellcheck disable=SC2086
step train "$LIMIT" "$PY" benchmarks/bench_train.py --device "$DEVICE" --size "$TRAIN_SIZE" \
  --steps "$STEPS" --precision $PRECISION --out "$OUT/train.csv" > "$OUT/train.txt" 2>&1
step predict "$LIMIT" "$PY" benchmarks/bench_roi_strategies.py "${PREDICT_ARGS[@]}" \
  --json "$OUT/predict.json" > "$OUT/predict.txt" 2>&1
step synth "$LIMIT" "$PY" benchmarks/bench_synth.py "${SYNTH_ARGS[@]}" > "$OUT/synth.txt" 2>&1
cat "$SUMMARY"
! grep -v ": exit 0," "$SUMMARY" >/dev/null
