#!/usr/bin/env bash
# ferrolab's RNS-CKKS against Microsoft SEAL (PyPI `tenseal`, whose `tenseal.sealapi` exposes
# SEAL itself) on the same ring degree, modulus chain (the standard sets of
# `ferrolab ckks bench`), scale 2^40 and machine, one thread each; prints per op the latency of
# each side and the ratio ferrolab / SEAL (below 1: ferrolab is faster), and writes
# bench/results/ckks_bench.md.
#
#   bench/run_ckks_bench.sh                     # N = 2^14 and 2^15, 5 reps, 2 rounds
#   LOG_N=14 REPS=10 ROUNDS=3 bench/run_ckks_bench.sh
#
# Installs tenseal into the git-ignored bench/.venv on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="bench/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import tenseal" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet tenseal numpy
fi
cargo build --release -p ferrolab
exec "$VENV/bin/python" bench/ckks_harness.py
