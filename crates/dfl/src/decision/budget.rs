//! Budget allocation (`LODLs/BudgetAllocation.py`, from Wilder et al., AAAI 2019): spread a
//! budget `B` over `n` items (channels) to maximise the expected number of targets (users)
//! reached, `f(z; Y) = Σ_t (1 − Π_i (1 − z_i Y_it))`, over `{0 ≤ z ≤ 1, Σ z = B}`.
//!
//! Layout follows the reference: `Y` is `items × targets` and its predictor is shared across
//! items, mapping an item's features to that item's `n_targets` values, so in [`Instances`]
//! terms `rows = n_items`, `o = n_targets`, and `ŷ` is item-major.
//!
//! Solver: the reference's accelerated projected gradient ascent (`SubmodularOptimizer.py`:
//! step 0.1, momentum 0.9, 100 iterations, projection onto `{0 ≤ z ≤ 1, Σ z = B}`), started at
//! a fixed point instead of a random one so that decisions are deterministic, and run until an
//! iteration moves no coordinate by more than `tol` (or `max_iters`), so that the derivative
//! below is taken at an actual fixed point. The start is the projection of the golden-ratio
//! sequence `frac(0.5 + iφ)`, deliberately asymmetric: the uniform allocation `B/n` is a
//! stationary point whenever the predictions are equal across items (as for a constant
//! predictor early in training), and a symmetric start would stay on that saddle.
//!
//! [`Instances`]: crate::Instances

use super::linalg::lu_solve;
use super::{DecisionError, check_len};
use crate::problem::DecisionProblem;

/// Projected gradient ascent settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSolver {
    pub lr: f64,
    pub momentum: f64,
    pub max_iters: usize,
    /// Stop once an iteration changes no coordinate by more than this.
    pub tol: f64,
}

impl Default for BudgetSolver {
    /// The reference's step and momentum; up to 1000 iterations (the reference always runs
    /// 100) with `tol = 1e-12`. Typical instances reach a vertex, where the iteration becomes
    /// exactly stationary, within a few dozen steps.
    fn default() -> Self {
        BudgetSolver {
            lr: 0.1,
            momentum: 0.9,
            max_iters: 1000,
            tol: 1e-12,
        }
    }
}

/// The budget-allocation decision layer, the same for every instance id.
#[derive(Debug, Clone)]
pub struct BudgetAllocation {
    n: usize,
    t: usize,
    budget: f64,
    solver: BudgetSolver,
    ridge: f64,
}

/// Coordinates within this of a bound count as at the bound when reading multipliers off a
/// solution (the reference's `EPS`).
const BOUND_EPS: f64 = 1e-6;

impl BudgetAllocation {
    /// The reference's conditioning constant (`alpha=0.01` in `_get_dZdYhat`).
    pub const REFERENCE_KKT_RIDGE: f64 = 0.01;

    /// `0 < budget < n_items` (the reference asserts `budget < num_items`); default solver and
    /// `kkt_ridge = REFERENCE_KKT_RIDGE`.
    pub fn new(n_items: usize, n_targets: usize, budget: f64) -> Result<Self, DecisionError> {
        if n_items == 0 || n_targets == 0 {
            return Err(DecisionError::param(
                "shape",
                format!("need items and targets, got {n_items} x {n_targets}"),
            ));
        }
        if !(budget > 0.0 && budget < n_items as f64) {
            return Err(DecisionError::param(
                "budget",
                format!("need 0 < budget < n_items = {n_items}, got {budget}"),
            ));
        }
        Ok(BudgetAllocation {
            n: n_items,
            t: n_targets,
            budget,
            solver: BudgetSolver::default(),
            ridge: Self::REFERENCE_KKT_RIDGE,
        })
    }

    /// The reference configuration (`config/problem/advertising.yaml`): 5 items, 10 targets,
    /// budget 2.
    pub fn reference() -> Self {
        BudgetAllocation {
            n: 5,
            t: 10,
            budget: 2.0,
            solver: BudgetSolver::default(),
            ridge: Self::REFERENCE_KKT_RIDGE,
        }
    }

