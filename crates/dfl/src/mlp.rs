//! A small dense network applied row by row (the predictor shared across an instance's rows,
//! and the base of the metric net), with its flat parameter vector θ, the gradient of a given
//! upstream `dL/dŷ`, and exact Hessian-vector products by Pearlmutter's R-operator.
//!
//! burn's autodiff is first-order, and TaskMet's implicit gradient needs `∇²θ L_pred · v`;
//! writing the R-forward and R-backward passes out gives that product exactly (including the
//! output activation's second derivative) for about the cost of two more passes, without the
//! step-size trade-off of differencing gradients. Everything is f64: the implicit gradient is
//! a difference of nearly equal quantities solved by CG, and the networks are small (a linear
//! layer for the cubic task, two layers of width 500 otherwise), so plain loops over rows,
//! written as AXPYs over contiguous rows so they vectorise, are fast enough.
//!
//! Layout of θ, layer by layer: the weight `W_l` (`out × in`, row-major, as PyTorch stores
//! `nn.Linear.weight`) then the bias `b_l` (`out`).

use ferrolab_core::{CoreError, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Products below this many multiply-adds run on one thread: rayon's start-up costs more.
const PAR_MIN: usize = 1 << 15;

/// An activation, applied elementwise. Hidden layers use ReLU (the reference's `dense_nn`
/// default); the output activation is the task's (`get_output_activation` in the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    None,
    Tanh,
    Relu,
    Sigmoid,
}

impl Activation {
    /// Parses `none | tanh | relu | sigmoid`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" | "linear" | "identity" => Some(Activation::None),
            "tanh" => Some(Activation::Tanh),
            "relu" => Some(Activation::Relu),
            "sigmoid" => Some(Activation::Sigmoid),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
        }
    }

    fn apply(self, z: f64) -> f64 {
        match self {
            Activation::None => z,
            Activation::Tanh => z.tanh(),
            Activation::Relu => z.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        }
    }

    /// σ'(z), written in terms of the output `a = σ(z)` so only activations are stored
    /// (ReLU: `z > 0 ⇔ a > 0`; its derivative at 0 is 0, as in PyTorch).
    fn d1(self, a: f64) -> f64 {
        match self {
            Activation::None => 1.0,
            Activation::Tanh => 1.0 - a * a,
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => a * (1.0 - a),
        }
    }

    /// σ''(z) in terms of `a = σ(z)` (zero almost everywhere for ReLU and the identity).
    fn d2(self, a: f64) -> f64 {
        match self {
            Activation::None | Activation::Relu => 0.0,
            Activation::Tanh => -2.0 * a * (1.0 - a * a),
            Activation::Sigmoid => a * (1.0 - a) * (1.0 - 2.0 * a),
        }
    }

    fn is_piecewise_linear(self) -> bool {
        matches!(self, Activation::None | Activation::Relu)
    }
}

/// A dense network `in → [width, ReLU] × (layers − 1) → out → output activation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    /// `[in, width, …, width, out]`: `layers + 1` sizes.
    sizes: Vec<usize>,
    output: Activation,
    theta: Vec<f64>,
}

/// The activations of a forward pass, kept for the backward and R passes.
#[derive(Debug, Clone)]
pub struct Cache {
    n: usize,
    /// `acts[0]` is the input, `acts[l]` the output of layer `l` (after its activation).
    acts: Vec<Vec<f64>>,
}

impl Cache {
    /// The network's output, `n × out`.
    pub fn output(&self) -> &[f64] {
        self.acts.last().map_or(&[], |a| a.as_slice())
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.n
    }
}

/// The gradient of a backward pass, with the per-layer upstream values an HVP reuses.
#[derive(Debug, Clone)]
pub struct Backward {
    /// `dL/dθ`, laid out as θ.
    pub grad: Vec<f64>,
    /// `dL/da_l` for l = 1..=L (index l − 1).
    da: Vec<Vec<f64>>,
    /// `dL/dz_l` for l = 1..=L (index l − 1).
    dz: Vec<Vec<f64>>,
}

