#!/usr/bin/env bash
# ferrolab's RNS-CKKS against Microsoft SEAL (PyPI `tenseal`, whose `tenseal.sealapi` exposes
# SEAL itself) and, where a CPython 3.10 with PyPI `openfhe` is found, OpenFHE, on the same ring
# degree, modulus chain (the standard sets of `ferrolab ckks bench`), scale 2^40 and machine,
# one thread each, following bench/harness.py (separate processes in a shuffled order per round,
# equal warm-up, same allocator settings, median of rounds with min-max): per op the latency of
# each side and the ratio ferrolab / other (below 1: ferrolab is faster), and the precision
# (mean and worst bits over KEYSETS key sets x INPUTS random inputs per side). Writes
# bench/results/ckks_bench.{md,json}.
#
#   bench/run_ckks_bench.sh                     # N = 2^14 and 2^15, 5 rounds, 2 warm-up + 5 reps
#   LOG_N=14 ROUNDS=3 REPS=10 WARMUP=2 KEYSETS=3 INPUTS=20 bench/run_ckks_bench.sh
#   LOG_N=13 ROUNDS=1 REPS=2 KEYSETS=1 INPUTS=2 bench/run_ckks_bench.sh   # a quick check
#
# Bootstrapping (ferrolab ckks bootstrap-bench vs OpenFHE's EvalBootstrap, one thread each,
# KINDS=real (default), complex or real,complex; bench/results/ckks_bootstrap.{md,json} with
# metrics.bootstrap_ms_n16_s<slots>_<kind> and baselines.openfhe.bootstrap_ms_n16_s<slots>_<kind>;
# the OpenFHE side is skipped, saying so, without a CPython 3.10 openfhe):
#   BOOTSTRAP=1 LOG_N=16 SLOTS=4096,32768 KINDS=real,complex LEVELS_AFTER=9 ROUNDS=1 REPS=2 \
#       OPENFHE_SCALE_BITS=59 bench/run_ckks_bench.sh
#   BOOTSTRAP=1 LOG_N=13 SLOTS=512 ROUNDS=1 REPS=2 bench/run_ckks_bench.sh   # insecure quick check
#
# bench/harness.py also reads ORDER_SEED, TRIES, MAX_FOREIGN, IDLE_WAIT and ALLOCATOR.
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
# Pinned to the build every comparison here used (suffix .22.4: built for Ubuntu 22.04, glibc
# 2.35, which Debian 12's 2.36 runs); pip's newest is the .24.4 build, for Ubuntu 24.04.
if [ -x "$OVENV/bin/python" ] && ! "$OVENV/bin/python" -c "import openfhe" 2>/dev/null; then
    "$OVENV/bin/pip" install --quiet "openfhe==${OPENFHE_VERSION:-1.6.1.0.22.4}" numpy || true
fi
if [ -x "$OVENV/bin/python" ] && "$OVENV/bin/python" -c "import openfhe" 2>/dev/null; then
    export OPENFHE_PY="$ROOT/$OVENV/bin/python"
fi
export ROUNDS="${ROUNDS:-5}" REPS="${REPS:-5}" WARMUP="${WARMUP:-2}" LOG_N="${LOG_N:-14,15}"
export KEYSETS="${KEYSETS:-3}" INPUTS="${INPUTS:-20}"
# CARGO_LOCK=/path/to/lockfile runs each build under flock (machines shared with other builds).
cargo_build() {
    if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" cargo build "$@"; else cargo build "$@"; fi
}
cargo_build --release -p ferrolab
cargo_build --release -p ferrolab-fhe --example ckks_precision
if [ -n "${BOOTSTRAP:-}" ] && [ "${BOOTSTRAP}" != 0 ]; then
    export BENCH_COMMAND="BOOTSTRAP=1 ROUNDS=$ROUNDS REPS=$REPS LOG_N=$LOG_N SLOTS=${SLOTS:-4096,32768} KINDS=${KINDS:-real} LEVELS_AFTER=${LEVELS_AFTER:-9}${OPENFHE_SCALE_BITS:+ OPENFHE_SCALE_BITS=$OPENFHE_SCALE_BITS} bench/run_ckks_bench.sh${*:+ $*}"
    exec "$VENV/bin/python" bench/ckks_harness.py "$@"
fi
export BENCH_COMMAND="ROUNDS=$ROUNDS REPS=$REPS WARMUP=$WARMUP LOG_N=$LOG_N KEYSETS=$KEYSETS INPUTS=$INPUTS bench/run_ckks_bench.sh${*:+ $*}"
exec "$VENV/bin/python" bench/ckks_harness.py "$@"
