#!/usr/bin/env bash
# Side-by-side training throughput: Polis (polis-bench-train) vs PyTorch
# (benchmarks/torch_seed_cnn.py, NCHW and channels_last) on the seed CNN with
# real Fashion-MNIST data. Runs are interleaved (Polis, PyTorch nchw, PyTorch
# nhwc) per round so drift on a shared VM hits all three alike; the table
# reports the median over rounds.
#
# Usage: benchmarks/train_throughput.sh [--build DIR] [--quick]
#   --build DIR  Polis build directory (default: <repo>/build); the binary is
#                DIR/benchmarks/polis-bench-train
#   --quick      1 round and fewer steps instead of 3 rounds
#
# Progress goes to stderr; the report (markdown) goes to stdout.
# Exits non-zero if any run fails; exits 2 if /usr/bin/python3 lacks torch.
set -euo pipefail

PY=/usr/bin/python3   # Debian's Python, the one with torch
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
TORCH_BENCH="$SCRIPT_DIR/torch_seed_cnn.py"
# Stock glibc malloc makes PyTorch much slower on this VM (repeated
# mmap/munmap + page faults for activation buffers); this is its best setup.
TORCH_TUNABLES="glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=67108864"
MFLOP_PER_IMAGE=16.4   # forward + backward of the seed CNN, per training image

BUILD="$REPO_ROOT/build"
QUICK=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) [[ $# -ge 2 ]] || { echo "error: --build needs a directory" >&2; exit 1; }
             BUILD="$2"; shift 2 ;;
    --build=*) BUILD="${1#--build=}"; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
BUILD_ARG="$BUILD"
BUILD="$(cd "$BUILD" 2>/dev/null && pwd)" || { echo "error: build directory not found: $BUILD_ARG" >&2; exit 1; }
POLIS_BIN="$BUILD/benchmarks/polis-bench-train"

if ! TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
  echo "error: $PY cannot import torch; run \`launch/install-deps.sh bench\` first." >&2
  exit 2
fi
if [[ ! -x "$POLIS_BIN" ]]; then
  echo "error: $POLIS_BIN not found or not executable (build the polis-bench-train target)" >&2
  exit 1
fi
[[ -f "$TORCH_BENCH" ]] || { echo "error: $TORCH_BENCH missing" >&2; exit 1; }

if [[ $QUICK -eq 1 ]]; then
  ROUNDS=1; STEPS=50; WARMUP=5; REPEATS=5
else
  ROUNDS=3; STEPS=200; WARMUP=20; REPEATS=5
fi
CONFIGS=("32 1" "128 1" "32 2" "128 2")   # "batch threads"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-train-throughput.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

# run_one LABEL BATCH THREADS CMD...: runs CMD, extracts images_per_second
# from its last JSON line and appends "batch threads label value" to RESULTS.
run_one() {
  local label="$1" batch="$2" threads="$3"; shift 3
  local out="$WORK/out.txt" err="$WORK/err.txt" rc=0 ips
  "$@" > "$out" 2> "$err" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "error: $label (batch $batch, threads $threads) failed with exit code $rc: $*" >&2
    tail -n 20 "$out" "$err" >&2 || true
    exit 1
  fi
  if ! ips="$("$PY" -c '
import json, sys
rows = [l for l in open(sys.argv[1]) if l.lstrip().startswith("{")]
if not rows:
    sys.exit("no JSON line in output")
v = float(json.loads(rows[-1])["images_per_second"])
if not v > 0:
    sys.exit("images_per_second is not positive")
print(repr(v))
' "$out" 2>&1)"; then
    echo "error: $label (batch $batch, threads $threads): bad output: $ips" >&2
    tail -n 20 "$out" "$err" >&2 || true
    exit 1
  fi
  printf '%s\t%s\t%s\t%s\n' "$batch" "$threads" "$label" "$ips" >> "$RESULTS"
  printf '  %-13s batch %3s threads %s: %10.1f img/s\n' "$label" "$batch" "$threads" "$ips" >&2
}

echo "Running $ROUNDS round(s) of $STEPS steps (+$WARMUP warmup) per run..." >&2
for cfg in "${CONFIGS[@]}"; do
  read -r B T <<< "$cfg"
  for ((r = 1; r <= ROUNDS; r++)); do
    echo "[batch $B, threads $T] round $r/$ROUNDS" >&2
    run_one polis "$B" "$T" \
      env OMP_NUM_THREADS="$T" \
      "$POLIS_BIN" --batch "$B" --threads "$T" --steps "$STEPS" --warmup "$WARMUP" --json
    for layout in nchw nhwc; do
      run_one "pytorch-$layout" "$B" "$T" \
        env GLIBC_TUNABLES="$TORCH_TUNABLES" OMP_NUM_THREADS="$T" \
        "$PY" "$TORCH_BENCH" --batch "$B" --threads "$T" --layout "$layout" \
        --steps "$STEPS" --warmup "$WARMUP" --repeats "$REPEATS" --json
    done
  done
done

# ---- report ----
CMDLINE="cd $(printf '%q' "$REPO_ROOT") && benchmarks/train_throughput.sh --build $(printf '%q' "$BUILD")"
[[ $QUICK -eq 1 ]] && CMDLINE+=" --quick"
CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*:[[:space:]]*//')"

echo "## Training throughput: Polis vs PyTorch (seed CNN, Fashion-MNIST)"
echo
echo "- Command: \`$CMDLINE\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- nproc: $(nproc)"
echo "- CPU: ${CPU_MODEL:-unknown}"
echo "- torch: $TORCH_VERSION (GLIBC_TUNABLES=$TORCH_TUNABLES)"
echo "- Rounds: $ROUNDS, steps per run: $STEPS (+$WARMUP warmup); values are medians over rounds, in images/s"
echo
"$PY" - "$RESULTS" "$MFLOP_PER_IMAGE" <<'EOF'
import statistics, sys
from collections import defaultdict

results, mflop = sys.argv[1], float(sys.argv[2])
vals = defaultdict(list)
order = []
for line in open(results):
    b, t, label, v = line.rstrip("\n").split("\t")
    key = (int(b), int(t))
    if key not in order:
        order.append(key)
    vals[key, label].append(float(v))

print("| batch | threads | Polis img/s | PyTorch nchw | PyTorch nhwc | best PyTorch | Polis/best | Polis GFLOP/s |")
print("|------:|--------:|------------:|-------------:|-------------:|-------------:|-----------:|--------------:|")
for b, t in order:
    polis = statistics.median(vals[(b, t), "polis"])
    nchw = statistics.median(vals[(b, t), "pytorch-nchw"])
    nhwc = statistics.median(vals[(b, t), "pytorch-nhwc"])
    best = max(nchw, nhwc)
    best_name = "nchw" if nchw >= nhwc else "nhwc"
    print(f"| {b} | {t} | {polis:.1f} | {nchw:.1f} | {nhwc:.1f} | {best:.1f} ({best_name}) "
          f"| {polis / best:.2f} | {polis * mflop / 1000:.2f} |")
EOF
