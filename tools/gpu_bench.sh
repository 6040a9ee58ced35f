#!/usr/bin/env bash
# One GPU session of about 2 minutes on an H200 (113-130 s; under 12 min if every step runs to its limit): the
# CUDA tests, `revqom bench nms`, then the runtime pipeline benchmark on CUDA: at today's scale on
# ray-cast sweeps (fusion for 1, 2, 4 and 8 agents) in both encodings, on a street frame of the
# synthetic validation set (seed 7) with and without the ego's detections merged in, on the
# 3 vehicles + 2 roadside units of the many-agent set (fusion for 1-5 agents), and at the paper's
# scale.
#
#   bash tools/gpu_bench.sh OUT_DIR
#   REPEATS=N (default 20) timed runs per stage; DEVICE=cuda
#   TIME_SCALE=K multiplies every step's time limit (for slower machines)
#   DEVICE=cpu DEVKIT=none PYTHON=.venv/bin/python REPEATS=2 TIME_SCALE=10: a dry run on a CPU
#
# Writes OUT_DIR/run.log, OUT_DIR/pytest_cuda.log, OUT_DIR/nms.json and one
# OUT_DIR/pipeline_NAME.json per benchmark (`revqom bench pipeline --json`; stderr in
# OUT_DIR/*.err). Every step has its own time limit and logs its exit status; a failed step does
# not stop the next. Python packages that the GPU machine lacks come from .devkit/
# (tools/gpu_env.sh; docs/RESULTS.md says how it was made). Nothing here imports rclpy.
set -u
OUT=${1:?usage: gpu_bench.sh OUT_DIR}
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
now() { echo $(( $(date +%s) - START )); }
log() { echo "[$(now) s] $*"; }
source tools/gpu_env.sh
DEVICE=${DEVICE:-cuda}
REPEATS=${REPEATS:-20}
TIME_SCALE=${TIME_SCALE:-1}
step() {  # NAME LIMIT_S STDOUT STDERR COMMAND...: run with a time limit (rc 124 when cut), log the rc
  local name=$1 limit=$(( $2 * TIME_SCALE )) out=$3 err=$4; shift 4
  log "$name: start (limit $limit s)"
  if [ "$out" = "$err" ]; then timeout -k 10 "$limit" "$@" > "$out" 2>&1
  else timeout -k 10 "$limit" "$@" > "$out" 2> "$err"; fi
  log "$name: rc=$?"
}
log "environment"
timeout $(( 60 * TIME_SCALE )) "$PY" -c "import torch, spconv.pytorch, constriction; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
log "environment rc=$?"
DATA=/tmp/revqom_bench_data
( revqom data synth --out "$DATA/val" --frames 1 --seed 7 --no-progress --overwrite
  revqom data synth --out "$DATA/3v2r" --frames 1 --seed 7 --vehicles 3 --rsus 2 --no-progress --overwrite
) > "$OUT/synth.log" 2>&1 &
SYNTH=$!

step "CUDA tests" 120 "$OUT/pytest_cuda.log" "$OUT/pytest_cuda.log" "$PY" -m pytest -q -m cuda \
  -p no:cacheprovider tests/runtime/test_cuda.py tests/perception/test_nms.py tests/evaluation/test_parity.py
tail -3 "$OUT/pytest_cuda.log"
step "bench nms" 60 "$OUT/nms.json" "$OUT/nms.err" "$PY" -m revqom_nodes.cli bench nms --device "$DEVICE" \
  --repeats "$REPEATS"
wait $SYNTH; log "data rc=$?"
bench() {  # NAME LIMIT_S ARGS...: `revqom bench pipeline --json` into OUT/pipeline_NAME.json
  local name=$1 limit=$2; shift 2
  step "bench $name" "$limit" "$OUT/pipeline_$name.json" "$OUT/pipeline_$name.err" "$PY" -m revqom_nodes.cli \
    bench pipeline --json --device "$DEVICE" --repeats "$REPEATS" "$@"
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1]))['results']; d = next(iter(r.values()))
print({k: d['fusion'][k]['p50_ms'] for k in d['fusion']}, 'end_to_end', d['end_to_end']['p50_ms'],
      'agents apart', d['end_to_end_agents_apart']['p50_ms'],
      'per extra agent', (d.get('agents') or {}).get('ms_per_extra_agent'))" \
    "$OUT/pipeline_$name.json" 2> /dev/null || tail -5 "$OUT/pipeline_$name.err"
}
bench today 60 --agents 1,2,4,8
bench today_packed 60 --agents 1,2,4,8 --encoding packed
bench val 40 --data "$DATA/val"
bench val_packed 40 --data "$DATA/val" --encoding packed
bench val_merge 40 --data "$DATA/val" --merge-ego-detections
bench 3v2r 60 --data "$DATA/3v2r" --agents 1,2,3,4,5
bench paper 100 --scale paper --agents 1,2,4,8
log "done"
