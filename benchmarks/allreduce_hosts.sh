#!/usr/bin/env bash
# All-reduce across hosts, side by side, on the emulated cluster
# (launch/cluster/emucluster: one network namespace per host, real TCP over a
# bridge, each host's link capped with tc tbf): Polis ring, Polis auto and
# Polis hierarchical (polis-bench-allreduce, told the hosts with
# --ranks-per-host), Open MPI's MPI_Allreduce (the same job, iteration by
# iteration, with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ so that its
# temporaries do not page-fault), and PyTorch gloo (allreduce_torch.py, one
# process per rank in the hosts' namespaces, tcp:// rendezvous on the first
# host's address).
#
# Layouts: 4 hosts x 1 rank and 2 hosts x 2 ranks. Beside each size, the
# link-rate bound of the inter-host part: every host must send (and
# receive) 2(H-1)/H of the buffer over its own link, H hosts, whatever the
# algorithm, so no all-reduce finishes before
#     t_bound = 2(H-1)/H * bytes / link rate
# (1 Gbit/s = 125e6 bytes/s; TCP/IP headers not counted, so the bound is
# about 5 % above what a link carries as payload). "÷ bound" columns are
# t_bound / t_median (1.00 = at the link rate).
#
# Every timed call is verified against its closed form. Times are medians,
# over all rounds' iterations, of the slowest rank's time.
#
# Usage: benchmarks/allreduce_hosts.sh [--build DIR] [--rounds R] [--rate RATE] [--quick]
#   --build DIR  Polis build directory (default <repo>/build); needs
#                DIR/benchmarks/polis-bench-allreduce
#   --rounds R   interleaved rounds (default 2)
#   --rate RATE  link cap per host, tc syntax (default 1gbit)
#   --quick      1 round, 1 and 4 MiB, 2 iterations, no gloo (a smoke run)
#
# Every OMPI_MCA_* and POLIS_* variable of the caller's environment is
# passed to the ranks (e.g. POLIS_ALLREDUCE_PIECES=1 to measure without the
# pipeline, OMPI_MCA_btl_tcp_eager_limit=65536 for Open MPI's default), and
# the report's header lists them.
#
# Needs root (network namespaces). Progress goes to stderr; the report
# (markdown) to stdout. Exits 0 when every run verified, 1 on a failure, 2 if
# torch is missing (not with --quick), 3 when namespaces cannot be made here
# (1 instead under CI=true when a tool the project installs is missing).
# ctest runs the --quick form as integration.allreduce_hosts.quick.
set -euo pipefail

PY=/usr/bin/python3   # Debian's Python, the one with torch
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source=benchmarks/emu.sh
source "$SCRIPT_DIR/emu.sh"
TORCH_BENCH="$SCRIPT_DIR/allreduce_torch.py"

BUILD="$REPO_ROOT/build"
ROUNDS=2
RATE=1gbit
QUICK=0
ARGS_GIVEN=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) [[ $# -ge 2 ]] || { echo "error: --build needs a directory" >&2; exit 1; }
             BUILD="$2"; shift 2 ;;
    --rounds) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "error: --rounds needs a number" >&2; exit 1; }
              ROUNDS="$2"; shift 2 ;;
    --rate) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*(mbit|gbit)$ ]] || { echo "error: --rate needs e.g. 1gbit or 100mbit" >&2; exit 1; }
            RATE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BUILD_ARG="$BUILD"
BUILD="$(cd "$BUILD" 2>/dev/null && pwd)" || { echo "error: build directory not found: $BUILD_ARG" >&2; exit 1; }
BENCH="$BUILD/benchmarks/polis-bench-allreduce"
[[ -x "$BENCH" ]] || { echo "error: $BENCH not found (build the polis-bench-allreduce target)" >&2; exit 1; }
TORCH_VERSION="-"
if [[ $QUICK -eq 0 ]]; then
  if ! TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
    echo "error: $PY cannot import torch; run \`launch/install-deps.sh bench\` first." >&2
    exit 2
  fi
fi
case "$RATE" in
  *gbit) RATE_BPS=$(( ${RATE%gbit} * 1000000000 )) ;;
  *mbit) RATE_BPS=$(( ${RATE%mbit} * 1000000 )) ;;
