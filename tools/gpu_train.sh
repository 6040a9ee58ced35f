#!/usr/bin/env bash
# One GPU session, start to end in BUDGET_S seconds: the CUDA tests and the CPU/CUDA parity of
# the bundled K=64 model, then trainings in two phases; the runs of a phase share the GPU side by
# side, and phase 2 starts from phase 1's models (init_from in their configs).
#
#   bash tools/gpu_train.sh OUT_DIR [BUDGET_S]
#   PHASE1="NAME[:STEPS] ..." PHASE2="..."   configs in config/train/ (NAME may be experiments/NAME;
#                                            default: raw + ego, then K=64 with and without slice dropout)
#   Without :STEPS, --max-iters comes from the step time measured here (probe of 60 steps).
#   PHASE1=" " runs no first phase; SYNTH_ARGS="--vehicles 3 --rsus 2": training frames with more agents
#
# Writes OUT_DIR/parity_k64.json, OUT_DIR/pytest_cuda.log, OUT_DIR/run.log and
# OUT_DIR/results.tar (model files, provenance files, training logs and the last checkpoints,
# so that a run cut short can be finished elsewhere with `revqom train --config ... --resume`).
# Python packages that the GPU machine lacks come from .devkit/ (tools/gpu_env.sh;
# docs/RESULTS.md says how it was made).
set -u
OUT=${1:?usage: gpu_train.sh OUT_DIR [BUDGET_S]}
BUDGET=${2:-540}
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
now() { echo $(( $(date +%s) - START )); }
log() { echo "[$(now) s] $*"; }
source tools/gpu_env.sh
DATA=${DATA:-/tmp/revqom_data}
RUNS=/tmp/revqom_runs
TRAIN_FRAMES=${TRAIN_FRAMES:-1000}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu DEVKIT=none MIN_ITERS=20 TRAIN_FRAMES=40: a dry run of this script on a CPU
MIN_ITERS=${MIN_ITERS:-200}
"$PY" -c "import torch, spconv.pytorch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

log "generating data"
revqom data synth --out "$DATA/synth_train" --frames "$TRAIN_FRAMES" --seed 1 ${SYNTH_ARGS:-} --no-progress \
  --overwrite > "$OUT/synth_train.log" 2>&1 &
SYNTH=$!
revqom data synth --out "$DATA/synth_parity" --frames 16 --seed 7 --no-progress --overwrite > "$OUT/synth_parity.log" 2>&1
log "CUDA tests and parity"
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests/runtime/test_cuda.py tests/evaluation/test_parity.py \
  > "$OUT/pytest_cuda.log" 2>&1; log "CUDA tests rc=$?"
revqom bench parity --model models/synthetic_k64.pt --data "$DATA/synth_parity" --frames 8 --threads 4 \
  > "$OUT/parity_k64.json" 2> "$OUT/parity.log" || { log "parity failed"; tail -20 "$OUT/parity.log"; }
wait $SYNTH || { log "data generation failed"; tail "$OUT/synth_train.log"; exit 1; }
log "data ready"

train() {  # CONFIG ITERS: one training, log in $OUT/NAME.log
  local name; name=$(basename "$1" .yaml)
  revqom train --config "$1" --data "$DATA/synth_train" --max-iters "$2" --out "$RUNS/$name" \
    --no-progress --device "$DEVICE" "${@:3}" > "$OUT/$name.log" 2>&1
}
PHASE1=${PHASE1:-"synthetic_gpu_raw_ctx synthetic_gpu_ego_ctx"}
PHASE2=${PHASE2:-"synthetic_gpu_k64_ctx experiments/synthetic_gpu_k64_ctx_drop"}
NEED_PROBE=0
for run in $PHASE1 $PHASE2; do [ "$run" = "${run#*:}" ] && NEED_PROBE=1; done
if [ "$NEED_PROBE" = 1 ]; then  # some run has no :STEPS: measure the step time
    train config/train/synthetic_gpu_raw_ctx.yaml 60 --no-export
    STEP_S=$("$PY" -c "import json; r=[json.loads(l) for l in open('$RUNS/synthetic_gpu_raw_ctx/train_log.jsonl')]; print((r[-1]['seconds']-r[1]['seconds'])/(r[-1]['step']-r[1]['step']))")
    rm -rf "$RUNS/synthetic_gpu_raw_ctx"
    LEFT=$(( BUDGET - $(now) - 40 ))
    # Two runs share the GPU and the CPUs (about 1.7 times slower each); exports take about 60 s.
    ITERS1=$("$PY" -c "print(max($MIN_ITERS, min(4000, int(($LEFT * 0.5 - 30) / (1.7 * $STEP_S)))))")
    ITERS2=$("$PY" -c "print(max($MIN_ITERS, min(3000, int(($LEFT * 0.5 - 60) / (1.7 * $STEP_S)))))")
    log "alone: $STEP_S s/step; phase 1: $ITERS1 steps, phase 2: $ITERS2 steps"
fi

guard() { ( sleep "$1"; pkill -TERM -f "revqom_nodes.cli train" ) & GUARD=$!; }
phase() {  # DEFAULT_STEPS DEADLINE_S RUN...: the runs side by side, stopped at the deadline
  local steps=$1 deadline=$2 pids=() run; shift 2
  for run in "$@"; do
    train "config/train/${run%%:*}.yaml" "$([ "$run" != "${run#*:}" ] && echo "${run#*:}" || echo "$steps")" &
    pids+=($!)
  done
  guard "$deadline"
  for i in "${!pids[@]}"; do wait "${pids[$i]}"; log "${*:$((i + 1)):1} rc=$?"; done
  kill $GUARD 2>/dev/null
}
phase "${ITERS1:-0}" $(( (BUDGET - $(now)) / 2 + 60 )) $PHASE1
phase "${ITERS2:-0}" $(( BUDGET - $(now) - 20 )) $PHASE2
tar -cf "$OUT/results.tar" models/synthetic_gpu_* "$RUNS"/*/train_log.jsonl "$RUNS"/*/checkpoint_last.pt 2>/dev/null
log "done"
