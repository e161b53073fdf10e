#!/usr/bin/env bash
# chaos.sh: the kill matrix (docs/benchmarks.md, "Kill matrix").
#
#   benchmarks/chaos.sh [--trials N] [--modes ps,allreduce] [--seed S] [--out DIR]
#                       [--no-special]
#
# Each trial trains the seed CNN on a Fashion-MNIST subset (6000 training,
# 1000 test images, 2 epochs, a checkpoint every 10 steps, all kept) under
# `polis-run --max-restarts 2` with POLIS_TEST_SAMPLE_LOG set, and SIGKILLs
# one rank of a random role (coordinator, server, worker) at a random time
# while it trains. It checks and reports:
#   - the failure is named: the launcher's record (RUN/restarts.jsonl) names
#     the killed rank and its role, and how long after the kill;
#   - the job resumes by itself and ends with exit 0;
#   - every training sample is seen exactly once per epoch, counting only
#     samples whose gradients are in what the final model grew from
#     (benchmarks/chaos/check_run.py explains the rule: a checkpoint's
#     `consumed` ranges for its unfinished epoch, whole epochs from the
#     attempts that finished them, then the last attempt's log);
#   - the final test accuracy is within 0.5 points of a clean run with the
#     same settings (one per mode, run first);
#   - every checkpoint manifest reads and every registry version verifies
#     (`polis-registry verify`).
# Then, unless --no-special, per mode: a coordinator killed while it
# publishes (no partial version may be visible; the restart publishes), and
# a checkpoint onto a full disk (a 2 MiB tmpfs over RUN/checkpoints, which
# holds one checkpoint: a clear error, the previous checkpoint intact).
#
# Prints a markdown table and a summary; RANDOM is seeded with --seed, so
# the same seed picks the same victims and times. Needs root for the tmpfs;
# run alone (one MPI job at a time on a shared machine).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${POLIS_BUILD_DIR:-$ROOT/build}
CHECK=$ROOT/benchmarks/chaos/check_run.py

trials=20 modes=ps,allreduce seed=1 out="" special=1
while (($#)); do
  case "$1" in
    --trials) trials=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-special) special=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$trials" =~ ^[0-9]+$ ]] || { echo "chaos.sh: --trials must be a whole number" >&2; exit 2; }
IFS=, read -r -a mode_list <<<"$modes"
for m in "${mode_list[@]}"; do
  [[ "$m" == ps || "$m" == allreduce ]] || { echo "chaos.sh: --modes: ps or allreduce, got '$m'" >&2; exit 2; }
done
for b in launch/polis-train registry/polis-registry launch/polisctl; do
  [[ -x "$BUILD/$b" ]] || { echo "chaos.sh: $BUILD/$b is not built (POLIS_BUILD_DIR)" >&2; exit 2; }
done
RANDOM=$seed
out=${out:-$(mktemp -d /tmp/polis-chaos-XXXXXX)}
mkdir -p "$out"

WORKERS=2 SERVERS=1 TRAIN=6000 TEST=1000 EPOCHS=2 DATA_SEED=42
job=$out/chaos.pbtxt
sed "s/training { batch_size: 32 epochs: 5 seed: 42 }/training { batch_size: 32 epochs: $EPOCHS seed: $DATA_SEED checkpoint_every_steps: 10 keep_checkpoints: 1000 }/" \
  "$ROOT/jobs/fashion_cnn.pbtxt" >"$job"
grep -q keep_checkpoints "$job" || { echo "chaos.sh: jobs/fashion_cnn.pbtxt changed; update the training line here" >&2; exit 2; }

mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done
  [[ -n "${job_pid:-}" ]] && kill -TERM "$job_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
servers_of() { [[ "$1" == ps ]] && echo "$SERVERS" || echo 0; }

