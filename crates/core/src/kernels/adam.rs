//! Adam on plain slices, dense or lazy ("sparse", as PyTorch's `SparseAdam`), for parameters
//! trained outside burn's optimiser: word vectors and the text convolution's filters, whose
//! gradients come from the hand-written convolution backward.
//!
//! Lazy Adam updates only the rows a batch touched, and their moments. Dense Adam would read
//! and write every one of the |V|·E weights and both moments each step (5.6 M of each for MR
//! at E = 300) although a batch touches ~2% of the rows; on MR that was a third of the step
//! time. Rows absent from a batch keep their moments unchanged instead of decaying them, which
//! is the one difference from dense Adam: a row touched at every step follows dense Adam
//! exactly (tested below). Reference path: burn's `Adam` (same constants, tested below).

/// burn's `AdamConfig` defaults, used for the other weights of the same models.
pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-5;

/// One Adam update of `w` with gradient `g` and moments `m`, `v` (bias corrections `c1`, `c2`).
fn adam_update(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, c1: f32, c2: f32) {
    for k in 0..w.len() {
        m[k] = BETA1 * m[k] + (1.0 - BETA1) * g[k];
        v[k] = BETA2 * v[k] + (1.0 - BETA2) * g[k] * g[k];
        w[k] -= lr * (m[k] / c1) / ((v[k] / c2).sqrt() + EPS);
    }
}

/// A parameter (row-major, rows of `dim` values) with its Adam moments and step count.
#[derive(Debug, Clone)]
pub struct AdamParam {
    /// The weights.
    pub w: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    dim: usize,
    t: i32,
}

impl AdamParam {
    /// Zero moments for `w`, read as rows of `dim` values (`dim = 1`: dense updates only).
    pub fn new(w: Vec<f32>, dim: usize) -> Self {
        let n = w.len();
        AdamParam {
            w,
            m: vec![0.0; n],
            v: vec![0.0; n],
            dim: dim.max(1),
            t: 0,
        }
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    fn corrections(&mut self) -> (f32, f32) {
        self.t += 1;
        (1.0 - BETA1.powi(self.t), 1.0 - BETA2.powi(self.t))
    }

    /// The rows `ids`, concatenated.
    pub fn rows(&self, ids: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * self.dim);
        for &i in ids {
            out.extend_from_slice(&self.w[i * self.dim..(i + 1) * self.dim]);
        }
        out
    }

    /// Lazy Adam on the distinct rows `ids` with their gradients `grad` (`ids.len() × dim`).
    pub fn update_rows(&mut self, ids: &[usize], grad: &[f32], lr: f64) {
        let (c1, c2) = self.corrections();
        let d = self.dim;
        for (r, &i) in ids.iter().enumerate() {
            let range = i * d..(i + 1) * d;
            adam_update(
                &mut self.w[range.clone()],
                &mut self.m[range.clone()],
                &mut self.v[range],
                &grad[r * d..(r + 1) * d],
                lr as f32,
                c1,
                c2,
            );
        }
    }

    /// Dense Adam on every weight.
    pub fn update(&mut self, grad: &[f32], lr: f64) {
        let (c1, c2) = self.corrections();
        adam_update(
            &mut self.w,
            &mut self.m,
            &mut self.v,
            grad,
            lr as f32,
            c1,
            c2,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::train_device;
    use crate::kernels::hash::splitmix64;
    use crate::nn::{float_tensor, to_vec_f32};
    use burn::module::{Module, Param};
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::prelude::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| (splitmix64(&mut s) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[derive(Module, Debug)]
    struct Weights {
        w: Param<Tensor<2>>,
    }

    #[test]
    fn dense_adam_matches_burns_adam() {
        let _rng = crate::backend::exclusive_rng();
        let dev = train_device();
        let (rows, dim, lr) = (5, 3, 0.01);
        let w0 = values(rows * dim, 1);
        let mut ours = AdamParam::new(w0.clone(), dim);
        let mut model = Weights {
            w: Param::from_tensor(float_tensor(w0, [rows, dim], &dev).require_grad()),
        };
        let mut optim = AdamConfig::new().init();
        for step in 0..4 {
            let g = values(rows * dim, 10 + step);
            // d(Σ w ⊙ g)/dw = g: burn sees the same gradient as ours.
            let loss = (model.w.val() * float_tensor(g.clone(), [rows, dim], &dev)).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            ours.update(&g, lr);
            for (a, b) in ours.w.iter().zip(to_vec_f32(model.w.val())) {
                assert!((a - b).abs() < 1e-6, "step {step}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn lazy_adam_equals_dense_adam_on_touched_rows_and_leaves_the_others() {
        let (rows, dim, lr) = (6, 4, 0.05);
        let w0 = values(rows * dim, 2);
        let mut lazy = AdamParam::new(w0.clone(), dim);
        let mut dense = AdamParam::new(w0.clone(), dim);
        // Rows 1 and 4 are in every batch; row 2 only in the first; rows 0, 3, 5 never.
        let batches: [&[usize]; 3] = [&[4, 1, 2], &[1, 4], &[4, 1]];
        for (step, ids) in batches.iter().enumerate() {
            let g = values(ids.len() * dim, 20 + step as u64);
            lazy.update_rows(ids, &g, lr);
            // Dense Adam sees zero gradient on every row the batch did not touch.
            let mut full = vec![0.0; rows * dim];
            for (r, &i) in ids.iter().enumerate() {
                full[i * dim..(i + 1) * dim].copy_from_slice(&g[r * dim..(r + 1) * dim]);
            }
            dense.update(&full, lr);
        }
        let row = |p: &AdamParam, i: usize| p.rows(&[i]);
        for i in [1, 4] {
            assert_eq!(row(&lazy, i), row(&dense, i), "row {i} touched every step");
        }
        for i in [0, 3, 5] {
            assert_eq!(
                row(&lazy, i),
                w0[i * dim..(i + 1) * dim],
                "row {i} never touched"
            );
            assert_eq!(
                row(&dense, i),
                row(&lazy, i),
                "zero gradient from zero moments"
            );
        }
        // Row 2: dense Adam keeps moving it on its decaying moments, lazy Adam does not.
        assert_ne!(row(&lazy, 2), row(&dense, 2));
        assert_ne!(row(&lazy, 2), w0[2 * dim..3 * dim]);
    }
}
