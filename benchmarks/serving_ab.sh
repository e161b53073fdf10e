#!/usr/bin/env bash
# serving_ab.sh: two builds of polis-registry side by side under the same
# load, interleaved run by run (A, B, A, B, ...), so that a change to the
# request path is compared on the same machine in the same minutes.
# Each run is benchmarks/serving.sh (wrk against /infer, answers verified
# first) with one image a request; the table gives, per setting, the median
# over the rounds of requests/s, p50, p99 and p99.9, B ÷ A for requests/s,
# and the model's own forward time in-process (polis-bench-infer, batch 1,
# one thread, before and after the runs) as the limit. Last, the floor of a
# round trip on this machine: B's server answering GET /v2/health/live (no
# body, no model) to wrk over one connection.
#
#   benchmarks/serving_ab.sh --base BUILD_DIR [--root DIR] [--model NAME]
#                            [--duration S] [--rounds R] [--connections 1,16]
#                            [--threads 1,2] [--forms json,binary,grpc]
#                            [--max-batch 1,32] [--csv FILE]
#                            [--precision-a fp32|bf16] [--precision-b fp32|bf16]
#                            [--busy-poll-a U] [--busy-poll-b U]
#                            [--instances-a I] [--instances-b I]
#                            [--server-cpus LIST] [--load-cpus LIST]
# A is the build in BUILD_DIR (e.g. one of the commit before a change), B
# this checkout's build (POLIS_BUILD_DIR or build/). With --precision-a/-b
# the two sides serve in those precisions (`serve --precision`; default
# fp32 both), and the limit is each side's own forward pass; with
# --busy-poll-a/-b their HTTP I/O threads poll that many µs before sleeping
# (`serve --busy-poll-us`; default 0 both); with --instances-a/-b they
# serve each version as that many instances (`serve --instances`; default
# 1 both). --server-cpus and --load-cpus confine both sides' servers (and
# the in-process limit) and the load generator to those CPUs (taskset -c;
# serving.sh). When the sides differ in any of these,
# --base may be left out to compare one build with itself. Defaults: --root
# /tmp/reg-demo --model fashion_cnn --duration 5 --rounds 2 --connections 1,16
# --threads 1,2 --forms json,binary --max-batch 1 (batching off; 32 adds
# greedy batching). Forms as in serving_sweep.sh: json, binary (REST) and
# grpc (polis-grpc-load; each build's own); a time-series forecaster is
# driven with --csv FILE (its training CSV; one window a request) and the
# forms rows (REST, the raw CSV lines), tensor (REST, the FP32 window) and
# grpc (the raw lines as BYTES), default rows,grpc.
set -euo pipefail
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B_BUILD=${POLIS_BUILD_DIR:-$ROOT_DIR/build}
A_BUILD= REG=/tmp/reg-demo MODEL=fashion_cnn DUR=5 ROUNDS=2 CONNS=1,16 THREADS=1,2
FORMS= BATCHES=1 CSV= PREC_A=fp32 PREC_B=fp32 POLL_A=0 POLL_B=0 INST_A=1 INST_B=1
SERVER_CPUS= LOAD_CPUS=
ARGS="$*"
while [[ $# -gt 0 ]]; do
  case $1 in
    --base) A_BUILD=$2; shift 2 ;;
    --root) REG=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --forms) FORMS=$2; shift 2 ;;
    --max-batch) BATCHES=$2; shift 2 ;;
    --csv) CSV=$2; shift 2 ;;
    --precision-a) PREC_A=$2; shift 2 ;;
    --precision-b) PREC_B=$2; shift 2 ;;
    --busy-poll-a) POLL_A=$2; shift 2 ;;
    --busy-poll-b) POLL_B=$2; shift 2 ;;
    --instances-a) INST_A=$2; shift 2 ;;
    --instances-b) INST_B=$2; shift 2 ;;
    --server-cpus) SERVER_CPUS=$2; shift 2 ;;
    --load-cpus) LOAD_CPUS=$2; shift 2 ;;
    -h|--help) sed -n 2,39p "$0"; exit 0 ;;
    *) echo "serving_ab.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -n $CSV ]]; then FORMS=${FORMS:-rows,grpc}; else FORMS=${FORMS:-json,binary}; fi
[[ -z $A_BUILD && ($PREC_A != "$PREC_B" || $POLL_A != "$POLL_B" || $INST_A != "$INST_B") ]] &&
  A_BUILD=$B_BUILD
