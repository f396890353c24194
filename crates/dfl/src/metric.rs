//! TaskMet's metric net: a row's features `x` → `Linear(d, h) → ReLU → Linear(h, o²)` = `L(x)`
//! (an `o × o` matrix, row-major), and the metric `Λ(x) = L Lᵀ + e^s I`, positive definite
//! for every `x` thanks to the learned scalar `s` (the reference's `MetricNN`, with
//! `identity_fac_log` as `s`, initialised to 0).
//!
//! Parameters φ are flat: the base network's (layout of [`Mlp`]) followed by `s`.

use crate::mlp::{Activation, Cache, Mlp};
use ferrolab_core::{CoreError, Result};
use serde::{Deserialize, Serialize};

/// The metric net.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricNet {
    base: Mlp,
    o: usize,
    /// log of the identity factor.
    s: f64,
}

/// A forward pass: the base network's activations and `Λ` for each row (`n × o²`).
#[derive(Debug, Clone)]
pub struct MetricCache {
    base: Cache,
    lambda: Vec<f64>,
}

impl MetricCache {
    /// `Λ` of each row, `n × o × o` row-major (symmetric).
    pub fn lambda(&self) -> &[f64] {
        &self.lambda
    }

    pub fn rows(&self) -> usize {
        self.base.rows()
    }
}

impl MetricNet {
    /// A metric net over `d` features for `o` targets with `hidden` units, PyTorch-default
    /// initialised from `seed`. `identity_init = Some(scale)` divides the last layer's weights
    /// by `scale` and sets its bias to the flattened identity (the reference's
    /// `identity_init`, off by default, scale 100), so that `Λ ≈ 2I` at the start.
    pub fn new(
        d: usize,
        o: usize,
        hidden: usize,
        identity_init: Option<f64>,
        seed: u64,
    ) -> Result<Self> {
        if hidden == 0 {
            return Err(CoreError::Data(
                "metric net: hidden width must be positive".into(),
            ));
        }
        let mut base = Mlp::new(d, o * o, 2, hidden, Activation::None, seed)?;
        if let Some(scale) = identity_init {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(CoreError::Data(format!(
                    "metric net: identity-init scale {scale} must be positive"
                )));
            }
            let (w, b) = base.layer_mut(2);
            for v in w.iter_mut() {
                *v /= scale;
            }
            for (k, v) in b.iter_mut().enumerate() {
                *v = if k / o == k % o { 1.0 } else { 0.0 };
            }
        }
        Ok(MetricNet { base, o, s: 0.0 })
    }

    pub fn d(&self) -> usize {
        self.base.d_in()
    }

    pub fn o(&self) -> usize {
        self.o
    }

    /// `s`, the log of the identity factor.
    pub fn log_identity(&self) -> f64 {
        self.s
    }

    /// |φ|: the base network's parameters plus `s`.
    pub fn n_params(&self) -> usize {
        self.base.n_params() + 1
    }

    /// φ, flat (`s` last).
    pub fn params(&self) -> Vec<f64> {
        let mut p = self.base.theta().to_vec();
        p.push(self.s);
        p
    }

    /// Replaces φ (`s` last).
    pub fn set_params(&mut self, phi: &[f64]) -> Result<()> {
        if phi.len() != self.n_params() {
            return Err(CoreError::Data(format!(
                "metric net: {} parameters given, it has {}",
                phi.len(),
                self.n_params()
            )));
        }
        let (base, s) = phi.split_at(phi.len() - 1);
        self.base.set_theta(base)?;
        self.s = s[0];
        Ok(())
    }

    /// `Λ(x)` for `n` rows of `x` (`n × d`).
    pub fn forward(&self, x: &[f64], n: usize) -> Result<MetricCache> {
        let base = self.base.forward(x, n)?;
        let o = self.o;
        let id = self.s.exp();
        let mut lambda = vec![0.0; n * o * o];
        for (l, lam) in base.output().chunks(o * o).zip(lambda.chunks_mut(o * o)) {
            gram(l, o, id, lam);
        }
        Ok(MetricCache { base, lambda })
    }

    /// `Λ(x)` only, for `n` rows, in chunks so the hidden activations stay cache-sized
    /// (TaskMet re-evaluates Λ on every training row after each metric update).
    pub fn lambdas(&self, x: &[f64], n: usize) -> Result<Vec<f64>> {
        const CHUNK: usize = 512;
        let d = self.d();
        if x.len() != n * d {
            return Err(CoreError::Data(format!(
                "metric net: input has {} values, expected {n} rows x {d} features",
                x.len()
            )));
        }
        let o = self.o;
        let id = self.s.exp();
        let mut lambda = vec![0.0; n * o * o];
        for (xs, lams) in x.chunks(CHUNK * d).zip(lambda.chunks_mut(CHUNK * o * o)) {
            let rows = xs.len() / d;
            let ls = self.base.predict(xs, rows)?;
            for (l, lam) in ls.chunks(o * o).zip(lams.chunks_mut(o * o)) {
                gram(l, o, id, lam);
            }
        }
        Ok(lambda)
    }

    /// `∂/∂φ Σ_rows ⟨G_r, Λ_r⟩` for upstream `G = dLoss/dΛ` (`n × o²`; any square matrices,
    /// so callers need not symmetrise): `dL_r = (G_r + G_rᵀ) L_r`, `ds = e^s Σ_r tr G_r`,
    /// then the base network's backward.
    pub fn backward(&self, cache: &MetricCache, g_lambda: &[f64]) -> Result<Vec<f64>> {
        let o = self.o;
        let n = cache.rows();
        if g_lambda.len() != n * o * o {
            return Err(CoreError::Data(format!(
                "metric net: dLoss/dΛ has {} values, expected {n} rows x {o}x{o}",
                g_lambda.len()
            )));
        }
        let id = self.s.exp();
        let mut dl = vec![0.0; n * o * o];
        let mut ds = 0.0;
        for ((g, l), out) in g_lambda
            .chunks(o * o)
            .zip(cache.base.output().chunks(o * o))
            .zip(dl.chunks_mut(o * o))
        {
            for i in 0..o {
                ds += id * g[i * o + i];
                for k in 0..o {
                    out[i * o + k] = (0..o)
                        .map(|j| (g[i * o + j] + g[j * o + i]) * l[j * o + k])
                        .sum();
                }
            }
        }
        let mut grad = self.base.backward(&cache.base, &dl)?.grad;
        grad.push(ds);
        Ok(grad)
    }
}

