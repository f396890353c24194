#!/usr/bin/env bash
# FederatedScope's own code (github.com/alibaba/FederatedScope, commit 480b67de, the FS-G
# reference) run on Cora with the Louvain split on this machine's CPU, at the cells of FS-G's
# grid, so its figures can be set beside `ferrolab fedgraph`'s (crates/fed/FEDGRAPH.md).
#
#   bench/run_fedgraph_reference.sh OUT "REGIMES" "CELLS" "SEEDS" [JOBS]
#   bench/run_fedgraph_reference.sh /tmp/fsref "fedavg global local" "0.25:4" "1 2 3 4 5" 2
#
# REGIMES: fedavg (FS's fedavg_gnn_node_fullbatch_citation.yaml: 5 clients, GCN, 400 rounds,
# early stop patience 100), global (the same yaml with federate.client_num 1: FS's Louvain
# splitter then gives the one client the whole graph; FS's `federate.method global` fails on
# graph data at this commit, in merge_data), local (local_gnn_node_fullbatch_citation.yaml with
# the trainer it names, graphfullbatch, which this commit no longer has, replaced by the
# nodefullbatch_trainer of the FedAvg yaml, acc added to its metrics and the server's global
# evaluation off: each client is scored on its own subgraph's test nodes). CELLS: lr:local_steps
# pairs of FS-G's grid (lr in 0.01 0.05 0.25, steps in 1 4 16). SEEDS: FS's `seed` values (its
# own scripts use 1..5). JOBS: runs at once (default 2; FS's standalone mode sets one torch
# thread per run). A finished run (its Final line written) is not rerun. FS_SPLIT=per-seed draws
# each seed's node split and Louvain partition from that seed, as FS did when FS-G's table was
# made; the default (fixed) runs the commit as it is, every seed on the split of seed 12345
# (bench/fedgraph_reference_launch.py says why). Use one OUT per FS_SPLIT.
#
# Each run writes OUT/runs/<regime>_lr<lr>_st<steps>_seed<k>/run/ (FS's eval_results.log, whose
# 'Final' line holds the test accuracy at the round of lowest validation loss, FS's reported
# figure) and a .log beside it. `python3 bench/fedgraph_reference_summary.py OUT` prints the
# table. The code is materialised (git archive, never committed) into the git-ignored
# bench/.cache/federatedscope-ref/ from FS_REPO (a local clone or mirror; default the workplace
# mirror, else a fresh clone) and run unchanged through bench/fedgraph_reference_launch.py (shims
# for today's PyTorch Geometric and torch, and FS_SPLIT, stated there). Cora's Planetoid files (ind.cora.*) are read
# from PLANETOID_RAW, else ../shared/data-raw/planetoid, and copied into OUT/data/cora/raw, where
# PyG's Planetoid finds them without downloading.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
OUT="$1" REGIMES="$2" CELLS="$3" SEEDS="$4" JOBS="${5:-2}"
COMMIT=480b67de851df2fa02b7cc2189f1803d947998d7
VENV=bench/.venv
CACHE=bench/.cache/federatedscope-ref
FS_REPO="${FS_REPO:-/work/.mirror/alibaba+FederatedScope/repo}"
RAW="${PLANETOID_RAW:-../shared/data-raw/planetoid}"
for r in $REGIMES; do
  case "$r" in fedavg|global|local) ;; *) echo "unknown regime '$r' (fedavg, global, local)" >&2; exit 2 ;; esac
done
for c in $CELLS; do
  [[ "$c" =~ ^[0-9.]+:[0-9]+$ ]] || { echo "cell '$c' is not lr:steps (e.g. 0.25:4)" >&2; exit 2; }
done
for f in allx ally graph test.index tx ty x y; do
  [ -f "$RAW/ind.cora.$f" ] || { echo "Cora's Planetoid file $RAW/ind.cora.$f is missing (set PLANETOID_RAW)" >&2; exit 2; }
