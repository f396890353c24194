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
# Installs tenseal into the git-ignored bench/.venv on first use, and OpenFHE (PyPI `openfhe`)
# into bench/.venv-openfhe where a CPython 3.10 is found (see below).
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
# OpenFHE's PyPI wheels carry a CPython 3.10 (or 3.8/3.12) extension that does not import
# under 3.11: where a 3.10 interpreter exists (OPENFHE_PYTHON, else pyenv's), it gets its own
# git-ignored venv bench/.venv-openfhe; without one the OpenFHE column is left out.
OVENV="bench/.venv-openfhe"
OPY="${OPENFHE_PYTHON:-$(ls -d "$HOME"/.pyenv/versions/3.10*/bin/python3.10 2>/dev/null | head -1)}"
if [ ! -x "$OVENV/bin/python" ] && [ -n "$OPY" ] && [ -x "$OPY" ]; then
    "$OPY" -m venv "$OVENV"
fi
if [ -x "$OVENV/bin/python" ] && ! "$OVENV/bin/python" -c "import openfhe" 2>/dev/null; then
    "$OVENV/bin/pip" install --quiet openfhe numpy || true
fi
if [ -x "$OVENV/bin/python" ] && "$OVENV/bin/python" -c "import openfhe" 2>/dev/null; then
    export OPENFHE_PY="$ROOT/$OVENV/bin/python"
fi
cargo build --release -p ferrolab
exec "$VENV/bin/python" bench/ckks_harness.py
