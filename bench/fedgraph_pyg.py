"""One FedAvg round of GCN on Cora with 5 clients in PyTorch Geometric, the anchor for
`ferrolab fedgraph`'s round time (issue 18). FederatedScope itself is not on PyPI; this script
does what its standalone mode does for FS-G's node-classification setting, in one process.

Data: the npz `crates/fed/examples/fedgraph_round_bench.rs --export` writes: Cora's features
(dense, as PyG's Planetoid loads them), labels, adjacency, the node split and the Louvain
client assignment of `ferrolab fedgraph`'s seed 0, and the hyper-parameters. Each client's
subgraph is `torch_geometric.utils.subgraph` of its nodes (cross-client edges dropped); its
edge count is checked against ferrolab's before anything is timed.

Model: FS-G's GCN_Net: 2 x GCNConv (hidden 64; self-loops + symmetric normalisation
D^-1/2 (A+I) D^-1/2, linear map before propagation, bias after, the same algebra as ferrolab's
GcnConv), dropout 0.5 then ReLU between the layers. `--cached` sets GCNConv(cached=True): the
normalised adjacency is computed once per graph, as ferrolab does; without it, every forward
recomputes it, as FS-G's GCN_Net (GCNConv's defaults) does. `--sparse-x` hands GCNConv the
bag-of-words features as a torch sparse CSR tensor (1.3% non-zero on Cora), so the first
layer's `X W` is a sparse-dense product, as in ferrolab (which keeps sparse rows sparse);
without it the features are dense, as PyG's Planetoid and FS-G load them.

A round (as FederatedScope's standalone mode runs it, clients one after another): for each of
the 5 clients, load the global state into the client's model, build SGD (lr, weight decay 5e-4)
as FS's trainer does at the start of each fit, run `local_steps` full-batch steps (forward,
cross-entropy on the client's training nodes, backward, step; the loss read back each step, as
FS's trainer and ferrolab do) and send a copy of the state; then FedAvg weighted by each
client's number of training nodes, load it into the global model and evaluate it on the whole
graph (no dropout, no autograd): accuracy on train / val / test and cross-entropy on val / test,
what ferrolab's server computes after every round.

Prints one JSON line: the median round time over `--iters` timed rounds after `--warmup`
untimed ones, min / max, CPU ms per timed round, peak RSS.
"""
import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
import torch_geometric
from torch_geometric.nn import GCNConv
from torch_geometric.utils import subgraph


class GCN(torch.nn.Module):
    """FS-G's GCN_Net (federatedscope/gfl/model/gcn.py): conv, then dropout + ReLU between."""

    def __init__(self, d_in, hidden, classes, layers, dropout, cached):
        super().__init__()
        dims = [d_in] + [hidden] * (layers - 1) + [classes]
        self.convs = torch.nn.ModuleList(
            GCNConv(a, b, cached=cached) for a, b in zip(dims, dims[1:]))
        self.dropout = dropout

    def forward(self, x, edge_index):
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i + 1 == len(self.convs):
                break
            x = F.relu(F.dropout(x, p=self.dropout, training=self.training))
        return x


class Client:
    """One client: its own model and its subgraph, as an FS client owns a trainer and data."""

    def __init__(self, model, x, edge_index, y, train, lr, wd, steps):
        self.model, self.x, self.edge_index, self.y = model, x, edge_index, y
        self.train, self.lr, self.wd, self.steps = train, lr, wd, steps
        self.n_train = int(train.numel())

    def fit(self, global_state):
        self.model.load_state_dict(global_state)
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, weight_decay=self.wd)
        self.model.train()
        total = 0.0
        for _ in range(self.steps):
            opt.zero_grad()
            out = self.model(self.x, self.edge_index)
            loss = F.cross_entropy(out[self.train], self.y[self.train])
            loss.backward()
            opt.step()
            total += loss.item()
        # The message FS's client sends: a copy of its state.
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}, \
            self.n_train, total / self.steps


def fedavg(states):
    """FedAvg as FS's ClientsAvgAggregator: sum of n_k / n * state_k."""
    n = sum(k for _, k in states)
    return {key: sum(s[key] * (k / n) for s, k in states) for key in states[0][0]}


def evaluate(model, x, edge_index, y, masks):
    model.eval()
    with torch.no_grad():
        out = model(x, edge_index)
        pred = out.argmax(1)
        res = {f"{name}_accuracy": float((pred[m] == y[m]).float().mean()) for name, m in masks.items()}
        for name in ("val", "test"):
            res[f"{name}_loss"] = float(F.cross_entropy(out[masks[name]], y[masks[name]]))
    return res


