#!/usr/bin/env bash
# bf16 against fp32 on the CPU (docs/design/cpu-bf16.md), side by side, on
# the seed CNN (jobs/fashion_cnn.pbtxt) with real Fashion-MNIST data:
#  (a) training throughput (polis-bench-train, forward + backward + Adam) at
#      batch 32 and 64 with 1 and 2 threads; fp32 and bf16 runs alternate in
#      each round so drift on a shared VM hits both alike; the table gives
#      the median over rounds (each run's value is itself the median of its
#      timed blocks) and the bf16/fp32 ratio;
#  (b) test accuracy after EPOCHS epochs of single-process training
#      (polis-bench-train --epochs), fp32 and bf16 from the same seed.
#
# Usage: benchmarks/cpu_bf16.sh [--build DIR] [--rounds N] [--epochs N] [--quick]
#   --build DIR  build directory (default: <repo>/build), holding
#                benchmarks/polis-bench-train
#   --rounds N   throughput rounds per configuration (default 5)
#   --epochs N   epochs for the accuracy comparison (default 5)
#   --quick      1 round of 50 steps and 1 epoch (a smoke run)
#
# Every command line is printed (lines starting with '$'); the report
# (markdown) goes to stdout, progress to stderr. Exits non-zero if a run fails.
set -euo pipefail

PY=/usr/bin/python3
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$REPO_ROOT/build"
ROUNDS=5 EPOCHS=5 STEPS=200 WARMUP=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) [[ $# -ge 2 ]] || { echo "error: --build needs a directory" >&2; exit 1; }
             BUILD="$2"; shift 2 ;;
    --rounds) [[ $# -ge 2 ]] || { echo "error: --rounds needs a number" >&2; exit 1; }
              ROUNDS="$2"; shift 2 ;;
    --epochs) [[ $# -ge 2 ]] || { echo "error: --epochs needs a number" >&2; exit 1; }
              EPOCHS="$2"; shift 2 ;;
    --quick) ROUNDS=1 EPOCHS=1 STEPS=50 WARMUP=5; shift ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --rounds must be a positive integer, got '$ROUNDS'" >&2; exit 1; }
[[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --epochs must be a positive integer, got '$EPOCHS'" >&2; exit 1; }
BIN="$BUILD/benchmarks/polis-bench-train"
[[ -x "$BIN" ]] || { echo "error: $BIN not found or not executable (build the polis-bench-train target)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polis-cpu-bf16.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
: > "$WORK/throughput.tsv"

# run OUT CMD...: prints the command line, runs it with its stdout in OUT.
run() {
  local out="$1"; shift
  local line="$*"
  echo "\$ ${line//$REPO_ROOT\//}"   # paths relative to the repository
  if ! "$@" > "$out" 2> "$WORK/err.txt"; then
    echo "error: failed: $*" >&2
    cat "$WORK/err.txt" >&2
    exit 1
  fi
}

CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*:[[:space:]]*//')"
BF16_FLAG="$(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no)"
echo "## BF16 on the CPU: seed CNN, fp32 vs bf16"
echo
echo "- Command: \`benchmarks/cpu_bf16.sh --rounds $ROUNDS --epochs $EPOCHS\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- CPU: ${CPU_MODEL:-unknown}, nproc $(nproc), AVX512_BF16: $BF16_FLAG"
echo

echo "### Commands"
echo
echo '```'
for cfg in "32 1" "64 1" "32 2" "64 2"; do
  read -r B T <<< "$cfg"
  for ((r = 1; r <= ROUNDS; r++)); do
    for P in fp32 bf16; do
      echo "[batch $B, threads $T, $P] round $r/$ROUNDS" >&2
      run "$WORK/out.json" env OMP_NUM_THREADS="$T" "$BIN" --batch "$B" --threads "$T" \
        --steps "$STEPS" --warmup "$WARMUP" --precision "$P" --json
      "$PY" -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(sys.argv[2], sys.argv[3], sys.argv[4], r["images_per_second"], sep="\t")' \
        "$WORK/out.json" "$B" "$T" "$P" >> "$WORK/throughput.tsv"
    done
  done
done
for P in fp32 bf16; do
  echo "[$EPOCHS epochs, $P]" >&2
  run "$WORK/epochs-$P.json" env OMP_NUM_THREADS=2 "$BIN" --threads 2 --epochs "$EPOCHS" --precision "$P" --json
done
echo '```'
echo

"$PY" - "$WORK" "$ROUNDS" "$STEPS" "$WARMUP" <<'EOF'
import json, statistics, sys
from collections import defaultdict

work, rounds, steps, warmup = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
vals = defaultdict(list)
order = []
for line in open(f"{work}/throughput.tsv"):
    b, t, p, v = line.split()
    if (b, t) not in order:
        order.append((b, t))
    vals[b, t, p].append(float(v))
print(f"### (a) Training throughput (images/s; median of {rounds} rounds, "
      f"{steps} steps + {warmup} warm-up each)")
print()
print("| batch | threads | fp32 | bf16 | bf16/fp32 |")
print("|---:|---:|---:|---:|---:|")
for b, t in order:
    f = statistics.median(vals[b, t, "fp32"])
    h = statistics.median(vals[b, t, "bf16"])
    print(f"| {b} | {t} | {f:.0f} | {h:.0f} | {h / f:.2f}x |")
print()
runs = {p: json.loads(open(f"{work}/epochs-{p}.json").read().splitlines()[-1]) for p in ("fp32", "bf16")}
f, h = runs["fp32"], runs["bf16"]
print(f"### (b) Test accuracy after {f['epochs']} epochs (batch {f['batch']}, seed {f['seed']}, "
      f"{f['threads']} threads; evaluated in fp32)")
print()
print("| epoch | fp32 train loss | fp32 test acc. | bf16 train loss | bf16 test acc. |")
print("|---:|---:|---:|---:|---:|")
for a, c in zip(f["per_epoch"], h["per_epoch"]):
    print(f"| {a['epoch']} | {a['train_loss']:.4f} | {a['test_accuracy']:.2f}% "
          f"| {c['train_loss']:.4f} | {c['test_accuracy']:.2f}% |")
print()
print(f"- Final test accuracy: fp32 {f['test_accuracy']:.2f}%, bf16 {h['test_accuracy']:.2f}% "
      f"(bf16 - fp32: {h['test_accuracy'] - f['test_accuracy']:+.2f} points)")
print(f"- Training time: fp32 {f['train_seconds']:.1f} s, bf16 {h['train_seconds']:.1f} s "
      f"({f['train_seconds'] / h['train_seconds']:.2f}x)")
bf16_layers = sorted({k.split()[1] for k in h["kernels"] if " bf16:" in k}, key=int)
print(f"- Layers computing in bf16: {', '.join(bf16_layers) or 'none'} "
      f"(kernels: {'; '.join(k for k in h['kernels'] if ' bf16:' in k)})")
EOF