done
if [ ! -f "$CACHE/federatedscope/main.py" ]; then
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  if ! git -C "$FS_REPO" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
    FS_REPO="bench/.cache/federatedscope-ref.git"
    [ -d "$FS_REPO" ] || git clone --bare --quiet https://github.com/alibaba/FederatedScope "$FS_REPO"
  fi
  git -C "$FS_REPO" archive "$COMMIT" federatedscope | tar x -C "$CACHE"
fi
# FS's imports reach grpc/protobuf (its message class) and rdkit (a molecule splitter imported
# by the graph splitters' package) even in standalone mode on Cora.
if ! "$VENV/bin/python" -c "import torch, torch_geometric, yacs, community, fvcore, iopath, pympler, sklearn, grpc, google.protobuf, rdkit, networkx" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch torch_geometric yacs python-louvain fvcore iopath pympler \
    scikit-learn pyyaml protobuf grpcio rdkit networkx
fi
mkdir -p "$OUT/data/cora/raw" "$OUT/runs"
cp -f "$RAW"/ind.cora.* "$OUT/data/cora/raw/"
chmod u+w "$OUT/data/cora/raw/"*
DATA_ROOT="$(cd "$OUT/data" && pwd)"
RUNS="$(cd "$OUT/runs" && pwd)"
FS_DIR="$(cd "$CACHE" && pwd)"
LAUNCH="$(pwd)/bench/fedgraph_reference_launch.py"
PY="$(cd "$VENV/bin" && pwd)/python"
CORA_YAML=federatedscope/gfl/baseline/fedavg_gnn_node_fullbatch_citation.yaml
LOCAL_YAML=federatedscope/gfl/baseline/local_gnn_node_fullbatch_citation.yaml

run_one() {
  local regime="$1" lr="$2" steps="$3" seed="$4"
  local id="${regime}_lr${lr}_st${steps}_seed${seed}"
  local dir="$RUNS/$id"
  if grep -q "'Final'" "$dir/run/eval_results.log" 2>/dev/null; then return 0; fi
  rm -rf "$dir"
  mkdir -p "$dir"
  local args=(use_gpu False data.root "$DATA_ROOT" seed "$seed" train.optimizer.lr "$lr"
    train.local_update_steps "$steps" outdir "$dir" expname run)
  case "$regime" in
    fedavg) args=(--cfg "$CORA_YAML" "${args[@]}") ;;
    global) args=(--cfg "$CORA_YAML" "${args[@]}" federate.client_num 1) ;;
    local) args=(--cfg "$LOCAL_YAML" "${args[@]}" trainer.type nodefullbatch_trainer
      federate.make_global_eval False eval.metrics "['acc', 'correct']") ;;
  esac
  local t0=$SECONDS
  if PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python FS_SPLIT="$FS_SPLIT" "$PY" "$LAUNCH" "$FS_DIR" "${args[@]}" >"$dir.log" 2>&1; then
    echo "$id: $((SECONDS - t0)) s"
  else
    echo "$id: failed (see $dir.log)" >&2
    return 1
  fi
}
export -f run_one
FS_SPLIT="${FS_SPLIT:-fixed}"
case "$FS_SPLIT" in fixed|per-seed) ;; *) echo "FS_SPLIT must be fixed or per-seed" >&2; exit 2 ;; esac
if [ -f "$OUT/split" ] && [ "$(cat "$OUT/split")" != "$FS_SPLIT" ]; then
  echo "$OUT holds FS_SPLIT=$(cat "$OUT/split") runs; use another OUT for FS_SPLIT=$FS_SPLIT" >&2
  exit 2
fi
echo "$FS_SPLIT" >"$OUT/split"
export RUNS DATA_ROOT FS_DIR LAUNCH PY CORA_YAML LOCAL_YAML FS_SPLIT
for seed in $SEEDS; do
  for c in $CELLS; do
    for r in $REGIMES; do
      echo "$r ${c%%:*} ${c##*:} $seed"
    done
  done
done | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
