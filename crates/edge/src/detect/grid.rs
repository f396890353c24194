//! A tiny single-scale grid detector (YOLO v1's layout, one box per cell): the frame is cut
//! into `cell`-pixel cells; each cell sees a `context × context`-cell window around it,
//! average-pooled by `pool`, plus its position; a shared MLP (an [`Mlp`], so that pruning,
//! int8 shipping and exact FLOP counts are the classifier's) maps it to `1 + 5` class logits
//! (background first) and 4 box offsets `(tx, ty, tw, th)`: centre `(cx + ½ + tx, cy + ½ +
//! ty)·cell`, size `cell·e^tw × cell·e^th`. A ground-truth box belongs to the cell holding
//! its centre (the larger box when two share one). Loss: softmax cross-entropy on the class,
//! Huber (δ = 1) on the offsets of object cells. Decoding: every class score ≥ a floor,
//! per-class NMS at IoU 0.45, at most 30 detections per frame.

use crate::model::{Mlp, TrainOpts, TrainStats, softmax};
use ferrolab_vision::metrics::coco;

/// Object categories (`ferrolab_data::underwater::CATEGORIES`).
pub const CATS: usize = 5;
/// Outputs per cell: background + categories, then the 4 box offsets.
pub const OUT: usize = 1 + CATS + 4;
/// NMS IoU.
pub const NMS_IOU: f32 = 0.45;
/// Detections kept per frame.
pub const MAX_DETS: usize = 30;

/// A box `[x, y, w, h]` (pixels) with its category index.
pub type GtBox = ([f32; 4], usize);

/// The grid geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub side: usize,
    pub cell: usize,
    pub pool: usize,
    pub context: usize,
    /// Windows for a model with a conv stem: channel-major `[3][win][win]` (the stem's layout)
    /// and no position features (the convolution is translation-equivariant; the zero border
    /// shows where the frame ends). Otherwise `[win][win][3]` and the cell's position.
    pub conv: bool,
}

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Det {
    /// `[x, y, w, h]`, pixels.
    pub bbox: [f32; 4],
    /// Category index.
    pub category: usize,
    /// Class probability (CC).
    pub score: f32,
}

/// One cell's training target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellTarget {
    /// 0 = background, 1 + category otherwise.
    pub class: u8,
    /// Box offsets (object cells only).
    pub boxt: [f32; 4],
}

impl Grid {
    /// Cells per side.
    pub fn n(&self) -> usize {
        self.side / self.cell
    }

    /// Cells per frame.
    pub fn cells(&self) -> usize {
        self.n() * self.n()
    }

    fn pooled_side(&self) -> usize {
        self.side / self.pool
    }

    /// Input width of one cell.
    pub fn input(&self) -> usize {
        self.window_side() * self.window_side() * 3 + if self.conv { 0 } else { 2 }
    }

    /// Side of a cell's (pooled) window, the input side of a conv stem.
    pub fn window_side(&self) -> usize {
        self.context * self.cell / self.pool
    }

