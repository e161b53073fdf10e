#!/usr/bin/env bash
# The GPU device check (docs/design/gpu.md): builds Polis with CUDA, runs the
# GPU unit tests (each CUDA layer against the CPU backend, loss, optimizers,
# NCCL), trains the seed CNN and the bike-demand Transformer for a fixed
# number of steps on one GPU timing each step with CUDA events, runs a 1-rank
# NCCL all-reduce bandwidth sweep, and, when torch with CUDA is importable,
# the PyTorch peer with the same networks and batches. Prints a short table.
# Budget: under 5 minutes on an H200 host with 16 cores.
#
#   benchmarks/gpu/check.sh                 # fp32
#   PRECISION=tf32 STEPS=300 benchmarks/gpu/check.sh
#
# Environment: BUILD_DIR (default build-gpu), JOBS (default nproc), STEPS
# (200), WARMUP (20), PRECISION (fp32|tf32|bf16), NCCL_MAX_MIB (256).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc)}
steps=${STEPS:-200}
warmup=${WARMUP:-20}
precision=${PRECISION:-fp32}
nccl_mib=${NCCL_MAX_MIB:-256}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_oob_tcp_if_include=lo
start=$SECONDS
failed=0
echo "reproduce: BUILD_DIR=$build JOBS=$jobs STEPS=$steps WARMUP=$warmup PRECISION=$precision NCCL_MAX_MIB=$nccl_mib $root/benchmarks/gpu/check.sh"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== build (POLIS_WITH_CUDA=ON, sm_90 + PTX)"
mkdir -p "$build"
if ! cmake -S "$root" -B "$build" -DPOLIS_WITH_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
      -DPOLIS_BUILD_TESTS=ON -DPOLIS_BUILD_BENCHMARKS=ON >"$build/check-configure.log" 2>&1; then
  tail -30 "$build/check-configure.log"; echo "FAILED: configure"; exit 1
fi
if ! cmake --build "$build" -j"$jobs" --target polis_gpu_tests polis-gpu-bench \
      >"$build/check-build.log" 2>&1; then
  grep -E "error|Error" "$build/check-build.log" | head -40; echo "FAILED: build"; exit 1
fi
echo "built in $((SECONDS - start)) s"

echo "== GPU unit tests (bounds: fp32 1e-4, tf32 5e-3, bf16 3e-2 normwise relative)"
# One process for all tests (ctest -L gpu runs the same tests one process each).
test_start=$SECONDS
if ! "$build/tests/polis_gpu_tests" --gtest_brief=1 >"$build/check-tests.log" 2>&1; then
  failed=1
fi
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|error:" "$build/check-tests.log" | tail -40
tests_line=$(grep -E "^\[  PASSED  \]" "$build/check-tests.log" | tail -1)
echo "tests took $((SECONDS - test_start)) s"

echo "== training steps and NCCL sweep (polis-gpu-bench)"
if ! "$build/benchmarks/polis-gpu-bench" --source-dir "$root" --steps "$steps" --warmup "$warmup" \
      --precision "$precision" --nccl-max-mib "$nccl_mib" | tee "$build/check-bench.log"; then
  failed=1
fi

echo "== PyTorch peer"
if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  python3 "$here/torch_peer.py" --steps "$steps" --warmup "$warmup" --precision "$precision" \
    | tee "$build/check-torch.log" || failed=1
else
  echo "PyTorch peer: SKIPPED (torch with CUDA is not importable here)"
fi

echo
echo "== summary ($((SECONDS - start)) s)"
echo "tests: ${tests_line:-see $build/check-tests.log}"
grep -hE "^\| (seed CNN|bike Transformer) " "$build/check-bench.log" "$build/check-torch.log" 2>/dev/null
[ "$failed" = 0 ] && echo "device check: OK" || echo "device check: FAILED"
exit "$failed"
