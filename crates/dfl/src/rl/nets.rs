//! Small helpers around [`Mlp`] for the agent: haiku's orthogonal initialisation (the
//! reference's nets), Adam (optax's defaults), Polyak averaging of target networks, and the
//! gradient of a network's output with respect to its *input*, which [`Mlp`]'s public API
//! does not expose and OMD/TaskMet need (the target value `V(ŝ')` is differentiated through
//! the model's predicted next state `ŝ'`).

use super::RlRng;
use super::cartpole::standard_normal;
use crate::mlp::{Activation, Mlp};
use ferrolab_core::kernels::gemm::{MatRef64, matmul_f64};
use ferrolab_core::{CoreError, Result};

pub use crate::optim::Adam;

/// An `rows × cols` matrix (row-major) with orthonormal rows (`rows ≤ cols`) or orthonormal
/// columns (`rows > cols`), times `gain`: haiku's `Orthogonal(scale)` for a `Linear` whose
/// weight, stored as ours `out × in`, is the QR factor of a Gaussian matrix. Gram–Schmidt on
/// Gaussian vectors gives the same (Haar) distribution as the sign-fixed QR.
fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut RlRng) -> Vec<f64> {
    let (count, len) = if rows <= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(count);
    while basis.len() < count {
        let mut v: Vec<f64> = (0..len).map(|_| standard_normal(rng)).collect();
        // Twice (re-orthogonalisation) so the basis stays orthonormal to rounding.
        for _ in 0..2 {
            for u in &basis {
                let c: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                for (vi, ui) in v.iter_mut().zip(u) {
                    *vi -= c * ui;
                }
            }
        }
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        // A draw (numerically) in the span of the others: draw again.
        if nv > 1e-8 {
            basis.push(v.into_iter().map(|x| x / nv).collect());
        }
    }
    let mut w = vec![0.0; rows * cols];
    for (a, u) in basis.iter().enumerate() {
        for (b, &x) in u.iter().enumerate() {
            let (i, j) = if rows <= cols { (a, b) } else { (b, a) };
            w[i * cols + j] = gain * x;
        }
    }
    w
}

/// A dense net `d_in → [width, ReLU] × (layers − 1) → d_out` initialised as the reference's
/// `net_fn`: orthogonal weights with gain √2 in the hidden layers and `final_gain` in the
/// last one, zero biases (haiku's default), then `final_bias` on the last layer's bias.
#[allow(clippy::too_many_arguments)]
pub fn init_net(
    d_in: usize,
    d_out: usize,
    layers: usize,
    width: usize,
    final_gain: f64,
    final_bias: Option<&[f64]>,
    rng: &mut RlRng,
) -> Result<Mlp> {
    let mut net = Mlp::new(d_in, d_out, layers, width, Activation::None, 0)?;
    let sizes = net.sizes().to_vec();
    let mut theta = Vec::with_capacity(net.n_params());
    for (l, s) in sizes.windows(2).enumerate() {
        let last = l + 2 == sizes.len();
        let gain = if last {
            final_gain
        } else {
            std::f64::consts::SQRT_2
        };
        theta.extend(orthogonal(s[1], s[0], gain, rng));
        match final_bias {
            Some(b) if last => {
                if b.len() != s[1] {
                    return Err(CoreError::Data(format!(
                        "init: final bias has {} values for {} outputs",
                        b.len(),
                        s[1]
                    )));
                }
                theta.extend_from_slice(b);
            }
            _ => theta.extend(std::iter::repeat_n(0.0, s[1])),
        }
    }
    net.set_theta(&theta)?;
    Ok(net)
}

/// Polyak averaging, `target ← τ·online + (1 − τ)·target` (the reference's
/// `soft_update_params`).
pub fn soft_update(target: &mut Mlp, online: &Mlp, tau: f64) {
    for (t, o) in target.theta_mut().iter_mut().zip(online.theta()) {
        *t = tau * o + (1.0 - tau) * *t;
    }
}

