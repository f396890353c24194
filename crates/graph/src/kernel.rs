//! A hand-written training step (forward and backward) of the GCN on dense input features,
//! on plain slices: dense products by [`matmul`], propagation by the CSR kernel of
//! [`Propagation`], LayerNorm, ReLU and the cross-entropy fused into row-parallel passes.
//!
//! Why by hand: profiling a Cluster-GCN step on a 10k-node batch at width 128 through burn
//! showed the propagation was not the main cost; burn's element-wise ops (single-threaded,
//! one allocation each: ~3 ms per 10k × 128 add or ReLU) and autodiff bookkeeping were,
//! together with the dropout masks. Here every element-wise pass is one parallel sweep.
//!
//! Dropout masks come from a counter-based generator seeded per step (the Bernoulli draws of
//! burn's `Dropout` cost ~30 ms per 10k × 128 mask, a third of a step's CPU time): element `i`
//! of layer `l`'s mask depends only on `(seed, l, i)`, so training is deterministic for any
//! thread count. Given the same masks, the step equals the autodiff path up to rounding (a
//! test feeds both burn's masks).

use ferrolab_core::backend::device;
use ferrolab_core::burn::module::Param;
use ferrolab_core::burn::optim::GradientsParams;
use ferrolab_core::burn::prelude::*;
use ferrolab_core::linalg::{MatRef, matmul};
use rayon::prelude::*;

use crate::models::Gcn;
use crate::models::gcn::LAYER_NORM_EPSILON;
use crate::spmm::Propagation;

/// What the backward pass keeps of one layer.
struct Saved {
    /// The layer's input after dropout, `n × d_in`.
    h_drop: Vec<f32>,
    /// The dropout mask of that input (`None`: no dropout), 1 where kept.
    mask: Option<Vec<f32>>,
    w_n: Vec<f32>,
    w_s: Option<Vec<f32>>,
    /// Hidden layers: the normalised pre-activation `x̂` and its rows' `1 / σ` (both empty
    /// without LayerNorm), `γ`, and the ReLU output; the last layer: the logits in `out`.
    xhat: Vec<f32>,
    rstd: Vec<f32>,
    gamma: Option<Vec<f32>>,
    out: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

/// Cross-entropy on `targets` (local row indices) of a forward pass on `x` (row-major
/// `n × f`, before dropout), and the gradient of every parameter of `model`; the dropout masks
/// are drawn from `mask_seed` ([`dropout_mask`]).
pub(crate) fn dense_gradients(
    model: &Gcn,
    adj: &Propagation,
    x: &[f32],
    f: usize,
    targets: &[usize],
    labels: &[usize],
    mask_seed: u64,
) -> (f32, GradientsParams) {
    let n = adj.num_nodes();
    let keep = 1.0 - model.dropout_prob();
    let mut layer = 0u64;
    forward_backward(model, adj, x, f, targets, labels, &mut |d| {
        layer += 1;
        (keep < 1.0).then(|| dropout_mask(n * d, keep, mask_seed, layer))
    })
}

/// A dropout mask of `len` values, 1 with probability `keep` and 0 otherwise. Each block of
/// 4096 values runs its own SplitMix64 stream seeded from `(seed, layer, block)`: parallel,
/// and the same whatever the thread count.
pub(crate) fn dropout_mask(len: usize, keep: f64, seed: u64, layer: u64) -> Vec<f32> {
    const BLOCK: usize = 4096;
    // Compare 32-bit draws against keep · 2³², two draws per 64-bit output.
    let threshold = (keep.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
    let mut mask = vec![0f32; len];
    mask.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, chunk)| {
            let mut state = seed ^ splitmix64(&mut (layer << 40 ^ b as u64));
            for pair in chunk.chunks_mut(2) {
                let r = splitmix64(&mut state);
                for (k, v) in pair.iter_mut().enumerate() {
                    *v = if (r >> (32 * k)) & 0xffff_ffff < threshold {
                        1.0
                    } else {
                        0.0
                    };
                }
            }
        });
    mask
}

