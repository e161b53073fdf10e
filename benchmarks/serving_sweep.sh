#!/usr/bin/env bash
# serving_sweep.sh: the serving table of docs/benchmarks.md in one run.
# benchmarks/serving.sh (wrk against polis-registry's /infer, answers
# verified first) at concurrency 1, 16 and 64, with batching off
# (--max-batch 1 --delay-us 0) and on (--max-batch B, with no queue delay,
# the server's default, and with --delay-us D), beside
# the model's own forward time in-process for batch 1 and B
# (polis-bench-infer: the limit), for each request form side by side: REST
# with JSON numbers (json), REST with the binary tensor extension (binary),
# OIP gRPC with raw tensor bytes (grpc; polis-grpc-load). Each row carries
# p99.9 and the server's per-stage means (read/parse/queue/compute/encode/
# write, polis_inference_stage_seconds). Goals checked:
#   p99 at concurrency 1 <= 1 ms; batched QPS at 64 >= 3x unbatched QPS at
#   64, with batched p99 at 64 <= 1.5x unbatched p99 at 16; no errors; and
#   at 16 connections >= 0.8x the in-process limit with p99 <= 1 ms,
#   at 1 connection p99 <= 0.2 ms.
#
#   benchmarks/serving_sweep.sh [--root DIR] [--model NAME] [--duration S]
#                               [--max-batch B] [--delay-us D] [--threads N]
#                               [--rounds R] [--forms json,binary,grpc]
#                               [--csv FILE] [--precision fp32|bf16]
#                               [--server-cpus LIST] [--load-cpus LIST]
# Defaults: --root /tmp/reg-demo --model fashion_cnn --duration 8
# --max-batch 32 --delay-us 500 --threads 1 --rounds 1 (see serving.sh for
# how to make the default root). Rows: each request carries one image.
# A time-series forecaster (--csv: its training CSV; e.g. --model
# bike_demand_lstm) is swept with the forms rows (REST, a window's raw CSV
# lines as JSON strings), tensor (REST, the standardised FP32 window as JSON
# numbers) and grpc (the raw CSV lines as BYTES raw contents); one window a
# request. --precision bf16 serves the model in bf16 (serve --precision)
# and takes the limit from its bf16 forward pass. --server-cpus and
# --load-cpus put the server (and the in-process limit) and the load
# generator on those CPUs (taskset -c; serving.sh).
set -euo pipefail
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${POLIS_BUILD_DIR:-$ROOT_DIR/build}
REG=/tmp/reg-demo MODEL=fashion_cnn DUR=8 MAX_BATCH=32 DELAY=500 THREADS=1 ROUNDS=1
FORMS= CSV= PRECISION=fp32 SERVER_CPUS= LOAD_CPUS=
ARGS="$*"
while [[ $# -gt 0 ]]; do
  case $1 in
    --root) REG=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --max-batch) MAX_BATCH=$2; shift 2 ;;
    --delay-us) DELAY=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --forms) FORMS=$2; shift 2 ;;
    --csv) CSV=$2; shift 2 ;;
    --precision) PRECISION=$2; shift 2 ;;
    --server-cpus) SERVER_CPUS=$2; shift 2 ;;
    --load-cpus) LOAD_CPUS=$2; shift 2 ;;
    -h|--help) sed -n 2,33p "$0"; exit 0 ;;
    *) echo "serving_sweep.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -x $BUILD/benchmarks/polis-bench-infer ]] || { echo "serving_sweep.sh: build polis-bench-infer first (launch/build.sh)" >&2; exit 2; }
