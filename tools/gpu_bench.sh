#!/usr/bin/env bash
# One GPU session of about 1.5 minutes on an H200 (under 6 if every step runs to its limit): the CUDA
# tests, then the runtime pipeline benchmark on CUDA at today's scale and at the paper's, each
# with the fusion stages for 1, 2, 4 and 8 agents.
#
#   bash tools/gpu_bench.sh OUT_DIR
#   REPEATS=N (default 20) timed runs per stage; AGENTS=1,2,4,8; DEVICE=cuda
#   TIME_SCALE=K multiplies every step's time limit (for slower machines)
#   DEVICE=cpu DEVKIT=none PYTHON=.venv/bin/python REPEATS=2 TIME_SCALE=10: a dry run on a CPU
#
# Writes OUT_DIR/run.log, OUT_DIR/pytest_cuda.log, OUT_DIR/pipeline_today.json and
# OUT_DIR/pipeline_paper.json (`revqom bench pipeline --json`; stderr in OUT_DIR/*.err). Every
# step has its own time limit and logs its exit status; a failed step does not stop the next.
# Python packages that the GPU machine lacks come from .devkit/ (tools/gpu_env.sh;
# docs/RESULTS.md says how it was made). Nothing here imports rclpy.
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
AGENTS=${AGENTS:-1,2,4,8}
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

step "CUDA tests" 120 "$OUT/pytest_cuda.log" "$OUT/pytest_cuda.log" "$PY" -m pytest -q -m cuda \
  -p no:cacheprovider tests/runtime/test_cuda.py tests/perception/test_nms.py tests/evaluation/test_parity.py
tail -3 "$OUT/pytest_cuda.log"
bench() {  # NAME LIMIT_S ARGS...: `revqom bench pipeline --json` into OUT/pipeline_NAME.json
  local name=$1 limit=$2; shift 2
  step "bench $name" "$limit" "$OUT/pipeline_$name.json" "$OUT/pipeline_$name.err" "$PY" -m revqom_nodes.cli \
    bench pipeline --json --device "$DEVICE" --repeats "$REPEATS" --agents "$AGENTS" "$@"
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1]))['results']; d = next(iter(r.values()))
print({k: d['fusion'][k]['p50_ms'] for k in d['fusion']}, 'end_to_end', d['end_to_end']['p50_ms'])" \
    "$OUT/pipeline_$name.json" 2> /dev/null || tail -5 "$OUT/pipeline_$name.err"
}
bench today 60
bench paper 100 --scale paper
log "done"
