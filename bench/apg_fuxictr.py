#!/usr/bin/env python3
"""Anchor for issue 5: FuxiCTR's APG_DeepFM against ferrolab's DeepFM+APG on the same
MovieLens-100k split with the same hyper-parameters.

ferrolab writes its split (`ferrolab apg export`), trains DeepFM+APG over N seeds
(`ferrolab apg --set model.models=["deepfm"] ...`) and reports test AUC and training rows/s;
this script trains FuxiCTR's APG_DeepFM (PyPI `fuxictr`; the model file lives in FuxiCTR's
`model_zoo/APG/src`, downloaded at a pinned commit unless --apg-src points at a copy) on the
same TSV files with the same settings and its own training step (`BaseModel.train_step`:
forward, BCE, backward, grad-norm clip 10, Adam), then prints both and the ratios.

Hyper-parameters (both sides): embedding 16, deep [128, 64], APG rank 32, over-parameterisation
64, hyper-network hidden [64], mix-wise condition on the `user` field, generated bias, Adam
lr 1e-3, batch 256, at most 10 epochs with early stopping on validation AUC (patience 2,
best epoch restored), threads 2. Known differences: ferrolab's core is S = I + MLP(z) with a
zero-initialised last hyper-network layer, FuxiCTR's is S = MLP(z) with default init; ferrolab
does not clip gradients.

Usage: bench/.venv/bin/python bench/apg_fuxictr.py [--seeds 3] [--threads 2]
"""
import argparse, json, os, subprocess, sys, time, urllib.request
from collections import OrderedDict

import numpy as np
import torch

COMMIT = "0245987fdc1d43c36164ea496a02324885a8557a"  # reczoo/FuxiCTR
FILES = ["__init__.py", "APG.py", "APG_DeepFM.py", "APG_DCNv2.py"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def apg_source(path):
    if path:
        return path
    dst = os.path.join(ROOT, "bench", ".cache", "fuxictr_apg", "APG_src")
    os.makedirs(dst, exist_ok=True)
    for f in FILES:
        p = os.path.join(dst, f)
        if not os.path.exists(p):
            url = f"https://raw.githubusercontent.com/reczoo/FuxiCTR/{COMMIT}/model_zoo/APG/src/{f}"
            urllib.request.urlretrieve(url, p)
    return dst


def read_tsv(path):
    with open(path) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
    return header, rows


def encode(splits, fields, multi="genres", max_len=6):
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


def batches(data, n, bs, rng=None):
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    for s in range(0, n, bs):
        b = torch.from_numpy(idx[s : s + bs])
        yield {k: v[b] for k, v in data.items()}


def auc_logloss(y, p):
    from sklearn.metrics import roc_auc_score, log_loss
    return roc_auc_score(y, p), log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))


