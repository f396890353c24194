#!/usr/bin/env python3
"""DeepFM+APG training time per row and test AUC: ferrolab vs FuxiCTR's APG_DeepFM (issue 5).

Called by bench/run_apg_fuxictr.sh; measured under bench/harness.py's rule (bench/README.md):
each (round, side) is its own process, the order of the two shuffled per round, both with the
same threads and malloc settings; medians over rounds with min-max.

Round r uses seed r on both sides. ferrolab: `ferrolab apg --seed r --set train.seeds=1 ...`
(the seed drives ferrolab's 80/10/10 split of MovieLens-100k, the initial weights and the batch
order; report.json keys deepfm_apg_train_rows_per_second and deepfm_apg_test_auc). FuxiCTR: this
script with `--side fuxictr --seed r --split DIR`, which trains FuxiCTR's APG_DeepFM (PyPI
`fuxictr`; the model file is FuxiCTR's `model_zoo/APG/src` at commit 0245987, read from
bench/.cache/fuxictr_apg/APG_src, never downloaded) with torch seeded by r on the split ferrolab
exports for seed r (`ferrolab apg export --seed r`), and prints one JSON line. So each round's
pair trains on the same split, and the rounds also give the seed spread of the AUC.

Hyper-parameters (both sides): embedding 16, deep [128, 64], APG rank 32, over-parameterisation
64, hyper-network hidden [64], mix-wise condition on the `user` field, generated bias, Adam lr
1e-3, batch 256, at most EPOCHS epochs with early stopping on validation AUC (stop after PATIENCE
epochs without a strict improvement, best epoch restored). Known model differences: ferrolab's
core is S = I + MLP(z) with a zero-initialised last hyper-network layer, FuxiCTR's is S = MLP(z)
with default init; FuxiCTR clips gradients at norm 10 (its default), ferrolab does not.

Usage: bench/.venv/bin/python bench/apg_fuxictr.py [--rounds 3] [--threads 2] [--epochs 4]
"""
import hashlib
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

COMMIT = "0245987fdc1d43c36164ea496a02324885a8557a"  # reczoo/FuxiCTR
# Git blob ids of model_zoo/APG/src/* at COMMIT (`git ls-tree COMMIT model_zoo/APG/src/`).
BLOBS = {
    "__init__.py": "e9cee03a9975d08290fb3e3748e15f0b86d7c15f",
    "APG.py": "05500738770bf79c2bfd999507be97611c994df0",
    "APG_DeepFM.py": "46673af501d5ebfe7d5d447d4b800f210b9c99a3",
    "APG_DCNv2.py": "f99a2902daa848b8904a9e8d2236661e86a2de16",
}
CACHE = os.path.join(H.HERE, ".cache", "fuxictr_apg", "APG_src")
CASE = "movielens_deepfm_apg"


def apg_source(path):
    """The folder with FuxiCTR's APG model files at COMMIT; exits with how to get it if absent."""
    src = path or CACHE
    missing = [f for f in BLOBS if not os.path.isfile(os.path.join(src, f))]
    if missing:
        raise SystemExit(
            f"error: FuxiCTR's APG model source is missing: {', '.join(missing)} not in {src}\n"
            f"It is model_zoo/APG/src of reczoo/FuxiCTR at commit {COMMIT[:7]} (not on PyPI); this "
            "script does not download it. From a clone or mirror of FuxiCTR (e.g. the git "
            "directory GIT=/work/.mirror/reczoo+FuxiCTR/repo):\n"
            f"  mkdir -p {src} && for f in {' '.join(BLOBS)}; do "
            f"git --git-dir \"$GIT\" show {COMMIT[:7]}:model_zoo/APG/src/$f > {src}/$f; done\n"
            f"or: curl -fsSL -o {src}/<file> "
            f"https://raw.githubusercontent.com/reczoo/FuxiCTR/{COMMIT}/model_zoo/APG/src/<file>\n"
            "or point --apg-src (FUXICTR_APG_SRC) at a folder holding those files.")
    for f, want in BLOBS.items():
        data = open(os.path.join(src, f), "rb").read()
        got = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if got != want:
            raise SystemExit(f"error: {os.path.join(src, f)} is not FuxiCTR's file at commit "
                             f"{COMMIT[:7]} (git blob {got[:12]}, expected {want[:12]}); "
                             "restore it (see the message printed when it is missing)")
    return src


# ---------------------------------------------------------------- FuxiCTR side (worker process)

def read_tsv(path):
    with open(path) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
    return header, rows


