#!/usr/bin/env bash
# tune_bike_lstm.sh: an ASHA study of the bike-demand LSTM against the
# untuned job (docs/benchmarks.md, "Tuning the bike-demand LSTM").
#
#   benchmarks/tune_bike_lstm.sh [--budget EPOCHS] [--max-epochs E] [--seed S]
#       [--parallel K] [--slots S] [--out DIR]
#
# In one run, on the UCI bike-sharing hourly data:
#   1. the untuned job as shipped (jobs/bike_demand_lstm.pbtxt, all-reduce,
#      2 workers, 6 epochs, test = the last 3 months);
#   2. the same settings with the 2 months before the test months held out
#      for validation: the untuned model on the study's split;
#   3. an ASHA study (eta 3, grace 2, max E epochs, budget.max_epochs_total
#      EPOCHS) on that split over learning rate (log-uniform 3e-4..1e-2),
#      batch size (16, 32, 64), LSTM width (32, 64, 128) and weight decay
#      (uniform 0..1e-4), objective val_mae, each trial publishing its best
#      validation epoch; its test MAE is evaluated once, on that model;
#   4. the refit: the best trial's settings and epoch count trained on
#      training and validation months together (the shipped job's split).
# Every job runs 2 workers, as the shipped one. Prints the test MAE (bikes
# per hour) of the four and the tuned settings.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${POLIS_BUILD_DIR:-$ROOT/build}
budget=90 max_epochs=18 seed=1 parallel=1 slots=3 out=""
while (($#)); do
  case "$1" in
    --budget) budget=$2; shift 2 ;;
    --max-epochs) max_epochs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tune_bike_lstm: unknown option '$1'" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp -d /tmp/polis-tune-bike-XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
[[ -x "$BUILD/launch/polis-tune" ]] || { echo "tune_bike_lstm: build polis-tune first (launch/build.sh)" >&2; exit 2; }
csv=${POLIS_BIKE_CSV:-$(cd "$ROOT/../shared/data/bike-sharing" 2>/dev/null && pwd)/hour.csv}
[[ -r "$csv" ]] || { echo "tune_bike_lstm: no bike-sharing hour.csv at $csv (set POLIS_BIKE_CSV)" >&2; exit 2; }
echo "command: benchmarks/tune_bike_lstm.sh --budget $budget --max-epochs $max_epochs --seed $seed --parallel $parallel --slots $slots"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

export POLIS_BUILD_DIR=$BUILD POLIS_NO_BUILD=1
test_mae() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(f"{r[\"test_mae\"]:.2f}")' "$1"; }

# 1. The job as shipped.
sed -e "s|^    path: .*|    path: \"$csv\"|" \
    -e "s|^registry .*|registry { root: \"$out/registry\" model_name: \"bike_untuned\" }|" \
    "$ROOT/jobs/bike_demand_lstm.pbtxt" > "$out/untuned.pbtxt"
"$ROOT/launch/polis-run" --workers 2 --sync allreduce --run-dir "$out/untuned" "$out/untuned.pbtxt" \
  > "$out/untuned.log" 2>&1 || { echo "tune_bike_lstm: the untuned job failed; see $out/untuned.log" >&2; exit 1; }

# 2. The study's base job: all-reduce, a validation split, best epoch kept.
sed -e "s|^    test_months: 3|    test_months: 3\n    validation_months: 2|" \
    -e "s|^sync .*|sync { mode: ALLREDUCE servers: 0 }|" \
    -e "s|^training {.*|training { batch_size: 32 epochs: 6 seed: 7 eval_batch_size: 256 early_stopping { metric: \"val_mae\" mode: MIN patience: 1000000 } restore_best: true }|" \
    -e "s|^registry .*|registry { root: \"$out/registry\" model_name: \"bike_base\" }|" \
    "$out/untuned.pbtxt" > "$out/base.pbtxt"
grep -q "validation_months: 2" "$out/base.pbtxt" && grep -q "restore_best: true" "$out/base.pbtxt" ||
  { echo "tune_bike_lstm: could not edit the base job" >&2; exit 1; }
"$ROOT/launch/polis-run" --workers 2 --run-dir "$out/base" "$out/base.pbtxt" > "$out/base.log" 2>&1 ||
  { echo "tune_bike_lstm: the base job failed; see $out/base.log" >&2; exit 1; }

