#!/usr/bin/env bash
# The runtime's share of a federated round with 40 in-process devices (issue 16: everything but
# local training < 5% of the round). Runs crates/fed/examples/sdgt_round_overhead.rs for the
# logistic model (whose local step is ~0.1 ms: the runtime's absolute cost dominates) and the
# reference CNN (the model the target is about), and writes one JSON line per (model,
# algorithm) with the medians over repetitions, their ranges and the load average to
# bench/results/sdgt_round_overhead.jsonl, preceded by a line naming date, commit and machine.
#
#   bench/sdgt_round_overhead.sh            # REPS_LOGREG=7 REPS_CNN=3 THREADS=1
#
# Each repetition runs the real model and the zero-cost model of the same size in a shuffled
# order (seeded); the overhead fraction is the median of the per-repetition ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS_LOGREG=${REPS_LOGREG:-7}
REPS_CNN=${REPS_CNN:-3}
THREADS=${THREADS:-1}
cargo build --release -p ferrolab-fed --example sdgt_round_overhead
BIN=target/release/examples/sdgt_round_overhead
OUT=bench/results/sdgt_round_overhead.jsonl
{
  printf '{"date":"%s","commit":"%s","cpus":%s,"threads":%s,"loadavg":"%s"}\n' \
    "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$(nproc)" "$THREADS" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
  "$BIN" --arch logreg --reps "$REPS_LOGREG" --rounds 5 --threads "$THREADS" \
    --algos sdgt,sd_fedavg,scaffold,gt,fedavg
  "$BIN" --arch cnn --reps "$REPS_CNN" --rounds 1 --threads "$THREADS" \
    --algos sdgt,sd_fedavg,scaffold
} | tee "$OUT"
