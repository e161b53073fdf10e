#!/usr/bin/env bash
# The GPU device check (docs/design/gpu.md): builds Polis with CUDA, runs the
# GPU unit tests (each CUDA layer against the CPU backend, loss, optimizers,
# NCCL), trains the seed CNN and the bike-demand Transformer for a fixed
# number of steps on one GPU timing each step with CUDA events, runs a 1-rank
# NCCL all-reduce bandwidth sweep, and, when torch with CUDA is importable,
# the PyTorch peer with the same networks and batches. Then it runs three
# real jobs with launch/polis-run on the GPU (the seed CNN by all-reduce and
# by a parameter server, one worker each, and the bike-demand Transformer),
# each of which must reach a test-set bar. Prints a short table.
# Sized for under 8 minutes on an H200 host with 16 cores, the build included.
#
#   benchmarks/gpu/check.sh                 # fp32
#   PRECISION=tf32 STEPS=300 benchmarks/gpu/check.sh
#   DEVICE=cpu benchmarks/gpu/check.sh      # only the jobs, on the CPU
#
# Environment: DEVICE (cuda|cpu; cpu skips the CUDA build, tests and bench
# and runs the jobs through polis-train), BUILD_DIR (default build-gpu;
# with DEVICE=cpu an existing build directory is used as configured), JOBS
# (default nproc), STEPS (200), WARMUP (20), PRECISION (fp32|tf32|bf16; the
# CPU runs fp32 only), NCCL_MAX_MIB (256), FASHION_EPOCHS (2),
# FASHION_LIMIT (0: all 60000 training images), FASHION_BAR (0.85, lowest
# test accuracy), BIKE_EPOCHS (3), BIKE_MAE_BAR (55, highest test MAE),
# BIKE_LIMIT (0: all training windows), BIKE_CSV (hour.csv, default the
# job's path).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
device=${DEVICE:-cuda}
# Paths given relative to where the script was started, made absolute
# before it moves to the source tree.
build=$(realpath -m -- "${BUILD_DIR:-$root/build-gpu}")
bike_csv=${BIKE_CSV:+$(realpath -m -- "$BIKE_CSV")}
# From the source tree, as the jobs expect: their relative paths (the
# bike-demand CSV's ../shared/data/...) are relative to it.
cd "$root" || exit 1
jobs=${JOBS:-$(nproc)}
steps=${STEPS:-200}
warmup=${WARMUP:-20}
precision=${PRECISION:-fp32}
nccl_mib=${NCCL_MAX_MIB:-256}
fashion_epochs=${FASHION_EPOCHS:-2}
fashion_limit=${FASHION_LIMIT:-0}
fashion_bar=${FASHION_BAR:-0.85}
bike_epochs=${BIKE_EPOCHS:-3}
bike_limit=${BIKE_LIMIT:-0}
bike_mae_bar=${BIKE_MAE_BAR:-55}
case "$device" in cuda|cpu) ;; *) echo "check.sh: DEVICE must be cuda or cpu; got '$device'"; exit 2 ;; esac
case "$precision" in fp32|tf32|bf16) ;; *) echo "check.sh: PRECISION must be fp32, tf32 or bf16; got '$precision'"; exit 2 ;; esac
for setting in "FASHION_EPOCHS=$fashion_epochs" "FASHION_LIMIT=$fashion_limit" "BIKE_EPOCHS=$bike_epochs" "BIKE_LIMIT=$bike_limit"; do
  [[ "${setting#*=}" =~ ^[0-9]{1,9}$ ]] || { echo "check.sh: ${setting%%=*} must be a whole number; got '${setting#*=}'"; exit 2; }
