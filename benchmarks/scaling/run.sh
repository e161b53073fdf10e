#!/usr/bin/env bash
# run.sh: regenerates every figure of docs/scaling.md. Simulates, with
# Polis' own all-reduce algorithms and parameter-server round
# (polis-scaling-sim, docs/design/simulation.md), one training step of each
# model on 2 .. 1024 worker hosts for each synchronisation mode and network,
# then draws the charts (polis-scaling-plot) and writes the tables.
#
# Usage: benchmarks/scaling/run.sh [--build DIR] [--out DIR] [--jobs J] [--quick | --full]
#                                   [--nets A,B] [--hosts N,M]
#   --build DIR  Polis build configured with -DPOLIS_SIMULATION=ON (default <repo>/build)
#   --out DIR    where results.tsv, tables.md and the PNGs go (default docs/scaling)
#   --jobs J     simulations at once (default 2: one per core)
#   (default)    what docs/scaling.md shows: 2, 8, 32, 64, 128, 256 and 1024
#                hosts (parameter servers: 32 of them up to 128 hosts); fat
#                tree at 10 and 100 Gbit/s
#   --full       2 .. 1024 hosts (every power of two), 10/25/100 Gbit/s fat
#                trees and the 10 Gbit/s oversubscribed racks: hours here
#   --quick      2 and 8 hosts, 10 Gbit/s: a smoke run
#   --nets A,B   only these platforms (names of platforms/*.xml without .xml)
#   --hosts N,M  only these host counts
#
# A step = the model's compute (measured or published: the MODELS table
# below) + the synchronisation, simulated; scaling efficiency = compute /
# step (weak scaling: every worker keeps its batch). Modes, one worker per
# host unless stated:
#   ring        flat ring all-reduce, fp32 wire
#   auto        Polis' automatic choice (rd / Rabenseifner / ring by size), fp32
#   auto-bf16   the same on a bf16 wire
#   hier-x4     4 workers per host, hierarchical all-reduce (fp32); compare
#   flat-x4     4 workers per host, automatic flat algorithm
#   ps-sS       BSP parameter servers: S extra CPU hosts (the platforms'
#               spare rack), 64 KiB pieces (4 MiB for the ResNet-50-sized
#               model: the MODELS table)
# A simulation that fails or runs past POLIS_SIM_TIMEOUT_S (default 900 s)
# is listed and left out of the tables; the exit code is then 1.
# Time: docs/scaling.md gives the run's own (about an hour on the
# 2-vCPU build VM for the default set).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
BUILD="${POLIS_BUILD_DIR:-$REPO_ROOT/build}"
OUT="$REPO_ROOT/docs/scaling"
JOBS=2
QUICK=0
NETS_GIVEN=""
HOSTS_GIVEN=""
ARGS_GIVEN=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="${2:?--build needs a directory}"; shift 2 ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --full) QUICK=2; shift ;;
    --nets) NETS_GIVEN="${2:?--nets needs a list}"; shift 2 ;;
    --hosts) HOSTS_GIVEN="${2:?--hosts needs a list}"; shift 2 ;;
    -h|--help) sed -n '2,37p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BUILD="$(cd "$BUILD" 2>/dev/null && pwd)" || { echo "error: build directory not found" >&2; exit 1; }
