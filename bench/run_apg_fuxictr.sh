#!/usr/bin/env bash
# DeepFM+APG on MovieLens-100k: ferrolab vs FuxiCTR's APG_DeepFM, training time per row and test
# AUC, under the shared discipline of bench/harness.py (each (round, side) its own process, order
# shuffled per round, same threads and malloc settings on both sides, disturbed runs repeated,
# medians over rounds with min-max). Round r trains seed r on both sides, on the split ferrolab
# makes for seed r, so the rounds also give the seed spread of the AUC. Writes
# bench/results/apg_fuxictr.{md,json}.
#
#   bench/run_apg_fuxictr.sh                           # 2 threads, 3 rounds, <= 4 epochs
#   EPOCHS=1 ROUNDS=1 bench/run_apg_fuxictr.sh         # a quick try
#   TRIES=2 IDLE_WAIT=20 bench/run_apg_fuxictr.sh      # on a machine other work also uses
#   CARGO="flock /tmp/cargo.lock cargo" bench/run_apg_fuxictr.sh   # builds must not overlap
#
# Needs MovieLens-100k where `ferrolab` finds it (FERROLAB_DATA, default ../shared/data) and
# FuxiCTR's model_zoo/APG/src at commit 0245987 in bench/.cache/fuxictr_apg/APG_src (or
# FUXICTR_APG_SRC); bench/apg_fuxictr.py says how to get it when it is missing. The first run
# creates bench/.venv (git-ignored) and installs torch, fuxictr and scikit-learn from PyPI.
set -euo pipefail
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
EPOCHS="${EPOCHS:-4}"
PATIENCE="${PATIENCE:-2}"
CARGO="${CARGO:-cargo}"
for v in THREADS ROUNDS EPOCHS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [[ "${!v}" -lt 1 ]]; then
        echo "error: $v must be a positive integer (got '${!v}')" >&2
        exit 2
    fi
done
if ! [[ "$PATIENCE" =~ ^[0-9]+$ ]]; then
    echo "error: PATIENCE must be a non-negative integer (got '$PATIENCE'; 0 = no early stopping)" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FERROLAB_DATA="${FERROLAB_DATA:-$ROOT/../shared/data}"
VENV=bench/.venv
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
    echo ">> creating $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! "$PY" -c "import torch, fuxictr, sklearn" >/dev/null 2>&1; then
    echo ">> installing torch, fuxictr 2.3.10, scikit-learn into $VENV" >&2
    "$PY" -m pip install --quiet torch "fuxictr==2.3.10" scikit-learn  # the anchor's version
fi
echo ">> building ferrolab (release)" >&2
$CARGO build --release -q -p ferrolab

BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS ROUNDS=$ROUNDS EPOCHS=$EPOCHS PATIENCE=$PATIENCE bench/run_apg_fuxictr.sh}" \
    "$PY" bench/apg_fuxictr.py --python "$PY" --ferrolab target/release/ferrolab \
    --data-dir "$FERROLAB_DATA" --threads "$THREADS" --rounds "$ROUNDS" --epochs "$EPOCHS" \
    --patience "$PATIENCE"