# PIDs of the job's ranks by rank (as tests/integration/shell.h RankPids):
# prints "rank pid" lines.
rank_pids() {  # run_dir
  local p r
  for p in $(pgrep -f "polis-train .*--run-dir $1( |$)" || true); do
    r=$({ tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p' || true)
    [[ -n "$r" ]] && echo "$r $p"
  done
  return 0
}

# Starts one job in the background: job_pid, its directory layout under $1.
start_job() {  # trial_dir mode [extra polis-run options]
  local dir=$1 mode=$2; shift 2
  mkdir -p "$dir/samples"
  local sync=(--servers "$(servers_of "$mode")")
  [[ "$mode" == allreduce ]] && sync+=(--sync allreduce)
  POLIS_TEST_SAMPLE_LOG=$dir/samples POLIS_NO_BUILD=1 POLIS_BUILD_DIR=$BUILD \
    "$ROOT/launch/polis-run" --workers "$WORKERS" "${sync[@]}" "$@" --registry "$dir/registry" \
    --run-dir "$dir/run" "$job" -- --train-limit "$TRAIN" --test-limit "$TEST" >"$dir/out.log" 2>&1 &
  job_pid=$!
}

# Waits for the job; its exit code in rc (124 after a 300 s limit: killed).
wait_job() {
  local i
  rc=0
  for ((i = 0; i < 3000; ++i)); do
    kill -0 "$job_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$job_pid" 2>/dev/null; then
    kill -TERM "$job_pid"; sleep 5; kill -KILL "$job_pid" 2>/dev/null || true
    wait "$job_pid" 2>/dev/null || true; job_pid=""; rc=124; return
  fi
  wait "$job_pid" || rc=$?
  job_pid=""
}

# Seconds since training began: the first sample log line.
wait_training() {  # trial_dir -> 0 once training, 1 if the job ended first
  local i
  for ((i = 0; i < 1200; ++i)); do
    kill -0 "$job_pid" 2>/dev/null || return 1
    compgen -G "$1/samples/worker-*.log" >/dev/null && [[ -n "$(cat "$1"/samples/worker-*.log 2>/dev/null | head -c1)" ]] && return 0
    sleep 0.05
  done
  return 1
}

accuracy() { jq -r '.test_accuracy // empty' "$1/run/result.json" 2>/dev/null || true; }

# Every version in the trial's registry verifies; prints "ok N" or what failed.
registry_check() {  # trial_dir
  local reg=$1/registry v bad="" n=0
  [[ -d "$reg/fashion_cnn" ]] || { echo "ok 0"; return; }
  for v in $(ls "$reg/fashion_cnn" | grep -E '^[0-9]+$' || true); do
    n=$((n + 1))
    "$BUILD/registry/polis-registry" verify --root "$reg" fashion_cnn "$v" >/dev/null 2>&1 || bad+=" v$v"
  done
  # Anything else under the model that looks like a version (a partial one).
  local other
  other=$(ls -A "$reg/fashion_cnn" | grep -vE '^[0-9]+$|^aliases\.json$|^history\.jsonl$' || true)
  if [[ -n "$bad" ]]; then echo "bad:$bad"; elif [[ -n "$other" ]]; then echo "ok $n (also: $(echo $other))"; else echo "ok $n"; fi
}

declare -A clean_acc missed
rows=() pass=0 fail=0 delays=()
row() { rows+=("$1"); echo "$1"; }

echo "chaos.sh: output in $out; seed $seed; build $BUILD"
echo "command: benchmarks/chaos.sh --trials $trials --modes $modes --seed $seed"

# Clean runs: the accuracy to compare with, and a check of the checker.
for mode in "${mode_list[@]}"; do
  d=$out/clean-$mode
  t0=$(now); start_job "$d" "$mode" --max-restarts 0; wait_job; t1=$(now)
  clean_acc[$mode]=$(accuracy "$d")
  c=$(python3 "$CHECK" "$d/run" "$d/samples" "$TRAIN" "$DATA_SEED" "$EPOCHS")
  printf 'clean %s: exit %s, %.0f s, test accuracy %s, exactly once %s, checkpoints %s\n' "$mode" "$rc" \
    "$(echo "$t1 - $t0" | bc)" "${clean_acc[$mode]:-none}" "$(jq -r .exactly_once <<<"$c")" "$(jq -r .checkpoints <<<"$c")"
  echo "$(echo "$t1 - $t0" | bc)" >"$d/seconds"
done

header='| # | mode | killed | at (s) | named (delay) | restarts | exit | exactly once | accuracy (Δ pts) | checkpoints | registry | verdict |'
row "$header"
row '|---|---|---|---|---|---|---|---|---|---|---|---|'

for ((t = 1; t <= trials; ++t)); do
  mode=${mode_list[$(((t - 1) % ${#mode_list[@]}))]}
  S=$(servers_of "$mode")
  roles=(coordinator worker); ((S > 0)) && roles+=(server)
  role=${roles[$((RANDOM % ${#roles[@]}))]}
  case $role in
    coordinator) victim=0 ;;
    server) victim=$((1 + RANDOM % S)) ;;
    worker) victim=$((1 + S + RANDOM % WORKERS)) ;;
  esac
  # A random moment of training: up to 80% of the clean run's length.
  span=$(cat "$out/clean-$mode/seconds" 2>/dev/null || echo 20)
  at=$(echo "scale=1; ($RANDOM % 1000) * $span * 0.8 / 1000" | bc)
  d=$out/trial-$t
  start_job "$d" "$mode" --max-restarts 2
  killed="" kill_t="" note=""
  if wait_training "$d"; then
    sleep "$at"
    pid=$(rank_pids "$d/run" | awk -v r="$victim" '$1 == r { print $2 }' | head -n1)
    if [[ -n "$pid" ]]; then
      kill_t=$(now); kill -KILL "$pid" && killed="rank $victim ($role)"
    else
      note="job ended before the kill"
    fi
  else
    note="job ended before training"
  fi
  wait_job
  c=$(python3 "$CHECK" "$d/run" "$d/samples" "$TRAIN" "$DATA_SEED" "$EPOCHS" 2>"$d/check.err" || echo '{}')
  echo "$c" >"$d/check.json"
  first=$(head -n1 "$d/run/restarts.jsonl" 2>/dev/null || true)
  named="no"
  if [[ -n "$killed" && -n "$first" ]]; then
    cause=$(jq -r .cause <<<"$first")
    delay=$(echo "$(jq -r .unix_time <<<"$first") - $kill_t" | bc)
    if [[ "$cause" == *"rank $victim ($role)"* ]]; then
      named=$(printf 'yes (%.1f s)' "$delay"); delays+=("$delay")
    else
      named="no: ${cause:0:60}"
    fi
  fi
  acc=$(accuracy "$d")
  base=${clean_acc[$mode]:-}
  dacc="–"; acc_ok=0
  if [[ -n "$acc" && -n "$base" ]]; then
    dacc=$(echo "scale=2; ($acc - $base) * 100 / 1" | bc)
    (($(echo "${dacc#-} <= 0.5" | bc))) && acc_ok=1
  fi
  once=$(jq -r '.exactly_once // false' <<<"$c")
  nbad=$(jq -r '(.checkpoints_bad // []) | length' <<<"$c")
  ncp=$(jq -r '.checkpoints // 0' <<<"$c")
  restarts=$(jq -r '.restarts // 0' <<<"$c")
  reg=$(registry_check "$d")
  cps="$ncp ok"; ((nbad == 0)) || cps+=" / $nbad bad"
  verdict=pass
  [[ -n "$killed" && "$named" == yes* && "$rc" == 0 && "$once" == true && $acc_ok == 1 && "$nbad" == 0 && "$reg" == ok* ]] || verdict=FAIL
  [[ -n "$killed" ]] || verdict="skip ($note)"
  if [[ "$verdict" == FAIL ]]; then
    [[ "$named" == yes* ]] || missed[named]=$((${missed[named]:-0} + 1))
    [[ "$rc" == 0 ]] || missed[exit]=$((${missed[exit]:-0} + 1))
    [[ "$once" == true ]] || missed[once]=$((${missed[once]:-0} + 1))
    ((acc_ok)) || missed[accuracy]=$((${missed[accuracy]:-0} + 1))
    [[ "$nbad" == 0 ]] || missed[checkpoints]=$((${missed[checkpoints]:-0} + 1))
    [[ "$reg" == ok* ]] || missed[registry]=$((${missed[registry]:-0} + 1))
  fi
  [[ "$verdict" == pass ]] && pass=$((pass + 1))
  [[ "$verdict" == FAIL ]] && fail=$((fail + 1))
  [[ "$verdict" == FAIL ]] && echo "$d: $(grep -h '^polis-run:\|^polis-train:' "$d/out.log" | tail -n3 | tr '\n' ' ')" >>"$out/failures.txt"
  row "| $t | $mode | ${killed:-–} | $at | $named | $restarts | $rc | $once | ${acc:-–} ($dacc) | $cps | $reg | $verdict |"
done

special_rows=()
srow() { special_rows+=("$1"); echo "$1"; }
if ((special)); then
  srow '| mode | fault | what happened | exit | registry | checkpoints | verdict |'
  srow '|---|---|---|---|---|---|---|'
  for mode in "${mode_list[@]}"; do
    # The coordinator killed while it writes and verifies model.polis, and
    # while the registry receives the version.
    for when in artifact registry; do
      d=$out/publish-$when-$mode
      start_job "$d" "$mode" --max-restarts 2
      pid="" hit=""
      for ((i = 0; i < 12000; ++i)); do
        kill -0 "$job_pid" 2>/dev/null || break
        if [[ -z "$pid" ]]; then pid=$(rank_pids "$d/run" | awk '$1 == 0 { print $2 }'); fi
        if [[ $when == artifact ]]; then compgen -G "$d/run/model.polis*" >/dev/null && hit=1
        else [[ -n "$(ls -A "$d/registry/fashion_cnn" 2>/dev/null)" ]] && hit=1; fi
        if [[ -n "$hit" && -n "$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
        sleep 0.01
      done
      wait_job
      what=$(jq -r '.cause' "$d/run/restarts.jsonl" 2>/dev/null | head -n1 || true)
      reg=$(registry_check "$d")
      c=$(python3 "$CHECK" "$d/run" "$d/samples" "$TRAIN" "$DATA_SEED" "$EPOCHS" 2>/dev/null || echo '{}')
      nbad=$(jq -r '(.checkpoints_bad // []) | length' <<<"$c")
      v=pass; [[ "$rc" == 0 && "$reg" == ok* && "$nbad" == 0 && -n "$hit" ]] || v=FAIL
      srow "| $mode | coordinator killed during publishing ($when) | ${what:-not killed (publishing was over)}; $(grep -ch '^published' "$d/out.log") publish(es) | $rc | $reg | $(jq -r .checkpoints <<<"$c") ok / $nbad bad | $v |"
    done
    # A full disk under the checkpoints: one fits, the second cannot.
    d=$out/disk-$mode
    mkdir -p "$d/run/checkpoints"
    if mount -t tmpfs -o size=2m polis-chaos "$d/run/checkpoints" 2>/dev/null; then
      mounted+=("$d/run/checkpoints")
      start_job "$d" "$mode" --max-restarts 0
      wait_job
      err=$(grep -hiE 'no space|ENOSPC|RESOURCE_EXHAUSTED|space left' "$d/out.log" | head -n1 | cut -c1-160 || true)
      c=$(python3 "$CHECK" "$d/run" "$d/samples" "$TRAIN" "$DATA_SEED" "$EPOCHS" 2>/dev/null || echo '{}')
      ncp=$(jq -r '.checkpoints // 0' <<<"$c"); nbad=$(jq -r '(.checkpoints_bad // []) | length' <<<"$c")
      resumable=no
      POLIS_NO_BUILD=1 "$BUILD/launch/polis-train" --check "$d/run/job.pbtxt" --resume "$d/run" --servers "$(servers_of "$mode")" \
        $([[ $mode == allreduce ]] && echo --sync allreduce) --train-limit "$TRAIN" --test-limit "$TEST" >/dev/null 2>&1 && resumable=yes
      v=pass; [[ "$rc" != 0 && -n "$err" && "$ncp" -ge 1 && "$nbad" == 0 && $resumable == yes ]] || v=FAIL
      # A mode that writes no checkpoint yet never fills the disk.
      [[ "$rc" == 0 && "$ncp" == 0 ]] && v="n/a (no checkpoint written in this mode)"
      srow "| $mode | 2 MiB tmpfs under checkpoints/ | ${err:-no clear error}; resumable: $resumable | $rc | $(registry_check "$d") | $ncp ok / $nbad bad | $v |"
      umount "$d/run/checkpoints" && mounted=("${mounted[@]/$d\/run\/checkpoints/}")
    else
      srow "| $mode | 2 MiB tmpfs under checkpoints/ | could not mount a tmpfs (needs root) | – | – | – | skip |"
    fi
  done
fi

echo
echo "## Kill matrix ($(date -u +%Y-%m-%d), seed $seed)"
echo
printf '%s\n' "${rows[@]}"
if ((${#special_rows[@]})); then echo; printf '%s\n' "${special_rows[@]}"; fi
echo
med="–"
if ((${#delays[@]})); then med=$(printf '%s\n' "${delays[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]}'); fi
echo "summary: $pass passed, $fail failed of $trials trials; median time from kill to the launcher's record ${med} s; clean accuracy $(for m in "${mode_list[@]}"; do printf '%s %s ' "$m" "${clean_acc[$m]:-none}"; done)"
if [[ -n "${missed[*]-}" ]]; then
  echo "failed checks (trials): $(for k in "${!missed[@]}"; do printf '%s %s; ' "$k" "${missed[$k]}"; done)"
fi
[[ -f "$out/failures.txt" ]] && { echo "failures:"; cat "$out/failures.txt"; }
((fail == 0))
