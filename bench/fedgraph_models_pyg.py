"""Centralised accuracy of the ModelZoo networks on Cora's Planetoid split in PyTorch Geometric,
the anchor of issue 18's ModelZoo target: ferrolab's GraphSAGE, GIN and GPR-GNN within 1.5
points of this script on the same split (`bench/run_fedgraph_models.sh` runs both sides).

Data: the same file ferrolab reads, `graphs/cora_planetoid.npz` (Planetoid split 140 / 500 /
1000, raw 0/1 bag-of-words features, no row normalisation, as FS-G's citation yaml).

Networks, as ferrolab's `crates/graph/src/zoo` builds them (FS-G's `*_Net` classes): 2 layers,
hidden 64, between the layers dropout 0.5 then ReLU, no input dropout.
- gcn: GCNConv x 2 (self loops, symmetric normalisation).
- sage: SAGEConv(aggr="mean", root_weight=True) x 2 (bias on the neighbour map only).
- gat: GATConv(8 heads x 8, concat, attention dropout 0.5), GATConv(1 head, mean).
- gin: GINConv(eps = 0, nn = Linear(in, 64) -> ReLU -> Linear(64, out)) x 2 (sum of
  neighbours, no batch norm).
- gpr: GPR-GNN (Chien et al., ICLR 2021): Linear(in, 64) -> dropout -> ReLU -> Linear(64, 7),
  then sum_k gamma_k A_hat^k h for k = 0..10 (A_hat = GCN-normalised adjacency with self
  loops), gamma learned, initialised to personalised PageRank with alpha = 0.1 (the last
  coefficient (1 - alpha)^K); no dropout before the propagation (ferrolab's zoo has none).
Training: full batch, Adam (lr 0.01, weight decay 5e-4 on every parameter), up to 200 epochs,
stop 100 epochs after the best validation accuracy (strictly better), test accuracy at that
epoch; seeds 0..N-1 via torch.manual_seed.

Prints one JSON object: per architecture the test accuracy of each seed, best epochs, seconds.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm


def load(path):
    z = np.load(path, allow_pickle=False)
    n = int(z["adj_shape"][0])
    indptr, indices = z["adj_indptr"], z["adj_indices"]
    rows = np.repeat(np.arange(n), np.diff(indptr))
    edge_index = torch.tensor(np.stack([rows, indices]), dtype=torch.long)
    f = int(z["attr_shape"][1])
    x = np.zeros((n, f), dtype=np.float32)
    ar = np.repeat(np.arange(n), np.diff(z["attr_indptr"]))
    x[ar, z["attr_indices"]] = z["attr_data"]
    y = torch.tensor(z["labels"], dtype=torch.long)
    idx = {k: torch.tensor(z[f"idx_{k}"], dtype=torch.long) for k in ("train", "val", "test")}
    return torch.tensor(x), edge_index, y, idx


class Stack(nn.Module):
    """Two message-passing layers with dropout then ReLU between them."""

    def __init__(self, convs, p):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.p = p

    def forward(self, x, ei):
        h = self.convs[0](x, ei)
        for c in self.convs[1:]:
            h = c(F.relu(F.dropout(h, self.p, self.training)), ei)
        return h


class Gpr(nn.Module):
    def __init__(self, d_in, hidden, d_out, p, k=10, alpha=0.1):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        g = alpha * (1 - alpha) ** np.arange(k + 1)
        g[k] = (1 - alpha) ** k
        self.gamma = nn.Parameter(torch.tensor(g, dtype=torch.float32))
        self.p, self.k = p, k
        self.adj = None

    def forward(self, x, ei):
        if self.adj is None:
            ei2, w = gcn_norm(ei, num_nodes=x.size(0), add_self_loops=True)
            n = x.size(0)
            self.adj = torch.sparse_coo_tensor(ei2.flip(0), w, (n, n)).coalesce().to_sparse_csr()
        h = self.lin2(F.relu(F.dropout(self.lin1(x), self.p, self.training)))
        out = h * self.gamma[0]
        cur = h
        for i in range(1, self.k + 1):
            cur = torch.sparse.mm(self.adj, cur)
            out = out + cur * self.gamma[i]
        return out


def build(arch, d_in, d_out, hidden=64, p=0.5):
    if arch == "gcn":
        return Stack([GCNConv(d_in, hidden), GCNConv(hidden, d_out)], p)
    if arch == "sage":
        return Stack([SAGEConv(d_in, hidden, aggr="mean"), SAGEConv(hidden, d_out, aggr="mean")], p)
    if arch == "gat":
        heads = 8
        return Stack(
            [
                GATConv(d_in, hidden // heads, heads=heads, concat=True, dropout=p),
                GATConv(hidden, d_out, heads=1, concat=False, dropout=p),
            ],
            p,
        )
    if arch == "gin":
        mlp = lambda a, b: nn.Sequential(nn.Linear(a, hidden), nn.ReLU(), nn.Linear(hidden, b))  # noqa: E731
        return Stack([GINConv(mlp(d_in, hidden), eps=0.0), GINConv(mlp(hidden, d_out), eps=0.0)], p)
    if arch == "gpr":
        return Gpr(d_in, hidden, d_out, p)
    raise SystemExit(f"unknown architecture {arch!r} (gcn, sage, gat, gin, gpr)")


def run(arch, seed, x, ei, y, idx, epochs=200, patience=100, lr=0.01, wd=5e-4):
    torch.manual_seed(seed)
    model = build(arch, x.size(1), int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)

    def evaluate():
        model.eval()
        with torch.no_grad():
            pred = model(x, ei).argmax(1)
        return {k: (pred[v] == y[v]).float().mean().item() for k, v in idx.items()}

    best, best_epoch, since = evaluate(), 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(x, ei)[idx["train"]], y[idx["train"]])
        loss.backward()
        opt.step()
        e = evaluate()
        if e["val"] > best["val"]:
            best, best_epoch, since = e, epoch, 0
        else:
            since += 1
            if since >= patience:
                break
    return best["test"], best_epoch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="graphs/cora_planetoid.npz")
    ap.add_argument("--archs", default="sage,gin,gpr")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "1")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, ei, y, idx = load(a.data)
    out = {}
    for arch in a.archs.split(","):
        t0 = time.perf_counter()
        accs, epochs = [], []
        for s in range(a.seeds):
            acc, ep = run(arch, s, x, ei, y, idx)
            accs.append(acc)
            epochs.append(ep)
        out[arch] = {"test_accuracy": accs, "best_epoch": epochs, "seconds": time.perf_counter() - t0}
        print(f"{arch}: {accs}", flush=True, file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
