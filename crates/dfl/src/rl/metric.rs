//! The state-conditioned metric of the model loss, `Λφ(s)`, as the reference builds it for
//! CartPole (`utils.py: net_fn('metric')`, `lower_tri_matrix: True`,
//! `metric_activation: normalize`), on our [`Mlp`] and with our metric's PD term:
//!
//! `s → Linear(o, h) → ReLU → Linear(h, o(o+1)/2)` = the packed lower-triangular `L(s)`,
//! `Λ_raw = L Lᵀ + e^σ I`, and `Λ = Λ_raw · √o / ‖diag Λ_raw‖₂`.
//!
//! The normalisation (the reference's) fixes the metric's scale, so the outer problem can only
//! re-weight directions, not inflate the model's step size; `e^σ I` ([`crate::metric`]'s
//! identity factor) keeps Λ positive definite. [`crate::metric::MetricNet`] forms the dense
//! `o × o` matrices, `O(o³)` per row; with 256 distractors (`o = 260`) that is too slow, so this
//! one never forms Λ: every use is a product (`Λv = ν(L(Lᵀv) + e^σ v)`, `O(o²)`), and the
//! gradient of `Σ_rows a_rᵀ Λ_r b_r` is written out in `L`.
//!
//! [`StateMetric::diagonal`] is a cheaper form (not the reference's): `L(s)` diagonal, the base
//! net's output being its `o` diagonal entries, so Λ costs `O(o)` per row; with 256
//! distractors the full form's `o(o+1)/2 = 33,930` outputs per row dominate the step.
//!
//! φ = the base network's θ, then σ. The last layer starts with orthogonal weights of gain
//! 1e-2 (the reference's `final_init`) and the packed identity as bias (the reference uses a
//! bias of 1.0 on every packed entry, which makes its initial metric a dense, non-identity
//! matrix; starting at Λ = I makes TaskMet start from the MSE model loss instead).
//!
//! [`GlobalMetric`] is the form the reference's CartPole *figure* was made with (its code at the
//! commit that added the figure): one softplus weight per observation dimension, shared by all
//! states, normalised the same way. [`ModelMetric`] holds either family for the agent.

use super::RlRng;
use super::nets::init_net;
use crate::mlp::{Cache, Mlp};
use ferrolab_core::{CoreError, Result};
use serde::{Deserialize, Serialize};

/// The metric net.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMetric {
    base: Mlp,
    o: usize,
    /// `L` diagonal: the base net outputs `o` values instead of the packed triangle.
    diag: bool,
    /// log of the identity factor.
    sigma: f64,
}

/// Λ at `n` rows: the packed `L` per row and the normaliser; products only.
#[derive(Debug, Clone)]
pub struct MetricEval {
    cache: Cache,
    n: usize,
    o: usize,
    diagonal: bool,
    /// e^σ.
    es: f64,
    /// ν_r = √o / ‖diag Λ_raw,r‖.
    nu: Vec<f64>,
    /// diag Λ_raw per row (`n × o`).
    diag: Vec<f64>,
}

fn packed(i: usize) -> usize {
    i * (i + 1) / 2
}

/// Outputs per row of the base net: the packed triangle, or the diagonal.
fn width(o: usize, diag: bool) -> usize {
    if diag { o } else { packed(o) }
}

/// Row `i` of `L` (entries `j ≤ i`) and the column it starts at.
fn l_row(l: &[f64], i: usize, diag: bool) -> (&[f64], usize) {
    if diag {
        (&l[i..=i], i)
    } else {
        (&l[packed(i)..packed(i) + i + 1], 0)
    }
}

/// `Lᵀ v` for one row's `L`.
fn lt_mul(l: &[f64], v: &[f64], out: &mut [f64], diag: bool) {
    if diag {
        for ((o, a), b) in out.iter_mut().zip(l).zip(v) {
            *o = a * b;
        }
        return;
    }
    out.fill(0.0);
    for (i, &vi) in v.iter().enumerate() {
        let row = &l[packed(i)..packed(i) + i + 1];
        for (o, &lij) in out.iter_mut().zip(row) {
            *o += lij * vi;
        }
    }
}