esac

SIZES=(--min-bytes 1048576 --max-bytes 67108864 --factor 4)
ITERS=(--warmup 1 --min-iters 4 --max-iters 8 --target-mb 64)
if [[ $QUICK -eq 1 ]]; then
  ROUNDS=1
  SIZES=(--min-bytes 1048576 --max-bytes 4194304 --factor 4)
  ITERS=(--warmup 1 --min-iters 2 --max-iters 2 --target-mb 1)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-allreduce-hosts.XXXXXX")"
CLUSTER="$WORK/cluster"
cleanup() {
  emu_down "$CLUSTER"
  rm -rf "$WORK"
}
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

# One cluster of 4 hosts, 2 slots each; each layout gets its own hostfile.
emu_up "$CLUSTER" --hosts 4 --slots 2 --rate "$RATE"
mapfile -t ADDRS < <("$PY" -c 'import json,sys; [print(h["address"]) for h in json.load(open(sys.argv[1]))]' "$CLUSTER/hosts.json")
mapfile -t IFACES < <("$PY" -c 'import json,sys; [print(h["veth"][:-1] + "i") for h in json.load(open(sys.argv[1]))]' "$CLUSTER/hosts.json")

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
emu_mpirun "$CLUSTER"
MPIRUN+=(-x OMP_NUM_THREADS -x MALLOC_MMAP_THRESHOLD_=2147483647 -x MALLOC_TRIM_THRESHOLD_=4294967295)
# Settings to compare go to every rank: OMPI_MCA_* and POLIS_* from this
# environment (e.g. OMPI_MCA_btl_tcp_eager_limit=65536, POLIS_ALLREDUCE_PIECES=1).
for v in $(env | grep -o '^\(OMPI_MCA_[A-Za-z0-9_]*\|POLIS_[A-Z0-9_]*\)=' | tr -d =); do MPIRUN+=(-x "$v"); done

# run_polis HOSTS PER_HOST: Polis ring / auto / hier and Open MPI, one job.
run_polis() {
  local hosts="$1" per="$2" i
  : > "$WORK/hostfile"
  for ((i = 0; i < hosts; i++)); do echo "${ADDRS[$i]} slots=$per" >> "$WORK/hostfile"; done
  "${MPIRUN[@]}" --hostfile "$WORK/hostfile" -np $((hosts * per)) "$BENCH" --ranks-per-host "$per" \
    --impls ring,auto,hier,mpi "${SIZES[@]}" "${ITERS[@]}" > "$WORK/out.tsv" \
    || { echo "error: polis-bench-allreduce failed ($hosts hosts x $per)" >&2; exit 1; }
  sed "s/\t$((hosts * per))\t/\t${hosts}x${per}\t/" "$WORK/out.tsv" >> "$RESULTS"
}

# run_gloo HOSTS PER_HOST: one Python process per rank in its host's namespace.
run_gloo() {
  local hosts="$1" per="$2" n=$(($1 * $2)) port=$((29500 + RANDOM % 2000)) pids=() rc=0 r h
  for ((r = 0; r < n; r++)); do
    h=$((r / per))
    "$EMU" exec --dir "$CLUSTER" "${ADDRS[$h]}" env GLOO_SOCKET_IFNAME="${IFACES[$h]}" OMP_NUM_THREADS=1 \
      "$PY" "$TORCH_BENCH" --rank "$r" --world-size "$n" --addr "${ADDRS[0]}" --port "$port" \
      "${SIZES[@]}" "${ITERS[@]}" > "$WORK/gloo.$r.tsv" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [[ $rc -eq 0 ]] || { echo "error: gloo benchmark failed ($hosts hosts x $per)" >&2; exit 1; }
  sed "s/\t$n\t/\t${hosts}x${per}\t/" "$WORK/gloo.0.tsv" >> "$RESULTS"
}