/// The R-forward pass: directional derivatives of every pre-activation and activation.
#[derive(Debug, Clone)]
pub struct RForward {
    /// `R{z_l}` for l = 1..=L (index l − 1).
    rz: Vec<Vec<f64>>,
    /// `R{a_l}` for l = 1..=L (index l − 1); the last is `J v`.
    ra: Vec<Vec<f64>>,
}

impl RForward {
    /// `J v`: the derivative of the output along the parameter direction `v`, `n × out`.
    pub fn output(&self) -> &[f64] {
        self.ra.last().map_or(&[], |a| a.as_slice())
    }
}

fn shape_err(msg: String) -> CoreError {
    CoreError::Data(msg)
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Runs `f(input_row, output_row)` over matching rows, on rayon's pool for large `work`.
fn rows_map<F>(out: &mut [f64], ow: usize, inp: &[f64], iw: usize, work: usize, f: F)
where
    F: Fn(&[f64], &mut [f64]) + Sync + Send,
{
    if ow == 0 || iw == 0 {
        return;
    }
    if work >= PAR_MIN && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(ow)
            .zip(inp.par_chunks(iw))
            .for_each(|(o, i)| f(i, o));
    } else {
        for (o, i) in out.chunks_mut(ow).zip(inp.chunks(iw)) {
            f(i, o);
        }
    }
}

/// `Wᵀ` of a row-major `m × k` matrix (`k × m`), so the forward product is row AXPYs.
fn transpose(w: &[f64], m: usize, k: usize) -> Vec<f64> {
    let mut t = vec![0.0; m * k];
    for o in 0..m {
        for p in 0..k {
            t[p * m + o] = w[o * k + p];
        }
    }
    t
}

/// `Σ a_k b_k` with four accumulators, so it vectorises (a single f64 accumulator cannot be
/// reordered by the compiler).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for j in 0..4 {
            acc[j] += x[j] * y[j];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// Below this many outputs a layer's forward is dot products over rows of `W`; above it,
/// AXPYs over rows of `Wᵀ` (long contiguous output rows, zero inputs skipped).
const NARROW: usize = 16;

/// `out[i, :] += a[i, :] · Wᵀ` (`a`: n × k, `W`: m × k; out: n × m).
fn linear_acc(a: &[f64], n: usize, k: usize, w: &[f64], m: usize, out: &mut [f64]) {
    if m < NARROW {
        rows_map(out, m, a, k, n * m * k, |ar, orow| {
            for (o, v) in orow.iter_mut().enumerate() {
                *v += dot(ar, &w[o * k..(o + 1) * k]);
            }
        });
        return;
    }
    let wt = transpose(w, m, k);
    rows_map(out, m, a, k, n * m * k, |ar, orow| {
        for (p, &s) in ar.iter().enumerate() {
            // Zero inputs are common after a ReLU: skipping them halves the work.
            if s != 0.0 {
                axpy(s, &wt[p * m..(p + 1) * m], orow);
            }
        }
    });
}

/// `out[i, :] += g[i, :] · W` (`g`: n × m, `W`: m × k; out: n × k).
fn linear_input_grad(g: &[f64], n: usize, m: usize, w: &[f64], k: usize, out: &mut [f64]) {
    rows_map(out, k, g, m, n * m * k, |gr, orow| {
        for (o, &s) in gr.iter().enumerate() {
            if s != 0.0 {
                axpy(s, &w[o * k..(o + 1) * k], orow);
            }
        }
    });
}

/// `gw[o, :] += Σ_i g[i, o] a[i, :]` and `gb[o] += Σ_i g[i, o]`.
#[allow(clippy::too_many_arguments)]
fn linear_weight_grad(
    g: &[f64],
    n: usize,
    m: usize,
    a: &[f64],
    k: usize,
    gw: &mut [f64],
    gb: &mut [f64],
) {
    let body = |o: usize, row: &mut [f64]| {
        for i in 0..n {
            let s = g[i * m + o];
            if s != 0.0 {
                axpy(s, &a[i * k..(i + 1) * k], row);
            }
        }
    };
    if n * m * k >= PAR_MIN && rayon::current_num_threads() > 1 {
        gw.par_chunks_mut(k)
            .enumerate()
            .for_each(|(o, row)| body(o, row));
    } else {
        for (o, row) in gw.chunks_mut(k).enumerate() {
            body(o, row);
        }
    }
    for i in 0..n {
        axpy(1.0, &g[i * m..(i + 1) * m], gb);
    }
}

