#!/usr/bin/env bash
# Wall time to a Fashion-MNIST test accuracy (default 0.88) with 2 hosts x 2
# workers on an emulated cluster (launch/cluster/emucluster: network
# namespaces, real TCP, links capped with tc tbf, default 100 Mbit/s), side
# by side in one invocation: Polis parameter servers (BSP, 2 servers, one a
# host), Polis all-reduce (fp32 wire), Polis all-reduce with a bf16 wire,
# Polis all-reduce with local SGD (bf16 wire, parameters averaged every
# --local-steps steps: docs/design/local-sgd.md), Polis all-reduce with
# delayed averaging (bf16 wire; each step's sums travel while the next
# step computes: docs/design/delayed-averaging.md), and PyTorch DDP (gloo, 2
# processes a host, 1 thread each, per-rank batch 32, Adam, same network:
# benchmarks/ddp_fashion.py --nodes 2). Rows are
# repeated --reps times in interleaved order; the table gives each row's
# median and its ratio to DDP's median.
#
# Polis' time is the coordinator's elapsed time at the end of the first
# epoch whose test accuracy reaches the target (metrics.jsonl), evaluation
# included; DDP's likewise (rank 0 evaluates the whole test set each epoch).
#
# Usage: benchmarks/time_to_accuracy_hosts.sh [--build DIR] [--target ACC]
#          [--epochs N] [--rate 100mbit|1gbit|none] [--reps R] [--quick]
#          [--local-steps H] [--rows LIST]
#   --rows LIST   only these rows, by number from 1 (e.g. 5,6: delayed
#             averaging and DDP); the ÷ DDP column needs row 6
#   --local-steps H   the local-SGD row averages parameters every H steps
#             (sync.local_steps; default 8)
#   --quick   1 rep, 2 epochs, 12000 training images, target 0.80 (a smoke
#             test of the whole path; its figures mean little)
# Needs root (network namespaces), iproute2, and Debian's python3 with torch.
# Exit codes: 0 done, 1 a run failed, 2 usage or a missing prerequisite,
# 3 namespaces cannot be made here.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build TARGET=0.88 EPOCHS=6 RATE=100mbit REPS=1 QUICK=0 LOCAL_STEPS=8 ROWS=1,2,3,4,5,6
ARGS=("$@")
while (($#)); do
  case "$1" in
    --build) BUILD=${2:?--build needs a directory}; shift 2 ;;
    --target) TARGET=${2:?--target needs a value}; shift 2 ;;
    --epochs) EPOCHS=${2:?--epochs needs a value}; shift 2 ;;
    --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
    --reps) REPS=${2:?--reps needs a value}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --local-steps) LOCAL_STEPS=${2:?--local-steps needs a value}; shift 2 ;;
    --rows) ROWS=${2:?--rows needs a list}; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "time_to_accuracy_hosts: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
LIMIT=()  # the same for polis-train and ddp_fashion.py
if ((QUICK)); then REPS=1 EPOCHS=2 TARGET=0.80 LIMIT=(--train-limit 12000); fi
PY=/usr/bin/python3
$PY -c 'import torch' 2>/dev/null || { echo "PyTorch missing: run launch/install-deps.sh bench" >&2; exit 2; }
[[ -x "$BUILD/launch/polis-train" ]] || { echo "no polis-train in $BUILD (build first)" >&2; exit 2; }
TMP=$(mktemp -d)
REPO_ROOT=$ROOT
# shellcheck source=benchmarks/emu.sh
source "$ROOT/benchmarks/emu.sh"
trap 'emu_down "$TMP/cluster"; rm -rf "$TMP"' EXIT
emu_up "$TMP/cluster" --hosts 2 --slots 4 --rate "$RATE"
a1=$(jq -r '.[0].address' "$TMP/cluster/hosts.json")
a2=$(jq -r '.[1].address' "$TMP/cluster/hosts.json")
net=${a1%.*}.0/24
TUNABLES="glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=67108864"

echo "## Time to $TARGET Fashion-MNIST test accuracy, 2 hosts x 2 workers, links $RATE"
echo
echo "- Command: \`benchmarks/time_to_accuracy_hosts.sh ${ARGS[*]}\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); emulated hosts $a1 and $a2 share these cores"
echo

# One Polis run: prints "seconds epochs final_acc" (seconds "nan" if the
# target was not reached).
polis_once() {  # hosts servers job run
  local hosts=$1 servers=$2 job=$3 run=$4
  POLIS_NO_BUILD=1 POLIS_BUILD_DIR=$BUILD "$ROOT/launch/polis-run" --hosts "$hosts" --net "$net" \
    --rsh-agent "$TMP/cluster/rsh" --workers 4 --servers "$servers" --epochs "$EPOCHS" --registry "$TMP/reg" \
    --run-dir "$run" "$job" -- ${LIMIT[@]+"${LIMIT[@]}"} >"$run.log" 2>&1 || { cat "$run.log" >&2; return 1; }
  $PY - "$run/metrics.jsonl" "$TARGET" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
hit = next((r for r in rows if r["test_accuracy"] >= float(sys.argv[2])), None)
print(f'{hit["elapsed_seconds"] if hit else float("nan"):.2f} {hit["epoch"] if hit else len(rows)} {rows[-1]["test_accuracy"]:.4f}')
PYEOF
}

