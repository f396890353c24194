//! A YOLOv3-tiny-style detector: Redmon & Farhadi, "YOLOv3: An Incremental Improvement",
//! 2018, with darknet's `yolov3-tiny.cfg` layout.
//!
//! Backbone: six 3×3 conv-BN-LeakyReLU(0.1) layers with widths `w[0..6]` (16 … 512), each
//! followed by a 2×2 max pool (stride 2 for the first five, stride 1 with the window running
//! past the bottom/right edge for the sixth, which keeps the stride-32 size), then a 3×3 conv
//! of width `w[6]` (1024). Heads:
//! - stride 32: 1×1 conv `w[4]` (256) → 3×3 conv `w[5]` (512) → 1×1 conv to `3·(5+K)`;
//! - stride 16: from the 1×1 `w[4]` map, 1×1 conv `w[3]` (128), nearest ×2 up-sampling,
//!   concatenation with the backbone's stride-16 map (`w[4]` channels), 3×3 conv `w[4]`
//!   (256) → 1×1 conv to `3·(5+K)`.
//!
//! Shapes: `[N, C, S, S]` (S a multiple of 32; 128 by default) → `(p32, p16)` with
//! `p32: [N, 3·(5+K), S/32, S/32]`, `p16: [N, 3·(5+K), S/16, S/16]`. Channel `a·(5+K) + j` of a
//! head is, for anchor `a` of that scale, `j` = 0..4: tx, ty, tw, th, 4: objectness logit,
//! 5..: class logits. A box decodes as `cx = (σ(tx) + gx)·stride`, `w = anchor_w·exp(tw)`.
//!
//! Loss (YOLOv3's): each ground-truth box is assigned to the one anchor (of all six) whose
//! shape overlaps it best (IoU of boxes sharing a centre) and to the cell holding its centre at
//! that anchor's scale. Box loss: squared error of σ(tx), σ(ty) against the centre's offset in
//! the cell and of tw, th against `ln(w / anchor_w)`, `ln(h / anchor_h)`, weighted by
//! `2 − w·h / S²` (darknet's small-box weight). Objectness: binary cross-entropy, target 1 at
//! assigned anchors and 0 elsewhere, except that predictions (not assigned) overlapping some
//! ground truth by more than `ignore_threshold` IoU are left out. Classes: independent binary
//! cross-entropies (one-hot target) at the assigned anchors. Each term is summed over the
//! batch and divided by the batch size.
//!
//! Boxes are in input pixels, `x1, y1, x2, y2`.

use crate::layers::{
    Conv2d, Conv2dConfig, ConvBn, concat_channels, leaky_relu, max_pool2d, max_pool2d_pad_end,
    upsample_nearest2x,
};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use ferrolab_core::nn::{float_tensor, to_vec_f32};

/// darknet's `activation=leaky`.
const LEAKY_SLOPE: f64 = 0.1;
/// Anchors per scale.
const ANCHORS_PER_SCALE: usize = 3;
/// Strides of the two heads, in the order of [`YoloTiny::forward`]'s outputs.
const STRIDES: [usize; 2] = [32, 16];

/// Architecture and loss settings of a [`YoloTiny`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct YoloConfig {
    /// Square input side S in pixels, a multiple of 32.
    pub input_size: usize,
    pub in_channels: usize,
    pub classes: usize,
    /// The seven backbone widths (darknet: 16, 32, 64, 128, 256, 512, 1024); the heads use
    /// `w[3]`, `w[4]` and `w[5]` as described in the module documentation.
    pub widths: Vec<usize>,
    /// Six anchor boxes `[w, h]` in pixels, smallest first: the first three belong to the
    /// stride-16 head, the last three to the stride-32 head.
    pub anchors: Vec<[f32; 2]>,
    /// A prediction overlapping a ground-truth box by more than this IoU is not pushed towards
    /// objectness 0 (darknet's `ignore_thresh`, 0.7 in `yolov3-tiny.cfg`).
    pub ignore_threshold: f32,
}

/// darknet's `yolov3-tiny.cfg` anchors, for its 416-pixel input.
const DARKNET_ANCHORS: [[f32; 2]; 6] = [
    [10.0, 14.0],
    [23.0, 27.0],
    [37.0, 58.0],
    [81.0, 82.0],
    [135.0, 169.0],
    [344.0, 319.0],
];

impl Default for YoloConfig {
    /// `yolov3-tiny.cfg` at a 128-pixel input (the benchmark's), 80 classes, anchors scaled
    /// from 416 to 128 pixels.
    fn default() -> Self {
        YoloConfig::new(128, 3, 80)
    }
}

