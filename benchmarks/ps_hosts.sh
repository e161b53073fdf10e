#!/usr/bin/env bash
# Parameter-server rounds across hosts: do a worker's pushes (and pulls) to
# servers on different hosts go out at once? polis-bench-ps (the real
# PsClient and server, BSP, every round verified) on the emulated cluster
# (launch/cluster/emucluster), one rank a host: the driver on h1, the
# servers on h2 (and h3), two workers on the last two hosts; links capped
# (default 100 Mbit/s).
#
# A BSP round is a push phase then a pull phase. With S servers on S hosts
# and W workers on W other hosts, each phase moves W × size through the
# servers' links (S of them) and size through each worker's link, so no round
# is shorter than
#     t_bound = 2 × max(W / S, 1) × size / link rate
# With 1 server and 2 workers that is 4 × size / rate; with 2 servers,
# 2 × size / rate — if, and only if, each worker's messages to the two
# servers travel at the same time. Sent one server after the other, the
# 2-server round would take as long as the 1-server one.
#
# Usage: benchmarks/ps_hosts.sh [--build DIR] [--rate RATE] [--sizes-mib LIST] [--iters N]
#   --build DIR       build directory with benchmarks/polis-bench-ps (default <repo>/build)
#   --rate RATE       link cap per host, tc syntax (default 100mbit)
#   --sizes-mib LIST  model sizes, comma-separated (default 1,4)
#   --iters N         timed rounds per size (default 6)
# Needs root. The report (markdown) goes to stdout. Exits 3 when namespaces
# cannot be made here.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source=benchmarks/emu.sh
source "$SCRIPT_DIR/emu.sh"
BUILD="$REPO_ROOT/build"
RATE=100mbit
SIZES=1,4
ITERS=6
ARGS_GIVEN=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="${2:?--build needs a directory}"; shift 2 ;;
    --rate) RATE="${2:?--rate needs e.g. 100mbit}"; shift 2 ;;
    --sizes-mib) SIZES="${2:?--sizes-mib needs a list}"; shift 2 ;;
    --iters) ITERS="${2:?--iters needs a number}"; shift 2 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
[[ "$RATE" =~ ^[1-9][0-9]*(mbit|gbit)$ ]] || { echo "error: --rate must be like 100mbit or 1gbit" >&2; exit 1; }
BENCH="$(cd "$BUILD" 2>/dev/null && pwd)/benchmarks/polis-bench-ps" || true
[[ -x "$BENCH" ]] || { echo "error: $BUILD/benchmarks/polis-bench-ps not found (build the polis-bench-ps target)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-ps-hosts.XXXXXX")"
CLUSTER="$WORK/cluster"
trap 'emu_down "$CLUSTER"; rm -rf "$WORK"' EXIT
emu_up "$CLUSTER" --hosts 5 --slots 1 --rate "$RATE"
mapfile -t A < <(awk '!/^#/ { print $1 }' "$CLUSTER/hostfile")

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
emu_mpirun "$CLUSTER"
MPIRUN+=(--mca mpi_yield_when_idle 1)
START=$(date +%s)
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
: > "$WORK/results.tsv"
for s in 1 2; do
  # One rank a host, in rank order: driver, servers, then the two workers on h4, h5.
  { echo "${A[0]} slots=1"; echo "${A[1]} slots=1"; ((s == 1)) || echo "${A[2]} slots=1"
    echo "${A[3]} slots=1"; echo "${A[4]} slots=1"; } > "$WORK/hostfile"
  echo "$s server(s), 2 workers, links $RATE" >&2
  "${MPIRUN[@]}" --hostfile "$WORK/hostfile" -np $((3 + s)) "$BENCH" --servers "$s" --sizes-mib "$SIZES" \
    --iters "$ITERS" >> "$WORK/results.tsv" || { echo "error: polis-bench-ps failed ($s servers)" >&2; exit 1; }
done
ELAPSED=$(( $(date +%s) - START ))
CMDLINE="benchmarks/ps_hosts.sh"
[[ ${#ARGS_GIVEN[@]} -gt 0 ]] && CMDLINE+=" ${ARGS_GIVEN[*]}"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
python3 - "$WORK/results.tsv" "$CMDLINE" "$CPU" "$(getconf _NPROCESSORS_ONLN)" "$ELAPSED" "$RATE" "$LOAD_START" <<'PYEOF'
import collections, datetime, os, statistics, sys
path, cmd, cpu, ncpu, elapsed, rate, load_start = sys.argv[1:8]
bps = int(rate[:-4]) * (1e9 if rate.endswith("gbit") else 1e6)
t = collections.defaultdict(list)
for line in open(path):
    p = line.rstrip("\n").split("\t")
    if len(p) == 5 and p[4] and p[0] == "ps":
        t[(int(p[1]), int(p[2]), int(p[3]))] += [float(x) for x in p[4].split(",")]
print(f"Command: `{cmd}`  ")
print(f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}  ")
print(f"CPU: {cpu} ({ncpu} CPUs), every emulated host on it; load average {load_start} at the start, "
      f"{os.getloadavg()[0]:.2f} at the end; links {rate}; {elapsed} s")
print()
print("| servers (hosts) | workers (hosts) | size | round trip ms (median) | bound ms | bound ÷ round trip | 1 server ÷ this |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for (s, w, size) in sorted(t):
    rt = statistics.median(t[(s, w, size)])
    bound = 2 * max(w / s, 1) * size * 8 / bps
    one = statistics.median(t[(1, w, size)]) if (1, w, size) in t else None
    print(f"| {s} | {w} | {size >> 20} MiB | {rt * 1e3:.0f} | {bound * 1e3:.0f} | {bound / rt:.2f}× | "
          + ("—" if one is None else f"{one / rt:.2f}×") + " |")
PYEOF