# 3. The study.
cat > "$out/study.pbtxt" <<STUDY
name: "bike_lstm_asha"
base_job: "base.pbtxt"
param { field: "optimizer.learning_rate" log_uniform { min: 3e-4 max: 1e-2 } }
param { field: "training.batch_size" choice { value: "16" value: "32" value: "64" } }
param { field: "model.layer[0].recurrent_param.hidden_size" choice { value: "32" value: "64" value: "128" } }
param { field: "optimizer.weight_decay" uniform { min: 0 max: 1e-4 } }
sampler: RANDOM
seed: $seed
scheduler { type: ASHA reduction_factor: 3 grace_period: 2 max_epochs: $max_epochs }
objective { metric: "val_mae" direction: MINIMIZE }
budget { max_epochs_total: $budget }
workers: 2
model_name: "bike_tuned"
best_alias: "best"
STUDY
start=$(date +%s)
"$BUILD/launch/polis-tune" --parallel "$parallel" --slots "$slots" --study-dir "$out/study" "$out/study.pbtxt" \
  > "$out/study.log" 2>&1 || { echo "tune_bike_lstm: the study failed; see $out/study.log" >&2; exit 1; }
wall=$(($(date +%s) - start))

# 4. The refit: the best trial's job without the validation split, for the
# epochs its best model had.
best_dir=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(next(t["run_dir"] for t in s["trials"] if t["id"] == s["best"]["trial"]))' "$out/study/study.json")
best_epoch=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("published_epoch") or r["epochs"])' "$best_dir/result.json")
sed -e '/^ *validation_months:/d' -e '/^ *restore_best:/d' -e '/^ *early_stopping {/,/^ *}/d' \
    -e 's/^  model_name: .*/  model_name: "bike_refit"/' "$best_dir/job.pbtxt" > "$out/refit.pbtxt"
"$ROOT/launch/polis-run" --workers 2 --epochs "$best_epoch" --run-dir "$out/refit" "$out/refit.pbtxt" \
  > "$out/refit.log" 2>&1 || { echo "tune_bike_lstm: the refit failed; see $out/refit.log" >&2; exit 1; }

python3 - "$out" "$wall" <<'PY'
import json, os, sys
out, wall = sys.argv[1], sys.argv[2]
study = json.load(open(os.path.join(out, "study", "study.json")))
best = study["best"]
trial = next(t for t in study["trials"] if t["id"] == best["trial"])
res = json.load(open(os.path.join(trial["run_dir"], "result.json")))
untuned = json.load(open(os.path.join(out, "untuned", "result.json")))
base = json.load(open(os.path.join(out, "base", "result.json")))
print()
print("| model | split (train / validation / test) | epochs | test MAE | RMSE | MAPE % |")
print("|---|---|---:|---:|---:|---:|")
print(f"| untuned job as shipped (2 workers) | all but last 3 months / — / last 3 | {untuned['epochs']} | "
      f"{untuned['test_mae']:.2f} | {untuned['test_rmse']:.2f} | {untuned['test_mape']:.1f} |")
print(f"| untuned settings, best val epoch | … / 2 months / last 3 | {base['published_epoch']} of {base['epochs']} | "
      f"{base['test_mae']:.2f} | {base['test_rmse']:.2f} | {base['test_mape']:.1f} |")
print(f"| tuned: trial {best['trial']} of {len(study['trials'])} (ASHA) | … / 2 months / last 3 | "
      f"{res.get('published_epoch', res['epochs'])} of {res['epochs']} | {res['test_mae']:.2f} | {res['test_rmse']:.2f} | "
      f"{res['test_mape']:.1f} |")
refit = json.load(open(os.path.join(out, "refit", "result.json")))
print(f"| tuned, refit on training + validation months | all but last 3 months / — / last 3 | {refit['epochs']} | "
      f"{refit['test_mae']:.2f} | {refit['test_rmse']:.2f} | {refit['test_mape']:.1f} |")
print()
print(f"study: {len(study['trials'])} trials, {study['epochs_total']} epochs, {wall} s; best val_mae {best['value']:.2f}")
print("tuned settings: " + " ".join(f"{k}={v}" for k, v in trial["params"].items()))
PY
echo "study in $out/study (study.csv, curves.png, params.png)"