impl Mlp {
    /// A network with `layers` linear layers (1: a single linear map, as the reference's
    /// cubic task; 2: one hidden layer of `width`), initialised as PyTorch's `nn.Linear`
    /// (Kaiming-uniform with a = √5, i.e. weights and biases `U(±1/√fan_in)`), from `seed`.
    pub fn new(
        d_in: usize,
        d_out: usize,
        layers: usize,
        width: usize,
        output: Activation,
        seed: u64,
    ) -> Result<Self> {
        if d_in == 0 || d_out == 0 || layers == 0 || (layers > 1 && width == 0) {
            return Err(shape_err(format!(
                "mlp: need positive sizes, got in={d_in} out={d_out} layers={layers} width={width}"
            )));
        }
        let mut sizes = vec![d_in];
        sizes.extend(std::iter::repeat_n(width, layers - 1));
        sizes.push(d_out);
        let n_params = sizes.windows(2).map(|s| s[0] * s[1] + s[1]).sum();
        let mut theta = Vec::with_capacity(n_params);
        let mut rng = StdRng::seed_from_u64(seed);
        for s in sizes.windows(2) {
            let bound = 1.0 / (s[0] as f64).sqrt();
            // PyTorch draws the weight, then the bias, each layer in order.
            for _ in 0..s[0] * s[1] + s[1] {
                theta.push((2.0 * rng.random::<f64>() - 1.0) * bound);
            }
        }
        Ok(Mlp {
            sizes,
            output,
            theta,
        })
    }

    pub fn d_in(&self) -> usize {
        self.sizes[0]
    }

    pub fn d_out(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    /// Linear layers.
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    pub fn output_activation(&self) -> Activation {
        self.output
    }

    pub fn n_params(&self) -> usize {
        self.theta.len()
    }

    /// θ, flat.
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }

    /// θ, flat and writable (optimisers update it in place).
    pub fn theta_mut(&mut self) -> &mut [f64] {
        &mut self.theta
    }

    /// Replaces θ.
    pub fn set_theta(&mut self, theta: &[f64]) -> Result<()> {
        self.check_len("theta", theta.len())?;
        self.theta.copy_from_slice(theta);
        Ok(())
    }

    fn check_len(&self, what: &str, len: usize) -> Result<()> {
        if len != self.theta.len() {
            return Err(shape_err(format!(
                "mlp: {what} has {len} values, the network has {} parameters",
                self.theta.len()
            )));
        }
        Ok(())
    }

    /// Offsets of layer `l`'s (1-based) weight and bias in θ.
    fn offsets(&self, l: usize) -> (usize, usize) {
        let mut off = 0;
        for s in self.sizes.windows(2).take(l - 1) {
            off += s[0] * s[1] + s[1];
        }
        (off, off + self.sizes[l - 1] * self.sizes[l])
    }

    /// Weight (`out × in`) and bias of layer `l` (1-based), writable: the metric net's
    /// identity initialisation rescales its last layer.
    pub(crate) fn layer_mut(&mut self, l: usize) -> (&mut [f64], &mut [f64]) {
        let (wo, bo) = self.offsets(l);
        let out = self.sizes[l];
        let (head, tail) = self.theta.split_at_mut(bo);
        (&mut head[wo..], &mut tail[..out])
    }

    fn activation(&self, l: usize) -> Activation {
        if l == self.layers() {
            self.output
        } else {
            Activation::Relu
        }
    }

    fn check_input(&self, x: &[f64], n: usize) -> Result<()> {
        if x.len() != n * self.d_in() {
            return Err(shape_err(format!(
                "mlp: input has {} values, expected {n} rows x {} features",
                x.len(),
                self.d_in()
            )));
        }
        Ok(())
    }

