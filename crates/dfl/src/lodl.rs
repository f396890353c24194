//! LODL (Shah, Wang, Perrault, Wilder, Tambe, NeurIPS 2022: "Decision-focused learning without
//! differentiable optimization: learning locally optimized decision losses"), the weighted-MSE
//! variant the TaskMet paper compares with and the reference runs as `method=lodl`
//! (`LODLs/losses.py`, `WeightedMSE`).
//!
//! Before training, every instance gets its own loss `ℓ_i(ŷ) = mean_j w_ij (ŷ_j − y_ij)²`,
//! `w_i ≥ 0`, fitted to the decision regret `q(z*(y_i), y_i) − q(z*(ŷ), y_i)` of predictions
//! sampled around the true targets. The predictor is then trained on `mean_i ℓ_i(ŷ_i)` like a
//! two-stage model: no decision layer in the training loop, no derivative of it at all.
//!
//! Sampling is the reference's `random_hessian` (two coordinates, drawn with replacement, each
//! moved by N(0, σ²)); σ is `std_scale` times the instance's target standard deviation, which
//! is the reference's rule when no `samplingstd` is given (its `lodl.yaml` sets an absolute
//! σ = 1, which is 50–100 standard deviations of a daily return). Samples are clamped to the
//! predictor's output range (the reference clamps budget samples to [0, 1]).
//!
//! The fit ([`LodlFit`]) is by default the reference's: `w` starts at `10⁻³ + U(0, 1)`, is
//! clamped at 10⁻³ in the loss, and takes Adam steps (lr `losslr = 0.01`, at most 100) on the
//! squared error of the predicted regret over the first 30% of the samples, keeping the
//! weights with the lowest error on the next 30% (patience 25). That fit is strongly
//! regularised towards its random start: 100 steps of 0.01 move a weight by at most about 1.
//! [`LodlFit::Exact`] instead solves the non-negative least-squares problem exactly
//! (accelerated projected gradient on the normal equations) on the first 60%. Either way the
//! reported fit quality is the relative mean absolute error on the last 40%, which neither
//! fit has seen.

use crate::mlp::Activation;
use crate::optim::Adam;
use crate::problem::DecisionProblem;
use ferrolab_core::{CoreError, Result, seed};
use rand::RngExt;
use rand::rngs::StdRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How the weights are fitted to the sampled regrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LodlFit {
    /// The reference's: Adam from a random start with early stopping.
    Adam,
    /// Exact non-negative least squares.
    Exact,
}

/// How the local losses are fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LodlConfig {
    /// Sampled predictions per instance (the reference: `numsamples`).
    pub samples: usize,
    /// σ of the perturbations in units of the instance's target standard deviation.
    pub std_scale: f64,
    pub fit: LodlFit,
    /// Adam steps (the reference's `num_iters = 100`) or NNLS iterations.
    pub fit_iters: usize,
    /// Adam rate (`losslr: 0.01`).
    pub lr: f64,
}

impl Default for LodlConfig {
    fn default() -> Self {
        LodlConfig {
            samples: 1000,
            std_scale: 1.0,
            fit: LodlFit::Adam,
            fit_iters: 100,
            lr: 0.01,
        }
    }
}

/// The reference's `WeightedMSE` minimum weight.
const MIN_WEIGHT: f64 = 1e-3;

/// The fitted weights of every instance, and how well they fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalLosses {
    /// Targets per instance.
    pub per: usize,
    /// `n × per` weights, in the instances' order.
    pub weights: Vec<f64>,
    /// Mean over instances of `mean|ℓ(ŷ) − regret| / mean|regret|` on the held-out samples
    /// (instances whose held-out regrets are all zero are left out).
    pub holdout_rel_mae: f64,
    /// Instances whose sampled regrets were all zero (decisions insensitive at that scale):
    /// they get uniform weights, i.e. plain MSE.
    pub flat_instances: usize,
    pub seconds: f64,
}

impl LocalLosses {
    pub fn weights_of(&self, i: usize) -> &[f64] {
        &self.weights[i * self.per..(i + 1) * self.per]
    }

