#!/usr/bin/env bash
# SECNN / Kim-CNN training-step time: ferrolab divided by PyTorch, same architecture, batch,
# sentence length, optimiser and threads, under the discipline of bench/README.md (one model
# and side per process, order shuffled per round, equal warm-up, same malloc settings, median
# over rounds with min-max). Writes bench/results/$NAME.{md,json} (default secnn_step_bench).
#
#   bench/run_secnn_bench.sh                  # 2 threads, length 22, 5 rounds
#   THREADS=1 ROUNDS=7 LEN=40 bench/run_secnn_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
LEN="${LEN:-22}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-5}"
ITERS="${ITERS:-30}"
NAME="${NAME:-secnn_step_bench}"
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch numpy
fi
cargo build --release -q -p ferrolab-text --example secnn_step_bench
BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS LEN=$LEN ROUNDS=$ROUNDS NAME=$NAME bench/run_secnn_bench.sh}" \
  "$VENV/bin/python" bench/secnn_harness.py --bin target/release/examples/secnn_step_bench \
  --python "$VENV/bin/python" --threads "$THREADS" --len "$LEN" --rounds "$ROUNDS" \
  --warmup "$WARMUP" --iters "$ITERS" --name "$NAME"
