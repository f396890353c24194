#!/usr/bin/env bash
# Training-step time of ferrolab (burn flex CPU backend) against PyTorch (CPU) for the same
# three models, batch and thread count, under the discipline of bench/README.md (each side its
# own process, order shuffled per round, equal warm-up, same malloc settings on both sides,
# median over rounds with min-max). Writes bench/results/step_bench.{md,json}.
#
#   bench/run_step_bench.sh                   # 2 threads, warmup 5, 30 timed steps, 5 rounds
#   THREADS=1 ITERS=50 ROUNDS=7 bench/run_step_bench.sh
#   OPS=1 bench/run_step_bench.sh             # also time the CNN/attention kernels one by one
#   ALLOCATOR=default bench/run_step_bench.sh # both sides on glibc's default malloc settings
#
# The first run creates bench/.venv (git-ignored) and installs PyTorch from PyPI into it. PyPI's
# default Linux wheel is the CUDA build (about 3 GB with its nvidia-* wheels); it runs on the CPU
# here and is installed once: later runs find `import torch` working and skip pip.
set -euo pipefail

THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-5}"
ITERS="${ITERS:-30}"
ROUNDS="${ROUNDS:-5}"
OPS="${OPS:-0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="bench/.venv"
PY="$VENV/bin/python"

for v in THREADS WARMUP ITERS ROUNDS; do
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

# --- Measure and report (bench/step_harness.py on bench/harness.py) ---------------------------
HARNESS_ARGS=(--bin "$BIN" --python "$PY" --threads "$THREADS" --warmup "$WARMUP"
    --iters "$ITERS" --rounds "$ROUNDS")
if [[ "$OPS" == 1 ]]; then
    HARNESS_ARGS+=(--ops)
fi
BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS WARMUP=$WARMUP ITERS=$ITERS ROUNDS=$ROUNDS OPS=$OPS bench/run_step_bench.sh}" \
    "$PY" bench/step_harness.py "${HARNESS_ARGS[@]}"