    /// `mean_j w_ij (ŷ_j − y_j)²` for the instances at positions `idx` (predictions and
    /// targets laid out per instance, in `idx` order), averaged over them.
    pub fn loss(&self, idx: &[usize], yhat: &[f64], y: &[f64]) -> f64 {
        let per = self.per;
        let s: f64 = idx
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let w = self.weights_of(i);
                (0..per)
                    .map(|j| {
                        let e = yhat[k * per + j] - y[k * per + j];
                        w[j] * e * e
                    })
                    .sum::<f64>()
            })
            .sum();
        s / (idx.len().max(1) * per) as f64
    }

    /// `d loss / dŷ` of [`LocalLosses::loss`].
    pub fn grad(&self, idx: &[usize], yhat: &[f64], y: &[f64]) -> Vec<f64> {
        let per = self.per;
        let c = 2.0 / (idx.len().max(1) * per) as f64;
        let mut g = vec![0.0; idx.len() * per];
        for (k, &i) in idx.iter().enumerate() {
            let w = self.weights_of(i);
            for j in 0..per {
                g[k * per + j] = c * w[j] * (yhat[k * per + j] - y[k * per + j]);
            }
        }
        g
    }
}

/// A standard normal draw (Box–Muller; one of the pair is dropped to keep the stream simple).
fn normal(rng: &mut StdRng) -> f64 {
    let u1 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn clamp_to(act: Activation, v: f64) -> f64 {
    match act {
        Activation::Relu => v.max(0.0),
        Activation::Sigmoid => v.clamp(0.0, 1.0),
        Activation::Tanh => v.clamp(-1.0, 1.0),
        Activation::None => v,
    }
}

/// `min_{w ≥ 0} ½ wᵀGw − bᵀw` by FISTA with step `1/λmax(G)`.
fn nnls(g: &[f64], b: &[f64], iters: usize) -> Vec<f64> {
    let p = b.len();
    let matvec = |v: &[f64], out: &mut [f64]| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = g[i * p..(i + 1) * p]
                .iter()
                .zip(v)
                .map(|(a, x)| a * x)
                .sum();
        }
    };
    // λmax by power iteration; 1.05x margin because a few iterations underestimate it.
    let mut v = vec![1.0 / (p as f64).sqrt(); p];
    let mut gv = vec![0.0; p];
    let mut lmax = 0.0;
    for _ in 0..50 {
        matvec(&v, &mut gv);
        let nrm = gv.iter().map(|x| x * x).sum::<f64>().sqrt();
        if nrm <= 0.0 {
            break;
        }
        lmax = nrm;
        v.iter_mut().zip(&gv).for_each(|(a, b)| *a = b / nrm);
    }
    let mut w = vec![0.0; p];
    if !(lmax > 0.0 && lmax.is_finite()) {
        return w;
    }
    let step = 1.0 / (1.05 * lmax);
    let mut z = w.clone();
    let mut t = 1.0f64;
    let mut gz = vec![0.0; p];
    for _ in 0..iters {
        matvec(&z, &mut gz);
        let w_new: Vec<f64> = z
            .iter()
            .zip(gz.iter().zip(b))
            .map(|(zi, (gi, bi))| (zi - step * (gi - bi)).max(0.0))
            .collect();
        let t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
        let mom = (t - 1.0) / t_new;
        for i in 0..p {
            z[i] = w_new[i] + mom * (w_new[i] - w[i]);
        }
        w = w_new;
        t = t_new;
    }
    w
}

