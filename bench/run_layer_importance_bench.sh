#!/usr/bin/env bash
# Layer importance (issue 17): the ground-truth sweep's evaluation throughput on ResNet-20
# against PyTorch's, same model, images and threads, under the discipline of bench/README.md
# (one side per process, order shuffled per round, equal warm-up, same malloc settings, median
# over rounds with min-max). Rows: full forward vs full forward, the sweep (cached stage
# inputs) vs the same sweep in torch, and the issue's target (ferrolab's sweep vs PyTorch's
# plain inference). Writes bench/results/layer_importance_bench.{md,json}.
#
#   bench/run_layer_importance_bench.sh                    # 2 threads, 3 rounds, 2000 images
#   ROUNDS=5 bench/run_layer_importance_bench.sh
#   IMAGES=500 ITERS=2 ROUNDS=2 bench/run_layer_importance_bench.sh   # short settings
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-1}"
ITERS="${ITERS:-3}"
SWEEPS="${SWEEPS:-1}"
IMAGES="${IMAGES:-2000}"
BATCH="${BATCH:-500}"
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch numpy
fi
# Several people share the build machine: the lock keeps concurrent cargo runs apart.
flock /tmp/cargo.lock cargo build --release -q -p ferrolab-compress --example layer_importance_bench
BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS ROUNDS=$ROUNDS WARMUP=$WARMUP ITERS=$ITERS SWEEPS=$SWEEPS IMAGES=$IMAGES BATCH=$BATCH bench/run_layer_importance_bench.sh}" \
  "$VENV/bin/python" bench/layer_importance_harness.py \
  --bin target/release/examples/layer_importance_bench --python "$VENV/bin/python" \
  --threads "$THREADS" --rounds "$ROUNDS" --warmup "$WARMUP" --iters "$ITERS" \
  --sweeps "$SWEEPS" --images "$IMAGES" --batch "$BATCH"
