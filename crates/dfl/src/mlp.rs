//! A small dense network applied row by row (the predictor shared across an instance's rows,
//! and the base of the metric net), with its flat parameter vector θ, the gradient of a given
//! upstream `dL/dŷ`, and exact Hessian-vector products by Pearlmutter's R-operator.
//!
//! burn's autodiff is first-order, and TaskMet's implicit gradient needs `∇²θ L_pred · v`;
//! writing the R-forward and R-backward passes out gives that product exactly (including the
//! output activation's second derivative) for about the cost of two more passes, without the
//! step-size trade-off of differencing gradients. Everything is f64: the implicit gradient is
//! a difference of nearly equal quantities solved by CG. Every product with a weight matrix
//! (forward, R-forward, input and weight gradients) is one strided f64 GEMM call (core's
//! [`matmul_f64`]): transposes are views, nothing is copied, and the GEMM picks its own
//! matrix-vector and outer-product kernels for the one-output layers.
//!
//! Layout of θ, layer by layer: the weight `W_l` (`out × in`, row-major, as PyTorch stores
//! `nn.Linear.weight`) then the bias `b_l` (`out`).

use ferrolab_core::kernels::gemm::{MatRef64, matmul_f64};
use ferrolab_core::{CoreError, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

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

    #[inline]
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
    #[inline]
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
    #[inline]
    fn d2(self, a: f64) -> f64 {
        match self {
            Activation::None | Activation::Relu => 0.0,
            Activation::Tanh => -2.0 * a * (1.0 - a * a),
            Activation::Sigmoid => a * (1.0 - a) * (1.0 - 2.0 * a),
        }
    }

    #[inline]
    fn is_piecewise_linear(self) -> bool {
        matches!(self, Activation::None | Activation::Relu)
    }
}

