#!/usr/bin/env bash
# sim.sh: runs polis-scaling-sim (the simulation build of Polis'
# collectives and parameter-server round, docs/design/simulation.md) on a
# SimGrid platform with the settings every run here needs.
#
# Usage: benchmarks/scaling/sim.sh [--build DIR] [--ranks-per-host K] [--no-fold] [--privatize]
#                                   PLATFORM.xml NP MODE [--key=value ...]
#   PLATFORM.xml  benchmarks/scaling/platforms/*.xml (hosts h0, h1, ...)
#   NP            ranks; rank r runs on host h(r / K)
#   MODE ...      the driver's mode and arguments (scaling_driver.cc:
#                 check, allreduce, ps, calibrate)
#   --build DIR   Polis build configured with -DPOLIS_SIMULATION=ON (default <repo>/build)
#   --no-fold     real buffers (smpi/shared-malloc:off): the sums are right;
#                 without it buffers are folded (1024 ranks fit, sums are not)
#                 and the driver gets --arithmetic=off (no sums computed:
#                 their cost is injected; the messages are the same)
#   --privatize   one copy of the binary's globals per rank (SMPI's dlopen
#                 privatization); the driver needs none, so off by default
#   --ps-hosts H  mode ps: the S servers (--servers=S) on hosts hH, hH+1, ...
#                 (the platforms' spare rack) and the workers on h0, h1, ...
#
# Settings: smpi/coll-selector:ompi (SimGrid's default all-reduce is
# reduce+bcast, 30-120x too slow; CLUSTER-NOTES.md), smpi/host-speed:1Gf (the
# platforms' host speed, so that injected compute is simulated 1:1),
# smpi/simulate-computation:no (compute is only what the driver injects:
# the host running the simulation does not time itself).
# smpi/bcast:binomial_tree: SMPI broadcasts a new communicator's id with
# MPI_Bcast, whose default here first gathers every rank's host with a ring
# all-gather (p^2 messages: about 100 s of the simulator's time per
# communicator at 1024 ranks); Polis' own collectives never call the
# blocking MPI_Bcast, so this changes no simulated step time.
# smpi/shared-malloc-blocksize 64 MiB: folded buffers are mapped in blocks;
# with the default 1 MiB, 256 ranks of a 25 M-parameter model exceed
# vm.max_map_count.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
BUILD="${POLIS_BUILD_DIR:-$REPO_ROOT/build}"
PER=1
FOLD=global
PRIV=(-no-privatize)
PS_FIRST=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --ranks-per-host) PER="$2"; shift 2 ;;
    --no-fold) FOLD=off; shift ;;
    --privatize) PRIV=(); shift ;;
    --ps-hosts) PS_FIRST="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
[[ $# -ge 3 ]] || { echo "usage: sim.sh [options] PLATFORM.xml NP MODE [--key=value ...] (see --help)" >&2; exit 1; }
PLATFORM="$1" NP="$2"
shift 2
[[ -f "$PLATFORM" ]] || { echo "error: platform $PLATFORM not found" >&2; exit 1; }
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "error: NP must be a positive number, not '$NP'" >&2; exit 1; }
BIN="$BUILD/benchmarks/scaling/polis-scaling-sim"
[[ -x "$BIN" ]] || { echo "error: $BIN not found (configure $BUILD with -DPOLIS_SIMULATION=ON and build polis-scaling-sim)" >&2; exit 1; }
command -v smpirun >/dev/null || { echo "error: smpirun not found (launch/install-deps.sh installs libsimgrid-dev)" >&2; exit 1; }
HOSTS="$(grep -o 'radical="0-[0-9]*"' "$PLATFORM" | head -1 | grep -o '[0-9]*"$' | tr -d '"')"
[[ -n "$HOSTS" ]] || { echo "error: $PLATFORM: no cluster with radical=\"0-N\"" >&2; exit 1; }
SERVERS=0
if [[ -n "$PS_FIRST" ]]; then
  SERVERS="$(printf '%s\n' "$@" | sed -n 's/^--servers=\([0-9]*\)$/\1/p' | tail -1)"
  [[ -n "$SERVERS" ]] || { echo "error: --ps-hosts needs the driver's --servers=S" >&2; exit 1; }
  (( PS_FIRST + SERVERS <= HOSTS + 1 )) || { echo "error: $SERVERS servers from h$PS_FIRST do not fit $PLATFORM" >&2; exit 1; }
fi
NEED=$(( (NP - SERVERS + PER - 1) / PER ))
(( NEED <= HOSTS + 1 )) || { echo "error: $NP ranks at $PER per host need $NEED hosts; $PLATFORM has $((HOSTS + 1))" >&2; exit 1; }
# Folded memory holds no meaningful values: skip computing them (the
# driver's --arithmetic, unless the caller set it).
ARITH=()
if [[ "$FOLD" == global && "$1" != check ]] && ! printf '%s\n' "$@" | grep -q '^--arithmetic='; then ARITH=(--arithmetic=off); fi
HOSTFILE="$(mktemp "${TMPDIR:-/tmp}/polis-sim-hosts.XXXXXX")"
trap 'rm -f "$HOSTFILE"' EXIT
{
  for ((s = 0; s < SERVERS; s++)); do echo "h$((PS_FIRST + s))"; done
  for ((r = 0; r < NP - SERVERS; r++)); do echo "h$((r / PER))"; done
} > "$HOSTFILE"
smpirun "${PRIV[@]}" -np "$NP" -platform "$PLATFORM" -hostfile "$HOSTFILE" \
  --cfg=smpi/coll-selector:ompi --cfg=smpi/bcast:binomial_tree --cfg=smpi/host-speed:1Gf --cfg=smpi/simulate-computation:no \
  --cfg=smpi/shared-malloc:"$FOLD" --cfg=smpi/shared-malloc-blocksize:67108864 --log=root.thres:warning --log=xbt_cfg.thres:warning \
  "$BIN" "$@" "${ARITH[@]}"
