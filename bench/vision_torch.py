#!/usr/bin/env python3
"""PyTorch side of the vision benchmark (bench/run_vision_bench.sh): the twins of ferrolab's
ResNet-20, UNet and YOLO-tiny (crates/vision/src/models/), timed as
crates/vision/examples/vision_step_bench.rs times ferrolab's.

    bench/.venv/bin/python bench/vision_torch.py --model resnet20|unet|yolo \
        [--threads 2] [--warmup N] [--iters N] [--params-only | --check-loss | --profile]

Each twin has the same layers in the same order with the same parameter count; the script
prints `params` the way burn counts them (trainable parameters plus batch norm's running mean
and variance), and bench/vision_harness.py refuses a round where the two sides differ.

- ResNet-20: 3x3 conv 16 + BN + ReLU, three stages of three basic blocks (16/32/64, stride 2
  at the first block of stages 2 and 3), option-A shortcuts (`x[:, :, ::2, ::2]` zero-padded
  with planes/4 channels on each side, as akamaster/pytorch_resnet_cifar10), global average
  pooling, Linear(64 -> 10). Convolutions without bias (BN follows). Input [128, 1, 32, 32].
- UNet (ferrolab's default UNetConfig, the WSL4MIS/AttenScribble network as it runs): conv
  blocks 3x3 conv (bias) -> BN -> LeakyReLU(0.01) -> Dropout(p) -> 3x3 conv -> BN -> LeakyReLU,
  widths 16/32/64/128/256 with encoder dropout 0.05/0.1/0.2/0.3/0.5, 2x2 max pools; decoder:
  1x1 conv to the skip's width, bilinear x2 (align_corners), cat [skip, up], conv block
  (dropout 0); final 3x3 conv to 4 classes. Input [8, 1, 128, 128], per-pixel cross-entropy.
- YOLO-tiny (yolov3-tiny.cfg layout, 80 classes, anchors scaled to 128 pixels): seven 3x3
  conv-BN-LeakyReLU(0.1) layers (16 ... 1024) with 2x2 max pools (the sixth with stride 1,
  its window running past the edge), heads at stride 32 and 16 (1x1/3x3 conv-BN, 1x1 output
  convs with bias, nearest x2 and concatenation). Input [16, 3, 128, 128], three boxes per
  image, and ferrolab's YOLOv3 loss written in torch (`YoloTiny.loss`), which
  `--check-loss` compares with ferrolab's on fixed head outputs.

Training step: forward, loss (cross-entropy, mean), backward, optimiser step (SGD with
momentum 0.9 and weight decay 5e-4 for ResNet and YOLO, Adam for UNet), on one fixed random
batch, the loss read back after the forward pass (`loss.item()`), as ferrolab's side does.
Inference: `model.eval()` under `torch.no_grad()`, the output summed and read back. Memory:
freed heap handed back (malloc_trim), VmRSS once model, batch and optimiser exist, the
high-water mark reset; `train_added_mb` = highest VmHWM - before. In the first step the mark
is reset at each phase boundary (outside the timed windows): `forward_added_mb`,
`backward_added_mb`, `optim_added_mb` are that step's phases, `later_added_mb` the later steps.
"""

import argparse
import ctypes
import gc
import json
import statistics
import sys
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


# ---- UNet (WSL4MIS / AttenScribble form, bilinear decoder as the references run it) ----

class ConvBlock(nn.Module):
    """3x3 conv (bias) -> BN -> LeakyReLU(0.01) -> Dropout(p) -> 3x3 conv -> BN -> LeakyReLU."""

    def __init__(self, cin, cout, p):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout(p)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = self.drop(F.leaky_relu(self.bn1(self.conv1(x)), 0.01))
        return F.leaky_relu(self.bn2(self.conv2(x)), 0.01)


class UpBlock(nn.Module):
    """1x1 conv to the skip's width, bilinear x2 (align_corners), cat [skip, up], conv block."""

    def __init__(self, deep, skip):
        super().__init__()
        self.reduce = nn.Conv2d(deep, skip, 1)
        self.conv = ConvBlock(2 * skip, skip, 0.0)

    def forward(self, deep, skip):
        up = F.interpolate(self.reduce(deep), scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, up], 1))