    /// Why this geometry cannot work, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.cell == 0 || self.pool == 0 || !self.side.is_multiple_of(self.cell) {
            return Err(format!(
                "detect.side {} must be a multiple of detect.cell {}",
                self.side, self.cell
            ));
        }
        if !self.cell.is_multiple_of(self.pool) {
            return Err(format!(
                "detect.cell {} must be a multiple of detect.pool {}",
                self.cell, self.pool
            ));
        }
        if self.n() < 2 {
            return Err(format!(
                "detect.side {} holds fewer than 2 cells of {} per side",
                self.side, self.cell
            ));
        }
        Ok(())
    }

    /// The frame average-pooled by `pool`, `[y][x][c]`, centred (`v/255 − ½`).
    pub fn pooled(&self, rgb: &[u8]) -> Vec<f32> {
        let (ps, p, s) = (self.pooled_side(), self.pool, self.side);
        let mut out = vec![0f32; ps * ps * 3];
        let norm = 1.0 / (255.0 * (p * p) as f32);
        for y in 0..ps * p {
            for x in 0..ps * p {
                let src = (y * s + x) * 3;
                let dst = ((y / p) * ps + x / p) * 3;
                for c in 0..3 {
                    out[dst + c] += rgb.get(src + c).copied().unwrap_or(0) as f32 * norm;
                }
            }
        }
        out.iter_mut().for_each(|v| *v -= 0.5);
        out
    }

    /// Every cell's input (row-major cells); outside the frame reads 0 (mid grey).
    pub fn cell_inputs(&self, rgb: &[u8]) -> Vec<Vec<f32>> {
        let p = self.pooled(rgb);
        let (ps, win, n) = (self.pooled_side() as isize, self.window_side(), self.n());
        let cp = (self.cell / self.pool) as isize;
        let half = ((self.context as isize - 1) / 2) * cp;
        let plane = win * win;
        let mut out = Vec::with_capacity(n * n);
        for cy in 0..n {
            for cx in 0..n {
                let (x0, y0) = (cx as isize * cp - half, cy as isize * cp - half);
                let mut v = vec![0f32; self.input()];
                for wy in 0..win {
                    for wx in 0..win {
                        let (y, x) = (y0 + wy as isize, x0 + wx as isize);
                        if !((0..ps).contains(&y) && (0..ps).contains(&x)) {
                            continue;
                        }
                        let i = ((y * ps + x) * 3) as usize;
                        for c in 0..3 {
                            let at = if self.conv {
                                c * plane + wy * win + wx
                            } else {
                                (wy * win + wx) * 3 + c
                            };
                            v[at] = p[i + c];
                        }
                    }
                }
                if !self.conv {
                    v[3 * plane] = (cx as f32 + 0.5) / n as f32 - 0.5;
                    v[3 * plane + 1] = (cy as f32 + 0.5) / n as f32 - 0.5;
                }
                out.push(v);
            }
        }
        out
    }

    /// Every cell's target for the boxes `gt`.
    pub fn targets(&self, gt: &[GtBox]) -> Vec<CellTarget> {
        let n = self.n();
        let c = self.cell as f32;
        let mut t = vec![
            CellTarget {
                class: 0,
                boxt: [0.0; 4],
            };
            n * n
        ];
        let mut area = vec![0f32; n * n];
        for (b, cat) in gt {
            let (w, h) = (b[2].max(1.0), b[3].max(1.0));
            let (mx, my) = (b[0] + w / 2.0, b[1] + h / 2.0);
            let cx = ((mx / c) as usize).min(n - 1);
            let cy = ((my / c) as usize).min(n - 1);
            let i = cy * n + cx;
            if w * h <= area[i] {
                continue;
            }
            area[i] = w * h;
            t[i] = CellTarget {
                class: (*cat).min(CATS - 1) as u8 + 1,
                boxt: [
                    mx / c - (cx as f32 + 0.5),
                    my / c - (cy as f32 + 0.5),
                    (w / c).ln(),
                    (h / c).ln(),
                ],
            };
        }
        t
    }

    /// The box of cell `i` for offsets `o`, clipped to the frame.
    pub fn decode_box(&self, i: usize, o: &[f32]) -> [f32; 4] {
        let n = self.n();
        let c = self.cell as f32;
        let (cx, cy) = ((i % n) as f32, (i / n) as f32);
        let mx = (cx + 0.5 + o[0].clamp(-1.0, 1.0)) * c;
        let my = (cy + 0.5 + o[1].clamp(-1.0, 1.0)) * c;
        let w = c * o[2].clamp(-3.0, 3.0).exp();
        let h = c * o[3].clamp(-3.0, 3.0).exp();
        let s = self.side as f32;
        let x0 = (mx - w / 2.0).clamp(0.0, s);
        let y0 = (my - h / 2.0).clamp(0.0, s);
        let x1 = (mx + w / 2.0).clamp(0.0, s);
        let y1 = (my + h / 2.0).clamp(0.0, s);
        [x0, y0, (x1 - x0).max(0.0), (y1 - y0).max(0.0)]
    }

    /// Training samples of one frame: every object cell, and the background cells whose
    /// seeded draw falls under `bg_keep`.
    pub fn samples(
        &self,
        rgb: &[u8],
        gt: &[GtBox],
        bg_keep: f64,
        seed: u64,
    ) -> Vec<(Vec<f32>, CellTarget)> {
        let xs = self.cell_inputs(rgb);
        let ts = self.targets(gt);
        xs.into_iter()
            .zip(ts)
            .enumerate()
            .filter(|(i, (_, t))| t.class > 0 || unit_hash(seed, *i as u64) < bg_keep)
            .map(|(_, s)| s)
            .collect()
    }

    /// Detections of `model` on the frame `rgb` with a class score of at least `min_score`.
    pub fn detect(&self, model: &Mlp, rgb: &[u8], min_score: f32) -> Vec<Det> {
        let xs = self.cell_inputs(rgb);
        let mut dets = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            let o = model.outputs(x);
            if o.len() < OUT {
                continue;
            }
            let p = softmax(&o[..1 + CATS]);
            for (c, &s) in p.iter().enumerate().skip(1) {
                if s >= min_score {
                    dets.push(Det {
                        bbox: self.decode_box(i, &o[1 + CATS..OUT]),
                        category: c - 1,
                        score: s,
                    });
                }
            }
        }
        nms(dets)
    }

    /// FLOPs of running a model of `macs` multiply-adds per cell over one frame.
    pub fn frame_flops(&self, model: &Mlp) -> f64 {
        model.flops_forward() * self.cells() as f64
    }
}

