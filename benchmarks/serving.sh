#!/usr/bin/env bash
# serving.sh: requests/s and latency of polis-registry's OIP /infer under wrk,
# with dynamic batching, after checking that what is timed is right.
#
#   benchmarks/serving.sh [--root DIR] [--model NAME] [--rows N] [--connections C]
#                         [--duration S] [--wrk-threads T] [--threads N]
#                         [--max-batch B] [--delay-us D] [--compute-threads K]
#                         [--protocol rest|grpc] [--binary]
#                         [--csv FILE [--ts-input rows|tensor]] [--precision fp32|bf16]
#                         [--busy-poll-us U] [--instances I]
#                         [--server-cpus LIST] [--load-cpus LIST]
#
# Defaults: --root /tmp/reg-demo --model fashion_cnn --rows 1 --connections 16
# --duration 10 --wrk-threads 1 --threads 1 --max-batch 32 --delay-us 0
# --protocol rest. --protocol grpc drives OIP v2 ModelInfer over gRPC with
# polis-grpc-load (raw tensor bytes) instead of wrk; --binary sends REST
# requests with the binary tensor extension (raw UINT8 pixels after a JSON
# header) instead of JSON numbers. Prints p99.9 and the server's per-stage
# histograms (polis_inference_stage_seconds: mean and p99 bucket per stage),
# the run-queue wait of the server's threads (in total, and by thread name
# with their involuntary and voluntary context switches), and the CPU time
# per request of the server's threads by name and of the load generator,
# and how many batches ran on I/O threads (polis_inference_caller_batches_total).
# A time-series forecaster is driven with --csv FILE (its training CSV): each
# request is one window, as raw CSV lines (`rows`, the default; over gRPC as
# BYTES raw contents) or as the standardised FP32 window (--ts-input tensor).
# --precision bf16 serves every model in bf16 (`serve --precision`; the
# forecaster's reference answers then come from `predict --precision bf16`).
# --busy-poll-us U lets the server's idle HTTP I/O threads poll U µs before
# sleeping (`serve --busy-poll-us`; default 0, not passed, so that older
# builds can be timed too). --instances I serves each version as I
# instances (`serve --instances`; passed only when asked, likewise).
# --server-cpus and --load-cpus confine the server and the load generator
# to CPU lists (taskset -c, e.g. 0 and 1): the load generator then takes no
# core the server runs on, as when the clients are on other machines.
# Make the default root with (10 s):
#   launch/polis-run --workers 2 --servers 1 --epochs 1 --registry /tmp/reg-demo \
#       jobs/fashion_cnn.pbtxt -- --train-limit 6000
#
# Verification before timing: the server's answers for the first 500
# Fashion-MNIST test images (sent as UINT8 pixels, batched) must reach the
# accuracy recorded in the artifact (within 0.02), and the timed request must
# answer 200 with probabilities summing to 1. After timing: wrk must report
# no errors and no non-2xx responses. A forecaster is verified instead
# against `polis-registry predict --csv` on the first 64 test windows: the
# FP32 window must get predict's standardised output, and the window's raw
# CSV lines that output in the target's units. Needs wrk and python3.
set -euo pipefail
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${POLIS_BUILD_DIR:-$ROOT_DIR/build}
BIN=$BUILD/registry/polis-registry
REG=/tmp/reg-demo MODEL=fashion_cnn ROWS=1 CONN=16 DUR=10 WRK_THREADS=1 THREADS=1
MAX_BATCH=32 DELAY=0 COMPUTE=1 PROTOCOL=rest BINARY=0 CSV= TS_INPUT=rows PRECISION=fp32 BUSY_POLL=0 INSTANCES=
SERVER_CPUS= LOAD_CPUS=
ARGS="$*"
while [[ $# -gt 0 ]]; do
  case $1 in
    --root) REG=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --connections) CONN=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --wrk-threads) WRK_THREADS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --max-batch) MAX_BATCH=$2; shift 2 ;;
    --delay-us) DELAY=$2; shift 2 ;;
    --compute-threads) COMPUTE=$2; shift 2 ;;
    --instances) INSTANCES=$2; shift 2 ;;
    --protocol) PROTOCOL=$2; shift 2 ;;
    --binary) BINARY=1; shift ;;
    --csv) CSV=$2; shift 2 ;;
    --ts-input) TS_INPUT=$2; shift 2 ;;
    --precision) PRECISION=$2; shift 2 ;;
    --busy-poll-us) BUSY_POLL=$2; shift 2 ;;
    --server-cpus) SERVER_CPUS=$2; shift 2 ;;
    --load-cpus) LOAD_CPUS=$2; shift 2 ;;
    -h|--help) sed -n 2,40p "$0"; exit 0 ;;
    *) echo "serving.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $PROTOCOL == rest || $PROTOCOL == grpc ]] || { echo "serving.sh: --protocol is rest or grpc" >&2; exit 2; }
