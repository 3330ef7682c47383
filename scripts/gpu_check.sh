#!/usr/bin/env bash
# The GPU path in one prepared run: the train step's speed for MS-TCN and Li et al.'s
# joint model at T = 1024 / 4096 / 16384 in float32 and bfloat16 compute, the I3D
# forward (hhjax against the PyTorch reference, float32 and bfloat16), the
# extractor's parts (I3D dense and fast modes, TV-L1 pairs/s a chunk per call, pairs one
# after another and side by side, beside OpenCV's CPU TV-L1) and the whole extractor on
# a real clip with and without decoding in a background thread.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        # default: $OUT, else ./gpu_check_out
#
# Writes into OUT_DIR: env.txt (device, versions), train_<network>_<precision>.jsonl
# (4 files), i3d.jsonl, extract.txt, end_to_end.txt and log.txt (everything printed):
# 9 files. Each part has its own time limit, so one that hangs
# or fails leaves the others' figures; the exit status is the number of parts that
# failed. On a machine without hhjax's dependencies, put their wheels in .whl/ (see
# docs/BENCHMARKS.md, "The GPU path"): they are installed into /tmp/site first.
#
# GPU_CHECK_SMOKE=1 runs every part at toy sizes (a check of the script itself, on any
# machine, in a few minutes on a CPU).
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/log.txt"
: > "$LOG"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl >> "$LOG" 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"

if [ "${GPU_CHECK_SMOKE:-0}" = "1" ]; then
  LENGTHS="32 64"; TRAIN_CONFIG=configs/tiny.py; TRAIN_REPEATS=1
  I3D_ARGS="--frames 8 --size 64 --steps 1 --repeats 1"
  EXTRACT_ARGS="--window 9 --chunk 16 --margin 4 --batch-size 1 --pairs 2 --flow-size 32 --flow-scales 2 --flow-iterations 2 --flow-outer 1"
  E2E_ARGS="--chunk 16 --margin 4 --batch-size 1 --end-to-end 24 --end-to-end-flow reduced --flow-size 32 --flow-scales 2 --flow-iterations 2 --flow-outer 1"
  TRAIN_LIMIT=300; I3D_LIMIT=300; EXTRACT_LIMIT=300; E2E_LIMIT=300
else
  LENGTHS="1024 4096 16384"; TRAIN_CONFIG=configs/hha300.py; TRAIN_REPEATS=5
  I3D_ARGS="--frames 64 --size 224 --steps 5 --repeats 2"
  EXTRACT_ARGS="--pairs 16 --batch-size 8 --repeats 3"
  E2E_ARGS="--batch-size 8 --end-to-end 128"
  # Within one 10-minute device command: 4 x 65 + 110 + 100 + 90 s at most.
  TRAIN_LIMIT=65; I3D_LIMIT=110; EXTRACT_LIMIT=100; E2E_LIMIT=90
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
      || echo "nvidia-smi: none"
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print('devices', jax.devices())"
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt" | tee -a "$LOG"

failed=0
part() {  # part NAME LIMIT_S OUTPUT_FILE COMMAND...
  local name=$1 limit=$2 out=$3; shift 3
  echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out" 2>> "$LOG"
  local rc=$?
  cat "$out" >> "$LOG"
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
  [ "$rc" = 0 ] || failed=$((failed + 1))
}

# One part per (network, precision), so that a slow one leaves the others' rows.
for segmenter in mstcn conv_transformer; do
  for dtype in float32 bfloat16; do
    # shellcheck disable=SC2086  # the size list is meant to split into arguments
    part "train $segmenter $dtype" "$TRAIN_LIMIT" "$OUT_DIR/train_${segmenter}_$dtype.jsonl" \
        "$PY" -m hhjax.bench train --config "$TRAIN_CONFIG" --segmenter "$segmenter" \
        --compute-dtype "$dtype" --length $LENGTHS --batch-size 1 \
        --repeats "$TRAIN_REPEATS" --json
  done
done
# shellcheck disable=SC2086
part i3d "$I3D_LIMIT" "$OUT_DIR/i3d.jsonl" "$PY" -m hhjax.bench i3d \
    --precision float32 bfloat16 $I3D_ARGS --json
# shellcheck disable=SC2086
part extract "$EXTRACT_LIMIT" "$OUT_DIR/extract.txt" "$PY" scripts/bench_extract.py $EXTRACT_ARGS
# shellcheck disable=SC2086
part "end to end" "$E2E_LIMIT" "$OUT_DIR/end_to_end.txt" "$PY" scripts/bench_extract.py \
    --skip-i3d --skip-flow $E2E_ARGS

echo "=== done: $failed part(s) failed; figures in $OUT_DIR" | tee -a "$LOG"
exit "$failed"
