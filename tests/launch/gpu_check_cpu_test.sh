#!/usr/bin/env bash
# The job part of the device check (benchmarks/gpu/check.sh) in its CPU mode:
# DEVICE=cpu runs the three real jobs through launch/polis-run with
# training.device inserted into copies of the jobs, reads each published
# model's reloaded metric from result.json, prints one table and exits 0 only
# when every job reaches its bar. Small epochs and limits; the bars are set
# here to be reachable, then unreachable, so both verdicts are exercised.
set -uo pipefail
root=${1:?usage: gpu_check_cpu_test.sh SOURCE_DIR BUILD_DIR}
build=${2:?usage: gpu_check_cpu_test.sh SOURCE_DIR BUILD_DIR}
check=$root/benchmarks/gpu/check.sh
small=(DEVICE=cpu BUILD_DIR="$build" JOBS=1 FASHION_EPOCHS=1 FASHION_LIMIT=2000 BIKE_EPOCHS=1 BIKE_LIMIT=1000)
status=0
fail() { echo "FAILED: $*"; status=1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Bad settings: one line naming the variable, exit 2, nothing run.
expect_refused() {  # words... -- env assignments
  local words=() rc=0
  while [ "$1" != -- ]; do words+=("$1"); shift; done
  shift
  env "$@" "$check" >"$log" 2>&1 || rc=$?
  [ "$rc" = 2 ] || fail "$* exited $rc, not 2"
  [ "$(wc -l <"$log")" = 1 ] || fail "$* printed $(wc -l <"$log") lines, not one: $(cat "$log")"
  for w in "${words[@]}"; do grep -qF -- "$w" "$log" || fail "$*: '$w' not in: $(cat "$log")"; done
}
expect_refused DEVICE gpu -- DEVICE=gpu
expect_refused PRECISION=bf16 DEVICE=cuda -- DEVICE=cpu PRECISION=bf16
expect_refused FASHION_EPOCHS two -- DEVICE=cpu FASHION_EPOCHS=two
expect_refused BIKE_MAE_BAR -- DEVICE=cpu BIKE_MAE_BAR=low

# Reachable bars: every job PASS, exit 0.
rc=0
env "${small[@]}" FASHION_BAR=0.3 BIKE_MAE_BAR=500 "$check" >"$log" 2>&1 || rc=$?
cat "$log"
[ "$rc" = 0 ] || fail "reachable bars: exit $rc, not 0"
grep -q "^device check: OK$" "$log" || fail "reachable bars: no 'device check: OK'"
for job in fashion_cnn_allreduce fashion_cnn_ps bike_demand_transformer; do
  grep -qE "^\| $job \| CPU \(FP32\) \| FP32 \| 1 \| [0-9]+ \| [0-9.]+ \| test_(accuracy|mae) [0-9.]+ \| (>=|<=) [0-9.]+ \| PASS \|$" "$log" ||
    fail "reachable bars: no PASS row for $job"
  copy=$build/check-runs/$job/$job.pbtxt
  grep -q "^  device { kind: CPU precision: FP32 }" "$copy" || fail "$copy has no device line in its training block"
  grep -q "^training {$" "$copy" || fail "$copy: the training block is not where the device line was inserted"
  [ -f "$build/check-runs/$job/run/result.json" ] || fail "$job wrote no result.json"
done

# Unreachable bars: every row printed, the Fashion rows FAIL, exit 1.
rc=0
env "${small[@]}" FASHION_BAR=0.999 BIKE_MAE_BAR=500 "$check" >"$log" 2>&1 || rc=$?
cat "$log"
[ "$rc" = 1 ] || fail "unreachable bar: exit $rc, not 1"
grep -q "^device check: FAILED$" "$log" || fail "unreachable bar: no 'device check: FAILED'"
grep -qE "^FAILED: job fashion_cnn_ps: reloaded_test_accuracy [0-9.]+ is not >= 0.999$" "$log" ||
  fail "unreachable bar: the failed bar is not named"
[ "$(grep -cE '^\| fashion_cnn_(allreduce|ps) .* \| >= 0.999 \| FAIL \|$' "$log")" = 2 ] || fail "unreachable bar: not two FAIL rows"
grep -qE '^\| bike_demand_transformer .* \| PASS \|$' "$log" || fail "unreachable bar: the Transformer row is missing"
exit "$status"