class UNet(nn.Module):
    def __init__(self, in_channels=1, classes=4, widths=(16, 32, 64, 128, 256),
                 dropout=(0.05, 0.1, 0.2, 0.3, 0.5)):
        super().__init__()
        cins = (in_channels,) + tuple(widths[:-1])
        self.encoder = nn.ModuleList(ConvBlock(i, o, p) for i, o, p in zip(cins, widths, dropout))
        self.decoder = nn.ModuleList(UpBlock(widths[l], widths[l - 1])
                                     for l in range(len(widths) - 1, 0, -1))
        self.out_conv = nn.Conv2d(widths[0], classes, 3, padding=1)

    def forward(self, x):
        feats = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2, 2)
            x = block(x)
            feats.append(x)
        x = feats.pop()
        for block in self.decoder:
            x = block(x, feats.pop())
        return self.out_conv(x)


# ---- YOLOv3-tiny (darknet's yolov3-tiny.cfg layout, ferrolab's YoloTiny) ----

STRIDES = (32, 16)
DARKNET_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.leaky_relu(self.bn(self.conv(x)), 0.1)


class YoloTiny(nn.Module):
    def __init__(self, input_size=128, in_channels=3, classes=80,
                 widths=(16, 32, 64, 128, 256, 512, 1024), ignore=0.7):
        super().__init__()
        w = widths
        cins = (in_channels,) + tuple(w[:-1])
        self.backbone = nn.ModuleList(ConvBn(i, o, 3) for i, o in zip(cins, w))
        out = 3 * (5 + classes)
        self.neck = ConvBn(w[6], w[4], 1)
        self.head32 = ConvBn(w[4], w[5], 3)
        self.out32 = nn.Conv2d(w[5], out, 1)
        self.route = ConvBn(w[4], w[3], 1)
        self.head16 = ConvBn(w[3] + w[4], w[4], 3)
        self.out16 = nn.Conv2d(w[4], out, 1)
        self.input_size, self.classes, self.ignore = input_size, classes, ignore
        # float32 as ferrolab keeps them: the anchors scaled from darknet's 416 pixels.
        scale = torch.tensor(input_size, dtype=torch.float32) / 416.0
        self.register_buffer("anchors", torch.tensor(DARKNET_ANCHORS, dtype=torch.float32)
                             * scale, persistent=False)

    def forward(self, x):
        skip = None
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i <= 3:
                x = F.max_pool2d(x, 2, 2)
            elif i == 4:
                skip = x
                x = F.max_pool2d(x, 2, 2)
            elif i == 5:
                # A 2x2 window with stride 1 running past the bottom/right edge: replicating
                # the last row and column gives the same maxima as -inf padding.
                x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
        neck = self.neck(x)
        p32 = self.out32(self.head32(neck))
        up = F.interpolate(self.route(neck), scale_factor=2, mode="nearest")
        p16 = self.out16(self.head16(torch.cat([up, skip], 1)))
        return p32, p16

    def loss(self, outputs, gt, gt_cls):
        """ferrolab's YOLOv3 loss (crates/vision/src/models/yolo.rs), vectorised as PyTorch YOLO
        code builds its targets. `gt`: [N, M, 4] boxes x1, y1, x2, y2 in pixels (all usable);
        `gt_cls`: [N, M] class indices."""
        a_n, k_n, s = 3, self.classes, float(self.input_size)
        n, m = gt_cls.shape
        total = outputs[0].new_zeros(())
        gw, gh = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
        # The best of all six anchors by shape alone (IoU of boxes sharing a centre); the
        # first index wins a tie, as ferrolab's strict comparison keeps it.
        aw, ah = self.anchors[:, 0], self.anchors[:, 1]
        inter = torch.minimum(gw[..., None], aw) * torch.minimum(gh[..., None], ah)
        best = (inter / (gw[..., None] * gh[..., None] + aw * ah - inter)).argmax(-1)
        for head, out in enumerate(outputs):
            g = out.shape[-1]
            stride = float(STRIDES[head])
            first = a_n if head == 0 else 0
            out = out.view(n, a_n, 5 + k_n, g, g)
            with torch.no_grad():
                bp = out[:, :, 0:4]
                cells = torch.arange(g, dtype=torch.float32)
                haw = self.anchors[first:first + a_n, 0].view(1, a_n, 1, 1)
                hah = self.anchors[first:first + a_n, 1].view(1, a_n, 1, 1)
                cx = (torch.sigmoid(bp[:, :, 0]) + cells.view(1, 1, 1, g)) * stride
                cy = (torch.sigmoid(bp[:, :, 1]) + cells.view(1, 1, g, 1)) * stride
                w = haw * bp[:, :, 2].clamp(-20, 20).exp()
                h = hah * bp[:, :, 3].clamp(-20, 20).exp()
                pred = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
                iou = box_iou(pred.view(n, -1, 1, 4), gt.view(n, 1, m, 4))
                obj_w = (iou.amax(-1) <= self.ignore).float().view(n, a_n, 1, g, g)
                box_t = out.new_zeros(n, a_n, 4, g, g)
                box_w = out.new_zeros(n, a_n, 1, g, g)
                pos = out.new_zeros(n, a_n, 1, g, g)
                cls_t = out.new_zeros(n, a_n, k_n, g, g)
                b, j = torch.nonzero((best >= first) & (best < first + a_n), as_tuple=True)
                a = best[b, j] - first
                box = gt[b, j]
                cxg, cyg = (box[:, 0] + box[:, 2]) / 2 / stride, (box[:, 1] + box[:, 3]) / 2 / stride
                gx, gy = cxg.floor().long().clamp_max(g - 1), cyg.floor().long().clamp_max(g - 1)
                # Two boxes on one anchor and cell: the later one replaces the earlier (darknet,
                # ferrolab), so keep only the last of each (b, a, gy, gx).
                key = ((b * a_n + a) * g + gy) * g + gx
                uniq, inv = torch.unique(key, return_inverse=True)
                last = torch.full((len(uniq),), -1, dtype=torch.int64).scatter_reduce(
                    0, inv, torch.arange(len(key)), "amax")
                b, j, a, box, cxg, cyg, gx, gy = (t[last] for t in (b, j, a, box, cxg, cyg, gx, gy))
                bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
                box_t[b, a, 0, gy, gx] = cxg - gx
                box_t[b, a, 1, gy, gx] = cyg - gy
                box_t[b, a, 2, gy, gx] = torch.log(bw / self.anchors[first + a, 0])
                box_t[b, a, 3, gy, gx] = torch.log(bh / self.anchors[first + a, 1])
                box_w[b, a, 0, gy, gx] = 2 - bw * bh / (s * s)
                pos[b, a, 0, gy, gx] = 1.0
                obj_w[b, a, 0, gy, gx] = 1.0
                cls_t[b, a, :, gy, gx] = 0.0
                cls_t[b, a, gt_cls[b, j], gy, gx] = 1.0
            xy = torch.sigmoid(out[:, :, 0:2])
            box_loss = (((xy - box_t[:, :, 0:2]) ** 2) * box_w).sum() \
                + (((out[:, :, 2:4] - box_t[:, :, 2:4]) ** 2) * box_w).sum()
            obj_loss = (F.binary_cross_entropy_with_logits(out[:, :, 4:5], pos, reduction="none")
                        * obj_w).sum()
            cls_loss = (F.binary_cross_entropy_with_logits(out[:, :, 5:], cls_t, reduction="none")
                        * pos).sum()
            total = total + box_loss + obj_loss + cls_loss
        return total / n