    /// One layer forward: `σ_l(a · W_lᵀ + b_l)` with parameters taken from `params`.
    fn layer_forward(&self, params: &[f64], l: usize, a: &[f64], n: usize) -> Vec<f64> {
        let (wo, bo) = self.offsets(l);
        let (k, m) = (self.sizes[l - 1], self.sizes[l]);
        let mut z = vec![0.0; n * m];
        for row in z.chunks_mut(m) {
            row.copy_from_slice(&params[bo..bo + m]);
        }
        linear_acc(a, n, k, &params[wo..bo], m, &mut z);
        let act = self.activation(l);
        if act != Activation::None {
            for v in &mut z {
                *v = act.apply(*v);
            }
        }
        z
    }

    /// Outputs for `n` rows of `x` (`n × in`), keeping only one layer's activations at a time.
    pub fn predict(&self, x: &[f64], n: usize) -> Result<Vec<f64>> {
        self.check_input(x, n)?;
        let mut a = self.layer_forward(&self.theta, 1, x, n);
        for l in 2..=self.layers() {
            a = self.layer_forward(&self.theta, l, &a, n);
        }
        Ok(a)
    }

    /// A forward pass over `n` rows of `x`, keeping every activation.
    pub fn forward(&self, x: &[f64], n: usize) -> Result<Cache> {
        self.check_input(x, n)?;
        let mut acts = Vec::with_capacity(self.layers() + 1);
        acts.push(x.to_vec());
        for l in 1..=self.layers() {
            let a = self.layer_forward(&self.theta, l, &acts[l - 1], n);
            acts.push(a);
        }
        Ok(Cache { n, acts })
    }

    fn check_cache(&self, cache: &Cache) -> Result<()> {
        if cache.acts.len() != self.layers() + 1
            || cache
                .acts
                .iter()
                .zip(&self.sizes)
                .any(|(a, &s)| a.len() != cache.n * s)
        {
            return Err(shape_err(
                "mlp: the forward cache belongs to a network of another shape".into(),
            ));
        }
        Ok(())
    }

    fn check_out(&self, what: &str, g: &[f64], n: usize) -> Result<()> {
        if g.len() != n * self.d_out() {
            return Err(shape_err(format!(
                "mlp: {what} has {} values, expected {n} rows x {} outputs",
                g.len(),
                self.d_out()
            )));
        }
        Ok(())
    }

    /// `dL/dθ` from the upstream `dy = dL/dŷ` (`n × out`).
    pub fn backward(&self, cache: &Cache, dy: &[f64]) -> Result<Backward> {
        self.check_cache(cache)?;
        let n = cache.n;
        self.check_out("dL/dy", dy, n)?;
        let layers = self.layers();
        let mut grad = vec![0.0; self.theta.len()];
        let mut da_all = vec![Vec::new(); layers];
        let mut dz_all = vec![Vec::new(); layers];
        let mut da = dy.to_vec();
        for l in (1..=layers).rev() {
            let act = self.activation(l);
            let dz: Vec<f64> = if act == Activation::None {
                da.clone()
            } else {
                da.iter()
                    .zip(&cache.acts[l])
                    .map(|(g, &a)| g * act.d1(a))
                    .collect()
            };
            let (wo, bo) = self.offsets(l);
            let (k, m) = (self.sizes[l - 1], self.sizes[l]);
            let (gw, gb) = grad[wo..bo + m].split_at_mut(bo - wo);
            linear_weight_grad(&dz, n, m, &cache.acts[l - 1], k, gw, gb);
            let next = if l > 1 {
                let mut prev = vec![0.0; n * k];
                linear_input_grad(&dz, n, m, &self.theta[wo..bo], k, &mut prev);
                prev
            } else {
                Vec::new()
            };
            da_all[l - 1] = std::mem::replace(&mut da, next);
            dz_all[l - 1] = dz;
        }
        Ok(Backward {
            grad,
            da: da_all,
            dz: dz_all,
        })
    }

