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

/// The attentive loss's Gaussian window on an `h × w` grid as a dense `[1, L, L]` tensor:
/// `G_ij = exp(−|p_i − p_j|²/2σ²)` for `j` in the `(2r+1)²` square around `i`, 0 elsewhere and
/// on the diagonal (the reference's `pre_compute_xy_mask` times `1 − I`).
pub fn gaussian_window(
    h: usize,
    w: usize,
    radius: usize,
    sigma: f64,
    device: &Device,
) -> Tensor<3> {
    let l = h * w;
    let mut v = vec![0f32; l * l];
    let r = radius as isize;
    for i in 0..l {
        let (y, x) = ((i / w) as isize, (i % w) as isize);
        for dy in -r..=r {
            for dx in -r..=r {
                let (yy, xx) = (y + dy, x + dx);
                if (dy == 0 && dx == 0) || yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize
                {
                    continue;
                }
                let d2 = (dy * dy + dx * dx) as f64;
                v[i * l + yy as usize * w + xx as usize] =
                    (-0.5 * d2 / (sigma * sigma)).exp() as f32;
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [1, l, l]), device)
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
}
