#!/usr/bin/env bash
# One GPU session, start to end in BUDGET_S seconds: CPU/CUDA parity of the bundled K=64 model,
# then the GPU-sized trainings (config/train/synthetic_gpu_*.yaml) with --max-iters chosen from
# the step time measured here, raw fusion and ego only side by side, then K=64 with and without
# slice dropout side by side (both start from the raw model just trained).
#
#   bash tools/gpu_train.sh OUT_DIR [BUDGET_S]
#
# Writes OUT_DIR/parity_k64.json, OUT_DIR/run.log and OUT_DIR/results.tar (model files,
# provenance files, training logs and the last checkpoints, so that a run cut short can be
# finished elsewhere with `revqom train --config ... --resume`). Python packages that the GPU
# machine lacks (spconv, cumm, constriction, shapely, ...) come from .devkit/site312.tar.xz
# when it is there (see docs/RESULTS.md for how it was made).
set -u
OUT=${1:?usage: gpu_train.sh OUT_DIR [BUDGET_S]}
BUDGET=${2:-540}
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
now() { echo $(( $(date +%s) - START )); }
log() { echo "[$(now) s] $*"; }
export PYTHONUNBUFFERED=1
DEVKIT=${DEVKIT:-.devkit/site312.tar.xz}  # DEVKIT=none: use the packages PYTHON already has
if [ -f "$DEVKIT" ]; then
  xz -dc "$DEVKIT" | tar -C /tmp -xf - && export PYTHONPATH=/tmp/site312
  for wheel in "$(dirname "$DEVKIT")"/*.whl; do [ -f "$wheel" ] && "${PYTHON:-python3}" -m zipfile -e "$wheel" /tmp/site312; done
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
PY=${PYTHON:-python3}
revqom() { "$PY" -m revqom_nodes.cli "$@"; }
DATA=${DATA:-/tmp/revqom_data}
RUNS=/tmp/revqom_runs
TRAIN_FRAMES=${TRAIN_FRAMES:-1000}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu DEVKIT=none MIN_ITERS=20 TRAIN_FRAMES=40: a dry run of this script on a CPU
MIN_ITERS=${MIN_ITERS:-200}
"$PY" -c "import torch, spconv.pytorch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

log "generating data"
revqom data synth --out "$DATA/synth_train" --frames "$TRAIN_FRAMES" --seed 1 --no-progress --overwrite > "$OUT/synth_train.log" 2>&1 &
SYNTH=$!
revqom data synth --out "$DATA/synth_parity" --frames 16 --seed 7 --no-progress --overwrite > "$OUT/synth_parity.log" 2>&1
log "parity"
revqom bench parity --model models/synthetic_k64.pt --data "$DATA/synth_parity" --frames 8 --threads 4 \
  > "$OUT/parity_k64.json" 2> "$OUT/parity.log" || { log "parity failed"; tail -20 "$OUT/parity.log"; }
wait $SYNTH || { log "data generation failed"; tail "$OUT/synth_train.log"; exit 1; }
log "data ready"

train() {  # CONFIG ITERS [extra args]: one training, log in $OUT/NAME.log
  local name; name=$(basename "$1" .yaml)
  revqom train --config "$1" --data "$DATA/synth_train" --max-iters "$2" --out "$RUNS/$name" \
    --no-progress --device "$DEVICE" "${@:3}" > "$OUT/$name.log" 2>&1
}
train config/train/synthetic_gpu_raw.yaml 60 --no-export
PROBE=$RUNS/synthetic_gpu_raw/train_log.jsonl
STEP_S=$("$PY" -c "import json,sys; r=[json.loads(l) for l in open('$PROBE')]; print((r[-1]['seconds']-r[1]['seconds'])/(r[-1]['step']-r[1]['step']))")
rm -rf "$RUNS/synthetic_gpu_raw"
LEFT=$(( BUDGET - $(now) - 40 ))
# Two runs share the GPU and the CPUs (about 1.7 times slower each); exports take about 60 s.
ITERS1=$("$PY" -c "print(max($MIN_ITERS, min(4000, int(($LEFT * 0.5 - 30) / (1.7 * $STEP_S)))))")
ITERS2=$("$PY" -c "print(max($MIN_ITERS, min(3000, int(($LEFT * 0.5 - 60) / (1.7 * $STEP_S)))))")
log "alone: $STEP_S s/step; phase 1: $ITERS1 steps, phase 2: $ITERS2 steps"

guard() { ( sleep "$1"; pkill -TERM -f "revqom_nodes.cli train" ) & GUARD=$!; }
train config/train/synthetic_gpu_raw.yaml "$ITERS1" & RAW=$!
train config/train/synthetic_gpu_ego.yaml "$ITERS1" & EGO=$!
guard $(( LEFT / 2 + 60 ))
wait $RAW; log "raw rc=$?"; wait $EGO; log "ego rc=$?"
kill $GUARD 2>/dev/null
if [ -f models/synthetic_gpu_raw.pt ]; then
  train config/train/synthetic_gpu_k64.yaml "$ITERS2" & K64=$!
  train config/train/synthetic_gpu_k64_drop.yaml "$ITERS2" & DROP=$!
  guard $(( BUDGET - $(now) - 20 ))
  wait $K64; log "k64 rc=$?"; wait $DROP; log "k64_drop rc=$?"
  kill $GUARD 2>/dev/null
fi
tar -cf "$OUT/results.tar" models/synthetic_gpu_* "$RUNS"/*/train_log.jsonl "$RUNS"/*/checkpoint_last.pt 2>/dev/null
log "done"
