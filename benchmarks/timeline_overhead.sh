#!/usr/bin/env bash
# What recording a timeline costs (docs/timeline.md): the seed CNN trained by
# 2 workers with the timeline off and on, side by side, in all-reduce and
# parameter-server mode. Runs alternate off/on within each round so drift on
# a shared machine hits both alike; the table reports the median step time
# over rounds and the ratio on/off.
#
# On a loaded machine the end-to-end step times vary more between runs
# than the timeline could cost, so the recorder's own cost is measured as
# well: ns per span with the recorder on (polis-bench-trace), times the spans
# a worker records per step (counted in the last "on" run's timeline: every
# span of the worker ranks, their comm threads included), over the median
# step time with the timeline on.
#
# Step time: what the workers measure themselves, compute + communication
# seconds summed over workers and epochs (metrics.jsonl) divided by the
# workers' steps (each worker's "step" spans in the on runs agree with it
# within 5 %: tests/integration/timeline_integration_test.cc).
#
# Usage: benchmarks/timeline_overhead.sh [--build DIR] [--rounds N] [--train-limit N] [--epochs N] [--picture PNG]
#   --build DIR        Polis build directory (default: <repo>/build)
#   --rounds N         off/on pairs per mode (default 5)
#   --train-limit N    training samples (default 6000)
#   --epochs N         (default 1)
#   --picture PNG      draw 3 steps of the last parameter-server run's
#                      timeline there (polis-timeline --png; docs/timeline.png)
#                      and print its summary
#
# Progress goes to stderr; the report (markdown) goes to stdout. Exits 1 if
# a run fails.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
BUILD="$REPO_ROOT/build" ROUNDS=5 TRAIN_LIMIT=6000 EPOCHS=1 PICTURE=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --train-limit) TRAIN_LIMIT="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --picture) PICTURE="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BUILD="$(cd "$BUILD" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-timeline-overhead.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "command: $0 --build $BUILD --rounds $ROUNDS --train-limit $TRAIN_LIMIT --epochs $EPOCHS${PICTURE:+ --picture $PICTURE}" >&2

# One run; prints its step time in ms (compute + comm per worker step).
run() {  # mode(allreduce|ps) timeline(off|on) round
  local mode=$1 tl=$2 round=$3 dir="$WORK/$1-$2-$3" args=()
  if [[ $mode == ps ]]; then args=(--servers 1 "$REPO_ROOT/jobs/fashion_cnn.pbtxt")
  else args=("$REPO_ROOT/jobs/fashion_cnn_allreduce.pbtxt"); fi
  [[ $tl == on ]] && args=(--timeline "$dir.timeline.json" "${args[@]}")
  POLIS_NO_BUILD=1 POLIS_BUILD_DIR="$BUILD" "$REPO_ROOT/launch/polis-run" --workers 2 --epochs "$EPOCHS" \
    --registry "$WORK/registry" --run-dir "$dir" "${args[@]}" -- --train-limit "$TRAIN_LIMIT" --test-limit 1000 \
    >"$dir.log" 2>&1 || { echo "error: run failed: $mode timeline $tl round $round; log:" >&2; tail -20 "$dir.log" >&2; exit 1; }
  /usr/bin/python3 - "$dir/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if "worker_compute_seconds" in r]
secs = sum(r["worker_compute_seconds"] + r["worker_comm_seconds"] for r in rows)
steps = sum(r["steps"] for r in rows) * 2   # "steps" is per worker (the most any worker took)
print(f"{1000 * secs / steps:.3f}")
PY
}

declare -A medians_on
median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "| mode | timeline off: step ms (median) | on: step ms (median) | on/off | runs off | runs on | timeline size (last run) |"
echo "|---|---|---|---|---|---|---|"
for mode in allreduce ps; do
  off=() on=()
  for ((r = 1; r <= ROUNDS; r++)); do
    off+=("$(run "$mode" off "$r")")
    on+=("$(run "$mode" on "$r")")
    echo "$mode round $r: off ${off[-1]} ms, on ${on[-1]} ms" >&2
  done
  m_off=$(echo "${off[*]}" | median)
  m_on=$(echo "${on[*]}" | median)
  size=$(stat -c %s "$WORK/$mode-on-$ROUNDS.timeline.json")
  ratio=$(awk -v a="$m_on" -v b="$m_off" 'BEGIN {printf "%.3f", a / b}')
  echo "| $mode | $m_off | $m_on | $ratio | ${off[*]} | ${on[*]} | $((size / 1024)) KiB |"
  medians_on[$mode]=$m_on
done

echo
"$BUILD/benchmarks/polis-bench-trace" >"$WORK/bench-trace" || { cat "$WORK/bench-trace" >&2; exit 1; }
on_ns=$(awk '/^on_ns_per_span/ {print $2}' "$WORK/bench-trace")
off_ns=$(awk '/^off_ns_per_span/ {print $2}' "$WORK/bench-trace")
echo "Recorder cost (polis-bench-trace): ${off_ns} ns per span off, ${on_ns} ns on."
echo
echo "| mode | spans per worker step | recorder time per step | share of the median step (on) |"
echo "|---|---|---|---|"
for mode in allreduce ps; do
  /usr/bin/python3 - "$WORK/$mode-on-$ROUNDS.timeline.json" "$on_ns" "${medians_on[$mode]}" "$mode" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
on_ns, step_ms, mode = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "process_name"}
workers = {p for p, n in names.items() if "(worker" in n}
spans = sum(1 for e in doc["traceEvents"] if e.get("ph") == "X" and e["pid"] in workers)
steps = sum(1 for e in doc["traceEvents"] if e.get("ph") == "X" and e["name"] == "step")
per_step = spans / steps
cost_us = per_step * on_ns / 1000
print(f"| {mode} | {per_step:.1f} | {cost_us:.1f} us | {100 * cost_us / (step_ms * 1000):.2f} % |")
PY
done
if [[ -n "$PICTURE" ]]; then
  echo >&2
  "$BUILD/launch/polis-timeline" "$WORK/ps-on-$ROUNDS.timeline.json" --png "$PICTURE" --steps 3 --skip-steps 20 >&2
fi
