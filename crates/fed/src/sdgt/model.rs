//! Models as flat parameter vectors: what SD-GT and its baselines move around are vectors
//! (`x`, `y`, `z`, Δ), so a model here is a function from a flat vector and a minibatch to a
//! loss and a flat gradient. Multinomial logistic regression is written by hand (the strongly
//! convex case, with an L2 term); the CNN (`cnn.rs`) wraps burn modules built from
//! `ferrolab_vision` layers behind the same trait.

use crate::params::Params;
use rayon::prelude::*;

/// Labelled feature vectors, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// `len × dim` features.
    pub x: Vec<f32>,
    /// One class per row.
    pub y: Vec<u8>,
    /// Features per row.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Samples {
    /// Rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }
    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }
}

/// A differentiable model over a flat parameter vector.
pub trait FlatModel: Send + Sync {
    /// Short name (`logreg`, `cnn`).
    fn name(&self) -> &str;
    /// Number of parameters.
    fn dim(&self) -> usize;
    /// Names and shapes; flattening it in name order gives the layout of the flat vector.
    fn template(&self) -> Params;
    /// Initial parameters.
    fn init(&self, seed: u64) -> Vec<f32>;
    /// Mean loss over the rows `idx` of `data`, writing its gradient into `grad`.
    fn loss_grad(&self, w: &[f32], data: &Samples, idx: &[usize], grad: &mut [f32]) -> f64;
    /// Mean loss and accuracy over all of `data`.
    fn evaluate(&self, w: &[f32], data: &Samples) -> (f64, f64);
}

/// Multinomial logistic regression `softmax(W x + b)` with `l2/2 ‖W‖²`; flat layout
/// `[b (classes), W (classes × dim)]` (the names `bias` < `weight` sort that way).
#[derive(Debug, Clone)]
pub struct Logistic {
    /// Input features.
    pub dim_in: usize,
    /// Classes.
    pub classes: usize,
    /// L2 weight (strong convexity).
    pub l2: f64,
}

impl Logistic {
    fn logits(&self, w: &[f32], x: &[f32], out: &mut [f32]) {
        let (b, wm) = w.split_at(self.classes);
        for k in 0..self.classes {
            let row = &wm[k * self.dim_in..(k + 1) * self.dim_in];
            out[k] = b[k] + dot(row, x);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums let the compiler vectorise without reassociation flags.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Softmax in place; returns `−log p[label]`.
fn softmax_xent(z: &mut [f32], label: usize) -> f64 {
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0f32;
    for v in z.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in z.iter_mut() {
        *v /= s;
    }
    -(z[label].max(1e-30) as f64).ln()
}

impl FlatModel for Logistic {
    fn name(&self) -> &str {
        "logreg"
    }
    fn dim(&self) -> usize {
        self.classes * (self.dim_in + 1)
    }
    fn template(&self) -> Params {
        let mut p = Params::new();
        let _ = p.insert("bias", vec![self.classes], vec![0.0; self.classes]);
        let _ = p.insert(
            "weight",
            vec![self.classes, self.dim_in],
            vec![0.0; self.classes * self.dim_in],
        );
        p
    }
    fn init(&self, _seed: u64) -> Vec<f32> {
        // Convex: the optimum does not depend on the start, and zeros make runs comparable.
        vec![0.0; self.dim()]
    }
    fn loss_grad(&self, w: &[f32], data: &Samples, idx: &[usize], grad: &mut [f32]) -> f64 {
        let k = self.classes;
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut z = vec![0f32; k];
        let mut loss = 0f64;
        let inv = 1.0 / idx.len().max(1) as f32;
        for &i in idx {
            let x = data.row(i);
            self.logits(w, x, &mut z);
            let label = data.y[i] as usize;
            loss += softmax_xent(&mut z, label);
            z[label] -= 1.0;
            let (gb, gw) = grad.split_at_mut(k);
            for c in 0..k {
                let e = z[c] * inv;
                gb[c] += e;
                let row = &mut gw[c * self.dim_in..(c + 1) * self.dim_in];
                for (g, xv) in row.iter_mut().zip(x) {
                    *g += e * xv;
                }
            }
        }
        let mut reg = 0f64;
        if self.l2 > 0.0 {
            let l2 = self.l2 as f32;
            for (g, wv) in grad[k..].iter_mut().zip(&w[k..]) {
                *g += l2 * wv;
                reg += (*wv as f64) * (*wv as f64);
            }
        }
        loss / idx.len().max(1) as f64 + 0.5 * self.l2 * reg
    }
    fn evaluate(&self, w: &[f32], data: &Samples) -> (f64, f64) {
        let (loss, correct) = (0..data.len())
            .into_par_iter()
            .with_min_len(256)
            .map(|i| {
                let mut z = vec![0f32; self.classes];
                self.logits(w, data.row(i), &mut z);
                let pred = argmax(&z);
                let label = data.y[i] as usize;
                (softmax_xent(&mut z, label), usize::from(pred == label))
            })
            .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let n = data.len().max(1) as f64;
        (loss / n, correct as f64 / n)
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in z.iter().enumerate() {
        if *v > z[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn logistic_gradient_matches_finite_differences() {
        let m = Logistic {
            dim_in: 5,
            classes: 3,
            l2: 0.1,
        };
        let data = Samples {
            x: (0..20)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
                .collect(),
            y: vec![0, 2, 1, 2],
            dim: 5,
            classes: 3,
        };
        let w: Vec<f32> = (0..m.dim())
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 10.0)
            .collect();
        let idx = [0, 1, 2, 3];
        let mut g = vec![0f32; m.dim()];
        m.loss_grad(&w, &data, &idx, &mut g);
        let mut scratch = vec![0f32; m.dim()];
        for j in 0..m.dim() {
            let h = 1e-2f32;
            let mut wp = w.clone();
            wp[j] += h;
            let mut wm = w.clone();
            wm[j] -= h;
            let fd = (m.loss_grad(&wp, &data, &idx, &mut scratch)
                - m.loss_grad(&wm, &data, &idx, &mut scratch))
                / (2.0 * h as f64);
            assert!(
                (fd - g[j] as f64).abs() < 2e-3,
                "param {j}: fd {fd} vs {}",
                g[j]
            );
        }
    }
}
