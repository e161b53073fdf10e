#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/, docs/design/fuzzing.md) with
# clang 14 and runs each for SECONDS_PER_HARNESS (default 60), then prints
# a table: harness, seconds, executions, exec/s, new corpus inputs, findings.
#
#   benchmarks/fuzz.sh [SECONDS_PER_HARNESS] [HARNESS...]
#   POLIS_FUZZ_JOBS=2 benchmarks/fuzz.sh 3600      # the long campaign, two at a time
#
# Harnesses: idx timeseries job_spec checkpoint artifact tensor_json http
# control (default: all). Each starts from a copy of tests/fuzz/corpus/<name>
# in build-fuzz/fuzz-corpus/<name> (new inputs accumulate there, never in the
# source tree); crashes, leaks and timeouts land in
# build-fuzz/fuzz-findings/<name>/. Add a finding to tests/fuzz/corpus/<name>/
# once it is fixed: the GCC build replays it (ctest -R fuzz.replay).
set -euo pipefail
echo "+ $0 $*"
cd "$(dirname "$0")/.."
SECONDS_PER_HARNESS=${1:-60}
shift || true
ALL=(idx timeseries job_spec checkpoint artifact tensor_json http control)
HARNESSES=("$@")
[ ${#HARNESSES[@]} -eq 0 ] && HARNESSES=("${ALL[@]}")
JOBS=${POLIS_FUZZ_JOBS:-1}
BUILD=${POLIS_FUZZ_BUILD:-build-fuzz}

# Inputs beyond these sizes only make the parsers copy more bytes.
declare -A MAX_LEN=([idx]=4096 [timeseries]=8192 [job_spec]=4096 [checkpoint]=4096
                    [artifact]=4096 [tensor_json]=4096 [http]=4096 [control]=1024)

# ccache when the machine has it (a fresh one does not).
LAUNCHER=
command -v ccache >/dev/null && LAUNCHER=ccache
if [ ! -f "$BUILD/CMakeCache.txt" ] || ! grep -q "^CMAKE_CXX_COMPILER_LAUNCHER.*=$LAUNCHER\$" "$BUILD/CMakeCache.txt"; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPOLIS_WITH_CUDA=OFF -DPOLIS_BUILD_BENCHMARKS=OFF -DPOLIS_BUILD_TESTS=OFF -DPOLIS_FUZZ=ON \
    -DCMAKE_CXX_COMPILER_LAUNCHER="$LAUNCHER" >/dev/null
fi
targets=()
for h in "${HARNESSES[@]}"; do
  [ -n "${MAX_LEN[$h]:-}" ] || { echo "unknown harness '$h' (known: ${ALL[*]})" >&2; exit 2; }
  targets+=("${h}_fuzzer")
done
cmake --build "$BUILD" -j 2 --target "${targets[@]}"

run_one() {
  local h=$1 corpus="$BUILD/fuzz-corpus/$1" findings="$BUILD/fuzz-findings/$1" dict=()
  mkdir -p "$corpus" "$findings"
  cp -n tests/fuzz/corpus/"$h"/* "$corpus"/ 2>/dev/null || true
  [ -f "tests/fuzz/$h.dict" ] && dict=(-dict="tests/fuzz/$h.dict")
  local before; before=$(ls "$corpus" | wc -l)
  local start=$SECONDS
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$BUILD/tests/fuzz/${h}_fuzzer" "$corpus" "${dict[@]}" -max_len="${MAX_LEN[$h]}" \
    -max_total_time="$SECONDS_PER_HARNESS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/" >"$BUILD/fuzz-findings/$h.log" 2>&1 || true
  local secs=$((SECONDS - start))
  local execs; execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$BUILD/fuzz-findings/$h.log" |
                       tail -1 | awk '{print $2}')
  local found; found=$(ls "$findings" | wc -l)
  echo "$h ${secs} ${execs:-0} $(( ${execs:-0} / (secs > 0 ? secs : 1) )) $(( $(ls "$corpus" | wc -l) - before )) ${found}" \
    >"$BUILD/fuzz-findings/$h.row"
}

mkdir -p "$BUILD/fuzz-findings"
running=0
for h in "${HARNESSES[@]}"; do
  echo "fuzzing $h for ${SECONDS_PER_HARNESS} s (log: $BUILD/fuzz-findings/$h.log)"
  run_one "$h" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

printf '\n%-12s %8s %14s %10s %10s %9s\n' harness seconds executions exec/s new_inputs findings
for h in "${HARNESSES[@]}"; do
  read -r name secs execs rate added found <"$BUILD/fuzz-findings/$h.row"
  printf '%-12s %8s %14s %10s %10s %9s\n' "$name" "$secs" "$execs" "$rate" "$added" "$found"
done
echo "findings (crash-*, leak-*, timeout-*, oom-*): $BUILD/fuzz-findings/<harness>/"
