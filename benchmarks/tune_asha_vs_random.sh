#!/usr/bin/env bash
# tune_asha_vs_random.sh: the same random search with and without ASHA
# (docs/benchmarks.md, "Tuning: ASHA against random search").
#
#   benchmarks/tune_asha_vs_random.sh [--trials N] [--max-epochs E] [--train-limit N]
#                                      [--parallel K] [--slots S] [--out DIR]
#
# Two studies of the all-reduce seed CNN (jobs/fashion_cnn_allreduce.pbtxt)
# on a Fashion-MNIST subset, 1 worker a trial, the same RANDOM sampler and
# seed (so the same N trials: learning rate log-uniform in [1e-4, 1e-2],
# batch size 32/64/128): one with no early stopping (every trial trains
# E epochs), one with ASHA (eta 3, grace 1 epoch, max E). Prints, for each:
# wall seconds, epochs trained in all, the best test_accuracy and its trial,
# and which trial each found. Both studies' directories stay under --out.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${POLIS_BUILD_DIR:-$ROOT/build}
trials=9 max_epochs=9 train_limit=6000 parallel=2 slots=$(nproc) out=""
while (($#)); do
  case "$1" in
    --trials) trials=$2; shift 2 ;;
    --max-epochs) max_epochs=$2; shift 2 ;;
    --train-limit) train_limit=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tune_asha_vs_random: unknown option '$1'" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp -d /tmp/polis-tune-bench-XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
[[ -x "$BUILD/launch/polis-tune" ]] || { echo "tune_asha_vs_random: build polis-tune first (launch/build.sh)" >&2; exit 2; }

sed -e "s|^name: .*|name: \"bench_cnn\"|" \
    -e "s|^  scale: |  train_limit: $train_limit test_limit: 1000\n  scale: |" \
    -e "s|^registry .*|registry { root: \"$out/registry\" model_name: \"bench_cnn\" }|" \
    "$ROOT/jobs/fashion_cnn_allreduce.pbtxt" > "$out/base.pbtxt"
grep -q "train_limit: $train_limit" "$out/base.pbtxt" || { echo "tune_asha_vs_random: could not set train_limit" >&2; exit 1; }

study() {  # name scheduler
  cat > "$out/$1.pbtxt" <<STUDY
name: "$1"
base_job: "base.pbtxt"
param { field: "optimizer.learning_rate" log_uniform { min: 1e-4 max: 1e-2 } }
param { field: "training.batch_size" choice { value: "32" value: "64" value: "128" } }
sampler: RANDOM
seed: 11
scheduler { $2 max_epochs: $max_epochs }
objective { metric: "test_accuracy" direction: MAXIMIZE }
budget { max_trials: $trials }
workers: 1
best_alias: "best_$1"
STUDY
}
study random "type: NONE"
study asha "type: ASHA reduction_factor: 3 grace_period: 1"

echo "| study | wall s | epochs trained | best test_accuracy | best trial | trials stopped early |"
echo "|---|---|---|---|---|---|"
for s in random asha; do
  rm -rf "$out/studies/$s"
  start=$(date +%s.%N)
  "$BUILD/launch/polis-tune" --parallel "$parallel" --slots "$slots" --study-dir "$out/studies/$s" "$out/$s.pbtxt" \
    > "$out/$s.log" 2>&1 || { echo "tune_asha_vs_random: study $s failed; see $out/$s.log" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 - "$out/studies/$s/study.json" "$start" "$end" "$s" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
best = s["best"]
stopped = sum(1 for t in s["trials"] if t["state"] == "stopped")
print(f"| {sys.argv[4]} | {wall:.0f} | {s['epochs_total']} | {best['value']:.4f} | {best['trial']} ({best['epochs']} epochs) | {stopped} of {len(s['trials'])} |")
PY
done
echo
echo "command: benchmarks/tune_asha_vs_random.sh --trials $trials --max-epochs $max_epochs --train-limit $train_limit --parallel $parallel --slots $slots"
echo "studies in $out/studies (study.csv, curves.png, params.png)"
