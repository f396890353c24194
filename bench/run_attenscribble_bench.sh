#!/usr/bin/env bash
# AttenScribble's training step (`ferrolab attenscribble`'s network and losses, all four methods)
# against a PyTorch twin of the same network and losses, same batch and threads, under the
# discipline of bench/README.md (one case and side per process, order shuffled per round, equal
# warm-up, same malloc settings, median over rounds with min-max, ratio per round). Parameter
# counts and one loss value per case are checked equal before timing. Writes
# bench/results/$NAME.{md,json} (default attenscribble_bench).
#
#   bench/run_attenscribble_bench.sh                        # 2 threads, 5 rounds, default cases
#   ROUNDS=3 WARMUP=2 ITERS=5 bench/run_attenscribble_bench.sh
#   CASES=small:attenscribble,paper:attenscribble bench/run_attenscribble_bench.sh
#   NAME=attenscribble_bench_rerun bench/run_attenscribble_bench.sh   # another result file
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-3}"
ITERS="${ITERS:-10}"
NAME="${NAME:-attenscribble_bench}"
CASES="${CASES:-small:attenscribble,small:pce,small:pce_gcrf,small:full,paper:attenscribble,paper:pce_gcrf}"
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch numpy
fi
# Several people share the build machine: the lock keeps concurrent cargo runs apart.
flock /tmp/cargo.lock cargo build --release -q -p ferrolab-vision --example attenscribble_step_bench
BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS ROUNDS=$ROUNDS WARMUP=$WARMUP ITERS=$ITERS CASES=$CASES NAME=$NAME bench/run_attenscribble_bench.sh}" \
  "$VENV/bin/python" bench/attenscribble_harness.py --bin target/release/examples/attenscribble_step_bench \
  --python "$VENV/bin/python" --threads "$THREADS" --rounds "$ROUNDS" \
  --warmup "$WARMUP" --iters "$ITERS" --cases "$CASES" --name "$NAME"
