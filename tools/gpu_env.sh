# Sourced by the GPU-machine scripts (tools/gpu_train.sh): packages the GPU machine lacks
# (spconv, cumm, constriction, shapely, ...) from DEVKIT, a tar.xz of a site-packages folder,
# plus any wheels beside it; PYTHONPATH; and a `revqom` function for the checkout's CLI.
#   DEVKIT=none: use the packages PYTHON already has (a dry run on a development machine).
DEVKIT=${DEVKIT:-.devkit/site312.tar.xz}
if [ -f "$DEVKIT" ]; then
  xz -dc "$DEVKIT" | tar -C /tmp -xf - && export PYTHONPATH=/tmp/site312
  for wheel in "$(dirname "$DEVKIT")"/*.whl; do
    [ -f "$wheel" ] && "${PYTHON:-python3}" -m zipfile -e "$wheel" /tmp/site312
  done
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
revqom() { "$PY" -m revqom_nodes.cli "$@"; }