impl YoloConfig {
    /// darknet's widths, anchors scaled from its 416-pixel input to `input_size`.
    pub fn new(input_size: usize, in_channels: usize, classes: usize) -> Self {
        let scale = input_size as f32 / 416.0;
        YoloConfig {
            input_size,
            in_channels,
            classes,
            widths: vec![16, 32, 64, 128, 256, 512, 1024],
            anchors: DARKNET_ANCHORS
                .iter()
                .map(|[w, h]| [w * scale, h * scale])
                .collect(),
            ignore_threshold: 0.7,
        }
    }

    /// Why this configuration cannot be built, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.input_size < 32 || !self.input_size.is_multiple_of(32) {
            return Err(format!(
                "yolo: input_size {} is not a positive multiple of 32",
                self.input_size
            ));
        }
        if self.in_channels == 0 || self.classes == 0 {
            return Err(format!(
                "yolo: in_channels ({}) and classes ({}) must be positive",
                self.in_channels, self.classes
            ));
        }
        if self.widths.len() != 7 || self.widths.contains(&0) {
            return Err(format!(
                "yolo: widths {:?}: expected seven positive widths",
                self.widths
            ));
        }
        if self.anchors.len() != 2 * ANCHORS_PER_SCALE
            || self
                .anchors
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || *v <= 0.0)
        {
            return Err(format!(
                "yolo: anchors {:?}: expected six positive [w, h] pairs",
                self.anchors
            ));
        }
        if !(0.0..=1.0).contains(&self.ignore_threshold) {
            return Err(format!(
                "yolo: ignore_threshold {} outside [0, 1]",
                self.ignore_threshold
            ));
        }
        Ok(())
    }
}

/// One ground-truth object: class index and box in input pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct YoloTarget {
    pub class: usize,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

/// One detection: box in input pixels, score `σ(objectness)·σ(class logit)`, class index.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class: usize,
}

/// Intersection over union of two `x1, y1, x2, y2` boxes (0 when both are empty).
pub fn box_iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

impl Detection {
    fn corners(&self) -> [f32; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }
}

/// Greedy non-maximum suppression per class: detections are taken by decreasing score (ties
/// in input order), and one is dropped when its IoU with a kept detection of the same class
/// exceeds `iou_threshold` (torchvision's `batched_nms` rule). Returns the kept detections by
/// decreasing score.
pub fn nms(dets: &[Detection], iou_threshold: f32) -> Vec<Detection> {
    let mut order: Vec<&Detection> = dets.iter().collect();
    // A stable sort keeps ties in input order; NaN scores sort last.
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in order {
        let suppressed = kept
            .iter()
            .any(|k| k.class == d.class && box_iou(k.corners(), d.corners()) > iou_threshold);
        if !suppressed {
            kept.push(*d);
        }
    }
    kept
}

/// Per-anchor targets of one head, laid out as the head's `[N, A, 5 + K, G, G]` view.
struct HeadTargets {
    /// σ(tx), σ(ty), tw, th targets `[N, A, 4, G, G]`.
    boxes: Vec<f32>,
    /// Small-box weight at assigned anchors, 0 elsewhere `[N, A, 1, G, G]`.
    box_weight: Vec<f32>,
    /// 1 at assigned anchors `[N, A, 1, G, G]`.
    positive: Vec<f32>,
    /// 0 where the objectness term is ignored, 1 elsewhere `[N, A, 1, G, G]`.
    obj_weight: Vec<f32>,
    /// One-hot classes at assigned anchors `[N, A, K, G, G]`.
    classes: Vec<f32>,
}

/// YOLOv3-tiny-style detector (see the module documentation).
#[derive(Module, Debug)]
pub struct YoloTiny {
    /// The seven 3×3 conv-BN layers.
    backbone: Vec<ConvBn>,
    neck: ConvBn,
    head32: ConvBn,
    out32: Conv2d,
    route: ConvBn,
    head16: ConvBn,
    out16: Conv2d,
    input_size: usize,
    classes: usize,
    /// Anchors flattened `[w0, h0, w1, h1, …]`.
    anchors: Vec<f32>,
    ignore_threshold: f32,
}

impl YoloTiny {
    pub fn new(cfg: &YoloConfig, device: &Device) -> Result<YoloTiny, String> {
        Self::new_with(cfg, device, |_| ()).map(|(net, ())| net)
    }

