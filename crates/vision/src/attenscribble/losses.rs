//! The losses AttenScribble trains with, and the fully supervised baseline's.
//!
//! - **Partial cross-entropy** (WSL4MIS `CrossEntropyLoss(ignore_index=4)`): mean of
//!   `−log p_i[s_i]` over the scribbled pixels only.
//! - **Gated CRF loss** (Obukhov, Georgoulis, Dai & Van Gool, "Gated CRF Loss for Weakly
//!   Supervised Semantic Image Segmentation", arXiv 1906.04651, eq. 4–6, Potts compatibility):
//!   `L = (1/Σ_i m_i) Σ_i m_i Σ_{j ∈ N(i), j ≠ i} k_ij (1 − ⟨y_i, y_j⟩)` with the kernel
//!   `k_ij = w · exp(−|p_i − p_j|²/2σ_xy² − |I_i − I_j|²/2σ_rgb²)` over the `(2r+1)²` window and
//!   the *destination* gate `m_i` = "pixel i is not scribbled" (the reference's `mask_dst`;
//!   its source gate is off). Neighbours outside the image are left out: in the reference they
//!   carry zero probabilities and only add a constant to `kernels.sum()`, so the gradient is
//!   the same. Computed by hand on the CPU, value and gradient in one pass, and handed to
//!   autodiff as a first-order surrogate (exact value, exact gradient).
//! - **Attentive similarity loss** (AttenScribble eq. 4, reference `AttnGatedCRF`):
//!   `L = Σ_n g_n Σ_{i ≠ j} K_ij G_ij (1 − ⟨y_i, y_j⟩) / (L·N)` with `K` the block's affinity,
//!   `G` a Gaussian window on the attention grid, `y` the softmax bilinearly down-sampled to
//!   the grid and `g_n = 0` for a sample whose scribbles hold a single class (the reference's
//!   `is_exclude_sc`, which zeroes such a sample's kernel).
//! - **Full supervision** (WSL4MIS `train_fully_supervised_2D.py`): `½(CE + Dice)`, the Dice
//!   loss being `mean_c 1 − (2Σ p t + ε)/(Σ p² + Σ t² + ε)` over all classes, ε = 1e-5.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use rayon::prelude::*;

/// Scribble value of an unannotated pixel.
pub const UNLABELED: u8 = 4;

/// One-hot `[N, C, H, W]` of `labels` (row-major `N·H·W`), zero where the label is `ignore`.
fn one_hot(
    labels: &[u8],
    dims: [usize; 4],
    ignore: Option<u8>,
    device: &Device,
) -> (Tensor<4>, usize) {
    let [n, c, h, w] = dims;
    let hw = h * w;
    let mut v = vec![0f32; n * c * hw];
    let mut count = 0;
    for s in 0..n {
        for p in 0..hw {
            let l = labels[s * hw + p];
            if Some(l) == ignore || usize::from(l) >= c {
                continue;
            }
            v[(s * c + usize::from(l)) * hw + p] = 1.0;
            count += 1;
        }
    }
    (Tensor::from_data(TensorData::new(v, dims), device), count)
}

/// Partial cross-entropy of `logits: [N, C, H, W]` against `scribble` (`N·H·W`, value
/// [`UNLABELED`] = not annotated): the mean over annotated pixels (0 when there are none).
pub fn partial_ce(logits: Tensor<4>, scribble: &[u8]) -> Tensor<1> {
    let dims = logits.dims();
    let (t, count) = one_hot(scribble, dims, Some(UNLABELED), &logits.device());
    let nll = -(log_softmax(logits, 1) * t).sum();
    nll / count.max(1) as f64
}

/// Cross-entropy (mean over every pixel) of `logits` against dense `label`.
pub fn cross_entropy(logits: Tensor<4>, label: &[u8]) -> Tensor<1> {
    let dims = logits.dims();
    let (t, count) = one_hot(label, dims, None, &logits.device());
    -(log_softmax(logits, 1) * t).sum() / count.max(1) as f64
}