if [[ -n $CSV ]]; then FORMS=${FORMS:-rows,tensor,grpc}; else FORMS=${FORMS:-json,binary,grpc}; fi
OUT=$(mktemp -d /tmp/polis-sweep-XXXXXX)
trap 'rm -rf "$OUT"' EXIT

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); precision $PRECISION"
PIN=()
[[ -z $SERVER_CPUS ]] || PIN=(--server-cpus "$SERVER_CPUS")
[[ -z $LOAD_CPUS ]] || PIN+=(--load-cpus "$LOAD_CPUS")
echo "# server on CPUs ${SERVER_CPUS:-any}, load generator on CPUs ${LOAD_CPUS:-any}"
${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} "$BUILD/benchmarks/polis-bench-infer" --root "$REG" --model "$MODEL" --batches "1,$MAX_BATCH" \
  --threads 1 --iters 500 --precision "$PRECISION" --json > "$OUT/limit.json"
PFLAGS=(); [[ $PRECISION == fp32 ]] || PFLAGS=(--precision "$PRECISION")

IFS=, read -ra FORM_LIST <<< "$FORMS"
for round in $(seq "$ROUNDS"); do
  for form in "${FORM_LIST[@]}"; do
  case $form,${CSV:+csv} in
    json,) fflags=() ;;
    binary,) fflags=(--binary) ;;
    grpc,) fflags=(--protocol grpc) ;;
    rows,csv) fflags=(--csv "$CSV") ;;
    tensor,csv) fflags=(--csv "$CSV" --ts-input tensor) ;;
    grpc,csv) fflags=(--csv "$CSV" --protocol grpc) ;;
    *) echo "serving_sweep.sh: --forms takes json, binary, grpc (with --csv: rows, tensor, grpc)" >&2; exit 2 ;;
  esac
  for conn in 1 16 64; do
    for mode in off greedy delay; do
      case $mode in
        off) extra=(--max-batch 1 --delay-us 0) ;;
        greedy) extra=(--max-batch "$MAX_BATCH" --delay-us 0) ;;
        delay) extra=(--max-batch "$MAX_BATCH" --delay-us "$DELAY") ;;
      esac
      "$ROOT_DIR/benchmarks/serving.sh" --root "$REG" --model "$MODEL" --connections "$conn" \
        --duration "$DUR" --threads "$THREADS" "${extra[@]}" ${fflags[@]+"${fflags[@]}"} \
        ${PFLAGS[@]+"${PFLAGS[@]}"} ${PIN[@]+"${PIN[@]}"} \
        > "$OUT/run-$round-$form-$conn-$mode.txt" 2>&1 \
        || { cat "$OUT/run-$round-$form-$conn-$mode.txt" >&2; exit 1; }
    done
  done
  done
done

python3 - "$OUT" "$ROUNDS" "$MAX_BATCH" "$DELAY" "$THREADS" "$FORMS" <<'EOF'
import json, re, statistics, sys
out, rounds, max_batch, delay, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
forms = sys.argv[6].split(",")
def ms(text):
    v, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
STAGES = ("read", "parse", "queue", "compute", "encode", "write")
res = {}
for form in forms:
  for conn in (1, 16, 64):
    for mode in ("off", "greedy", "delay"):
        qps, p50, p99, p999, batch, rq, st = [], [], [], [], [], [], {k: [] for k in STAGES}
        for r in range(1, rounds + 1):
            t = open(f"{out}/run-{r}-{form}-{conn}-{mode}.txt").read()
            qps.append(float(re.search(r"Requests/sec:\s+(\S+)", t).group(1)))
            p50.append(ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)))
            p99.append(ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1)))
            p999.append(float(re.search(r"p99\.9 (\S+) us", t).group(1)) / 1000)
            batch.append(float(re.search(r"mean batch (\S+) rows", t).group(1)))
            rq.append(float(re.search(r"run-queue wait (\d+) ms", t).group(1)))
            line = re.search(r"^stages \([a-z]+; [^)]*\): (.*)$", t, re.M)
            for k, v in (re.findall(r"(\w+) ([\d.]+)/", line.group(1)) if line else []):
                st[k].append(float(v))
        res[form, conn, mode] = dict(
            qps=statistics.median(qps), p50=statistics.median(p50), p99=statistics.median(p99),
            p999=statistics.median(p999), batch=statistics.median(batch), rq=statistics.median(rq),
            stages={k: statistics.median(v) for k, v in st.items() if v})
