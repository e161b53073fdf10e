#!/usr/bin/env bash
# validate.sh: the simulation against the emulated cluster. The same driver
# (scaling_driver.cc) runs the same all-reduce sizes and parameter-server
# rounds twice, side by side: for real on the emulated cluster
# (launch/cluster/emucluster: one network namespace per host, real TCP over
# a bridge, tc tbf caps per host link; polis-scaling under mpirun) and
# simulated on platforms/emucluster-1g.xml (polis-scaling-sim under
# smpirun). The reduction's and the server's compute are injected into the
# simulation at the per-float cost measured here first (calibrate mode). The
# real runs use Polis' normal waits (--waits=poll: spin, then back off), as
# training does; Open MPI's blocking wait would spin and take the 2 cores
# from the emulated hosts' network stacks.
#
# Prints a markdown table (median of the slowest rank's time, simulated ÷
# measured) and checks the stated tolerance: every case marked "model"
# must agree within --tolerance (default 0.25: simulated/measured within
# [0.75, 1.25]); cases outside the model (latency-bound sizes, where the
# 2-vCPU host's scheduling dominates) are reported, not checked.
#
# Usage: benchmarks/scaling/validate.sh [--build DIR] [--rate 1gbit] [--iters N] [--tolerance T] [--quick]
# Needs root (network namespaces). Exit 0: within tolerance; 1: a case
# outside it or a failed run; 3: namespaces cannot be made here.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=benchmarks/emu.sh
source "$REPO_ROOT/benchmarks/emu.sh"
BUILD="${POLIS_BUILD_DIR:-$REPO_ROOT/build}"
RATE=1gbit
ITERS=5
TOL=0.25
QUICK=0
ARGS_GIVEN=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="${2:?--build needs a directory}"; shift 2 ;;
    --rate) RATE="${2:?--rate needs e.g. 1gbit}"; shift 2 ;;
    --iters) ITERS="${2:?--iters needs a number}"; shift 2 ;;
    --tolerance) TOL="${2:?--tolerance needs a fraction}"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
[[ "$RATE" == 1gbit ]] || { echo "error: platforms/emucluster-1g.xml describes 1gbit links; --rate $RATE has no platform" >&2; exit 1; }
BUILD="$(cd "$BUILD" 2>/dev/null && pwd)" || { echo "error: build directory not found" >&2; exit 1; }
REAL="$BUILD/benchmarks/scaling/polis-scaling"
[[ -x "$REAL" && -x "$BUILD/benchmarks/scaling/polis-scaling-sim" ]] \
  || { echo "error: $BUILD has no polis-scaling / polis-scaling-sim (configure with -DPOLIS_SIMULATION=ON)" >&2; exit 1; }
PLATFORM="$SCRIPT_DIR/platforms/emucluster-1g.xml"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-sim-validate.XXXXXX")"
CLUSTER="$WORK/cluster"
trap 'emu_down "$CLUSTER"; rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

# The per-float costs, measured here (no MPI traffic: one rank, loopback).
CAL="$(mpirun --oversubscribe -np 1 --mca btl self "$REAL" calibrate | grep '^result')"
REDUCE_NS="$(sed -n 's/.*reduce_ns=\([^ ]*\).*/\1/p' <<<"$CAL")"
APPLY_NS="$(sed -n 's/.*apply_ns=\([^ ]*\).*/\1/p' <<<"$CAL")"
echo "calibrate: $CAL" >&2

emu_up "$CLUSTER" --hosts 4 --slots 2 --rate "$RATE"
mapfile -t ADDRS < <(awk '!/^#/ { print $1 }' "$CLUSTER/hostfile")
emu_mpirun "$CLUSTER"