/// WSL4MIS's Dice loss on softmax probabilities (every class, background included).
pub fn dice_loss(logits: Tensor<4>, label: &[u8]) -> Tensor<1> {
    let [n, c, h, w] = logits.dims();
    let (t, _) = one_hot(label, [n, c, h, w], None, &logits.device());
    let p = softmax(logits, 1);
    let smooth = 1e-5;
    // Per class: sums over samples and pixels.
    let per = |x: Tensor<4>| x.swap_dims(0, 1).reshape([c, n * h * w]).sum_dim(1);
    let inter = per(p.clone() * t.clone());
    let zs = per(p.clone() * p);
    let ys = per(t.clone() * t);
    let dice = (inter * 2.0 + smooth) / (zs + ys + smooth);
    (dice.neg() + 1.0).mean()
}

/// The fully supervised loss `½(CE + Dice)`.
pub fn full_supervision(logits: Tensor<4>, label: &[u8]) -> Tensor<1> {
    (cross_entropy(logits.clone(), label) + dice_loss(logits, label)) * 0.5
}

/// A loss computed outside autodiff, handed back as `⟨x, g⟩ + (value − ⟨x, g⟩)`: the value is
/// exact and the gradient with respect to `x` is `g` (first order only).
fn surrogate<const D: usize>(x: Tensor<D>, value: f64, grad: Vec<f32>) -> Tensor<1> {
    let dims = x.dims();
    let device = x.device();
    let g = Tensor::<D>::from_data(TensorData::new(grad, dims), &device);
    let lin = (x * g).sum();
    let lin_value = f64::from(ferrolab_core::nn::to_vec_f32(lin.clone().detach())[0]);
    lin + (value - lin_value)
}

/// Gated CRF loss parameters (one kernel: RGB + XY).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatedCrf {
    /// Window radius `r`: `(2r+1)² − 1` neighbours.
    pub radius: usize,
    pub sigma_xy: f64,
    pub sigma_rgb: f64,
    /// Kernel weight `w`.
    pub weight: f64,
}

impl GatedCrf {
    /// Value and gradient `∂L/∂y` of the loss for probabilities `y` (`[n, c, h, w]`
    /// row-major), one-channel `image` (`[n, h, w]`) and destination gate `mask` (`[n, h, w]`,
    /// 1 = the pixel receives the loss).
    pub fn value_and_grad(
        &self,
        y: &[f32],
        image: &[f32],
        mask: &[f32],
        [n, c, h, w]: [usize; 4],
    ) -> (f64, Vec<f32>) {
        let hw = h * w;
        let r = self.radius as isize;
        let mut offsets = Vec::new();
        for dy in -r..=r {
            for dx in -r..=r {
                if dy == 0 && dx == 0 {
                    continue;
                }
                let d2 = (dy * dy + dx * dx) as f64;
                offsets.push((
                    dy,
                    dx,
                    self.weight * (-0.5 * d2 / (self.sigma_xy * self.sigma_xy)).exp(),
                ));
            }
        }
        let inv_rgb = 0.5 / (self.sigma_rgb * self.sigma_rgb);
        let denom = mask.iter().map(|&m| f64::from(m)).sum::<f64>().max(1.0);
        let mut grad = vec![0f32; y.len()];
        // One task per sample and row: each writes only its own pixels' gradients.
        let rows: Vec<(usize, usize)> = (0..n)
            .flat_map(|s| (0..h).map(move |row| (s, row)))
            .collect();
        let results: Vec<(f64, Vec<f64>)> = rows
            .par_iter()
            .map(|&(s, row)| {
                let ys = &y[s * c * hw..(s + 1) * c * hw];
                let im = &image[s * hw..(s + 1) * hw];
                let mk = &mask[s * hw..(s + 1) * hw];
                let mut value = 0.0;
                let mut g = vec![0f64; c * w];
                for col in 0..w {
                    let i = row * w + col;
                    let mi = f64::from(mk[i]);
                    for &(dy, dx, kxy) in &offsets {
                        let (ry, cx) = (row as isize + dy, col as isize + dx);
                        if ry < 0 || cx < 0 || ry >= h as isize || cx >= w as isize {
                            continue;
                        }
                        let j = ry as usize * w + cx as usize;
                        let mj = f64::from(mk[j]);
                        if mi == 0.0 && mj == 0.0 {
                            continue;
                        }
                        let di = f64::from(im[i] - im[j]);
                        let k = kxy * (-di * di * inv_rgb).exp();
                        let mut dot = 0.0;
                        for ch in 0..c {
                            let yj = f64::from(ys[ch * hw + j]);
                            dot += f64::from(ys[ch * hw + i]) * yj;
                            g[ch * w + col] -= k * (mi + mj) * yj;
                        }
                        value += mi * k * (1.0 - dot);
                    }
                }
                (value, g)
            })
            .collect();
        let mut value = 0.0;
        for (&(s, row), (v, g)) in rows.iter().zip(results) {
            value += v;
            for ch in 0..c {
                for col in 0..w {
                    grad[(s * c + ch) * hw + row * w + col] = (g[ch * w + col] / denom) as f32;
                }
            }
        }
        (value / denom, grad)
    }