    /// Builds the network and, between the backbone and the heads, `extra(widths)`: modules
    /// a caller inserts into the backbone through [`forward_hooked`](Self::forward_hooked)
    /// then draw their initial weights in layer order, as they would inside the network.
    pub fn new_with<T>(
        cfg: &YoloConfig,
        device: &Device,
        extra: impl FnOnce(&[usize]) -> T,
    ) -> Result<(YoloTiny, T), String> {
        cfg.check()?;
        let w = &cfg.widths;
        let mut cin = cfg.in_channels;
        let backbone = w
            .iter()
            .map(|&width| {
                let layer = ConvBn::new(Conv2dConfig::new(cin, width, 3), device);
                cin = width;
                layer
            })
            .collect();
        let inserted = extra(w);
        let outputs = ANCHORS_PER_SCALE * (5 + cfg.classes);
        let net = YoloTiny {
            backbone,
            neck: ConvBn::new(Conv2dConfig::new(w[6], w[4], 1), device),
            head32: ConvBn::new(Conv2dConfig::new(w[4], w[5], 3), device),
            out32: Conv2dConfig::new(w[5], outputs, 1).init(device),
            route: ConvBn::new(Conv2dConfig::new(w[4], w[3], 1), device),
            head16: ConvBn::new(Conv2dConfig::new(w[3] + w[4], w[4], 3), device),
            out16: Conv2dConfig::new(w[4], outputs, 1).init(device),
            input_size: cfg.input_size,
            classes: cfg.classes,
            anchors: cfg.anchors.iter().flatten().copied().collect(),
            ignore_threshold: cfg.ignore_threshold,
        };
        Ok((net, inserted))
    }

    pub fn input_size(&self) -> usize {
        self.input_size
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    fn act(x: Tensor<4>) -> Tensor<4> {
        leaky_relu(x, LEAKY_SLOPE)
    }

    /// Raw head outputs `(stride 32, stride 16)` for `x: [N, C, S, S]`.
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        self.forward_hooked(x, &mut |_, x| x)
    }

    /// [`forward`](Self::forward) with `hook(i, features)` applied to the activated output
    /// of backbone layer `i` (0..7; stride `2^i` for `i ≤ 5`, 32 for 6) before its pooling:
    /// what it returns (same shape) replaces the features downstream, heads included. Lets a
    /// variant insert modules (ADOD's residual attention) or read features (its domain
    /// classifier) without repeating the network.
    pub fn forward_hooked(
        &self,
        x: Tensor<4>,
        hook: &mut dyn FnMut(usize, Tensor<4>) -> Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let mut x = x;
        let mut stride16 = None;
        for (i, layer) in self.backbone.iter().enumerate() {
            x = hook(i, Self::act(layer.forward(x)));
            match i {
                0..=3 => x = max_pool2d(x, 2, 2),
                4 => {
                    stride16 = Some(x.clone());
                    x = max_pool2d(x, 2, 2);
                }
                5 => x = max_pool2d_pad_end(x, 2, 1, 1),
                _ => {}
            }
        }
        let neck = Self::act(self.neck.forward(x));
        let p32 = self
            .out32
            .forward(Self::act(self.head32.forward(neck.clone())));
        let up = upsample_nearest2x(Self::act(self.route.forward(neck)));
        let merged = match stride16 {
            Some(skip) => concat_channels(vec![up, skip]),
            // The backbone always has seven layers (checked in `new`).
            None => up,
        };
        let p16 = self.out16.forward(Self::act(self.head16.forward(merged)));
        (p32, p16)
    }

    /// Why a batch of targets is not usable, if it is not: a class outside `0..classes`, a
    /// box not finite, of non-positive size, or reaching outside the `S × S` input. [`loss`]
    /// leaves such targets out; data pipelines call this to report them instead.
    ///
    /// [`loss`]: Self::loss
    pub fn check_targets(&self, targets: &[Vec<YoloTarget>]) -> Result<(), String> {
        let s = self.input_size as f32;
        for (i, image) in targets.iter().enumerate() {
            for (j, t) in image.iter().enumerate() {
                let c = [t.x1, t.y1, t.x2, t.y2];
                let why = if t.class >= self.classes {
                    Some(format!("class {} ≥ {} classes", t.class, self.classes))
                } else if c.iter().any(|v| !v.is_finite()) {
                    Some("a coordinate is not finite".to_string())
                } else if t.x2 <= t.x1 || t.y2 <= t.y1 {
                    Some("non-positive width or height".to_string())
                } else if t.x1 < 0.0 || t.y1 < 0.0 || t.x2 > s || t.y2 > s {
                    Some(format!("outside the {s}×{s} image"))
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(format!("image {i}, box {j} {c:?}: {why}"));
                }
            }
        }
        Ok(())
    }

    fn anchor(&self, k: usize) -> [f32; 2] {
        [self.anchors[2 * k], self.anchors[2 * k + 1]]
    }