def box_iou(a, b):
    """IoU of x1, y1, x2, y2 boxes, broadcast over leading axes (0 when both are empty)."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = iw * ih
    area = lambda r: (r[..., 2] - r[..., 0]).clamp_min(0) * (r[..., 3] - r[..., 1]).clamp_min(0)
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


# ---- shared ----

def burn_param_count(model):
    """Trainable parameters plus BN running mean and variance: what burn's num_params counts."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n += m.running_mean.numel() + m.running_var.numel()
    return n


class Lcg:
    """vision_step_bench.rs's 64-bit LCG, so both sides draw the same integers."""

    def __init__(self, seed):
        self.s = (seed * 6364136223846793005 + 1) % 2**64

    def below(self, n):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % 2**64
        return (self.s >> 33) % n


def labels(n, classes, seed):
    g = Lcg(seed)
    return torch.tensor([g.below(classes) for _ in range(n)], dtype=torch.int64)


def yolo_targets(images, size, classes, seed):
    """Three whole-pixel boxes per image, 4 to 100 pixels a side, as vision_step_bench.rs."""
    g = Lcg(seed)
    boxes, cls = [], []
    for _ in range(images):
        bi, ci = [], []
        for _ in range(3):
            w, h = 4 + g.below(97), 4 + g.below(97)
            x1, y1 = g.below(size - w + 1), g.below(size - h + 1)
            ci.append(g.below(classes))
            bi.append([x1, y1, x1 + w, y1 + h])
        boxes.append(bi)
        cls.append(ci)
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(cls, dtype=torch.int64)


