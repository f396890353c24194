#!/usr/bin/env bash
# The SD-GT reference code (github.com/EvanChen022kan/SD-GT-INFOCOM, commit 5bb7add, the
# authors' functions/SemiFL_NN.py) run on Fashion-MNIST on this machine's CPU, at the setting of
# our CNN probe, so its curves can be set beside `sdgt_probe`'s (crates/fed/README.md).
#
#   bench/run_sdgt_reference.sh OUT ROUNDS EVAL_EVERY LR BATCH T SEED "ALGOS"
#   bench/run_sdgt_reference.sh /tmp/sdgt-ref 40 2 0.003 512 5 0 "sdgt sd_fedavg"
#
# ALGOS: sdgt (SemiFLGT2_NN), sd_fedavg (SemiFL_NN), scaffold (SCAFFOLD_NN). The algorithms run
# side by side, one process and one torch thread each. Each writes OUT/<algo>-s<seed>/curve.jsonl
# (one line per evaluation: round, test accuracy, test loss, seconds), run.json and the
# console output in OUT/<algo>-s<seed>.log. The code is materialised (git archive, never
# committed) into the git-ignored bench/.cache/sdgt-ref/ from SDGT_REPO (a local clone or
# mirror; default the workplace mirror, else a fresh clone) with the edits that
# bench/sdgt_reference_launch.py lists (CPU device, 1-channel 28x28 input, evaluation cadence);
# torch goes into the git-ignored bench/.venv. Fashion-MNIST is read from FASHION_MNIST, else
# $FERROLAB_DATA/fashion-mnist, else /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 8 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
OUT="$1" ROUNDS="$2" EVERY="$3" LR="$4" BATCH="$5" T="$6" SEED="$7" ALGOS="$8"
COMMIT=5bb7add534a9510702698686720d7a10d780e531
VENV=bench/.venv
CACHE=bench/.cache/sdgt-ref
SDGT_REPO="${SDGT_REPO:-/work/.mirror/EvanChen022kan+SD-GT-INFOCOM/repo}"
for a in $ALGOS; do
  case "$a" in sdgt|sd_fedavg|scaffold) ;; *) echo "unknown algorithm '$a' (sdgt, sd_fedavg, scaffold)" >&2; exit 2 ;; esac
done
if [ ! -f "$CACHE/_ferrolab_hook.py" ]; then
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  if ! git -C "$SDGT_REPO" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
    SDGT_REPO="bench/.cache/sdgt-ref.git"
    [ -d "$SDGT_REPO" ] || git clone --bare --quiet https://github.com/EvanChen022kan/SD-GT-INFOCOM "$SDGT_REPO"
  fi
  git -C "$SDGT_REPO" archive "$COMMIT" functions checkpoints/save_load.py | tar x -C "$CACHE"
  python3 - "$CACHE" <<'EOF'
import os, sys
ref = sys.argv[1]

def edit(rel, old, new, count):
    path = os.path.join(ref, rel)
    text = open(path).read()
    found = text.count(old)
    if found != count:
        sys.exit(f"error: {rel}: expected {count} of {old!r}, found {found} (not commit 5bb7add?)")
    open(path, "w").write(text.replace(old, new))

cuda = "torch.device('cuda:{}'.format(opt.gpu_id))"
edit("functions/SemiFL_NN.py", cuda, "torch.device('cpu')", 4)
edit("functions/NN.py", cuda, "torch.device('cpu')", 4)
edit("functions/NN.py", "nn.Conv2d(in_channels=3, out_channels=64 , kernel_size=5)",
     "nn.Conv2d(in_channels=1, out_channels=64 , kernel_size=5)", 1)
edit("functions/NN.py", "64*5*5", "64*4*4", 2)
edit("functions/SemiFL_NN.py", "if iters % 10 == 0:", "if iters % _hook.EVAL_EVERY == 0:", 3)
edit("functions/SemiFL_NN.py", "error_list.append(loss.item())",
     "error_list.append(loss.item()); _hook.log(iters, acc_list, error_list)", 8)
edit("functions/SemiFL_NN.py", "import torch\n", "import torch\nimport _ferrolab_hook as _hook\n", 1)
open(os.path.join(ref, "functions/__init__.py"), "w").write("")
open(os.path.join(ref, "_ferrolab_hook.py"), "w").write('''import json, time
EVAL_EVERY = 10
_path, _t0 = None, time.time()
def start(path):
    global _path, _t0
    _path, _t0 = path, time.time()
def log(iters, acc, err):
    if _path is None or not acc:
        return
    with open(_path, "a") as f:
        f.write(json.dumps({"round": int(iters), "test_accuracy": acc[-1], "test_loss": err[-1],
                            "seconds": round(time.time() - _t0, 1)}) + "\\n")
''')
EOF
fi
if ! "$VENV/bin/python" -c "import torch, torchvision, networkx, scipy, pytz" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch torchvision numpy networkx scipy pytz
fi
pids=()
for a in $ALGOS; do
  run="$OUT/$a-s$SEED"
  rm -rf "$run"
  mkdir -p "$run"
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$VENV/bin/python" bench/sdgt_reference_launch.py \
    "$CACHE" "$run" "$a" "$ROUNDS" "$EVERY" "$LR" "$BATCH" "$T" "$SEED" > "$OUT/$a-s$SEED.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for a in $ALGOS; do
  echo "== $a seed $SEED"
  cat "$OUT/$a-s$SEED/curve.jsonl" 2>/dev/null || tail -5 "$OUT/$a-s$SEED.log"
done
exit $status