limit = {j["batch"]: j for j in (json.loads(l) for l in open(f"{out}/limit.json") if l.startswith("{"))}
print(f"In-process forward (polis-bench-infer, 1 thread): batch 1 {limit[1]['median_us']:.0f} us "
      f"({limit[1]['rows_per_s']:.0f} rows/s); batch {max_batch} {limit[int(max_batch)]['median_us']:.0f} us "
      f"({limit[int(max_batch)]['rows_per_s']:.0f} rows/s)")
print()
print("Stages: the server's mean per infer request in us (polis_inference_stage_seconds), "
      "read/parse/queue/compute/encode/write; - where the server has no such histogram.")
print()
print("Run-queue ms: how long the server's threads were ready to run but waited for a core, over the run.")
print()
print(f"| form | connections | batching | requests/s | p50 ms | p99 ms | p99.9 ms | mean batch | ÷ in-process limit | stages us | run-queue ms |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|")
for form in forms:
  for conn in (1, 16, 64):
    for mode in ("off", "greedy", "delay"):
        r = res[form, conn, mode]
        lim = limit[1 if mode == "off" else int(max_batch)]["rows_per_s"]
        label = {"off": "off", "greedy": f"on (max {max_batch}, no delay)",
                 "delay": f"on (max {max_batch}, {delay} us delay)"}[mode]
        stages = "/".join(f"{r['stages'][k]:.0f}" if k in r["stages"] else "-" for k in STAGES)
        print(f"| {form} | {conn} | {label} | {r['qps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | "
              f"{r['batch']:.1f} | {r['qps'] / lim:.2f} | {stages} | {r['rq']:.0f} |")
print()
ceiling = limit[int(max_batch)]["rows_per_s"] / limit[1]["rows_per_s"]
for form in forms:
    p99_1 = max(res[form, 1, m]["p99"] for m in ("off", "greedy", "delay"))
    best = max(("greedy", "delay"), key=lambda m: res[form, 64, m]["qps"])
    ratio = res[form, 64, best]["qps"] / res[form, 64, "off"]["qps"]
    p99_ratio = res[form, 64, best]["p99"] / res[form, 16, "off"]["p99"]
    b16 = max(("off", "greedy", "delay"), key=lambda m: res[form, 16, m]["qps"])
    r16 = res[form, 16, b16]
    lim16 = limit[1 if b16 == "off" else int(max_batch)]["rows_per_s"]
    print(f"[{form}] goal p99 <= 1 ms at 1 connection (worst of the three settings): {p99_1:.2f} ms -> {'met' if p99_1 <= 1 else 'NOT met'}")
    print(f"[{form}] goal p99 <= 0.2 ms at 1 connection: {p99_1:.2f} ms -> {'met' if p99_1 <= 0.2 else 'NOT met'}; "
          f"p99.9 {max(res[form, 1, m]['p999'] for m in ('off', 'greedy', 'delay')):.2f} ms")
    print(f"[{form}] goal at 16 connections >= 0.8x the in-process limit, p99 <= 1 ms ({b16}): "
          f"{r16['qps'] / lim16:.2f}x (the limit of one compute thread; {r16['qps'] / (2 * lim16):.2f}x of two), "
          f"p99 {r16['p99']:.2f} ms -> {'met' if r16['qps'] >= 0.8 * lim16 and r16['p99'] <= 1 else 'NOT met'}")
    print(f"[{form}] goal batched QPS at 64 >= 3x unbatched ({best}): {ratio:.2f}x -> {'met' if ratio >= 3 else 'NOT met'} "
          f"(the forward pass alone gains {ceiling:.2f}x from batch 1 to {max_batch})")
    print(f"[{form}] goal batched p99 at 64 <= 1.5x unbatched p99 at 16: {p99_ratio:.2f}x -> {'met' if p99_ratio <= 1.5 else 'NOT met'}")
EOF
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "reproduce: benchmarks/serving_sweep.sh $ARGS"
