//! Top-k selection (`LODLs/CubicTopK.py` of the reference): pick the `k` items with the largest
//! predicted value; quality is the true value of the picked items, `Σ_i z_i y_i`.
//!
//! The reference evaluates with the hard top-k (`opt_test`, used for the final train/val/test
//! decision quality and for the random/optimal baselines) and trains with a soft top-k
//! (`opt_train`: `TopK_custom(k)(-ŷ)`, the entropic optimal-transport top-k of Xie et al.,
//! NeurIPS 2020, from `RMABSolver.py`, ε = 0.01, 200 Sinkhorn iterations). This layer follows
//! that split: [`DecisionProblem::decide`] is the hard top-k and
//! [`DecisionProblem::quality_grad`] differentiates `Σ_i y_i · soft_i(ŷ)`.
//!
//! The soft top-k transports the uniform mass on the `n` scores `s = −ŷ` to the anchors
//! `{0, 1}` with masses `k/n`, `(n−k)/n`, under the cost `C_ij = (s_i − a_j)²` divided by its
//! largest entry, and reads `z_i = n Γ_i0`. With two anchors the entropic plan has a closed
//! form: `Γ_i0 = (1/n) σ((τ + Δ_i)/ε)` with `Δ_i = C_i1 − C_i0 = (1 + 2ŷ_i)/M`
//! (`M = max_i max(ŷ_i², (ŷ_i + 1)²)`) and the scalar dual gap `τ` fixed by `Σ_i z_i = k`.
//! Solving that scalar equation to machine precision gives the Sinkhorn fixed point exactly,
//! where the reference stops after 200 iterations; its analytic backward pass also assumes the
//! fixed point, so the derivatives agree.

use super::{DecisionError, check_len};
use crate::problem::DecisionProblem;

/// Top-k over `n` items, one predicted value per item (`rows = n`, `o = 1`).
#[derive(Debug, Clone)]
pub struct TopK {
    n: usize,
    k: usize,
    epsilon: f64,
}

impl TopK {
    /// The reference's entropic regularisation (`TopK_custom(..., epsilon=0.01)`).
    pub const REFERENCE_EPSILON: f64 = 0.01;

    /// `0 < k < n` (the reference asserts `budget < num_items`), `epsilon > 0`.
    pub fn new(n: usize, k: usize, epsilon: f64) -> Result<Self, DecisionError> {
        if k == 0 || k >= n {
            return Err(DecisionError::param(
                "k",
                format!("need 0 < k < n, got k={k}, n={n}"),
            ));
        }
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(DecisionError::param(
                "epsilon",
                format!("{epsilon} is not finite and > 0"),
            ));
        }
        Ok(TopK { n, k, epsilon })
    }

    pub fn n_items(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The reference's training-time decision `opt_train`: `z ∈ [0, 1]ⁿ`, `Σ z = k`. The
    /// reference's validation decision quality (used for its best-model selection) is computed
    /// with this, its final and baseline ones with [`DecisionProblem::decide`].
    ///
    /// # Panics
    /// If `yhat.len() != n_items`.
    pub fn soft_decide(&self, yhat: &[f64]) -> Vec<f64> {
        check_len("topk", "yhat", yhat.len(), self.n);
        self.soft(yhat).z
    }

    fn soft(&self, yhat: &[f64]) -> Soft {
        let eps = self.epsilon;
        let (m, argmax) = yhat
            .iter()
            .enumerate()
            .fold((0.0_f64, 0), |(m, a), (i, &v)| {
                let c = (v * v).max((v + 1.0) * (v + 1.0));
                if c > m { (c, i) } else { (m, a) }
            });
        let delta: Vec<f64> = yhat.iter().map(|v| (1.0 + 2.0 * v) / m).collect();
        let (dmin, dmax) = delta
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &d| {
                (a.min(d), b.max(d))
            });
        let total = |tau: f64| -> f64 { delta.iter().map(|d| sigmoid((tau + d) / eps)).sum() };
        // Σσ is increasing in τ; at `lo` every term is below σ(−40) (sum < k), at `hi` above
        // σ(40) (sum > k since k < n), so bisection to the float resolution finds the root.
        let (mut lo, mut hi) = (-dmax - 40.0 * eps, -dmin + 40.0 * eps);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if total(mid) < self.k as f64 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let tau = 0.5 * (lo + hi);
        let z = delta.iter().map(|d| sigmoid((tau + d) / eps)).collect();
        Soft {
            z,
            delta,
            m,
            argmax,
        }
    }
}