/// One instance's fit: (weights, held-out relative MAE if defined, all regrets zero).
fn fit_one(
    problem: &dyn DecisionProblem,
    id: usize,
    y: &[f64],
    act: Activation,
    cfg: &LodlConfig,
    rng: &mut StdRng,
) -> Result<(Vec<f64>, Option<f64>, bool)> {
    let per = y.len();
    let ym = y.iter().sum::<f64>() / per as f64;
    let ystd = (y.iter().map(|v| (v - ym) * (v - ym)).sum::<f64>() / per as f64).sqrt();
    // The reference's `torch.std(Y) + 1e-5`.
    let sigma = cfg.std_scale * (ystd + 1e-5);
    let q_opt = problem.quality(id, &problem.decide(id, y), y);
    let s = cfg.samples;
    // Features a_sj = (ŷ_sj − y_j)², stored sparsely: at most two coordinates move.
    let mut feats: Vec<[(usize, f64); 2]> = Vec::with_capacity(s);
    let mut regret = Vec::with_capacity(s);
    let mut yh = y.to_vec();
    for _ in 0..s {
        yh.copy_from_slice(y);
        let (j1, j2) = (rng.random_range(0..per), rng.random_range(0..per));
        let (n1, n2) = (normal(rng), normal(rng));
        yh[j1] += sigma * n1;
        yh[j2] += sigma * n2;
        yh[j1] = clamp_to(act, yh[j1]);
        yh[j2] = clamp_to(act, yh[j2]);
        let q = problem.quality(id, &problem.decide(id, &yh), y);
        if !q.is_finite() {
            return Err(CoreError::Runtime(format!(
                "LODL: decision quality of a sample around instance {id} is not finite"
            )));
        }
        let (e1, e2) = (yh[j1] - y[j1], yh[j2] - y[j2]);
        feats.push(if j1 == j2 {
            [(j1, e1 * e1), (j2, 0.0)]
        } else {
            [(j1, e1 * e1), (j2, e2 * e2)]
        });
        regret.push(q_opt - q);
    }
    // The loss model is mean_j w_j a_j, so the design matrix carries the 1/per.
    let inv = 1.0 / per as f64;
    let (n_train, n_val) = ((s * 3 / 10).max(1), (s * 3 / 10).max(1));
    let n_fit = match cfg.fit {
        LodlFit::Adam => n_train,
        LodlFit::Exact => n_train + n_val,
    }
    .min(s);
    let predict = |w: &[f64], f: &[(usize, f64); 2]| -> f64 {
        f.iter().map(|&(j, a)| inv * w[j].max(MIN_WEIGHT) * a).sum()
    };
    let w = match cfg.fit {
        LodlFit::Exact => {
            let mut gram = vec![0.0; per * per];
            let mut rhs = vec![0.0; per];
            for (f, &r) in feats[..n_fit].iter().zip(&regret[..n_fit]) {
                for &(j, a) in f {
                    rhs[j] += inv * a * r;
                    for &(k, c) in f {
                        gram[j * per + k] += inv * inv * a * c;
                    }
                }
            }
            let w = nnls(&gram, &rhs, cfg.fit_iters);
            let wmean = w.iter().sum::<f64>() / per as f64;
            if !(wmean > 0.0 && wmean.is_finite()) {
                return Ok((vec![1.0; per], None, true));
            }
            // A floor keeps every coordinate in the loss, so a coordinate no sample found
            // relevant still has a well-defined minimiser.
            let floor = 1e-3 * wmean;
            w.iter().map(|v| v.max(floor)).collect::<Vec<_>>()
        }
        LodlFit::Adam => {
            if regret.iter().all(|r| *r == 0.0) {
                return Ok((vec![1.0; per], None, true));
            }
            let mut w: Vec<f64> = (0..per).map(|_| MIN_WEIGHT + rng.random::<f64>()).collect();
            let val_end = (n_train + n_val).min(s);
            let sq_err = |w: &[f64], lo: usize, hi: usize| -> f64 {
                let m = (hi - lo).max(1) as f64;
                feats[lo..hi]
                    .iter()
                    .zip(&regret[lo..hi])
                    .map(|(f, r)| (predict(w, f) - r).powi(2))
                    .sum::<f64>()
                    / m
            };
            let mut adam = Adam::new(per, cfg.lr);
            let mut best = (f64::INFINITY, w.clone());
            let mut since_best = 0usize;
            let mut g = vec![0.0; per];
            for _ in 0..cfg.fit_iters {
                let v = sq_err(&w, n_train, val_end);
                if v < best.0 {
                    best = (v, w.clone());
                    since_best = 0;
                }
                if since_best > 25 {
                    break;
                }
                g.fill(0.0);
                let c = 2.0 / n_train as f64;
                for (f, r) in feats[..n_train].iter().zip(&regret[..n_train]) {
                    let res = predict(&w, f) - r;
                    for &(j, a) in f {
                        // The clamp passes no gradient below the minimum, as torch's does.
                        if w[j] >= MIN_WEIGHT {
                            g[j] += c * res * inv * a;
                        }
                    }
                }
                adam.step(&mut w, &g);
                since_best += 1;
            }
            best.1.iter().map(|v| v.max(MIN_WEIGHT)).collect()
        }
    };
    let held_from = (n_train + n_val).min(s);
    let held = &regret[held_from..];
    let mae_rel = if held.is_empty() {
        None
    } else {
        let denom = held.iter().map(|r| r.abs()).sum::<f64>();
        let err: f64 = feats[held_from..]
            .iter()
            .zip(held)
            .map(|(f, r)| (predict(&w, f) - r).abs())
            .sum();
        (denom > 0.0).then(|| err / denom)
    };
    Ok((w, mae_rel, false))
}

