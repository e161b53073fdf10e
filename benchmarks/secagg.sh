#!/usr/bin/env bash
# Secure aggregation against plain pushes: launch/polis-run on Fashion-MNIST
# (jobs/fashion_cnn.pbtxt, parameter servers, BSP), 2 and 4 workers, 1
# server, one short epoch per run, with and without
# privacy { secure_aggregation: true }, the settings interleaved round by
# round. Reports medians over rounds of: bytes a server moved per round
# (pushes in + replies out, from result.json's server_stats, over its
# updates), the per-step time of a worker split into compute (forward,
# backward and, with secure aggregation, encoding and masking the pushes) /
# communication / wait (worker log lines), and images/s; then the ratios.
#
# Usage: benchmarks/secagg.sh [--build DIR] [--workers "2 4"] [--rounds R] [--train-limit N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build" WORKERS="2 4" ROUNDS=3 LIMIT=6000
ARGS_GIVEN=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="${2:?}"; shift 2 ;;
    --workers) WORKERS="${2:?}"; shift 2 ;;
    --rounds) ROUNDS="${2:?}"; shift 2 ;;
    --train-limit) LIMIT="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1" >&2; exit 1 ;;
  esac
done
BUILD="$(cd "$BUILD" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-secagg.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT/jobs/fashion_cnn.pbtxt" "$WORK/plain.pbtxt"
{ cat "$ROOT/jobs/fashion_cnn.pbtxt"; echo 'privacy { secure_aggregation: true }'; } > "$WORK/secagg.pbtxt"
for ((r = 1; r <= ROUNDS; r++)); do
  for w in $WORKERS; do
    for mode in plain secagg; do
      echo "round $r/$ROUNDS: $w workers, $mode" >&2
      POLIS_DEBUG=INFO POLIS_DEBUG_SUBSYS=WORKER POLIS_NO_BUILD=1 POLIS_BUILD_DIR="$BUILD" "$ROOT/launch/polis-run" \
        --workers "$w" --servers 1 --epochs 1 --run-dir "$WORK/run-$w-$mode-$r" --registry "$WORK/registry" \
        "$WORK/$mode.pbtxt" -- --train-limit "$LIMIT" --test-limit 1000 > "$WORK/log-$w-$mode-$r" 2>&1 \
        || { cat "$WORK/log-$w-$mode-$r" >&2; exit 1; }
    done
  done
done
CMDLINE="benchmarks/secagg.sh"
[[ ${#ARGS_GIVEN[@]} -gt 0 ]] && CMDLINE+=" ${ARGS_GIVEN[*]}"
python3 - "$WORK" "$WORKERS" "$ROUNDS" "$CMDLINE" "${BASH_SOURCE[0]}" <<'PYEOF'
import datetime, json, os, re, statistics, sys
work, workers, rounds, cmd = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[5])))
from worker_log import epoch_lines
print(f"Command: `{cmd}`  ")
print(f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; load average at the end "
      f"{os.getloadavg()[0]:.2f}; {rounds} round(s); medians over rounds (per-step times: mean over the workers)")
print()
print("| workers | pushes | server bytes/round | server updates | step ms | compute ms | comm ms | wait ms | images/s | test acc |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
med = {}
for w in workers:
    for mode in ("plain", "secagg"):
        rows = []
        for r in range(1, rounds + 1):
            d = f"{work}/run-{w}-{mode}-{r}"
            res = json.load(open(f"{d}/result.json"))
            ws = epoch_lines(f"{d}/stderr.log")
            assert len(ws) == int(w), f"expected {w} worker lines in {d}/stderr.log"
            per = [(comp / steps, (comm - nodata) / steps, (nodata + shard) / steps)
                   for (_, steps, comp, comm, fwd, nodata, shard) in ws]
            avg = [sum(x[i] for x in per) / len(per) for i in range(3)]
            s = res["server_stats"][0]
            rows.append(((s["bytes_in"] + s["bytes_out"]) / s["updates"], s["updates"], *avg,
                         res["history"][0]["images_per_second"], res["history"][0]["test_accuracy"]))
        m = [statistics.median(x[i] for x in rows) for i in range(7)]
        med[(w, mode)] = m
        step = m[2] + m[3] + m[4]
        print(f"| {w} | {'masked' if mode == 'secagg' else 'plain'} | {m[0]:,.0f} | {m[1]:.0f} | {step * 1e3:.2f} | "
              f"{m[2] * 1e3:.2f} | {m[3] * 1e3:.2f} | {m[4] * 1e3:.2f} | {m[5]:.0f} | {m[6]:.4f} |")
print()
print("| workers | bytes/round masked/plain | step time masked/plain | compute masked/plain |")
print("|---:|---:|---:|---:|")
for w in workers:
    p, s = med[(w, "plain")], med[(w, "secagg")]
    print(f"| {w} | {s[0] / p[0]:.3f} | {(s[2] + s[3] + s[4]) / (p[2] + p[3] + p[4]):.3f} | {s[2] / p[2]:.3f} |")
PYEOF