struct Soft {
    z: Vec<f64>,
    delta: Vec<f64>,
    m: f64,
    argmax: usize,
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl DecisionProblem for TopK {
    fn name(&self) -> &'static str {
        "topk"
    }

    /// Indicator of the `k` largest predictions; ties go to the lower index.
    ///
    /// # Panics
    /// If `yhat.len() != n_items`.
    fn decide(&self, id: usize, yhat: &[f64]) -> Vec<f64> {
        let _ = id;
        check_len("topk", "yhat", yhat.len(), self.n);
        let mut order: Vec<usize> = (0..self.n).collect();
        // NaN predictions sort last under total_cmp's reversed order, so they are picked only
        // when nothing else is left.
        order.sort_by(|&a, &b| yhat[b].total_cmp(&yhat[a]).then(a.cmp(&b)));
        let mut z = vec![0.0; self.n];
        for &i in &order[..self.k] {
            z[i] = 1.0;
        }
        z
    }

    /// `Σ_i z_i y_i`.
    ///
    /// # Panics
    /// If `z`, `y` are not `n_items` long.
    fn quality(&self, id: usize, z: &[f64], y: &[f64]) -> f64 {
        let _ = id;
        check_len("topk", "z", z.len(), self.n);
        check_len("topk", "y", y.len(), self.n);
        z.iter().zip(y).map(|(z, y)| z * y).sum()
    }

