//! The edge's evolution-task profiler: predicted memory, accuracy gain and training time of a
//! task before it is scheduled.
//!
//! - **Memory**, analytic (AdaEvo's five terms): parameters + gradients + optimiser state
//!   (momentum: one copy) + the task's resident samples + one batch's activations and their
//!   gradients + a fixed framework workspace. Checked against the heap peak of the task's
//!   training phase (with `ferrolab_core::alloc::PeakAlloc` installed, as the `ferrolab`
//!   binary has it) plus the trained model's weights and the same workspace.
//! - **Accuracy gain**: a probe trains a copy on half the teacher-labelled frames for a few
//!   short epochs and scores the other half after each; the saturating curve
//!   `acc(e) = β₂ − 1/(β₀·e + β₁)` (Optimus' form) is fitted with β ≥ 0: for each β₂ on a grid
//!   the transformed points `1/(β₂ − acc)` are linear in `(e, 1)` and solved by exact
//!   non-negative least squares; the β₂ with the smallest residual in accuracy wins.
//! - **Time**: a two-layer network regresses the log of a task's simulated duration on the
//!   log of its FLOPs and the number of tasks it will share the edge with, trained online on
//!   completed tasks; until it has seen a few, the analytic `FLOPs ÷ throughput` stands in.

use crate::model::Mlp;
use ferrolab_vision::tiny::ConvPool;

/// Analytic training memory of an MLP with `sizes`, `samples` resident inputs of `input`
/// floats, mini-batch `batch`, `opt_copies` optimiser state copies, plus `workspace` bytes.
pub fn memory_bytes(
    sizes: &[usize],
    samples: usize,
    batch: usize,
    opt_copies: usize,
    workspace: u64,
) -> u64 {
    let params: u64 = sizes.windows(2).map(|w| (w[0] * w[1] + w[1]) as u64).sum();
    let input = sizes.first().copied().unwrap_or(0) as u64;
    let weights = 4 * params;
    let grads = 4 * params;
    let opt = 4 * params * opt_copies as u64;
    let data = samples as u64 * (4 * input + 1);
    let acts = 4 * (batch as u64) * sizes.iter().map(|s| *s as u64).sum::<u64>() * 2;
    weights + grads + opt + data + acts + workspace
}

/// [`memory_bytes`] of training `model`, its conv stem included: the stem's weights with their
/// gradients and optimiser copies, input samples of the stem's input width rather than the
/// perceptron's, and one sample's stem maps (pre-pool, pooled, and the pool's argmax indices).
/// The maps are counted once, not per batch sample as AdaEvo's activation term counts them,
/// because the trainer forms them one sample at a time; counted per batch they made the
/// prediction a third above the measured heap peak (the MLP's batch term leaves it ~9% above).
pub fn model_memory_bytes(
    model: &Mlp,
    samples: usize,
    batch: usize,
    opt_copies: usize,
    workspace: u64,
) -> u64 {
    shape_memory_bytes(
        &model.sizes,
        model.stem.as_ref(),
        samples,
        batch,
        opt_copies,
        workspace,
    )
}

/// [`model_memory_bytes`] from the architecture alone: the fully connected widths `sizes` and
/// the conv block, if any (whose weights are few). What a configuration check uses, so that it
/// allocates no model.
pub fn shape_memory_bytes(
    sizes: &[usize],
    stem: Option<&ConvPool>,
    samples: usize,
    batch: usize,
    opt_copies: usize,
    workspace: u64,
) -> u64 {
    let fc = memory_bytes(sizes, samples, batch, opt_copies, workspace);
    let Some(st) = stem else {
        return fc;
    };
    let params = st.params() as u64;
    let data = |width: usize| samples as u64 * 4 * width as u64;
    let first = sizes.first().copied().unwrap_or(0);
    (fc - data(first))
        + data(st.input_len())
        + 4 * params * (2 + opt_copies as u64)
        + 4 * (st.conv_len() + 2 * st.output_len()) as u64
}

