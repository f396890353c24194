#!/usr/bin/env bash
# TaskMet outer-step time on CubicTopK, ferrolab divided by the reference PyTorch code
# (github.com/bamos/taskmet, LODLs/, run unmodified on the CPU), same sizes, settings, warm-up and
# threads, under the discipline of bench/README.md (one side per process, order shuffled per
# round, same malloc settings, median over rounds with min-max); then both sides' normalised
# test decision quality, one full training run per seed and side. Writes
# bench/results/taskmet_reference.{md,json}.
#
#   bench/run_taskmet_reference.sh                        # 2 threads, 5 rounds, seeds 0 1 2
#   THREADS=1 ROUNDS=7 TRAIN_SEEDS="0 1 2 3 4" bench/run_taskmet_reference.sh
#   TRAIN_SEEDS= bench/run_taskmet_reference.sh           # timing only
#
# The reference's code is materialised (git archive, never edited, never committed) into the
# git-ignored bench/.cache/taskmet/ from TASKMET_REPO (a local clone or mirror; default the
# workplace mirror, else a fresh clone). Its Python dependencies go into the git-ignored
# bench/.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-3}"
STEPS="${STEPS:-20}"
SEED="${SEED:-0}"
TRAIN_SEEDS="${TRAIN_SEEDS-0 1 2}"
VENV=bench/.venv
CACHE=bench/.cache/taskmet
REF="$CACHE/LODLs"
TASKMET_REPO="${TASKMET_REPO:-/work/.mirror/bamos+taskmet/repo}"

mkdir -p "$CACHE"
if [ ! -f "$REF/main.py" ]; then
  if ! git -C "$TASKMET_REPO" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    TASKMET_REPO="$CACHE/repo.git"
    [ -d "$TASKMET_REPO" ] || git clone --bare --quiet https://github.com/bamos/taskmet "$TASKMET_REPO"
  fi
  git -C "$TASKMET_REPO" archive HEAD LODLs | tar x -C "$CACHE"
  git -C "$TASKMET_REPO" rev-parse HEAD >"$CACHE/COMMIT"
fi
if [ ! -s "$CACHE/COMMIT" ]; then
  git -C "$TASKMET_REPO" rev-parse HEAD >"$CACHE/COMMIT" 2>/dev/null || echo '?' >"$CACHE/COMMIT"
fi
REF_COMMIT="$(cat "$CACHE/COMMIT")"

# What CubicTopK with the metric method imports (main.py, workspace.py, losses.py, models.py and
# the problem modules they import), plus hydra's submitit launcher, whose settings main.yaml sets.
PKGS="torch numpy pandas scipy networkx matplotlib torchopt cvxpy cvxpylayers hydra-core \
omegaconf hydra-submitit-launcher setproctitle quandl ipython"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch, numpy, pandas, scipy, networkx, matplotlib, torchopt, \
cvxpy, cvxpylayers, hydra, omegaconf, hydra_plugins.hydra_submitit_launcher, setproctitle, \
quandl, IPython" 2>/dev/null; then
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet $PKGS
fi

flock /tmp/cargo.lock cargo build --release -q -p ferrolab-dfl --example taskmet_cubic_step
BENCH_COMMAND="${BENCH_COMMAND:-THREADS=$THREADS ROUNDS=$ROUNDS WARMUP=$WARMUP STEPS=$STEPS TRAIN_SEEDS=\"$TRAIN_SEEDS\" bench/run_taskmet_reference.sh}" \
  "$VENV/bin/python" bench/taskmet_harness.py --bin target/release/examples/taskmet_cubic_step \
  --python "$VENV/bin/python" --ref "$REF" --ref-commit "$REF_COMMIT" --threads "$THREADS" \
  --rounds "$ROUNDS" --warmup "$WARMUP" --steps "$STEPS" --seed "$SEED" \
  --train-seeds "$TRAIN_SEEDS"
