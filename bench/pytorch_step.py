#!/usr/bin/env python3
"""PyTorch side of the training-step benchmark (see bench/README.md).

Builds the same three models as crates/core/examples/train_step_bench.rs and times one
training step (forward + cross-entropy + backward + Adam step) on random inputs and labels
that stay fixed for the run, on the CPU with `torch.set_num_threads(N)`.

    python bench/pytorch_step.py [--threads N] [--warmup N] [--iters N]
                                 [--only mlp,cnn,attention] [--breakdown] [--ops] [--op NAME]
                                 [--json]

--json prints one object {"mlp_ms": ..., "cnn_ms": ..., "attention_ms": ...} of median step
times in milliseconds; --breakdown adds <model>_forward_ms, <model>_backward_ms and
<model>_optim_ms (medians of each phase). --ops times, instead, the individual kernels of the
CNN and attention steps through ATen (the ops autograd calls), with the same names and shapes
as `train_step_bench --ops`.
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = ("mlp", "cnn", "attention")
CLASSES = 10
LEARNING_RATE = 1e-3


class Mlp(nn.Module):
    """784-256-256-10 with ReLU (ferrolab_core::nn::Mlp, dropout 0)."""

    def __init__(self, dims=(784, 256, 256, CLASSES)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, CLASSES)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class MultiHeadSelfAttention(nn.Module):
    """The same ops as ferrolab_core::nn::MultiHeadSelfAttention: separate Q/K/V/out
    projections, softmax(QK^T/sqrt(d_h))V per head (no fused SDPA kernel)."""

    def __init__(self, d_model, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        dh = d // h

        def split(y):
            return y.reshape(b, t, h, dh).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q.matmul(k.transpose(2, 3)) / math.sqrt(dh)
        ctx = torch.softmax(scores, dim=3).matmul(v).transpose(1, 2).reshape(b, t, d)
        return self.out(ctx)


class AttentionBlock(nn.Module):
    def __init__(self, d_model=128, heads=4):
        super().__init__()
        self.attn = MultiHeadSelfAttention(d_model, heads)
        self.norm = nn.LayerNorm(d_model, eps=1e-5)
        self.head = nn.Linear(d_model, CLASSES)

    def forward(self, x):
        h = self.norm(x + self.attn(x))
        return self.head(h.mean(dim=1))


def build(name):
    g = torch.Generator().manual_seed({"mlp": 1, "cnn": 2, "attention": 3}[name])
    if name == "mlp":
        model, shape = Mlp(), (128, 784)
    elif name == "cnn":
        model, shape = SmallCnn(), (64, 1, 28, 28)
    else:
        model, shape = AttentionBlock(128, 4), (32, 64, 128)
    x = torch.rand(shape, generator=g)
    y = torch.randint(0, CLASSES, (shape[0],), generator=g)
    return model, x, y


def bench(name, warmup, iters):
    torch.manual_seed(42)
    model, x, y = build(name)
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8)
    steps, fwd, bwd, opt = [], [], [], []
    loss_value = float("nan")
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss_value = loss.item()  # read-back, as the Rust side does
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optim.step()
        t3 = time.perf_counter()
        if i >= warmup:
            steps.append((t3 - t0) * 1e3)
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            opt.append((t3 - t2) * 1e3)
    if not math.isfinite(loss_value):
        print(f"warning: final loss is {loss_value}", file=sys.stderr)
    med = statistics.median
    return {"step": med(steps), "forward": med(fwd), "backward": med(bwd), "optim": med(opt)}


def time_op(fn, warmup, iters):
    times = []
    for i in range(warmup + iters):
        t = time.perf_counter()
        fn()
        dt = (time.perf_counter() - t) * 1e3
        if i >= warmup:
            times.append(dt)
    return statistics.median(times)


def ops(only, warmup, iters, name_filter=None):
    """Per-kernel medians (ms); names and shapes match train_step_bench --ops."""
    aten = torch.ops.aten
    out = {}

    def rand(*shape):
        return torch.rand(shape)

    def op(name, fn):
        if name_filter is None or name_filter in name:
            out[name] = time_op(fn, warmup, iters)

    torch.manual_seed(7)
    with torch.no_grad():
        if "cnn" in only:
            x1, w1, b1, g1 = rand(64, 1, 28, 28), rand(32, 1, 3, 3), rand(32), rand(64, 32, 28, 28)
            x2, w2, b2, g2 = rand(64, 32, 14, 14), rand(64, 32, 3, 3), rand(64), rand(64, 64, 14, 14)
            h, wf, gf = rand(64, 3136), rand(128, 3136), rand(64, 128)

            def conv_bwd(g, x, w, mask):
                return aten.convolution_backward(
                    g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
                )

            op("cnn.conv1_forward", lambda: F.conv2d(x1, w1, b1, padding=1))
            op("cnn.conv1_weight_grad", lambda: conv_bwd(g1, x1, w1, [False, True, False]))
            op("cnn.conv1_bias_grad", lambda: g1.sum(dim=(0, 2, 3)))
            op("cnn.relu1_forward", lambda: torch.relu(g1))
            p1, i1 = F.max_pool2d(g1, 2, return_indices=True)
            op("cnn.pool1_forward", lambda: F.max_pool2d(g1, 2, return_indices=True))
            op("cnn.pool1_backward",
               lambda: aten.max_pool2d_with_indices_backward(p1, g1, [2, 2], [2, 2], [0, 0], [1, 1], False, i1))
            op("cnn.conv2_forward", lambda: F.conv2d(x2, w2, b2, padding=1))
            op("cnn.conv2_input_grad", lambda: conv_bwd(g2, x2, w2, [True, False, False]))
            op("cnn.conv2_weight_grad", lambda: conv_bwd(g2, x2, w2, [False, True, False]))
            g2_rows, cols2 = rand(64, 64 * 14 * 14), rand(64 * 14 * 14, 32 * 9)
            op("cnn.conv2_weight_grad_gemm_only", lambda: g2_rows.matmul(cols2))
            op("cnn.conv2_bias_grad", lambda: g2.sum(dim=(0, 2, 3)))
            p2, i2 = F.max_pool2d(g2, 2, return_indices=True)
            op("cnn.pool2_forward", lambda: F.max_pool2d(g2, 2, return_indices=True))
            op("cnn.pool2_backward",
               lambda: aten.max_pool2d_with_indices_backward(p2, g2, [2, 2], [2, 2], [0, 0], [1, 1], False, i2))
            op("cnn.fc1_forward", lambda: F.linear(h, wf))
            op("cnn.fc1_weight_grad", lambda: h.t().matmul(gf))
            op("cnn.fc1_input_grad", lambda: gf.matmul(wf))
        if "attention" in only:
            b, t, d, heads = 32, 64, 128, 4
            dh = d // heads
            x, w, bias = rand(b, t, d), rand(d, d), rand(d)
            q, k, scores = rand(b, heads, t, dh), rand(b, heads, t, dh), rand(b, heads, t, t)
            gamma, beta = rand(d), rand(d)
            op("attention.linear_forward", lambda: F.linear(x, w, bias))
            op("attention.split_heads_copy",
               lambda: x.reshape(b, t, heads, dh).transpose(1, 2).reshape(b * heads, t, dh))
            op("attention.scores_matmul", lambda: q.matmul(k.transpose(2, 3)))
            op("attention.softmax", lambda: torch.softmax(scores, dim=3))
            # PyTorch's autograd runs its fused kernels in training, so the "as trained" entries
            # (burn's decompositions on the Rust side) are the same fused ops here.
            op("attention.softmax_as_trained", lambda: torch.softmax(scores, dim=3))
            op("attention.layer_norm_as_trained", lambda: F.layer_norm(x, (d,), gamma, beta, 1e-5))
            op("attention.context_matmul", lambda: scores.matmul(k))
            op("attention.layer_norm", lambda: F.layer_norm(x, (d,), gamma, beta, 1e-5))
            op("attention.add_residual", lambda: x + x)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--only", default=",".join(MODELS))
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--ops", action="store_true", help="time the individual kernels instead")
    p.add_argument("--op", default=None, help="with --ops: only kernels whose name contains this")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    only = [m.strip() for m in a.only.split(",") if m.strip()]
    bad = [m for m in only if m not in MODELS]
    if bad:
        p.error(f"--only: unknown model(s) {bad} (expected some of {list(MODELS)})")
    if a.threads < 1 or a.iters < 1 or a.warmup < 0:
        p.error("--threads and --iters must be >= 1, --warmup >= 0")

    torch.set_num_threads(a.threads)
    if a.ops or a.op:
        timings = ops(only, a.warmup, a.iters, a.op)
        if a.json:
            print(json.dumps({k: round(v, 4) for k, v in timings.items()}))
        else:
            print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, per-op median ms")
            for name, ms in timings.items():
                print(f"{name:<32} {ms:>10.3f}")
        return
    results = {name: bench(name, a.warmup, a.iters) for name in MODELS if name in only}

    if a.json:
        out = {}
        for name, t in results.items():
            out[f"{name}_ms"] = round(t["step"], 4)
            if a.breakdown:
                for phase in ("forward", "backward", "optim"):
                    out[f"{name}_{phase}_ms"] = round(t[phase], 4)
        print(json.dumps(out))
    else:
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"warmup {a.warmup}, iters {a.iters} (median ms)"
        )
        print(f"{'model':<10} {'step':>10} {'fwd+loss':>10} {'backward':>10} {'optim':>10}")
        for name, t in results.items():
            print(
                f"{name:<10} {t['step']:>10.3f} {t['forward']:>10.3f} "
                f"{t['backward']:>10.3f} {t['optim']:>10.3f}"
            )


if __name__ == "__main__":
    main()