    pub fn with_solver(mut self, solver: BudgetSolver) -> Result<Self, DecisionError> {
        if !(solver.lr.is_finite() && solver.lr > 0.0) {
            return Err(DecisionError::param(
                "lr",
                format!("{} is not finite and > 0", solver.lr),
            ));
        }
        if !(0.0..1.0).contains(&solver.momentum) {
            return Err(DecisionError::param(
                "momentum",
                format!("{} not in [0, 1)", solver.momentum),
            ));
        }
        if solver.max_iters == 0 || solver.tol.is_nan() || solver.tol < 0.0 {
            return Err(DecisionError::param(
                "max_iters/tol",
                "need max_iters > 0 and tol >= 0",
            ));
        }
        self.solver = solver;
        Ok(self)
    }

    /// `0` gives the exact derivative (zero at the vertices where the solver usually ends);
    /// `> 0` the smoothed one described at [`BudgetAllocation::vjp`].
    pub fn with_kkt_ridge(mut self, ridge: f64) -> Result<Self, DecisionError> {
        if !(ridge.is_finite() && ridge >= 0.0) {
            return Err(DecisionError::param(
                "kkt_ridge",
                format!("{ridge} is not finite and >= 0"),
            ));
        }
        self.ridge = ridge;
        Ok(self)
    }

    pub fn n_items(&self) -> usize {
        self.n
    }

    pub fn n_targets(&self) -> usize {
        self.t
    }

    pub fn budget(&self) -> f64 {
        self.budget
    }

    /// `Π_{j ∉ skip} (1 − z_j Y_jt)`.
    fn fail_prob(&self, z: &[f64], y: &[f64], t: usize, skip: [usize; 2]) -> f64 {
        (0..self.n)
            .filter(|j| !skip.contains(j))
            .map(|j| 1.0 - z[j] * y[j * self.t + t])
            .product()
    }

    fn objective(&self, z: &[f64], y: &[f64]) -> f64 {
        (0..self.t)
            .map(|t| 1.0 - self.fail_prob(z, y, t, [usize::MAX; 2]))
            .sum()
    }

    /// `∂f/∂z_i = Σ_t Y_it Π_{j≠i} (1 − z_j Y_jt)`; products skip the index rather than divide
    /// by its factor, which may be zero.
    fn grad_z(&self, z: &[f64], y: &[f64]) -> Vec<f64> {
        (0..self.n)
            .map(|i| {
                (0..self.t)
                    .map(|t| y[i * self.t + t] * self.fail_prob(z, y, t, [i, usize::MAX]))
                    .sum()
            })
            .collect()
    }

