#!/usr/bin/env bash
# Installs missing packages and builds Polis into $POLIS_BUILD_DIR (default
# build/). Safe to run repeatedly: it only does what is out of date.
#   launch/build.sh [cmake --build targets...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${POLIS_BUILD_DIR:-$ROOT/build}
"$ROOT/launch/install-deps.sh" ${POLIS_DEPS_EXTRA:-}
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${POLIS_CMAKE_ARGS:-} >/dev/null
fi
JOBS=${POLIS_BUILD_JOBS:-$(nproc)}
if (($# > 0)); then
  targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$BUILD" -j "$JOBS" "${targets[@]}" >&2
else
  cmake --build "$BUILD" -j "$JOBS" >&2
fi
