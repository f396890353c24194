#!/usr/bin/env bash
# The reference's own CartPole-with-distractors code (github.com/bamos/taskmet, branch omd,
# commit 8ffbf5a "experiments to neurips", the commit that made the paper's figure), run on this
# machine's CPU at our budget, so its MLE / TaskMet ("metric") / OMD agents can be set beside
# ours (crates/dfl/README.md, "CartPole with distractors").
#
#   bench/run_taskmet_cartpole_reference.sh OUT STEPS K "SEEDS" [AGENTS]
#   bench/run_taskmet_cartpole_reference.sh /tmp/ref 50000 64 "0 1" "mle metric"
#   python3 bench/taskmet_cartpole_reference_summary.py /tmp/ref 5
#
# Agents of one seed run side by side (one process each, one XLA thread each); seeds one after
# another. Each run writes OUT/<agent>-s<seed>/eval.log (the reference's CSV of evaluations)
# and OUT/<agent>-s<seed>.log (its console output, with the metric weights on every train line).
# The code is materialised (git archive, never edited, never committed) into the git-ignored
# bench/.cache/taskmet-omd/ from TASKMET_REPO (a local clone or mirror; default the workplace
# mirror, else a fresh clone); its Python dependencies go into the git-ignored
# bench/.venv-taskmet-rl, pinned to the last JAX line that still runs it with three renamed
# calls shimmed (bench/taskmet_cartpole_reference_launch.py says which and why). The reference
# computes in float64 (`jax_enable_x64`), as ours does.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
OUT="$1"
STEPS="$2"
K="$3"
SEEDS="$4"
AGENTS="${5:-mle metric}"
COMMIT=8ffbf5af1934abc3c1478810bd16326ea65d6172
VENV=bench/.venv-taskmet-rl
CACHE=bench/.cache/taskmet-omd
REF="$CACHE/omd/cartpole"
TASKMET_REPO="${TASKMET_REPO:-/work/.mirror/bamos+taskmet/repo}"

for a in $AGENTS; do
  case "$a" in mle|metric|omd) ;; *) echo "unknown agent '$a' (mle, metric, omd)" >&2; exit 2 ;; esac
done
mkdir -p "$CACHE" "$OUT"
if [ ! -f "$REF/main.py" ]; then
  if ! git -C "$TASKMET_REPO" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
    TASKMET_REPO="$CACHE/repo.git"
    [ -d "$TASKMET_REPO" ] || git clone --bare --quiet https://github.com/bamos/taskmet "$TASKMET_REPO"
  fi
  git -C "$TASKMET_REPO" archive "$COMMIT" omd/cartpole | tar x -C "$CACHE"
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import jax, haiku, optax, jaxopt, chex, gym, omegaconf, absl, termcolor, cloudpickle, pandas, matplotlib, yaml" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet "jax==0.4.23" "jaxlib==0.4.23" "numpy==1.26.4" "scipy==1.11.4" \
    "dm-haiku==0.0.11" "optax==0.1.7" "chex==0.1.85" "jaxopt==0.8.2" "gym==0.25.2" omegaconf \
    absl-py termcolor cloudpickle "pandas<2.2" matplotlib pyyaml
fi
OUT_ABS="$(cd "$OUT" && pwd)"
for s in $SEEDS; do
  pids=()
  for a in $AGENTS; do
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" OMP_NUM_THREADS=1 \
      "$VENV/bin/python" bench/taskmet_cartpole_reference_launch.py "$REF" agent_type="$a" \
      dim_distract="$K" num_train_steps="$STEPS" seed="$s" use_wandb=False \
      out_dir="$OUT_ABS/$a-s$s" >"$OUT_ABS/$a-s$s.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
done
python3 bench/taskmet_cartpole_reference_summary.py "$OUT" 5
