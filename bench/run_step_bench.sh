#!/usr/bin/env bash
# Training-step time of ferrolab (burn 0.22.1, flex CPU backend) against PyTorch (CPU) for the
# same three models, batch and thread count; prints model, ferrolab ms, PyTorch ms and the ratio
# ferrolab/PyTorch, and writes the same table to bench/results/step_bench.md.
#
#   bench/run_step_bench.sh                   # 2 threads, warmup 5, 30 timed steps, 3 rounds
#   THREADS=1 ITERS=50 ROUNDS=5 bench/run_step_bench.sh
#   OPS=1 bench/run_step_bench.sh             # also time the CNN/attention kernels one by one
#   MALLOC_TUNING=0 bench/run_step_bench.sh   # ferrolab side on glibc's default malloc settings
#
# The first run creates bench/.venv (git-ignored) and installs PyTorch from PyPI into it. PyPI's
# default Linux wheel is the CUDA build (about 3 GB with its nvidia-* wheels); it runs on the CPU
# here and is installed once: later runs find `import torch` working and skip pip.
#
# bench/step_harness.py runs, for each round and model, the Rust example and then the Python
# script, each as its own process reporting the median step time over ITERS steps; a run during
# which other processes used the CPUs is repeated (PyTorch's OpenMP threads spin at barriers, and
# beside another busy process its step time can grow tenfold). The table keeps, per model and
# side, the fastest of the ROUNDS medians. The ferrolab side gets the malloc settings that the
# `ferrolab` binary applies at start-up (see bench/step_harness.py).
set -euo pipefail

THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-5}"
ITERS="${ITERS:-30}"
ROUNDS="${ROUNDS:-3}"
OPS="${OPS:-0}"
MALLOC_TUNING="${MALLOC_TUNING:-1}"
TRIES="${TRIES:-4}"          # attempts per run that other processes disturbed
IDLE_WAIT="${IDLE_WAIT:-120}" # seconds to wait for a quiet machine before each retry

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="bench/.venv"
PY="$VENV/bin/python"
OUT_MD="bench/results/step_bench.md"

for v in THREADS WARMUP ITERS ROUNDS TRIES IDLE_WAIT; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [[ "${!v}" -lt 1 && "$v" != WARMUP ]]; then
        echo "error: $v must be a positive integer (got '${!v}')" >&2
        exit 2
    fi
done

# --- Python environment (idempotent) --------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    echo ">> creating $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo ">> installing torch (and numpy, which it warns without) into $VENV (large download, done once)" >&2
    "$PY" -m pip install --quiet torch numpy
fi

# --- Rust example ------------------------------------------------------------------------------
echo ">> building crates/core/examples/train_step_bench.rs (release)" >&2
cargo build --release --quiet -p ferrolab-core --example train_step_bench
BIN="$ROOT/target/release/examples/train_step_bench"

# --- Measure and report (bench/step_harness.py) ---------------------------------------------------
LOAD="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if awk -v l="$LOAD" 'BEGIN { exit !(l > 0.7) }'; then
    echo "note: load average is $LOAD; runs disturbed by other processes will be repeated" >&2
fi
HARNESS_ARGS=(--bin "$BIN" --python "$PY" --threads "$THREADS" --warmup "$WARMUP"
    --iters "$ITERS" --rounds "$ROUNDS" --tries "$TRIES" --idle-wait "$IDLE_WAIT" --out "$OUT_MD")
if [[ "$OPS" == 1 ]]; then
    HARNESS_ARGS+=(--ops)
fi
if [[ "$MALLOC_TUNING" == 0 ]]; then
    HARNESS_ARGS+=(--no-malloc-tuning)
fi
"$PY" bench/step_harness.py "${HARNESS_ARGS[@]}"