def setup(a):
    z = np.load(a.npz)
    n = int(z["labels"].shape[0])
    x = torch.from_numpy(z["x"].astype(np.float32))
    y = torch.from_numpy(z["labels"].astype(np.int64))
    indptr = torch.from_numpy(z["adj_indptr"].astype(np.int64))
    col = torch.from_numpy(z["adj_indices"].astype(np.int64))
    row = torch.arange(n).repeat_interleave(indptr.diff())
    edge_index = torch.stack([row, col])
    idx = {k: torch.from_numpy(z[f"idx_{k}"].astype(np.int64)) for k in ("train", "val", "test")}
    hp = {k: z[k].item() for k in ("classes", "hidden", "layers", "dropout", "lr",
                                   "weight_decay", "local_steps")}
    ptr = z["client_ptr"].astype(np.int64)
    nodes_all = torch.from_numpy(z["client_nodes"].astype(np.int64))
    want_edges = z["client_edges"].astype(np.int64)
    in_train = torch.zeros(n, dtype=torch.bool)
    in_train[idx["train"]] = True
    clients, sizes = [], []
    for c in range(len(ptr) - 1):
        nodes = nodes_all[ptr[c]:ptr[c + 1]]
        ei, _ = subgraph(nodes, edge_index, relabel_nodes=True, num_nodes=n)
        if ei.size(1) != int(want_edges[c]):
            raise SystemExit(f"error: client {c}: PyG's subgraph has {ei.size(1)} directed edges, "
                             f"ferrolab's {int(want_edges[c])}; not the same client graph")
        train = in_train[nodes].nonzero().flatten()
        model = GCN(x.size(1), int(hp["hidden"]), int(hp["classes"]), int(hp["layers"]),
                    float(hp["dropout"]), a.cached)
        xc = x[nodes].contiguous()
        clients.append(Client(model, xc.to_sparse_csr() if a.sparse_x else xc, ei, y[nodes], train, float(hp["lr"]),
                              float(hp["weight_decay"]), int(hp["local_steps"])))
        sizes.append(int(nodes.numel()))
    glob = GCN(x.size(1), int(hp["hidden"]), int(hp["classes"]), int(hp["layers"]),
               float(hp["dropout"]), a.cached)
    masks = {k: v for k, v in idx.items()}
    xg = x.to_sparse_csr() if a.sparse_x else x
    return clients, glob, (xg, edge_index, y, masks), hp, sizes


def vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--cached", action="store_true",
                    help="GCNConv(cached=True): normalise each graph's adjacency once")
    ap.add_argument("--sparse-x", action="store_true",
                    help="features as a torch sparse CSR tensor (ferrolab's representation)")
    ap.add_argument("--params-only", action="store_true")
    a = ap.parse_args()
    if a.threads < 1 or a.warmup < 0 or a.iters < 1:
        ap.error("--threads and --iters must be >= 1, --warmup >= 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    clients, glob, whole, hp, sizes = setup(a)
    if a.params_only:
        print(json.dumps({"params": sum(p.numel() for p in glob.parameters())}))
        return
    state = copy.deepcopy(glob.state_dict())
    times, res = [], None
    cpu0 = None
    for r in range(a.warmup + a.iters):
        if r == a.warmup:
            cpu0 = time.process_time()
        t = time.perf_counter()
        replies = []
        for c in clients:
            s, k, _ = c.fit(state)
            replies.append((s, k))
        state = fedavg(replies)
        glob.load_state_dict(state)
        res = evaluate(glob, *whole)
        dt = time.perf_counter() - t
        if r >= a.warmup:
            times.append(dt * 1e3)
    cpu_ms = (time.process_time() - cpu0) / a.iters * 1e3
    print(json.dumps({
        "round_ms": statistics.median(times), "round_ms_min": min(times),
        "round_ms_max": max(times), "round_ms_all": times, "cpu_ms_per_round": cpu_ms,
        "threads": a.threads, "cached": a.cached, "sparse_x": a.sparse_x, "warmup": a.warmup, "iters": a.iters,
        "client_nodes": sizes, "val_accuracy_last": res["val_accuracy"],
        "test_accuracy_last": res["test_accuracy"], "peak_rss_mb": vm("VmHWM:"),
        "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
    }))


if __name__ == "__main__":
    main()