[[ $TS_INPUT == rows || $TS_INPUT == tensor ]] || { echo "serving.sh: --ts-input is rows or tensor" >&2; exit 2; }
if [[ -n $CSV ]]; then
  [[ -f $CSV ]] || { echo "serving.sh: --csv $CSV: no such file" >&2; exit 2; }
  ((BINARY == 0)) || { echo "serving.sh: --binary is for image models; a forecaster's rows are JSON strings" >&2; exit 2; }
  [[ $PROTOCOL == rest || $TS_INPUT == rows ]] || { echo "serving.sh: over gRPC a forecaster is driven with rows" >&2; exit 2; }
fi
SERVER_PIN=() LOAD_PIN=()
[[ -z $SERVER_CPUS ]] || SERVER_PIN=(taskset -c "$SERVER_CPUS")
[[ -z $LOAD_CPUS ]] || LOAD_PIN=(taskset -c "$LOAD_CPUS")
command -v wrk > /dev/null || { echo "serving.sh: needs wrk (apt-get install wrk)" >&2; exit 2; }
[[ $PROTOCOL == rest || -x $BUILD/benchmarks/polis-grpc-load ]] || { echo "serving.sh: build polis-grpc-load first" >&2; exit 2; }
[[ -x $BIN ]] || { echo "serving.sh: $BIN not built (launch/build.sh)" >&2; exit 2; }
[[ -d $REG/$MODEL ]] || { echo "serving.sh: no model $MODEL under $REG; see the header of $0" >&2; exit 2; }

WORK=$(mktemp -d /tmp/polis-serving-XXXXXX)
SERVER_PID=
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2> /dev/null && wait "$SERVER_PID" 2> /dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
GRPC_FLAGS=()
# Only when asked: a build from before --precision existed can still be timed.
PRECISION_FLAGS=()
[[ $PRECISION == fp32 ]] || PRECISION_FLAGS=(--precision "$PRECISION")
EXTRA_FLAGS=()
[[ $BUSY_POLL == 0 ]] || EXTRA_FLAGS=(--busy-poll-us "$BUSY_POLL")
[[ -z $INSTANCES ]] || EXTRA_FLAGS+=(--instances "$INSTANCES")
[[ $PROTOCOL == grpc ]] && GRPC_FLAGS=(--grpc-listen 127.0.0.1:0 --grpc-port-file "$WORK/grpc_port")