/// One step of SplitMix64 (Steele, Lea & Flood 2014): advances `state`, returns the output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// [`dense_gradients`] with the dropout mask of each layer's `n × d` input from `mask(d)`,
/// called once per layer in order (1 where kept; `None`: no dropout).
pub(crate) fn forward_backward(
    model: &Gcn,
    adj: &Propagation,
    x: &[f32],
    f: usize,
    targets: &[usize],
    labels: &[usize],
    mask: &mut dyn FnMut(usize) -> Option<Vec<f32>>,
) -> (f32, GradientsParams) {
    let n = adj.num_nodes();
    let layers = model.num_layers();
    let p = model.dropout_prob();
    let keep_scale = (1.0 / (1.0 - p)) as f32;
    let mut saved: Vec<Saved> = Vec::with_capacity(layers);
    let mut h: Vec<f32> = x.to_vec();
    let mut d_in = f;
    for l in 0..layers {
        // Dropout as burn's `Dropout` computes it: `(h · m) · 1/(1-p)`.
        let mask = mask(d_in);
        if let Some(m) = &mask {
            h.par_iter_mut()
                .zip(m.par_iter())
                .with_min_len(4096)
                .for_each(|(v, &k)| *v = (*v * k) * keep_scale);
        }
        let params = model.layer_params(l);
        let w_n = values(params.neigh.weight.val());
        let w_s = params.self_loop.map(|s| values(s.weight.val()));
        let bias = params.neigh.bias.as_ref().map(|b| values(b.val()));
        let gamma = params.norm.map(|m| values(m.gamma.val()));
        let beta = params
            .norm
            .and_then(|m| m.beta.as_ref())
            .map(|b| values(b.val()));
        let d_out = w_n.len() / d_in.max(1);
        // Z = Â (H W_n) + b + H W_s, added in the autodiff path's order.
        let mut t = vec![0f32; n * d_out];
        matmul(
            MatRef::new(&h, n, d_in),
            MatRef::new(&w_n, d_in, d_out),
            &mut t,
            false,
        );
        let mut z = adj.apply(&t, d_out);
        drop(t);
        if let Some(b) = &bias {
            add_rows(&mut z, b);
        }
        if let Some(ws) = &w_s {
            matmul(
                MatRef::new(&h, n, d_in),
                MatRef::new(ws, d_in, d_out),
                &mut z,
                true,
            );
        }
        let last = l + 1 == layers;
        let (xhat, rstd, out) = if last {
            (Vec::new(), Vec::new(), z)
        } else {
            hidden_activation(z, gamma.as_deref(), beta.as_deref(), n, d_out)
        };
        let next = if last { Vec::new() } else { out.clone() };
        saved.push(Saved {
            h_drop: std::mem::replace(&mut h, next),
            mask,
            w_n,
            w_s,
            xhat,
            rstd,
            gamma,
            out,
            d_in,
            d_out,
        });
        d_in = d_out;
    }
    let Some(top) = saved.last() else {
        return (0.0, GradientsParams::new());
    };
    let (loss, mut grad) = cross_entropy(&top.out, top.d_out, targets, labels);

    let mut grads = GradientsParams::new();
    for l in (0..layers).rev() {
        let s = &saved[l];
        let params = model.layer_params(l);
        let (d_in, d_out) = (s.d_in, s.d_out);
        // `grad` is dL/d(layer output); turn it into dL/dZ.
        if l + 1 < layers {
            let (dgamma, dbeta) = match &s.gamma {
                Some(g) => {
                    // dγ, dβ from the incoming gradient, before it is rewritten in place.
                    let sums = block_sums(&grad, d_out, 2, &|rows, acc| {
                        let (dg, db) = acc.split_at_mut(d_out);
                        let (gr, xr, yr) =
                            (&grad[rows.clone()], &s.xhat[rows.clone()], &s.out[rows]);
                        for ((gr, xr), yr) in
                            gr.chunks(d_out).zip(xr.chunks(d_out)).zip(yr.chunks(d_out))
                        {
                            for k in 0..d_out {
                                let dy = if yr[k] > 0.0 { gr[k] } else { 0.0 };
                                dg[k] += dy * xr[k];
                                db[k] += dy;
                            }
                        }
                    });
                    grad.par_chunks_mut(d_out)
                        .zip(s.xhat.par_chunks(d_out))
                        .zip(s.out.par_chunks(d_out))
                        .zip(s.rstd.par_iter())
                        .with_min_len(64)
                        .for_each(|(((gr, xr), yr), &r)| {
                            layer_norm_backward_row(gr, xr, yr, g, r);
                        });
                    let (dg, db) = sums.split_at(d_out);
                    (dg.to_vec(), db.to_vec())
                }
                None => {
                    grad.par_iter_mut()
                        .zip(s.out.par_iter())
                        .with_min_len(4096)
                        .for_each(|(d, &y)| {
                            if y <= 0.0 {
                                *d = 0.0;
                            }
                        });
                    (Vec::new(), Vec::new())
                }
            };
            if let Some(norm) = params.norm {
                register(&mut grads, &norm.gamma, dgamma, [d_out]);
                if let Some(b) = &norm.beta {
                    register(&mut grads, b, dbeta, [d_out]);
                }
            }
        }
        let dz = grad;
        if let Some(b) = &params.neigh.bias {
            register(&mut grads, b, column_sums(&dz, d_out), [d_out]);
        }
        let h = MatRef::new(&s.h_drop, n, d_in);
        if let (Some(sl), Some(_)) = (params.self_loop, &s.w_s) {
            let mut dws = vec![0f32; d_in * d_out];
            matmul(h.t(), MatRef::new(&dz, n, d_out), &mut dws, false);
            register(&mut grads, &sl.weight, dws, [d_in, d_out]);
        }
        let dt = adj.apply_t(&dz, d_out);
        let mut dwn = vec![0f32; d_in * d_out];
        matmul(h.t(), MatRef::new(&dt, n, d_out), &mut dwn, false);
        register(&mut grads, &params.neigh.weight, dwn, [d_in, d_out]);
        if l == 0 {
            break;
        }
        // dH = (dT W_nᵀ + dZ W_sᵀ) through the dropout.
        let mut dh = vec![0f32; n * d_in];
        matmul(
            MatRef::new(&dt, n, d_out),
            MatRef::new(&s.w_n, d_in, d_out).t(),
            &mut dh,
            false,
        );
        if let Some(ws) = &s.w_s {
            matmul(
                MatRef::new(&dz, n, d_out),
                MatRef::new(ws, d_in, d_out).t(),
                &mut dh,
                true,
            );
        }
        if let Some(m) = &s.mask {
            dh.par_iter_mut()
                .zip(m.par_iter())
                .with_min_len(4096)
                .for_each(|(v, &k)| *v = (*v * k) * keep_scale);
        }
        grad = dh;
    }
    (loss, grads)
}

