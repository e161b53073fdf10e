#!/usr/bin/env bash
# A dataset larger than memory trains at the images/s of one that fits
# (docs/benchmarks.md, "Input pipeline"): the seed CNN (polis-run, 1 worker,
# all-reduce) inside a memory cgroup (v1, memory.limit_in_bytes, page cache
# included) on two npy shard sets packed from the same Fashion-MNIST images:
# SMALL (--train-limit N) fits in the limit, LARGE (the same N images
# --copies C times, randomly cropped and flipped) is larger than the whole
# limit, so its records are read from disk again every epoch. images/s of
# the second epoch; rounds interleaved; medians.
#
# Usage: benchmarks/data_larger_than_memory.sh [--build DIR] [--limit-mb M]
#          [--train N] [--copies C] [--rounds R] [--quick]
#   defaults: --limit-mb 256 --train 30000 --copies 10 --rounds 1
#   --quick   --train 3000 --copies 10 --limit-mb 200 (a smoke test)
# Needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory.
# Exit codes: 0 done, 1 a run failed, 2 usage or a missing prerequisite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build LIMIT_MB=256 TRAIN_N=30000 COPIES=10 ROUNDS=1
ARGS=("$@")
while (($#)); do
  case "$1" in
    --build) BUILD=${2:?--build needs a directory}; shift 2 ;;
    --limit-mb) LIMIT_MB=${2:?--limit-mb needs a value}; shift 2 ;;
    --train) TRAIN_N=${2:?--train needs a value}; shift 2 ;;
    --copies) COPIES=${2:?--copies needs a value}; shift 2 ;;
    --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
    --quick) TRAIN_N=3000 LIMIT_MB=200; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "data_larger_than_memory: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
CG_ROOT=/sys/fs/cgroup/memory
[[ -w $CG_ROOT ]] || { echo "no writable cgroup v1 memory controller at $CG_ROOT" >&2; exit 2; }
[[ -x "$BUILD/launch/polis-train" ]] || { echo "no polis-train in $BUILD (build first)" >&2; exit 2; }
FM="${POLIS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
WORK=$(mktemp -d /tmp/polis-ltm-XXXXXX)
CG=$CG_ROOT/polis-ltm-$$
cleanup() { [[ -d $CG ]] && rmdir "$CG" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir "$CG"
echo $((LIMIT_MB * 1024 * 1024)) > "$CG/memory.limit_in_bytes"

"$BUILD/launch/polis-data" pack idx --dir "$FM" --train-limit "$TRAIN_N" --test-limit 1000 --encoding npy \
  --out "$WORK/small" >&2
"$BUILD/launch/polis-data" pack idx --dir "$FM" --train-limit "$TRAIN_N" --test-limit 1000 --encoding npy \
  --copies "$COPIES" --out "$WORK/large" >&2
mib() { du -sm "$1" | cut -f1; }
for set in small large; do
  sed -e "s/format: IDX/format: SHARDS/" -e "s|dir: \"fashion-mnist\"|dir: \"$WORK/$set\"|" \
      -e '/num_classes: 10/d' "$ROOT/jobs/fashion_cnn_allreduce.pbtxt" > "$WORK/$set.pbtxt"
done

once() {  # set -> "images/s peak_MiB"
  local set=$1
  rm -rf "$WORK/run"
  sync; echo 1 > /proc/sys/vm/drop_caches  # every set starts from the disk
  echo 0 > "$CG/memory.max_usage_in_bytes"
  ( echo $BASHPID > "$CG/cgroup.procs"
    POLIS_NO_BUILD=1 POLIS_BUILD_DIR=$BUILD exec "$ROOT/launch/polis-run" --workers 1 --epochs 2 \
      --registry "$WORK/reg" --run-dir "$WORK/run" "$WORK/$set.pbtxt" ) >"$WORK/$set.log" 2>&1 ||
    { cat "$WORK/$set.log" >&2; return 1; }
  $PY - "$WORK/run/metrics.jsonl" "$(cat "$CG/memory.max_usage_in_bytes")" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{rows[1]['train_samples'] / (rows[1]['elapsed_seconds'] - rows[0]['elapsed_seconds']):.1f} {int(sys.argv[2]) / 2**20:.0f}")
PYEOF
}
declare -A R P
sets=(small large)
for ((r = 0; r < ROUNDS; r++)); do
  for i in 0 1; do
    s=${sets[$(( (i + r) % 2 ))]}
    echo "round $((r + 1))/$ROUNDS: $s" >&2
    line=$(once "$s") || { echo "$s failed" >&2; exit 1; }
    R[$s]+="${line%% *} "
    P[$s]+="${line##* } "
  done
done
median() { $PY -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" $1; }
echo "- Command: \`benchmarks/data_larger_than_memory.sh ${ARGS[*]}\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- Memory cgroup limit $LIMIT_MB MiB (page cache included) around polis-run and every rank; page cache dropped before each run"
echo
echo "| dataset | training records | on disk MiB | images/s, epoch 2 (median) | peak cgroup MiB | rounds |"
echo "|---|---:|---:|---:|---:|---|"
echo "| small | $TRAIN_N | $(mib "$WORK/small") | $(median "${R[small]}") | ${P[small]}| ${R[small]}|"
echo "| large | $((TRAIN_N * COPIES)) | $(mib "$WORK/large") | $(median "${R[large]}") | ${P[large]}| ${R[large]}|"
echo
echo "large / small: $($PY -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$(median "${R[large]}")" "$(median "${R[small]}")")"