    /// The loss of probabilities `y: [N, C, H, W]` (autodiff flows into `y`), for `image`
    /// (`N·H·W` intensities in [0, 1]) and `scribble` (`N·H·W`; the gate is "not annotated").
    pub fn loss(&self, y: Tensor<4>, image: &[f32], scribble: &[u8]) -> Tensor<1> {
        let dims = y.dims();
        let yv = ferrolab_core::nn::to_vec_f32(y.clone().detach());
        let mask: Vec<f32> = scribble
            .iter()
            .map(|&s| f32::from(u8::from(s == UNLABELED)))
            .collect();
        let (value, grad) = self.value_and_grad(&yv, image, &mask, dims);
        surrogate(y, value, grad)
    }
}

/// The attentive loss's Gaussian window on an `h × w` attention grid: `G_ij = exp(−|p_i −
/// p_j|²/2σ²)` for `j ≠ i` in the `(2r+1)²` square around `i` (the reference's
/// `pre_compute_xy_mask` times `1 − I`), stored as its offsets. Symmetric:
/// `j` is in `i`'s window exactly when `i` is in `j`'s, with the same weight.
#[derive(Debug, Clone, PartialEq)]
pub struct AttnWindow {
    h: usize,
    w: usize,
    /// `(dy, dx, G)` of every neighbour, the centre left out.
    offsets: Vec<(isize, isize, f32)>,
}

impl AttnWindow {
    /// The window of radius `radius` and spread `sigma` on an `h × w` grid.
    pub fn new(h: usize, w: usize, radius: usize, sigma: f64) -> AttnWindow {
        let r = radius as isize;
        let mut offsets = Vec::new();
        for dy in -r..=r {
            for dx in -r..=r {
                if dy == 0 && dx == 0 {
                    continue;
                }
                let d2 = (dy * dy + dx * dx) as f64;
                offsets.push((dy, dx, (-0.5 * d2 / (sigma * sigma)).exp() as f32));
            }
        }
        AttnWindow { h, w, offsets }
    }

    /// Grid cells `L = h·w`.
    pub fn cells(&self) -> usize {
        self.h * self.w
    }

    /// Neighbours per cell, `(2r+1)² − 1` (fewer exist at the grid's border).
    pub fn pairs(&self) -> usize {
        self.offsets.len()
    }

    /// The `p`-th neighbour of cell `i` and its weight, `None` outside the grid.
    pub fn neighbour(&self, i: usize, p: usize) -> Option<(usize, f32)> {
        let (dy, dx, g) = *self.offsets.get(p)?;
        let (h, w) = (self.h as isize, self.w as isize);
        let (y, x) = ((i / self.w) as isize + dy, (i % self.w) as isize + dx);
        (y >= 0 && x >= 0 && y < h && x < w).then(|| ((y * w + x) as usize, g))
    }

    /// The window as a dense `[1, L, L]` tensor (0 off the window and on the diagonal).
    pub fn dense(&self, device: &Device) -> Tensor<3> {
        let l = self.cells();
        let mut v = vec![0f32; l * l];
        for i in 0..l {
            for p in 0..self.pairs() {
                if let Some((j, g)) = self.neighbour(i, p) {
                    v[i * l + j] = g;
                }
            }
        }
        Tensor::from_data(TensorData::new(v, [1, l, l]), device)
    }
}

