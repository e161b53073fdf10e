#!/usr/bin/env bash
# Input pipeline, side by side in one run (docs/benchmarks.md, "Input pipeline"):
#  1. records decoded per second on one core from PNG and from JPEG shards:
#     polis-bench-decode (Dataset::Gather: pread, CRC-32, libpng /
#     libjpeg-turbo, floats) against a PyTorch DataLoader (num_workers=0)
#     decoding the same tar members with PIL (benchmarks/decode_torch.py);
#  2. training throughput of the seed CNN (polis-run, 1 worker, all-reduce,
#     2 epochs; images/s of the second epoch, after start-up) from the IDX
#     files in memory, from PNG and from npy shards of the same images (with
#     2 decode threads, the default, and with 0: decoding in the training
#     thread), and from PNG shards held by the coordinator (dataset.source
#     COORDINATOR).
# Runs are interleaved per round; the tables give medians over rounds.
#
# Usage: benchmarks/data_pipeline.sh [--build DIR] [--quick]
#   --build DIR  Polis build directory (default: <repo>/build)
#   --quick      1 round on fewer records
#
# Progress goes to stderr; the report (markdown) goes to stdout.
set -euo pipefail

PY=/usr/bin/python3
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
BUILD="$REPO_ROOT/build"
QUICK=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BUILD="$(cd "$BUILD" && pwd)"
"$PY" -c "import torch, PIL" 2>/dev/null || { echo "error: $PY lacks torch or PIL (launch/install-deps.sh bench)" >&2; exit 2; }
FM="${POLIS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
ROUNDS=3; DECODE_N=10000; TRAIN_N=60000
if ((QUICK)); then ROUNDS=1; DECODE_N=2000; TRAIN_N=3000; fi
WORK="$(mktemp -d /tmp/polis-data-bench-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

echo "packing..." >&2
for enc in png jpg; do
  "$BUILD/launch/polis-data" pack idx --dir "$FM" --train-limit "$DECODE_N" --test-limit 100 --size 64x64 \
    --channels 3 --encoding "$enc" --out "$WORK/rgb-$enc" >&2
done
for enc in png npy; do
  "$BUILD/launch/polis-data" pack idx --dir "$FM" --train-limit "$TRAIN_N" --test-limit 1000 --encoding "$enc" \
    --out "$WORK/fm-$enc" >&2
done
# The seed job reading shards: $1 encoding, $2 dataset.source, $3 decode threads.
shards_job() {
  sed -e "s/format: IDX/format: SHARDS source: $2 shards { decode_threads: $3 }/" \
      -e "s|dir: \"fashion-mnist\"|dir: \"$WORK/fm-$1\"|" \
      -e '/num_classes: 10/d' "$REPO_ROOT/jobs/fashion_cnn_allreduce.pbtxt" > "$WORK/$1-$2-$3.pbtxt"
  echo "$WORK/$1-$2-$3.pbtxt"
}
TRAIN_SOURCES=(idx png npy png-coordinator png-0-threads npy-0-threads)
rate() { sed -n 's/.*records_per_second \([0-9.]*\).*/\1/p'; }
declare -A R
for ((r = 1; r <= ROUNDS; r++)); do
  for enc in png jpg; do
    echo "round $r: decode $enc" >&2
    R[polis_$enc]+="$("$BUILD/benchmarks/polis-bench-decode" --dir "$WORK/rgb-$enc" | rate) "
    R[torch_$enc]+="$(OMP_NUM_THREADS=1 "$PY" "$SCRIPT_DIR/decode_torch.py" --dir "$WORK/rgb-$enc" | rate) "
  done
  for src in "${TRAIN_SOURCES[@]}"; do
    echo "round $r: train from $src" >&2
    case $src in
      idx) job="$REPO_ROOT/jobs/fashion_cnn_allreduce.pbtxt" ;;
      png-coordinator) job=$(shards_job png COORDINATOR 2) ;;
      *-0-threads) job=$(shards_job "${src%%-*}" LOCAL 0) ;;
      *) job=$(shards_job "$src" LOCAL 2) ;;
    esac
    rm -rf "$WORK/run"
    POLIS_NO_BUILD=1 POLIS_BUILD_DIR="$BUILD" "$REPO_ROOT/launch/polis-run" --workers 1 --epochs 2 \
      --registry "$WORK/reg" --run-dir "$WORK/run" "$job" -- --train-limit "$TRAIN_N" --test-limit 1000 >&2
    R[train_$src]+="$("$PY" - "$WORK/run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{rows[1]['train_samples'] / (rows[1]['elapsed_seconds'] - rows[0]['elapsed_seconds']):.1f}")
PYEOF
) "
  done
done

median() { "$PY" -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" $1; }
ratio() { "$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
echo "- Command: \`benchmarks/data_pipeline.sh$( ((QUICK)) && echo ' --quick')\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), nproc: $(nproc), CPU: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
echo "- torch $("$PY" -c 'import torch; print(torch.__version__)'), PIL $("$PY" -c 'import PIL; print(PIL.__version__)'); rounds: $ROUNDS; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "Decoding, one core, $DECODE_N records of 3x64x64 (Fashion-MNIST upscaled), records/s (median, and every round):"
echo
echo "| encoding | Polis | PyTorch DataLoader + PIL | Polis/PyTorch | Polis rounds | PyTorch rounds |"
echo "|---|---:|---:|---:|---|---|"
for enc in png jpg; do
  p=$(median "${R[polis_$enc]}"); t=$(median "${R[torch_$enc]}")
  echo "| $enc | $p | $t | $(ratio "$p" "$t") | ${R[polis_$enc]}| ${R[torch_$enc]}|"
done
echo
echo "Training the seed CNN, 1 worker (all-reduce), $TRAIN_N images, images/s of the second epoch (median):"
echo
echo "| source | images/s | ÷ IDX in memory | rounds |"
echo "|---|---:|---:|---|"
idx=$(median "${R[train_idx]}")
for src in "${TRAIN_SOURCES[@]}"; do
  m=$(median "${R[train_$src]}")
  echo "| $src | $m | $(ratio "$m" "$idx") | ${R[train_$src]}|"
done