/// Least squares `min ‖A x − b‖` with `x ≥ 0`, exact for few unknowns: every support set is
/// solved by normal equations and the best feasible solution kept (2ⁿ sets; n ≤ 6 here).
pub fn nnls(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = a.first().map_or(0, Vec::len);
    let mut best = (f64::INFINITY, vec![0.0; n]);
    for mask in 0u32..(1 << n.min(6)) {
        let cols: Vec<usize> = (0..n).filter(|j| mask & (1 << j) != 0).collect();
        let k = cols.len();
        let mut x = vec![0.0; n];
        if k > 0 {
            let mut m = vec![vec![0.0; k + 1]; k];
            for (r, row) in a.iter().enumerate() {
                for (i, &ci) in cols.iter().enumerate() {
                    for (j, &cj) in cols.iter().enumerate() {
                        m[i][j] += row[ci] * row[cj];
                    }
                    m[i][k] += row[ci] * b[r];
                }
            }
            let Some(sol) = solve(m) else { continue };
            if sol.iter().any(|v| *v < 0.0) {
                continue;
            }
            for (i, &c) in cols.iter().enumerate() {
                x[c] = sol[i];
            }
        }
        let res: f64 = a
            .iter()
            .zip(b)
            .map(|(row, bi)| {
                let p: f64 = row.iter().zip(&x).map(|(r, v)| r * v).sum();
                (p - bi) * (p - bi)
            })
            .sum();
        if res < best.0 {
            best = (res, x);
        }
    }
    best.1
}

/// Gaussian elimination with partial pivoting on an augmented `k × (k+1)` matrix.
// Row operations index two rows of the same matrix at once, which iterators cannot borrow.
#[allow(clippy::needless_range_loop)]
fn solve(mut m: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let k = m.len();
    for c in 0..k {
        let p = (c..k).max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))?;
        if m[p][c].abs() < 1e-12 {
            return None;
        }
        m.swap(c, p);
        for r in 0..k {
            if r != c {
                let f = m[r][c] / m[c][c];
                for j in c..=k {
                    m[r][j] -= f * m[c][j];
                }
            }
        }
    }
    Some((0..k).map(|i| m[i][k] / m[i][i]).collect())
}

/// The fitted accuracy–epoch curve `β₂ − 1/(β₀·e + β₁)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccuracyCurve {
    pub b0: f64,
    pub b1: f64,
    pub b2: f64,
}

impl AccuracyCurve {
    /// Predicted accuracy after `e` epochs.
    pub fn at(&self, e: f64) -> f64 {
        let d = self.b0 * e + self.b1;
        if d <= 1e-9 {
            0.0
        } else {
            (self.b2 - 1.0 / d).clamp(0.0, 1.0)
        }
    }

    /// Fits the curve to `(epoch, accuracy)` points (see the module doc).
    pub fn fit(points: &[(f64, f64)]) -> AccuracyCurve {
        let top = points.iter().fold(0f64, |a, p| a.max(p.1));
        let mut best = (
            f64::INFINITY,
            AccuracyCurve {
                b0: 0.0,
                b1: 1.0,
                b2: top,
            },
        );
        for g in 1..=60 {
            let b2 = (top + 0.005 * g as f64).min(1.0 + 1e-6);
            if b2 <= top {
                continue;
            }
            let a: Vec<Vec<f64>> = points.iter().map(|p| vec![p.0, 1.0]).collect();
            let y: Vec<f64> = points.iter().map(|p| 1.0 / (b2 - p.1)).collect();
            let x = nnls(&a, &y);
            let c = AccuracyCurve {
                b0: x[0],
                b1: x[1],
                b2,
            };
            let res: f64 = points.iter().map(|p| (c.at(p.0) - p.1).powi(2)).sum();
            if res < best.0 {
                best = (res, c);
            }
        }
        best.1
    }
}

/// One completed task as the time regressor sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeRecord {
    /// Task FLOPs.
    pub flops: f64,
    /// Tasks sharing the edge when it was admitted (itself included).
    pub concurrency: f64,
    /// Simulated duration, seconds.
    pub seconds: f64,
}

/// The two-layer time regressor (4 tanh hidden units), trained online.
#[derive(Debug, Clone)]
pub struct TimeRegressor {
    w1: [[f64; 3]; 4],
    w2: [f64; 5],
    records: Vec<TimeRecord>,
    /// Records needed before the network replaces the analytic estimate.
    pub warmup: usize,
    /// Edge throughput, FLOP per simulated second (the analytic fallback).
    pub throughput: f64,
}

impl TimeRegressor {
    /// A fresh regressor.
    pub fn new(throughput: f64) -> TimeRegressor {
        let mut w1 = [[0.0; 3]; 4];
        for (i, row) in w1.iter_mut().enumerate() {
            row[0] = 0.3 + 0.1 * i as f64;
            row[1] = 0.2 - 0.1 * i as f64;
        }
        TimeRegressor {
            w1,
            w2: [0.3, 0.3, 0.3, 0.3, 0.0],
            records: Vec::new(),
            warmup: 4,
            throughput,
        }
    }