def fuxictr_run(enc, vocab, fields, seed, args, APG_DeepFM, FeatureMap):
    torch.manual_seed(seed)
    np.random.seed(seed)
    fm = FeatureMap("ml100k_ctr", "/tmp")
    fm.features = OrderedDict()
    for f in fields:
        spec = {"source": "", "type": "categorical", "vocab_size": len(vocab[f]) + 1, "padding_idx": 0}
        if f == "genres":
            spec.update(type="sequence", max_len=6, feature_encoder="layers.MaskedAveragePooling()")
        fm.features[f] = spec
    fm.labels = ["label"]
    fm.num_fields = len(fields)
    fm.default_emb_dim = 16
    fm.set_column_index()
    model = APG_DeepFM(
        fm, gpu=-1, learning_rate=args.lr, embedding_dim=16, hidden_units=[128, 64],
        hypernet_config={"hidden_units": [64], "hidden_activations": "relu", "dropout_rates": 0},
        condition_features=["user"], condition_mode="mix-wise", rank_k=32, overparam_p=64,
        generate_bias=True, optimizer="adam", loss="binary_crossentropy", verbose=0,
        model_root="/tmp/fuxictr_ckpt", metrics=["AUC", "logloss"])
    model._max_gradient_norm = 10.0
    tr, va, te = enc["train"], enc["valid"], enc["test"]
    n = len(tr["label"])
    rng = np.random.RandomState(seed)

    def predict(d):
        model.eval()
        ps = []
        with torch.no_grad():
            for b in batches(d, len(d["label"]), 4096):
                ps.append(model.forward(b)["y_pred"].view(-1).numpy())
        model.train()
        return np.concatenate(ps)

    best, best_state, bad, step_s, seen, epochs = -1.0, None, 0, 0.0, 0, 0
    for ep in range(args.epochs):
        epochs += 1
        model.train()
        for b in batches(tr, n, args.batch_size, rng):
            t = time.perf_counter()
            model.train_step(b)
            step_s += time.perf_counter() - t
            seen += len(b["label"])
        auc, _ = auc_logloss(va["label"].numpy(), predict(va))
        if auc > best:
            best, bad = auc, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= args.patience:
                break
    model.load_state_dict(best_state)
    auc, ll = auc_logloss(te["label"].numpy(), predict(te))
    return {"test_auc": auc, "test_logloss": ll, "train_rows_per_second": seen / step_s, "epochs": epochs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferrolab", default=os.path.join(ROOT, "target", "release", "ferrolab"))
    ap.add_argument("--data-dir", default=os.environ.get("FERROLAB_DATA", os.path.join(ROOT, "..", "shared", "data")))
    ap.add_argument("--apg-src", default=os.environ.get("FUXICTR_APG_SRC"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--work", default="/tmp/ferrolab-apg-anchor")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    split, run = os.path.join(args.work, "split"), os.path.join(args.work, f"run-{int(time.time())}")
    common = ["--data-dir", args.data_dir, "--seed", "0"]
    subprocess.run([args.ferrolab, "apg", "export", "--out", split] + common, check=True)
    sets = ['model.models=["deepfm"]', "model.embed_dim=16", "model.hidden=[128, 64]",
            "apg.rank=32", "apg.overparam=64", "apg.hyper_hidden=64", "apg.condition=mix",
            'apg.condition_fields=["user"]', "apg.generate_bias=true", f"train.lr={args.lr}",
            f"train.batch_size={args.batch_size}", f"train.epochs={args.epochs}",
            f"train.patience={args.patience}", f"train.seeds={args.seeds}", "efficiency.enabled=false"]
    cmd = [args.ferrolab, "apg", "--out", run, "--threads", str(args.threads)] + common
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True)
    rep = json.load(open(os.path.join(run, "report.json")))
    ours = {
        "test_auc": rep["metrics"]["deepfm_apg_test_auc"],
        "test_auc_std": rep["metrics"]["deepfm_apg_test_auc_std"],
        "train_rows_per_second": rep["metrics"]["deepfm_apg_train_rows_per_second"],
        "per_seed": rep["details"]["deepfm"]["apg_test_auc_per_seed"],
    }

    sys.path.insert(0, os.path.dirname(apg_source(args.apg_src)))
    from fuxictr.features import FeatureMap
    from APG_src import APG_DeepFM
    header, _ = read_tsv(os.path.join(split, "train.tsv"))
    fields = header[1:]
    splits = {k: read_tsv(os.path.join(split, f"{k}.tsv")) for k in ["train", "valid", "test"]}
    enc, vocab = encode(splits, fields)
    runs = [fuxictr_run(enc, vocab, fields, s, args, APG_DeepFM, FeatureMap) for s in range(args.seeds)]
    aucs = [r["test_auc"] for r in runs]
    theirs = {
        "test_auc": float(np.mean(aucs)), "test_auc_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
        "train_rows_per_second": float(np.mean([r["train_rows_per_second"] for r in runs])),
        "per_seed": runs,
    }
    diff = ours["test_auc"] - theirs["test_auc"]
    ratio = ours["train_rows_per_second"] / theirs["train_rows_per_second"]
    print(f"\nMovieLens-100k, DeepFM+APG, {args.seeds} seeds, {args.threads} threads")
    print(f"  ferrolab  test AUC {ours['test_auc']:.4f} ± {ours['test_auc_std']:.4f}   {ours['train_rows_per_second']:.0f} rows/s")
    print(f"  FuxiCTR   test AUC {theirs['test_auc']:.4f} ± {theirs['test_auc_std']:.4f}   {theirs['train_rows_per_second']:.0f} rows/s")
    print(f"  AUC difference {diff:+.4f} (target within ±0.005: {'yes' if abs(diff) <= 0.005 else 'NO'});"
          f" throughput ratio ferrolab/FuxiCTR {ratio:.2f} (target >= 1.0: {'yes' if ratio >= 1.0 else 'NO'})")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "apg_fuxictr.json"), "w") as fh:
        json.dump({"ferrolab": ours, "fuxictr": theirs, "auc_difference": diff, "throughput_ratio": ratio,
                   "fuxictr_commit": COMMIT, "threads": args.threads}, fh, indent=2)


if __name__ == "__main__":
    main()
