//! Mean-variance portfolio on the simplex, as `LODLs/PortfolioOpt.py` of the reference:
//!
//! `z*(ŷ) = argmax_{z ≥ 0, 1ᵀz = 1} ŷᵀz − λ‖L z‖²`
//!
//! with `L` the instance's lower-triangular factor. The reference takes `L` as the Cholesky
//! factor of the (regularised) correlation matrix Σ = L Lᵀ and penalises `‖L z‖² = zᵀLᵀLz`
//! (its cvxpy layer and `get_objective` both use `sum_squares(L @ z)`), which is *not* `zᵀΣz`;
//! this layer keeps that form. Its `z ≤ 1` constraint is implied by the simplex and dropped.
//! λ is the reference's `alpha` (0.1 in `config/problem/portfolio.yaml`).
//!
//! The reference solves with a cvxpylayers conic solver (approximate, iterative); this layer
//! solves the strictly convex QP exactly by a primal active-set method and differentiates the
//! KKT system on the final active set, which is what cvxpylayers' derivative converges to at a
//! strictly complementary solution.

use super::linalg::{cholesky, cholesky_solve};
use super::{DecisionError, check_len};
use crate::problem::DecisionProblem;

/// The portfolio QP for every instance id, each with its own risk factor.
#[derive(Debug, Clone)]
pub struct Portfolio {
    n: usize,
    lambda: f64,
    /// `L` per id, row-major `n × n`.
    factors: Vec<Vec<f64>>,
    /// Hessian of the minimised objective, `2λ LᵀL` (+ a ridge where that is singular), per id.
    hess: Vec<Vec<f64>>,
}

impl Portfolio {
    /// The reference's risk aversion (`alpha: 0.1`).
    pub const REFERENCE_LAMBDA: f64 = 0.1;