/// [`AttnWindow`] on an `h × w` grid as a dense `[1, L, L]` tensor, the form
/// [`attentive_loss`] takes.
pub fn gaussian_window(
    h: usize,
    w: usize,
    radius: usize,
    sigma: f64,
    device: &Device,
) -> Tensor<3> {
    AttnWindow::new(h, w, radius, sigma).dense(device)
}

/// Bilinear down-sampling by an integer `factor` with `align_corners=False` (PyTorch's
/// `F.interpolate(..., mode="bilinear")` to `H/factor × W/factor`): output cell `o` samples
/// the input at `factor·o + (factor−1)/2`, i.e. the mean of the two middle pixels of its block
/// on each axis for an even factor.
pub fn downsample(y: Tensor<4>, factor: usize) -> Tensor<4> {
    if factor == 1 {
        return y;
    }
    let [n, c, h, w] = y.dims();
    let (ho, wo) = (h / factor, w / factor);
    let blocks = y.reshape([n * c * ho, factor, wo, factor]);
    let mid = if factor.is_multiple_of(2) {
        blocks
            .narrow(1, factor / 2 - 1, 2)
            .narrow(3, factor / 2 - 1, 2)
    } else {
        blocks.narrow(1, factor / 2, 1).narrow(3, factor / 2, 1)
    };
    mid.mean_dim(1).mean_dim(3).reshape([n, c, ho, wo])
}

/// The attentive similarity loss of affinity `k: [N, L, L]` and grid probabilities
/// `y: [N, C, h, w]` (`L = h·w`), with `window` from [`gaussian_window`] and `multi[n]` false
/// for the single-class samples that are left out.
pub fn attentive_loss(k: Tensor<3>, y: Tensor<4>, window: Tensor<3>, multi: &[bool]) -> Tensor<1> {
    let [n, c, h, w] = y.dims();
    let l = h * w;
    let device = k.device();
    let gate: Vec<f32> = multi.iter().map(|&m| f32::from(u8::from(m))).collect();
    let gate = Tensor::<3>::from_data(TensorData::new(gate, [n, 1, 1]), &device);
    let m = k * window * gate;
    let yt = y.reshape([n, c, l]).swap_dims(1, 2);
    let pair = (m.clone().matmul(yt.clone()) * yt).sum();
    (m.sum() - pair) / (l * n) as f64
}

/// What [`affinity_attentive_loss`] returns.
#[derive(Debug)]
pub struct AffinityLoss {
    /// The attentive loss (autodiff flows into `S`, `(a, b)` and `y`).
    pub loss: Tensor<1>,
    /// With `keep_k`: `K_ij` of every cell `i` and window neighbour `p`, `[N, L, P]` in
    /// [`AttnWindow::neighbour`]'s order, NaN for neighbours outside the grid and for the
    /// samples left out (`multi[n]` false).
    pub k: Option<Vec<f32>>,
}