/// A uniform draw in [0, 1) from `(seed, i)` (splitmix64).
pub fn unit_hash(seed: u64, i: u64) -> f64 {
    let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// IoU of two `[x, y, w, h]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    let u = a[2] * a[3] + b[2] * b[3] - inter;
    if u <= 0.0 { 0.0 } else { inter / u }
}

/// Per-class greedy NMS, best first, at most [`MAX_DETS`].
pub fn nms(mut dets: Vec<Det>) -> Vec<Det> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Det> = Vec::new();
    for d in dets {
        if keep
            .iter()
            .any(|k| k.category == d.category && iou(&k.bbox, &d.bbox) > NMS_IOU)
        {
            continue;
        }
        keep.push(d);
        if keep.len() == MAX_DETS {
            break;
        }
    }
    keep
}

/// mAP@0.5 (COCO 101-point AP at IoU 0.5, categories with ground truth) of the detections
/// `dets[i]` against the boxes `gt[i]` of the same frames. Frames without any box anywhere
/// give 0.
pub fn map50(gt: &[&[GtBox]], dets: &[Vec<Det>]) -> f64 {
    let mut g = coco::CocoGt {
        images: (1..=gt.len() as i64).collect(),
        categories: (0..CATS)
            .map(|c| coco::Category {
                id: c as i64 + 1,
                name: String::new(),
            })
            .collect(),
        annotations: Vec::new(),
    };
    for (i, boxes) in gt.iter().enumerate() {
        for (b, c) in boxes.iter() {
            let id = g.annotations.len() as i64 + 1;
            g.annotations.push(coco::GtAnnotation::from_box(
                id,
                i as i64 + 1,
                *c as i64 + 1,
                b.map(f64::from),
            ));
        }
    }
    if g.annotations.is_empty() {
        return 0.0;
    }
    let d: Vec<coco::Detection> = dets
        .iter()
        .enumerate()
        .flat_map(|(i, ds)| {
            ds.iter().map(move |d| coco::Detection {
                image_id: i as i64 + 1,
                category_id: d.category as i64 + 1,
                bbox: d.bbox.map(f64::from),
                score: d.score as f64,
            })
        })
        .collect();
    coco::map50(&g, &d).max(0.0)
}

/// mAP@0.5 of `model` on frames `(rgb, boxes)`.
pub fn model_map50(grid: &Grid, model: &Mlp, frames: &[(&[u8], &[GtBox])]) -> f64 {
    let dets: Vec<Vec<Det>> = frames
        .iter()
        .map(|(rgb, _)| grid.detect(model, rgb, 0.01))
        .collect();
    let gt: Vec<&[GtBox]> = frames.iter().map(|f| f.1).collect();
    map50(&gt, &dets)
}