    /// Targets of head `head` (0: stride 32, 1: stride 16) for a batch, with `boxes_pred`
    /// the head's predicted boxes `[N, A, 4, G, G]` (raw tx, ty, tw, th) for the ignore rule.
    fn head_targets(
        &self,
        head: usize,
        targets: &[Vec<YoloTarget>],
        boxes_pred: &[f32],
        grid: usize,
    ) -> HeadTargets {
        let n = targets.len();
        let (a_n, k_n, g2) = (ANCHORS_PER_SCALE, self.classes, grid * grid);
        let stride = STRIDES[head] as f32;
        let s = self.input_size as f32;
        // Anchors 0..3 belong to stride 16 (head 1), 3..6 to stride 32 (head 0).
        let first_anchor = if head == 0 { ANCHORS_PER_SCALE } else { 0 };
        let cells = n * a_n * g2;
        let mut t = HeadTargets {
            boxes: vec![0.0; cells * 4],
            box_weight: vec![0.0; cells],
            positive: vec![0.0; cells],
            obj_weight: vec![1.0; cells],
            classes: vec![0.0; cells * k_n],
        };
        let usable = |t: &YoloTarget| {
            t.class < self.classes
                && [t.x1, t.y1, t.x2, t.y2].iter().all(|v| v.is_finite())
                && t.x2 > t.x1
                && t.y2 > t.y1
        };
        for (b, image) in targets.iter().enumerate() {
            // (class, box clipped to the image), for the usable targets.
            let gts: Vec<(usize, [f32; 4])> = image
                .iter()
                .filter(|t| usable(t))
                .map(|t| {
                    let c = [t.x1.max(0.0), t.y1.max(0.0), t.x2.min(s), t.y2.min(s)];
                    (t.class, c)
                })
                .filter(|(_, c)| c[2] > c[0] && c[3] > c[1])
                .collect();
            // Ignore rule: predictions overlapping any ground truth well are not negatives.
            for a in 0..a_n {
                let [aw, ah] = self.anchor(first_anchor + a);
                for cell in 0..g2 {
                    let at = |j: usize| boxes_pred[((b * a_n + a) * 4 + j) * g2 + cell];
                    let (gx, gy) = ((cell % grid) as f32, (cell / grid) as f32);
                    let cx = (sigmoid_f32(at(0)) + gx) * stride;
                    let cy = (sigmoid_f32(at(1)) + gy) * stride;
                    let w = aw * at(2).clamp(-20.0, 20.0).exp();
                    let h = ah * at(3).clamp(-20.0, 20.0).exp();
                    let pred = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
                    if gts
                        .iter()
                        .any(|(_, g)| box_iou(pred, *g) > self.ignore_threshold)
                    {
                        t.obj_weight[(b * a_n + a) * g2 + cell] = 0.0;
                    }
                }
            }
            for &(class, g) in &gts {
                let (w, h) = (g[2] - g[0], g[3] - g[1]);
                // Best of all six anchors by shape alone.
                let best = (0..2 * ANCHORS_PER_SCALE)
                    .map(|k| {
                        let [aw, ah] = self.anchor(k);
                        let inter = w.min(aw) * h.min(ah);
                        (k, inter / (w * h + aw * ah - inter))
                    })
                    .fold((0, f32::MIN), |m, c| if c.1 > m.1 { c } else { m })
                    .0;
                if best < first_anchor || best >= first_anchor + ANCHORS_PER_SCALE {
                    continue;
                }
                let a = best - first_anchor;
                let [aw, ah] = self.anchor(best);
                let (cx, cy) = ((g[0] + g[2]) / 2.0 / stride, (g[1] + g[3]) / 2.0 / stride);
                let gx = (cx.floor() as usize).min(grid - 1);
                let gy = (cy.floor() as usize).min(grid - 1);
                let cell = gy * grid + gx;
                let idx = (b * a_n + a) * g2 + cell;
                let bidx = |j: usize| ((b * a_n + a) * 4 + j) * g2 + cell;
                t.boxes[bidx(0)] = cx - gx as f32;
                t.boxes[bidx(1)] = cy - gy as f32;
                t.boxes[bidx(2)] = (w / aw).ln();
                t.boxes[bidx(3)] = (h / ah).ln();
                t.box_weight[idx] = 2.0 - w * h / (s * s);
                t.positive[idx] = 1.0;
                t.obj_weight[idx] = 1.0;
                // A later box on the same anchor and cell replaces the earlier one, as in
                // darknet; its class vector is reset first.
                for c in 0..k_n {
                    t.classes[((b * a_n + a) * k_n + c) * g2 + cell] = 0.0;
                }
                t.classes[((b * a_n + a) * k_n + class) * g2 + cell] = 1.0;
            }
        }
        t
    }

