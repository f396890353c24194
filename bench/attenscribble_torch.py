#!/usr/bin/env python3
"""PyTorch side of the AttenScribble step benchmark (bench/run_attenscribble_bench.sh): the twin of
`ferrolab attenscribble`'s network and losses, timed as
crates/vision/examples/attenscribble_step_bench.rs times ferrolab's.

    bench/.venv/bin/python bench/attenscribble_torch.py --method attenscribble|pce|pce_gcrf|full \
        [--preset small|paper|medium|quick] [--threads 2] [--warmup N] [--iters N] \
        [--params-only | --check-loss | --profile]

The preset is read from configs/attenscribble/<preset>.toml over the same defaults as ferrolab's
`AttenScribbleConfig` (training size, batch, loss weights and windows, SGD settings).

- Network: the UNet of bench/vision_torch.py (WSL4MIS/AttenScribble form, bilinear decoder) and,
  for `attenscribble`, ferrolab's `SpatialAttention` after encoder level 2: LN -> separate Q, K, V
  projections without bias -> softmax(QK^T / sqrt(C)) V -> proj, residual; LN -> fc1 -> 3x3
  depth-wise conv (bias) -> GELU -> fc2, residual; final LN. Affinity K = sigmoid(a (S + S^T) + b)
  with S = softmax(QK^T) on the unscaled logits, (a, b) a Conv2d(1, 1, 1), as the reference.
- Losses: partial CE = `F.cross_entropy(ignore_index=4)`; gated CRF as the reference computes it
  (`ModelLossSemsegGatedCRF` of Obukhov et al.: an RGB+XY kernel built by `F.unfold` over the
  (2r+1)^2 window, destination gate = unscribbled pixels, Potts compatibility), with the
  neighbours outside the image left out of the kernel sum as ferrolab does (in the reference
  they only add a constant); attentive loss as the reference's `AttnGatedCRF` (bilinear
  down-sampling with align_corners=False, Gaussian window without the diagonal, samples with one
  scribbled class gated off, `bmm`); full supervision = (CE + Dice) / 2 (WSL4MIS `DiceLoss`).
- Optimiser: SGD, momentum 0.9, weight decay 1e-4 (the preset's), at the preset's learning rate.

The batch is the integer recipe of attenscribble_step_bench.rs (image ((g * 7919) mod 1001)/1000,
ring labels, scribble = label where (x + 2y + n) mod 7 = 0), so both sides train on the same
numbers. `--params-only` prints burn's parameter count (batch-norm running statistics included);
`--check-loss` prints the method's loss of the fixed logits and attention logits of the Rust side,
which the harness compares before timing.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vision_torch import ConvBlock, UpBlock, burn_param_count  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("attenscribble", "pce", "pce_gcrf", "full")
UNLABELED = 4

# ferrolab's AttenScribbleConfig defaults (crates/vision/src/attenscribble/config.rs) for the keys
# the step uses; the preset file overrides them.
DEFAULTS = {
    "data": {"size": 256},
    "model": {"widths": [16, 32, 64, 128, 256], "dropout": [0.05, 0.1, 0.2, 0.3, 0.5],
              "attention_level": 2, "mlp_ratio": 4},
    "loss": {"crf_weight": 0.1, "crf_radius": 5, "crf_sigma_xy": 6.0, "crf_sigma_rgb": 0.1,
             "crf_kernel_weight": 1.0, "attn_weight": 0.1, "attn_radius": 5, "attn_sigma": 6.0,
             "attn_start": 0},
    "train": {"batch_size": 12, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
}


def load_preset(name):
    cfg = {k: dict(v) for k, v in DEFAULTS.items()}
    with open(os.path.join(ROOT, "configs", "attenscribble", f"{name}.toml"), "rb") as fh:
        for section, values in tomllib.load(fh).items():
            if section in cfg:
                cfg[section].update({k: v for k, v in values.items() if k in cfg[section]})
    return cfg


class SpatialAttention(nn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=True)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.affine = nn.Conv2d(1, 1, 1)
        self.scale = dim ** -0.5

    def forward(self, x):
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        z = self.norm1(t)
        logits = self.q(z) @ self.k(z).transpose(1, 2)
        attn = torch.softmax(logits * self.scale, -1)
        t = t + self.proj(attn @ self.v(z))
        m = self.fc1(self.norm2(t))
        m = self.dwconv(m.transpose(1, 2).reshape(n, -1, h, w)).flatten(2).transpose(1, 2)
        t = t + self.fc2(F.gelu(m))
        return self.norm_out(t).transpose(1, 2).reshape(n, c, h, w), logits

    def affinity(self, logits):
        s = torch.softmax(logits, -1)
        return torch.sigmoid(self.affine((s + s.transpose(1, 2)).unsqueeze(1))).squeeze(1)


class AttenUNet(nn.Module):
    def __init__(self, widths, dropout, attention_level=None, mlp_ratio=4, classes=4):
        super().__init__()
        cins = (1,) + tuple(widths[:-1])
        self.encoder = nn.ModuleList(ConvBlock(i, o, p) for i, o, p in zip(cins, widths, dropout))
        self.level = attention_level
        self.attention = (SpatialAttention(widths[attention_level], mlp_ratio)
                          if attention_level is not None else None)
        self.decoder = nn.ModuleList(UpBlock(widths[l], widths[l - 1])
                                     for l in range(len(widths) - 1, 0, -1))
        self.out_conv = nn.Conv2d(widths[0], classes, 3, padding=1)

    def forward(self, x):
        feats, attention = [], None
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2, 2)
            x = block(x)
            if level == self.level:
                x, attention = self.attention(x)
            feats.append(x)
        x = feats.pop()
        for block in self.decoder:
            x = block(x, feats.pop())
        return self.out_conv(x), attention


def gaussian_window(g, radius, sigma):
    """[1, L, L]: exp(-|d|^2 / 2 sigma^2) within the square of `radius`, 0 elsewhere and on the
    diagonal (the reference's pre_compute_xy_mask times 1 - I)."""
    ys, xs = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy, dx = ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]
    near = (dy.abs() <= radius) & (dx.abs() <= radius) & ~((dy == 0) & (dx == 0))
    w = torch.exp(-0.5 * (dy * dy + dx * dx).double() / (sigma * sigma)).float()
    return (w * near).unsqueeze(0)