ddp_once() {  # run
  local run=$1 iface1 iface2
  iface1=$("$EMU" exec --dir "$TMP/cluster" h1 ip -o -4 addr show | awk -v a="$a1" 'index($4, a "/") == 1 { print $2 }')
  iface2=$("$EMU" exec --dir "$TMP/cluster" h2 ip -o -4 addr show | awk -v a="$a2" 'index($4, a "/") == 1 { print $2 }')
  local common=(--workers 2 --nodes 2 --master-addr "$a1" --epochs "$EPOCHS" --target "$TARGET" ${LIMIT[@]+"${LIMIT[@]}"})
  "$EMU" exec --dir "$TMP/cluster" h2 env GLOO_SOCKET_IFNAME="$iface2" GLIBC_TUNABLES=$TUNABLES OMP_NUM_THREADS=1 \
    $PY "$ROOT/benchmarks/ddp_fashion.py" "${common[@]}" --node-rank 1 >"$run.node1.log" 2>&1 &
  local other=$!
  "$EMU" exec --dir "$TMP/cluster" h1 env GLOO_SOCKET_IFNAME="$iface1" GLIBC_TUNABLES=$TUNABLES OMP_NUM_THREADS=1 \
    $PY "$ROOT/benchmarks/ddp_fashion.py" "${common[@]}" --node-rank 0 >"$run.json" 2>"$run.node0.log" ||
    { cat "$run.node0.log" "$run.node1.log" >&2; return 1; }
  wait "$other" || { cat "$run.node1.log" >&2; return 1; }
  $PY - "$run.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
e = next((h["epoch"] for h in d["history"] if h["test_accuracy"] >= d["target"]), len(d["history"]))
t = d["seconds_to_target"]
print(f'{t if t is not None else float("nan"):.2f} {e} {d["history"][-1]["test_accuracy"]:.4f}')
PYEOF
}

sed 's/compression: [A-Z0-9]*//; s/^sync {/sync { compression: BF16/' "$ROOT/jobs/fashion_cnn_allreduce.pbtxt" >"$TMP/allreduce_bf16.pbtxt"
grep -q 'compression: BF16' "$TMP/allreduce_bf16.pbtxt" || { echo "could not make the bf16 job" >&2; exit 1; }
sed "s/^sync {/sync { local_steps: $LOCAL_STEPS/" "$TMP/allreduce_bf16.pbtxt" >"$TMP/allreduce_local.pbtxt"
grep -q "local_steps: $LOCAL_STEPS" "$TMP/allreduce_local.pbtxt" || { echo "could not make the local-SGD job" >&2; exit 1; }
sed "s/^sync {/sync { delayed_averaging: true/; /bucket_bytes:/d" "$TMP/allreduce_bf16.pbtxt" >"$TMP/allreduce_delayed.pbtxt"
grep -q "delayed_averaging: true" "$TMP/allreduce_delayed.pbtxt" || { echo "could not make the delayed job" >&2; exit 1; }
# name | command; the hosts give each mode 2 workers a host
# (placement: coordinator first, servers spread, workers fill in host order).
names=("Polis PS BSP, 2 servers" "Polis all-reduce fp32" "Polis all-reduce bf16 wire"
       "Polis local SGD, bf16 wire, averaging every $LOCAL_STEPS steps"
       "Polis all-reduce bf16 wire, delayed averaging" "PyTorch DDP gloo")
DDP=5  # index of the reference row
run_row() {  # index rep
  local out=$TMP/r$1-$2
  case $1 in
    0) polis_once "$a1:4,$a2:3" 2 "$ROOT/jobs/fashion_cnn.pbtxt" "$out" ;;
    1) polis_once "$a1:3,$a2:2" 0 "$ROOT/jobs/fashion_cnn_allreduce.pbtxt" "$out" ;;
    2) polis_once "$a1:3,$a2:2" 0 "$TMP/allreduce_bf16.pbtxt" "$out" ;;
    3) polis_once "$a1:3,$a2:2" 0 "$TMP/allreduce_local.pbtxt" "$out" ;;
    4) polis_once "$a1:3,$a2:2" 0 "$TMP/allreduce_delayed.pbtxt" "$out" ;;
    5) ddp_once "$out" ;;
  esac
}
selected=()
IFS=, read -ra wanted <<<"$ROWS"
for r in "${wanted[@]}"; do
  [[ $r =~ ^[1-9]$ ]] && ((r <= ${#names[@]})) || { echo "time_to_accuracy_hosts: --rows: no row '$r'" >&2; exit 2; }
  selected+=($((r - 1)))
done
declare -A results
for ((rep = 0; rep < REPS; rep++)); do
  for j in "${!selected[@]}"; do
    k=${selected[$(( (j + rep) % ${#selected[@]} ))]}  # rotate the order each rep
    echo "rep $((rep + 1))/$REPS: ${names[k]}" >&2
    line=$(run_row "$k" "$rep") || { echo "${names[k]} failed" >&2; exit 1; }
    results[$k]+="$line;"
  done
done

echo "| run | median s to $TARGET | ÷ DDP | epochs | final test acc | runs (s) |"
echo "|---|---:|---:|---:|---:|---|"
ddp_median=nan
[[ -n ${results[$DDP]:-} ]] &&
  ddp_median=$($PY -c 'import statistics,sys; v=[float(x.split()[0]) for x in sys.argv[1].split(";") if x]; print(statistics.median(v))' "${results[$DDP]}")
for i in "${selected[@]}"; do
  $PY - "${names[i]}" "${results[$i]}" "$ddp_median" <<'PYEOF'
import math, statistics, sys
name, runs, ddp = sys.argv[1], [r.split() for r in sys.argv[2].split(";") if r], float(sys.argv[3])
secs = [float(r[0]) for r in runs]
med = statistics.median(secs)
ratio = f"{med / ddp:.2f}" if not (math.isnan(med) or math.isnan(ddp)) else "–"
print(f"| {name} | {'not reached' if math.isnan(med) else f'{med:.1f}'} | {ratio} | {runs[-1][1]} | {runs[-1][2]} | {', '.join(r[0] for r in runs)} |")
PYEOF
done