/// Evaluates `$body` with `$c` bound to the activation `$act`, one arm per activation, so
/// `$c.apply`, `$c.d1` and `$c.d2` inline to branch-free code inside `$body`'s elementwise
/// loops and those vectorise (a `match` on the activation inside the loop would not).
macro_rules! with_activation {
    ($act:expr, $c:ident => $body:expr) => {
        match $act {
            Activation::None => {
                let $c = Activation::None;
                $body
            }
            Activation::Tanh => {
                let $c = Activation::Tanh;
                $body
            }
            Activation::Relu => {
                let $c = Activation::Relu;
                $body
            }
            Activation::Sigmoid => {
                let $c = Activation::Sigmoid;
                $body
            }
        }
    };
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

/// `out[i, :] ← a[i, :] · Wᵀ`, or `+=` with `accumulate` (`a`: n × k, `W`: m × k; out: n × m).
#[allow(clippy::too_many_arguments)]
fn linear(a: &[f64], n: usize, k: usize, w: &[f64], m: usize, out: &mut [f64], accumulate: bool) {
    matmul_f64(
        MatRef64::new(a, n, k),
        MatRef64::new(w, m, k).t(),
        out,
        accumulate,
    );
}

/// `out[i, :] ← g[i, :] · W`, or `+=` with `accumulate` (`g`: n × m, `W`: m × k; out: n × k).
#[allow(clippy::too_many_arguments)]
fn linear_input_grad(
    g: &[f64],
    n: usize,
    m: usize,
    w: &[f64],
    k: usize,
    out: &mut [f64],
    accumulate: bool,
) {
    matmul_f64(
        MatRef64::new(g, n, m),
        MatRef64::new(w, m, k),
        out,
        accumulate,
    );
}

/// `gw += gᵀ a`, i.e. `gw[o, :] += Σ_i g[i, o] a[i, :]` (`g`: n × m, `a`: n × k; gw: m × k).
fn linear_weight_grad(g: &[f64], n: usize, m: usize, a: &[f64], k: usize, gw: &mut [f64]) {
    matmul_f64(MatRef64::new(g, n, m).t(), MatRef64::new(a, n, k), gw, true);
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
        linear(a, n, k, &params[wo..bo], m, &mut z, false);
        // The bias and the activation in one pass over the product.
        let b = &params[bo..bo + m];
        with_activation!(self.activation(l), c => {
            for row in z.chunks_exact_mut(m) {
                for (v, &bi) in row.iter_mut().zip(b) {
                    *v = c.apply(*v + bi);
                }
            }
        });
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
            let (wo, bo) = self.offsets(l);
            let (k, m) = (self.sizes[l - 1], self.sizes[l]);
            let (gw, gb) = grad[wo..bo + m].split_at_mut(bo - wo);
            // δz_l = δa_l ⊙ σ'(z_l) and the bias gradient Σ_i δz_l[i, :], row by row in one
            // pass (each row is summed while it is in cache).
            let mut dz = Vec::with_capacity(n * m);
            with_activation!(self.activation(l), c => {
                for (dr, ar) in da.chunks_exact(m).zip(cache.acts[l].chunks_exact(m)) {
                    let start = dz.len();
                    dz.extend(dr.iter().zip(ar).map(|(g, &a)| g * c.d1(a)));
                    axpy(1.0, &dz[start..], gb);
                }
            });
            linear_weight_grad(&dz, n, m, &cache.acts[l - 1], k, gw);
            let next = if l > 1 {
                let mut prev = vec![0.0; n * k];
                linear_input_grad(&dz, n, m, &self.theta[wo..bo], k, &mut prev, false);
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
            linear(&cache.acts[l - 1], n, k, &v[wo..bo], m, &mut rz, false);
            if l > 1 {
                linear(&ra_all[l - 2], n, k, &self.theta[wo..bo], m, &mut rz, true);
            }
            // The bias direction and σ' in one pass.
            let vb = &v[bo..bo + m];
            let mut ra = vec![0.0; n * m];
            with_activation!(self.activation(l), c => {
                for ((rzr, rar), ar) in rz
                    .chunks_exact_mut(m)
                    .zip(ra.chunks_exact_mut(m))
                    .zip(cache.acts[l].chunks_exact(m))
                {
                    for (((r, o), &a), &b) in rzr.iter_mut().zip(rar.iter_mut()).zip(ar).zip(vb) {
                        *r += b;
                        *o = *r * c.d1(a);
                    }
                }
            });
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
            let (wo, bo) = self.offsets(l);
            let (k, m) = (self.sizes[l - 1], self.sizes[l]);
            let dz = &bwd.dz[l - 1];
            let (hw, hb) = hv[wo..bo + m].split_at_mut(bo - wo);
            // R{δz_l} in place of R{δa_l} (not needed past this layer), and its bias term
            // Σ_i R{δz_l}[i, :], row by row in one pass.
            let mut rdz = std::mem::take(&mut rda);
            let rows = rdz
                .chunks_exact_mut(m)
                .zip(cache.acts[l].chunks_exact(m))
                .zip(
                    bwd.da[l - 1]
                        .chunks_exact(m)
                        .zip(rf.rz[l - 1].chunks_exact(m)),
                );
            with_activation!(self.activation(l), c => {
                for ((rr, ar), (dr, zr)) in rows {
                    if c.is_piecewise_linear() {
                        for (r, &a) in rr.iter_mut().zip(ar) {
                            *r *= c.d1(a);
                        }
                    } else {
                        for (((r, &a), &d), &z) in rr.iter_mut().zip(ar).zip(dr).zip(zr) {
                            *r = *r * c.d1(a) + d * c.d2(a) * z;
                        }
                    }
                    axpy(1.0, rr, hb);
                }
            });
            linear_weight_grad(&rdz, n, m, &cache.acts[l - 1], k, hw);
            if l > 1 {
                // δz_l R{a_{l−1}}ᵀ (a weight term only: the bias sees no R{a}).
                linear_weight_grad(dz, n, m, &rf.ra[l - 2], k, hw);
                let mut prev = vec![0.0; n * k];
                linear_input_grad(&rdz, n, m, &self.theta[wo..bo], k, &mut prev, false);
                linear_input_grad(dz, n, m, &v[wo..bo], k, &mut prev, true);
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
        // Each refusal names the argument and both sizes.
        let says = |e: CoreError, want: &str| {
            let e = e.to_string();
            assert!(e.contains(want), "{want}: {e}");
        };
        says(
            m.forward(&[0.0; 5], 2).unwrap_err(),
            "input has 5 values, expected 2 rows x 2 features",
        );
        let cache = m.forward(&[0.0; 4], 2).unwrap();
        says(
            m.backward(&cache, &[0.0; 3]).unwrap_err(),
            "dL/dy has 3 values, expected 2 rows x 1 outputs",
        );
        let p = m.theta.len();
        says(
            m.jvp(&cache, &[0.0; 3]).unwrap_err(),
            &format!("direction has 3 values, the network has {p} parameters"),
        );
        let mut m2 = m.clone();
        says(
            m2.set_theta(&[0.0; 2]).unwrap_err(),
            &format!("theta has 2 values, the network has {p} parameters"),
        );
    }

    /// Portfolio-size timing (200 rows = one inner batch of 10 instances x 20 assets, d = 28,
    /// width 500, one tanh output): medians of forward + backward (an inner Adam step's
    /// network work) and of jvp + hvp (one CG product). `--ignored --nocapture` to see them.
    #[test]
    #[ignore]
    fn pass_timing_on_portfolio_size() {
        use std::time::Instant;
        let (n, d, w, o) = (200, 28, 500, 1);
        let m = Mlp::new(d, o, 2, w, Activation::Tanh, 1).unwrap();
        let x = rows(n, d, 2);
        let c = rows(n, o, 3);
        let wt = rows(n, o, 4);
        let v = rows(1, m.n_params(), 5);
        let median = |f: &mut dyn FnMut()| {
            let mut t: Vec<f64> = (0..101)
                .map(|_| {
                    let s = Instant::now();
                    f();
                    s.elapsed().as_secs_f64()
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let mut sink = 0.0;
        let fb = median(&mut || {
            let (cache, dy) = loss_grad(&m, &x, n, &c, &wt);
            sink += m.backward(&cache, &dy).unwrap().grad[0];
        });
        let (cache, dy) = loss_grad(&m, &x, n, &c, &wt);
        let bwd = m.backward(&cache, &dy).unwrap();
        let hv = median(&mut || {
            let rf = m.jvp(&cache, &v).unwrap();
            let rdy: Vec<f64> = rf.output().iter().zip(&c).map(|(u, c)| c * u).collect();
            sink += m.hvp(&cache, &bwd, &rf, &v, &rdy).unwrap()[0];
        });
        let xv = rows(4000, d, 6);
        let pr = median(&mut || sink += m.predict(&xv, 4000).unwrap()[0]);
        println!(
            "mlp {n}x{d}->{w}->{o} ({} threads): forward+backward {:.3} ms, jvp+hvp {:.3} ms, predict 4000 rows {:.3} ms ({sink:.1e})",
            rayon::current_num_threads(),
            fb * 1e3,
            hv * 1e3,
            pr * 1e3
        );
    }
}