/// `out += c · L w` for one row's `L`.
fn l_mul_add(l: &[f64], w: &[f64], c: f64, out: &mut [f64], diag: bool) {
    if diag {
        for ((o, a), b) in out.iter_mut().zip(l).zip(w) {
            *o += c * a * b;
        }
        return;
    }
    for (i, o) in out.iter_mut().enumerate() {
        let row = &l[packed(i)..packed(i) + i + 1];
        *o += c * row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl StateMetric {
    /// A metric over observations of size `o` with `hidden` units (the reference's form).
    pub fn new(o: usize, hidden: usize, rng: &mut RlRng) -> Result<Self> {
        Self::with_form(o, hidden, false, rng)
    }

    /// The diagonal form: `L(s)` diagonal.
    pub fn diagonal(o: usize, hidden: usize, rng: &mut RlRng) -> Result<Self> {
        Self::with_form(o, hidden, true, rng)
    }

    fn with_form(o: usize, hidden: usize, diag: bool, rng: &mut RlRng) -> Result<Self> {
        if o == 0 || hidden == 0 {
            return Err(CoreError::Data(format!(
                "metric: need positive sizes, got o={o} hidden={hidden}"
            )));
        }
        let p = width(o, diag);
        let mut bias = vec![0.0; p];
        for i in 0..o {
            bias[if diag { i } else { packed(i) + i }] = 1.0;
        }
        let base = init_net(o, p, 2, hidden, 1e-2, Some(&bias), rng)?;
        Ok(StateMetric {
            base,
            o,
            diag,
            sigma: 0.0,
        })
    }

    pub fn is_diagonal(&self) -> bool {
        self.diag
    }

    pub fn o(&self) -> usize {
        self.o
    }

    pub fn n_params(&self) -> usize {
        self.base.n_params() + 1
    }

    /// φ, flat (σ last).
    pub fn params(&self) -> Vec<f64> {
        let mut p = self.base.theta().to_vec();
        p.push(self.sigma);
        p
    }

    /// Replaces φ (σ last).
    pub fn set_params(&mut self, phi: &[f64]) -> Result<()> {
        if phi.len() != self.n_params() {
            return Err(CoreError::Data(format!(
                "metric: {} parameters given, it has {}",
                phi.len(),
                self.n_params()
            )));
        }
        let (base, s) = phi.split_at(phi.len() - 1);
        self.base.set_theta(base)?;
        self.sigma = s[0];
        Ok(())
    }

    /// Λ at `n` rows of observations `x` (`n × o`).
    pub fn eval(&self, x: &[f64], n: usize) -> Result<MetricEval> {
        let cache = self.base.forward(x, n)?;
        let (o, p, form) = (self.o, width(self.o, self.diag), self.diag);
        let es = self.sigma.exp();
        let mut diag = vec![0.0; n * o];
        let mut nu = vec![0.0; n];
        for ((l, dg), nu) in cache
            .output()
            .chunks_exact(p)
            .zip(diag.chunks_exact_mut(o))
            .zip(nu.iter_mut())
        {
            for (i, d) in dg.iter_mut().enumerate() {
                let (row, _) = l_row(l, i, form);
                *d = dot(row, row) + es;
            }
            // diag ≥ e^σ > 0, so the norm is positive.
            *nu = (o as f64).sqrt() / dot(dg, dg).sqrt();
        }
        Ok(MetricEval {
            cache,
            n,
            o,
            diagonal: form,
            es,
            nu,
            diag,
        })
    }

    /// `∂/∂φ Σ_r a_rᵀ Λ_r b_r` (`a`, `b`: `n × o`) at the rows of `ev`.
    ///
    /// With `R = aᵀΛ_raw b = (Lᵀa)·(Lᵀb) + e^σ a·b`, `δ = diag Λ_raw`, `D = ‖δ‖`, `ν = √o/D`:
    /// `∂/∂L_ij = ν (a_i (Lᵀb)_j + b_i (Lᵀa)_j) − 2 R ν δ_i L_ij / D²` (j ≤ i),
    /// `∂/∂σ = ν e^σ a·b − R ν e^σ Σ_i δ_i / D²`.
    pub fn backward_bilinear(&self, ev: &MetricEval, a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
        let (n, o, diag) = (ev.n, ev.o, ev.diagonal);
        let p = width(o, diag);
        if o != self.o || diag != self.diag || a.len() != n * o || b.len() != n * o {
            return Err(CoreError::Data(format!(
                "metric backward: {} and {} values for {n} rows of {o}",
                a.len(),
                b.len()
            )));
        }
        let mut dl = vec![0.0; n * p];
        let mut dsigma = 0.0;
        let (mut la, mut lb) = (vec![0.0; o], vec![0.0; o]);
        for r in 0..n {
            let l = &ev.cache.output()[r * p..(r + 1) * p];
            let (ar, br) = (&a[r * o..(r + 1) * o], &b[r * o..(r + 1) * o]);
            let dg = &ev.diag[r * o..(r + 1) * o];
            let nu = ev.nu[r];
            lt_mul(l, ar, &mut la, diag);
            lt_mul(l, br, &mut lb, diag);
            let ab = dot(ar, br);
            let big_r = dot(&la, &lb) + ev.es * ab;
            let d2 = dot(dg, dg);
            let c = 2.0 * big_r * nu / d2;
            let out = &mut dl[r * p..(r + 1) * p];
            for i in 0..o {
                let (row, j0) = l_row(l, i, diag);
                let start = if diag { i } else { packed(i) };
                let orow = &mut out[start..start + row.len()];
                for (jj, (g, &lij)) in orow.iter_mut().zip(row).enumerate() {
                    let j = j0 + jj;
                    *g = nu * (ar[i] * lb[j] + br[i] * la[j]) - c * dg[i] * lij;
                }
            }
            dsigma += nu * ev.es * ab - big_r * nu * ev.es * dg.iter().sum::<f64>() / d2;
        }
        let mut grad = self.base.backward(&ev.cache, &dl)?.grad;
        grad.push(dsigma);
        Ok(grad)
    }
}

impl MetricEval {
    pub fn rows(&self) -> usize {
        self.n
    }

    /// `Λ_r v_r` for every row (`v`: `n × o`), times `scale`.
    pub fn apply(&self, v: &[f64], scale: f64) -> Vec<f64> {
        let (o, diag) = (self.o, self.diagonal);
        let p = width(o, diag);
        let mut out = vec![0.0; v.len()];
        let mut w = vec![0.0; o];
        for (r, (vr, outr)) in v.chunks_exact(o).zip(out.chunks_exact_mut(o)).enumerate() {
            let l = &self.cache.output()[r * p..(r + 1) * p];
            let c = scale * self.nu[r];
            lt_mul(l, vr, &mut w, diag);
            l_mul_add(l, &w, c, outr, diag);
            for (oi, &vi) in outr.iter_mut().zip(vr) {
                *oi += c * self.es * vi;
            }
        }
        out
    }

    /// `Σ_r v_rᵀ Λ_r v_r`.
    pub fn quad(&self, v: &[f64]) -> f64 {
        let (o, diag) = (self.o, self.diagonal);
        let p = width(o, diag);
        let mut w = vec![0.0; o];
        v.chunks_exact(o)
            .enumerate()
            .map(|(r, vr)| {
                let l = &self.cache.output()[r * p..(r + 1) * p];
                lt_mul(l, vr, &mut w, diag);
                self.nu[r] * (dot(&w, &w) + self.es * dot(vr, vr))
            })
            .sum()
    }

    /// Row `r`'s Λ as a dense `o × o` matrix (tests and diagnostics; `O(o³)`).
    pub fn dense(&self, r: usize) -> Vec<f64> {
        let o = self.o;
        let mut lam = vec![0.0; o * o];
        let mut e = vec![0.0; self.n * o];
        for j in 0..o {
            e.fill(0.0);
            e[r * o + j] = 1.0;
            let col = self.apply(&e, 1.0);
            for i in 0..o {
                lam[i * o + j] = col[r * o + i];
            }
        }
        lam
    }
}

/// The metric the reference's CartPole figure was made with (`omd/cartpole/utils.py` at commit
/// 8ffbf5a, "experiments to neurips", which added `plot.py` and `distractors.pdf`): its
/// `config/default.yaml` there sets `metric_contional: False`, and that branch of
/// `net_fn('metric')` is one learned parameter per observation dimension, shared by every
/// state,
///
/// `λ = √o · softplus(w) / ‖softplus(w)‖₂`, `Λ = diag(λ)`, `w` starting at 1.0,
///
/// so the outer problem can only re-weight whole dimensions (a distractor's weight can go to
/// zero, the real state's can grow), at a fixed total scale. The state-conditioned
/// lower-triangular [`StateMetric`] is what that file became two months later (commit
/// e08abf0, "post neurips limited model capacity exps").
///
/// `floor` (0 in the reference) mixes in a fixed share of the identity,
/// `λ' = floor + (1 − floor)·λ`, so that no dimension's weight can fall below `floor`: an
/// option for the case where the outer problem drives a *real* state dimension to zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalMetric {
    w: Vec<f64>,
    floor: f64,
}

/// Λ of a [`GlobalMetric`], the same for every row.
#[derive(Debug, Clone)]
pub struct GlobalEval {
    /// λ.
    lam: Vec<f64>,
    /// softplus(w).
    s: Vec<f64>,
    /// σ(w) = softplus′(w).
    ds: Vec<f64>,
    /// ‖softplus(w)‖.
    norm: f64,
}

fn softplus(x: f64) -> f64 {
    // ln(1 + eˣ) without overflow for large x.
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn logistic(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl GlobalMetric {
    /// `o` weights at the reference's initial value 1.0 (so Λ = I).
    pub fn new(o: usize) -> Result<Self> {
        if o == 0 {
            return Err(CoreError::Data("metric: need a positive size".into()));
        }
        Ok(GlobalMetric {
            w: vec![1.0; o],
            floor: 0.0,
        })
    }

    /// As [`GlobalMetric::new`], with every weight kept at or above `floor` (in `[0, 1)`).
    pub fn with_floor(o: usize, floor: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&floor) {
            return Err(CoreError::Data(format!(
                "metric: floor {floor} is outside [0, 1)"
            )));
        }
        let mut m = GlobalMetric::new(o)?;
        m.floor = floor;
        Ok(m)
    }

    pub fn o(&self) -> usize {
        self.w.len()
    }

    pub fn n_params(&self) -> usize {
        self.w.len()
    }

    pub fn params(&self) -> Vec<f64> {
        self.w.clone()
    }

    pub fn set_params(&mut self, phi: &[f64]) -> Result<()> {
        if phi.len() != self.w.len() {
            return Err(CoreError::Data(format!(
                "metric: {} parameters given, it has {}",
                phi.len(),
                self.w.len()
            )));
        }
        self.w.copy_from_slice(phi);
        Ok(())
    }

    pub fn eval(&self) -> GlobalEval {
        let o = self.w.len();
        let s: Vec<f64> = self.w.iter().map(|&w| softplus(w)).collect();
        let ds: Vec<f64> = self.w.iter().map(|&w| logistic(w)).collect();
        // softplus > 0, so the norm is positive.
        let norm = dot(&s, &s).sqrt();
        let c = (o as f64).sqrt() / norm;
        let f = self.floor;
        GlobalEval {
            lam: s.iter().map(|v| f + (1.0 - f) * c * v).collect(),
            s,
            ds,
            norm,
        }
    }

    /// `∂/∂w Σ_r a_rᵀ Λ b_r`: with `G_j = Σ_r a_rj b_rj` and `N = ‖s‖`,
    /// `∂/∂w_k = √o σ(w_k)/N · (G_k − s_k (G·s)/N²)`.
    pub fn backward_bilinear(&self, ev: &GlobalEval, a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
        let o = self.w.len();
        if ev.lam.len() != o || a.len() != b.len() || !a.len().is_multiple_of(o) {
            return Err(CoreError::Data(format!(
                "metric backward: {} and {} values for rows of {o}",
                a.len(),
                b.len()
            )));
        }
        let mut g = vec![0.0; o];
        for (ar, br) in a.chunks_exact(o).zip(b.chunks_exact(o)) {
            for ((gj, x), y) in g.iter_mut().zip(ar).zip(br) {
                *gj += x * y;
            }
        }
        let gs = dot(&g, &ev.s) / (ev.norm * ev.norm);
        let c = (1.0 - self.floor) * (o as f64).sqrt() / ev.norm;
        Ok((0..o)
            .map(|k| c * ev.ds[k] * (g[k] - ev.s[k] * gs))
            .collect())
    }
}

impl GlobalEval {
    /// λ, the diagonal of Λ.
    pub fn weights(&self) -> &[f64] {
        &self.lam
    }

    /// `Λ v_r` for every row, times `scale`.
    pub fn apply(&self, v: &[f64], scale: f64) -> Vec<f64> {
        let o = self.lam.len();
        let mut out = Vec::with_capacity(v.len());
        for vr in v.chunks_exact(o) {
            out.extend(vr.iter().zip(&self.lam).map(|(x, l)| scale * l * x));
        }
        out
    }

    /// `Σ_r v_rᵀ Λ v_r`.
    pub fn quad(&self, v: &[f64]) -> f64 {
        let o = self.lam.len();
        v.chunks_exact(o)
            .map(|vr| {
                vr.iter()
                    .zip(&self.lam)
                    .map(|(x, l)| l * x * x)
                    .sum::<f64>()
            })
            .sum()
    }
}

/// TaskMet's model metric in either family: state-conditioned ([`StateMetric`], full or
/// diagonal `L(s)`) or one weight per dimension ([`GlobalMetric`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelMetric {
    State(StateMetric),
    Global(GlobalMetric),
}

/// Λ at a batch's rows, for either family.
#[derive(Debug, Clone)]
pub enum ModelMetricEval {
    State(MetricEval),
    Global(GlobalEval),
}

impl ModelMetric {
    /// The same family and the same sizes as `other` (a metric read back from a checkpoint
    /// against a fresh one of the run's configuration).
    pub fn same_shape(&self, other: &ModelMetric) -> bool {
        match (self, other) {
            (ModelMetric::State(a), ModelMetric::State(b)) => {
                a.o == b.o
                    && a.diag == b.diag
                    && a.base.sizes() == b.base.sizes()
                    && a.base.theta().len() == b.base.theta().len()
                    && a.base.output_activation() == b.base.output_activation()
            }
            (ModelMetric::Global(a), ModelMetric::Global(b)) => {
                a.w.len() == b.w.len() && a.floor == b.floor
            }
            _ => false,
        }
    }

    pub fn n_params(&self) -> usize {
        match self {
            ModelMetric::State(m) => m.n_params(),
            ModelMetric::Global(m) => m.n_params(),
        }
    }

    pub fn params(&self) -> Vec<f64> {
        match self {
            ModelMetric::State(m) => m.params(),
            ModelMetric::Global(m) => m.params(),
        }
    }

    pub fn set_params(&mut self, phi: &[f64]) -> Result<()> {
        match self {
            ModelMetric::State(m) => m.set_params(phi),
            ModelMetric::Global(m) => m.set_params(phi),
        }
    }

    /// The per-dimension weights λ of the global form (`None` for a state-conditioned one):
    /// what the outer problem has learned to weight.
    pub fn global_weights(&self) -> Option<Vec<f64>> {
        match self {
            ModelMetric::State(_) => None,
            ModelMetric::Global(m) => Some(m.eval().weights().to_vec()),
        }
    }

    /// Λ at `n` rows of observations `x` (the global form ignores them).
    pub fn eval(&self, x: &[f64], n: usize) -> Result<ModelMetricEval> {
        Ok(match self {
            ModelMetric::State(m) => ModelMetricEval::State(m.eval(x, n)?),
            ModelMetric::Global(m) => ModelMetricEval::Global(m.eval()),
        })
    }

    /// `∂/∂φ Σ_r a_rᵀ Λ_r b_r`.
    pub fn backward_bilinear(
        &self,
        ev: &ModelMetricEval,
        a: &[f64],
        b: &[f64],
    ) -> Result<Vec<f64>> {
        match (self, ev) {
            (ModelMetric::State(m), ModelMetricEval::State(e)) => m.backward_bilinear(e, a, b),
            (ModelMetric::Global(m), ModelMetricEval::Global(e)) => m.backward_bilinear(e, a, b),
            _ => Err(CoreError::Runtime(
                "metric backward: evaluation of the other metric family".into(),
            )),
        }
    }
}

impl ModelMetricEval {
    /// `Λ_r v_r` for every row, times `scale`.
    pub fn apply(&self, v: &[f64], scale: f64) -> Vec<f64> {
        match self {
            ModelMetricEval::State(e) => e.apply(v, scale),
            ModelMetricEval::Global(e) => e.apply(v, scale),
        }
    }

    /// `Σ_r v_rᵀ Λ_r v_r`.
    pub fn quad(&self, v: &[f64]) -> f64 {
        match self {
            ModelMetricEval::State(e) => e.quad(v),
            ModelMetricEval::Global(e) => e.quad(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn rand_vec(n: usize, rng: &mut RlRng) -> Vec<f64> {
        (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
    }

    /// A metric moved off its initialisation (random θ, σ ≠ 0) so every term is exercised.
    fn perturbed(o: usize, rng: &mut RlRng) -> StateMetric {
        perturbed_form(o, false, rng)
    }

    fn perturbed_form(o: usize, diag: bool, rng: &mut RlRng) -> StateMetric {
        let mut m = StateMetric::with_form(o, 6, diag, rng).unwrap();
        let mut phi = m.params();
        for v in phi.iter_mut() {
            *v += 0.3 * (2.0 * rng.random::<f64>() - 1.0);
        }
        m.set_params(&phi).unwrap();
        m
    }

    #[test]
    fn starts_at_identity_and_stays_normalised_spd() {
        let mut rng = RlRng::seed_from_u64(0);
        let (n, o) = (3, 5);
        let m = StateMetric::new(o, 8, &mut rng).unwrap();
        let x = rand_vec(n * o, &mut rng);
        let ev = m.eval(&x, n).unwrap();
        for r in 0..n {
            let lam = ev.dense(r);
            for i in 0..o {
                for j in 0..o {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((lam[i * o + j] - want).abs() < 0.05, "{i},{j}");
                }
            }
        }
        let m = perturbed(o, &mut rng);
        let ev = m.eval(&x, n).unwrap();
        for r in 0..n {
            let lam = ev.dense(r);
            let d2: f64 = (0..o).map(|i| lam[i * o + i].powi(2)).sum();
            assert!((d2 - o as f64).abs() < 1e-10, "‖diag Λ‖² = {d2}");
            for i in 0..o {
                for j in 0..o {
                    assert!((lam[i * o + j] - lam[j * o + i]).abs() < 1e-12);
                }
            }
        }
        // quad agrees with apply, and is positive.
        let v = rand_vec(n * o, &mut rng);
        let lv = ev.apply(&v, 2.0);
        assert!((ev.quad(&v) - 0.5 * dot(&v, &lv)).abs() < 1e-12);
        assert!(ev.quad(&v) > 0.0);
    }

    /// The diagonal form: starts at I, stays diagonal, normalised and positive.
    #[test]
    fn diagonal_form_is_a_normalised_positive_diagonal() {
        let mut rng = RlRng::seed_from_u64(4);
        let (n, o) = (3, 5);
        let x = rand_vec(n * o, &mut rng);
        let m = StateMetric::diagonal(o, 8, &mut rng).unwrap();
        assert_eq!(m.n_params(), (o * 8 + 8) + (8 * o + o) + 1);
        for (mm, start) in [(m, true), (perturbed_form(o, true, &mut rng), false)] {
            let ev = mm.eval(&x, n).unwrap();
            for r in 0..n {
                let lam = ev.dense(r);
                let d2: f64 = (0..o).map(|i| lam[i * o + i].powi(2)).sum();
                assert!((d2 - o as f64).abs() < 1e-10);
                for i in 0..o {
                    assert!(lam[i * o + i] > 0.0);
                    if start {
                        assert!((lam[i * o + i] - 1.0).abs() < 0.05);
                    }
                    for j in 0..o {
                        if i != j {
                            assert_eq!(lam[i * o + j], 0.0);
                        }
                    }
                }
            }
        }
    }

    /// `backward_bilinear` at parameters `w` against central differences of `Σ aᵀ Λ b`.
    fn check_global_backward(m: &mut GlobalMetric, w: &[f64], a: &[f64], b: &[f64]) {
        m.set_params(w).unwrap();
        let ev = m.eval();
        let f = |m: &GlobalMetric| dot(a, &m.eval().apply(b, 1.0));
        let g = m.backward_bilinear(&ev, a, b).unwrap();
        let eps = 1e-6;
        for j in 0..w.len() {
            let mut p = w.to_vec();
            p[j] += eps;
            m.set_params(&p).unwrap();
            let fp = f(m);
            p[j] -= 2.0 * eps;
            m.set_params(&p).unwrap();
            let fd = (fp - f(m)) / (2.0 * eps);
            assert!(
                (fd - g[j]).abs() < 1e-8 * (1.0 + fd.abs()),
                "{j}: fd {fd} vs {}",
                g[j]
            );
        }
        m.set_params(w).unwrap();
    }

    /// With a floor, no weight falls below it however negative its parameter, the start is
    /// still I, and the backward still matches central differences.
    #[test]
    fn global_metric_floor_bounds_the_weights_and_is_differentiated() {
        let o = 4;
        let mut m = GlobalMetric::with_floor(o, 0.2).unwrap();
        assert!(m.eval().weights().iter().all(|l| (l - 1.0).abs() < 1e-12));
        let w = vec![-30.0, 0.5, 2.0, -1.0];
        m.set_params(&w).unwrap();
        let ev = m.eval();
        assert!(ev.weights()[0] >= 0.2 && ev.weights()[0] < 0.2 + 1e-9);
        assert!(ev.weights().iter().all(|&l| l >= 0.2));
        let mut rng = RlRng::seed_from_u64(3);
        let a = rand_vec(3 * o, &mut rng);
        let b = rand_vec(3 * o, &mut rng);
        check_global_backward(&mut m, &w, &a, &b);
        assert!(GlobalMetric::with_floor(o, 1.0).is_err());
        assert!(GlobalMetric::with_floor(o, -0.1).is_err());
        assert!(GlobalMetric::with_floor(o, f64::NAN).is_err());
    }

    /// The global (per-dimension) metric: starts at I, stays a normalised positive diagonal,
    /// `quad` agrees with `apply`, and its backward matches central differences in w.
    #[test]
    fn global_metric_is_normalised_and_differentiated() {
        let mut rng = RlRng::seed_from_u64(7);
        let (n, o) = (4, 5);
        let mut m = GlobalMetric::new(o).unwrap();
        let ev = m.eval();
        assert!(ev.weights().iter().all(|l| (l - 1.0).abs() < 1e-12));
        let w: Vec<f64> = (0..o)
            .map(|_| 3.0 * (2.0 * rng.random::<f64>() - 1.0))
            .collect();
        m.set_params(&w).unwrap();
        let ev = m.eval();
        let d2: f64 = ev.weights().iter().map(|l| l * l).sum();
        assert!((d2 - o as f64).abs() < 1e-10, "‖λ‖² = {d2}");
        assert!(ev.weights().iter().all(|&l| l > 0.0));
        let spread = ev.weights().iter().fold(0.0f64, |a, &b| a.max(b))
            - ev.weights().iter().fold(f64::INFINITY, |a, &b| a.min(b));
        assert!(spread > 0.1, "weights did not move with w");
        let v = rand_vec(n * o, &mut rng);
        assert!((ev.quad(&v) - 0.5 * dot(&v, &ev.apply(&v, 2.0))).abs() < 1e-12);
        let a = rand_vec(n * o, &mut rng);
        let b = rand_vec(n * o, &mut rng);
        check_global_backward(&mut m, &w, &a, &b);
        assert!(m.backward_bilinear(&ev, &a[1..], &b).is_err());
        assert!(m.set_params(&w[1..]).is_err());
        assert!(GlobalMetric::new(0).is_err());
        // Large |w| stays finite (softplus and its derivative without overflow).
        m.set_params(&[800.0, -800.0, 0.0, 1.0, 2.0]).unwrap();
        let ev = m.eval();
        assert!(ev.weights().iter().all(|l| l.is_finite()));
        let g = m.backward_bilinear(&ev, &a, &b).unwrap();
        assert!(g.iter().all(|v| v.is_finite()));
    }

    /// The bilinear backward against central differences of φ ↦ Σ a_rᵀ Λ_r(φ) b_r, both forms.
    #[test]
    fn backward_matches_finite_differences() {
        for diag in [false, true] {
            backward_check(diag);
        }
    }

    fn backward_check(diag: bool) {
        let mut rng = RlRng::seed_from_u64(2);
        let (n, o) = (4, 3);
        let mut m = perturbed_form(o, diag, &mut rng);
        let x = rand_vec(n * o, &mut rng);
        let a = rand_vec(n * o, &mut rng);
        let b = rand_vec(n * o, &mut rng);
        let f = |m: &StateMetric| {
            let ev = m.eval(&x, n).unwrap();
            dot(&a, &ev.apply(&b, 1.0))
        };
        let ev = m.eval(&x, n).unwrap();
        let g = m.backward_bilinear(&ev, &a, &b).unwrap();
        let phi = m.params();
        let eps = 1e-6;
        for j in 0..phi.len() {
            let mut p = phi.clone();
            p[j] += eps;
            m.set_params(&p).unwrap();
            let fp = f(&m);
            p[j] -= 2.0 * eps;
            m.set_params(&p).unwrap();
            let fm = f(&m);
            let fd = (fp - fm) / (2.0 * eps);
            assert!(
                (fd - g[j]).abs() < 1e-7 * (1.0 + fd.abs()),
                "{j}: fd {fd} vs {}",
                g[j]
            );
        }
        m.set_params(&phi).unwrap();
        assert!(m.backward_bilinear(&ev, &a[1..], &b).is_err());
    }
}
