#!/usr/bin/env bash
# Training the bike-demand LSTM (jobs/bike_demand_lstm.pbtxt, 1 worker and
# its parameter server, the job's own settings) from the CSV, held whole in
# memory, against the same windows packed into shards by
# `polis-data pack csv` (docs/datasets.md, "Time-series windows";
# docs/benchmarks.md). Windows/s of the second epoch (after start-up), the
# two runs interleaved per round; the table gives medians over rounds. Also
# the pack's time and the shards' size on disk against the CSV's.
#
# Usage: benchmarks/timeseries_shards.sh [--build DIR] [--quick] [--csv PATH]
#   --build DIR  Polis build directory (default: <repo>/build)
#   --quick      1 round on 1000 training windows (default: 4000 of 15,050)
#   --csv PATH   the UCI bike-sharing hour.csv (default: the job's path)
#
# Progress goes to stderr; the report (markdown) goes to stdout.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3 BUILD="" QUICK=0 CSV=""
while (($#)); do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --build|--csv) [[ $1 == --build ]] && BUILD="$2" || CSV="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BUILD="$(cd "${BUILD:-$REPO_ROOT/build}" && pwd)"
cd "$REPO_ROOT"  # the job's CSV path is relative to the repository
ROUNDS=3; TRAIN_N=4000  # 0: every training window
if ((QUICK)); then ROUNDS=1; TRAIN_N=1000; fi
WORK="$(mktemp -d /tmp/polis-ts-bench-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# The job as it is (with --csv: that file), and the same job reading shards.
"$PY" - "$REPO_ROOT/jobs/bike_demand_lstm.pbtxt" "$WORK" "$CSV" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
if sys.argv[3]:
    text = re.sub(r'path: "[^"]*"', f'path: "{sys.argv[3]}"', text, count=1)
open(f"{sys.argv[2]}/csv.pbtxt", "w").write(text)
start = text.index("\ndataset {")
end = text.index("\n}\n", start) + 3
open(f"{sys.argv[2]}/shards.pbtxt", "w").write(
    text[:start] + f'\ndataset {{ format: SHARDS dir: "{sys.argv[2]}/ds" }}\n' + text[end:])
PYEOF
echo "packing..." >&2
t0=$(date +%s.%N)
"$BUILD/launch/polis-data" pack csv --job "$WORK/csv.pbtxt" --out "$WORK/ds" >&2
t1=$(date +%s.%N)
csv_path=$(sed -n 's/.*path: "\([^"]*\)".*/\1/p' "$WORK/csv.pbtxt" | head -1)
csv_bytes=$(stat -c %s "$csv_path")
shard_bytes=$(du -sb "$WORK/ds" | cut -f1)

# Each run's metrics.jsonl, kept as RUNS/SOURCE-ROUND.jsonl.
mkdir -p "$WORK/runs"
for ((r = 1; r <= ROUNDS; r++)); do
  for src in csv shards; do
    echo "round $r: train from $src" >&2
    rm -rf "$WORK/run"
    POLIS_NO_BUILD=1 POLIS_BUILD_DIR="$BUILD" "$REPO_ROOT/launch/polis-run" --workers 1 --epochs 2 \
      --registry "$WORK/reg" --run-dir "$WORK/run" "$WORK/$src.pbtxt" -- --train-limit "$TRAIN_N" \
      --test-limit 500 >&2
    cp "$WORK/run/metrics.jsonl" "$WORK/runs/$src-$r.jsonl"
  done
done

echo "- Command: \`benchmarks/timeseries_shards.sh$( ((QUICK)) && echo ' --quick')\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), nproc: $(nproc), CPU: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
echo "- rounds: $ROUNDS; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$WORK/runs" "$ROUNDS" "$TRAIN_N" "$t0" "$t1" "$csv_bytes" "$shard_bytes" <<'PYEOF'
import json, statistics, sys
runs, rounds, train_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0, t1, csv_bytes, shard_bytes = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
print(f"- pack: {t1 - t0:.1f} s; CSV {csv_bytes} bytes, shards {shard_bytes} bytes ({shard_bytes / csv_bytes:.2f}x)\n")
def second_epoch_rate(path):  # windows/s of epoch 2, after start-up
    first, second = [json.loads(l) for l in open(path)][:2]
    return second["train_samples"] / (second["elapsed_seconds"] - first["elapsed_seconds"])
rates = {s: [second_epoch_rate(f"{runs}/{s}-{r}.jsonl") for r in range(1, rounds + 1)] for s in ("csv", "shards")}
print(f"bike_demand_lstm, 1 worker + 1 parameter server, {train_n or 'all'} training windows, "
      "windows/s of the second epoch (median):\n")
print("| source | windows/s | ÷ CSV in memory | rounds |\n|---|---:|---:|---|")
base = statistics.median(rates["csv"])
for s, v in rates.items():
    m = statistics.median(v)
    print(f"| {s} | {m:.1f} | {m / base:.2f} | {' '.join(f'{x:.1f}' for x in v)} |")
PYEOF
