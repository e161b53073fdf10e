#!/usr/bin/env bash
# check.sh: the simulation build gives the same sums as the real
# collectives. Runs the driver's check mode (every all-reduce algorithm with
# fp32 and bf16 wires on 8 ranks, 2 per host, then a parameter-server round
# with 2 servers and 6 workers; scaling_driver.cc) twice: under Open MPI
# (polis-scaling, mpirun, shared memory) and under SimGrid SMPI
# (polis-scaling-sim on platforms/emucluster-1g.xml, real buffers), and
# compares the hashes of the results' bits line by line. Each run also
# checks that every rank agrees and that fp32 results lie within the
# rounding bound of the exact sum. Then, on folded memory, that skipping
# the arithmetic (sim.sh's default there) leaves every simulated step time
# unchanged: the same all-reduce and PS round with --arithmetic=on and off
# must print the same simulated times. No wall-clock timing is asserted.
#
# Usage: benchmarks/scaling/check.sh [--build DIR]   (ctest: sim.check.np8)
# Exit 0 when every line matches, 1 otherwise.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
BUILD="${POLIS_BUILD_DIR:-$REPO_ROOT/build}"
if [[ "${1:-}" == --build ]]; then BUILD="$2"; shift 2; fi
REAL="$BUILD/benchmarks/scaling/polis-scaling"
[[ -x "$REAL" ]] || { echo "error: $REAL not found (configure with -DPOLIS_SIMULATION=ON)" >&2; exit 1; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-sim-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_oob_tcp_if_include=lo OMP_NUM_THREADS=1
ARGS=(check --count=10007 --ranks-per-host=2)
echo "real: mpirun -np 8 $REAL ${ARGS[*]}" >&2
mpirun --oversubscribe --bind-to none --mca btl self,vader -np 8 "$REAL" "${ARGS[@]}" > "$WORK/real.txt" \
  || { cat "$WORK/real.txt"; echo "error: the real run failed" >&2; exit 1; }
echo "simulated: sim.sh --no-fold --ranks-per-host 2 platforms/emucluster-1g.xml 8 ${ARGS[*]}" >&2
"$SCRIPT_DIR/sim.sh" --build "$BUILD" --no-fold --ranks-per-host 2 "$SCRIPT_DIR/platforms/emucluster-1g.xml" 8 \
  "${ARGS[@]}" > "$WORK/sim.txt" || { cat "$WORK/sim.txt"; echo "error: the simulated run failed" >&2; exit 1; }
echo "real | simulated:"
paste -d'|' "$WORK/real.txt" "$WORK/sim.txt" | sed 's/|/\n  /'
lines=$(wc -l < "$WORK/real.txt")
if (( lines != 11 )) || ! diff -q "$WORK/real.txt" "$WORK/sim.txt" >/dev/null || grep -q "=NO\|EXCEEDED" "$WORK/real.txt"; then
  echo "FAIL: the simulated sums differ from the real ones (or a run disagreed with itself)" >&2
  diff "$WORK/real.txt" "$WORK/sim.txt" >&2 || true
  exit 1
fi
echo "OK: $lines results bit-identical between Open MPI and SMPI"

# Folded memory: the arithmetic switched off must not move simulated time.
for args in "allreduce --algo=ring --count=300000 --iters=2 --compute-s=0.001 --reduce-ns=0.5" \
            "allreduce --algo=rabenseifner --wire=bf16 --count=300000 --iters=2" \
            "ps --servers=2 --count=300000 --layers=4 --piece-bytes=65536 --iters=2 --apply-ns=1"; do
  extra=()
  [[ "$args" == ps* ]] && extra=(--ps-hosts 4)
  # shellcheck disable=SC2086
  on="$("$SCRIPT_DIR/sim.sh" --build "$BUILD" "${extra[@]}" "$SCRIPT_DIR/platforms/emucluster-1g.xml" 8 $args --arithmetic=on | grep '^result')"
  # shellcheck disable=SC2086
  off="$("$SCRIPT_DIR/sim.sh" --build "$BUILD" "${extra[@]}" "$SCRIPT_DIR/platforms/emucluster-1g.xml" 8 $args | grep '^result')"
  echo "folded, arithmetic on | off: $on | ${off##*median_s=}"
  if [[ -z "$on" || "$on" != "$off" ]]; then
    echo "FAIL: skipping the arithmetic changed the simulated result of '$args'" >&2
    exit 1
  fi
done
echo "OK: skipping the arithmetic on folded memory leaves the simulated times unchanged"
