#!/usr/bin/env bash
# Vision models: ferrolab's training-step time, inference time and memory added by training,
# divided by PyTorch's for the same model, batch and threads (ResNet-20 [128,1,32,32], UNet
# [8,1,128,128], YOLO-tiny [16,3,128,128]), under the discipline of bench/README.md (one model
# and side per process, order shuffled per round, equal warm-up, same malloc settings, median
# over rounds with min-max). ferrolab's steps run on a pool worker, as its training loops run
# them (NO_POOL=1: from the main thread, the way before). Writes bench/results/$NAME.{md,json}
# (default vision_bench).
#
#   bench/run_vision_bench.sh                          # 2 threads, 5 rounds, all models
#   ROUNDS=3 MODELS=resnet20 bench/run_vision_bench.sh
#   WARMUP=2 ITERS=5 ROUNDS=3 bench/run_vision_bench.sh  # short settings
#   NO_POOL=1 NAME=vision_bench_nopool bench/run_vision_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-3}"
ITERS="${ITERS:-10}"
MODELS="${MODELS:-resnet20,unet,yolo}"
NAME="${NAME:-vision_bench}"
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch numpy
fi
# Several people share the build machine: the lock keeps concurrent cargo runs apart.
flock /tmp/cargo.lock cargo build --release -q -p ferrolab-vision --example vision_step_bench
BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS ROUNDS=$ROUNDS WARMUP=$WARMUP ITERS=$ITERS MODELS=$MODELS NAME=$NAME${NO_POOL:+ NO_POOL=1} bench/run_vision_bench.sh}" \
  "$VENV/bin/python" bench/vision_harness.py --bin target/release/examples/vision_step_bench \
  --python "$VENV/bin/python" --threads "$THREADS" --rounds "$ROUNDS" \
  --warmup "$WARMUP" --iters "$ITERS" --models "$MODELS" --name "$NAME" ${NO_POOL:+--no-pool}