/// A hidden layer's LayerNorm (when `gamma` is given) and ReLU of `z` (`n × d`): returns
/// `x̂` (empty without LayerNorm), the rows' `1 / σ` and the output.
fn hidden_activation(
    z: Vec<f32>,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    n: usize,
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut out = vec![0f32; n * d];
    let Some(g) = gamma else {
        out.par_iter_mut()
            .zip(z.par_iter())
            .with_min_len(4096)
            .for_each(|(y, &v)| *y = v.max(0.0));
        return (Vec::new(), Vec::new(), out);
    };
    let mut xhat = z;
    let mut rstd = vec![0f32; n];
    xhat.par_chunks_mut(d)
        .zip(out.par_chunks_mut(d))
        .zip(rstd.par_iter_mut())
        .with_min_len(64)
        .for_each(|((xr, yr), r)| {
            *r = layer_norm_row(xr);
            for (k, (y, &v)) in yr.iter_mut().zip(xr.iter()).enumerate() {
                let b = beta.map_or(0.0, |b| b[k]);
                *y = (v * g[k] + b).max(0.0);
            }
        });
    (xhat, rstd, out)
}

/// Normalises one row in place to `x̂ = (x - μ) / σ` and returns `1 / σ`,
/// `σ = sqrt(var + ε)` with the population variance (as burn and PyTorch).
fn layer_norm_row(x: &mut [f32]) -> f32 {
    let d = x.len().max(1) as f32;
    let mean = x.iter().sum::<f32>() / d;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    let r = 1.0 / (var + LAYER_NORM_EPSILON).sqrt();
    x.iter_mut().for_each(|v| *v = (*v - mean) * r);
    r
}