${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$BIN" serve --root "$REG" --listen 127.0.0.1:0 --port-file "$WORK/port" --threads "$THREADS" \
  --max-batch "$MAX_BATCH" --max-queue-delay-us "$DELAY" --compute-threads "$COMPUTE" \
  ${GRPC_FLAGS[@]+"${GRPC_FLAGS[@]}"} ${PRECISION_FLAGS[@]+"${PRECISION_FLAGS[@]}"} \
  ${EXTRA_FLAGS[@]+"${EXTRA_FLAGS[@]}"} > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 200); do [[ -s $WORK/port ]] && break; sleep 0.05; done
[[ -s $WORK/port ]] || { cat "$WORK/server.log" >&2; exit 1; }
PORT=$(cat "$WORK/port")
URL=http://127.0.0.1:$PORT

# Verify, and write the timed request.
if [[ -n $CSV ]]; then
  "$BIN" predict --root "$REG" "$MODEL" --csv "$CSV" --split test --limit 64 ${PRECISION_FLAGS[@]+"${PRECISION_FLAGS[@]}"} --out "$WORK/pred.f32" \
    --windows-out "$WORK/windows.f32" --times-out "$WORK/times.txt" > "$WORK/predict.json"
fi
python3 - "$URL" "$MODEL" "$ROWS" "$WORK/body.json" "${POLIS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}" "$WORK" "$CSV" "$TS_INPUT" <<'EOF'
import array, bisect, datetime, gzip, json, os, struct, sys, urllib.request
url, model, rows, out, data_dir, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
csv_path, ts_input = sys.argv[7], sys.argv[8]
def call(path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def verify_forecaster():
    meta = call(f"/v2/models/{model}")
    ts = meta["parameters"]["timeseries"]
    shape = meta["inputs"][0]["shape"][1:]
    per_window, horizon, lookback = shape[0] * shape[1], ts["horizon"], ts["lookback"]
    preds = array.array("f"); preds.frombytes(open(f"{work}/pred.f32", "rb").read())
    wins = array.array("f"); wins.frombytes(open(f"{work}/windows.f32", "rb").read())
    times = open(f"{work}/times.txt").read().split("\n")[:-1]
    n = len(times)
    assert len(preds) == n * horizon and len(wins) == n * per_window, "predict's files disagree"
    # The FP32 path answers what polis-registry predict computed, standardised.
    step = min(16, meta["parameters"]["max_batch_size"])
    for at in range(0, n, step):
        k = min(step, n - at)
        r = call(f"/v2/models/{model}/infer", {"inputs": [{"name": "input", "shape": [k] + shape, "datatype": "FP32",
                 "data": list(wins[at * per_window:(at + k) * per_window])}], "outputs": [{"name": "predictions"}]})
        got, want = r["outputs"][0]["data"], preds[at * horizon:(at + k) * horizon]
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if abs(g - w) > 1e-5 * max(1, abs(w))]
        assert not bad and len(got) == len(want), f"FP32 window {at + (bad or [0])[0]}: {got[:4]} != {list(want[:4])}"
    # The raw CSV lines of each window: from the last line at or before its
    # first step to its last step, timed as the model's spec writes them.
    lines = open(csv_path).read().split("\n")
    header, rows = lines[0].split(","), [l for l in lines[1:] if l]
    tcol = header.index(ts["timestamp_column"])
    hcol = header.index(ts["hour_column"]) if ts["hour_column"] else None
    def when(line):
        f = line.split(",")
        t = datetime.datetime.strptime(f[tcol], ts["timestamp_format"])
        return t + datetime.timedelta(hours=int(f[hcol])) if hcol is not None else t
    row_times = [when(l) for l in rows]
    def window_lines(first):
        t0 = datetime.datetime.strptime(first, "%Y-%m-%d %H:%M:%S")
        t1 = t0 + datetime.timedelta(seconds=(lookback - 1) * ts["frequency_seconds"])
        a = bisect.bisect_right(row_times, t0) - 1
        return rows[max(a, 0):bisect.bisect_right(row_times, t1)]
    header_input = [] if ts["header"] else [{"name": "header", "datatype": "BYTES", "shape": [1], "data": [lines[0]]}]
    mean, std = ts["target_mean"], ts["target_stddev"]
    for i in range(n):
        w = window_lines(times[i])
        r = call(f"/v2/models/{model}/infer", {"inputs": [{"name": "rows", "datatype": "BYTES", "shape": [len(w)],
                 "data": w}] + header_input})
        got = r["outputs"][0]["data"]
        want = [p * std + mean for p in preds[i * horizon:(i + 1) * horizon]]
        assert all(abs(g - v) <= 1e-4 * max(1, abs(v)) for g, v in zip(got, want)), \
            f"rows of window {i} ({times[i]}): {got} != {want}"
    print(f"verify: {n} test windows: the FP32 window gives polis-registry predict's output, its raw CSV lines "
          f"that output in {ts['target_column']}'s units (x {std:.4g} + {mean:.4g})")
    w = window_lines(times[0])
    if ts_input == "rows":
        body = {"inputs": [{"name": "rows", "datatype": "BYTES", "shape": [len(w)], "data": w}] + header_input}
    else:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1] + shape, "data": list(wins[:per_window])}]}
    json.dump(body, open(f"{work}/body.json", "w"))
    # gRPC: the rows as BYTES raw contents (4-byte little-endian length, bytes).
    open(f"{work}/input.u8", "wb").write(b"".join(struct.pack("<I", len(l)) + l.encode() for l in w))
    open(f"{work}/shape", "w").write(str(len(w)))
    print(f"verify: the timed request is test window 0 ({times[0]}) as " +
          (f"{len(w)} CSV lines" if ts_input == "rows" else f"an FP32 {shape} tensor"))


