#!/usr/bin/env python3
"""PyTorch side of the vision benchmark (bench/run_vision_bench.sh): the twins of ferrolab's
ResNet-20, UNet and YOLO-tiny (crates/vision/src/models/), timed as
crates/vision/examples/vision_step_bench.rs times ferrolab's.

    bench/.venv/bin/python bench/vision_torch.py --model resnet20|unet|yolo \
        [--threads 2] [--warmup N] [--iters N] [--params-only]

Each twin has the same layers in the same order with the same parameter count; the script
prints `params` the way burn counts them (trainable parameters plus batch norm's running mean
and variance), and bench/vision_harness.py refuses a round where the two sides differ.

- ResNet-20: 3x3 conv 16 + BN + ReLU, three stages of three basic blocks (16/32/64, stride 2
  at the first block of stages 2 and 3), option-A shortcuts (`x[:, :, ::2, ::2]` zero-padded
  with planes/4 channels on each side, as akamaster/pytorch_resnet_cifar10), global average
  pooling, Linear(64 -> 10). Convolutions without bias (BN follows). Input [128, 1, 32, 32].

Training step: forward, loss (cross-entropy, mean), backward, optimiser step (SGD with
momentum 0.9 and weight decay 5e-4 for ResNet and YOLO, Adam for UNet), on one fixed random
batch, the loss read back after the forward pass (`loss.item()`), as ferrolab's side does.
Inference: `model.eval()` under `torch.no_grad()`, the output summed and read back. Memory:
freed heap handed back (malloc_trim), VmRSS once model, batch and optimiser exist, the
high-water mark reset, VmHWM after the training steps; `train_added_mb` = peak - before.
"""

import argparse
import ctypes
import gc
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- ResNet-20 (He et al. 2016, CIFAR variant, option-A shortcuts) ----

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else 0

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x[:, :, ::2, ::2] if self.stride == 2 else x
        if self.pad:
            s = F.pad(s, (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)
        return F.relu(y + s)


class ResNet(nn.Module):
    def __init__(self, depth=20, in_channels=1, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- shared ----

def burn_param_count(model):
    """Trainable parameters plus BN running mean and variance: what burn's num_params counts."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n += m.running_mean.numel() + m.running_var.numel()
    return n


def labels(n, classes, seed):
    """The same LCG labels as vision_step_bench.rs (values do not affect the time)."""
    m = 2**64
    s = (seed * 6364136223846793005 + 1) % m
    out = []
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) % m
        out.append((s >> 33) % classes)
    return torch.tensor(out, dtype=torch.int64)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)


def vm(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def release_free_memory():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def build(name):
    """(model, optimiser, batch x, loss(model_output) -> scalar)."""
    g = torch.Generator().manual_seed(0)
    if name == "resnet20":
        model = ResNet(20, 1, 10)
        x = torch.randn(128, 1, 32, 32, generator=g)
        y = labels(128, 10, 1)
        return model, sgd(model), x, lambda out: F.cross_entropy(out, y)
    raise SystemExit(f"error: --model {name!r}: expected resnet20")


def run(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, opt, x, loss_fn = build(a.model)
    if a.params_only:
        return {"model": a.model, "params": burn_param_count(model),
                "trainable_params": sum(p.numel() for p in model.parameters())}
    model.train()
    release_free_memory()
    before = vm("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        measurable = True
    except OSError:
        measurable = False
    train, fwd, bwd, opt_t = [], [], [], []
    first = last = None
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        value = loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        first = value if first is None else first
        last = value
        if i >= a.warmup:
            train.append((t3 - t0) * 1e3)
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            opt_t.append((t3 - t2) * 1e3)
    peak = vm("VmHWM:") if measurable else float("nan")
    del opt
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            model(x).sum().item()
            if i >= a.warmup:
                infer.append((time.perf_counter() - t0) * 1e3)
    return {
        "model": a.model, "threads": a.threads,
        "train_ms": statistics.median(train),
        "train_forward_ms": statistics.median(fwd),
        "train_backward_ms": statistics.median(bwd),
        "train_optim_ms": statistics.median(opt_t),
        "infer_ms": statistics.median(infer),
        "train_ms_all": [round(t, 3) for t in train],
        "infer_ms_all": [round(t, 3) for t in infer],
        "rss_before_training_mb": round(before, 1),
        "train_peak_rss_mb": round(peak, 1),
        "train_added_mb": round(peak - before, 1),
        "params": burn_param_count(model),
        "trainable_params": sum(p.numel() for p in model.parameters()),
        "loss_first": first, "loss_last": last,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=["resnet20"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--params-only", action="store_true",
                    help="print the parameter count (burn's way) and exit")
    a = ap.parse_args()
    if a.threads < 1 or a.iters < 1 or a.warmup < 0:
        raise SystemExit("error: --threads and --iters must be >= 1, --warmup >= 0")
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