/// The affinity `K = σ(a·(S + Sᵀ) + b)` and [`attentive_loss`] of it in one pass over the
/// window's pairs, for `s = softmax(A)` (`[N, L, L]`, the block's attention probabilities on
/// the unscaled logits), `ab = (a, b)`, grid probabilities `y: [N, C, h, w]`, and the same
/// gate `multi`: the same value and gradients as `attentive_loss(block.affinity(A), y, …)`.
///
/// Why: only the `(2r+1)² − 1` window pairs of each of the `L` rows enter the loss, but the
/// composed form builds `S + Sᵀ`, `K`, `K ⊙ G ⊙ g` densely (`N·L²` = 8M values at the `paper`
/// preset) and records each op for the backward pass (this function took the `paper` step
/// from 645 to 506 ms, `examples/attenscribble_step_bench.rs`). Here `K` and
/// the loss are computed on the pairs only (in f64), and the gradients are handed to autodiff
/// as a first-order surrogate — `∂L/∂S_ij = 2a·∂L/∂z_ij` (the pair `(i, j)` and its mirror
/// `(j, i)` share `K`, `G` and `⟨y_i, y_j⟩`), `∂L/∂y_i = −2 Σ_j g G_ij K_ij y_j / (L·N)`.
/// Rows are computed in parallel and summed in row order, so the result does not depend on
/// the thread count.
///
/// # Panics
/// When the shapes disagree with each other or with the window (a bug of the caller).
pub fn affinity_attentive_loss(
    s: Tensor<3>,
    ab: Tensor<1>,
    y: Tensor<4>,
    window: &AttnWindow,
    multi: &[bool],
    keep_k: bool,
) -> AffinityLoss {
    let [n, c, h, w] = y.dims();
    let l = h * w;
    assert_eq!(
        s.dims(),
        [n, l, l],
        "affinity_attentive_loss: S is not [N, L, L]"
    );
    assert_eq!(
        window.cells(),
        l,
        "affinity_attentive_loss: window of another grid"
    );
    assert_eq!(
        multi.len(),
        n,
        "affinity_attentive_loss: one gate per sample"
    );
    let sv = ferrolab_core::nn::to_vec_f32(s.clone().detach());
    let abv = ferrolab_core::nn::to_vec_f32(ab.clone().detach());
    let yv = ferrolab_core::nn::to_vec_f32(y.clone().detach());
    let (a, b) = (f64::from(abv[0]), f64::from(abv[1]));
    let pairs = window.pairs();
    let norm = (l * n) as f64;
    struct Row {
        value: f64,
        da: f64,
        db: f64,
        dy: Vec<f64>,
    }
    let mut gs = vec![0f32; n * l * l];
    let mut kp = if keep_k {
        vec![f32::NAN; n * l * pairs]
    } else {
        Vec::new()
    };
    let kp_rows: Vec<Option<&mut [f32]>> = if keep_k {
        kp.chunks_mut(pairs).map(Some).collect()
    } else {
        (0..n * l).map(|_| None).collect()
    };
    let rows: Vec<Row> = gs
        .par_chunks_mut(l)
        .zip(kp_rows)
        .enumerate()
        .map(|(row, (gs_row, k_row))| {
            let (sample, i) = (row / l, row % l);
            let mut out = Row {
                value: 0.0,
                da: 0.0,
                db: 0.0,
                dy: vec![0.0; c],
            };
            if !multi[sample] {
                return out;
            }
            let sm = &sv[sample * l * l..(sample + 1) * l * l];
            let ys = &yv[sample * c * l..(sample + 1) * c * l];
            let mut k_row = k_row;
            for p in 0..pairs {
                let Some((j, g)) = window.neighbour(i, p) else {
                    continue;
                };
                let g = f64::from(g);
                let sym = f64::from(sm[i * l + j]) + f64::from(sm[j * l + i]);
                let k = 1.0 / (1.0 + (-(a * sym + b)).exp());
                let dot: f64 = (0..c)
                    .map(|ch| f64::from(ys[ch * l + i]) * f64::from(ys[ch * l + j]))
                    .sum();
                out.value += g * k * (1.0 - dot);
                let dz = g * (1.0 - dot) / norm * k * (1.0 - k);
                out.da += dz * sym;
                out.db += dz;
                gs_row[j] = (2.0 * a * dz) as f32;
                let coef = 2.0 * g * k / norm;
                for (ch, d) in out.dy.iter_mut().enumerate() {
                    *d -= coef * f64::from(ys[ch * l + j]);
                }
                if let Some(kr) = k_row.as_deref_mut() {
                    kr[p] = k as f32;
                }
            }
            out
        })
        .collect();
    let (mut value, mut da, mut db) = (0.0, 0.0, 0.0);
    let mut gy = vec![0f32; n * c * l];
    for (row, r) in rows.iter().enumerate() {
        let (sample, i) = (row / l, row % l);
        value += r.value;
        da += r.da;
        db += r.db;
        for (ch, d) in r.dy.iter().enumerate() {
            gy[(sample * c + ch) * l + i] = *d as f32;
        }
    }
    let device = y.device();
    let g_s = Tensor::<3>::from_data(TensorData::new(gs, [n, l, l]), &device);
    let g_ab = Tensor::<1>::from_data(TensorData::new(vec![da as f32, db as f32], [2]), &device);
    let g_y = Tensor::<4>::from_data(TensorData::new(gy, [n, c, h, w]), &device);
    let lin = (s * g_s).sum() + (ab * g_ab).sum() + (y * g_y).sum();
    let lin_value = f64::from(ferrolab_core::nn::to_vec_f32(lin.clone().detach())[0]);
    AffinityLoss {
        loss: lin + (value / norm - lin_value),
        k: keep_k.then_some(kp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::backend::{exclusive_rng, train_device};
    use ferrolab_core::nn::gradcheck::check_input_gradient;

    /// The 4×4 case worked by hand in the module's test notes: left half dark, right half
    /// bright (σ_rgb 0.1 makes cross-edge kernels ~e⁻⁵⁰), σ_xy huge (spatial factor 1),
    /// radius 1. Left half all class 0, right half class 1 in rows 0–1 and class 2 in rows
    /// 2–3. Ordered 8-neighbour pairs on the right with different classes: 8 (each of the 4
    /// cells next to the row-1/row-2 border sees 2). Gating off pixel (2, 2) removes its 2
    /// pairs and one pixel from the denominator: L = 6/15 = 0.4.
    #[test]
    fn gated_crf_matches_the_hand_computed_4x4_case() {
        let (n, c, h, w) = (1, 3, 4, 4);
        let image: Vec<f32> = (0..16).map(|i| if i % 4 < 2 { 0.0 } else { 1.0 }).collect();
        let class = |p: usize| {
            let (r, col) = (p / 4, p % 4);
            if col < 2 {
                0
            } else if r < 2 {
                1
            } else {
                2
            }
        };
        let mut y = vec![0f32; c * 16];
        for p in 0..16 {
            y[class(p) * 16 + p] = 1.0;
        }
        let crf = GatedCrf {
            radius: 1,
            sigma_xy: 1e4,
            sigma_rgb: 0.1,
            weight: 1.0,
        };
        let ones = vec![1f32; 16];
        let (v, _) = crf.value_and_grad(&y, &image, &ones, [n, c, h, w]);
        assert!((v - 8.0 / 16.0).abs() < 1e-6, "{v}");
        let mut mask = ones.clone();
        mask[2 * 4 + 2] = 0.0;
        let (v, g) = crf.value_and_grad(&y, &image, &mask, [n, c, h, w]);
        assert!((v - 0.4).abs() < 1e-6, "{v}");
        // ∂L/∂y at pixel (1, 2), class 1: its right-half neighbours of class 1 are (0,2),
        // (0,3), (1,3), each with m_i + m_j = 2: −(3·2)/15.
        let gi = g[16 + 4 + 2];
        assert!((f64::from(gi) + 0.4).abs() < 1e-6, "{gi}");
        // Pixel (2, 2) is gated off as destination but still a source for (1, 2), (1, 3),
        // (2, 3), (3, 2), (3, 3) …: its class-2 gradient counts m_j only for neighbours of
        // class 2: (2,3), (3,2), (3,3) → −3/15.
        let gi = g[2 * 16 + 2 * 4 + 2];
        assert!((f64::from(gi) + 0.2).abs() < 1e-6, "{gi}");
        // The radius grows the window: radius 0 is nothing at all.
        let crf0 = GatedCrf { radius: 0, ..crf };
        assert_eq!(crf0.value_and_grad(&y, &image, &ones, [n, c, h, w]).0, 0.0);
    }

    #[test]
    fn gated_crf_gradient_matches_finite_differences() {
        let _rng = exclusive_rng();
        let (h, w) = (5, 6);
        let image: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i * 7) % 11) as f32 / 10.0)
            .collect();
        let scribble: Vec<u8> = (0..2 * h * w)
            .map(|i| if i % 5 == 0 { 1 } else { UNLABELED })
            .collect();
        let crf = GatedCrf {
            radius: 2,
            sigma_xy: 2.0,
            sigma_rgb: 0.5,
            weight: 1.0,
        };
        check_input_gradient(
            |z: Tensor<4>| crf.loss(softmax(z, 1), &image, &scribble).reshape([1]),
            [2, 3, h, w],
            61,
        );
    }

    #[test]
    fn partial_ce_counts_scribbled_pixels_only() {
        let dev = train_device();
        // Two pixels, two classes; pixel 1 unannotated.
        let logits = Tensor::<4>::from_data(
            TensorData::new(vec![0.0f32, 2.0, 0.0, -1.0], [1, 2, 1, 2]),
            &dev,
        );
        let v = ferrolab_core::nn::to_vec_f32(partial_ce(logits, &[1, UNLABELED]))[0];
        // −log softmax([0, 0])[1] = ln 2.
        assert!((f64::from(v) - 2f64.ln()).abs() < 1e-6, "{v}");
        let _rng = exclusive_rng();
        let scribble = [0u8, 4, 2, 1, 4, 4, 0, 3, 4, 4, 4, 2];
        check_input_gradient(
            |z: Tensor<4>| partial_ce(z, &scribble).reshape([1]),
            [2, 4, 2, 3],
            62,
        );
    }

    #[test]
    fn full_supervision_gradient_matches_finite_differences() {
        let _rng = exclusive_rng();
        let label = [0u8, 1, 2, 3, 1, 1, 0, 3, 2, 2, 0, 0];
        check_input_gradient(
            |z: Tensor<4>| full_supervision(z, &label).reshape([1]),
            [2, 4, 2, 3],
            63,
        );
    }

    #[test]
    fn downsample_is_bilinear_without_corner_alignment() {
        let dev = train_device();
        let v: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 8, 8]), &dev);
        // Factor 4: cell (0, 0) samples (1.5, 1.5) = mean of rows 1–2, cols 1–2 = 13.5.
        let d = ferrolab_core::nn::to_vec_f32(downsample(x, 4));
        assert_eq!(d, vec![13.5, 17.5, 45.5, 49.5]);
    }

    #[test]
    fn attentive_loss_by_hand_and_gradients() {
        let dev = train_device();
        // 1×2 grid: L = 2, window weight e^{-1/2} between the two cells (σ 1, radius 1).
        let win = gaussian_window(1, 2, 1, 1.0, &dev);
        let g = (-0.5f64).exp();
        let k = Tensor::<3>::from_data(
            TensorData::new(vec![0.9f32, 0.3, 0.5, 0.7], [1, 2, 2]),
            &dev,
        );
        // y_0 = (1, 0), y_1 = (0.25, 0.75): ⟨y_0, y_1⟩ = 0.25.
        let y = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 0.25, 0.0, 0.75], [1, 2, 1, 2]),
            &dev,
        );
        let v = ferrolab_core::nn::to_vec_f32(attentive_loss(
            k.clone(),
            y.clone(),
            win.clone(),
            &[true],
        ))[0];
        let want = (0.3 + 0.5) * g * (1.0 - 0.25) / 2.0;
        assert!((f64::from(v) - want).abs() < 1e-6, "{v} {want}");
        let v = ferrolab_core::nn::to_vec_f32(attentive_loss(k, y, win, &[false]))[0];
        assert_eq!(v, 0.0);

        let _rng = exclusive_rng();
        let (h, w) = (2, 3);
        let win = gaussian_window(h, w, 1, 1.5, &train_device());
        let dev = train_device();
        dev.seed(64);
        let kfix = Tensor::<3>::random([2, 6, 6], burn::tensor::Distribution::Default, &dev);
        let yfix = softmax(
            Tensor::<4>::random(
                [2, 3, h, w],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &dev,
            ),
            1,
        );
        // Through the probabilities …
        check_input_gradient(
            |z: Tensor<4>| {
                attentive_loss(kfix.clone(), softmax(z, 1), win.clone(), &[true, true]).reshape([1])
            },
            [2, 3, h, w],
            65,
        );
        // … and through the affinity from unscaled attention logits.
        let block = super::super::model::SpatialAttention::new(4, 2, &dev);
        check_input_gradient(
            |a: Tensor<3>| {
                attentive_loss(block.affinity(a), yfix.clone(), win.clone(), &[true, false])
                    .reshape([1])
            },
            [2, 6, 6],
            66,
        );
    }

    /// The windowed form equals the dense composition it replaces in training — value, and
    /// gradients to the attention logits, `(a, b)` and the grid probabilities — on a 3×4 grid
    /// (border cells with fewer neighbours) with one sample gated off; and its per-pair `K`
    /// is the dense affinity's on the window, NaN elsewhere.
    #[test]
    fn windowed_affinity_loss_equals_the_dense_composition() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(71);
        let (n, c, h, w) = (3, 3, 3, 4);
        let l = h * w;
        let block = super::super::model::SpatialAttention::new(4, 2, &dev).with_affine(1.7, -0.4);
        let logits = Tensor::<3>::random(
            [n, l, l],
            burn::tensor::Distribution::Normal(0.0, 2.0),
            &dev,
        );
        let z = Tensor::<4>::random(
            [n, c, h, w],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let multi = [true, false, true];
        let win = AttnWindow::new(h, w, 1, 1.5);
        let run = |fused: bool| {
            let a = logits.clone().require_grad();
            let zz = z.clone().require_grad();
            let (s, ab) = block.affinity_inputs(a.clone());
            let ab = ab.require_grad();
            let y = softmax(zz.clone(), 1);
            let (loss, k) = if fused {
                let out = affinity_attentive_loss(s, ab.clone(), y, &win, &multi, true);
                (out.loss, out.k)
            } else {
                let sym = s.clone() + s.swap_dims(1, 2);
                let a_ = ab.clone().slice(0..1).reshape([1, 1, 1]);
                let b_ = ab.clone().slice(1..2).reshape([1, 1, 1]);
                let k = burn::tensor::activation::sigmoid(sym * a_ + b_);
                let kv = ferrolab_core::nn::to_vec_f32(k.clone().detach());
                (attentive_loss(k, y, win.dense(&dev), &multi), Some(kv))
            };
            let value = ferrolab_core::nn::to_vec_f32(loss.clone().detach())[0];
            let grads = loss.backward();
            let grad = |t: Option<Vec<f32>>| t.unwrap_or_else(|| panic!("no gradient"));
            (
                value,
                grad(a.grad(&grads).map(ferrolab_core::nn::to_vec_f32)),
                grad(ab.grad(&grads).map(ferrolab_core::nn::to_vec_f32)),
                grad(zz.grad(&grads).map(ferrolab_core::nn::to_vec_f32)),
                k.unwrap_or_default(),
            )
        };
        let (v1, ga1, gab1, gz1, kp) = run(true);
        // Without the per-pair K the loss is the same and nothing else is kept.
        let (s, ab) = block.affinity_inputs(logits.clone());
        let bare = affinity_attentive_loss(s, ab, softmax(z.clone(), 1), &win, &multi, false);
        assert!(bare.k.is_none());
        assert_eq!(ferrolab_core::nn::to_vec_f32(bare.loss)[0], v1);
        let (v0, ga0, gab0, gz0, kd) = run(false);
        assert!((v1 - v0).abs() <= 1e-6 * v0.abs().max(1.0), "{v1} vs {v0}");
        let close = |x: &[f32], y: &[f32], what: &str| {
            let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            for (i, (a, b)) in x.iter().zip(y).enumerate() {
                assert!((a - b).abs() <= 1e-4 * scale, "{what}[{i}]: {a} vs {b}");
            }
        };
        close(&ga1, &ga0, "dA");
        close(&gab1, &gab0, "d(a, b)");
        close(&gz1, &gz0, "dz");
        assert!(ga1.iter().any(|v| *v != 0.0) && gab1.iter().all(|v| *v != 0.0));
        let p = win.pairs();
        assert_eq!(kp.len(), n * l * p);
        for s in 0..n {
            for i in 0..l {
                for q in 0..p {
                    let got = kp[(s * l + i) * p + q];
                    match (multi[s], win.neighbour(i, q)) {
                        (true, Some((j, _))) => {
                            let want = kd[(s * l + i) * l + j];
                            assert!((got - want).abs() < 1e-6, "K[{s},{i},{j}] {got} vs {want}");
                        }
                        _ => assert!(got.is_nan()),
                    }
                }
            }
        }
    }
}