if csv_path:
    verify_forecaster()
    sys.exit(0)
meta = call(f"/v2/models/{model}")
shape = meta["inputs"][0]["shape"][1:]
n = 1
for d in shape: n *= d
images, labels = None, None
path = os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")
if os.path.exists(path) and n == 784:
    raw = gzip.open(path).read()
    count = struct.unpack(">I", raw[4:8])[0]
    images = [list(raw[16 + i * 784:16 + (i + 1) * 784]) for i in range(min(500, count))]
    lab = gzip.open(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")).read()
    labels = list(lab[8:8 + len(images)])
    correct = 0
    step = min(25, meta["parameters"]["max_batch_size"])
    for at in range(0, len(images), step):
        chunk = images[at:at + step]
        r = call(f"/v2/models/{model}/infer", {"inputs": [{"name": "input", "shape": [len(chunk)] + shape,
                 "datatype": "UINT8", "data": [p for img in chunk for p in img]}],
                 "outputs": [{"name": "probabilities"}]})
        probs = r["outputs"][0]["data"]
        k = len(probs) // len(chunk)
        for i, label in enumerate(labels[at:at + len(chunk)]):
            row = probs[i * k:(i + 1) * k]
            correct += row.index(max(row)) == label
    acc = correct / len(images)
    recorded = meta["parameters"]["metrics"].get("test_accuracy")
    print(f"verify: accuracy on {len(images)} test images {acc:.4f} (artifact records {recorded})")
    if recorded is not None and abs(acc - recorded) > 0.02 + 0.05 * (len(images) < 10000):
        sys.exit(f"verify: accuracy {acc:.4f} is far from the recorded {recorded}")
else:
    print("verify: no Fashion-MNIST test set here; checking one answer only")
pixels = images[:rows] if images else [[(i * 37) % 256 for i in range(n)] for _ in range(rows)]
while len(pixels) < rows: pixels += pixels[:rows - len(pixels)]
body = {"inputs": [{"name": "input", "shape": [rows] + shape, "datatype": "UINT8",
                    "data": [p for img in pixels for p in img]}]}
r = call(f"/v2/models/{model}/infer", body)
probs = r["outputs"][0]["data"]
assert r["outputs"][0]["shape"][0] == rows, r["outputs"][0]["shape"]
k = len(probs) // rows
for i in range(rows):
    s = sum(probs[i * k:(i + 1) * k])
    assert abs(s - 1) < 1e-4, f"row {i}: probabilities sum to {s}"
json.dump(body, open(out, "w"))
# The same rows as raw bytes: the gRPC request's raw_input_contents, and the
# REST binary tensor extension's body (JSON header + bytes).
raw = bytes(p for img in pixels for p in img)
open(os.path.join(work, "input.u8"), "wb").write(raw)
header = json.dumps({"inputs": [{"name": "input", "shape": [rows] + shape, "datatype": "UINT8",
                                 "parameters": {"binary_data_size": len(raw)}}]}).encode()
open(os.path.join(work, "body.bin"), "wb").write(header + raw)
open(os.path.join(work, "header_length"), "w").write(str(len(header)))
open(os.path.join(work, "shape"), "w").write(",".join(str(d) for d in [rows] + shape))
print(f"verify: request of {rows} row(s) answered by version {r['model_version']}: ok")
EOF

if ((BINARY)); then
  cat > "$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$(cat "$WORK/header_length")"
local f = io.open("$WORK/body.bin", "rb"); wrk.body = f:read("*a"); f:close()
EOF
else
  cat > "$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$WORK/body.json", "rb"); wrk.body = f:read("*a"); f:close()
