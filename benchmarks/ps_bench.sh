#!/usr/bin/env bash
# Parameter-server push+pull bandwidth (polis-bench-ps): the real PsClient
# and the real server event loop (BSP, SGD) for 1, 4, 16 and 64 MiB models,
# with 1 and 2 servers and 2 and 4 workers, next to MPI_Allreduce of the same
# size over the workers and single-core memcpy (the limit), interleaved round
# by round inside each job; every round's pulled values are verified.
#
# Reported per size (medians over rounds of the slowest worker's time):
#   round trip   one push + pull of the whole model by every worker (ms)
#   push+pull GB/s   per worker: 2 × size / round trip (bytes it sent + received)
#   all workers GB/s W × 2 × size / round trip (bytes the servers moved)
#   allreduce    MPI_Allreduce busbw (2(W-1)/W × size / time), GB/s
#   memcpy       size / time on one core, GB/s
#   ratios       push+pull GB/s ÷ memcpy GB/s, per worker and all workers
#
# Usage: benchmarks/ps_bench.sh [--build DIR] [--configs "S:W ..."] [--sizes-mib LIST]
#                               [--iters N] [--piece-bytes B] [--quick]
#   --build DIR      build directory holding benchmarks/polis-bench-ps (default <repo>/build)
#   --configs LIST   servers:workers pairs (default "1:2 1:4 2:2 2:4")
#   --sizes-mib LIST comma-separated (default 1,4,16,64)
#   --iters N        timed rounds per size (default 10; 2 warm-up rounds)
#   --quick          1 and 4 MiB, 4 rounds
# Extra environment (e.g. OMPI_MCA_btl_vader_single_copy_mechanism=none,
# POLIS_IDLE_MAX_US) is passed to every rank.
# Progress goes to stderr; the report (markdown) to stdout.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
BUILD="$REPO_ROOT/build"
CONFIGS="1:2 1:4 2:2 2:4"
SIZES=1,4,16,64
ITERS=10
PIECE=65536
ARGS_GIVEN=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="${2:?--build needs a directory}"; shift 2 ;;
    --configs) CONFIGS="${2:?--configs needs a list}"; shift 2 ;;
    --sizes-mib) SIZES="${2:?--sizes-mib needs a list}"; shift 2 ;;
    --iters) ITERS="${2:?--iters needs a number}"; shift 2 ;;
    --piece-bytes) PIECE="${2:?--piece-bytes needs a number}"; shift 2 ;;
    --quick) SIZES=1,4; ITERS=4; shift ;;
    -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BENCH="$(cd "$BUILD" 2>/dev/null && pwd)/benchmarks/polis-bench-ps" || true
[[ -x "$BENCH" ]] || { echo "error: $BUILD/benchmarks/polis-bench-ps not found (build the polis-bench-ps target)" >&2; exit 1; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_oob_tcp_if_include=lo
export OMP_NUM_THREADS=1
# As launch/polis-run: shared memory only, no binding, idle MPI waits yield.
MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl self,vader --mca mpi_yield_when_idle 1)
for v in $(env | grep -o '^\(OMPI_MCA_[A-Za-z0-9_]*\|POLIS_[A-Z0-9_]*\)=' | tr -d =); do MPIRUN+=(-x "$v"); done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-ps-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
for c in $CONFIGS; do
  s=${c%%:*} w=${c##*:}
  np=$((1 + s + w))
  echo "$s server(s), $w workers: $np processes on $(getconf _NPROCESSORS_ONLN) CPUs" >&2
  "${MPIRUN[@]}" -np "$np" "$BENCH" --servers "$s" --sizes-mib "$SIZES" --iters "$ITERS" --piece-bytes "$PIECE" \
    >> "$WORK/results.tsv" || { echo "error: polis-bench-ps failed ($c)" >&2; exit 1; }
done
ELAPSED=$(( $(date +%s) - START ))
CMDLINE="benchmarks/ps_bench.sh"
[[ ${#ARGS_GIVEN[@]} -gt 0 ]] && CMDLINE+=" ${ARGS_GIVEN[*]}"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
python3 - "$WORK/results.tsv" "$CMDLINE" "$CPU" "$(getconf _NPROCESSORS_ONLN)" "$ELAPSED" "$(mpirun --version | head -1)" <<'PYEOF'
import collections, datetime, os, statistics, sys
path, cmd, cpu, ncpu, elapsed, mpi = sys.argv[1:7]
t = collections.defaultdict(list)
for line in open(path):
    p = line.rstrip("\n").split("\t")
    if len(p) == 5 and p[4]:
        t[(p[0], int(p[1]), int(p[2]), int(p[3]))] += [float(x) for x in p[4].split(",")]
print(f"Command: `{cmd}`  ")
print(f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}  ")
print(f"CPU: {cpu} ({ncpu} CPUs); load average at the end: {os.getloadavg()[0]:.2f}; {mpi}; {elapsed} s")
print()
print("| servers | workers | processes | size | round trip ms | push+pull GB/s per worker | all workers GB/s | MPI_Allreduce busbw GB/s | memcpy GB/s | per worker ÷ memcpy | all workers ÷ memcpy |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
goal = []
for (kind, s, w, size) in sorted(k for k in t if k[0] == "ps"):
    rt = statistics.median(t[("ps", s, w, size)])
    ar = statistics.median(t[("allreduce", s, w, size)])
    mc = size / statistics.median(t[("memcpy", s, w, size)]) / 1e9
    per = 2 * size / rt / 1e9
    agg = w * per
    arbw = size / ar / 1e9 * (2 * (w - 1) / w)
    if size == 16 << 20:
        goal.append((s, w, per / mc, agg / mc))
    print(f"| {s} | {w} | {1 + s + w} | {size >> 20} MiB | {rt * 1e3:.2f} | {per:.2f} | {agg:.2f} | {arbw:.2f} | {mc:.2f} | {per / mc:.2f}× | {agg / mc:.2f}× |")
print()
for s, w, a, b in goal:
    print(f"16 MiB, {s} server(s), {w} workers: {a:.2f}× memcpy per worker, {b:.2f}× all workers (goal ≥ 0.5×)  ")
PYEOF