/// `∂/∂x Σ_{i,o} dy[i, o] · net(x)[i, o]`: the input gradient of `n` rows of `x` given the
/// upstream `dy` (`n × out`). Recomputes the forward pass from θ's documented layout (per
/// layer `W` `out × in` row-major, then `b`; ReLU hidden layers).
pub fn input_grad(net: &Mlp, x: &[f64], n: usize, dy: &[f64]) -> Result<Vec<f64>> {
    let sizes = net.sizes();
    let (d_in, d_out) = (net.d_in(), net.d_out());
    if x.len() != n * d_in || dy.len() != n * d_out {
        return Err(CoreError::Data(format!(
            "input_grad: {} inputs and {} upstream values for {n} rows of a {d_in}→{d_out} net",
            x.len(),
            dy.len()
        )));
    }
    let theta = net.theta();
    let layers = sizes.len() - 1;
    // Weight offsets and the activations after each layer.
    let mut offsets = Vec::with_capacity(layers);
    let mut acts: Vec<Vec<f64>> = Vec::with_capacity(layers + 1);
    acts.push(x.to_vec());
    let mut off = 0;
    for l in 0..layers {
        let (k, m) = (sizes[l], sizes[l + 1]);
        offsets.push(off);
        let w = &theta[off..off + m * k];
        let b = &theta[off + m * k..off + m * k + m];
        let mut z = vec![0.0; n * m];
        matmul_f64(
            MatRef64::new(&acts[l], n, k),
            MatRef64::new(w, m, k).t(),
            &mut z,
            false,
        );
        let relu = l + 1 < layers;
        for row in z.chunks_exact_mut(m) {
            for (v, bi) in row.iter_mut().zip(b) {
                *v += bi;
                if relu {
                    *v = v.max(0.0);
                }
            }
        }
        acts.push(z);
        off += m * k + m;
    }
    let out_act = net.output_activation();
    let mut da = dy.to_vec();
    for l in (0..layers).rev() {
        let (k, m) = (sizes[l], sizes[l + 1]);
        // dz = da ⊙ σ'(a), σ' written in terms of the activation as in `Mlp`.
        let a = &acts[l + 1];
        if l + 1 < layers {
            for (g, &av) in da.iter_mut().zip(a) {
                if av <= 0.0 {
                    *g = 0.0;
                }
            }
        } else {
            match out_act {
                Activation::None => {}
                Activation::Relu => {
                    for (g, &av) in da.iter_mut().zip(a) {
                        if av <= 0.0 {
                            *g = 0.0;
                        }
                    }
                }
                Activation::Tanh => {
                    for (g, &av) in da.iter_mut().zip(a) {
                        *g *= 1.0 - av * av;
                    }
                }
                Activation::Sigmoid => {
                    for (g, &av) in da.iter_mut().zip(a) {
                        *g *= av * (1.0 - av);
                    }
                }
            }
        }
        let w = &theta[offsets[l]..offsets[l] + m * k];
        let mut prev = vec![0.0; n * k];
        matmul_f64(
            MatRef64::new(&da, n, m),
            MatRef64::new(w, m, k),
            &mut prev,
            false,
        );
        da = prev;
    }
    Ok(da)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn orthogonal_rows_or_columns() {
        let mut rng = RlRng::seed_from_u64(0);
        for (r, c) in [(3, 7), (7, 3), (5, 5)] {
            let w = orthogonal(r, c, 2.0, &mut rng);
            let (count, dot): (usize, Box<dyn Fn(usize, usize) -> f64>) = if r <= c {
                (
                    r,
                    Box::new(|a, b| (0..c).map(|j| w[a * c + j] * w[b * c + j]).sum()),
                )
            } else {
                (
                    c,
                    Box::new(|a, b| (0..r).map(|i| w[i * c + a] * w[i * c + b]).sum()),
                )
            };
            for a in 0..count {
                for b in 0..count {
                    let want = if a == b { 4.0 } else { 0.0 };
                    assert!((dot(a, b) - want).abs() < 1e-12);
                }
            }
        }
    }

    /// The input gradient against central differences of Σ dy ⊙ net(x).
    #[test]
    fn input_grad_matches_finite_differences() {
        let mut rng = RlRng::seed_from_u64(1);
        let (n, d, o) = (5, 4, 3);
        let net = init_net(d, o, 3, 6, 0.7, None, &mut rng).unwrap();
        let x: Vec<f64> = (0..n * d).map(|_| rng.random::<f64>() - 0.5).collect();
        let dy: Vec<f64> = (0..n * o).map(|_| rng.random::<f64>() - 0.5).collect();
        let g = input_grad(&net, &x, n, &dy).unwrap();
        let f = |x: &[f64]| -> f64 {
            let y = net.predict(x, n).unwrap();
            y.iter().zip(&dy).map(|(a, b)| a * b).sum()
        };
        let eps = 1e-6;
        for j in 0..n * d {
            let mut xp = x.clone();
            xp[j] += eps;
            let mut xm = x.clone();
            xm[j] -= eps;
            let fd = (f(&xp) - f(&xm)) / (2.0 * eps);
            assert!((fd - g[j]).abs() < 1e-8, "{j}: {fd} vs {}", g[j]);
        }
        assert!(input_grad(&net, &x[1..], n, &dy).is_err());
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let mut w = vec![1.0, -2.0, 0.5];
        let mut opt = Adam::new(3, 0.1);
        opt.step(&mut w, &[3.0, -0.01, 0.0]);
        assert!((w[0] - 0.9).abs() < 1e-9 && (w[1] + 1.9).abs() < 1e-6 && w[2] == 0.5);
    }
}