[[ -n $A_BUILD ]] || { echo "serving_ab.sh: --base BUILD_DIR is required (the build to compare against)" >&2; exit 2; }
for b in "$A_BUILD" "$B_BUILD"; do
  [[ -x $b/registry/polis-registry ]] || { echo "serving_ab.sh: no $b/registry/polis-registry" >&2; exit 2; }
done
[[ -x $B_BUILD/benchmarks/polis-bench-infer ]] || { echo "serving_ab.sh: build polis-bench-infer first" >&2; exit 2; }
SERVER_PIN=() PIN_FLAGS=()
[[ -z $SERVER_CPUS ]] || SERVER_PIN=(taskset -c "$SERVER_CPUS") PIN_FLAGS=(--server-cpus "$SERVER_CPUS")
[[ -z $LOAD_CPUS ]] || PIN_FLAGS+=(--load-cpus "$LOAD_CPUS")
OUT=$(mktemp -d /tmp/serving-ab.XXXXXX)
echo "command: benchmarks/serving_ab.sh $ARGS"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); A: $A_BUILD ($PREC_A, busy poll $POLL_A us, $INST_A instance(s)); B: $B_BUILD ($PREC_B, busy poll $POLL_B us, $INST_B instance(s)); servers on CPUs ${SERVER_CPUS:-any}, load generator on CPUs ${LOAD_CPUS:-any}; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
limit() {
  for p in "$PREC_A" "$PREC_B"; do
    ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$B_BUILD/benchmarks/polis-bench-infer" --root "$REG" --model "$MODEL" --batches 1 --threads 1 \
      --iters 500 --precision "$p" --json | head -1
  done
}
limit > "$OUT/limit0.json"
IFS=, read -ra conns <<< "$CONNS"; IFS=, read -ra threads <<< "$THREADS"
IFS=, read -ra forms <<< "$FORMS"; IFS=, read -ra batches <<< "$BATCHES"
for ((r = 1; r <= ROUNDS; r++)); do
  for f in "${forms[@]}"; do for c in "${conns[@]}"; do for t in "${threads[@]}"; do for mb in "${batches[@]}"; do
    flags=(--root "$REG" --model "$MODEL" --duration "$DUR" --connections "$c" --threads "$t" --max-batch "$mb"
           ${PIN_FLAGS[@]+"${PIN_FLAGS[@]}"})
    case $f,${CSV:+csv} in
      json,|rows,csv) ;;
      binary,) flags+=(--binary) ;;
      tensor,csv) flags+=(--ts-input tensor) ;;
      grpc,*) ;;
      *) echo "serving_ab.sh: --forms takes json, binary, grpc (with --csv: rows, tensor, grpc)" >&2; exit 2 ;;
    esac
    [[ -n $CSV ]] && flags+=(--csv "$CSV")
    if [[ $f == grpc ]]; then
      # gRPC has threads of its own: --threads (REST I/O) does not apply.
      [[ $t == "${threads[0]}" ]] || continue
      flags+=(--protocol grpc)
    fi
    for side in A B; do
      build=$A_BUILD prec=$PREC_A poll=$POLL_A inst=$INST_A
      [[ $side == B ]] && build=$B_BUILD prec=$PREC_B poll=$POLL_B inst=$INST_B
      log="$OUT/$side.$f.c$c.t$t.b$mb.r$r.log"
      side_flags=(); [[ $prec == fp32 ]] || side_flags=(--precision "$prec")
      [[ $poll == 0 ]] || side_flags+=(--busy-poll-us "$poll")
      [[ $inst == 1 ]] || side_flags+=(--instances "$inst")
      POLIS_BUILD_DIR=$build "$ROOT_DIR/benchmarks/serving.sh" "${flags[@]}" ${side_flags[@]+"${side_flags[@]}"} \
        > "$log" 2>&1 ||
        { echo "serving_ab.sh: run failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
    done
  done; done; done; done
done
limit > "$OUT/limit1.json"
# The floor of one connection on this machine: build B's server answering
# GET /v2/health/live (no body, no model) to wrk, as many seconds.
${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$B_BUILD/registry/polis-registry" serve --root "$REG" --listen 127.0.0.1:0 --port-file "$OUT/port" \
  --threads 1 > "$OUT/floor-server.log" 2>&1 &
FLOOR_PID=$!
trap 'kill $FLOOR_PID 2> /dev/null || true' EXIT
for _ in $(seq 200); do [[ -s $OUT/port ]] && break; sleep 0.05; done
cat > "$OUT/floor.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("  p99.9 %.0f us\n  max %.0f us\n", latency:percentile(99.9), latency.max))
end
LUA
for ((r = 1; r <= ROUNDS; r++)); do
  ${LOAD_CPUS:+taskset -c "$LOAD_CPUS"} wrk -t1 -c1 -d"${DUR}s" --latency -s "$OUT/floor.lua" "http://127.0.0.1:$(cat "$OUT/port")/v2/health/live" \
    > "$OUT/floor.r$r.txt"
done
kill $FLOOR_PID 2> /dev/null || true
python3 - "$OUT" "$PREC_A" "$PREC_B" <<'EOF'
import glob, json, os, re, statistics, sys
out = sys.argv[1]
precision = {"A": sys.argv[2], "B": sys.argv[3]}
def stats(path):
    """requests/s, p50, p99 and p99.9 (us) of one wrk (or polis-grpc-load) output."""
    text = open(path).read()
    def pct(p):
        v, unit = re.search(rf"\n\s+{p}%\s+([\d.]+)(us|ms|s)", text).groups()
        return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[unit]
    return (float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)), pct(50), pct(99),
            float(re.search(r"p99\.9 (\d+) us", text).group(1)))