EOF
fi
cat >> "$WORK/post.lua" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("  p99.9 %.0f us\n  max %.0f us\n", latency:percentile(99.9), latency.max))
end
EOF
# By thread name: CPU time (utime + stime, clock ticks; fields 14-15 of
# /proc/PID/task/TID/stat, read after the name), run-queue wait (ns;
# /proc/PID/task/TID/schedstat, field 2: time the thread was ready to run
# but another had the core -- what a stall on a shared machine is made of),
# involuntary and voluntary context switches.
by_name() {
  local t
  for t in /proc/"$SERVER_PID"/task/*; do
    printf '%s %s %s %s %s\n' "$(tr ' ' _ < "$t/comm")" "$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')" \
      "$(cut -d' ' -f2 "$t/schedstat")" \
      "$(awk '/^nonvoluntary_ctxt_switches/ {n=$2} /^voluntary_ctxt_switches/ {v=$2} END {print n, v}' "$t/status")"
  done 2> /dev/null |
    awk '{c[$1] += $2; w[$1] += $3; i[$1] += $4; v[$1] += $5}
         END {for (k in c) printf "%s %.0f %.0f %.0f %.0f\n", k, c[k], w[k], i[k], v[k]}' | sort
}
by_name > "$WORK/cpu0.txt"
# The server's counters before the timed run: what follows reports the
# difference, so the verification requests above are not counted.
curl -s "$URL/metrics" > "$WORK/metrics0.txt"
if [[ $PROTOCOL == grpc ]]; then FORM="gRPC raw"; elif ((BINARY)); then FORM="REST binary"; else FORM="REST JSON"; fi
[[ -n $CSV ]] && FORM="$FORM, forecaster window as $TS_INPUT"
GRPC_INPUT=(--datatype UINT8)
[[ -n $CSV ]] && GRPC_INPUT=(--datatype BYTES --input-name rows --output-name predictions)
echo "load: $FORM, $CONN connections, $DUR s, $ROWS row(s)/request; server: --threads $THREADS --max-batch $MAX_BATCH --max-queue-delay-us $DELAY --compute-threads $COMPUTE${EXTRA_FLAGS[*]:+ ${EXTRA_FLAGS[*]}}${SERVER_CPUS:+; server on CPUs $SERVER_CPUS}${LOAD_CPUS:+, load generator on CPUs $LOAD_CPUS}"
TIMEFORMAT='%U %S'
{ time if [[ $PROTOCOL == grpc ]]; then
  ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} "$BUILD/benchmarks/polis-grpc-load" --port "$(cat "$WORK/grpc_port")" --model "$MODEL" \
    --input "$WORK/input.u8" "${GRPC_INPUT[@]}" --shape "$(cat "$WORK/shape")" \
    --connections "$CONN" --duration "$DUR" | tee "$WORK/wrk.txt"
else
  ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} wrk -t"$WRK_THREADS" -c"$CONN" -d"${DUR}s" --latency -s "$WORK/post.lua" "$URL/v2/models/$MODEL/infer" | tee "$WORK/wrk.txt"
fi; } 2> "$WORK/load_cpu.txt"
by_name > "$WORK/cpu1.txt"

# Run-queue wait and involuntary context switches of the server's threads
# in total, then CPU per request: the server's threads by name (rest/N: HTTP I/O;
# infer/MODEL: a version's inference threads, cut to 15 characters; gRPC's
# have names of their own; the main thread is polis-registry) and the load generator
# (wrk or polis-grpc-load, with tee), from its user + system seconds.
python3 - "$WORK/cpu0.txt" "$WORK/cpu1.txt" "$WORK/load_cpu.txt" "$WORK/wrk.txt" "$(getconf CLK_TCK)" <<'EOF'
import re, sys
rows = lambda path: {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(path) if l.strip()}
before, after, hz = rows(sys.argv[1]), rows(sys.argv[2]), int(sys.argv[5])
# Per name: CPU ticks, run-queue wait ns, involuntary and voluntary switches.
delta = {k: [x - y for x, y in zip(v, before.get(k, [0, 0, 0, 0]))] for k, v in after.items()}
loadavg = " ".join(open("/proc/loadavg").read().split()[:3])
print(f"server threads: run-queue wait {sum(d[1] for d in delta.values()) // 1000000} ms in total, "
      f"{sum(d[2] for d in delta.values())} involuntary context switches; load average {loadavg}")
n = int(re.search(r"(\d+) requests in", open(sys.argv[4]).read()).group(1))
per = {k: 1e6 * d[0] / hz / max(n, 1) for k, d in delta.items()}
load = 1e6 * sum(float(x) for x in open(sys.argv[3]).read().split()[-2:]) / max(n, 1)
names = ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.5)
print(f"cpu per request: server {sum(per.values()):.0f} us ({names}); load generator {load:.0f} us")
# Which threads waited for a core, and how often they were preempted (i) or
# slept (v): where the tail comes from.
waits = sorted(((d[1], f"{k} {d[1] / 1e6:.0f} ms ({d[2]} i, {d[3]} v)") for k, d in delta.items()
                if d[1] >= 1e6 or d[2] > 0), reverse=True)
print("run-queue wait by thread: " + ", ".join(t for _, t in waits))
EOF
if grep -qE "Non-2xx|Socket errors" "$WORK/wrk.txt"; then
  echo "serving.sh: FAILED: wrk saw errors or non-2xx responses" >&2
  exit 1
fi
curl -s "$URL/metrics" > "$WORK/metrics.txt"
python3 - "$WORK/metrics.txt" "$WORK/wrk.txt" "$ROWS" "$WORK/metrics0.txt" <<'EOF'
import re, sys
def series(text):
    return {k: float(v) for k, v in re.findall(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}
after, before = series(open(sys.argv[1]).read()), series(open(sys.argv[4]).read())
# The timed run alone: every series as after - before, rendered back as text.
m = "\n".join(f"{k} {v - before.get(k, 0)}" for k, v in after.items()) + "\n"
def total(name):
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", m, re.M))
batches, rows_batched = total("polis_inference_batch_rows_count"), total("polis_inference_batch_rows_sum")
queue_sum, queue_n = total("polis_inference_queue_seconds_sum"), total("polis_inference_queue_seconds_count")
fails = sum(float(v) for v in re.findall(r'^polis_inference_requests_total\{[^}]*outcome="failure"\} (\S+)$', m, re.M))
rps = float(re.search(r"Requests/sec:\s+(\S+)", open(sys.argv[2]).read()).group(1))
print(f"result: {rps:.0f} requests/s = {rps * int(sys.argv[3]):.0f} rows/s; mean batch {rows_batched / max(batches, 1):.2f} rows; "
      f"mean queue wait {1e6 * queue_sum / max(queue_n, 1):.0f} us; server-side failures {fails:.0f}")
# Where the batches ran (builds that count it): on the thread that received
# a request (an HTTP I/O thread) or on an inference thread.
if "polis_inference_caller_batches_total" in open(sys.argv[1]).read():
    print(f"batches: {total('polis_inference_caller_batches_total'):.0f} of {batches:.0f} run on I/O threads, "
          f"the rest on inference threads")
# Per-stage histograms of the protocol driven (the other has no counts).
for proto in ("rest", "grpc"):
    stages = []
    for stage in ("read", "parse", "queue", "compute", "encode", "write"):
        l = f'protocol="{proto}",stage="{stage}"'
        c = re.search(rf'^polis_inference_stage_seconds_count\{{{l}\}} (\S+)$', m, re.M)
        s = re.search(rf'^polis_inference_stage_seconds_sum\{{{l}\}} (\S+)$', m, re.M)
        if not c or float(c.group(1)) == 0: continue
        n = float(c.group(1))
        buckets = [(float("inf") if le == "+Inf" else float(le), float(v)) for le, v in re.findall(
            rf'^polis_inference_stage_seconds_bucket\{{{l},le="([^"]+)"\}} (\S+)$', m, re.M)]
        p99 = next(le for le, v in buckets if v >= 0.99 * n)
        stages.append(f"{stage} {1e6 * float(s.group(1)) / n:.1f}/" + ("inf" if p99 == float("inf") else f"{1e6 * p99:.0f}"))
    if stages:
        print(f"stages ({proto}; mean us / p99 bucket bound us): " + ", ".join(stages))
if fails: sys.exit("serving.sh: FAILED: the server counted failed inferences")
EOF
echo "reproduce: benchmarks/serving.sh $ARGS"