    /// Gradient of `Σ_i y_i z_i(ŷ)` through the soft top-k (the hard top-k is piecewise
    /// constant). With `s_i = z_i(1 − z_i)` the constraint `Σz = k` gives
    /// `dz_i/dΔ_j = (s_i δ_ij − s_i s_j / Σs)/ε`, so `v_j = d/dΔ_j = s_j (y_j − ȳ_s)/ε` with
    /// `ȳ_s = Σ s y / Σ s`; then the chain rule through `Δ_j = (1 + 2ŷ_j)/M`, including the
    /// normaliser `M`'s dependence on its maximising item, as autograd does through `amax`.
    ///
    /// # Panics
    /// If `yhat`, `y` are not `n_items` long.
    fn quality_grad(&self, id: usize, yhat: &[f64], y: &[f64]) -> Vec<f64> {
        let _ = id;
        check_len("topk", "yhat", yhat.len(), self.n);
        check_len("topk", "y", y.len(), self.n);
        let soft = self.soft(yhat);
        let s: Vec<f64> = soft.z.iter().map(|z| z * (1.0 - z)).collect();
        let s_sum: f64 = s.iter().sum();
        if s_sum.is_nan() || s_sum <= 0.0 {
            // Every item saturated at 0 or 1: the soft decision is locally constant.
            return vec![0.0; self.n];
        }
        let y_bar = s.iter().zip(y).map(|(s, y)| s * y).sum::<f64>() / s_sum;
        let v: Vec<f64> = s
            .iter()
            .zip(y)
            .map(|(s, y)| s * (y - y_bar) / self.epsilon)
            .collect();
        let mut grad: Vec<f64> = v.iter().map(|v| 2.0 * v / soft.m).collect();
        let a = soft.argmax;
        let dm = if yhat[a] * yhat[a] >= (yhat[a] + 1.0) * (yhat[a] + 1.0) {
            2.0 * yhat[a]
        } else {
            2.0 * (yhat[a] + 1.0)
        };
        let dv_dm: f64 = -v.iter().zip(&soft.delta).map(|(v, d)| v * d).sum::<f64>() / soft.m;
        grad[a] += dv_dm * dm;
        grad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn cubic(n: usize, rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
        let x: Vec<f64> = (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect();
        let y = x.iter().map(|x| 10.0 * (x * x * x - 0.65 * x)).collect();
        (x, y)
    }

    #[test]
    fn hard_top_k_is_the_best_subset_by_brute_force() {
        let mut rng = StdRng::seed_from_u64(4);
        for k in 1..=3 {
            let p = TopK::new(8, k, TopK::REFERENCE_EPSILON).expect("valid");
            for _ in 0..5 {
                let (_, yhat) = cubic(8, &mut rng);
                let z = p.decide(0, &yhat);
                assert_eq!(z.iter().sum::<f64>(), k as f64);
                let best = (0u32..256)
                    .filter(|m| m.count_ones() as usize == k)
                    .map(|m| {
                        (0..8)
                            .filter(|i| m >> i & 1 == 1)
                            .map(|i| yhat[i])
                            .sum::<f64>()
                    })
                    .fold(f64::NEG_INFINITY, f64::max);
                assert!((p.quality(0, &z, &yhat) - best).abs() < 1e-12);
            }
        }
    }

    /// The reference's `TopKFunc.forward`, log-domain Sinkhorn on the two-anchor problem, run
    /// to convergence: the closed form must reproduce its plan.
    fn sinkhorn(yhat: &[f64], k: usize, eps: f64, iters: usize) -> Vec<f64> {
        let n = yhat.len();
        let raw: Vec<[f64; 2]> = yhat
            .iter()
            .map(|v| [v * v, (v + 1.0) * (v + 1.0)])
            .collect();
        let m = raw.iter().fold(0.0_f64, |m, c| m.max(c[0]).max(c[1]));
        let c: Vec<[f64; 2]> = raw.iter().map(|c| [c[0] / m, c[1] / m]).collect();
        let (log_mu, log_nu) = (
            (1.0 / n as f64).ln(),
            [(k as f64 / n as f64).ln(), ((n - k) as f64 / n as f64).ln()],
        );
        let lse = |a: f64, b: f64| a.max(b) + (-(a - b).abs()).exp().ln_1p();
        let (mut f, mut g) = (vec![0.0; n], [0.0; 2]);
        for _ in 0..iters {
            for i in 0..n {
                f[i] = -eps * lse(-(c[i][0] - g[0]) / eps, -(c[i][1] - g[1]) / eps) + eps * log_mu;
            }
            for j in 0..2 {
                let terms: Vec<f64> = (0..n).map(|i| -(c[i][j] - f[i]) / eps).collect();
                let mx = terms.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let s: f64 = terms.iter().map(|t| (t - mx).exp()).sum();
                g[j] = -eps * (mx + s.ln()) + eps * log_nu[j];
            }
        }
        (0..n)
            .map(|i| ((-c[i][0] + f[i] + g[0]) / eps).exp() * n as f64)
            .collect()
    }

    #[test]
    fn soft_top_k_is_the_sinkhorn_fixed_point() {
        let mut rng = StdRng::seed_from_u64(5);
        for k in [1, 3] {
            let p = TopK::new(12, k, 0.05).expect("valid");
            let (_, yhat) = cubic(12, &mut rng);
            let z = p.soft_decide(&yhat);
            let reference = sinkhorn(&yhat, k, 0.05, 5000);
            assert!((z.iter().sum::<f64>() - k as f64).abs() < 1e-9);
            for (a, b) in z.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-7, "{z:?} vs {reference:?}");
            }
            // The soft selection is monotone in the prediction, like the hard one.
            for i in 0..12 {
                for j in 0..12 {
                    if yhat[i] > yhat[j] {
                        assert!(z[i] >= z[j], "{i} above {j} but {} < {}", z[i], z[j]);
                    }
                }
            }
        }
    }

    #[test]
    fn quality_grad_matches_central_differences_of_the_soft_decision() {
        let mut rng = StdRng::seed_from_u64(6);
        let n = 50;
        let p = TopK::new(n, 1, TopK::REFERENCE_EPSILON).expect("valid");
        for _ in 0..3 {
            let (x, y) = cubic(n, &mut rng);
            // A poor linear predictor, as early in training, keeps several items competitive.
            let yhat: Vec<f64> = x.iter().map(|x| 0.5 * x).collect();
            let g = p.quality_grad(0, &yhat, &y);
            assert!(g.iter().any(|v| v.abs() > 1e-3), "vacuous gradient {g:?}");
            let q = |yh: &[f64]| p.quality(0, &p.soft_decide(yh), &y);
            let h = 1e-6;
            for i in 0..n {
                let (mut up, mut dn) = (yhat.clone(), yhat.clone());
                up[i] += h;
                dn[i] -= h;
                let fd = (q(&up) - q(&dn)) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "item {i}: fd {fd} vs {}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn rejects_bad_construction() {
        assert!(TopK::new(5, 0, 0.01).is_err());
        assert!(TopK::new(5, 5, 0.01).is_err());
        assert!(TopK::new(5, 1, 0.0).is_err());
    }
}