    /// `∂²f/∂z_i∂z_k = −Σ_t Y_it Y_kt Π_{j∉{i,k}} (1 − z_j Y_jt)`, zero diagonal (multilinear).
    fn hessian(&self, z: &[f64], y: &[f64]) -> Vec<f64> {
        let (n, nt) = (self.n, self.t);
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                if i != k {
                    h[i * n + k] = -(0..nt)
                        .map(|t| y[i * nt + t] * y[k * nt + t] * self.fail_prob(z, y, t, [i, k]))
                        .sum::<f64>();
                }
            }
        }
        h
    }

    /// `wᵀ ∂(∇_z f)/∂Y`, item-major like `Y`: entry `(k, t)` is
    /// `w_k Π_{j≠k} (1 − z_j Y_jt) − Σ_{i≠k} w_i Y_it z_k Π_{j∉{i,k}} (1 − z_j Y_jt)`.
    fn cross_t(&self, z: &[f64], y: &[f64], w: &[f64]) -> Vec<f64> {
        let (n, nt) = (self.n, self.t);
        let mut out = vec![0.0; n * nt];
        for k in 0..n {
            for t in 0..nt {
                let mut v = w[k] * self.fail_prob(z, y, t, [k, usize::MAX]);
                for i in (0..n).filter(|&i| i != k && w[i] != 0.0) {
                    v -= w[i] * y[i * nt + t] * z[k] * self.fail_prob(z, y, t, [i, k]);
                }
                out[k * nt + t] = v;
            }
        }
        out
    }

    /// Euclidean projection onto `{0 ≤ p ≤ 1, Σ p = B}`: `p = clip(v − τ, 0, 1)` with the
    /// shift `τ` found exactly. `h(τ) = Σ clip(v_i − τ, 0, 1)` is non-increasing and linear
    /// between the breakpoints `{v_i − 1, v_i}`, so locating the segment where it crosses `B`
    /// and interpolating is exact, with no bisection tolerance to choose.
    fn project(&self, v: &[f64]) -> Vec<f64> {
        let h = |tau: f64| -> f64 { v.iter().map(|x| (x - tau).clamp(0.0, 1.0)).sum() };
        let mut bp: Vec<f64> = v.iter().flat_map(|&x| [x - 1.0, x]).collect();
        bp.sort_by(f64::total_cmp);
        // h(bp[0]) = n > B and h(bp[last]) = 0 < B, so some segment brackets B.
        let mut tau = bp[0];
        for w in bp.windows(2) {
            let (h0, h1) = (h(w[0]), h(w[1]));
            if h0 >= self.budget && h1 <= self.budget {
                tau = if h0 > h1 {
                    w[0] + (h0 - self.budget) * (w[1] - w[0]) / (h0 - h1)
                } else {
                    w[0]
                };
                break;
            }
        }
        v.iter().map(|x| (x - tau).clamp(0.0, 1.0)).collect()
    }

    fn solve(&self, yhat: &[f64]) -> Vec<f64> {
        let s = &self.solver;
        let start: Vec<f64> = (0..self.n)
            .map(|i| (0.5 + i as f64 * 0.618_033_988_749_895).fract())
            .collect();
        let mut z = self.project(&start);
        let mut prev = z.clone();
        for _ in 0..s.max_iters {
            let look: Vec<f64> = z
                .iter()
                .zip(&prev)
                .map(|(z, p)| z + s.momentum * (z - p))
                .collect();
            let g = self.grad_z(&look, yhat);
            let step: Vec<f64> = look.iter().zip(&g).map(|(x, g)| x + s.lr * g).collect();
            let next = self.project(&step);
            let change = next
                .iter()
                .zip(&z)
                .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
            prev = std::mem::replace(&mut z, next);
            if change <= s.tol {
                break;
            }
        }
        z
    }

    /// `d(gᵀ z*(ŷ))/dŷ` (item-major, `n_items · n_targets` values) by implicit differentiation
    /// of the KKT conditions at the solver's fixed point.
    ///
    /// Why implicit differentiation rather than unrolling: the solver runs a data-dependent
    /// number of steps (up to 1000), and unrolling differentiates the path rather than the
    /// solution; at the fixed point the KKT system is small (`n + 1` unknowns after
    /// eliminating the bound multipliers) and independent of how the point was reached.
    ///
    /// With `∇f − μ1 − ν⁺ + ν⁻ = 0` (`μ` for `Σz = B`, `ν⁺ ≥ 0` for `z ≤ 1`, `ν⁻ ≥ 0` for
    /// `z ≥ 0`), linearising stationarity and the complementarity conditions
    /// `ν⁺_i(z_i − 1) = 0`, `ν⁻_i z_i = 0` — each with its slack diagonal shifted by `−r` — and
    /// eliminating `dν` gives `(H − diag(D)) dz − 1 dμ = −C dŷ`, `1ᵀdz = 0`, with
    /// `H = ∇²_z f`, `C = ∂∇_z f/∂ŷ`, and `D_i = r + ν⁺_i/(1 − z_i + r) + ν⁻_i/(z_i + r)`.
    /// The gradient solves the transposed system once for `g`.
    ///
    /// With `r = 0` this is the exact derivative at a strictly complementary solution: a
    /// coordinate at an active bound gets `D_i = ∞`, i.e. `dz_i = 0`. Because `f` is
    /// multilinear it is convex along every `e_i − e_j`, so local maxima are almost always
    /// vertices and the exact derivative is almost always zero. `r > 0` (the reference uses
    /// 0.01) is a barrier-like smoothing: an active coordinate moves by about `r C_i/ν_i`, most
    /// for the items closest to the decision boundary, in the direction its predicted marginal
    /// value pushes it. The reference adds `+0.01·I` to its whole KKT matrix instead; that
    /// flips the sign of both the active-bound terms and (its right-hand side is `+C`) the
    /// interior terms relative to this derivation, so this layer deliberately does not
    /// reproduce it.
    ///
    /// Multipliers are read off the solution as the reference does: `μ` is the mean of `∇f`
    /// over the interior coordinates; at a vertex (none interior; the reference uses 0) the
    /// midpoint of `[max ∇f over z = 0, min ∇f over z = 1]`, the centre of the valid range.
    /// A singular system (a non-isolated optimum) yields a zero gradient.
    ///
    /// # Panics
    /// If `yhat` is not `n_items · n_targets` long or `g` not `n_items` long.
    pub fn vjp(&self, yhat: &[f64], g: &[f64]) -> Vec<f64> {
        check_len("budget", "yhat", yhat.len(), self.n * self.t);
        check_len("budget", "g", g.len(), self.n);
        let z = self.solve(yhat);
        self.vjp_at(&z, yhat, g)
    }

    fn vjp_at(&self, z: &[f64], yhat: &[f64], g: &[f64]) -> Vec<f64> {
        let (n, r) = (self.n, self.ridge);
        let zero = vec![0.0; n * self.t];
        let grad = self.grad_z(z, yhat);
        let interior: Vec<usize> = (0..n)
            .filter(|&i| z[i] > BOUND_EPS && z[i] < 1.0 - BOUND_EPS)
            .collect();
        let mu = if interior.is_empty() {
            let lower = (0..n)
                .filter(|&i| z[i] <= BOUND_EPS)
                .map(|i| grad[i])
                .fold(f64::NEG_INFINITY, f64::max);
            let upper = (0..n)
                .filter(|&i| z[i] >= 1.0 - BOUND_EPS)
                .map(|i| grad[i])
                .fold(f64::INFINITY, f64::min);
            match (lower.is_finite(), upper.is_finite()) {
                (true, true) => 0.5 * (lower + upper),
                (true, false) => lower,
                (false, true) => upper,
                (false, false) => return zero,
            }
        } else {
            interior.iter().map(|&i| grad[i]).sum::<f64>() / interior.len() as f64
        };
        // D_i, or None for a coordinate pinned at an active bound (dz_i = 0).
        let d: Vec<Option<f64>> = (0..n)
            .map(|i| {
                let mut di = r;
                for (nu, slack) in [
                    ((grad[i] - mu).max(0.0), 1.0 - z[i]),
                    ((mu - grad[i]).max(0.0), z[i]),
                ] {
                    if slack <= BOUND_EPS && nu > 0.0 {
                        let den = slack.max(0.0) + r;
                        if den <= 0.0 {
                            return None;
                        }
                        di += nu / den;
                    }
                }
                Some(di)
            })
            .collect();
        let keep: Vec<usize> = (0..n).filter(|&i| d[i].is_some()).collect();
        let m = keep.len();
        if m == 0 {
            return zero;
        }
        let h = self.hessian(z, yhat);
        // Transposed system [[A, 1], [−1ᵀ, 0]] w = [g; 0], A = H − diag(D) symmetric.
        let k = m + 1;
        let mut a = vec![0.0; k * k];
        for (p, &i) in keep.iter().enumerate() {
            for (q, &j) in keep.iter().enumerate() {
                a[p * k + q] = h[i * n + j];
            }
            a[p * k + p] -= d[i].unwrap_or(0.0);
            a[p * k + m] = 1.0;
            a[m * k + p] = -1.0;
        }
        let mut w: Vec<f64> = keep.iter().map(|&i| g[i]).chain([0.0]).collect();
        if lu_solve(a, k, &mut w).is_none() {
            return zero;
        }
        let mut wz = vec![0.0; n];
        for (p, &i) in keep.iter().enumerate() {
            wz[i] = -w[p];
        }
        self.cross_t(z, yhat, &wz)
    }
}