/// Trains the detector `m` on cell samples: softmax cross-entropy on the class, Huber on the
/// box offsets of object cells.
pub fn train_detector(
    m: &mut Mlp,
    samples: &[(Vec<f32>, CellTarget)],
    opts: &TrainOpts,
) -> TrainStats {
    let xs: Vec<Vec<f32>> = samples.iter().map(|s| s.0.clone()).collect();
    let targets: Vec<CellTarget> = samples.iter().map(|s| s.1).collect();
    train_detector_split(m, &xs, &targets, opts)
}

/// [`train_detector`] on inputs and targets held apart (a caller that owns its samples
/// splits them by move and keeps one copy of the inputs).
pub fn train_detector_split(
    m: &mut Mlp,
    xs: &[Vec<f32>],
    targets: &[CellTarget],
    opts: &TrainOpts,
) -> TrainStats {
    m.train_with(
        xs,
        |i, out| {
            let t = targets[i];
            let mut d = vec![0f32; out.len()];
            if out.len() < OUT {
                return d;
            }
            let p = softmax(&out[..1 + CATS]);
            d[..1 + CATS].copy_from_slice(&p);
            d[t.class as usize] -= 1.0;
            if t.class > 0 {
                for k in 0..4 {
                    d[1 + CATS + k] = (out[1 + CATS + k] - t.boxt[k]).clamp(-1.0, 1.0);
                }
            }
            d
        },
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_decode_back_to_the_box() {
        let g = Grid {
            side: 48,
            cell: 8,
            pool: 2,
            context: 3,
            conv: false,
        };
        assert!(g.check().is_ok());
        assert_eq!(g.input(), 12 * 12 * 3 + 2);
        let b = [13.0f32, 21.0, 10.0, 6.0];
        let t = g.targets(&[(b, 2)]);
        let (i, ct) = t
            .iter()
            .enumerate()
            .find(|(_, c)| c.class > 0)
            .map(|(i, c)| (i, *c))
            .unwrap_or((0, t[0]));
        assert_eq!(ct.class, 3);
        let d = g.decode_box(i, &ct.boxt);
        assert!(iou(&d, &b) > 0.99, "{d:?}");
        let x = g.cell_inputs(&vec![128u8; 48 * 48 * 3]);
        assert_eq!((x.len(), x[0].len()), (36, g.input()));
    }

    /// A conv stem's windows hold the same pixels as the MLP's, channel-major and without the
    /// two position features, and a stem detector over them runs on every cell.
    #[test]
    fn conv_windows_are_the_mlp_windows_transposed() {
        let flat = Grid {
            side: 32,
            cell: 8,
            pool: 2,
            context: 3,
            conv: false,
        };
        let conv = Grid { conv: true, ..flat };
        let rgb: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 37 % 251) as u8).collect();
        let (a, b) = (flat.cell_inputs(&rgb), conv.cell_inputs(&rgb));
        let w = conv.window_side();
        assert_eq!((w, conv.input(), flat.input()), (12, 432, 434));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(y.len(), conv.input());
            for p in 0..w * w {
                for c in 0..3 {
                    assert_eq!(x[p * 3 + c], y[c * w * w + p]);
                }
            }
        }
        // The corner cell's window reaches past the frame: zeros there, pixels inside.
        assert_eq!(b[0][0], 0.0);
        assert_ne!(b[0][4 * w + 4], 0.0);
        let m = Mlp::with_stem(3, w, 4, 3, &[8, OUT], 1);
        assert_eq!(m.input(), conv.input());
        let dets = conv.detect(&m, &rgb, 0.0);
        assert!(!dets.is_empty() && dets.len() <= MAX_DETS);
    }

    #[test]
    fn map_of_perfect_and_empty_detections() {
        let gt: Vec<GtBox> = vec![([1.0, 1.0, 10.0, 10.0], 0), ([20.0, 20.0, 8.0, 8.0], 3)];
        let perfect: Vec<Det> = gt
            .iter()
            .map(|(b, c)| Det {
                bbox: *b,
                category: *c,
                score: 0.9,
            })
            .collect();
        assert!((map50(&[&gt], &[perfect]) - 1.0).abs() < 1e-9);
        assert_eq!(map50(&[&gt], &[vec![]]), 0.0);
    }
}
