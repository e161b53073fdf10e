#!/usr/bin/env bash
# Parameter-server training step with and without push/pull overlap:
# launch/polis-run on Fashion-MNIST (jobs/fashion_cnn.pbtxt, BSP), 2 workers
# and 1 server, one short epoch per run, for several sync.ps_piece_bytes
# (-1 = one message per server, no overlap), the settings interleaved round
# by round. Reports medians over rounds of images/s and of the per-step time
# of a worker split into compute / communication / wait (result.json).
#
# Usage: benchmarks/ps_overlap.sh [--build DIR] [--pieces "-1 0 16384 65536 262144"]
#                                 [--rounds R] [--train-limit N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build" PIECES="-1 0 16384 65536 262144" ROUNDS=3 LIMIT=12000
ARGS_GIVEN=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="${2:?}"; shift 2 ;;
    --pieces) PIECES="${2:?}"; shift 2 ;;
    --rounds) ROUNDS="${2:?}"; shift 2 ;;
    --train-limit) LIMIT="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1" >&2; exit 1 ;;
  esac
done
BUILD="$(cd "$BUILD" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-ps-overlap.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
  for p in $PIECES; do
    echo "round $r/$ROUNDS: ps_piece_bytes $p" >&2
    sed "s/consistency: BSP/consistency: BSP ps_piece_bytes: $p/" "$ROOT/jobs/fashion_cnn.pbtxt" > "$WORK/job.pbtxt"
    POLIS_DEBUG=INFO POLIS_DEBUG_SUBSYS=WORKER POLIS_NO_BUILD=1 POLIS_BUILD_DIR="$BUILD" "$ROOT/launch/polis-run" --workers 2 --servers 1 --epochs 1 \
      --run-dir "$WORK/run-$p-$r" --registry "$WORK/registry" "$WORK/job.pbtxt" \
      -- --train-limit "$LIMIT" --test-limit 1000 > "$WORK/log-$p-$r" 2>&1 \
      || { cat "$WORK/log-$p-$r" >&2; exit 1; }
  done
done
CMDLINE="benchmarks/ps_overlap.sh"
[[ ${#ARGS_GIVEN[@]} -gt 0 ]] && CMDLINE+=" ${ARGS_GIVEN[*]}"
python3 - "$WORK" "$PIECES" "$ROUNDS" "$CMDLINE" "${BASH_SOURCE[0]}" <<'PYEOF'
import datetime, json, os, re, statistics, sys
work, pieces, rounds, cmd = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[5])))
from worker_log import epoch_lines
print(f"Command: `{cmd}`  ")
print(f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; load average at the end "
      f"{os.getloadavg()[0]:.2f}; {rounds} round(s); medians over rounds of the mean over the 2 workers")
print()
print("| ps_piece_bytes | images/s | step ms | compute ms | comm ms | of which forward waits ms | wait ms | test loss |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for p in pieces:
    rows = []
    for r in range(1, rounds + 1):
        res = json.load(open(f"{work}/run-{p}-{r}/result.json"))
        ws = epoch_lines(f"{work}/run-{p}-{r}/stderr.log")
        assert len(ws) == 2, f"expected 2 worker lines in run-{p}-{r}/stderr.log"
        per = []
        for (_, steps, comp, comm, fwd, nodata, shard) in ws:
            per.append((comp / steps, (comm - nodata) / steps, fwd / steps, (nodata + shard) / steps))
        avg = [sum(x[i] for x in per) / len(per) for i in range(4)]
        rows.append((res["history"][0]["images_per_second"], *avg, res["history"][0]["test_loss"]))
    med = lambda i: statistics.median(x[i] for x in rows)
    step = med(1) + med(2) + med(4)
    print(f"| {p} | {med(0):.0f} | {step * 1e3:.2f} | {med(1) * 1e3:.2f} | {med(2) * 1e3:.2f} | {med(3) * 1e3:.2f} | "
          f"{med(4) * 1e3:.2f} | {med(5):.6f} |")
PYEOF
