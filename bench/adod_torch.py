#!/usr/bin/env python3
"""PyTorch side of the ADOD benchmark (bench/run_adod_bench.sh): twins of `ferrolab adod`'s five
detectors (crates/vision/src/adod/model.rs), timed as crates/vision/examples/adod_step_bench.rs
times ferrolab's.

    bench/.venv/bin/python bench/adod_torch.py --method yolo|yolo_attention|yolo_domain|dg_yolo|adod \
        [--preset paper|quick] [--threads 2] [--warmup N] [--iters N] [--params-only | --check-loss]

The detector is bench/vision_torch.py's YoloTiny twin (ferrolab's YOLOv3-tiny layout and YOLOv3
loss) with the preset's widths, input size and the five URPC classes, run with a hook on each
backbone layer's activated output before pooling, as ferrolab's `YoloTiny::forward_hooked`:

- residual attention after backbone layers 2 and 3: H = (1 + M) * T, trunk 3x3 conv-BN-
  LeakyReLU(0.1), mask 2x2 max pool -> 3x3 conv-BN-LeakyReLU -> bilinear x2 (align_corners
  False) -> 1x1 conv (bias) -> sigmoid;
- domain classifiers on layer 3's (attended) output behind gradient reversal (the usual
  autograd Function: identity forward, gradient times -lambda backward), lambda = alpha * grl:
  ADOD's 3x3 conv(64)-LeakyReLU, pooling weighted by the (detached) mask's channel mean,
  Linear 64-64-LeakyReLU-Linear to the domains; `yolo_domain` the same with average pooling;
  DG-YOLO's conv 7x7/2 (pad 3) -> conv 5x5/2 (pad 2), LeakyReLU after each, average pooling,
  Linear to the domains;
- the loss: YOLO's + domain.weight * cross-entropy of the domain logits + (dg_yolo)
  domain.irm_weight * alpha * the IRM penalty, computed as ferrolab computes it: per domain, the
  central difference (eps 0.01) of YOLO's loss in a scale on the objectness and class logits,
  squared, summed over domains (PyTorch could take the derivative by double backward instead;
  the twin does what ferrolab does, like for like).

Training step: forward + loss, `loss.item()`, backward, Adam (lr of the preset, eps 1e-5 as
burn's default that `ferrolab adod` trains with) on one fixed batch: uniform [0, 1) pixels, three
LCG boxes per image (adod_step_bench.rs's generator), domain of image b = b mod domains; alpha
fixed at alpha(1/2). Inference: `model.eval()` under `torch.no_grad()`, the forward pass
without the domain head, the heads summed and read back.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vision_torch as V  # noqa: E402

METHODS = ("yolo", "yolo_attention", "yolo_domain", "dg_yolo", "adod")
ATTENTION_AFTER = (2, 3)
DOMAIN_AFTER = 3
CLASSES = 5  # holothurian, echinus, scallop, starfish, waterweeds


def preset(name):
    """The settings of configs/adod/<name>.toml this benchmark needs (tomllib, Python >= 3.11)."""
    import tomllib
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "configs", "adod", f"{name}.toml")
    with open(path, "rb") as fh:
        t = tomllib.load(fh)
    dom = t.get("domain", {})
    return {
        "size": t["data"].get("image_size", 128),
        "domains": len(t["data"].get("seen", ["I", "IA", "IB", "II", "1", "3"])),
        "widths": tuple(t.get("model", {}).get("widths", (16, 32, 48, 64, 128, 128, 256))),
        "batch": t["train"].get("batch_size", 16),
        "lr": t["train"].get("lr", 2e-3),
        "weight": dom.get("weight", 0.5),
        "grl": dom.get("grl", 1.0),
        "irm_weight": dom.get("irm_weight", 0.01),
    }


def alpha(p):
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(p, 0.0), 1.0))) - 1.0


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.neg() * ctx.lam, None


class ResidualAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.trunk = V.ConvBn(c, c, 3)
        self.mask_conv = V.ConvBn(c, c, 3)
        self.mask_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        t = self.trunk(x)
        m = self.mask_conv(F.max_pool2d(x, 2, 2))
        m = F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=False)
        m = torch.sigmoid(self.mask_out(m))
        return t * (m + 1.0), m


class DomainHead(nn.Module):
    def __init__(self, kind, c, domains, width=64):
        super().__init__()
        self.kind = kind
        if kind == "dg_yolo":
            self.convs = nn.ModuleList([nn.Conv2d(c, width, 7, 2, 3), nn.Conv2d(width, width, 5, 2, 2)])
            self.hidden = None
        else:
            self.convs = nn.ModuleList([nn.Conv2d(c, width, 3, 1, 1)])
            self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, domains)

    def forward(self, x, mask):
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
        if self.kind == "adod":
            w = mask.mean(1, keepdim=True)
            total = w.sum((2, 3), keepdim=True) + 1e-6
            pooled = (h * (w / total)).sum((2, 3))
        else:
            pooled = h.mean((2, 3))
        z = pooled if self.hidden is None else F.leaky_relu(self.hidden(pooled), 0.1)
        return self.out(z)


class AdodNet(nn.Module):
    def __init__(self, method, p):
        super().__init__()
        self.yolo = V.YoloTiny(input_size=p["size"], classes=CLASSES, widths=p["widths"])
        w = p["widths"]
        attention = method in ("yolo_attention", "adod")
        self.attention = nn.ModuleList(ResidualAttention(w[i]) for i in ATTENTION_AFTER) \
            if attention else nn.ModuleList()
        kind = {"yolo_domain": "plain", "dg_yolo": "dg_yolo", "adod": "adod"}.get(method)
        self.domain = DomainHead(kind, w[DOMAIN_AFTER], p["domains"]) if kind else None

    def forward(self, x, lam=0.0, with_domain=True):
        y = self.yolo
        skip = dom_in = mask = None
        att = iter(self.attention)
        for i, layer in enumerate(y.backbone):
            x = layer(x)
            if i in ATTENTION_AFTER and len(self.attention):
                x, mask = next(att)(x)
            if i == DOMAIN_AFTER:
                dom_in = (x, mask)
            if i <= 3:
                x = F.max_pool2d(x, 2, 2)
            elif i == 4:
                skip = x
                x = F.max_pool2d(x, 2, 2)
            elif i == 5:
                x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
        neck = y.neck(x)
        p32 = y.out32(y.head32(neck))
        up = F.interpolate(y.route(neck), scale_factor=2, mode="nearest")
        p16 = y.out16(y.head16(torch.cat([up, skip], 1)))
        logits = None
        if self.domain is not None and with_domain:
            f, m = dom_in
            logits = self.domain(GradReverse.apply(f, lam), None if m is None else m.detach())
        return p32, p16, logits


def irm_penalty(yolo, p32, p16, gt, gt_cls, domains, eps=0.01):
    """ferrolab's IRM penalty (crates/vision/src/adod/experiment.rs, `irm_penalty`)."""
    ch = p32.shape[1]
    per = ch // 3
    idx = torch.arange(ch)
    on = (idx % per >= 4).float().view(1, ch, 1, 1)
    up, down = 1.0 + on * eps, 1.0 - on * eps
    total = p32.new_zeros(())
    for d in sorted(set(domains.tolist())):
        rows = (domains == d).nonzero(as_tuple=True)[0]
        a32, a16 = p32[rows], p16[rows]
        g, gc = gt[rows], gt_cls[rows]
        hi = yolo.loss((a32 * up, a16 * up), g, gc)
        lo = yolo.loss((a32 * down, a16 * down), g, gc)
        total = total + ((hi - lo) / (2 * eps)) ** 2
    return total


