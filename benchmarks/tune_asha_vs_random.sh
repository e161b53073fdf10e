#!/usr/bin/env bash
# tune_asha_vs_random.sh: ASHA against random search with the same epoch
# budget, on the seed CNN and Fashion-MNIST (docs/benchmarks.md, "Tuning:
# ASHA against random search").
#
#   benchmarks/tune_asha_vs_random.sh [--reps R] [--trials N] [--max-epochs E]
#       [--seed S] [--train-limit N] [--parallel K] [--slots S] [--out DIR]
#
# Each repetition r (seed S + r) runs two studies of jobs/fashion_cnn_tune.pbtxt
# (54000 training images, 6000 held out for validation, 1 worker a trial),
# both with the RANDOM sampler and the same seed, over learning rate
# (log-uniform 1e-4..3e-2), batch size (32, 64, 128), optimizer (ADAM, ADAMW,
# SGD) and weight decay (uniform 0..5e-4), objective val_accuracy:
#   random: N trials, each trained E epochs (N*E epochs in all);
#   ASHA:   eta 3, grace 1, max E epochs, budget.max_epochs_total N*E.
# Every trial publishes its best-validation epoch (restore_best); its test
# accuracy is evaluated once, on that model. Per repetition the script prints
# random search's best val_accuracy, the epochs (in the order they ended)
# each study needed to reach it, and the test accuracy of each study's
# published best model; then the medians. The studies stay under --out.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${POLIS_BUILD_DIR:-$ROOT/build}
reps=3 trials=12 max_epochs=12 seed=11 train_limit=0 parallel=2 slots=$(nproc) out=""
while (($#)); do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --trials) trials=$2; shift 2 ;;
    --max-epochs) max_epochs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --train-limit) train_limit=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tune_asha_vs_random: unknown option '$1'" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp -d /tmp/polis-tune-bench-XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
[[ -x "$BUILD/launch/polis-tune" ]] || { echo "tune_asha_vs_random: build polis-tune first (launch/build.sh)" >&2; exit 2; }
command="benchmarks/tune_asha_vs_random.sh --reps $reps --trials $trials --max-epochs $max_epochs --seed $seed --train-limit $train_limit --parallel $parallel --slots $slots"
echo "command: $command"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# The base job: the tuning job with its Adam-only settings left to their
# defaults (so an SGD trial is a valid job), its best-validation epoch
# published, and the registry under --out.
limit=""
((train_limit > 0)) && limit="  train_limit: $train_limit\n"
sed -e '/^optimizer {/c\optimizer { type: ADAM learning_rate: 0.001 }' \
    -e "s|^training {.*|training { batch_size: 32 epochs: $max_epochs seed: 42 early_stopping { metric: \"val_accuracy\" mode: MAX patience: 1000000 } restore_best: true }|" \
    -e "s|^  scale: |${limit}  scale: |" \
    -e "s|^registry .*|registry { root: \"$out/registry\" model_name: \"bench_cnn\" }|" \
    "$ROOT/jobs/fashion_cnn_tune.pbtxt" > "$out/base.pbtxt"
grep -q "restore_best: true" "$out/base.pbtxt" || { echo "tune_asha_vs_random: could not edit the base job" >&2; exit 1; }

study() {  # file name seed scheduler budget
  cat > "$1" <<STUDY
name: "$2"
base_job: "base.pbtxt"
param { field: "optimizer.learning_rate" log_uniform { min: 1e-4 max: 3e-2 } }
param { field: "training.batch_size" choice { value: "32" value: "64" value: "128" } }
param { field: "optimizer.type" choice { value: "ADAM" value: "ADAMW" value: "SGD" } }
param { field: "optimizer.weight_decay" uniform { min: 0 max: 5e-4 } }
sampler: RANDOM
seed: $3
scheduler { $4 max_epochs: $max_epochs }
objective { metric: "val_accuracy" direction: MAXIMIZE }
budget { $5 }
workers: 1
model_name: "$2"
best_alias: "best"
STUDY
}

echo
echo "| rep (seed) | random: best val_acc | random: epochs to it / all | ASHA: epochs to it / all | ASHA ÷ random's epochs | ASHA: best val_acc | test_acc of best (random / ASHA) | wall s (random / ASHA) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
rows=()
for ((r = 0; r < reps; r++)); do
  s=$((seed + r))
  study "$out/random-$s.pbtxt" "random_$s" "$s" "type: NONE" "max_trials: $trials"
  study "$out/asha-$s.pbtxt" "asha_$s" "$s" "type: ASHA reduction_factor: 3 grace_period: 1" \
    "max_epochs_total: $((trials * max_epochs))"
  walls=()
  for kind in random asha; do
    rm -rf "$out/studies/$kind-$s"
    start=$(date +%s.%N)
    "$BUILD/launch/polis-tune" --parallel "$parallel" --slots "$slots" --study-dir "$out/studies/$kind-$s" \
      "$out/$kind-$s.pbtxt" > "$out/$kind-$s.log" 2>&1 ||
      { echo "tune_asha_vs_random: study $kind-$s failed; see $out/$kind-$s.log" >&2; exit 1; }
    walls+=("$(echo "$(date +%s.%N) - $start" | bc)")
  done
  row=$(python3 "$ROOT/benchmarks/tune_compare.py" "$out/studies/random-$s" "$out/studies/asha-$s" \
    "$r ($s)" "${walls[0]}" "${walls[1]}")
  echo "$row"
  rows+=("$row")
done
printf '%s\n' "${rows[@]}" > "$out/rows.md"
python3 "$ROOT/benchmarks/tune_compare.py" --medians "$out/rows.md"
echo
echo "studies in $out/studies (study.csv, curves.png, params.png)"
