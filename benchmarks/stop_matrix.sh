#!/usr/bin/env bash
# stop_matrix.sh: stop running jobs at random moments (docs/benchmarks.md,
# "Stop matrix").
#
#   benchmarks/stop_matrix.sh [--trials N] [--modes LIST] [--seed S] [--out DIR]
#                             [--build DIR]
#
# Each trial starts the seed CNN on 12,000 Fashion-MNIST images (3 epochs)
# with `polis-run`, waits a random 0.3–2.5 s after the coordinator is up,
# sends the coordinator SIGTERM (as `scancel`, a Slurm time limit or
# `polisctl stop --signal` do) and requires:
#   - the job ends by itself with exit 0 and result.json says "stopped"
#     (or "done", when the job finished before the stop came);
#   - it ends within POLIS_TIMEOUT_S (15 s here): a rank waiting for a peer
#     that has left would fail the job with a timeout instead;
#   - the stopped run has a complete checkpoint to resume from.
# Modes (--modes, comma-separated; default all):
#   ps          BSP, 1 server, 2 workers
#   ps-every2   BSP, 1 server, 2 workers, a checkpoint every 2 steps (one
#               is often in flight when the stop comes)
#   ps-asp      ASP, 2 servers, 2 workers
#   allreduce   all-reduce, 2 workers
#   records     BSP, 1 server, 2 workers, tar shards served by the
#               coordinator (dataset.source COORDINATOR)
# Prints a markdown table: per mode, the trials, clean stops, and the
# median and largest time from SIGTERM to the launcher's exit. RANDOM is
# seeded with --seed. Run alone (one MPI job at a time).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRIALS=20 MODES=ps,ps-every2,ps-asp,allreduce,records SEED=1 OUT="" BUILD=$ROOT/build
while (($#)); do
  case $1 in
    --trials) TRIALS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stop_matrix.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
  esac
done
[[ "$TRIALS" =~ ^[1-9][0-9]*$ ]] || { echo "stop_matrix.sh: --trials must be a positive whole number" >&2; exit 2; }
[[ -x "$BUILD/launch/polis-data" ]] || { echo "stop_matrix.sh: $BUILD/launch/polis-data not built (launch/build.sh)" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/polis-stop-matrix.XXXXXX)}
mkdir -p "$OUT"
RANDOM=$SEED
FM=${POLIS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
echo "Command: \`benchmarks/stop_matrix.sh --trials $TRIALS --modes $MODES --seed $SEED\`  "
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC')  "
echo "CPU: $(nproc) cores; work directory $OUT"
echo

# The job of each mode: jobs/fashion_cnn.pbtxt, edited.
job_for() {
  local mode=$1 job=$OUT/$1.pbtxt
  case $mode in
    ps|allreduce) cp "$ROOT/jobs/fashion_cnn.pbtxt" "$job" ;;
    ps-every2) sed 's/seed: 42 }/seed: 42 checkpoint_every_steps: 2 }/' "$ROOT/jobs/fashion_cnn.pbtxt" >"$job" ;;
    ps-asp) sed 's/consistency: BSP/consistency: ASP/; s/servers: 1/servers: 2/' "$ROOT/jobs/fashion_cnn.pbtxt" >"$job" ;;
    records)
      [[ -f "$OUT/shards/dataset.json" ]] ||
        "$BUILD/launch/polis-data" pack idx --dir "$FM" --out "$OUT/shards" --train-limit 12000 --test-limit 1000 >&2
      python3 - "$ROOT/jobs/fashion_cnn.pbtxt" "$OUT/shards" >"$job" <<'PY'
import sys
text = open(sys.argv[1]).read()
start = text.index("dataset {")
end = text.index("\n}", start) + 2
print(text[:start] + 'dataset {\n  format: SHARDS\n  dir: "%s"\n  scale: 0.00392156862745098\n  source: COORDINATOR\n}\n' % sys.argv[2] + text[end:], end="")
PY
      ;;
    *) echo "stop_matrix.sh: unknown mode '$mode' (ps, ps-every2, ps-asp, allreduce, records)" >&2; exit 2 ;;
  esac
  echo "$job"
}
cluster_for() {
  case $1 in
    allreduce) echo "--workers 2 --sync allreduce" ;;
    ps-asp) echo "--workers 2 --servers 2" ;;
    *) echo "--workers 2 --servers 1" ;;
  esac
}

# One trial: prints "ok SECONDS" or "fail SECONDS REASON".
trial() {
  local mode=$1 job=$2 run=$3 delay=$4
  rm -rf "$run"
  # shellcheck disable=SC2046  # the cluster options are split on purpose
  POLIS_TIMEOUT_S=15 "$ROOT/launch/polis-run" $(cluster_for "$mode") --registry "$OUT/registry" --run-dir "$run" \
    "$job" -- --epochs 3 --train-limit 12000 --test-limit 500 >"$run.out" 2>&1 &
  local launcher=$! k pid t0 t1 rc=0
  for ((k = 0; k < 600; k++)); do [[ -f "$run/coordinator.json" ]] && break; sleep 0.1; done
  [[ -f "$run/coordinator.json" ]] || { kill "$launcher" 2>/dev/null; wait "$launcher" || true; echo "fail 0 no coordinator.json"; return; }
  sleep "$delay"
  pid=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['pid'])" "$run/coordinator.json")
  t0=$(date +%s.%N)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$launcher" || rc=$?
  t1=$(date +%s.%N)
  local took state
  took=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  state=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1])).get('state',''))" "$run/result.json" 2>/dev/null || echo none)
  if ((rc != 0)); then
    echo "fail $took exit $rc: $(grep -m1 -E 'polis-train: rank|TIMEOUT|error' "$run.out" | cut -c1-160)"
  elif [[ "$state" == done ]]; then
    echo "ok $took finished"
  elif [[ "$state" != stopped ]]; then
    echo "fail $took result.json state '$state'"
  elif ! compgen -G "$run/checkpoints/*/manifest.json" >/dev/null; then
    echo "fail $took stopped without a complete checkpoint"
  else
    echo "ok $took stopped"
  fi
}

echo "| mode | trials | clean stops | finished first | median s to exit | max s to exit | failures |"
echo "|---|---:|---:|---:|---:|---:|---|"
IFS=, read -r -a modes <<<"$MODES"
failed=0
for mode in "${modes[@]}"; do
  job=$(job_for "$mode")
  ok=0 finished=0 times=() failures=""
  for ((i = 0; i < TRIALS; i++)); do
    centis=$((30 + RANDOM % 221))
    delay=$(printf '%d.%02d' $((centis / 100)) $((centis % 100)))
    result=$(trial "$mode" "$job" "$OUT/$mode-$i" "$delay")
    read -r verdict took rest <<<"$result"
    echo "$mode trial $i: SIGTERM after ${delay}s: $result" >&2
    times+=("$took")
    if [[ $verdict == ok ]]; then
      ok=$((ok + 1))
      [[ $rest == finished ]] && finished=$((finished + 1))
    else
      failures+="${failures:+; }trial $i: $rest"
      failed=1
    fi
  done
  read -r median max < <(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {m = NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.2f %.2f\n", m, a[NR]}')
  echo "| $mode | $TRIALS | $ok | $finished | $median | $max | ${failures:-none} |"
done
exit "$failed"
