"""Run the SD-GT reference code (github.com/EvanChen022kan/SD-GT-INFOCOM, commit 5bb7add,
functions/SemiFL_NN.py) on Fashion-MNIST on this machine's CPU, one algorithm per process, so
its curves can be set beside `sdgt_probe`'s. Invoked by bench/run_sdgt_reference.sh as

    python bench/sdgt_reference_launch.py REF_DIR OUT_DIR ALGO ROUNDS EVAL_EVERY LR BATCH T SEED

ALGO is `sdgt` (SemiFLGT2_NN), `sd_fedavg` (SemiFL_NN) or `scaffold` (SCAFFOLD_NN).

The data and topology are built as the reference's mainNN2.py builds them for `--setting1`'s
(40 agents, 10 subnets) configuration with `--random`: the 60,000 training images as
ToTensor gives them (v/255, no standardisation), sorted by label and cut into 40 contiguous
chunks; the 10,000 test images unsorted; one random geometric graph per subnet from the
reference's get_geo_graph; s = int(0.5 * 4) = 2 devices sampled per subnet. Python's `random`,
NumPy and torch are seeded with 123456 + SEED (mainNN2 seeds torch with 123456 only).

The reference only runs on CUDA and on 3-channel 32x32 images; bench/run_sdgt_reference.sh
materialises it and makes these edits, none of which touches the arithmetic of an update:

* every `torch.device('cuda:{}'.format(opt.gpu_id))` -> `torch.device('cpu')`;
* TOMCNN's first convolution takes 1 channel, and its flatten is 64*4*4 (28x28 input: 28 -> 24
  -> 12 -> 8 -> 4), the same CNN our `model.arch=cnn` builds;
* functions/__init__.py is emptied (it imports solvers of the convex experiments, not used);
* evaluation every EVAL_EVERY rounds instead of every 10, and each evaluation is also appended
  to OUT_DIR/curve.jsonl as it happens (round, accuracy, loss, seconds).

With `opt.dataset = 'MNIST'` the reference applies no augmentation (its CIFAR crops/flips are
skipped), as our runs apply none. Its test pass drops the last partial batch (9,728 of 10,000
images at batch 512).
"""

import gzip
import json
import os
import random
import sys
import time
from argparse import Namespace

import numpy as np
import torch

ALGOS = {"sdgt": "SemiFLGT2_NN", "sd_fedavg": "SemiFL_NN", "scaffold": "SCAFFOLD_NN"}


def read_idx(path):
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        sys.exit(f"error: {path}: {e} (set FASHION_MNIST to the folder of the four idx .gz files, or FERROLAB_DATA to its parent)")
    if len(raw) < 8:
        sys.exit(f"error: {path}: truncated idx header")
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        sys.exit(f"error: {path}: expected {np.prod(dims)} values, found {data.size}")
    return data.reshape(dims)


def main():
    if len(sys.argv) != 10:
        sys.exit(__doc__.split("\n\n")[1])
    ref, out, algo = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    rounds, every = int(sys.argv[4]), int(sys.argv[5])
    lr, batch, t_steps, seed = float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
    if algo not in ALGOS:
        sys.exit(f"error: unknown algorithm '{algo}' (sdgt, sd_fedavg, scaffold)")
    data_dir = os.environ.get("FASHION_MNIST") or os.path.join(
        os.environ.get("FERROLAB_DATA", "/usr/share/datasets"), "fashion-mnist")
    torch.set_num_threads(1)
    base = 123456 + seed
    random.seed(base)
    np.random.seed(base)
    torch.manual_seed(base)

    sys.path.insert(0, os.path.abspath(ref))
    import _ferrolab_hook as hook

    hook.EVAL_EVERY = every
    hook.start(os.path.join(out, "curve.jsonl"))
    from functions import SemiFL_NN as ref_mod
    from functions.graph_gen import get_geo_graph

    def images(name):
        x = read_idx(os.path.join(data_dir, f"{name}-images-idx3-ubyte.gz"))
        return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(name):
        return torch.from_numpy(read_idx(os.path.join(data_dir, f"{name}-labels-idx1-ubyte.gz")).astype(np.int64))

    x, y = images("train"), labels("train")
    y, order = torch.sort(y)
    x = x[order]
    tx, ty = images("t10k"), labels("t10k")

    n_agents, n_cluster = 40, 10
    # setting1: the reference's load_config/save_config name their folder after one of the
    # setting flags and fail without one; config_id makes that folder new, so nothing resumes.
    opt = Namespace(gpu_id=0, batch=batch, lr=lr, n_cluster=n_cluster, sample_num=int(0.5 * (n_agents // n_cluster)),
                    model="TOMCNN", dataset="MNIST", c_rounds=rounds, setting1=True, setting2=False,
                    setting3=False, config_id=f"ferrolab-{algo}-s{seed}", delta=0.0, p_inv=1000,
                    update_rounds=20)
    R, C, N_in, N_out = [], [], [], []
    for _ in range(n_cluster):
        r, c, ni, no = get_geo_graph(n_agents // n_cluster)
        R.append(r)
        C.append(c)
        N_in.append(ni)
        N_out.append(no)
    degrees = [[len(v) for v in ni] for ni in N_in]
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump({"algo": algo, "fn": ALGOS[algo], "rounds": rounds, "eval_every": every, "lr": lr,
                   "batch": batch, "T": t_steps, "seed": seed, "torch": torch.__version__,
                   "subnet_degrees": degrees, "train": len(y), "test": len(ty)}, f)
    fn = getattr(ref_mod, ALGOS[algo])
    os.chdir(out)
    os.makedirs("checkpoints", exist_ok=True)
    t0 = time.time()
    fn(x, y, tx, ty, R, C, N_in, N_out, lr, T=t_steps, n_agents=n_agents, opt=opt)
    print(f"\ndone in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