def targets(images, size, classes, seed):
    """adod_step_bench.rs's boxes: three per image, 6 to size/2 pixels a side."""
    g = V.Lcg(seed)
    span = size // 2 - 6 + 1
    boxes, cls = [], []
    for _ in range(images):
        bi, ci = [], []
        for _ in range(3):
            w, h = 6 + g.below(span), 6 + g.below(span)
            x1, y1 = g.below(size - w + 1), g.below(size - h + 1)
            ci.append(g.below(classes))
            bi.append([x1, y1, x1 + w, y1 + h])
        boxes.append(bi)
        cls.append(ci)
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(cls, dtype=torch.int64)


def step_loss(model, method, p, x, gt, gt_cls, domains, a):
    p32, p16, logits = model(x, a * p["grl"], True)
    loss = model.yolo.loss((p32, p16), gt, gt_cls)
    if logits is not None:
        loss = loss + F.cross_entropy(logits, domains) * p["weight"]
    if method == "dg_yolo" and p["irm_weight"] > 0:
        loss = loss + irm_penalty(model.yolo, p32, p16, gt, gt_cls, domains) * (p["irm_weight"] * a)
    return loss


def check_loss(method, p):
    model = AdodNet(method, p)
    b, s = p["batch"], p["size"]
    out = 3 * (5 + CLASSES)

    def head(grid):
        i = torch.arange(b * out * grid * grid, dtype=torch.int64)
        return (((i * 7919) % 2001).float() / 1000.0 - 1.0).view(b, out, grid, grid)

    gt, gt_cls = targets(b, s, CLASSES, 3)
    domains = torch.arange(b) % p["domains"]
    p32, p16 = head(s // 32), head(s // 16)
    return (float(model.yolo.loss((p32, p16), gt, gt_cls)),
            float(irm_penalty(model.yolo, p32, p16, gt, gt_cls, domains)))


def run(a, p):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AdodNet(a.method, p)
    if a.params_only:
        return {"method": a.method, "params": V.burn_param_count(model)}
    b, s = p["batch"], p["size"]
    x = torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(0))
    gt, gt_cls = targets(b, s, CLASSES, 3)
    domains = torch.arange(b) % p["domains"]
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"], betas=(0.9, 0.999), eps=1e-5)
    al = alpha(0.5)
    model.train()
    train, fwd, bwd, opt_t = [], [], [], []
    first = last = None
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step_loss(model, a.method, p, x, gt, gt_cls, domains, al)
        value = loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        first = value if first is None else first
        last = value
        if i >= a.warmup:
            f, bw, o = (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3
            train.append(f + bw + o)
            fwd.append(f)
            bwd.append(bw)
            opt_t.append(o)
    del opt
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            p32, p16, _ = model(x, 0.0, False)
            (p32.sum() + p16.sum()).item()
            if i >= a.warmup:
                infer.append((time.perf_counter() - t0) * 1e3)
    if not math.isfinite(last):
        raise SystemExit(f"error: the training loss is {last} after the last step")
    return {
        "method": a.method, "preset": a.preset, "threads": a.threads, "batch": b,
        "train_ms": statistics.median(train),
        "train_forward_ms": statistics.median(fwd),
        "train_backward_ms": statistics.median(bwd),
        "train_optim_ms": statistics.median(opt_t),
        "infer_ms": statistics.median(infer),
        "train_ms_all": [round(t, 3) for t in train],
        "infer_ms_all": [round(t, 3) for t in infer],
        "params": V.burn_param_count(model),
        "loss_first": first, "loss_last": last,
    }


def profile(a, p):
    """Where a training step's time goes on PyTorch's side (ATen ops by self CPU time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AdodNet(a.method, p)
    b, s = p["batch"], p["size"]
    x = torch.rand(b, 3, s, s)
    gt, gt_cls = targets(b, s, CLASSES, 3)
    domains = torch.arange(b) % p["domains"]
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"], eps=1e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = step_loss(model, a.method, p, x, gt, gt_cls, domains, alpha(0.5))
        loss.item()
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.iters):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True, choices=METHODS)
    ap.add_argument("--preset", default="paper", choices=["paper", "quick"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--params-only", action="store_true")
    ap.add_argument("--check-loss", action="store_true",
                    help="print YOLO's loss and the IRM penalty of fixed head outputs and exit")
    ap.add_argument("--profile", action="store_true",
                    help="profile --iters training steps with torch.profiler (to stderr)")
    a = ap.parse_args()
    if a.threads < 1 or a.iters < 1 or a.warmup < 0:
        raise SystemExit("error: --threads and --iters must be >= 1, --warmup >= 0")
    p = preset(a.preset)
    if a.check_loss:
        loss, irm = check_loss(a.method, p)
        print(json.dumps({"method": a.method, "loss": loss, "irm": irm}))
        return
    if a.profile:
        profile(a, p)
        return
    print(json.dumps(run(a, p)))


if __name__ == "__main__":
    main()
