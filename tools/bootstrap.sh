#!/usr/bin/env bash
# Creates or updates the project environment in .venv/ (idempotent, resumable).
#
# Steps, each skipped when its inputs have not changed since it last succeeded:
#   1 venv        a CPython 3.11 virtual environment at .venv/
#   2 packages    the pinned packages of tools/requirements.txt
#   3 cmake-fix   the ROS wheels' cmake exports point at the build machine's
#                 Python and numpy headers: rewrite them to this venv's
#   4 interfaces  build msg/ with rosidl and install it into the venv (`revqom.msg`)
#   5 editable    install revqom_nodes in editable mode (the `revqom` command)
#   6 testbed     as root: apt-get install what the network test bed needs and lacks
#                 (nftables, iproute2); otherwise its tests skip, saying why
# A failed step says which and why; rerunning starts again at that step.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMPS="$VENV/.revqom-stamps"
LOGS="$ROOT/build/setup-logs"
PY="$VENV/bin/python"
mkdir -p "$LOGS"

say() { printf '[setup] %s\n' "$*" >&2; }
fail() {
    say "FAILED at step '$1': $2"
    say "see $LOGS/$1.log; fix the cause and rerun: completed steps are skipped"
    exit 1
}
digest() { cat "$@" | sha256sum | cut -c1-16; }
done_before() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
mark_done() { mkdir -p "$STAMPS"; printf '%s' "$2" > "$STAMPS/$1"; }

# 1 venv ---------------------------------------------------------------------
if [[ ! -x "$PY" ]] || ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    BASE_PY="$(command -v python3.11 || command -v python3 || true)"
    [[ -n "$BASE_PY" ]] || fail venv "no python3 found on PATH"
    "$BASE_PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
        || fail venv "the ROS 2 wheels need CPython 3.11; found $("$BASE_PY" --version 2>&1)"
    say "1/6 venv: creating $VENV"
    rm -rf "$VENV"
    "$BASE_PY" -m venv "$VENV" > "$LOGS/venv.log" 2>&1 || fail venv "python -m venv failed"
fi

# 2 packages -----------------------------------------------------------------
key="$(digest "$ROOT"/tools/requirements*.txt)"
if ! done_before packages "$key"; then
    say "2/6 packages: installing tools/requirements.txt (first time: about 2-4 minutes)"
    "$PY" -m pip install --disable-pip-version-check -q -r "$ROOT/tools/requirements.txt" \
        > "$LOGS/packages.log" 2>&1 || fail packages "pip install failed (last lines: $(tail -n 3 "$LOGS/packages.log" | tr '\n' ' '))"
    rm -f "$STAMPS/cmake-fix" "$STAMPS/interfaces"
    mark_done packages "$key"
fi

# 3 cmake-fix ----------------------------------------------------------------
key="$(digest "$ROOT"/tools/requirements*.txt "$ROOT/tools/bootstrap.sh")"
if ! done_before cmake-fix "$key"; then
    say "3/6 cmake-fix: pointing the ROS wheels' cmake exports at this venv's headers"
    "$PY" - > "$LOGS/cmake-fix.log" 2>&1 <<'PYEOF' || fail cmake-fix "could not rewrite the cmake export files"
import glob, sys, sysconfig
import numpy
prefix = sys.prefix
replacements = {
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
}
changed = 0
for path in glob.glob(f"{prefix}/share/*/cmake/export_*__rosidl_generator_pyExport.cmake"):
    text = original = open(path).read()
    for old, new in replacements.items():
        text = text.replace(old, new)
    if text != original:
        open(path, "w").write(text)
        changed += 1
print(f"rewrote {changed} files")
PYEOF
    mark_done cmake-fix "$key"
fi

# 4 interfaces ---------------------------------------------------------------
key="$(digest "$ROOT"/msg/*.msg "$ROOT/CMakeLists.txt" "$ROOT/package.xml" "$ROOT"/tools/requirements*.txt)"
if ! done_before interfaces "$key" || ! "$PY" -c 'import revqom.msg' 2>/dev/null; then
    say "4/6 interfaces: building msg/ with rosidl into the venv (about 15-40 s)"
    if ! command -v cmake > /dev/null || ! command -v c++ > /dev/null; then
        [[ "$(id -u)" == 0 ]] && command -v apt-get > /dev/null \
            || fail interfaces "cmake and a C++ compiler are needed: apt-get install cmake g++"
        say "4/6 interfaces: installing cmake and g++ with apt-get"
        (apt-get update && apt-get install -y --no-install-recommends cmake g++ make) \
            > "$LOGS/interfaces-apt.log" 2>&1 || fail interfaces "apt-get install cmake g++ failed"
    fi
    BUILD="$ROOT/build/interfaces"
    (
        export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" \
            -DPython3_EXECUTABLE="$PY" -DREVQOM_INTERFACES_ONLY=ON \
            -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
        && cmake --build "$BUILD" -j "$(nproc)" && cmake --install "$BUILD"
    ) > "$LOGS/interfaces.log" 2>&1 || fail interfaces "cmake build of msg/ failed"
    "$PY" -c 'from revqom.msg import EncodedBEV' >> "$LOGS/interfaces.log" 2>&1 \
        || fail interfaces "built, but 'from revqom.msg import EncodedBEV' fails"
    mark_done interfaces "$key"
fi

# 5 editable -----------------------------------------------------------------
key="$(digest "$ROOT/pyproject.toml")"
if ! done_before editable "$key" || [[ ! -x "$VENV/bin/revqom" ]]; then
    say "5/6 editable: installing revqom_nodes (editable) and the revqom command"
    "$PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT" \
        > "$LOGS/editable.log" 2>&1 || fail editable "pip install -e . failed"
    mark_done editable "$key"
fi

# 6 testbed ------------------------------------------------------------------
missing=()
command -v nft > /dev/null || missing+=(nftables)
command -v ip > /dev/null || missing+=(iproute2)
if (( ${#missing[@]} )); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get > /dev/null; then
        say "6/6 testbed: installing ${missing[*]} with apt-get (the network test bed)"
        (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}") \
            > "$LOGS/testbed-apt.log" 2>&1 || fail testbed "apt-get install ${missing[*]} failed"
    else
        say "6/6 testbed: ${missing[*]} missing and not root with apt-get: the network test bed tests will skip"
    fi
fi

"$PY" -c 'import revqom.msg, revqom_nodes.cli' > "$LOGS/check.log" 2>&1 || {
    rm -f "$STAMPS/interfaces" "$STAMPS/editable"
    fail check "the environment is incomplete: 'import revqom.msg, revqom_nodes.cli' fails"
}
say "environment ready: $VENV"