    /// The YOLOv3 loss (see the module documentation) of `outputs` (as [`forward`] returns
    /// them) against one target list per image; a scalar `[1]`. Targets that
    /// [`check_targets`] would refuse are clipped to the image when only their extent is at
    /// fault and left out otherwise.
    ///
    /// # Panics
    /// When the outputs do not have this model's head shapes or their batch size differs from
    /// `targets.len()` (a bug of the caller, not of the data).
    ///
    /// [`forward`]: Self::forward
    /// [`check_targets`]: Self::check_targets
    pub fn loss(&self, outputs: (Tensor<4>, Tensor<4>), targets: &[Vec<YoloTarget>]) -> Tensor<1> {
        let (a_n, k_n) = (ANCHORS_PER_SCALE, self.classes);
        let mut total = Tensor::<1>::zeros([1], &outputs.0.device());
        for (head, out) in [outputs.0, outputs.1].into_iter().enumerate() {
            let [n, ch, g, g2] = out.dims();
            let grid = self.input_size / STRIDES[head];
            assert!(
                n == targets.len() && ch == a_n * (5 + k_n) && g == grid && g2 == grid,
                "yolo loss: head {head} output {:?} does not match {} images at {}×{} with {} channels",
                out.dims(),
                targets.len(),
                grid,
                grid,
                a_n * (5 + k_n)
            );
            let dev = out.device();
            let out = out.reshape([n, a_n, 5 + k_n, g, g]);
            let boxes_pred = to_vec_f32(out.clone().detach().narrow(2, 0, 4));
            let t = self.head_targets(head, targets, &boxes_pred, grid);
            let shape1 = [n, a_n, 1, g, g];
            let box_t = float_tensor(t.boxes, [n, a_n, 4, g, g], &dev);
            let box_w = float_tensor(t.box_weight, shape1, &dev);
            let pos = float_tensor(t.positive, shape1, &dev);
            let obj_w = float_tensor(t.obj_weight, shape1, &dev);
            let cls_t = float_tensor(t.classes, [n, a_n, k_n, g, g], &dev);

            let xy = sigmoid(out.clone().narrow(2, 0, 2));
            let wh = out.clone().narrow(2, 2, 2);
            let box_loss = ((xy - box_t.clone().narrow(2, 0, 2)).square() * box_w.clone()).sum()
                + ((wh - box_t.narrow(2, 2, 2)).square() * box_w).sum();
            let obj_loss =
                (bce_with_logits(out.clone().narrow(2, 4, 1), pos.clone()) * obj_w).sum();
            let cls_loss = (bce_with_logits(out.narrow(2, 5, k_n), cls_t) * pos).sum();
            total = total + box_loss + obj_loss + cls_loss;
        }
        total.div_scalar(targets.len().max(1) as f64)
    }

    /// Detections per image from `outputs` (as [`forward`](Self::forward) returns them): every
    /// anchor and class whose score `σ(objectness)·σ(class)` exceeds `conf_threshold` (several
    /// classes per box, as darknet reports them), boxes clipped to the image, before
    /// non-maximum suppression ([`nms`]).
    pub fn decode(
        &self,
        outputs: (Tensor<4>, Tensor<4>),
        conf_threshold: f32,
    ) -> Vec<Vec<Detection>> {
        let (a_n, k_n) = (ANCHORS_PER_SCALE, self.classes);
        let s = self.input_size as f32;
        let mut per_image: Vec<Vec<Detection>> = Vec::new();
        for (head, out) in [outputs.0, outputs.1].into_iter().enumerate() {
            let [n, _, g, _] = out.dims();
            if per_image.is_empty() {
                per_image = vec![Vec::new(); n];
            }
            let stride = STRIDES[head] as f32;
            let first_anchor = if head == 0 { ANCHORS_PER_SCALE } else { 0 };
            let v = to_vec_f32(out);
            let g2 = g * g;
            let at = |b: usize, a: usize, j: usize, cell: usize| {
                v[((b * a_n + a) * (5 + k_n) + j) * g2 + cell]
            };
            for (b, dets) in per_image.iter_mut().enumerate().take(n) {
                for a in 0..a_n {
                    let [aw, ah] = self.anchor(first_anchor + a);
                    for cell in 0..g2 {
                        let obj = sigmoid_f32(at(b, a, 4, cell));
                        if obj <= conf_threshold {
                            continue;
                        }
                        let (gx, gy) = ((cell % g) as f32, (cell / g) as f32);
                        let cx = (sigmoid_f32(at(b, a, 0, cell)) + gx) * stride;
                        let cy = (sigmoid_f32(at(b, a, 1, cell)) + gy) * stride;
                        let w = aw * at(b, a, 2, cell).clamp(-20.0, 20.0).exp();
                        let h = ah * at(b, a, 3, cell).clamp(-20.0, 20.0).exp();
                        for class in 0..k_n {
                            let score = obj * sigmoid_f32(at(b, a, 5 + class, cell));
                            if score > conf_threshold {
                                dets.push(Detection {
                                    x1: (cx - w / 2.0).clamp(0.0, s),
                                    y1: (cy - h / 2.0).clamp(0.0, s),
                                    x2: (cx + w / 2.0).clamp(0.0, s),
                                    y2: (cy + h / 2.0).clamp(0.0, s),
                                    score,
                                    class,
                                });
                            }
                        }
                    }
                }
            }
        }
        per_image
    }
}