class Losses:
    def __init__(self, cfg, method, size, grid):
        self.method, self.cfg = method, cfg["loss"]
        lc = self.cfg
        self.window = gaussian_window(grid, lc["attn_radius"], lc["attn_sigma"]) if grid else None

    def gated_crf(self, y, image, scribble):
        lc = self.cfg
        r, n, c, h, w = lc["crf_radius"], *y.shape
        d = 2 * r + 1
        with torch.no_grad():
            gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                    torch.arange(w, dtype=torch.float32), indexing="ij")
            mesh = torch.stack([gx, gy]).unsqueeze(0).expand(n, 2, h, w) / lc["crf_sigma_xy"]
            feat = torch.cat([mesh, image / lc["crf_sigma_rgb"]], 1)
            fu = F.unfold(feat, d, padding=r).view(n, 3, d, d, h, w)
            k = (-0.5 * ((fu - feat.view(n, 3, 1, 1, h, w)) ** 2).sum(1, keepdim=True)).exp()
            valid = F.unfold(torch.ones(n, 1, h, w), d, padding=r).view(n, 1, d, d, h, w)
            centre = torch.ones(1, 1, d, d, 1, 1)
            centre[:, :, r, r] = 0.0
            mask_dst = (scribble == UNLABELED).float()
            k = k * valid * centre * lc["crf_kernel_weight"] * mask_dst.view(n, 1, 1, 1, h, w)
            denom = mask_dst.sum().clamp(min=1)
        yu = F.unfold(y, d, padding=r).view(n, c, d, d, h, w)
        prod = (k * yu).view(n, c, d * d, h, w).sum(2)
        return (k.sum() - (prod * y).sum()) / denom

    def attentive(self, kern, y, multi):
        n, c = y.shape[:2]
        l = kern.shape[-1]
        g = math.isqrt(l)
        ys = F.interpolate(y, size=(g, g), mode="bilinear", align_corners=False)
        m = kern * self.window * multi.float().view(n, 1, 1)
        yt = ys.flatten(2).transpose(1, 2)
        return (m.sum() - (torch.bmm(m, yt) * yt).sum()) / (l * n)

    def __call__(self, logits, attention, block, t, it):
        lc = self.cfg
        if self.method == "full":
            p = torch.softmax(logits, 1)
            onehot = F.one_hot(t["label"], 4).permute(0, 3, 1, 2).float()
            inter = (p * onehot).sum((0, 2, 3))
            dice = (2 * inter + 1e-5) / ((p * p).sum((0, 2, 3)) + (onehot * onehot).sum((0, 2, 3))
                                         + 1e-5)
            return 0.5 * (F.cross_entropy(logits, t["label"]) + (1 - dice).mean())
        loss = F.cross_entropy(logits, t["scribble"], ignore_index=UNLABELED)
        if self.method == "pce":
            return loss
        p = torch.softmax(logits, 1)
        if lc["crf_weight"] > 0:
            loss = loss + lc["crf_weight"] * self.gated_crf(p, t["image"], t["scribble"])
        if (self.method == "attenscribble" and attention is not None and lc["attn_weight"] > 0
                and it >= lc["attn_start"]):
            loss = loss + lc["attn_weight"] * self.attentive(block.affinity(attention), p,
                                                             t["multi"])
        return loss