for b in polis-scaling polis-scaling-sim polis-scaling-plot; do
  [[ -x "$BUILD/benchmarks/scaling/$b" ]] || { echo "error: $BUILD/benchmarks/scaling/$b not found (configure with -DPOLIS_SIMULATION=ON)" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-scaling.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

# Models: name|parameters|layers (floats each, or a count of equal layers)|
# compute seconds per step|PS piece bytes|environment of its simulations|
# where the compute comes from.
# The ResNet-50-sized model's ring runs with 4 MiB segments instead of 128
# KiB (POLIS_ALLREDUCE_SEGMENT_KB) and its PS with 4 MiB pieces
# (sync.ps_piece_bytes) instead of 64 KiB: the simulator's cost grows with
# the number of messages in flight, and in its fluid network model a
# pipelined stream of segments takes the time of one message of their size.
MODELS=(
  "seed-cnn|93322|320,18496,36928,36928,650|0.00682|65536|-|measured: 4692 img/s at batch 32 on 1 thread (docs/benchmarks.md, training throughput)"
  "bike-transformer|4467|0,3826,0,608,33|0.0515|65536|-|measured: 1243 windows/s for 2 workers at batch 32 each, all-reduce, loaded 2-vCPU VM (docs/benchmarks.md, bike demand): an upper bound"
  "resnet50-size|25557032|161|0.2016|4194304|POLIS_ALLREDUCE_SEGMENT_KB=4096|published: ResNet-50 v1.5 on one V100, batch 256, mixed precision + XLA, 1270 img/s (NVIDIA DeepLearningExamples benchmark, quoted in its issue 837)"
)
NETS=(fattree-1024-10g fattree-1024-100g)
HOSTS=(2 8 32 64 128 256 1024)
HIER_MAX=256  # x4 modes: 4 ranks per host
# 32 servers: every worker's pieces reach all 32 at once, W x 32 flows that
# the simulator's network model re-solves at every change; 256 workers ran
# past 300 s. Beyond this, 4 servers only (unless --full).
PS_WIDE_MAX=128
if ((QUICK == 1)); then NETS=(fattree-1024-10g); HOSTS=(2 8); HIER_MAX=8; fi
if ((QUICK == 2)); then
  NETS=(fattree-1024-10g fattree-1024-25g fattree-1024-100g racks-1024-10g)
  HOSTS=(2 4 8 16 32 64 128 256 512 1024)
  HIER_MAX=256
  PS_WIDE_MAX=1024
fi
if [[ -n "$NETS_GIVEN" ]]; then
  IFS=',' read -r -a NETS <<<"$NETS_GIVEN"
  for net in "${NETS[@]}"; do
    [[ -f "$SCRIPT_DIR/platforms/$net.xml" ]] || { echo "error: --nets: no platform $SCRIPT_DIR/platforms/$net.xml" >&2; exit 1; }
  done
fi
if [[ -n "$HOSTS_GIVEN" ]]; then
  IFS=',' read -r -a HOSTS <<<"$HOSTS_GIVEN"
  for n in "${HOSTS[@]}"; do
    [[ "$n" =~ ^[1-9][0-9]*$ && $n -le 1024 ]] || { echo "error: --hosts: '$n' is not a host count from 1 to 1024" >&2; exit 1; }
  done
fi

CAL="$(mpirun --oversubscribe -np 1 --mca btl self "$BUILD/benchmarks/scaling/polis-scaling" calibrate | grep '^result')"
REDUCE_NS="$(sed -n 's/.*reduce_ns=\([^ ]*\).*/\1/p' <<<"$CAL")"
APPLY_NS="$(sed -n 's/.*apply_ns=\([^ ]*\).*/\1/p' <<<"$CAL")"
echo "calibrate: $CAL" >&2

# One line per simulation: net model mode hosts | sim.sh arguments.
: > "$WORK/jobs.txt"
for m in "${MODELS[@]}"; do
  IFS='|' read -r model params layers compute piece env _ <<<"$m"
  common="--count=$params --compute-s=$compute --iters=1 --warmup=1"
  for net in "${NETS[@]}"; do
    P="$SCRIPT_DIR/platforms/$net.xml"
    for n in "${HOSTS[@]}"; do
      ar="$common --reduce-ns=$REDUCE_NS"
      echo "$net $model ring $n|$env|$P $n allreduce --algo=ring $ar" >> "$WORK/jobs.txt"
      echo "$net $model auto $n|$env|$P $n allreduce --algo=auto $ar" >> "$WORK/jobs.txt"
      echo "$net $model auto-bf16 $n|$env|$P $n allreduce --algo=auto --wire=bf16 $ar" >> "$WORK/jobs.txt"
      if ((n <= HIER_MAX)); then
        echo "$net $model hier-x4 $n|$env|--ranks-per-host 4 $P $((4 * n)) allreduce --algo=hier --ranks-per-host=4 $ar" >> "$WORK/jobs.txt"
        echo "$net $model flat-x4 $n|$env|--ranks-per-host 4 $P $((4 * n)) allreduce --algo=auto $ar" >> "$WORK/jobs.txt"
      fi
      for s in 4 32; do
        ((s <= n)) || continue
        ((s <= 4 || n <= PS_WIDE_MAX)) || continue
        echo "$net $model ps-s$s $n|$env|--ps-hosts 1024 $P $((n + s)) ps --servers=$s --layers=$layers --piece-bytes=$piece $common --apply-ns=$APPLY_NS" >> "$WORK/jobs.txt"
      done
    done
  done
done
TOTAL=$(wc -l < "$WORK/jobs.txt")
echo "run.sh: $TOTAL simulations, $JOBS at a time" >&2

START=$(date +%s)
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
export SCRIPT_DIR BUILD WORK
# Each job: key|args -> one result line "net model mode hosts median_s wall_s".
run_one() {
  local key="${1%%|*}" rest="${1#*|}" env args t0 out
  env="${rest%%|*}" args="${rest#*|}"
  [[ "$env" == - ]] && env=""
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  out="$(env $env timeout "${POLIS_SIM_TIMEOUT_S:-900}" "$SCRIPT_DIR/sim.sh" --build "$BUILD" $args 2>"$WORK/err.$$.$RANDOM" | sed -n 's/^result.* median_s=\([^ ]*\).*/\1/p')" || true
  if [[ -z "$out" ]]; then echo "error: simulation failed: $key ($args)" >&2; echo "$key FAILED"; return 0; fi
  printf '%s %s %.1f\n' "$key" "$out" "$(echo "$(date +%s.%N) - $t0" | bc)"
}
export -f run_one
tr '\n' '\0' < "$WORK/jobs.txt" | xargs -0 -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {} > "$WORK/results.txt"
ELAPSED=$(( $(date +%s) - START ))
FAILED=0
if grep -q FAILED "$WORK/results.txt"; then
  grep FAILED "$WORK/results.txt" >&2
  FAILED=1
fi

CMDLINE="benchmarks/scaling/run.sh"
[[ ${#ARGS_GIVEN[@]} -gt 0 ]] && CMDLINE+=" ${ARGS_GIVEN[*]}"
printf '%s\n' "${MODELS[@]}" > "$WORK/models.txt"
python3 "$SCRIPT_DIR/report.py" "$WORK/results.txt" "$WORK/models.txt" "$OUT" "$BUILD/benchmarks/scaling/polis-scaling-plot" \
  "$CMDLINE" "$ELAPSED" "$LOAD_START" "$CAL" "$TOTAL"
echo "run.sh: $TOTAL simulations in $ELAPSED s; results in $OUT" >&2
exit $FAILED
