#!/usr/bin/env bash
# Every anchor comparison in sequence, then bench/results/summary.md (bench/summary.py), which
# checks each headline ratio against the run README publishes (bench/results/published/), or
# else against the results this script found when it started (kept in bench/results/previous/).
# Run it on an otherwise idle machine: each script waits for quiet CPUs and repeats a job that
# other processes disturbed, so a busy machine makes it slow rather than wrong.
#
#   bench/run_all.sh                     # all comparisons, their default sizes (the first seven took about 45 min on a quiet machine; the whole set is not timed yet)
#   ONLY="step secnn" bench/run_all.sh   # a subset: step secnn cluster_gcn ckks apg taskmet vision
#                                        #   layer_importance fedgraph adod attenscribble
#   PUBLISH=1 bench/run_all.sh           # afterwards, copy this run's JSON to results/published/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ONLY="${ONLY:-step secnn cluster_gcn ckks apg taskmet vision layer_importance fedgraph adod attenscribble}"
# The TaskMet anchor times outer steps only here; its reference training runs (12-16 min per
# seed) are for bench/run_taskmet_reference.sh run alone.
export TRAIN_SEEDS="${TRAIN_SEEDS-}"
declare -A SCRIPT=(
    [step]=bench/run_step_bench.sh
    [secnn]=bench/run_secnn_bench.sh
    [cluster_gcn]=bench/run_cluster_gcn_pyg.sh
    [ckks]=bench/run_ckks_bench.sh
    [apg]=bench/run_apg_fuxictr.sh
    [taskmet]=bench/run_taskmet_reference.sh
    [vision]=bench/run_vision_bench.sh
    [layer_importance]=bench/run_layer_importance_bench.sh
    [fedgraph]=bench/run_fedgraph_pyg.sh
    [adod]=bench/run_adod_bench.sh
    [attenscribble]=bench/run_attenscribble_bench.sh
)
for b in $ONLY; do
    if [[ -z "${SCRIPT[$b]:-}" ]]; then
        echo "error: ONLY: unknown benchmark '$b' (expected some of: ${!SCRIPT[*]})" >&2
        exit 2
    fi
done
mkdir -p bench/results/previous
cp bench/results/*.json bench/results/previous/ 2>/dev/null || true
echo ">> load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start=$(date +%s)
failed=()
for b in $ONLY; do
    echo ">> $b: ${SCRIPT[$b]}" >&2
    if ! "${SCRIPT[$b]}"; then
        failed+=("$b")
        echo ">> $b FAILED; going on with the others" >&2
    fi
done
python3 bench/summary.py
echo ">> all done in $(( ($(date +%s) - start) / 60 )) min" >&2
if [[ "${PUBLISH:-0}" == 1 && ${#failed[@]} -eq 0 ]]; then
    mkdir -p bench/results/published
    for b in $ONLY; do
        case $b in
            step) n=step_bench ;; secnn) n=secnn_step_bench ;; cluster_gcn) n=cluster_gcn_pyg ;;
            ckks) n=ckks_bench ;; apg) n=apg_fuxictr ;; taskmet) n=taskmet_reference ;;
            vision) n=vision_bench ;; layer_importance) n=layer_importance_bench ;;
            fedgraph) n=fedgraph_pyg ;; adod) n=adod_bench ;; attenscribble) n=attenscribble_bench ;;
        esac
        cp "bench/results/$n.json" bench/results/published/
    done
    echo ">> copied this run's results to bench/results/published/" >&2
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "error: failed: ${failed[*]}" >&2
    exit 1
fi
