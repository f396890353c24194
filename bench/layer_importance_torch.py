#!/usr/bin/env python3
"""PyTorch side of the layer-importance benchmark (bench/run_layer_importance_bench.sh): the twin
of the zoo's ResNet-20 (crates/compress/src/zoo.rs), timed as
crates/compress/examples/layer_importance_bench.rs times ferrolab's.

    bench/.venv/bin/python bench/layer_importance_torch.py [--threads 2] [--images 2000] \
        [--batch 500] [--warmup N] [--iters N] [--sweeps N] [--params-only]

The twin has the zoo's layers in the zoo's order: 3x3 conv 1->16 (no bias: the zoo's
`ConvBn` drops it, BN follows) + BN + ReLU, nine basic blocks (vision_torch.BasicBlock:
16/32/64, stride 2 at the first block of stages 2 and 3, option-A shortcuts zero-padded on
both sides), global average pooling, Linear(64 -> 10). Its parameter count, printed the way
burn counts it, must equal ferrolab's (bench/layer_importance_harness.py checks it before
timing).

- full: `model.eval()` under `torch.no_grad()`, the whole set in batches, arg-max accuracy;
  `full_images_per_second` is the median of the timed passes after the untimed warm-up.
- sweep: the same algorithm as ferrolab's `dataset::probe` on a one-setting grid: a base
  evaluation, then per layer in forward order the cached stage inputs advanced to that layer's
  stage, the layer fake-quantised to 4 bits (batch norm folded, symmetric per output channel,
  round half away from zero, unfolded), the set evaluated from that stage, the weights written
  back. `sweep_images_per_second` = images x (probes + 1) / seconds of the whole sweep.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The zoo's basic block is vision's (option A, convolutions without bias: BN follows).
from vision_torch import BasicBlock, burn_param_count  # noqa: E402


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build():
    """The stages (stem, nine blocks, head) and the layers as (stage, weight, bn or None)."""
    stages, cin = [Stem()], 16
    for stage, cout in enumerate((16, 32, 64)):
        for i in range(3):
            stages.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
            cin = cout
    stages.append(Head())
    model = nn.Sequential(*stages)
    layers = [(0, stages[0].conv, stages[0].bn)]
    for s, b in enumerate(stages[1:-1], start=1):
        layers += [(s, b.conv1, b.bn1), (s, b.conv2, b.bn2)]
    layers.append((len(stages) - 1, stages[-1].fc, None))
    return model, layers


def fake_quantize(weight, bn, bits):
    """Per-output-channel symmetric fake quantisation with batch norm folded, as ops.rs."""
    w = weight.detach()
    shape = (-1,) + (1,) * (w.dim() - 1)
    if bn is not None:
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(shape)
    else:
        scale = torch.ones(w.shape[0], dtype=w.dtype).view(shape)
    folded = w * scale
    qmax = 2 ** (bits - 1) - 1
    step = folded.abs().flatten(1).amax(1).view(shape) / qmax
    step = torch.where(step > 0, step, torch.ones_like(step))
    q = torch.clamp(torch.sign(folded) * torch.floor(folded.abs() / step + 0.5), -qmax, qmax)
    return q * step / scale


def accuracy_from(model, stage, acts, labels):
    hit = 0
    for a, y in zip(acts, labels):
        x = a
        for m in model[stage:]:
            x = m(x)
        hit += int((x.argmax(1) == y).sum())
    return hit / sum(len(y) for y in labels)


def sweep(model, layers, batches, labels):
    """One probe per layer from cached stage inputs; returns the number of probes."""
    accuracy_from(model, 0, batches, labels)
    acts, at, probes = list(batches), 0, 0
    for stage, mod, bn in layers:
        if stage > at:
            for k in range(len(acts)):
                x = acts[k]
                for m in model[at:stage]:
                    x = m(x)
                acts[k] = x
            at = stage
        orig = mod.weight.detach().clone()
        mod.weight.copy_(fake_quantize(orig, bn, 4))
        accuracy_from(model, stage, acts, labels)
        probes += 1
        mod.weight.copy_(orig)
    return probes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--sweeps", type=int, default=1)
    ap.add_argument("--params-only", action="store_true")
    a = ap.parse_args()
    if min(a.threads, a.images, a.batch, a.iters, a.sweeps) < 1 or a.warmup < 0:
        raise SystemExit("error: --threads, --images, --batch, --iters and --sweeps must be "
                         "at least 1, --warmup at least 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, layers = build()
    if a.params_only:
        print(json.dumps({"params": burn_param_count(model)}))
        return
    model.eval()
    g = torch.Generator().manual_seed(0)
    batches, labels = [], []
    for s in range(0, a.images, a.batch):
        n = min(a.batch, a.images - s)
        batches.append(torch.randn(n, 1, 28, 28, generator=g))
        labels.append(torch.arange(s, s + n) % 10)
    full, swept, probes, acc = [], [], 0, 0.0
    with torch.no_grad():
        for i in range(a.warmup + a.iters):
            t = time.perf_counter()
            acc = accuracy_from(model, 0, batches, labels)
            sec = time.perf_counter() - t
            if i >= a.warmup:
                full.append(a.images / sec)
        for _ in range(a.sweeps):
            t = time.perf_counter()
            probes = sweep(model, layers, batches, labels)
            swept.append(a.images * (probes + 1) / (time.perf_counter() - t))
    print(json.dumps({
        "model": "resnet20", "images": a.images, "batch": a.batch,
        "params": burn_param_count(model), "probes": probes, "accuracy": acc,
        "full_images_per_second": round(statistics.median(full), 2),
        "sweep_images_per_second": round(statistics.median(swept), 2),
        "full_all": [round(v, 2) for v in full], "sweep_all": [round(v, 2) for v in swept],
    }))


if __name__ == "__main__":
    main()