/// `lam ← L Lᵀ + id·I` for one row's `o × o` matrix `L` (both row-major).
fn gram(l: &[f64], o: usize, id: f64, lam: &mut [f64]) {
    for i in 0..o {
        for j in 0..=i {
            let mut v: f64 = (0..o).map(|k| l[i * o + k] * l[j * o + k]).sum();
            if i == j {
                v += id;
            }
            lam[i * o + j] = v;
            lam[j * o + i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
    }

    fn objective(m: &MetricNet, x: &[f64], n: usize, g: &[f64]) -> f64 {
        let c = m.forward(x, n).unwrap();
        c.lambda().iter().zip(g).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn lambda_is_symmetric_positive_definite() {
        let (n, d, o) = (5, 3, 3);
        let mut m = MetricNet::new(d, o, 7, None, 1).unwrap();
        let mut p = m.params();
        *p.last_mut().unwrap() = -2.0;
        m.set_params(&p).unwrap();
        let x = rand_vec(n * d, 2);
        let c = m.forward(&x, n).unwrap();
        assert_eq!(m.lambdas(&x, n).unwrap(), c.lambda());
        for lam in c.lambda().chunks(o * o) {
            for i in 0..o {
                for j in 0..o {
                    assert_eq!(lam[i * o + j], lam[j * o + i]);
                }
            }
            // zᵀΛz ≥ e^s |z|² for any z.
            let z = rand_vec(o, 3);
            let q: f64 = (0..o)
                .map(|i| (0..o).map(|j| z[i] * lam[i * o + j] * z[j]).sum::<f64>())
                .sum();
            let z2: f64 = z.iter().map(|v| v * v).sum();
            assert!(q >= (-2.0f64).exp() * z2 - 1e-12);
        }
    }

    #[test]
    fn identity_init_starts_near_two_identity() {
        let m = MetricNet::new(2, 3, 50, Some(1e6), 0).unwrap();
        let c = m.forward(&[0.3, -0.7], 1).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 2.0 } else { 0.0 };
                assert!((c.lambda()[i * 3 + j] - want).abs() < 1e-4);
            }
        }
    }

    /// The backward against central differences of φ ↦ Σ ⟨G, Λ(φ)⟩ with a non-symmetric G.
    #[test]
    fn backward_matches_finite_differences() {
        let (n, d, o) = (4, 3, 2);
        let mut m = MetricNet::new(d, o, 6, None, 9).unwrap();
        let x = rand_vec(n * d, 10);
        let g = rand_vec(n * o * o, 11);
        let c = m.forward(&x, n).unwrap();
        let grad = m.backward(&c, &g).unwrap();
        let phi = m.params();
        let eps = 1e-6;
        for j in 0..m.n_params() {
            let mut p = phi.clone();
            p[j] += eps;
            m.set_params(&p).unwrap();
            let fp = objective(&m, &x, n, &g);
            p[j] -= 2.0 * eps;
            m.set_params(&p).unwrap();
            let fm = objective(&m, &x, n, &g);
            let fd = (fp - fm) / (2.0 * eps);
            assert!(
                (fd - grad[j]).abs() < 1e-7 * (1.0 + fd.abs()),
                "{j}: {fd} vs {}",
                grad[j]
            );
        }
        m.set_params(&phi).unwrap();
        assert!(m.backward(&c, &g[1..]).is_err());
    }
}
