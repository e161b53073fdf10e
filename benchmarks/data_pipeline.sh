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
#     COORDINATOR); once with as many compute threads as cores (decoding
#     takes turns with compute) and once with one core left to the decode
#     threads (--threads nproc-1: a GPU worker's host, or a host with more
#     cores than the job computes on).
# Runs are interleaved per round; the tables give medians over rounds and
# the median of each round's ratio to the IDX run of the same round (rounds
# drift on a shared VM; the paired ratio cancels most of it).
#
# Usage: benchmarks/data_pipeline.sh [--build DIR] [--rounds N] [--quick]
#   --build DIR  Polis build directory (default: <repo>/build)
#   --rounds N   rounds of every run (default 5)
#   --quick      1 round on fewer records
#
# Progress goes to stderr; the report (markdown) goes to stdout.
set -euo pipefail

PY=/usr/bin/python3
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
BUILD="$REPO_ROOT/build"
QUICK=0
ROUNDS=5
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BUILD="$(cd "$BUILD" && pwd)"
"$PY" -c "import torch, PIL" 2>/dev/null || { echo "error: $PY lacks torch or PIL (launch/install-deps.sh bench)" >&2; exit 2; }
FM="${POLIS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
DECODE_N=10000; TRAIN_N=60000
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
# Sources trained from, each as "source/threads": "all" computes on every
# core, "spare" leaves one core to the decode threads.
TRAIN_RUNS=(idx/all png/all npy/all png-coordinator/all png-0-threads/all npy-0-threads/all
            idx/spare png/spare npy/spare)
CORES=$(nproc)
SPARE=$((CORES > 1 ? CORES - 1 : 1))
rate() { sed -n 's/.*records_per_second \([0-9.]*\).*/\1/p'; }
declare -A R
for ((r = 1; r <= ROUNDS; r++)); do
  for enc in png jpg; do
    echo "round $r: decode $enc" >&2
    R[polis_$enc]+="$("$BUILD/benchmarks/polis-bench-decode" --dir "$WORK/rgb-$enc" | rate) "
    R[torch_$enc]+="$(OMP_NUM_THREADS=1 "$PY" "$SCRIPT_DIR/decode_torch.py" --dir "$WORK/rgb-$enc" | rate) "
  done
  for run in "${TRAIN_RUNS[@]}"; do
    src=${run%/*}
    threads=$CORES; [[ ${run#*/} == spare ]] && threads=$SPARE
    echo "round $r: train from $src, $threads compute thread(s)" >&2
    case $src in
      idx) job="$REPO_ROOT/jobs/fashion_cnn_allreduce.pbtxt" ;;
      png-coordinator) job=$(shards_job png COORDINATOR 2) ;;
      *-0-threads) job=$(shards_job "${src%%-*}" LOCAL 0) ;;
      *) job=$(shards_job "$src" LOCAL 2) ;;
    esac
    rm -rf "$WORK/run"
    POLIS_NO_BUILD=1 POLIS_BUILD_DIR="$BUILD" "$REPO_ROOT/launch/polis-run" --workers 1 --epochs 2 --threads "$threads" \
      --registry "$WORK/reg" --run-dir "$WORK/run" "$job" -- --train-limit "$TRAIN_N" --test-limit 1000 >&2
    R[train_$run]+="$("$PY" - "$WORK/run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{rows[1]['train_samples'] / (rows[1]['elapsed_seconds'] - rows[0]['elapsed_seconds']):.1f}")
PYEOF
) "
  done
done

median() { "$PY" -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" $1; }
ratio() { "$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
echo "- Command: \`benchmarks/data_pipeline.sh $( ((QUICK)) && echo --quick || echo --rounds "$ROUNDS")\`"
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
echo "Training the seed CNN, 1 worker (all-reduce), $TRAIN_N images, images/s of the second epoch; \"all\": $CORES"
echo "compute thread(s) on $CORES core(s), \"spare\": $SPARE compute thread(s), a core left to decoding. Ratios: to the IDX"
echo "run with the same threads, the median over rounds of each round's ratio (paired), and of the medians:"
echo
echo "| source | compute threads | images/s (median) | ÷ IDX, paired | ÷ IDX, medians | rounds |"
echo "|---|---:|---:|---:|---:|---|"
for run in "${TRAIN_RUNS[@]}"; do
  src=${run%/*} set=${run#*/}
  threads=$CORES; [[ $set == spare ]] && threads=$SPARE
  m=$(median "${R[train_$run]}"); idx=$(median "${R[train_idx/$set]}")
  paired=$("$PY" -c "import statistics, sys; a, b = sys.argv[1].split(), sys.argv[2].split(); print(f'{statistics.median(float(x) / float(y) for x, y in zip(a, b)):.2f}')" "${R[train_$run]}" "${R[train_idx/$set]}")
  echo "| $src | $threads | $m | $paired | $(ratio "$m" "$idx") | ${R[train_$run]}|"
done
