#!/usr/bin/env bash
# One FedAvg round of GCN on Cora with 5 in-process clients (issue 18's speed target):
# `ferrolab fedgraph`'s round vs a PyTorch Geometric script doing the same round (5 clients,
# full-batch GCN, 4 local SGD steps, FedAvg, the server's whole-graph evaluation), under the
# discipline of bench/README.md (each side its own process, order shuffled per round, same
# malloc settings and threads, disturbed runs repeated, medians over rounds with min-max).
# Writes bench/results/fedgraph_pyg.{md,json}.
#
#   bench/run_fedgraph_pyg.sh                          # 2 threads, 5 rounds, 5 + 20 FL rounds
#   THREADS=1 bench/run_fedgraph_pyg.sh
#   ROUNDS=2 WARMUP=2 ITERS=5 bench/run_fedgraph_pyg.sh  # a quick try
#   BUILD=0 bench/run_fedgraph_pyg.sh                  # use the example as already built
#
# Cora comes from the usual data lookup (FERROLAB_DATA, ...). Both sides train the client
# subgraphs of `ferrolab fedgraph`'s seed 0, exported once by the example.
set -euo pipefail
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-5}"
ITERS="${ITERS:-20}"
CARGO="${CARGO:-cargo}" # e.g. CARGO="flock /tmp/cargo.lock cargo" where builds must not overlap
for v in THREADS ROUNDS ITERS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [[ "${!v}" -lt 1 ]]; then
        echo "error: $v must be a positive integer (got '${!v}')" >&2
        exit 2
    fi
done
if ! [[ "$WARMUP" =~ ^[0-9]+$ ]]; then
    echo "error: WARMUP must be a non-negative integer (got '$WARMUP')" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV=bench/.venv
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c "import torch_geometric" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet torch torch_geometric numpy
fi
BIN=target/release/examples/fedgraph_round_bench
if [ "${BUILD:-1}" != 0 ] || [ ! -x "$BIN" ]; then
    echo ">> building the fedgraph_round_bench example (release)" >&2
    $CARGO build --release -q -p ferrolab-fed --example fedgraph_round_bench
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" --export "$WORK/cora_clients.npz"
BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS ROUNDS=$ROUNDS WARMUP=$WARMUP ITERS=$ITERS bench/run_fedgraph_pyg.sh}" \
    "$PY" bench/fedgraph_harness.py --bin "$BIN" --npz "$WORK/cora_clients.npz" \
    --python "$PY" --threads "$THREADS" --rounds "$ROUNDS" --warmup "$WARMUP" --iters "$ITERS"