    fn features(&self, flops: f64, conc: f64) -> [f64; 3] {
        let base = (flops / self.throughput).max(1e-6).ln();
        [base / 5.0, conc.max(1.0).ln(), 1.0]
    }

    fn net(&self, x: &[f64; 3]) -> ([f64; 4], f64) {
        let mut h = [0.0; 4];
        for (hi, row) in h.iter_mut().zip(&self.w1) {
            *hi = (row[0] * x[0] + row[1] * x[1] + row[2] * x[2]).tanh();
        }
        let y = h.iter().zip(&self.w2).map(|(a, b)| a * b).sum::<f64>() + self.w2[4];
        (h, y)
    }

    /// Predicted duration, seconds.
    pub fn predict(&self, flops: f64, concurrency: f64) -> f64 {
        let analytic = flops / self.throughput * concurrency.max(1.0);
        if self.records.len() < self.warmup {
            return analytic;
        }
        let x = self.features(flops, concurrency);
        // The network predicts the log ratio to the single-task analytic time.
        (self.net(&x).1).exp() * flops / self.throughput
    }

    /// Adds a completed task and refits (full-batch gradient steps over all records).
    #[allow(clippy::needless_range_loop)] // the backprop indexes w1, g1 and x by the same (i, j)
    pub fn record(&mut self, r: TimeRecord) {
        self.records.push(r);
        let data: Vec<([f64; 3], f64)> = self
            .records
            .iter()
            .map(|r| {
                let x = self.features(r.flops, r.concurrency);
                let y = (r.seconds / (r.flops / self.throughput).max(1e-9))
                    .max(1e-9)
                    .ln();
                (x, y)
            })
            .collect();
        let lr = 0.05;
        for _ in 0..300 {
            let mut g1 = [[0.0; 3]; 4];
            let mut g2 = [0.0; 5];
            for (x, y) in &data {
                let (h, p) = self.net(x);
                let e = p - y;
                for i in 0..4 {
                    g2[i] += e * h[i];
                    let dh = e * self.w2[i] * (1.0 - h[i] * h[i]);
                    for j in 0..3 {
                        g1[i][j] += dh * x[j];
                    }
                }
                g2[4] += e;
            }
            let n = data.len() as f64;
            for i in 0..4 {
                for j in 0..3 {
                    self.w1[i][j] -= lr * g1[i][j] / n;
                }
            }
            for (w, g) in self.w2.iter_mut().zip(g2) {
                *w -= lr * g / n;
            }
        }
    }

    /// Records seen.
    pub fn seen(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_clamps_and_solves() {
        let a = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert_eq!(nnls(&a, &[2.0, -3.0]), vec![2.0, 0.0]);
        let x = nnls(
            &[vec![1.0, 1.0], vec![1.0, 2.0], vec![1.0, 3.0]],
            &[3.0, 5.0, 7.0],
        );
        assert!((x[0] - 1.0).abs() < 1e-9 && (x[1] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn curve_recovers_a_saturating_law() {
        let truth = AccuracyCurve {
            b0: 4.0,
            b1: 2.0,
            b2: 0.9,
        };
        let pts: Vec<(f64, f64)> = (1..=4).map(|e| (e as f64, truth.at(e as f64))).collect();
        let fit = AccuracyCurve::fit(&pts);
        assert!((fit.at(10.0) - truth.at(10.0)).abs() < 0.02, "{fit:?}");
    }

    #[test]
    fn memory_terms_and_time_regressor_learns_sharing() {
        let m = memory_bytes(&[10, 5, 2], 100, 8, 1, 0);
        let p = 10 * 5 + 5 + 5 * 2 + 2;
        assert_eq!(m, 4 * p * 3 + 100 * 41 + 4 * 8 * 17 * 2);
        let mut t = TimeRegressor::new(1e6);
        for k in 0..12 {
            let c = 1.0 + (k % 3) as f64;
            let f = 1e6 * (10.0 + k as f64);
            t.record(TimeRecord {
                flops: f,
                concurrency: c,
                seconds: f / 1e6 * c,
            });
        }
        let p = t.predict(15e6, 2.0);
        assert!((p - 30.0).abs() / 30.0 < 0.25, "{p}");
    }
}
