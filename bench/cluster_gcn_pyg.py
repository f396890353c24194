"""Cluster-GCN training epochs in PyTorch Geometric, the anchor for ferrolab's Cluster-GCN.

Reads the graph, split and METIS partition that `export_graph` wrote (so both sides train on
the same graph and the same clusters), builds batches the way PyG's ClusterLoader does (the
union of q random clusters, the subgraph they induce), and trains PyG's own ClusterGCNConv
(diagonal enhancement lambda) with LayerNorm + ReLU between layers, Adam, cross-entropy on
the batch's training nodes: the same model as `ferrolab cluster-gcn` with
`model.layer = "cluster"`. The adjacency is a torch sparse COO tensor, PyG's fast path. Prints one JSON line: seconds per epoch and the training
phase's peak resident memory (VmHWM, reset before the epochs, as ferrolab measures it).
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import ClusterGCNConv
from torch_geometric.utils import subgraph, to_torch_coo_tensor


def load(path):
    z = np.load(path)
    n = int(z["adj_shape"][0])
    indptr, indices = z["adj_indptr"], z["adj_indices"]
    row = np.repeat(np.arange(n), np.diff(indptr))
    edge_index = torch.from_numpy(np.stack([row, indices]).astype(np.int64))
    rows, cols = (int(v) for v in z["attr_shape"])
    x = torch.from_numpy(z["attr_data"].astype(np.float32).reshape(rows, cols))
    y = torch.from_numpy(z["labels"].astype(np.int64))
    train = torch.zeros(n, dtype=torch.bool)
    train[torch.from_numpy(z["idx_train"].astype(np.int64))] = True
    part = z["cluster_part"].astype(np.int64)
    clusters = [torch.from_numpy(np.flatnonzero(part == c)) for c in range(part.max() + 1)]
    return edge_index, x, y, train, clusters


class Net(torch.nn.Module):
    def __init__(self, d_in, hidden, classes, layers, lam, dropout):
        super().__init__()
        dims = [d_in] + [hidden] * (layers - 1) + [classes]
        self.convs = torch.nn.ModuleList(
            ClusterGCNConv(a, b, diag_lambda=lam) for a, b in zip(dims, dims[1:]))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(hidden) for _ in range(layers - 1))
        self.dropout = dropout

    def forward(self, x, edge_index):
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, edge_index)
            if i < len(self.norms):
                x = F.relu(self.norms[i](x))
        return x


def vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", required=True)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--q", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    edge_index, x, y, train, clusters = load(a.npz)
    model = Net(x.size(1), a.hidden, int(y.max()) + 1, a.layers, a.lam, a.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(0)
    before = vm("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    times = []
    model.train()
    for _ in range(a.epochs):
        t = time.perf_counter()
        order = torch.randperm(len(clusters), generator=gen).tolist()
        for i in range(0, len(order), a.q):
            nodes = torch.cat([clusters[c] for c in order[i:i + a.q]]).sort().values
            ei, _ = subgraph(nodes, edge_index, relabel_nodes=True, num_nodes=x.size(0))
            # PyG's fastest PyPI-only path: a torch sparse COO adjacency makes each layer one
            # spmm (message_and_aggregate); with a plain edge_index it gathers per edge and
            # scatter-adds, which was far slower here in a one-off micro-test.
            m = nodes.numel()
            ei = to_torch_coo_tensor(ei, size=(m, m))
            targets = train[nodes]
            if not bool(targets.any()):
                continue
            opt.zero_grad()
            out = model(x[nodes], ei)
            loss = F.cross_entropy(out[targets], y[nodes][targets])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    print(json.dumps({
        "epoch_seconds": float(np.mean(times)),
        "epoch_seconds_min": min(times),
        "rss_before_training_mb": before,
        "train_peak_rss_mb": vm("VmHWM:"),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