/// In place: `g` from dL/d(ReLU output) to dL/d(LayerNorm input) for one row, given `x̂`,
/// the ReLU output `y`, `γ` and `1 / σ`.
fn layer_norm_backward_row(g: &mut [f32], xhat: &[f32], y: &[f32], gamma: &[f32], r: f32) {
    let d = g.len().max(1) as f32;
    // dx̂ = dy · γ, with dy zero where the ReLU was off.
    for ((gv, &yv), &gm) in g.iter_mut().zip(y).zip(gamma) {
        *gv = if yv > 0.0 { *gv * gm } else { 0.0 };
    }
    let mean_g = g.iter().sum::<f32>() / d;
    let mean_gx = g.iter().zip(xhat).map(|(a, b)| a * b).sum::<f32>() / d;
    for (gv, &xv) in g.iter_mut().zip(xhat) {
        *gv = r * (*gv - mean_g - xv * mean_gx);
    }
}

/// Mean cross-entropy of the rows `targets` of `logits` (`n × c`) and its gradient with
/// respect to all of `logits` (zero outside `targets`).
fn cross_entropy(logits: &[f32], c: usize, targets: &[usize], labels: &[usize]) -> (f32, Vec<f32>) {
    let mut grad = vec![0f32; logits.len()];
    let scale = 1.0 / targets.len().max(1) as f32;
    let mut loss = 0f64;
    for &i in targets {
        let row = &logits[i * c..(i + 1) * c];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let log_z = max + sum.ln();
        let y = labels[i];
        loss += f64::from(log_z - row[y]);
        for (k, (gv, &v)) in grad[i * c..(i + 1) * c].iter_mut().zip(row).enumerate() {
            let p = (v - log_z).exp();
            *gv = (p - if k == y { 1.0 } else { 0.0 }) * scale;
        }
    }
    ((loss * f64::from(scale)) as f32, grad)
}

/// `z[i, :] += b` for every row.
fn add_rows(z: &mut [f32], b: &[f32]) {
    z.par_chunks_mut(b.len().max(1))
        .with_min_len(64)
        .for_each(|row| row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv));
}

fn column_sums(m: &[f32], d: usize) -> Vec<f32> {
    block_sums(m, d, 1, &|rows, acc| {
        for row in m[rows].chunks(d.max(1)) {
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
    })
}

/// Row-block reduction of `m` (`· × d`, row-major) into `width · d` sums: `f(range, acc)`
/// adds the rows in `range` (element indices of `m`) into `acc`. Blocks are fixed (not
/// chosen by rayon's work stealing) and their partial sums added in order, so the result
/// does not depend on the thread count or the schedule.
fn block_sums(
    m: &[f32],
    d: usize,
    width: usize,
    f: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync),
) -> Vec<f32> {
    const ROWS: usize = 512;
    let step = ROWS * d.max(1);
    let partials: Vec<Vec<f32>> = (0..m.len().div_ceil(step))
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0f32; width * d];
            f(b * step..((b + 1) * step).min(m.len()), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0f32; width * d];
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

fn register<const D: usize>(
    grads: &mut GradientsParams,
    param: &Param<Tensor<D>>,
    g: Vec<f32>,
    shape: [usize; D],
) {
    let t = Tensor::<D>::from_data(TensorData::new(g, shape), &device());
    grads.register(param.id, t);
}

/// A tensor's values, row-major, in one copy.
pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    let data = t.into_data();
    match data.as_slice::<f32>() {
        Ok(v) => v.to_vec(),
        Err(_) => data.iter::<f32>().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_masks_keep_their_share_and_depend_only_on_seed_and_layer() {
        let n = 100_003;
        let m = dropout_mask(n, 0.8, 7, 1);
        let kept = m.iter().filter(|&&v| v == 1.0).count() as f64 / n as f64;
        assert!((kept - 0.8).abs() < 0.01, "{kept}");
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0));
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| dropout_mask(n, 0.8, 7, 1));
        assert_eq!(m, one_thread);
        assert_ne!(m, dropout_mask(n, 0.8, 7, 2));
        assert_ne!(m, dropout_mask(n, 0.8, 8, 1));
        assert!(dropout_mask(10, 1.0, 7, 1).iter().all(|&v| v == 1.0));
    }
}
