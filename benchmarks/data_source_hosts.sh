#!/usr/bin/env bash
# What dataset.source COORDINATOR costs across hosts (docs/benchmarks.md,
# "Input pipeline"): the seed CNN trained from PNG shards of Fashion-MNIST
# on an emulated cluster (launch/cluster/emucluster: network namespaces,
# real TCP, links capped with tc tbf), the coordinator alone on host 1 and
# the workers on host 2, side by side in one invocation:
#   IDX           every rank reads the IDX files (in memory)
#   LOCAL         shards read from host 2's copy
#   COORDINATOR   shards held by host 1 only, records sent over the link
# images/s from result.json; rows interleaved --reps times; medians, and
# COORDINATOR / LOCAL.
#
# Usage: benchmarks/data_source_hosts.sh [--build DIR] [--rate 100mbit|1gbit|none]
#          [--workers N] [--epochs N] [--reps R] [--quick]
#   --quick   1 rep, 12000 training images
# Needs root (network namespaces) and iproute2. Exit codes: 0 done, 1 a run
# failed, 2 usage or a missing prerequisite, 3 namespaces cannot be made here.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build RATE=100mbit WORKERS=2 EPOCHS=1 REPS=2 QUICK=0
ARGS=("$@")
while (($#)); do
  case "$1" in
    --build) BUILD=${2:?--build needs a directory}; shift 2 ;;
    --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
    --workers) WORKERS=${2:?--workers needs a value}; shift 2 ;;
    --epochs) EPOCHS=${2:?--epochs needs a value}; shift 2 ;;
    --reps) REPS=${2:?--reps needs a value}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "data_source_hosts: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
TRAIN_N=60000
if ((QUICK)); then REPS=1 TRAIN_N=12000; fi
PY=/usr/bin/python3
[[ -x "$BUILD/launch/polis-train" ]] || { echo "no polis-train in $BUILD (build first)" >&2; exit 2; }
FM="${POLIS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
TMP=$(mktemp -d)
REPO_ROOT=$ROOT
# shellcheck source=benchmarks/emu.sh
source "$ROOT/benchmarks/emu.sh"
trap 'emu_down "$TMP/cluster"; rm -rf "$TMP"' EXIT
emu_up "$TMP/cluster" --hosts 2 --slots "$((WORKERS + 1))" --rate "$RATE"
a1=$(jq -r '.[0].address' "$TMP/cluster/hosts.json")
a2=$(jq -r '.[1].address' "$TMP/cluster/hosts.json")
net=${a1%.*}.0/24

"$BUILD/launch/polis-data" pack idx --dir "$FM" --train-limit "$TRAIN_N" --out "$TMP/fm" >&2
for src in LOCAL COORDINATOR; do
  sed -e "s/format: IDX/format: SHARDS source: $src/" -e "s|dir: \"fashion-mnist\"|dir: \"$TMP/fm\"|" \
      -e '/num_classes: 10/d' "$ROOT/jobs/fashion_cnn_allreduce.pbtxt" > "$TMP/$src.pbtxt"
done

echo "## dataset.source across hosts: $WORKERS workers on host 2, the coordinator on host 1, links $RATE"
echo
echo "- Command: \`benchmarks/data_source_hosts.sh ${ARGS[*]}\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); emulated hosts $a1 and $a2 share these cores"
echo "- Seed CNN (\`jobs/fashion_cnn_allreduce.pbtxt\`), $EPOCHS epoch(s) of $TRAIN_N images, PNG shards; reps $REPS, interleaved"
echo

once() {  # source -> images/s
  local src=$1 job run=$TMP/run-$1
  job=$ROOT/jobs/fashion_cnn_allreduce.pbtxt
  [[ $src == IDX ]] || job=$TMP/$src.pbtxt
  rm -rf "$run"
  POLIS_NO_BUILD=1 POLIS_BUILD_DIR=$BUILD "$ROOT/launch/polis-run" --hosts "$a1:1,$a2:$WORKERS" --net "$net" \
    --rsh-agent "$TMP/cluster/rsh" --workers "$WORKERS" --epochs "$EPOCHS" --registry "$TMP/reg" \
    --run-dir "$run" "$job" -- --train-limit "$TRAIN_N" >"$run.log" 2>&1 || { cat "$run.log" >&2; return 1; }
  $PY -c "import json; print(f\"{json.load(open('$run/result.json'))['images_per_second']:.1f}\")"
}
declare -A R
sources=(IDX LOCAL COORDINATOR)
for ((rep = 0; rep < REPS; rep++)); do
  for i in "${!sources[@]}"; do
    s=${sources[$(( (i + rep) % 3 ))]}
    echo "rep $((rep + 1))/$REPS: $s" >&2
    R[$s]+="$(once "$s") " || { echo "$s failed" >&2; exit 1; }
  done
done
median() { $PY -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" $1; }
echo "| source | images/s (median) | runs |"
echo "|---|---:|---|"
for s in "${sources[@]}"; do echo "| $s | $(median "${R[$s]}") | ${R[$s]}|"; done
echo
echo "COORDINATOR / LOCAL: $($PY -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" \
  "$(median "${R[COORDINATOR]}")" "$(median "${R[LOCAL]}")")"
