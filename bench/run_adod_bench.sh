#!/usr/bin/env bash
# ADOD's five detectors (`ferrolab adod`'s networks and training objective: YOLOv3-tiny, + residual
# attention, + domain classifier, DG-YOLO-style, ADOD) against PyTorch twins, training step and
# inference, same batch and threads, under the discipline of bench/README.md (one case and side
# per process, order shuffled per round, equal warm-up, same malloc settings, median over rounds
# with min-max, ratio per round). Parameter counts and the loss / IRM penalty of fixed head
# outputs are checked equal before timing. Writes bench/results/$NAME.{md,json} (default adod_bench).
#
#   bench/run_adod_bench.sh                                  # 2 threads, 5 rounds, paper preset
#   ROUNDS=3 WARMUP=2 ITERS=5 bench/run_adod_bench.sh
#   CASES=paper:yolo,paper:adod bench/run_adod_bench.sh
#   THREADS=1 NAME=adod_bench_1thread bench/run_adod_bench.sh   # another result file
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-3}"
ITERS="${ITERS:-10}"
NAME="${NAME:-adod_bench}"
CASES="${CASES:-paper:yolo,paper:yolo_attention,paper:yolo_domain,paper:dg_yolo,paper:adod}"
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch numpy
fi
# Several people share the build machine: the lock keeps concurrent cargo runs apart.
flock /tmp/cargo.lock cargo build --release -q -p ferrolab-vision --example adod_step_bench
BENCH_COMMAND="${BENCH_COMMAND:-${TRIES:+TRIES=$TRIES }${IDLE_WAIT:+IDLE_WAIT=$IDLE_WAIT }THREADS=$THREADS ROUNDS=$ROUNDS WARMUP=$WARMUP ITERS=$ITERS CASES=$CASES NAME=$NAME bench/run_adod_bench.sh}" \
  "$VENV/bin/python" bench/adod_harness.py --bin target/release/examples/adod_step_bench \
  --python "$VENV/bin/python" --threads "$THREADS" --rounds "$ROUNDS" \
  --warmup "$WARMUP" --iters "$ITERS" --cases "$CASES" --name "$NAME"
