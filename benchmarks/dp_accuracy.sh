#!/usr/bin/env bash
# Test accuracy (classifiers) or test MAE (forecasts) of a DP-SGD job against
# the epsilon it spends, epoch by epoch (docs/benchmarks.md, "DP-SGD
# accuracy"). Runs launch/polis-run on JOB (default
# jobs/fashion_cnn_dp.pbtxt: the end-to-end DP CNN at epsilon 3, delta 1e-5)
# and prints its start line and a Markdown table of every epoch: train
# loss, test metric, epsilon spent so far.
#
# Usage: benchmarks/dp_accuracy.sh [--build DIR] [--workers W] [--job FILE] [-- polis-train options]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build WORKERS=2 JOB=$ROOT/jobs/fashion_cnn_dp.pbtxt
while (($#)); do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --job) JOB=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "## DP-SGD accuracy: $(basename "$JOB"), $WORKERS workers"
echo
echo "- Command: \`benchmarks/dp_accuracy.sh --workers $WORKERS --job $JOB${*:+ -- $*}\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
POLIS_BUILD_DIR=$BUILD "$ROOT/launch/polis-run" --workers "$WORKERS" --registry "$TMP/reg" --run-dir "$TMP/run" \
  "$JOB" ${*:+-- "$@"} >"$TMP/log" 2>&1 || { cat "$TMP/log" >&2; exit 1; }
echo "- $(grep -m1 'DP-SGD:' "$TMP/log" | sed 's/^polis: //')"
echo
/usr/bin/python3 - "$TMP/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
metric = "test_accuracy" if any("test_accuracy" in r for r in rows) else "test_mae"
print(f"| epoch | train loss | {metric.replace('_', ' ')} | epsilon spent |")
print("|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['epoch']} | {r['train_loss']:.4f} | {r.get(metric, float('nan')):.4f} | {r.get('epsilon', float('nan')):.3f} |")
PY