def encode(splits, fields, multi="genres", max_len=6):
    import numpy as np
    import torch
    vocab = {f: {} for f in fields}
    for header, rows in splits.values():  # vocabulary over all rows, as ferrolab's schema
        for r in rows:
            for i, f in enumerate(fields):
                vals = r[i + 1].split("|") if f == multi else [r[i + 1]]
                for v in vals:
                    if v:
                        vocab[f].setdefault(v, len(vocab[f]) + 1)  # 0 = padding/OOV
    out = {}
    for name, (header, rows) in splits.items():
        d = {}
        for i, f in enumerate(fields):
            if f == multi:
                a = np.zeros((len(rows), max_len), dtype=np.int64)
                for j, r in enumerate(rows):
                    ids = [vocab[f][v] for v in r[i + 1].split("|") if v][:max_len]
                    a[j, : len(ids)] = ids
            else:
                a = np.array([vocab[f][r[i + 1]] for r in rows], dtype=np.int64)
            d[f] = torch.from_numpy(a)
        d["label"] = torch.tensor([float(r[0]) for r in rows], dtype=torch.float32)
        out[name] = d
    return out, vocab


def fuxictr_worker(a):
    """Trains APG_DeepFM once (seed a.seed, split a.split); prints one JSON line of metrics."""
    from collections import OrderedDict
    import numpy as np
    import torch
    from sklearn.metrics import log_loss, roc_auc_score

    src = apg_source(a.apg_src)
    torch.set_num_threads(a.threads)
    sys.path.insert(0, os.path.dirname(src))
    from fuxictr.features import FeatureMap
    APG_DeepFM = getattr(__import__(os.path.basename(src)), "APG_DeepFM")

    header, _ = read_tsv(os.path.join(a.split, "train.tsv"))
    fields = header[1:]
    splits = {k: read_tsv(os.path.join(a.split, f"{k}.tsv")) for k in ("train", "valid", "test")}
    enc, vocab = encode(splits, fields)
    tmp = tempfile.mkdtemp(prefix="fuxictr-apg-")
    try:
        torch.manual_seed(a.seed)
        np.random.seed(a.seed)
        fm = FeatureMap("ml100k_ctr", tmp)
        fm.features = OrderedDict()
        for f in fields:
            spec = {"source": "", "type": "categorical", "vocab_size": len(vocab[f]) + 1,
                    "padding_idx": 0}
            if f == "genres":
                spec.update(type="sequence", max_len=6,
                            feature_encoder="layers.MaskedAveragePooling()")
            fm.features[f] = spec
        fm.labels = ["label"]
        fm.num_fields = len(fields)
        fm.default_emb_dim = 16
        fm.set_column_index()
        model = APG_DeepFM(
            fm, gpu=-1, learning_rate=a.lr, embedding_dim=16, hidden_units=[128, 64],
            hypernet_config={"hidden_units": [64], "hidden_activations": "relu",
                             "dropout_rates": 0},
            condition_features=["user"], condition_mode="mix-wise", rank_k=32, overparam_p=64,
            generate_bias=True, optimizer="adam", loss="binary_crossentropy", verbose=0,
            model_root=os.path.join(tmp, "ckpt"), metrics=["AUC", "logloss"])
        model._max_gradient_norm = 10.0  # what BaseModel.fit sets (its default) for train_step
        tr, va, te = enc["train"], enc["valid"], enc["test"]
        n, bs = len(tr["label"]), a.batch_size
        rng = np.random.RandomState(a.seed)

        def predict(d):
            model.eval()
            ps = []
            with torch.no_grad():
                for s in range(0, len(d["label"]), 4096):
                    b = {k: v[s: s + 4096] for k, v in d.items()}
                    ps.append(model.forward(b)["y_pred"].view(-1).numpy())
            model.train()
            return np.concatenate(ps)

        best, best_epoch, best_state, step_s, seen, epochs = None, 0, None, 0.0, 0, 0
        for ep in range(a.epochs):
            idx = rng.permutation(n)  # ferrolab's per-epoch shuffle is not timed either
            model.train()
            for s in range(0, n, bs):
                # Timed like ferrolab's Fit::step: gather the batch's rows, forward, BCE,
                # backward, (clip,) Adam, read the loss back.
                t = time.perf_counter()
                b = torch.from_numpy(idx[s: s + bs])
                loss = model.train_step({k: v[b] for k, v in tr.items()})
                loss.item()
                step_s += time.perf_counter() - t
                seen += len(b)
            epochs = ep + 1
            auc = roc_auc_score(va["label"].numpy(), predict(va))
            if best is None or auc > best:
                best, best_epoch = auc, ep
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            elif a.patience > 0 and ep - best_epoch >= a.patience:
                break
        model.load_state_dict(best_state)
        p = predict(te)
        y = te["label"].numpy()
        out = {"side": "fuxictr", "seed": a.seed, "us_per_row": step_s * 1e6 / seen,
               "train_rows_per_second": seen / step_s, "train_rows": seen,
               "train_step_seconds": step_s, "test_auc": float(roc_auc_score(y, p)),
               "test_logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))),
               "epochs": epochs, "best_epoch": best_epoch + 1,
               "torch_threads": torch.get_num_threads()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------- driver

def ferrolab_sets(a):
    return ['model.models=["deepfm"]', "model.embed_dim=16", "model.hidden=[128, 64]",
            "apg.rank=32", "apg.overparam=64", "apg.hyper_hidden=64", "apg.condition=mix",
            'apg.condition_fields=["user"]', "apg.generate_bias=true", f"train.lr={a.lr}",
            f"train.batch_size={a.batch_size}", f"train.epochs={a.epochs}",
            f"train.patience={a.patience}", "train.seeds=1", "efficiency.enabled=false"]


def parse_ferrolab(seed):
    def parse(stdout, tmp):
        path = os.path.join(tmp, "run", "report.json")
        try:
            rep = json.load(open(path))
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: ferrolab apg (seed {seed}) wrote no readable {path}: {e}")
        if rep.get("seed") != seed:
            raise SystemExit(f"error: ferrolab report.json has seed {rep.get('seed')}, "
                             f"expected {seed}")
        m, d = rep["metrics"], rep["details"]["deepfm"]
        rps = m["deepfm_apg_train_rows_per_second"]
        return {"side": "ferrolab", "seed": seed, "us_per_row": 1e6 / rps,
                "train_rows_per_second": rps, "test_auc": m["deepfm_apg_test_auc"],
                "test_logloss": m["deepfm_apg_test_logloss"],
                "epochs": int(d["apg_epochs_per_seed"][0]),
                "plain_deepfm_test_auc": rep["baselines"]["deepfm"]["test_auc"],
                "process_train_seconds": rep["timings"]["train_seconds"]}
    return parse


def jobs_for(a, seed, split):
    ferro = [a.ferrolab, "apg", "--out", "{tmp}/run", "--threads", str(a.threads),
             "--seed", str(seed), "--data-dir", a.data_dir]
    for s in ferrolab_sets(a):
        ferro += ["--set", s]
    fuxi = [a.python, os.path.abspath(__file__), "--side", "fuxictr", "--seed", str(seed),
            "--split", split, "--threads", str(a.threads), "--epochs", str(a.epochs),
            "--patience", str(a.patience), "--batch-size", str(a.batch_size), "--lr", str(a.lr),
            "--apg-src", a.apg_src]
    return [H.Job(CASE, "ferrolab", ferro, parse=parse_ferrolab(seed)),
            H.Job(CASE, "fuxictr", fuxi)]


def spread(v):
    return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v), "values": v}


