"""Cluster-GCN training epochs in PyTorch Geometric, the anchor for ferrolab's Cluster-GCN.

One process trains one model and prints one JSON line; bench/run_cluster_gcn_pyg.sh runs it
(and ferrolab) under bench/harness.py.

Data: the graph, split and METIS partition that `export_graph` wrote, so both sides train on
the same graph and the same clusters.

Batches: PyG's own ClusterData and ClusterLoader. ClusterData runs once before training: it
permutes the nodes so that each cluster is a contiguous range and keeps the permuted CSR
adjacency. It would run METIS through torch-sparse or pyg-lib, which have no PyPI wheels, so
`ExportedClusterData` hands it the exported partition instead; everything else is PyG's code.
Per batch, ClusterLoader slices the row ranges of the q selected clusters out of that CSR,
keeps the edges whose column lies in the batch and relabels the columns (vectorised, touching
only the batch's rows). The batch's adjacency becomes a torch sparse COO tensor, PyG's fastest
path without torch-sparse: each layer is one sparse-dense product (`message_and_aggregate`).

Model: 3 x conv with diagonal enhancement (lambda 1), LayerNorm + ReLU between layers, dropout
before every layer, Adam, cross-entropy on the batch's training nodes, as `ferrolab
cluster-gcn` with `model.layer = "cluster"`. `--order` picks the conv:

- `propagate-first`: PyG's ClusterGCNConv as it is,
  `out = lin_out(Â x) + lin_root(x)`, with `Â = (D+I)^-1 (A+I) + lambda diag((D+I)^-1)`:
  it propagates the layer's input columns (128 on every layer).
- `transform-first`: `TransformFirstConv`, the same parameters, the same normalisation code
  and the same math reassociated as ferrolab computes it, `Â (x W_out^T) + b_out + x W_root^T`:
  it propagates the layer's output columns (10 on the last layer). `--check` verifies that
  both give the same output for the same weights.

Timing: `epoch_seconds` is the mean over all epochs, the first included, as ferrolab's
`epoch_seconds` (train_seconds / epochs; ferrolab logs no per-epoch time, so neither side
excludes a warm-up epoch). Memory as ferrolab measures it: freed heap handed back
(malloc_trim), `rss_before_training_mb` = VmRSS, the high-water mark reset, then
`train_peak_rss_mb` = VmHWM after the epochs; `train_added_mb` = peak - before.
"""
import argparse
import ctypes
import gc
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torch_geometric
from torch_geometric.data import Data
from torch_geometric.loader import ClusterData, ClusterLoader
from torch_geometric.nn import ClusterGCNConv
from torch_geometric.utils import (add_self_loops, degree, is_torch_sparse_tensor,
                                   remove_self_loops, subgraph, to_edge_index,
                                   to_torch_coo_tensor)
from torch_geometric.utils.sparse import set_sparse_value


class ExportedClusterData(ClusterData):
    """PyG's ClusterData on a given partition: its METIS step (torch-sparse or pyg-lib, no
    PyPI wheels) replaced by the exported assignment; the permutation and CSR are PyG's."""

    def __init__(self, data, part):
        self._exported = part
        super().__init__(data, num_parts=int(part.max()) + 1, log=False)

    def _metis(self, edge_index, num_nodes):
        assert self._exported.numel() == num_nodes
        return self._exported


class TransformFirstConv(ClusterGCNConv):
    """ClusterGCNConv with its product reassociated: `Â (x W_out^T) + b_out + x W_root^T`.

    Same parameters (lin_out with bias, lin_root without) and the same normalisation code as
    ClusterGCNConv.forward (its torch-sparse and edge_index branches, copied); only the linear
    map moves before the propagation, so it propagates `out_channels` columns.
    """

    def forward(self, x, edge_index):
        num_nodes = x.size(self.node_dim)
        edge_weight = None
        if is_torch_sparse_tensor(edge_index):
            assert edge_index.size(0) == edge_index.size(1)
            if edge_index.layout == torch.sparse_csc:
                raise NotImplementedError("sparse CSC is not supported")
            if self.add_self_loops:
                edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
            col_and_row, value = to_edge_index(edge_index)
            col, row = col_and_row[0], col_and_row[1]
            deg_inv = 1. / degree(col, num_nodes=edge_index.size(0)).clamp_(1.)
            edge_weight = deg_inv[col]
            edge_weight[row == col] += self.diag_lambda * deg_inv
            edge_index = set_sparse_value(edge_index, edge_weight)
        elif isinstance(edge_index, torch.Tensor):
            if self.add_self_loops:
                edge_index, _ = remove_self_loops(edge_index)
                edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
            row, col = edge_index[0], edge_index[1]
            deg_inv = 1. / degree(col, num_nodes=num_nodes).clamp_(1.)
            edge_weight = deg_inv[col]
            edge_weight[row == col] += self.diag_lambda * deg_inv
        else:
            raise NotImplementedError("torch_sparse.SparseTensor (torch-sparse is not installed)")
        xw = F.linear(x, self.lin_out.weight)
        # propagate_type: (x: Tensor, edge_weight: OptTensor)
        out = self.propagate(edge_index, x=xw, edge_weight=edge_weight)
        if self.lin_out.bias is not None:
            out = out + self.lin_out.bias
        return out + self.lin_root(x)


