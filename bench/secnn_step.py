"""PyTorch side of the SECNN/Kim-CNN step benchmark (see bench/run_secnn_bench.sh).

Same architecture as ferrolab's: embeddings 18000x300 U(-0.25, 0.25), Conv1d widths 3/4/5 with
100 maps and 'same' padding, ReLU, (SECNN: squeeze-and-excitation r=16 over the 300 stacked
channels), max over time, dropout 0.5, Linear(300->2), cross-entropy, max-norm 3 on the output
weights. Optimiser: `--optim sparse` (default) matches ferrolab (SparseAdam on the word vectors,
Adam on the rest); `--optim dense` is plain Adam on everything, a different algorithm (it
updates all 18000 word vectors every step), kept for reference and not a published ratio.
"""
import argparse, json, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, EMB, MAPS, BATCH, WIDTHS = 18000, 300, 100, 50, (3, 4, 5)


class Net(nn.Module):
    def __init__(self, se: bool, sparse: bool):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMB, sparse=sparse)
        nn.init.uniform_(self.emb.weight, -0.25, 0.25)
        self.convs = nn.ModuleList(nn.Conv1d(EMB, MAPS, k, padding="same") for k in WIDTHS)
        c = MAPS * len(WIDTHS)
        self.se = nn.Sequential(nn.Linear(c, c // 16), nn.ReLU(), nn.Linear(c // 16, c), nn.Sigmoid()) if se else None
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(c, 2)

    def forward(self, tokens):
        x = self.emb(tokens).transpose(1, 2)  # [B, E, T]
        maps = torch.cat([F.relu(conv(x)) for conv in self.convs], dim=1)  # [B, C, T]
        if self.se is not None:
            maps = maps * self.se(maps.mean(dim=2)).unsqueeze(2)
        return self.out(self.drop(maps.max(dim=2).values))


def time_model(se, args):
    torch.manual_seed(0)
    sparse = args.optim == "sparse"
    net = Net(se, sparse)
    if sparse:
        opts = [torch.optim.SparseAdam([net.emb.weight], lr=1e-3, eps=1e-5),
                torch.optim.Adam([p for n, p in net.named_parameters() if n != "emb.weight"], lr=1e-3, eps=1e-5)]
    else:
        opts = [torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-5)]
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(2, VOCAB, (BATCH, args.len), generator=g)
    labels = torch.arange(BATCH) % 2
    times = []
    for i in range(args.warmup + args.iters):
        t = time.perf_counter()
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(tokens), labels)
        loss.backward()
        for o in opts:
            o.step()
        with torch.no_grad():
            w = net.out.weight  # [classes, C]: max-norm per class row
            w.mul_(torch.clamp(3.0 / w.norm(dim=1, keepdim=True).clamp_min(1e-12), max=1.0))
        loss.item()
        if i >= args.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--len", type=int, default=22)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--optim", choices=["sparse", "dense"], default="sparse")
    ap.add_argument("--model", choices=["kim", "secnn", "both"], default="both",
                    help="time one model per process (as bench/secnn_harness.py does)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {}
    if args.model in ("kim", "both"):
        out["kim_cnn_ms"] = time_model(False, args)
    if args.model in ("secnn", "both"):
        out["secnn_ms"] = time_model(True, args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