START=$(date +%s)
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
for ((round = 1; round <= ROUNDS; round++)); do
  for layout in "4 1" "2 2"; do
    read -r hosts per <<<"$layout"
    echo "round $round/$ROUNDS, $hosts hosts x $per rank(s): Polis ring/auto/hier + Open MPI" >&2
    run_polis "$hosts" "$per"
    if [[ $QUICK -eq 0 ]]; then
      echo "round $round/$ROUNDS, $hosts hosts x $per rank(s): PyTorch gloo" >&2
      run_gloo "$hosts" "$per"
    fi
  done
done
ELAPSED=$(( $(date +%s) - START ))

CMDLINE="benchmarks/allreduce_hosts.sh"
[[ ${#ARGS_GIVEN[@]} -gt 0 ]] && CMDLINE+=" ${ARGS_GIVEN[*]}"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
MPI_VERSION="$(mpirun --version 2>/dev/null | head -1)"

"$PY" - "$RESULTS" "$CMDLINE" "$CPU" "$(getconf _NPROCESSORS_ONLN)" "$MPI_VERSION" "$TORCH_VERSION" \
  "$ELAPSED" "$ROUNDS" "$RATE" "$RATE_BPS" "$LOAD_START" <<'EOF'
import collections, datetime, os, statistics, sys

(path, cmd, cpu, ncpu, mpi_version, torch_version, elapsed, rounds, rate, rate_bps,
 load_start) = sys.argv[1:12]
rate_bps = int(rate_bps)
times = collections.defaultdict(list)
for line in open(path):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 4 or not parts[3]:
        continue
    times[(parts[0], parts[1], int(parts[2]))] += [float(t) for t in parts[3].split(",")]

def med(impl, layout, size):
    t = times.get((impl, layout, size))
    return statistics.median(t) if t else None

def human(size):
    return f"{size >> 20} MiB"

def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}×"

print(f"Command: `{cmd}`  ")
print(f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}  ")
print(f"CPU: {cpu} ({ncpu} CPUs), every emulated host on it; load average {load_start} at the "
      f"start, {os.getloadavg()[0]:.2f} at the end  ")
print(f"Links: {rate} per host (tc tbf, both directions); {mpi_version}; PyTorch {torch_version}; "
      f"{rounds} interleaved round(s), {elapsed} s")
given = sorted(f"{k}={v}" for k, v in os.environ.items()
               if k.startswith(("OMPI_MCA_", "POLIS_")) and k != "OMPI_MCA_oob_tcp_if_include")
if given:
    print("Settings given to every rank: " + ", ".join(f"`{g}`" for g in given))
cols = [("ring", "Polis ring"), ("auto", "Polis auto"), ("hier", "Polis hier"),
        ("mpi", "Open MPI"), ("gloo", "PyTorch gloo")]
layouts = sorted({k[1] for k in times}, key=lambda l: (-int(l.split("x")[0]), l))
for layout in layouts:
    hosts, per = (int(x) for x in layout.split("x"))
    sizes = sorted({k[2] for k in times if k[1] == layout})
    print()
    print(f"**{hosts} hosts × {per} rank(s)** — median ms (slowest rank); bound = "
          f"2({hosts}−1)/{hosts} · size / {rate}; ÷ bound = t_bound / t")
    print()
    print("| size | " + " | ".join(c[1] for c in cols) +
          " | bound | hier ÷ bound | auto ÷ bound | hier ÷ MPI | auto ÷ MPI | hier ÷ gloo |")
    print("|---:|" + "---:|" * (len(cols) + 6))
    for size in sizes:
        bound = 2 * (hosts - 1) / hosts * size * 8 / rate_bps
        m = {impl: med(impl, layout, size) for impl, _ in cols}
        cells = ["—" if m[i] is None else f"{m[i] * 1e3:.1f}" for i, _ in cols]
        inv = lambda x: None if x is None else 1 / x
        cells += [f"{bound * 1e3:.1f}",
                  ratio(bound, m["hier"]), ratio(bound, m["auto"]),
                  ratio(inv(m["hier"]), inv(m["mpi"])), ratio(inv(m["auto"]), inv(m["mpi"])),
                  ratio(inv(m["hier"]), inv(m["gloo"]))]
        print(f"| {human(size)} | " + " | ".join(cells) + " |")
print()
print("Ratios above 1 mean Polis is faster (÷ MPI, ÷ gloo) or closer to the bound (÷ bound).")
EOF
