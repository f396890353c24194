#!/usr/bin/env bash
# Quick back-to-back bootstrapping comparison, ferrolab (the `bootstrap_bench` example of
# ferrolab-fhe, which links only that crate) against OpenFHE's EvalBootstrap
# (bench/ckks_openfhe.py in bench/.venv-openfhe), one thread each, alternating sides per round
# so that both see the same machine state. For when the CLI (which links every crate) cannot be
# built; the full harness with disturbance checks is `BOOTSTRAP=1 bench/run_ckks_bench.sh`.
# Every line records the 1-minute load average before and after the run: on a shared machine
# (load above the core count) the times are indications, never published figures.
#
#   ROUNDS=1 SLOTS=4096 LEVELS_AFTER=9 OPENFHE_SCALE_BITS=59 bench/run_bootstrap_pair.sh
#
# SKIP_BUILD=1 uses the example as built (EX= another copy of it).
# ferrolab: N = 2^16 set n16_l<LEVELS_AFTER> (scale 2^40 for 9 levels). OpenFHE: sparse
# ternary secret, FLEXIBLEAUTO, level budget [3, 3], a (scale+1)-bit first prime and
# OPENFHE_SCALE_BITS-bit scaling primes (its own examples' 59: at ferrolab's 40 bits its
# bootstrapping returned ~1 bit), the same levels left and slot count.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-1}"
SLOTS="${SLOTS:-4096}"
LEVELS_AFTER="${LEVELS_AFTER:-9}"
SB="${OPENFHE_SCALE_BITS:-59}"
OUT="${OUT:-bench/results/bootstrap_pair.log}"
EX="${EX:-target/release/examples/bootstrap_bench}"
if [ -n "${SKIP_BUILD:-}" ]; then
    :
elif [ -n "${CARGO_LOCK:-}" ]; then
    flock "$CARGO_LOCK" cargo build --release -p ferrolab-fhe --example bootstrap_bench
else
    cargo build --release -p ferrolab-fhe --example bootstrap_bench
fi
OPY=bench/.venv-openfhe/bin/python
load() { cut -d' ' -f1 /proc/loadavg; }
{
    echo "# $(date -u +%FT%TZ) $(nproc) cores, rounds $ROUNDS, slots $SLOTS, levels after $LEVELS_AFTER"
    for r in $(seq 1 "$ROUNDS"); do
        for s in ${SLOTS//,/ }; do
            l0=$(load)
            line=$(RAYON_NUM_THREADS=1 "$EX" 16 "$LEVELS_AFTER" "$s" real 1 | grep '^log_n')
            echo "round $r ferrolab load $l0->$(load): $line"
            if [ -x "$OPY" ] && "$OPY" -c "import openfhe" 2>/dev/null; then
                l0=$(load)
                line=$(OMP_NUM_THREADS=1 "$OPY" bench/ckks_openfhe.py 16 "$((SB + 1)),$SB" 1 \
                    --bootstrap "$s" "$LEVELS_AFTER" --seed "$r" 2>/dev/null | tail -1)
                echo "round $r openfhe load $l0->$(load): $line"
            else
                echo "round $r openfhe: skipped (no CPython 3.10 with PyPI openfhe in bench/.venv-openfhe)"
            fi
        done
    done
} | tee -a "$OUT"