STAGES = ("read", "parse", "queue", "compute", "encode", "write")
def stages(path):
    """The server's mean us per stage (serving.sh's "stages" line), or {}."""
    line = re.search(r"^stages \([a-z]+; [^)]*\): (.*)$", open(path).read(), re.M)
    return {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)/", line.group(1))} if line else {}
runs, st = {}, {}
for path in glob.glob(f"{out}/[AB].*.log"):
    side, form, c, t, b, r, _ = os.path.basename(path).split(".")
    key = (form, int(c[1:]), int(t[1:]), int(b[1:]))
    runs.setdefault(key, {}).setdefault(side, []).append(stats(path))
    st.setdefault(key, {}).setdefault(side, []).append(stages(path))
def stage_text(runs_st):
    med = [statistics.median(r[k] for r in runs_st if k in r) if any(k in r for r in runs_st) else None
           for k in STAGES]
    return "/".join("-" if v is None else f"{v:.0f}" for v in med)
# limit{0,1}.json: A's precision then B's, before and after the runs.
lim = [[json.loads(l) for l in open(f"{out}/limit{i}.json")] for i in (0, 1)]
fwd = {side: [lim[i][j]["median_us"] for i in (0, 1)] for j, side in enumerate("AB")}
rate = 1e6 / statistics.median(fwd["B"])
for side in "AB":
    print(f"in-process forward ({side}: {precision[side]}), batch 1, 1 thread: {fwd[side][0]:.1f} us before "
          f"the runs, {fwd[side][1]:.1f} us after (limit {1e6 / statistics.median(fwd[side]):.0f} rows/s "
          f"from their median)")
print()
print("Stages: the server's mean us per request, read/parse/queue/compute/encode/write (median over rounds).\n")
print("| form | connections | I/O threads | max batch | A req/s | B req/s | B ÷ A | B ÷ limit | A p50 / p99 / p99.9 ms | B p50 / p99 / p99.9 ms | A stages us | B stages us |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
for key in sorted(runs, key=lambda k: (k[0], k[1], k[2], k[3])):
    med = {s: [statistics.median(x[i] for x in runs[key][s]) for i in range(4)] for s in "AB"}
    a, b = med["A"], med["B"]
    lat = lambda m: f"{m[1] / 1000:.2f} / {m[2] / 1000:.2f} / {m[3] / 1000:.2f}"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {a[0]:.0f} | {b[0]:.0f} | {b[0] / a[0]:.2f} | "
          f"{b[0] / rate:.2f} | {lat(a)} | {lat(b)} | {stage_text(st[key]['A'])} | {stage_text(st[key]['B'])} |")
floor = [stats(path) for path in sorted(glob.glob(f"{out}/floor.r*.txt"))]
if floor:
    f = [statistics.median(x[i] for x in floor) for i in range(4)]
    print(f"\nfloor (B's server, GET /v2/health/live, 1 connection, no model): {f[0]:.0f} requests/s, "
          f"p50 / p99 / p99.9 {f[1] / 1000:.3f} / {f[2] / 1000:.3f} / {f[3] / 1000:.3f} ms")
print(f"\n(medians over {len(next(iter(runs.values()))['A'])} interleaved round(s); logs in {out})")
EOF