CONVS = {"propagate-first": ClusterGCNConv, "transform-first": TransformFirstConv}


class Net(torch.nn.Module):
    def __init__(self, d_in, hidden, classes, layers, lam, dropout, order):
        super().__init__()
        conv = CONVS[order]
        dims = [d_in] + [hidden] * (layers - 1) + [classes]
        self.convs = torch.nn.ModuleList(
            conv(a, b, diag_lambda=lam) for a, b in zip(dims, dims[1:]))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(hidden) for _ in range(layers - 1))
        self.dropout = dropout

    def forward(self, x, adj):
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, adj)
            if i < len(self.norms):
                x = F.relu(self.norms[i](x))
        return x


def load(path):
    """The exported graph as a PyG Data (features, labels, train mask, edge_index) and the
    exported cluster of every node."""
    z = np.load(path)
    n = int(z["adj_shape"][0])
    indptr = torch.from_numpy(z["adj_indptr"].astype(np.int64))
    col = torch.from_numpy(z["adj_indices"].astype(np.int64))
    row = torch.arange(n).repeat_interleave(indptr.diff())
    rows, cols = (int(v) for v in z["attr_shape"])
    x = torch.from_numpy(z["attr_data"].astype(np.float32).reshape(rows, cols))
    y = torch.from_numpy(z["labels"].astype(np.int64))
    train = torch.zeros(n, dtype=torch.bool)
    train[torch.from_numpy(z["idx_train"].astype(np.int64))] = True
    part = torch.from_numpy(z["cluster_part"].astype(np.int64))
    data = Data(x=x, y=y, train_mask=train, edge_index=torch.stack([row, col]), num_nodes=n)
    return data, part


def vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def release_free_memory():
    """gc, then glibc's malloc_trim(0), as ferrolab does before it measures (no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data, part = load(a.npz)
    row, col = data.edge_index
    edge_cut = float((part[row] != part[col]).double().mean())
    del row, col
    d_in, classes = data.x.size(1), int(data.y.max()) + 1
    # ClusterData's one-off work (permutation, permuted CSR), then only its copies are kept.
    cluster_data = ExportedClusterData(data, part)
    del data, part
    loader = ClusterLoader(cluster_data, batch_size=a.q, shuffle=True,
                           generator=torch.Generator().manual_seed(0))
    model = Net(d_in, a.hidden, classes, a.layers, a.lam, a.dropout, a.order)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    release_free_memory()
    before = vm("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    times = []
    # Where an epoch goes (sums over its batches): ClusterLoader, the COO adjacency, forward
    # with the loss, backward, the optimiser step.
    phases = {k: 0.0 for k in ("batch", "adjacency", "forward", "backward", "optimizer")}
    model.train()
    for _ in range(a.epochs):
        t = time.perf_counter()
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            t1 = time.perf_counter()
            m = batch.num_nodes
            adj = to_torch_coo_tensor(batch.edge_index, size=(m, m))
            targets = batch.train_mask
            t2 = time.perf_counter()
            phases["batch"] += t1 - t0
            phases["adjacency"] += t2 - t1
            if not bool(targets.any()):
                continue
            opt.zero_grad()
            out = model(batch.x, adj)
            loss = F.cross_entropy(out[targets], batch.y[targets])
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            opt.step()
            t5 = time.perf_counter()
            phases["forward"] += t3 - t2
            phases["backward"] += t4 - t3
            phases["optimizer"] += t5 - t4
        times.append(time.perf_counter() - t)
    peak = vm("VmHWM:")
    out = {
        "epoch_seconds": float(np.mean(times)),
        "epoch_seconds_all": times,
        "train_peak_rss_mb": peak,
        "rss_before_training_mb": before,
        "train_added_mb": peak - before,
        "edge_cut": edge_cut,
        "order": a.order,
        "threads": a.threads,
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
    }
    out.update({f"{k}_seconds": v / len(times) for k, v in phases.items()})
    print(json.dumps(out))


def check():
    """Both orders give the same output for the same weights (conv and whole model, torch
    sparse and edge_index input), and ExportedClusterData + ClusterLoader batches are the
    subgraphs their clusters induce. Exits non-zero on a mismatch."""
    torch.manual_seed(0)
    n, parts, worst, tol = 300, 6, 0.0, 1e-4
    a = torch.randint(0, n, (2, 2400))
    ei = torch.cat([a, a.flip(0)], 1)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.unique(ei, dim=1)  # a symmetric simple graph, as exported
    adj = to_torch_coo_tensor(ei, size=(n, n))
    x = torch.randn(n, 32)

    def diff(u, v, what):
        nonlocal worst
        d = float((u - v).abs().max())
        worst = max(worst, d)
        print(f"{what}: max |difference| {d:.2e}", file=sys.stderr)

    for d_out in (16, 5):
        lit = ClusterGCNConv(32, d_out, diag_lambda=1.0)
        tf = TransformFirstConv(32, d_out, diag_lambda=1.0)
        with torch.no_grad():
            lit.lin_out.bias.normal_()  # glorot leaves the bias at zero
        tf.load_state_dict(lit.state_dict())
        diff(lit(x, adj), tf(x, adj), f"conv 32->{d_out}, torch sparse COO")
        diff(lit(x, ei), tf(x, ei), f"conv 32->{d_out}, edge_index")
        diff(lit(x, adj), lit(x, ei), f"conv 32->{d_out}, COO vs edge_index (literal)")
    # The formula spelt out densely: (D+I)^-1 (A+I) + lambda diag((D+I)^-1).
    dense = torch.zeros(n, n)
    dense[ei[0], ei[1]] = 1.0
    dense += torch.eye(n)
    dinv = 1.0 / dense.sum(1)
    a_hat = dinv[:, None] * dense + torch.diag(dinv)
    ref = a_hat @ (x @ lit.lin_out.weight.t()) + lit.lin_out.bias + x @ lit.lin_root.weight.t()
    diff(tf(x, adj), ref, "conv 32->5 (transform-first) against the dense formula")
    ref = (a_hat @ x) @ lit.lin_out.weight.t() + lit.lin_out.bias + x @ lit.lin_root.weight.t()
    diff(lit(x, adj), ref, "conv 32->5 (ClusterGCNConv) against the dense formula")
    for layers in (2, 3):
        lit = Net(32, 16, 5, layers, 1.0, 0.2, "propagate-first").eval()
        tf = Net(32, 16, 5, layers, 1.0, 0.2, "transform-first").eval()
        tf.load_state_dict(lit.state_dict())
        diff(lit(x, adj), tf(x, adj), f"model, {layers} layers")
    # Batches: ClusterLoader on ExportedClusterData vs `subgraph` of the same clusters.
    part = torch.randint(0, parts, (n,))
    cd = ExportedClusterData(Data(x=x, node_id=torch.arange(n), edge_index=ei, num_nodes=n),
                             part)
    for batch in ClusterLoader(cd, batch_size=2, shuffle=True):
        # node_id, a node attribute, is permuted and sliced with x: the original ids.
        want, _ = subgraph(batch.node_id, ei, relabel_nodes=True, num_nodes=n)
        got = batch.edge_index
        same = (want.size(1) == got.size(1)
                and torch.equal(torch.unique(want, dim=1), torch.unique(got, dim=1)))
        print(f"batch of {batch.num_nodes} nodes: {got.size(1)} edges, "
              f"{'equal to' if same else 'DIFFERENT FROM'} subgraph()", file=sys.stderr)
        if not same:
            raise SystemExit("error: ClusterLoader batch differs from the induced subgraph")
    if worst > tol:
        raise SystemExit(f"error: orders differ by {worst:.2e} > {tol}")
    print(f"ok: both orders agree within {worst:.2e} (tolerance {tol})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz")
    ap.add_argument("--order", choices=sorted(CONVS), default="transform-first")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--q", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true",
                    help="verify the two orders and the batches on a small random graph")
    a = ap.parse_args()
    if a.check:
        with torch.no_grad():
            return check()
    if not a.npz:
        ap.error("--npz is required (or --check)")
    if min(a.layers, a.hidden, a.q, a.epochs, a.threads) < 1:
        ap.error("--layers, --hidden, --q, --epochs and --threads must be at least 1")
    train(a)


if __name__ == "__main__":
    main()
