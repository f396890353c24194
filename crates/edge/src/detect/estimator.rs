//! The detection task's label-free estimate: `CLC = mean_i(CC_i · LC_i)` over a frame's
//! detections (AdaEvo §4.1), with `CC_i` the detection's class probability and `LC_i` its
//! localisation confidence — a two-layer IoU regressor's prediction of the box's IoU with the
//! object it covers. The regressor reads the box's content (a `CROP × CROP` RGB sample of the
//! box grown by a quarter, so that it sees the object's edges or their absence, each channel
//! centred on the crop's mean) and the box's size; it is trained on jittered ground-truth
//! boxes of the factory model's (clean) training frames with their true IoU as a soft target
//! (sigmoid output, cross-entropy), plus a share of random boxes (IoU mostly 0) standing in
//! for false positives. A frame without any detection at or above the score floor has
//! `CLC = 0` (the model is sure of nothing in it).

use super::grid::{Det, GtBox, iou};
use crate::model::{Mlp, TrainOpts};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Crop side of the regressor's input.
pub const CROP: usize = 6;
/// Input width of the regressor.
pub const IOU_IN: usize = CROP * CROP * 3 + 2;

/// The localisation-confidence (IoU) regressor.
#[derive(Debug, Clone, PartialEq)]
pub struct IouRegressor {
    /// `IOU_IN → hidden → 1`, sigmoid on the output.
    pub mlp: Mlp,
    /// Frame side, pixels.
    pub side: usize,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The regressor's input for box `b` of the frame `rgb` (`side × side` RGB).
pub fn box_features(rgb: &[u8], side: usize, b: &[f32; 4]) -> Vec<f32> {
    let (w, h) = (b[2].max(1.0) * 1.25, b[3].max(1.0) * 1.25);
    let (cx, cy) = (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0);
    let mut v = Vec::with_capacity(IOU_IN);
    for r in 0..CROP {
        for c in 0..CROP {
            let x = cx - w / 2.0 + (c as f32 + 0.5) * w / CROP as f32;
            let y = cy - h / 2.0 + (r as f32 + 0.5) * h / CROP as f32;
            let xi = (x.max(0.0) as usize).min(side - 1);
            let yi = (y.max(0.0) as usize).min(side - 1);
            let p = (yi * side + xi) * 3;
            for ch in 0..3 {
                v.push(rgb.get(p + ch).copied().unwrap_or(0) as f32 / 255.0);
            }
        }
    }
    for ch in 0..3 {
        let m = (0..CROP * CROP).map(|i| v[i * 3 + ch]).sum::<f32>() / (CROP * CROP) as f32;
        for i in 0..CROP * CROP {
            v[i * 3 + ch] -= m;
        }
    }
    for x in v.iter_mut() {
        *x *= 4.0;
    }
    v.push(b[2] / side as f32);
    v.push(b[3] / side as f32);
    v
}

/// A box jittered around `b`: centre moved and size scaled by `sigma` relative noise.
fn jitter(b: &[f32; 4], sigma: f32, rng: &mut StdRng) -> [f32; 4] {
    let g = |rng: &mut StdRng| crate::stream::gauss(rng);
    let (w, h) = (b[2] * (sigma * g(rng)).exp(), b[3] * (sigma * g(rng)).exp());
    let cx = b[0] + b[2] / 2.0 + sigma * b[2] * g(rng);
    let cy = b[1] + b[3] / 2.0 + sigma * b[3] * g(rng);
    [cx - w / 2.0, cy - h / 2.0, w.max(1.0), h.max(1.0)]
}

impl IouRegressor {
    /// Trains on `jitters` jittered copies of every ground-truth box of `frames` (noise
    /// 0.02–0.5 of the box size) and one random box per five (false-positive stand-ins).
    pub fn fit(
        frames: &[(&[u8], &[GtBox])],
        side: usize,
        hidden: usize,
        jitters: usize,
        epochs: usize,
        seed: u64,
    ) -> IouRegressor {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x10_0E);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for (rgb, gt) in frames {
            for (b, _) in gt.iter() {
                for j in 0..jitters {
                    let jb = if j % 5 == 4 {
                        let s = rng.random_range(4.0..side as f32 / 2.0);
                        [
                            rng.random_range(0.0..side as f32 - s),
                            rng.random_range(0.0..side as f32 - s),
                            s,
                            s * rng.random_range(0.5f32..2.0),
                        ]
                    } else {
                        let sigma = rng.random_range(0.02f32..0.5);
                        jitter(b, sigma, &mut rng)
                    };
                    let best = gt.iter().map(|(g, _)| iou(&jb, g)).fold(0f32, f32::max);
                    xs.push(box_features(rgb, side, &jb));
                    ys.push(best);
                }
            }
        }
        let mut mlp = Mlp::new(&[IOU_IN, hidden, 1], seed ^ 0x10_0F);
        mlp.train_with(
            &xs,
            |i, out| vec![sigmoid(out[0]) - ys[i]],
            &TrainOpts {
                epochs,
                lr: 0.02,
                momentum: 0.9,
                batch: 32,
                seed: seed ^ 0x10_10,
            },
        );
        IouRegressor { mlp, side }
    }

    /// Predicted IoU of box `b` in frame `rgb`.
    pub fn predict(&self, rgb: &[u8], b: &[f32; 4]) -> f32 {
        let o = self.mlp.outputs(&box_features(rgb, self.side, b));
        sigmoid(o.first().copied().unwrap_or(0.0))
    }

    /// FLOPs of one prediction.
    pub fn flops(&self) -> f64 {
        self.mlp.flops_forward()
    }
}

/// A frame's estimates from its detections (those scoring at least `floor`): `(CLC, CC)`,
/// `CLC = mean(CC·LC)`, `CC = mean(CC)` (the same without localisation, for comparison);
/// both 0 without a detection.
pub fn frame_clc(iou: &IouRegressor, rgb: &[u8], dets: &[Det], floor: f32) -> (f64, f64) {
    let kept: Vec<&Det> = dets.iter().filter(|d| d.score >= floor).collect();
    if kept.is_empty() {
        return (0.0, 0.0);
    }
    let n = kept.len() as f64;
    let clc = kept
        .iter()
        .map(|d| (d.score * iou.predict(rgb, &d.bbox)) as f64)
        .sum::<f64>()
        / n;
    let cc = kept.iter().map(|d| d.score as f64).sum::<f64>() / n;
    (clc, cc)
}