impl YoloTiny {
    /// [`decode`](Self::decode) then per-class [`nms`] on each image: the detector's final
    /// answer for `outputs`.
    pub fn detect(
        &self,
        outputs: (Tensor<4>, Tensor<4>),
        conf_threshold: f32,
        iou_threshold: f32,
    ) -> Vec<Vec<Detection>> {
        self.decode(outputs, conf_threshold)
            .iter()
            .map(|dets| nms(dets, iou_threshold))
            .collect()
    }
}

fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Binary cross-entropy of logits `x` against targets `t`, element-wise, in the form that
/// neither overflows nor loses the small tail: `max(x, 0) − x·t + ln(1 + e^(−|x|))`.
fn bce_with_logits<const D: usize>(x: Tensor<D>, t: Tensor<D>) -> Tensor<D> {
    x.clone().clamp_min(0.0) - x.clone() * t + x.abs().neg().exp().log1p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testutil::{checkpoint_roundtrip, max_abs_diff};
    use burn::tensor::Distribution;
    use ferrolab_core::backend::{device, exclusive_rng, train_device};
    use ferrolab_core::nn::gradcheck::check_input_gradient;

    fn tiny(classes: usize) -> YoloConfig {
        YoloConfig {
            widths: vec![2, 3, 3, 4, 4, 5, 6],
            ..YoloConfig::new(64, 1, classes)
        }
    }

    fn det(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class: usize) -> Detection {
        Detection {
            x1,
            y1,
            x2,
            y2,
            score,
            class,
        }
    }

    fn target(class: usize, x1: f32, y1: f32, x2: f32, y2: f32) -> YoloTarget {
        YoloTarget {
            class,
            x1,
            y1,
            x2,
            y2,
        }
    }

    #[test]
    fn default_shapes_and_bad_configs() {
        let _rng = exclusive_rng();
        let dev = device();
        let cfg = YoloConfig {
            classes: 3,
            ..YoloConfig::default()
        };
        let net = YoloTiny::new(&cfg, &dev).unwrap();
        let x = Tensor::<4>::random([2, 3, 128, 128], Distribution::Default, &dev);
        let (p32, p16) = net.forward(x);
        assert_eq!(p32.dims(), [2, 24, 4, 4]);
        assert_eq!(p16.dims(), [2, 24, 8, 8]);
        // yolov3-tiny.cfg with 80 classes, counted layer by layer: 8,852,366 weights; burn adds
        // the running statistics (2 per batch-norm channel: 16+…+1024 backbone,
        // 256+512+128+256 heads).
        let full = YoloTiny::new(&YoloConfig::default(), &dev).unwrap();
        assert_eq!(full.num_params(), 8_852_366 + 2 * (2032 + 1152));
        let bad = [
            YoloConfig {
                input_size: 100,
                ..cfg.clone()
            },
            YoloConfig {
                widths: vec![16; 6],
                ..cfg.clone()
            },
            YoloConfig {
                anchors: vec![[1.0, 1.0]; 5],
                ..cfg.clone()
            },
            YoloConfig {
                anchors: vec![[1.0, -1.0]; 6],
                ..cfg.clone()
            },
            YoloConfig {
                classes: 0,
                ..cfg.clone()
            },
        ];
        for b in bad {
            assert!(YoloTiny::new(&b, &dev).is_err(), "{b:?}");
        }
    }

    #[test]
    fn iou_and_nms_hand_cases() {
        let _rng = exclusive_rng();
        assert_eq!(box_iou([0., 0., 2., 2.], [1., 1., 3., 3.]), 1.0 / 7.0);
        assert_eq!(box_iou([0., 0., 1., 1.], [2., 2., 3., 3.]), 0.0);
        assert_eq!(box_iou([0., 0., 0., 0.], [0., 0., 0., 0.]), 0.0);
        let dets = vec![
            det(0., 0., 10., 10., 0.8, 0),
            det(1., 1., 11., 11., 0.9, 0), // IoU 81/119 = 0.68 with the first
            det(1., 1., 11., 11., 0.7, 1), // same place, other class: kept
            det(20., 20., 30., 30., 0.5, 0),
            det(0., 0., 10., 5., 0.6, 0), // IoU 0.45 with the first, 0.36 with the second
        ];
        let kept = nms(&dets, 0.5);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7, 0.6, 0.5]);
        // A looser threshold keeps the first too; a stricter one drops the half box.
        assert_eq!(nms(&dets, 0.7).len(), 5);
        assert_eq!(nms(&dets, 0.3).len(), 3);
        // Ties: input order decides.
        let tied = vec![det(0., 0., 4., 4., 0.5, 2), det(0., 0., 4., 4.5, 0.5, 2)];
        assert_eq!(nms(&tied, 0.5), vec![tied[0]]);
        assert!(nms(&[], 0.5).is_empty());
    }

    /// Raw outputs that encode `t` exactly at the anchor and cell the loss assigns it, with
    /// confident objectness and class logits, and confident background elsewhere.
    fn outputs_for(net: &YoloTiny, t: &YoloTarget, dev: &Device) -> (Tensor<4>, Tensor<4>) {
        let k = net.classes;
        let s = net.input_size;
        let mut heads = Vec::new();
        for (head, &stride) in STRIDES.iter().enumerate() {
            let g = s / stride;
            let mut v = vec![0f32; ANCHORS_PER_SCALE * (5 + k) * g * g];
            for a in 0..ANCHORS_PER_SCALE {
                for cell in 0..g * g {
                    v[(a * (5 + k) + 4) * g * g + cell] = -12.0;
                }
            }
            let (w, h) = (t.x2 - t.x1, t.y2 - t.y1);
            let best = (0..6)
                .map(|i| {
                    let [aw, ah] = net.anchor(i);
                    let inter = w.min(aw) * h.min(ah);
                    inter / (w * h + aw * ah - inter)
                })
                .enumerate()
                .fold((0, f32::MIN), |m, c| if c.1 > m.1 { c } else { m })
                .0;
            let first = if head == 0 { 3 } else { 0 };
            if (first..first + 3).contains(&best) {
                let a = best - first;
                let [aw, ah] = net.anchor(best);
                let (cx, cy) = ((t.x1 + t.x2) / 2.0, (t.y1 + t.y2) / 2.0);
                let st = stride as f32;
                let (gx, gy) = ((cx / st).floor(), (cy / st).floor());
                let cell = gy as usize * g + gx as usize;
                let logit = |p: f32| (p / (1.0 - p)).ln();
                let ch = |j: usize| (a * (5 + k) + j) * g * g + cell;
                v[ch(0)] = logit(cx / st - gx);
                v[ch(1)] = logit(cy / st - gy);
                v[ch(2)] = (w / aw).ln();
                v[ch(3)] = (h / ah).ln();
                v[ch(4)] = 12.0;
                for c in 0..k {
                    v[ch(5 + c)] = if c == t.class { 12.0 } else { -12.0 };
                }
            }
            heads.push(float_tensor(v, [1, ANCHORS_PER_SCALE * (5 + k), g, g], dev));
        }
        let p16 = heads.pop().unwrap();
        (heads.pop().unwrap(), p16)
    }

    /// Outputs that encode the target give (almost) zero loss and decode back to the target;
    /// moving the box, the class or the objectness raises the loss.
    #[test]
    fn encoded_target_decodes_back_and_minimises_the_loss() {
        let _rng = exclusive_rng();
        let dev = device();
        let net = YoloTiny::new(&tiny(3), &dev).unwrap();
        // Anchors at 64 px: 1.5×2.2, 3.5×4.2, 5.7×8.9, 12.5×12.6, 20.8×26, 52.9×49.
        for t in [target(2, 10., 12., 23., 25.), target(0, 30., 40., 35., 49.)] {
            let outs = outputs_for(&net, &t, &dev);
            let loss = to_vec_f32(net.loss(outs.clone(), &[vec![t]]))[0];
            assert!(loss < 2e-3, "{loss}");
            let dets = net.decode(outs.clone(), 0.5);
            assert_eq!(net.detect(outs.clone(), 0.5, 0.45), dets);
            assert_eq!(dets.len(), 1);
            assert_eq!(dets[0].len(), 1, "{:?}", dets[0]);
            let d = dets[0][0];
            assert_eq!(d.class, t.class);
            for (a, b) in [(d.x1, t.x1), (d.y1, t.y1), (d.x2, t.x2), (d.y2, t.y2)] {
                assert!((a - b).abs() < 1e-3, "{d:?} vs {t:?}");
            }
            // A wrong class, a shifted box, or no object at all cost more.
            for other in [
                YoloTarget {
                    class: (t.class + 1) % 3,
                    ..t
                },
                YoloTarget {
                    x1: t.x1 + 8.0,
                    x2: t.x2 + 8.0,
                    ..t
                },
            ] {
                let l = to_vec_f32(net.loss(outs.clone(), &[vec![other]]))[0];
                assert!(l > loss + 0.05, "{l} vs {loss}");
            }
            let l = to_vec_f32(net.loss(outs, &[vec![]]))[0];
            assert!(l > 5.0, "{l}");
        }
    }

    #[test]
    fn target_checks() {
        let _rng = exclusive_rng();
        let dev = device();
        let net = YoloTiny::new(&tiny(2), &dev).unwrap();
        assert!(
            net.check_targets(&[vec![target(1, 0., 0., 64., 64.)], vec![]])
                .is_ok()
        );
        for bad in [
            target(2, 0., 0., 5., 5.),
            target(0, 5., 0., 5., 5.),
            target(0, -1., 0., 5., 5.),
            target(0, 0., 0., 65., 5.),
            target(0, 0., f32::NAN, 5., 5.),
        ] {
            let e = net.check_targets(&[vec![], vec![bad]]).unwrap_err();
            assert!(e.starts_with("image 1, box 0"), "{e}");
            // The loss leaves it out (or clips it) rather than failing.
            let dev = train_device();
            let x = Tensor::<4>::random([2, 1, 64, 64], Distribution::Default, &dev);
            let l = to_vec_f32(net.loss(net.forward(x), &[vec![], vec![bad]]))[0];
            assert!(l.is_finite());
        }
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(51);
        let net = YoloTiny::new(
            &YoloConfig {
                input_size: 32,
                ..tiny(2)
            },
            &dev,
        )
        .unwrap();
        let x = Tensor::<4>::random([4, 1, 32, 32], Distribution::Default, &dev);
        let _ = net.forward(x);
        // Running statistics, for the reason given in `mobilenet`'s gradient test (the
        // stride-32 map is 1×1 here).
        let net = net.freeze();
        check_input_gradient(
            |x: Tensor<4>| {
                let (a, b) = net.forward(x);
                let flat = |t: Tensor<4>| {
                    let [n, c, h, w] = t.dims();
                    t.reshape([n, c * h * w])
                };
                Tensor::cat(vec![flat(a), flat(b)], 1)
            },
            [1, 1, 32, 32],
            52,
        );
    }

    /// The loss's gradient with respect to both heads' raw outputs.
    #[test]
    fn loss_gradient_matches_finite_differences() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(53);
        let net = YoloTiny::new(&tiny(2), &dev).unwrap();
        let targets = vec![
            vec![target(1, 10., 12., 23., 25.), target(0, 40., 2., 62., 30.)],
            vec![target(0, 3., 3., 7., 9.)],
        ];
        let p16 = Tensor::<4>::random([2, 21, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let p32 = Tensor::<4>::random([2, 21, 2, 2], Distribution::Normal(0.0, 1.0), &dev);
        check_input_gradient(
            |p: Tensor<4>| net.loss((p, p16.clone()), &targets),
            [2, 21, 2, 2],
            54,
        );
        check_input_gradient(
            |p: Tensor<4>| net.loss((p32.clone(), p), &targets),
            [2, 21, 4, 4],
            55,
        );
    }

    /// Adam on one fixed batch drives the loss down and the detections onto the objects.
    #[test]
    fn a_few_training_steps_fit_one_batch() {
        use burn::optim::{AdamConfig, GradientsParams};
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(57);
        let mut net = YoloTiny::new(
            &YoloConfig {
                widths: vec![8, 8, 16, 16, 32, 32, 32],
                ..tiny(2)
            },
            &dev,
        )
        .unwrap();
        let x = Tensor::<4>::random([2, 1, 64, 64], Distribution::Default, &dev);
        let targets = vec![
            vec![target(1, 8., 8., 30., 28.)],
            vec![target(0, 36., 30., 50., 60.)],
        ];
        let mut opt = AdamConfig::new().init();
        let first = to_vec_f32(net.loss(net.forward(x.clone()), &targets))[0];
        let mut last = first;
        for _ in 0..60 {
            let loss = net.loss(net.forward(x.clone()), &targets);
            last = to_vec_f32(loss.clone())[0];
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = opt.step(3e-3, net, grads);
        }
        assert!(last < 0.3 * first, "{first} → {last}");
    }

    #[test]
    fn checkpoint_roundtrip_gives_identical_outputs() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(59);
        let cfg = tiny(2);
        let net = YoloTiny::new(&cfg, &dev).unwrap();
        let x = Tensor::<4>::random([3, 1, 64, 64], Distribution::Normal(0.5, 2.0), &dev);
        let _ = net.forward(x);
        let fresh = YoloTiny::new(&cfg, &dev).unwrap();
        let x = Tensor::<4>::random([2, 1, 64, 64], Distribution::Default, &device());
        let before = fresh.valid().forward(x.clone());
        let loaded = checkpoint_roundtrip(&net, fresh, "yolo");
        let want = net.valid().forward(x.clone());
        assert!(max_abs_diff(before.0, want.0.clone()) > 1e-3);
        let got = loaded.valid().forward(x);
        assert_eq!(max_abs_diff(got.0, want.0), 0.0);
        assert_eq!(max_abs_diff(got.1, want.1), 0.0);
    }
}