# Cases: "name|ranks|ranks per host|mode and arguments|model or outside"
MiB=262144  # floats
CASES=(
  "rd 8 B, 2 hosts|2|1|allreduce --algo=rd --count=2|outside"
  "ring 1 MiB, 4 hosts|4|1|allreduce --algo=ring --count=$MiB|model"
  "ring 16 MiB, 4 hosts|4|1|allreduce --algo=ring --count=$((16 * MiB))|model"
  "rabenseifner 4 MiB, 4 hosts|4|1|allreduce --algo=rabenseifner --count=$((4 * MiB))|model"
  "rabenseifner 16 MiB, 4 hosts|4|1|allreduce --algo=rabenseifner --count=$((16 * MiB))|model"
  "ring bf16 16 MiB, 4 hosts|4|1|allreduce --algo=ring --wire=bf16 --count=$((16 * MiB))|model"
  "hier 16 MiB, 2 hosts x 2|4|2|allreduce --algo=hier --count=$((16 * MiB))|model"
  "PS 1 server, 2 workers, 4 MiB|3|1|ps --servers=1 --count=$((4 * MiB)) --layers=8 --piece-bytes=65536|model"
  "PS 2 servers, 2 workers, 4 MiB|4|1|ps --servers=2 --count=$((4 * MiB)) --layers=8 --piece-bytes=65536|model"
)
if ((QUICK)); then CASES=("${CASES[0]}" "${CASES[1]}" "${CASES[7]}"); ITERS=2; fi

START=$(date +%s)
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
: > "$WORK/results.tsv"
for c in "${CASES[@]}"; do
  IFS='|' read -r name np per args kind <<<"$c"
  hosts=$(( (np + per - 1) / per ))
  : > "$WORK/hostfile"
  for ((h = 0; h < hosts; h++)); do echo "${ADDRS[$h]} slots=$per" >> "$WORK/hostfile"; done
  # shellcheck disable=SC2086  # args is a word list
  extra=(--iters="$ITERS" --ranks-per-host="$per" --reduce-ns="$REDUCE_NS" --apply-ns="$APPLY_NS")
  echo "real: $name" >&2
  # shellcheck disable=SC2086
  real="$("${MPIRUN[@]}" --hostfile "$WORK/hostfile" -np "$np" --map-by slot "$REAL" $args "${extra[@]}" --waits=poll \
          | sed -n 's/^result.* median_s=\([^ ]*\).*/\1/p')"
  echo "simulated: $name" >&2
  # shellcheck disable=SC2086
  sim="$("$SCRIPT_DIR/sim.sh" --build "$BUILD" --ranks-per-host "$per" "$PLATFORM" "$np" $args "${extra[@]}" \
         | sed -n 's/^result.* median_s=\([^ ]*\).*/\1/p')"
  [[ -n "$real" && -n "$sim" ]] || { echo "error: case '$name' gave no result (real '$real', simulated '$sim')" >&2; exit 1; }
  printf '%s\t%s\t%s\t%s\n' "$name" "$kind" "$real" "$sim" >> "$WORK/results.tsv"
done
ELAPSED=$(( $(date +%s) - START ))

CMDLINE="benchmarks/scaling/validate.sh"
[[ ${#ARGS_GIVEN[@]} -gt 0 ]] && CMDLINE+=" ${ARGS_GIVEN[*]}"
python3 - "$WORK/results.tsv" "$TOL" "$CMDLINE" "$ELAPSED" "$LOAD_START" "$CAL" <<'EOF'
import os, sys
path, tol, cmd, elapsed, load, cal = sys.argv[1:7]
tol = float(tol)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Command: `{cmd}` ({elapsed} s; {cpu}, {os.cpu_count()} CPUs; load average {load} at the start, "
      f"{os.getloadavg()[0]:.1f} at the end)  ")
print(f"Injected compute per float: `{cal}`  ")
print(f"Tolerance: simulated ÷ measured within [{1 - tol:.2f}, {1 + tol:.2f}] for the cases in the model")
print()
print("| case | measured ms | simulated ms | simulated ÷ measured | checked |")
print("|---|---:|---:|---:|---|")
bad = []
for line in open(path):
    name, kind, real, sim = line.rstrip("\n").split("\t")
    r, s = float(real), float(sim)
    ratio = s / r if r > 0 else float("inf")
    ok = abs(ratio - 1) <= tol
    mark = ("yes" if ok else "**NO**") if kind == "model" else "outside the model"
    if kind == "model" and not ok:
        bad.append(name)
    print(f"| {name} | {r * 1e3:.2f} | {s * 1e3:.2f} | {ratio:.2f} | {mark} |")
print()
if bad:
    print(f"Outside the tolerance: {', '.join(bad)}")
    sys.exit(1)
print("Every case in the model is within the tolerance.")
EOF