def main():
    ap = H.parser(__doc__.splitlines()[0], rounds=3)
    ap.add_argument("--side", choices=["driver", "fuxictr"], default="driver",
                    help="fuxictr: one FuxiCTR training run (worker process), one JSON line")
    ap.add_argument("--seed", type=int, default=0, help="worker: seed (split and init)")
    ap.add_argument("--split", help="worker: folder with ferrolab's exported train/valid/test.tsv")
    ap.add_argument("--ferrolab", default=os.path.join(H.ROOT, "target", "release", "ferrolab"))
    ap.add_argument("--python", default=sys.executable, help="python with torch, fuxictr, sklearn")
    ap.add_argument("--data-dir", default=os.environ.get(
        "FERROLAB_DATA", os.path.join(H.ROOT, "..", "shared", "data")))
    ap.add_argument("--apg-src", default=os.environ.get("FUXICTR_APG_SRC") or CACHE,
                    help="FuxiCTR's model_zoo/APG/src at commit " + COMMIT[:7])
    ap.add_argument("--epochs", type=int, default=int(os.environ.get("EPOCHS", 4)))
    ap.add_argument("--patience", type=int, default=int(os.environ.get("PATIENCE", 2)),
                    help="early-stopping patience in epochs (0 = off)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    H.check_args(a)
    if a.epochs < 1 or a.patience < 0 or a.batch_size < 1:
        raise SystemExit("error: --epochs and --batch-size must be >= 1, --patience >= 0")
    a.apg_src = os.path.abspath(a.apg_src)
    if a.side == "fuxictr":
        if not a.split:
            raise SystemExit("error: --side fuxictr needs --split")
        return fuxictr_worker(a)

    apg_source(a.apg_src)  # fail before any work if FuxiCTR's model file is absent
    a.ferrolab, a.data_dir = os.path.abspath(a.ferrolab), os.path.abspath(a.data_dir)
    if not os.access(a.ferrolab, os.X_OK):
        raise SystemExit(f"error: no ferrolab binary at {a.ferrolab} "
                         "(cargo build --release -p ferrolab)")
    seeds = list(range(a.rounds))
    work = tempfile.mkdtemp(prefix="ferrolab-apg-splits-")
    try:
        splits = {}
        for s in seeds:  # ferrolab's split for seed s, for the FuxiCTR side of round s
            splits[s] = os.path.join(work, f"split-{s}")
            cmd = [a.ferrolab, "apg", "export", "--out", splits[s], "--seed", str(s),
                   "--data-dir", a.data_dir]
            p = subprocess.run(cmd, env=H.env_for(a), capture_output=True, text=True)
            if p.returncode != 0:
                sys.stderr.write(p.stderr[-4000:])
                raise SystemExit(f"error: {shlex.join(cmd)} failed (exit {p.returncode})")
        # Round r runs seed r on both sides, so each round is its own harness.measure call
        # (one round, two jobs, order shuffled from ORDER_SEED and r); the rounds are merged.
        env = H.env_for(a)
        m = H.Measured(a, jobs_for(a, 0, splits[0]))
        t0 = time.monotonic()
        first = []
        for r in seeds:
            ar = type(a)(**vars(a))
            ar.rounds, ar.order_seed = 1, a.order_seed * 100003 + r
            order = ["ferrolab", "fuxictr"]  # measure's own shuffle of the two jobs, replayed
            random.Random(ar.order_seed).shuffle(order)
            first.append(order[0])
            mr = H.measure(ar, jobs_for(a, r, splits[r]), env=env,
                           label=f"seed {r} ({r + 1} of {a.rounds}): ")
            for k in m.values:
                m.values[k] += mr.values[k]
                m.disturbed[k] += mr.disturbed[k]
        m.seconds = time.monotonic() - t0
        m.load_after = H.loadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fk, xk = f"{CASE}/ferrolab", f"{CASE}/fuxictr"
    fv, xv = m.values[fk], m.values[xk]
    # Time ratio per round and its inverse, the throughput ratio crates/ctr/README.md quoted.
    ratios = [f["us_per_row"] / x["us_per_row"] for f, x in zip(fv, xv)]
    thr = [1 / q for q in ratios]
    fa, xa = [f["test_auc"] for f in fv], [x["test_auc"] for x in xv]
    diff = [f - x for f, x in zip(fa, xa)]
    auc = {"ferrolab": spread(fa), "fuxictr": spread(xa), "paired_difference": spread(diff),
           "seeds": seeds, "target_abs_mean_difference": 0.005,
           "met": abs(statistics.mean(diff)) <= 0.005}
    throughput = {"median": statistics.median(thr), "min": min(thr), "max": max(thr),
                  "values": thr}

    md = ["## Throughput and test AUC per round", "",
          f"Throughput ratio ferrolab / FuxiCTR (rows/s; 1 / the time ratio above, the form "
          f"crates/ctr/README.md quotes): **{throughput['median']:.2f}** "
          f"({throughput['min']:.2f}-{throughput['max']:.2f}).", "",
          "| round (seed) | ran first | ferrolab AUC | FuxiCTR AUC | difference | "
          "ferrolab rows/s | FuxiCTR rows/s | epochs (ferrolab / FuxiCTR) |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r, (f, x) in enumerate(zip(fv, xv)):
        md.append(f"| {r + 1} ({f['seed']}) | {first[r]} | {f['test_auc']:.4f} | "
                  f"{x['test_auc']:.4f} | {f['test_auc'] - x['test_auc']:+.4f} | "
                  f"{f['train_rows_per_second']:,.0f} | {x['train_rows_per_second']:,.0f} | "
                  f"{f['epochs']} / {x['epochs']} |")
    s = auc
    md += ["",
           f"Test AUC over {len(seeds)} seeds, mean ± std (min-max): ferrolab "
           f"{s['ferrolab']['mean']:.4f} ± {s['ferrolab']['std']:.4f} "
           f"({s['ferrolab']['min']:.4f}-{s['ferrolab']['max']:.4f}); FuxiCTR "
           f"{s['fuxictr']['mean']:.4f} ± {s['fuxictr']['std']:.4f} "
           f"({s['fuxictr']['min']:.4f}-{s['fuxictr']['max']:.4f}); paired difference "
           f"ferrolab − FuxiCTR {s['paired_difference']['mean']:+.4f} "
           f"({s['paired_difference']['min']:+.4f} to {s['paired_difference']['max']:+.4f}); "
           f"target |mean difference| ≤ 0.005: {'met' if s['met'] else 'NOT met'}."]

    notes = []
    if len(set(fa)) == 1 and len(fa) > 1:
        notes.append("ferrolab gave the same test AUC for every seed: its --seed did not change "
                     "the run; the AUC spread is not a seed spread")
    if any(f["epochs"] != x["epochs"] for f, x in zip(fv, xv)):
        notes.append("early stopping ended the two sides after different numbers of epochs in "
                     "some rounds (table below); the time per row is unaffected")
    if any(m.disturbed.values()):
        notes.append("Some runs were disturbed by other processes and kept (flagged in the "
                     "table): do not publish these figures. PyTorch with as many threads as the "
                     "machine has cores slows down many times over when another process takes a "
                     "core (measured here, 2 threads on 2 cores: 29 us/row quiet, 405 us/row "
                     "beside one busy process); rerun on a quiet machine.")

    what = (
        f"DeepFM+APG on MovieLens-100k (ferrolab's seeded 80/10/10 split; 80,000 training rows), "
        f"same hyper-parameters both sides (embedding 16, deep [128, 64], APG K 32, P 64, "
        f"hyper-network [64], mix-wise condition on `user`, generated bias, Adam lr {a.lr:g}, "
        f"batch {a.batch_size}, at most {a.epochs} epochs, early stopping on validation AUC with "
        f"patience {a.patience}, best epoch restored). Round r trains seed r on both sides, on "
        "the split ferrolab makes for seed r; the order of a round's two processes is shuffled "
        "from ORDER_SEED * 100003 + r (column 'ran first' below). Figure: microseconds per "
        "training row = seconds inside the training steps / rows they processed, over every "
        "epoch run, the first "
        "included on both sides (neither side has a separate warm-up). ferrolab: "
        "`deepfm_apg_train_rows_per_second` of report.json, timed inside `Fit::step` (gather "
        "the batch's rows into tensors, forward, BCE, read the loss back, backward, Adam); "
        "FuxiCTR: the same span around `BaseModel.train_step` (gather the batch's rows from the "
        "encoded tensors, zero_grad, forward, BCE, backward, clip_grad_norm 10, Adam, "
        "`loss.item()`). Not timed on either side: the per-epoch shuffle, validation, data "
        "loading and encoding, test evaluation. Ratio = ferrolab / FuxiCTR (below 1: ferrolab "
        "faster).")
    notes += [
        "Differences that remain: FuxiCTR clips gradients at norm 10 (its default), ferrolab "
        "does not; ferrolab's APG core is S = I + MLP(z) with a zero-initialised last "
        "hyper-network layer, FuxiCTR's S = MLP(z) with default init; the ferrolab process "
        "also trains plain DeepFM (untimed) before DeepFM+APG, so its allocator and thread pool "
        "are warm when the timed steps start, while FuxiCTR's first timed step is its "
        "process's first.",
        f"FuxiCTR's APG_DeepFM: model_zoo/APG/src at reczoo/FuxiCTR {COMMIT[:7]} (git blob ids "
        "checked), FeatureMap built in code (genres: sequence, MaskedAveragePooling, 6 ids).",
    ]
    versions = {
        "ferrolab": H.ferrolab_versions(),
        "fuxictr": dict(H.python_modules(a.python, ["torch", "fuxictr", "sklearn"]),
                        apg_src=f"reczoo/FuxiCTR@{COMMIT[:7]} model_zoo/APG/src"),
    }
    rows = [H.Row("DeepFM+APG training time per row (MovieLens-100k)", CASE, "us_per_row",
                  "ferrolab", "fuxictr", unit="us")]
    extra = {"markdown": "\n".join(md) + "\n", "auc": auc, "throughput_ratio": throughput,
             "time_ratios": ratios, "ran_first": first, "fuxictr_commit": COMMIT,
             "epochs": a.epochs, "patience": a.patience, "batch_size": a.batch_size, "lr": a.lr,
             "ferrolab_command": shlex.join(jobs_for(a, 0, "SPLIT")[0].cmd),
             "fuxictr_command": shlex.join(jobs_for(a, 0, "SPLIT")[1].cmd)}
    H.write("apg_fuxictr", "DeepFM+APG on MovieLens-100k: ferrolab vs FuxiCTR (CPU)", m, rows,
            versions, what, notes=notes, extra=extra)


if __name__ == "__main__":
    main()
