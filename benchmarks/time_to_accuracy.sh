#!/usr/bin/env bash
# Wall time to reach a Fashion-MNIST test accuracy (default 0.88) with 2
# workers, evaluation included: Polis all-reduce, Polis parameter server (BSP,
# ASP, SSP s=2) and PyTorch DDP (gloo, 2 processes x 1 thread, per-rank batch
# 32, same network, Adam), run one after another in the same invocation.
# Polis' time is the coordinator's elapsed time at the end of the first epoch
# whose test accuracy reaches the target (metrics.jsonl); DDP's likewise.
#
# Usage: benchmarks/time_to_accuracy.sh [--build DIR] [--target ACC] [--epochs N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build TARGET=0.88 EPOCHS=6
while (($#)); do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
$PY -c 'import torch' 2>/dev/null || { echo "PyTorch missing: run launch/install-deps.sh bench" >&2; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
TUNABLES="glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=67108864"

echo "## Time to $TARGET Fashion-MNIST test accuracy, 2 workers"
echo
echo "- Command: \`benchmarks/time_to_accuracy.sh --target $TARGET --epochs $EPOCHS\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| run | seconds to $TARGET | epochs | final test acc | compute s/worker | comm+wait s/worker |"
echo "|---|---:|---:|---:|---:|---:|"

polis_row() {  # name job extra-args
  local name=$1 job=$2; shift 2
  local run=$TMP/$name
  POLIS_BUILD_DIR=$BUILD "$ROOT/launch/polis-run" --workers 2 --epochs "$EPOCHS" --registry "$TMP/reg" \
    --run-dir "$run" "$job" "$@" >"$TMP/$name.log" 2>&1 || { cat "$TMP/$name.log" >&2; exit 1; }
  $PY - "$run/metrics.jsonl" "$TARGET" "$name" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
target = float(sys.argv[2])
hit = next((r for r in rows if r["test_accuracy"] >= target), None)
compute = sum(r["worker_compute_seconds"] for r in rows[: rows.index(hit) + 1] if hit) / 2 if hit else float("nan")
comm = sum(r["worker_comm_seconds"] for r in rows[: rows.index(hit) + 1] if hit) / 2 if hit else float("nan")
t = f'{hit["elapsed_seconds"]:.1f}' if hit else "not reached"
e = hit["epoch"] if hit else len(rows)
print(f'| Polis {sys.argv[3]} | {t} | {e} | {rows[-1]["test_accuracy"]:.4f} | {compute:.1f} | {comm:.1f} |')
PYEOF
}

variant() {  # base-job consistency -> path
  local bound=""
  [[ $2 == SSP ]] && bound=" staleness: 2"  # the bound is refused for BSP and ASP
  sed "s/consistency: BSP/consistency: $2$bound/" "$ROOT/jobs/$1" > "$TMP/$2.pbtxt"
  echo "$TMP/$2.pbtxt"
}

polis_row "all-reduce" "$ROOT/jobs/fashion_cnn_allreduce.pbtxt"
polis_row "PS BSP (1 server)" "$ROOT/jobs/fashion_cnn.pbtxt"
polis_row "PS ASP (1 server)" "$(variant fashion_cnn.pbtxt ASP)"
polis_row "PS SSP s=2 (1 server)" "$(variant fashion_cnn.pbtxt SSP)"
GLIBC_TUNABLES=$TUNABLES OMP_NUM_THREADS=1 $PY "$ROOT/benchmarks/ddp_fashion.py" --workers 2 \
  --epochs "$EPOCHS" --target "$TARGET" > "$TMP/ddp.json"
$PY - "$TMP/ddp.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
t = f'{d["seconds_to_target"]:.1f}' if d["seconds_to_target"] else "not reached"
e = next((h["epoch"] for h in d["history"] if h["test_accuracy"] >= d["target"]), len(d["history"]))
print(f'| PyTorch {d["torch"]} DDP gloo | {t} | {e} | {d["history"][-1]["test_accuracy"]:.4f} | | |')
PYEOF