impl DecisionProblem for BudgetAllocation {
    fn name(&self) -> &'static str {
        "budget"
    }

    /// # Panics
    /// If `yhat` is not `n_items · n_targets` long.
    fn decide(&self, id: usize, yhat: &[f64]) -> Vec<f64> {
        let _ = id;
        check_len("budget", "yhat", yhat.len(), self.n * self.t);
        self.solve(yhat)
    }

    /// `Σ_t (1 − Π_i (1 − z_i y_it))`.
    ///
    /// # Panics
    /// If `z` is not `n_items` or `y` not `n_items · n_targets` long.
    fn quality(&self, id: usize, z: &[f64], y: &[f64]) -> f64 {
        let _ = id;
        check_len("budget", "z", z.len(), self.n);
        check_len("budget", "y", y.len(), self.n * self.t);
        self.objective(z, y)
    }

    /// [`BudgetAllocation::vjp`] with `g = ∇_z quality(z*, y)`.
    ///
    /// # Panics
    /// If `yhat` or `y` is not `n_items · n_targets` long.
    fn quality_grad(&self, id: usize, yhat: &[f64], y: &[f64]) -> Vec<f64> {
        let _ = id;
        check_len("budget", "yhat", yhat.len(), self.n * self.t);
        check_len("budget", "y", y.len(), self.n * self.t);
        let z = self.solve(yhat);
        let g = self.grad_z(&z, y);
        self.vjp_at(&z, yhat, &g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn uniform(len: usize, rng: &mut StdRng) -> Vec<f64> {
        (0..len).map(|_| rng.random::<f64>()).collect()
    }

    fn precise() -> BudgetSolver {
        BudgetSolver {
            max_iters: 20_000,
            tol: 0.0,
            ..BudgetSolver::default()
        }
    }

    #[test]
    fn projection_is_a_common_shift_clipped_to_the_box() {
        let mut rng = StdRng::seed_from_u64(7);
        let p = BudgetAllocation::new(6, 1, 2.5).expect("valid");
        for _ in 0..50 {
            let v: Vec<f64> = (0..6).map(|_| 4.0 * rng.random::<f64>() - 2.0).collect();
            let z = p.project(&v);
            assert!((z.iter().sum::<f64>() - 2.5).abs() < 1e-12, "{z:?}");
            assert!(z.iter().all(|&x| (0.0..=1.0).contains(&x)));
            // p = clip(v − τ): one τ explains every coordinate (the projection's KKT).
            let free: Vec<usize> = (0..6).filter(|&i| z[i] > 0.0 && z[i] < 1.0).collect();
            let tau = match free.first() {
                Some(&i) => v[i] - z[i],
                None => continue,
            };
            for i in 0..6 {
                assert!((z[i] - (v[i] - tau).clamp(0.0, 1.0)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn solver_finds_the_best_allocation_on_most_instances() {
        // The multilinear objective is convex along every e_i − e_j, so its maximum over
        // {0 ≤ z ≤ 1, Σz = 2} is at a vertex: brute force over the 10 two-item subsets.
        let mut rng = StdRng::seed_from_u64(8);
        let p = BudgetAllocation::reference();
        let (mut hits, trials) = (0, 40);
        for _ in 0..trials {
            let y: Vec<f64> = (0..50)
                .map(|_| {
                    if rng.random::<f64>() < 0.5 {
                        rng.random::<f64>()
                    } else {
                        0.0
                    }
                })
                .collect();
            let z = p.decide(0, &y);
            let best = (0..5)
                .flat_map(|a| (a + 1..5).map(move |b| (a, b)))
                .map(|(a, b)| {
                    let mut v = vec![0.0; 5];
                    v[a] = 1.0;
                    v[b] = 1.0;
                    p.quality(0, &v, &y)
                })
                .fold(f64::NEG_INFINITY, f64::max);
            let q = p.quality(0, &z, &y);
            assert!(
                q <= best + 1e-9,
                "relaxation beat the vertex optimum: {q} > {best}"
            );
            // A local maximum of a monotone submodular multilinear extension is >= OPT/2.
            assert!(q >= 0.5 * best, "{q} vs {best}");
            // The solver stopped at a fixed point of the projected-gradient map.
            let g = p.grad_z(&z, &y);
            let step: Vec<f64> = z.iter().zip(&g).map(|(z, g)| z + 0.1 * g).collect();
            let fixed = p.project(&step);
            assert!(
                z.iter().zip(&fixed).all(|(a, b)| (a - b).abs() < 1e-9),
                "{z:?} not stationary"
            );
            hits += usize::from(q >= best - 1e-9);
        }
        assert!(hits * 4 >= trials * 3, "optimal on only {hits}/{trials}");
    }

    /// Three items, two targets, budget 1: items 0 and 1 interact with opposite signs, which
    /// makes the objective concave along e_0 − e_1 with its maximum at z = (½, ½, 0) (item 2 is
    /// worthless and strictly held at 0), a strictly complementary interior optimum.
    fn interior_instance(rng: &mut StdRng) -> Vec<f64> {
        let base = [1.0, 0.0, -1.0, 2.0, 0.0, 0.0];
        base.iter()
            .map(|b| b + 0.05 * (rng.random::<f64>() - 0.5))
            .collect()
    }

    fn fd_grad(p: &BudgetAllocation, yhat: &[f64], y: &[f64], h: f64) -> Vec<f64> {
        (0..yhat.len())
            .map(|i| {
                let (mut up, mut dn) = (yhat.to_vec(), yhat.to_vec());
                up[i] += h;
                dn[i] -= h;
                (p.quality(0, &p.decide(0, &up), y) - p.quality(0, &p.decide(0, &dn), y))
                    / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn exact_quality_grad_matches_central_differences_at_an_interior_optimum() {
        let mut rng = StdRng::seed_from_u64(9);
        let p = BudgetAllocation::new(3, 2, 1.0)
            .and_then(|p| p.with_solver(precise()))
            .and_then(|p| p.with_kkt_ridge(0.0))
            .expect("valid");
        for _ in 0..3 {
            let yhat = interior_instance(&mut rng);
            let y = uniform(6, &mut rng);
            let z = p.decide(0, &yhat);
            assert!(
                z[0] > 0.3 && z[1] > 0.3 && z[2] == 0.0,
                "not the interior optimum: {z:?}"
            );
            let g = p.quality_grad(0, &yhat, &y);
            let fd = fd_grad(&p, &yhat, &y, 1e-5);
            assert!(g.iter().any(|v| v.abs() > 1e-2), "vacuous gradient {g:?}");
            for (i, (a, b)) in g.iter().zip(&fd).enumerate() {
                assert!(
                    (a - b).abs() < 1e-6 * (1.0 + b.abs()),
                    "entry {i}: {a} vs fd {b}"
                );
            }
            // Smoothing vanishes with the ridge.
            let smooth = p
                .clone()
                .with_kkt_ridge(1e-7)
                .expect("valid")
                .quality_grad(0, &yhat, &y);
            for (a, b) in g.iter().zip(&smooth) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + a.abs()),
                    "{g:?} vs {smooth:?}"
                );
            }
        }
    }

    #[test]
    fn exact_quality_grad_is_zero_at_a_vertex_like_the_differences() {
        let mut rng = StdRng::seed_from_u64(10);
        let p = BudgetAllocation::reference()
            .with_kkt_ridge(0.0)
            .expect("valid");
        for _ in 0..5 {
            let yhat = uniform(50, &mut rng);
            let y = uniform(50, &mut rng);
            let z = p.decide(0, &yhat);
            assert!(
                z.iter().all(|&v| v == 0.0 || v == 1.0),
                "not a vertex: {z:?}"
            );
            assert!(p.quality_grad(0, &yhat, &y).iter().all(|&v| v == 0.0));
            assert!(fd_grad(&p, &yhat, &y, 1e-6).iter().all(|&v| v.abs() < 1e-9));
        }
    }

    #[test]
    fn smoothed_derivative_moves_an_item_with_its_prediction() {
        let mut rng = StdRng::seed_from_u64(11);
        let p = BudgetAllocation::reference();
        for _ in 0..5 {
            let yhat = uniform(50, &mut rng);
            let z = p.decide(0, &yhat);
            for i in 0..5 {
                let mut e = vec![0.0; 5];
                e[i] = 1.0;
                let dzi = p.vjp(&yhat, &e);
                // dz_i/dŷ_it > 0: raising an item's predicted reach raises its allocation.
                for t in 0..10 {
                    assert!(
                        dzi[i * 10 + t] > 0.0,
                        "item {i} (z={}) target {t}: {}",
                        z[i],
                        dzi[i * 10 + t]
                    );
                }
                // The ridge is a small smoothing, not a rescaling.
                assert!(dzi.iter().all(|v| v.abs() < 1.0));
            }
        }
    }

    #[test]
    fn equal_predictions_do_not_leave_the_solver_on_the_uniform_saddle() {
        let p = BudgetAllocation::reference();
        let z = p.decide(0, &[0.5; 50]);
        assert!(z.iter().all(|&v| v == 0.0 || v == 1.0), "stuck: {z:?}");
        assert_eq!(z.iter().sum::<f64>(), 2.0);
    }

    #[test]
    fn rejects_bad_construction() {
        assert!(BudgetAllocation::new(5, 10, 5.0).is_err());
        assert!(BudgetAllocation::new(5, 10, 0.0).is_err());
        assert!(BudgetAllocation::new(0, 10, 1.0).is_err());
        assert!(BudgetAllocation::reference().with_kkt_ridge(-1.0).is_err());
        let bad = BudgetSolver {
            momentum: 1.0,
            ..BudgetSolver::default()
        };
        assert!(BudgetAllocation::reference().with_solver(bad).is_err());
    }
}