done
for setting in "FASHION_BAR=$fashion_bar" "BIKE_MAE_BAR=$bike_mae_bar"; do
  [[ "${setting#*=}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "check.sh: ${setting%%=*} must be a number; got '${setting#*=}'"; exit 2; }
done
if [ "$device" = cpu ] && [ "$precision" != fp32 ]; then
  echo "check.sh: PRECISION=$precision needs DEVICE=cuda (the CPU computes in fp32 only)"; exit 2
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_oob_tcp_if_include=lo
start=$SECONDS
failed=0
echo "reproduce: DEVICE=$device BUILD_DIR=$build JOBS=$jobs STEPS=$steps WARMUP=$warmup PRECISION=$precision" \
     "NCCL_MAX_MIB=$nccl_mib FASHION_EPOCHS=$fashion_epochs FASHION_LIMIT=$fashion_limit FASHION_BAR=$fashion_bar" \
     "BIKE_EPOCHS=$bike_epochs BIKE_LIMIT=$bike_limit BIKE_MAE_BAR=$bike_mae_bar${bike_csv:+ BIKE_CSV=$bike_csv} $root/benchmarks/gpu/check.sh"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# The programs the jobs need; with CUDA also the GPU tests, the bench and
# polis-train-cuda, all in one build.
targets=(polis-train polis-registry polisctl)
mkdir -p "$build"
if [ "$device" = cuda ]; then
  echo "== build (POLIS_WITH_CUDA=ON, sm_90 + PTX)"
  targets=(polis_gpu_tests polis-gpu-bench polis-train-cuda "${targets[@]}")
  configure=(cmake -S "$root" -B "$build" -DPOLIS_WITH_CUDA=ON -DCMAKE_BUILD_TYPE=Release
             -DPOLIS_BUILD_TESTS=ON -DPOLIS_BUILD_BENCHMARKS=ON)
else
  echo "== build (CPU programs only)"
  # An existing build directory keeps its configuration (reconfiguring it
  # with other options would rebuild it).
  configure=(cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release)
  [ -f "$build/CMakeCache.txt" ] && configure=()
fi
if [ ${#configure[@]} -gt 0 ] && ! "${configure[@]}" >"$build/check-configure.log" 2>&1; then
  tail -30 "$build/check-configure.log"; echo "FAILED: configure"; exit 1
fi
echo "cmake --build $build -j$jobs --target ${targets[*]}"
if ! cmake --build "$build" -j"$jobs" --target "${targets[@]}" >"$build/check-build.log" 2>&1; then
  grep -E "error|Error" "$build/check-build.log" | head -40; echo "FAILED: build"; exit 1
fi
echo "built in $((SECONDS - start)) s"

if [ "$device" = cuda ]; then
  echo "== GPU unit tests (bounds: fp32 1e-4, tf32 5e-3, bf16 3e-2 normwise relative)"
  # One process for all tests (ctest -L gpu runs the same tests one process each).
  test_start=$SECONDS
  echo "$build/tests/polis_gpu_tests --gtest_brief=1"
  if ! "$build/tests/polis_gpu_tests" --gtest_brief=1 >"$build/check-tests.log" 2>&1; then
    failed=1
  fi
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|error:" "$build/check-tests.log" | tail -40
  tests_line=$(grep -E "^\[  PASSED  \]" "$build/check-tests.log" | tail -1)
  echo "tests took $((SECONDS - test_start)) s"

  echo "== training steps and NCCL sweep (polis-gpu-bench)"
  echo "$build/benchmarks/polis-gpu-bench --source-dir $root --steps $steps --warmup $warmup --precision $precision --nccl-max-mib $nccl_mib"
  if ! "$build/benchmarks/polis-gpu-bench" --source-dir "$root" --steps "$steps" --warmup "$warmup" \
        --precision "$precision" --nccl-max-mib "$nccl_mib" | tee "$build/check-bench.log"; then
    failed=1
  fi

  echo "== PyTorch peer"
  if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "python3 $here/torch_peer.py --steps $steps --warmup $warmup --precision $precision"
    python3 "$here/torch_peer.py" --steps "$steps" --warmup "$warmup" --precision "$precision" \
      | tee "$build/check-torch.log" || failed=1
  else
    echo "PyTorch peer: SKIPPED (torch with CUDA is not importable here)"
  fi
fi

# Real jobs: launch/polis-run with the programs just built, one worker, on
# $device. Each job is copied into its run directory with
# training.device set; the published model, reloaded from the registry and
# evaluated again, must reach the bar.
kind=$(tr '[:lower:]' '[:upper:]' <<<"$device")
prec=$(tr '[:lower:]' '[:upper:]' <<<"$precision")
runs=$build/check-runs
rm -rf "$runs"
mkdir -p "$runs"
rows=()
# run_job NAME JOB EPOCHS METRIC CMP BAR [polis-train options]: METRIC is a
# result.json field (reloaded_test_accuracy, reloaded_test_mae), CMP ge or le.
run_job() {
  local name=$1 job=$2 epochs=$3 metric=$4 cmp=$5 bar=$6
  shift 6
  local run=$runs/$name
  mkdir -p "$run"
  sed "s/^training {/training {\n  device { kind: $kind precision: $prec }/" "$root/$job" >"$run/$name.pbtxt"
  local cmd=(env POLIS_NO_BUILD=1 POLIS_BUILD_DIR="$build" POLIS_JOBS_DIR="$runs/jobs-dir"
             POLIS_DEBUG=INFO POLIS_DEBUG_SUBSYS=WORKER
             "$root/launch/polis-run" --workers 1 --run-dir "$run/run" --registry "$runs/registry"
             "$run/$name.pbtxt" -- --epochs "$epochs" "$@")
  echo "== job $name ($job, $kind $prec, $epochs epoch(s)${*:+, $*})"
  echo "${cmd[*]}"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "${cmd[@]}" >"$run/polis-run.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  grep -E "^(epoch |polis: final|published|polis-run: )" "$run/polis-run.log"
  # What the worker computed on, in its own words ("computing on ...").
  local on
  on=$(grep -m1 -oE "computing on .*" "$run/polis-run.log" | sed -E 's/^computing on //')
  local result=$run/run/result.json value="" speed="" verdict=FAIL
  if [ "$rc" = 0 ] && [ -f "$result" ]; then
    value=$(jq -r ".$metric // empty" "$result")
    speed=$(jq -r '(.images_per_second // .windows_per_second // empty) | floor' "$result")
  fi
  if [ -z "$value" ]; then
    echo "FAILED: job $name (polis-run exit $rc, no $metric in $result); last lines of $run/polis-run.log:"
    tail -5 "$run/polis-run.log"
  elif awk -v v="$value" -v b="$bar" -v c="$cmp" 'BEGIN { exit !(c == "ge" ? v >= b : v <= b) }'; then
    verdict=PASS
  else
    echo "FAILED: job $name: $metric $value is not $([ "$cmp" = ge ] && echo ">=" || echo "<=") $bar"
  fi
  # The worker must have computed on the device and precision the job names
  # ("CPU (FP32)", "CUDA device 0 (NVIDIA H200) (TF32)").
  if [ "$verdict" = PASS ] && [[ "$on" != "$kind"* || "$on" != *"($prec)" ]]; then
    echo "FAILED: job $name: the worker did not report computing on $kind in $prec (its log: '${on:-no computing on line}')"
    verdict=FAIL
  fi
  [ "$verdict" = PASS ] || failed=1
  local shown=${value:+$(awk -v v="$value" 'BEGIN { printf "%.4g", v }')}
  rows+=("| $name | ${on:-$kind} | $prec | $epochs | ${speed:--} | ${wall} | ${metric#reloaded_} ${shown:--} | $([ "$cmp" = ge ] && echo ">=" || echo "<=") $bar | $verdict |")
}
limit=()
[ "$fashion_limit" != 0 ] && limit=(--train-limit "$fashion_limit")
run_job fashion_cnn_allreduce jobs/fashion_cnn_allreduce.pbtxt "$fashion_epochs" reloaded_test_accuracy ge "$fashion_bar" "${limit[@]}"
run_job fashion_cnn_ps jobs/fashion_cnn.pbtxt "$fashion_epochs" reloaded_test_accuracy ge "$fashion_bar" "${limit[@]}"
bike=()
[ "$bike_limit" != 0 ] && bike=(--train-limit "$bike_limit")
[ -n "$bike_csv" ] && bike+=(--csv "$bike_csv")
run_job bike_demand_transformer jobs/bike_demand_transformer.pbtxt "$bike_epochs" reloaded_test_mae le "$bike_mae_bar" "${bike[@]}"

echo
echo "== summary ($((SECONDS - start)) s)"
if [ "$device" = cuda ]; then
  echo "tests: ${tests_line:-see $build/check-tests.log}"
  grep -hE "^\| (seed CNN|bike Transformer) " "$build/check-bench.log" "$build/check-torch.log" 2>/dev/null
fi
echo "| job | device | precision | epochs | samples/s | wall s | metric | bar | result |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
[ "$failed" = 0 ] && echo "device check: OK" || echo "device check: FAILED"
exit "$failed"