def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


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
        return model, sgd(model, 0.01), x, lambda out: F.cross_entropy(out, y)
    if name == "unet":
        model = UNet()
        x = torch.randn(8, 1, 128, 128, generator=g)
        y = labels(8 * 128 * 128, 4, 2).view(8, 128, 128)
        return model, adam(model), x, lambda out: F.cross_entropy(out, y)
    if name == "yolo":
        model = YoloTiny()
        x = torch.randn(16, 3, 128, 128, generator=g)
        gt, gt_cls = yolo_targets(16, 128, 80, 3)
        return model, sgd(model, 1e-3), x, lambda out: model.loss(out, gt, gt_cls)
    raise SystemExit(f"error: --model {name!r}: expected resnet20, unet or yolo")


def inference_sum(out):
    """The inference output reduced to one number (YOLO has two heads)."""
    if isinstance(out, tuple):
        return sum(o.sum() for o in out)
    return out.sum()


def yolo_check_loss():
    """The loss of fixed head outputs, as vision_step_bench.rs --check-loss computes it."""
    model = YoloTiny()
    out = 3 * (5 + 80)

    def head(grid):
        i = torch.arange(16 * out * grid * grid, dtype=torch.int64)
        return (((i * 7919) % 2001).float() / 1000.0 - 1.0).view(16, out, grid, grid)

    gt, gt_cls = yolo_targets(16, 128, 80, 3)
    return float(model.loss((head(4), head(8)), gt, gt_cls))


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

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    measurable = reset_peak()
    # The first step's peak RSS per phase (forward + loss, backward, optimiser step), the mark
    # reset at each phase boundary outside the timed windows, then one mark for the later
    # steps, as vision_step_bench.rs measures.
    peaks = [float("nan")] * 4

    def phase_peak(i, k):
        if measurable and i == 0:
            peaks[k] = vm("VmHWM:")
            reset_peak()

    train, fwd, bwd, opt_t = [], [], [], []
    first = last = None
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        value = loss.item()
        t1 = time.perf_counter()
        phase_peak(i, 0)
        t1b = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        phase_peak(i, 1)
        t2b = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        phase_peak(i, 2)
        first = value if first is None else first
        last = value
        if i >= a.warmup:
            f, b, o = (t1 - t0) * 1e3, (t2 - t1b) * 1e3, (t3 - t2b) * 1e3
            train.append(f + b + o)
            fwd.append(f)
            bwd.append(b)
            opt_t.append(o)
    if measurable:
        peaks[3] = vm("VmHWM:")
    peak = max(peaks)
    del opt
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            inference_sum(model(x)).item()
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
        "forward_added_mb": round(peaks[0] - before, 1),
        "backward_added_mb": round(peaks[1] - before, 1),
        "optim_added_mb": round(peaks[2] - before, 1),
        "later_added_mb": round(peaks[3] - before, 1),
        "params": burn_param_count(model),
        "trainable_params": sum(p.numel() for p in model.parameters()),
        "loss_first": first, "loss_last": last,
    }


def profile(a):
    """Where a training step's time goes on PyTorch's side, op by op (ATen ops, self time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, opt, x, loss_fn = build(a.model)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        loss.item()
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.iters):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30),
          file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=["resnet20", "unet", "yolo"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--params-only", action="store_true",
                    help="print the parameter count (burn's way) and exit")
    ap.add_argument("--check-loss", action="store_true",
                    help="yolo: print the loss of fixed head outputs (as the Rust side) and exit")
    ap.add_argument("--profile", action="store_true",
                    help="after the warm-up, profile --iters training steps with torch.profiler "
                         "and print the ops by self CPU time (to stderr), instead of timing")
    a = ap.parse_args()
    if a.check_loss:
        if a.model != "yolo":
            raise SystemExit("error: --check-loss is for --model yolo")
        print(json.dumps({"model": "yolo", "loss": yolo_check_loss()}))
        return
    if a.threads < 1 or a.iters < 1 or a.warmup < 0:
        raise SystemExit("error: --threads and --iters must be >= 1, --warmup >= 0")
    if a.profile:
        profile(a)
        return
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