/// Fits a local loss for every instance (`ids`, targets `y`: `ids.len() × per`), in parallel;
/// instance `id`'s samples come from `seed` and `id` alone, so the fit does not depend on the
/// thread count or on which split the instance sits in.
pub fn fit_local_losses(
    problem: &dyn DecisionProblem,
    ids: &[usize],
    y: &[f64],
    per: usize,
    act: Activation,
    cfg: &LodlConfig,
    seed_: u64,
) -> Result<LocalLosses> {
    if per == 0 || y.len() != ids.len() * per {
        return Err(CoreError::Data(format!(
            "LODL: {} targets for {} instances of {per}",
            y.len(),
            ids.len()
        )));
    }
    if cfg.samples < 4
        || cfg.fit_iters == 0
        || !(cfg.std_scale.is_finite() && cfg.std_scale > 0.0)
        || !(cfg.lr.is_finite() && cfg.lr > 0.0)
    {
        return Err(CoreError::Data(format!(
            "LODL: need samples ≥ 4, fit_iters ≥ 1, a positive std_scale and lr, got {}, {}, {}, {}",
            cfg.samples, cfg.fit_iters, cfg.std_scale, cfg.lr
        )));
    }
    let t = std::time::Instant::now();
    let fits: Vec<(Vec<f64>, Option<f64>, bool)> = ids
        .par_iter()
        .enumerate()
        .map(|(i, &id)| {
            let mut rng = seed::rng(seed_, &format!("dfl.lodl/{id}"));
            fit_one(problem, id, &y[i * per..(i + 1) * per], act, cfg, &mut rng)
        })
        .collect::<Result<_>>()?;
    let maes: Vec<f64> = fits.iter().filter_map(|f| f.1).collect();
    Ok(LocalLosses {
        per,
        weights: fits.iter().flat_map(|f| f.0.iter().copied()).collect(),
        holdout_rel_mae: if maes.is_empty() {
            f64::NAN
        } else {
            maes.iter().sum::<f64>() / maes.len() as f64
        },
        flat_instances: fits.iter().filter(|f| f.2).count(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Quality `−Σ_j c_j (ŷ_j − y_j)²` through the identity decision `z = ŷ`: the regret is
    /// exactly a weighted squared error, so the fit must recover `c` (divided by `1/per`).
    struct Quadratic {
        c: Vec<f64>,
    }

    impl DecisionProblem for Quadratic {
        fn name(&self) -> &'static str {
            "quadratic"
        }
        fn decide(&self, _id: usize, yhat: &[f64]) -> Vec<f64> {
            yhat.to_vec()
        }
        fn quality(&self, _id: usize, z: &[f64], y: &[f64]) -> f64 {
            -self
                .c
                .iter()
                .zip(z.iter().zip(y))
                .map(|(c, (a, b))| c * (a - b) * (a - b))
                .sum::<f64>()
        }
        fn quality_grad(&self, _id: usize, _yhat: &[f64], _y: &[f64]) -> Vec<f64> {
            unreachable!("LODL never differentiates the decision")
        }
    }

    #[test]
    fn recovers_an_exactly_weighted_regret() {
        let c = vec![3.0, 0.0, 1.0, 0.5];
        let p = Quadratic { c: c.clone() };
        let y = vec![0.3, -1.0, 2.0, 0.7, 0.1, 0.2, -0.4, 1.1];
        let cfg = LodlConfig {
            samples: 400,
            fit: LodlFit::Exact,
            fit_iters: 500,
            ..LodlConfig::default()
        };
        let ll = fit_local_losses(&p, &[0, 1], &y, 4, Activation::None, &cfg, 3).unwrap();
        for i in 0..2 {
            let w = ll.weights_of(i);
            for j in 0..4 {
                // The loss is mean_j, so w_j = per · c_j; c_1 = 0 sits at the floor.
                let want = (4.0 * c[j]).max(1e-3 * 4.0 * 4.5 / 4.0);
                assert!((w[j] - want).abs() < 1e-6 * (1.0 + want), "{i},{j}: {w:?}");
            }
        }
        // Only the floor on the irrelevant coordinate's weight leaves a held-out error.
        assert!(
            ll.holdout_rel_mae > 0.0 && ll.holdout_rel_mae < 1e-3,
            "{}",
            ll.holdout_rel_mae
        );
        assert_eq!(ll.flat_instances, 0);
        // Same seed, same weights; another seed samples other points but fits the same c.
        let again = fit_local_losses(&p, &[0, 1], &y, 4, Activation::None, &cfg, 3).unwrap();
        assert_eq!(again.weights, ll.weights);
        // loss and grad agree with finite differences.
        let yhat = vec![0.5, -0.2, 1.0, 0.9, 0.0, 0.4, -0.1, 1.0];
        let g = ll.grad(&[0, 1], &yhat, &y);
        for j in 0..8 {
            let mut a = yhat.clone();
            a[j] += 1e-6;
            let mut b = yhat.clone();
            b[j] -= 1e-6;
            let fd = (ll.loss(&[0, 1], &a, &y) - ll.loss(&[0, 1], &b, &y)) / 2e-6;
            assert!((fd - g[j]).abs() < 1e-6, "{j}: {fd} vs {}", g[j]);
        }
    }

    /// The reference's fit moves each weight by about `lr · iters` at most, towards the
    /// regret: the relevant coordinate's weight ends above the irrelevant one's.
    #[test]
    fn adam_fit_moves_the_weights_towards_the_regret() {
        let p = Quadratic {
            c: vec![3.0, 0.0, 1.0, 0.5],
        };
        let y = vec![0.3, -1.0, 2.0, 0.7];
        let cfg = LodlConfig::default();
        let ll = fit_local_losses(
            &p,
            &[0, 5, 9],
            &[y.clone(), y.clone(), y].concat(),
            4,
            Activation::None,
            &cfg,
            1,
        )
        .unwrap();
        let mut gap = 0.0;
        for i in 0..3 {
            let w = ll.weights_of(i);
            assert!(w[0] > w[1], "{i}: {w:?}");
            assert!(w.iter().all(|v| *v >= MIN_WEIGHT && *v < 2.1), "{w:?}");
            gap += (w[0] - w[1]) / 3.0;
        }
        assert!(gap > 0.5, "{gap}");
        // Different instances draw different samples and starts.
        assert_ne!(ll.weights_of(0), ll.weights_of(1));
        assert!(ll.holdout_rel_mae.is_finite());
    }

    #[test]
    fn insensitive_decisions_fall_back_to_mse_and_bad_input_is_refused() {
        struct Constant;
        impl DecisionProblem for Constant {
            fn name(&self) -> &'static str {
                "constant"
            }
            fn decide(&self, _id: usize, yhat: &[f64]) -> Vec<f64> {
                vec![1.0; yhat.len()]
            }
            fn quality(&self, _id: usize, z: &[f64], y: &[f64]) -> f64 {
                z.iter().zip(y).map(|(a, b)| a * b).sum()
            }
            fn quality_grad(&self, _id: usize, yhat: &[f64], _y: &[f64]) -> Vec<f64> {
                vec![0.0; yhat.len()]
            }
        }
        let cfg = LodlConfig::default();
        let ll =
            fit_local_losses(&Constant, &[0], &[1.0, 2.0], 2, Activation::Relu, &cfg, 0).unwrap();
        assert_eq!(ll.weights, vec![1.0, 1.0]);
        assert_eq!(ll.flat_instances, 1);
        assert!(fit_local_losses(&Constant, &[0], &[1.0], 2, Activation::None, &cfg, 0).is_err());
        let bad = LodlConfig { samples: 3, ..cfg };
        assert!(fit_local_losses(&Constant, &[0], &[1.0], 1, Activation::None, &bad, 0).is_err());
    }

    #[test]
    fn nnls_matches_a_known_solution() {
        // G = diag(2, 1), b = (2, −1): unconstrained (1, −1), constrained (1, 0).
        let w = nnls(&[2.0, 0.0, 0.0, 1.0], &[2.0, -1.0], 200);
        assert!((w[0] - 1.0).abs() < 1e-9 && w[1] == 0.0, "{w:?}");
        let mut rng = StdRng::seed_from_u64(0);
        let draws: Vec<f64> = (0..20000).map(|_| normal(&mut rng)).collect();
        let m = draws.iter().sum::<f64>() / 2e4;
        let v = draws.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 2e4;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "{m} {v}");
    }
}