def batch(n, size):
    """attenscribble_step_bench.rs's batch."""
    g = torch.arange(n * size * size, dtype=torch.int64)
    image = (((g * 7919) % 1001).float() / 1000.0).view(n, 1, size, size)
    s = torch.arange(n).view(n, 1, 1)
    y = torch.arange(size).view(1, size, 1)
    x = torch.arange(size).view(1, 1, size)
    c = size // 2 + s
    d2 = 100 * ((y - c) ** 2 + (x - c) ** 2)
    label = torch.zeros(n, size, size, dtype=torch.int64)
    for k, cls in ((3, 1), (2, 2), (1, 3)):
        label[d2 < (k * size) ** 2] = cls
    scribble = torch.where((x + 2 * y + s) % 7 == 0, label, torch.full_like(label, UNLABELED))
    multi = torch.tensor([len(set(scribble[i][scribble[i] < 4].tolist())) > 1 for i in range(n)])
    return {"image": image, "label": label, "scribble": scribble, "multi": multi}


def build(a):
    cfg = load_preset(a.preset)
    size, bs = cfg["data"]["size"], cfg["train"]["batch_size"]
    m = cfg["model"]
    level = m["attention_level"] if a.method == "attenscribble" else None
    model = AttenUNet(m["widths"], m["dropout"], level, m["mlp_ratio"])
    grid = size >> m["attention_level"] if level is not None else None
    return cfg, model, Losses(cfg, a.method, size, grid), batch(bs, size)


def check_loss(a):
    cfg, model, losses, t = build(a)
    size, bs = cfg["data"]["size"], cfg["train"]["batch_size"]
    i = torch.arange(bs * 4 * size * size, dtype=torch.int64)
    logits = (((i * 7919) % 2001).float() / 1000.0 - 1.0).view(bs, 4, size, size)
    g = size >> cfg["model"]["attention_level"]
    j = torch.arange(bs * g ** 4, dtype=torch.int64)
    attention = (((j * 7907) % 2001).float() / 250.0 - 4.0).view(bs, g * g, g * g)
    block = SpatialAttention(cfg["model"]["widths"][cfg["model"]["attention_level"]],
                             cfg["model"]["mlp_ratio"])
    with torch.no_grad():
        block.affine.weight.fill_(2.0)
        block.affine.bias.fill_(-1.0)
    att = attention if a.method == "attenscribble" else None
    return float(losses(logits, att, block, t, cfg["loss"]["attn_start"]).detach())


def run(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg, model, losses, t = build(a)
    if a.params_only:
        return {"method": a.method, "params": burn_param_count(model)}
    tc = cfg["train"]
    opt = torch.optim.SGD(model.parameters(), lr=tc["lr"], momentum=tc["momentum"],
                          weight_decay=tc["weight_decay"])
    model.train()
    it = cfg["loss"]["attn_start"]
    block = model.attention
    train, fwd, bwd, opt_t = [], [], [], []
    first = last = None
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, attention = model(t["image"])
        loss = losses(logits, attention, block, t, it)
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
    return {
        "method": a.method, "preset": a.preset, "size": cfg["data"]["size"],
        "batch": tc["batch_size"], "threads": a.threads,
        "train_ms": statistics.median(train), "train_forward_ms": statistics.median(fwd),
        "train_backward_ms": statistics.median(bwd), "train_optim_ms": statistics.median(opt_t),
        "train_ms_all": [round(v, 3) for v in train], "params": burn_param_count(model),
        "loss_first": first, "loss_last": last,
    }


def profile(a):
    """Where the PyTorch step's time goes, op by op (self CPU time), after the warm-up."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg, model, losses, t = build(a)
    tc = cfg["train"]
    opt = torch.optim.SGD(model.parameters(), lr=tc["lr"], momentum=tc["momentum"],
                          weight_decay=tc["weight_decay"])
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        logits, attention = model(t["image"])
        loss = losses(logits, attention, model.attention, t, cfg["loss"]["attn_start"])
        loss.item()
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.iters):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True, choices=METHODS)
    ap.add_argument("--preset", default="small", choices=["small", "paper", "medium", "quick"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="accepted for symmetry with the Rust side")
    ap.add_argument("--params-only", action="store_true")
    ap.add_argument("--check-loss", action="store_true")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    if a.threads < 1 or a.iters < 1 or a.warmup < 0:
        raise SystemExit("error: --threads and --iters must be >= 1, --warmup >= 0")
    if a.check_loss:
        torch.set_num_threads(a.threads)
        print(json.dumps({"method": a.method, "loss": check_loss(a)}))
        return
    if a.profile:
        profile(a)
        return
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
