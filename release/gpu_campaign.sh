#!/usr/bin/env bash
# The release recipe's `t2` pair trained on one GPU, in one prepared run that fits a lent
# machine's time (MINUTES of training, default 7; under 9 minutes in all):
#   1. a probe of PROBE iterations (default 150) measures iterations per second, start-up
#      included (so the estimate is low rather than high);
#   2. the campaign: as many iterations as fit in what is left of MINUTES (one cosine over
#      them), from the shipped bundle's `t2` pair, on the data packed by release/gpu_pack.py
#      (synthetic boxes made on the fly by CPU workers + the MSD training crops);
#   3. its last checkpoint exported as a float16 bundle of that pair (about 10 MB).
# Back in OUT: gpu_t2.pt, metrics.csv, train.log, config.json, summary.txt. Here, join it with
# the `t1` pair and the localiser (`python -m lofihippseg.recipe.pairs --export` with `--add-family`) and
# measure it with python -m lofihippseg.recipe.card before shipping anything.
#
# Usage:
#   python release/gpu_pack.py --out gpu_data      # here, once (needs ../shared)
#   benchmarks/gpu_wheels.sh                       # here, once (nibabel and MONAI wheels)
#   release/gpu_campaign.sh [OUT] [MINUTES]        # on the GPU machine (carry gpu_data, .whl)
#   release/gpu_campaign.sh --dry-run [OUT]        # anywhere: CPU, a few iterations, ~2 min
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-gpu_campaign_out}"
MINUTES="${2:-7}"
PROBE="${PROBE:-150}"
DATA="${GPU_DATA:-gpu_data}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
# shellcheck source=benchmarks/gpu_env.sh
if ! source benchmarks/gpu_env.sh >> "$SUMMARY" 2>&1; then cat "$SUMMARY"; exit 1; fi
if [[ ! -f "$DATA/config.json" ]]; then
  echo "no $DATA/config.json: run release/gpu_pack.py here and carry $DATA" | tee -a "$SUMMARY"
  exit 1
fi
WORK="$(mktemp -d)"
START=$SECONDS

config() {  # config NAME ITERATIONS VAL_EVERY: this machine's config from the packed one
  "$PY" - "$DATA/config.json" "$WORK" "$1" "$2" "$3" "$DRY" <<'EOF'
import json, sys
src, work, name, iterations, val_every, dry = sys.argv[1:]
c = json.load(open(src))
c.update(out_dir=work, name=name, iterations=int(iterations), val_every=int(val_every))
if dry == "1":  # the same steps on a CPU, small
    c.update(device="cpu", amp=False, num_workers=0, batch_size=2, n_val_synthetic=1)
    c["synth"]["output_shape"] = [64, 48, 48]
json.dump(c, open(f"{work}/{name}.json", "w"), indent=2)
EOF
}

train() {  # train NAME LIMIT_SECONDS
  timeout "$2" "$PY" -m lofihippseg.recipe.pairs --config "$WORK/$1.json" \
    > "$WORK/$1.out" 2>&1
}

if [[ $DRY == 1 ]]; then PROBE=2; fi
config probe "$PROBE" "$PROBE"
train probe 240
rate=$("$PY" -c "import csv,sys; r=list(csv.DictReader(open(sys.argv[1])))[-1]; \
print(float(r['iteration'])/float(r['seconds']))" "$WORK/probe/metrics.csv" 2>/dev/null)
if [[ -z "$rate" ]]; then
  echo "probe failed:" | tee -a "$SUMMARY"; tail -n 20 "$WORK/probe.out" | tee -a "$SUMMARY"
  exit 1
fi
left=$((MINUTES * 60 - (SECONDS - START)))
if (( left < 60 && DRY == 0 )); then
  echo "the probe left ${left} s of ${MINUTES} minutes: give more MINUTES" | tee -a "$SUMMARY"
  exit 1
fi
ITER=$("$PY" -c "print(max(4, int($rate * $left * 0.85) // 4 * 4))")
if [[ $DRY == 1 ]]; then ITER=4; fi
echo "probe: $(printf %.2f "$rate") it/s with start-up; campaign: $ITER iterations" \
  | tee -a "$SUMMARY"
config gpu_t2 "$ITER" $((ITER / 4))
train gpu_t2 $((left + 120))
echo "campaign: exit $?, $((SECONDS - START)) s in all" | tee -a "$SUMMARY"
RUN="$WORK/gpu_t2"
cp "$WORK/gpu_t2.json" "$OUT/config.json"
for f in metrics.csv train.log; do [[ -f "$RUN/$f" ]] && cp "$RUN/$f" "$OUT/"; done
if [[ -f "$RUN/checkpoints/last.pt" ]]; then
  "$PY" -m lofihippseg.recipe.pairs --export "$RUN" --checkpoint last.pt --family t2 \
    --export-to "$OUT/gpu_t2.pt" 2>&1 | tail -n 1 | tee -a "$SUMMARY"
else
  echo "no checkpoint written:" | tee -a "$SUMMARY"; tail -n 20 "$WORK/gpu_t2.out" | tee -a "$SUMMARY"
fi
tail -n 2 "$OUT/metrics.csv" 2>/dev/null | tee -a "$SUMMARY"
rm -rf "$WORK"
[[ -f "$OUT/gpu_t2.pt" ]]