    /// The R-forward pass along the parameter direction `v` (laid out as θ): `R{z_l}` and
    /// `R{a_l}` for every layer, the last `R{a_L}` being `J v`.
    ///
    /// `R{z_l} = V_l a_{l−1} + W_l R{a_{l−1}} + v_{b_l}`, `R{a_l} = σ'(z_l) ⊙ R{z_l}`,
    /// with `R{a_0} = 0` (the inputs do not depend on θ).
    pub fn jvp(&self, cache: &Cache, v: &[f64]) -> Result<RForward> {
        self.check_cache(cache)?;
        self.check_len("direction", v.len())?;
        let n = cache.n;
        let layers = self.layers();
        let mut rz_all: Vec<Vec<f64>> = Vec::with_capacity(layers);
        let mut ra_all: Vec<Vec<f64>> = Vec::with_capacity(layers);
        for l in 1..=layers {
            let (wo, bo) = self.offsets(l);
            let (k, m) = (self.sizes[l - 1], self.sizes[l]);
            let mut rz = vec![0.0; n * m];
            for row in rz.chunks_mut(m) {
                row.copy_from_slice(&v[bo..bo + m]);
            }
            linear_acc(&cache.acts[l - 1], n, k, &v[wo..bo], m, &mut rz);
            if l > 1 {
                linear_acc(&ra_all[l - 2], n, k, &self.theta[wo..bo], m, &mut rz);
            }
            let act = self.activation(l);
            let ra: Vec<f64> = rz
                .iter()
                .zip(&cache.acts[l])
                .map(|(r, &a)| r * act.d1(a))
                .collect();
            rz_all.push(rz);
            ra_all.push(ra);
        }
        Ok(RForward {
            rz: rz_all,
            ra: ra_all,
        })
    }

    /// The R-backward pass: `H v` where H is the Hessian in θ of a loss `L(ŷ(θ))`, given
    /// the backward pass `bwd` of `dL/dŷ`, the R-forward pass `rf` along `v`, and
    /// `rdy = R{dL/dŷ} = ∇²_ŷ L · (J v)` (the caller's loss curvature applied to `J v`).
    ///
    /// `R{δz_l} = R{δa_l} ⊙ σ'(z_l) + δa_l ⊙ σ''(z_l) ⊙ R{z_l}`,
    /// `R{∇W_l} = R{δz_l} a_{l−1}ᵀ + δz_l R{a_{l−1}}ᵀ`, `R{∇b_l} = Σ R{δz_l}`,
    /// `R{δa_{l−1}} = R{δz_l} W_l + δz_l V_l`.
    pub fn hvp(
        &self,
        cache: &Cache,
        bwd: &Backward,
        rf: &RForward,
        v: &[f64],
        rdy: &[f64],
    ) -> Result<Vec<f64>> {
        self.check_cache(cache)?;
        self.check_len("direction", v.len())?;
        let n = cache.n;
        self.check_out("R{dL/dy}", rdy, n)?;
        let layers = self.layers();
        if bwd.dz.len() != layers || rf.rz.len() != layers || bwd.grad.len() != self.theta.len() {
            return Err(shape_err(
                "mlp: backward or R-forward pass of another network".into(),
            ));
        }
        let mut hv = vec![0.0; self.theta.len()];
        let mut rda = rdy.to_vec();
        for l in (1..=layers).rev() {
            let act = self.activation(l);
            let a_l = &cache.acts[l];
            let mut rdz: Vec<f64> = rda.iter().zip(a_l).map(|(r, &a)| r * act.d1(a)).collect();
            if !act.is_piecewise_linear() {
                for (((r, &a), &d), &z) in rdz
                    .iter_mut()
                    .zip(a_l)
                    .zip(&bwd.da[l - 1])
                    .zip(&rf.rz[l - 1])
                {
                    *r += d * act.d2(a) * z;
                }
            }
            let (wo, bo) = self.offsets(l);
            let (k, m) = (self.sizes[l - 1], self.sizes[l]);
            let dz = &bwd.dz[l - 1];
            {
                let (hw, hb) = hv[wo..bo + m].split_at_mut(bo - wo);
                linear_weight_grad(&rdz, n, m, &cache.acts[l - 1], k, hw, hb);
                if l > 1 {
                    // δz_l R{a_{l−1}}ᵀ: the bias part of this product is not a term, so it
                    // goes to a scratch vector.
                    let mut scratch = vec![0.0; m];
                    linear_weight_grad(dz, n, m, &rf.ra[l - 2], k, hw, &mut scratch);
                }
            }
            if l > 1 {
                let mut prev = vec![0.0; n * k];
                linear_input_grad(&rdz, n, m, &self.theta[wo..bo], k, &mut prev);
                linear_input_grad(dz, n, m, &v[wo..bo], k, &mut prev);
                rda = prev;
            }
        }
        Ok(hv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n * d)
            .map(|_| 2.0 * rng.random::<f64>() - 1.0)
            .collect()
    }

