#!/usr/bin/env bash
# Sanitizer builds of Polis and the tests they run.
#
#   benchmarks/sanitizers.sh [address|thread|all] [ctest -R regex]
#
# address: ASan + UBSan build (CPU only, RelWithDebInfo) in build-asan/; runs
#   the unit tests, then the integration tests that resume, refuse and
#   republish runs (a resume that read past a checkpoint once corrupted memory).
# thread:  TSan build in build-tsan/; runs the tests of the threaded parts
#   (bucket planning, the batching server, model swaps under load), then two
#   real jobs under the TSan polis-train (all-reduce with its communication
#   thread; 2 parameter servers) while polisctl queries the monitor.
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
  build "$dir" thread polis_unit_tests polis_registry_tests polis-train polisctl
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  (cd "$dir" && ctest --output-on-failure -R "${filter:-Batching|Monitor|Buckets|registry\\.Batching|registry\\.Swap}" \
     --timeout 900) || rc=1
  # Real jobs under the TSan polis-train: the all-reduce communication
  # thread, the parameter-server client and servers, and the coordinator's
  # monitor answering polisctl while it trains. Any report fails the run.
  if [[ -z $filter ]]; then
    work=$(mktemp -d /tmp/polis-tsan-XXXXXX)
    ln -s "${POLIS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}" "$work/fashion-mnist"
    export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:log_path=$work/tsan"
    for job in "fashion_cnn_allreduce --workers 2" "fashion_cnn --workers 2 --servers 2"; do
      set -- $job
      name=$1; shift
      (cd "$work" && POLIS_BUILD_DIR=$dir POLIS_NO_BUILD=1 "$ROOT/launch/polis-run" "$@" --epochs 2 \
         --registry "$work/registry" --run-dir "$work/$name" "$ROOT/jobs/$name.pbtxt" \
         -- --train-limit 4000 --test-limit 500 >"$work/$name.log" 2>&1 &
       pid=$!
       while kill -0 $pid 2>/dev/null; do
         "$dir/launch/polisctl" status --run-dir "$work/$name" --json >/dev/null 2>&1 || true
         sleep 0.5
       done
       wait $pid) || { echo "sanitizers.sh: job $name failed: $work/$name.log" >&2; rc=1; }
    done
    if compgen -G "$work/tsan.*" >/dev/null; then
      echo "sanitizers.sh: ThreadSanitizer reports in the jobs: $work/tsan.*" >&2
      rc=1
    else
      echo "sanitizers.sh: two jobs (all-reduce; 2 servers) under TSan: no report"
    fi
  fi
fi
exit $rc
