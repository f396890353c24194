#!/usr/bin/env bash
# TaskMet's CartPole-with-distractors sweep (crates/dfl/README.md, "CartPole"): MSE, TaskMet and
# OMD dynamics models, one process per (k, seed), each writing its own JSON, so an interrupted
# sweep resumes by rerunning this script (finished (k, seed) files are skipped).
#
#   bench/taskmet_cartpole_sweep.sh OUT_DIR [STEPS] [KS] [SEEDS]
#
# Defaults: 20000 environment steps, k = "0 64 256", seeds "0 1 2", the reference's joint
# normal-equation CG, one thread, and METRIC (default "--diagonal": the state-conditioned
# diagonal metric the sweeps before 2026-11-30 used; METRIC= gives the per-dimension metric
# of the reference's figure, METRIC=--full-metric the lower-triangular one). LOSSES=omd (say) runs only those models;
# EXTRA="--reference-stale-model-adam" (say) passes flags to every run (--plain-cg: the
# next-state-only plain CG used before 2026-11-29). Summaries: python3 bench/taskmet_cartpole_summary.py OUT_DIR
#
# Long agents (TaskMet at k = 256 runs for hours): CHECKPOINT=1 keeps each run's checkpoint in
# OUT_DIR/checkpoints (every 10 minutes), so rerunning the script continues an agent where it
# stopped instead of starting it again; STOP_AT="2026-12-05 07:00" (any `date -d` time) saves
# and stops the sweep at that time (the next run of the script continues it). The figures equal
# an uninterrupted run's.
set -euo pipefail
out=${1:?usage: taskmet_cartpole_sweep.sh OUT_DIR [STEPS] [KS] [SEEDS]}
steps=${2:-20000}
ks=${3:-"0 64 256"}
seeds=${4:-"0 1 2"}
bin=${CARTPOLE_BIN:-target/release/examples/cartpole}
losses=${LOSSES:-mse,taskmet,omd}
tag=${LOSSES:+-${LOSSES//,/-}}
mkdir -p "$out"
echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) steps $steps" >>"$out/sweep.log"
for k in $ks; do
  for s in $seeds; do
    f="$out/k$k-seed$s$tag.json"
    [ -s "$f" ] && continue
    ck=()
    if [ -n "${CHECKPOINT:-}" ]; then
      ck=(--checkpoint "$out/checkpoints")
      if [ -n "${STOP_AT:-}" ]; then
        stop=$(date -d "$STOP_AT" +%s) || { echo "bad STOP_AT: $STOP_AT" >&2; exit 2; }
        left=$(( stop - $(date +%s) ))
        if [ "$left" -lt 60 ]; then
          echo "stopped at $(date -u +%FT%TZ) (STOP_AT), before k=$k seed=$s" >>"$out/sweep.log"
          exit 0
        fi
        ck+=(--stop-after-minutes "$(( left / 60 ))")
      fi
    fi
    t0=$(date +%s)
    rc=0
    # Appended: a continued agent's log follows its earlier sittings'.
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    "$bin" --losses "$losses" --k "$k" --seeds "$s" --steps "$steps" ${METRIC---diagonal} ${EXTRA:-} \
      --threads 1 "${ck[@]}" --json "$f.tmp" >>"$out/k$k-seed$s$tag.log" 2>&1 || rc=$?
    if [ "$rc" -eq 75 ]; then
      echo "k=$k seed=$s paused after $(( $(date +%s) - t0 )) s (STOP_AT); rerun to continue" >>"$out/sweep.log"
      exit 0
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
    mv "$f.tmp" "$f"
    echo "k=$k seed=$s $(( $(date +%s) - t0 )) s, load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/sweep.log"
  done
done
echo "end $(date -u +%FT%TZ)" >>"$out/sweep.log"