    /// L(ŷ) = Σ_i c_i ŷ_i²/2 + w_i ŷ_i: a quadratic loss with a non-trivial gradient, so the
    /// output-activation second derivative term of the HVP is exercised.
    fn loss_grad(m: &Mlp, x: &[f64], n: usize, c: &[f64], w: &[f64]) -> (Cache, Vec<f64>) {
        let cache = m.forward(x, n).unwrap();
        let dy: Vec<f64> = cache
            .output()
            .iter()
            .zip(c.iter().zip(w))
            .map(|(y, (c, w))| c * y + w)
            .collect();
        (cache, dy)
    }

    fn grad_at(m: &Mlp, theta: &[f64], x: &[f64], n: usize, c: &[f64], w: &[f64]) -> Vec<f64> {
        let mut m2 = m.clone();
        m2.set_theta(theta).unwrap();
        let (cache, dy) = loss_grad(&m2, x, n, c, w);
        m2.backward(&cache, &dy).unwrap().grad
    }

    fn loss_at(m: &Mlp, theta: &[f64], x: &[f64], n: usize, c: &[f64], w: &[f64]) -> f64 {
        let mut m2 = m.clone();
        m2.set_theta(theta).unwrap();
        let y = m2.predict(x, n).unwrap();
        y.iter()
            .zip(c.iter().zip(w))
            .map(|(y, (c, w))| 0.5 * c * y * y + w * y)
            .sum()
    }

    #[test]
    fn init_matches_pytorch_bounds() {
        let m = Mlp::new(4, 3, 2, 9, Activation::Tanh, 0).unwrap();
        assert_eq!(m.n_params(), 4 * 9 + 9 + 9 * 3 + 3);
        let (w1, b1) = (&m.theta()[..36], &m.theta()[36..45]);
        assert!(w1.iter().chain(b1).all(|v| v.abs() <= 0.5));
        let rest = &m.theta()[45..];
        assert!(rest.iter().all(|v| v.abs() <= 1.0 / 3.0));
        assert_eq!(m, Mlp::new(4, 3, 2, 9, Activation::Tanh, 0).unwrap());
        assert!(Mlp::new(0, 3, 2, 9, Activation::Tanh, 0).is_err());
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (n, d, o) = (7, 3, 2);
        for act in [Activation::Tanh, Activation::Sigmoid, Activation::None] {
            let m = Mlp::new(d, o, 3, 5, act, 11).unwrap();
            let x = rows(n, d, 1);
            let c = rows(n, o, 2);
            let w = rows(n, o, 3);
            let g = grad_at(&m, m.theta(), &x, n, &c, &w);
            let eps = 1e-6;
            for j in 0..m.n_params() {
                let mut tp = m.theta().to_vec();
                tp[j] += eps;
                let mut tm = m.theta().to_vec();
                tm[j] -= eps;
                let fd = (loss_at(&m, &tp, &x, n, &c, &w) - loss_at(&m, &tm, &x, n, &c, &w))
                    / (2.0 * eps);
                assert!((fd - g[j]).abs() < 1e-7 * (1.0 + g[j].abs()), "{act:?} {j}");
            }
        }
    }