    /// `factors[id]` is instance `id`'s `n × n` row-major factor `L` (lower-triangular in the
    /// reference, though any square matrix defines a valid penalty `‖L z‖²`). Where `2λLᵀL` is
    /// not numerically positive definite a ridge of `1e-9 · max(1, max diag)` is added to the
    /// solver's Hessian (not to [`DecisionProblem::quality`]) so that the optimum is unique;
    /// it moves the optimum by about that relative amount.
    pub fn new(lambda: f64, factors: Vec<Vec<f64>>) -> Result<Self, DecisionError> {
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(DecisionError::param(
                "lambda",
                format!("{lambda} is not finite and > 0"),
            ));
        }
        let first = factors
            .first()
            .ok_or_else(|| DecisionError::param("factors", "no instances"))?;
        let n = (first.len() as f64).sqrt().round() as usize;
        if n == 0 || n * n != first.len() {
            return Err(DecisionError::param(
                "factors",
                format!("length {} is not a positive square", first.len()),
            ));
        }
        let mut hess = Vec::with_capacity(factors.len());
        for (id, l) in factors.iter().enumerate() {
            if l.len() != n * n {
                return Err(DecisionError::Shape {
                    what: "portfolio factor",
                    expected: n * n,
                    got: l.len(),
                });
            }
            if l.iter().any(|v| !v.is_finite()) {
                return Err(DecisionError::param(
                    "factors",
                    format!("factor {id} is not finite"),
                ));
            }
            let mut h = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] =
                        2.0 * lambda * (0..n).map(|k| l[k * n + i] * l[k * n + j]).sum::<f64>();
                }
            }
            if cholesky(&h, n).is_none() {
                let dmax = (0..n).fold(1.0_f64, |m, i| m.max(h[i * n + i]));
                for i in 0..n {
                    h[i * n + i] += 1e-9 * dmax;
                }
            }
            hess.push(h);
        }
        Ok(Portfolio {
            n,
            lambda,
            factors,
            hess,
        })
    }

    pub fn n_assets(&self) -> usize {
        self.n
    }

    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Number of instance ids this problem holds factors for.
    pub fn n_instances(&self) -> usize {
        self.factors.len()
    }

    fn check(&self, id: usize, what: &str, v: &[f64]) {
        assert!(
            id < self.factors.len(),
            "portfolio: instance id {id} out of range ({} factors)",
            self.factors.len()
        );
        check_len("portfolio", what, v.len(), self.n);
    }

    /// Minimiser of `½zᵀHz − ŷᵀz` on the face `{z_F ≥ 0 free, z_rest = 0, 1ᵀz = 1}` ignoring
    /// `z_F ≥ 0`: `z_F = H_FF⁻¹(ŷ_F + μ1)` with `μ` fixing the sum. Returns `(z_F, μ)`.
    fn face_optimum(&self, h: &[f64], yhat: &[f64], idx: &[usize]) -> (Vec<f64>, f64) {
        let (hf, m) = self.face_factor(h, idx);
        let mut a: Vec<f64> = idx.iter().map(|&i| yhat[i]).collect();
        let mut b = vec![1.0; m];
        cholesky_solve(&hf, m, &mut a);
        cholesky_solve(&hf, m, &mut b);
        let mu = (1.0 - a.iter().sum::<f64>()) / b.iter().sum::<f64>();
        (a.iter().zip(&b).map(|(a, b)| a + mu * b).collect(), mu)
    }

    /// Cholesky factor of `H_FF`.
    fn face_factor(&self, h: &[f64], idx: &[usize]) -> (Vec<f64>, usize) {
        let (n, m) = (self.n, idx.len());
        let mut sub = vec![0.0; m * m];
        for (a, &i) in idx.iter().enumerate() {
            for (b, &j) in idx.iter().enumerate() {
                sub[a * m + b] = h[i * n + j];
            }
        }
        // `new` made H positive definite, so every principal submatrix is too; a failure here
        // means NaN predictions, which the identity fallback turns into a finite (useless)
        // answer instead of a panic deep inside training.
        let f = cholesky(&sub, m).unwrap_or_else(|| {
            let mut eye = vec![0.0; m * m];
            for a in 0..m {
                eye[a * m + a] = 1.0;
            }
            eye
        });
        (f, m)
    }

    /// Primal active-set method (Nocedal & Wright, Alg. 16.3) for the strictly convex QP
    /// `min ½zᵀHz − ŷᵀz` on the simplex. Returns the optimum and its free set `{i: z_i > 0}`.
    /// Finite termination holds for strictly convex QPs; the iteration cap only guards against
    /// rounding-induced cycling, and the last iterate (always feasible) is returned then.
    fn solve(&self, id: usize, yhat: &[f64]) -> (Vec<f64>, Vec<bool>) {
        let (n, h) = (self.n, &self.hess[id]);
        // Start at the best vertex: with a small risk term the optimum is near it, so few
        // coordinates need to enter.
        let start = (0..n)
            .max_by(|&i, &j| {
                (yhat[i] - 0.5 * h[i * n + i]).total_cmp(&(yhat[j] - 0.5 * h[j * n + j]))
            })
            .unwrap_or(0);
        let mut z = vec![0.0; n];
        z[start] = 1.0;
        let mut free = vec![false; n];
        free[start] = true;
        let scale = 1.0
            + yhat.iter().fold(0.0_f64, |m, v| m.max(v.abs()))
            + h.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let tol = 1e-12 * scale;
        for _ in 0..(20 * n + 100) {
            let idx: Vec<usize> = (0..n).filter(|&i| free[i]).collect();
            let (zf, mu) = self.face_optimum(h, yhat, &idx);
            let mut step = 1.0;
            let mut block = None;
            for (a, &i) in idx.iter().enumerate() {
                if zf[a] < 0.0 {
                    let s = z[i] / (z[i] - zf[a]);
                    if s < step {
                        step = s;
                        block = Some(i);
                    }
                }
            }
            for (a, &i) in idx.iter().enumerate() {
                z[i] += step * (zf[a] - z[i]);
            }
            if let Some(b) = block {
                z[b] = 0.0;
                free[b] = false;
                continue;
            }
            // Optimal on this face: price the coordinates held at zero. Their multipliers are
            // `λ_i = (Hz − ŷ)_i − μ`; a negative one means moving mass onto `i` descends.
            let mut worst = None;
            let mut worst_val = -tol;
            for i in (0..n).filter(|&i| !free[i]) {
                let g: f64 = (0..n).map(|j| h[i * n + j] * z[j]).sum::<f64>() - yhat[i];
                if g - mu < worst_val {
                    worst_val = g - mu;
                    worst = Some(i);
                }
            }
            match worst {
                Some(i) => free[i] = true,
                None => break,
            }
        }
        for (f, zi) in free.iter_mut().zip(&z) {
            *f = *zi > 0.0;
        }
        (z, free)
    }

    /// `∇_z quality(z, y) = y − 2λ LᵀL z`.
    fn quality_grad_z(&self, id: usize, z: &[f64], y: &[f64]) -> Vec<f64> {
        let (n, l) = (self.n, &self.factors[id]);
        let lz: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|k| l[i * n + k] * z[k]).sum())
            .collect();
        (0..n)
            .map(|j| y[j] - 2.0 * self.lambda * (0..n).map(|i| l[i * n + j] * lz[i]).sum::<f64>())
            .collect()
    }
}

