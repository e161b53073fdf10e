#!/usr/bin/env bash
# Sanitizer builds of Polis and the tests they run.
#
#   benchmarks/sanitizers.sh [address|thread|all] [ctest -R regex]
#
# address: ASan + UBSan build (CPU only, RelWithDebInfo) in build-asan/; runs
#   the unit tests, then the integration tests that resume, refuse and
#   republish runs (a resume that read past a checkpoint once corrupted memory).
# thread:  TSan build in build-tsan/; runs the tests of the threaded parts
#   (the all-reduce communication thread, the batching server, the monitor).
# Each build takes 10-20 minutes on 2 cores the first time (ccache helps).
# Open MPI's own allocations are not ours: leaks are not reported
# (detect_leaks=0); every other finding fails the run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
which=${1:-all}
filter=${2:-}
echo "+ benchmarks/sanitizers.sh $which ${filter}"
"$ROOT/launch/install-deps.sh"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

build() {  # build DIR SANITIZER TARGETS...
  local dir=$1 san=$2
  shift 2
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOLIS_WITH_CUDA=OFF \
    -DPOLIS_BUILD_BENCHMARKS=OFF -DPOLIS_SANITIZE="$san" "${launcher[@]}" >/dev/null
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$dir" -j "$(nproc)" "${targets[@]}"
}

rc=0
if [[ $which == address || $which == all ]]; then
  dir=$ROOT/build-asan
  build "$dir" address polis_unit_tests polis_integration_tests polis-train polis-registry polisctl
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd "$dir" && ctest --output-on-failure -L unit -R "${filter:-.}" -E '^registry\.' --timeout 900) || rc=1
  (cd "$dir" && POLIS_BUILD_DIR=$dir POLIS_NO_BUILD=1 \
     ./tests/polis_integration_tests --gtest_filter='Hardening*:ResumeHardening*:PsIntegration.Stop*') || rc=1
fi
if [[ $which == thread || $which == all ]]; then
  dir=$ROOT/build-tsan
  build "$dir" thread polis_unit_tests polis_registry_tests
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  (cd "$dir" && ctest --output-on-failure -R "${filter:-Batching|Monitor|Buckets|registry\\.Batching|registry\\.Swap}" \
     --timeout 900) || rc=1
fi
exit $rc