    /// The R-operator HVP against central differences of the exact gradient, for every
    /// output activation and a hidden-to-hidden layer (3 layers).
    #[test]
    fn hvp_matches_gradient_differences() {
        let (n, d, o) = (9, 3, 2);
        for act in [
            Activation::Tanh,
            Activation::Sigmoid,
            Activation::None,
            Activation::Relu,
        ] {
            let m = Mlp::new(d, o, 3, 6, act, 5).unwrap();
            let x = rows(n, d, 7);
            let c = rows(n, o, 8);
            let w = rows(n, o, 9);
            let v = rows(1, m.n_params(), 10);
            let (cache, dy) = loss_grad(&m, &x, n, &c, &w);
            let bwd = m.backward(&cache, &dy).unwrap();
            let rf = m.jvp(&cache, &v).unwrap();
            let rdy: Vec<f64> = rf.output().iter().zip(&c).map(|(u, c)| c * u).collect();
            let hv = m.hvp(&cache, &bwd, &rf, &v, &rdy).unwrap();
            // f64 central differences: O(ε²) truncation, O(1e-16/ε) rounding.
            let eps = 1e-5;
            let tp: Vec<f64> = m.theta().iter().zip(&v).map(|(t, v)| t + eps * v).collect();
            let tm: Vec<f64> = m.theta().iter().zip(&v).map(|(t, v)| t - eps * v).collect();
            let gp = grad_at(&m, &tp, &x, n, &c, &w);
            let gm = grad_at(&m, &tm, &x, n, &c, &w);
            let scale = hv.iter().fold(0.0f64, |s, h| s.max(h.abs()));
            assert!(scale > 1e-3, "{act:?}: trivial HVP");
            for j in 0..m.n_params() {
                let fd = (gp[j] - gm[j]) / (2.0 * eps);
                assert!(
                    (fd - hv[j]).abs() < 1e-6 * (1.0 + scale),
                    "{act:?} {j}: R-op {} vs fd {fd}",
                    hv[j]
                );
            }
        }
    }

    /// Closed form: for a linear network with loss Σ c ŷ²/2, H = Σ_i c_i x̃_i x̃_iᵀ per output
    /// (x̃ = [x; 1]), block-diagonal over outputs.
    #[test]
    fn hvp_of_linear_net_is_the_closed_form() {
        let (n, d, o) = (6, 3, 2);
        let m = Mlp::new(d, o, 1, 0, Activation::None, 3).unwrap();
        let x = rows(n, d, 4);
        let c: Vec<f64> = rows(n, o, 5).iter().map(|v| v.abs() + 0.1).collect();
        let w = vec![0.0; n * o];
        let v = rows(1, m.n_params(), 6);
        let (cache, dy) = loss_grad(&m, &x, n, &c, &w);
        let bwd = m.backward(&cache, &dy).unwrap();
        let rf = m.jvp(&cache, &v).unwrap();
        let rdy: Vec<f64> = rf.output().iter().zip(&c).map(|(u, c)| c * u).collect();
        let hv = m.hvp(&cache, &bwd, &rf, &v, &rdy).unwrap();
        // θ = [W (o × d) | b (o)]; parameter of (out q, input p) is W[q, p], bias b[q].
        let idx = |q: usize, p: usize| if p < d { q * d + p } else { o * d + q };
        for q in 0..o {
            for p in 0..=d {
                let mut want = 0.0;
                for i in 0..n {
                    let xp = if p < d { x[i * d + p] } else { 1.0 };
                    for r in 0..=d {
                        let xr = if r < d { x[i * d + r] } else { 1.0 };
                        want += c[i * o + q] * xp * xr * v[idx(q, r)];
                    }
                }
                assert!((hv[idx(q, p)] - want).abs() < 1e-12, "{q} {p}");
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        let m = Mlp::new(2, 1, 2, 4, Activation::Relu, 0).unwrap();
        assert!(m.forward(&[0.0; 5], 2).is_err());
        let cache = m.forward(&[0.0; 4], 2).unwrap();
        assert!(m.backward(&cache, &[0.0; 3]).is_err());
        assert!(m.jvp(&cache, &[0.0; 3]).is_err());
        let mut m2 = m.clone();
        assert!(m2.set_theta(&[0.0; 2]).is_err());
    }
}