impl DecisionProblem for Portfolio {
    fn name(&self) -> &'static str {
        "portfolio"
    }

    /// # Panics
    /// If `id` has no factor or `yhat.len() != n_assets`.
    fn decide(&self, id: usize, yhat: &[f64]) -> Vec<f64> {
        self.check(id, "yhat", yhat);
        self.solve(id, yhat).0
    }

    /// `yᵀz − λ‖L z‖²`.
    ///
    /// # Panics
    /// If `id` has no factor or `z`, `y` are not `n_assets` long.
    fn quality(&self, id: usize, z: &[f64], y: &[f64]) -> f64 {
        self.check(id, "z", z);
        self.check(id, "y", y);
        let (n, l) = (self.n, &self.factors[id]);
        let risk: f64 = (0..n)
            .map(|i| (0..n).map(|k| l[i * n + k] * z[k]).sum::<f64>().powi(2))
            .sum();
        y.iter().zip(z).map(|(y, z)| y * z).sum::<f64>() - self.lambda * risk
    }

    /// On the free set `F = {i: z*_i > 0}` the KKT conditions `H_FF z_F − ŷ_F − μ1 = 0`,
    /// `1ᵀz_F = 1` give `dz_F/dŷ_F = P = H⁻¹ − H⁻¹11ᵀH⁻¹ / (1ᵀH⁻¹1)` (with `H = H_FF`), and
    /// `dz/dŷ = 0` elsewhere; `P` is symmetric, so the gradient is `P g_F` with
    /// `g = ∇_z quality(z*, y)`. This is the exact derivative wherever the solution is strictly
    /// complementary (every zero coordinate has a positive multiplier), i.e. almost everywhere;
    /// at the measure-zero kinks it is the one-sided derivative that keeps the face.
    ///
    /// # Panics
    /// If `id` has no factor or `yhat`, `y` are not `n_assets` long.
    fn quality_grad(&self, id: usize, yhat: &[f64], y: &[f64]) -> Vec<f64> {
        self.check(id, "yhat", yhat);
        self.check(id, "y", y);
        let (z, free) = self.solve(id, yhat);
        let g = self.quality_grad_z(id, &z, y);
        let idx: Vec<usize> = (0..self.n).filter(|&i| free[i]).collect();
        let mut out = vec![0.0; self.n];
        if idx.is_empty() {
            return out;
        }
        let (hf, m) = self.face_factor(&self.hess[id], &idx);
        let mut w: Vec<f64> = idx.iter().map(|&i| g[i]).collect();
        let mut v = vec![1.0; m];
        cholesky_solve(&hf, m, &mut w);
        cholesky_solve(&hf, m, &mut v);
        let c = w.iter().sum::<f64>() / v.iter().sum::<f64>();
        for (a, &i) in idx.iter().enumerate() {
            out[i] = w[a] - c * v[a];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Random lower-triangular factor with a positive diagonal, like a Cholesky factor.
    fn factor(n: usize, rng: &mut StdRng) -> Vec<f64> {
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..i {
                l[i * n + j] = rng.random::<f64>() - 0.5;
            }
            l[i * n + i] = 0.3 + rng.random::<f64>();
        }
        l
    }

    fn uniform(n: usize, lo: f64, hi: f64, rng: &mut StdRng) -> Vec<f64> {
        (0..n)
            .map(|_| lo + (hi - lo) * rng.random::<f64>())
            .collect()
    }

    #[test]
    fn matches_a_dense_simplex_grid_on_two_and_three_assets() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut interior = 0;
        for case in 0..12 {
            let n = 2 + case % 2;
            let p = Portfolio::new(1.0, vec![factor(n, &mut rng)]).expect("valid factor");
            let yhat = uniform(n, -1.0, 1.0, &mut rng);
            let z = p.decide(0, &yhat);
            assert!(z.iter().all(|&v| v >= 0.0));
            assert!((z.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            interior += usize::from(z.iter().all(|&v| v > 0.0));
            let best = p.quality(0, &z, &yhat);
            let steps = if n == 2 { 20_000 } else { 600 };
            let (mut grid_best, mut grid_z) = (f64::NEG_INFINITY, vec![0.0; n]);
            for a in 0..=steps {
                for b in 0..=(if n == 2 { 0 } else { steps - a }) {
                    let mut g = [a as f64 / steps as f64, b as f64 / steps as f64, 0.0];
                    g[n - 1] = 1.0 - g[..n - 1].iter().sum::<f64>();
                    let q = p.quality(0, &g[..n], &yhat);
                    if q > grid_best {
                        grid_best = q;
                        grid_z = g[..n].to_vec();
                    }
                }
            }
            assert!(
                best >= grid_best - 1e-12,
                "case {case}: {best} < grid {grid_best}"
            );
            // Strong convexity bounds the distance to the grid's best point.
            let dist = z
                .iter()
                .zip(&grid_z)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(dist < 0.02, "case {case}: z {z:?} vs grid {grid_z:?}");
        }
        assert!(
            interior >= 3,
            "too few interior optima ({interior}) to test the QP"
        );
    }

    #[test]
    fn satisfies_kkt_on_twenty_assets() {
        let mut rng = StdRng::seed_from_u64(2);
        let n = 20;
        let factors: Vec<Vec<f64>> = (0..4).map(|_| factor(n, &mut rng)).collect();
        let p = Portfolio::new(Portfolio::REFERENCE_LAMBDA, factors).expect("valid factors");
        for id in 0..4 {
            let yhat = uniform(n, -0.3, 0.3, &mut rng);
            let z = p.decide(id, &yhat);
            let h = &p.hess[id];
            let grad: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| h[i * n + j] * z[j]).sum::<f64>() - yhat[i])
                .collect();
            let free: Vec<usize> = (0..n).filter(|&i| z[i] > 0.0).collect();
            assert!(
                free.len() >= 2 && free.len() < n,
                "uninformative instance: {z:?}"
            );
            let mu = free.iter().map(|&i| grad[i]).sum::<f64>() / free.len() as f64;
            assert!(z.iter().all(|&v| v >= 0.0));
            assert!((z.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for i in 0..n {
                let lam = grad[i] - mu;
                if z[i] > 0.0 {
                    assert!(lam.abs() < 1e-10, "stationarity {i}: {lam}");
                } else {
                    assert!(lam > -1e-10, "dual feasibility {i}: {lam}");
                }
            }
        }
    }

    #[test]
    fn quality_grad_matches_central_differences() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 8;
        let p = Portfolio::new(0.5, vec![factor(n, &mut rng)]).expect("valid factor");
        let mut checked = 0;
        for _ in 0..6 {
            let yhat = uniform(n, -0.5, 0.5, &mut rng);
            let y = uniform(n, -0.5, 0.5, &mut rng);
            let z = p.decide(0, &yhat);
            if z.iter().filter(|&&v| v > 0.0).count() < 2 {
                continue;
            }
            checked += 1;
            let g = p.quality_grad(0, &yhat, &y);
            let eps = 1e-6;
            for i in 0..n {
                let mut up = yhat.clone();
                up[i] += eps;
                let mut dn = yhat.clone();
                dn[i] -= eps;
                let fd = (p.quality(0, &p.decide(0, &up), &y)
                    - p.quality(0, &p.decide(0, &dn), &y))
                    / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "coord {i}: fd {fd} vs {}",
                    g[i]
                );
            }
            // A zero coordinate's prediction does not move the decision.
            for i in (0..n).filter(|&i| z[i] == 0.0) {
                assert_eq!(g[i], 0.0);
            }
        }
        assert!(checked >= 3, "too few interior instances ({checked})");
    }

    #[test]
    fn rejects_bad_construction() {
        assert!(Portfolio::new(0.0, vec![vec![1.0]]).is_err());
        assert!(Portfolio::new(0.1, vec![]).is_err());
        assert!(Portfolio::new(0.1, vec![vec![1.0, 0.0, 0.0]]).is_err());
        assert!(Portfolio::new(0.1, vec![vec![1.0; 4], vec![1.0; 9]]).is_err());
        assert!(Portfolio::new(0.1, vec![vec![f64::NAN; 4]]).is_err());
        // A singular factor is accepted (ridge) and still yields a simplex point.
        let p = Portfolio::new(0.1, vec![vec![0.0; 4]]).expect("ridge handles singular L");
        let z = p.decide(0, &[0.3, 0.1]);
        assert!((z[0] - 1.0).abs() < 1e-12 && z[1].abs() < 1e-12, "{z:?}");
    }
}
