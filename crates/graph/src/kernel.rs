//! A hand-written training step (forward and backward) of the GCN on dense input features,
//! on plain slices: the layer structure of [`Gcn`] laid over core's kernels — dense products
//! by [`matmul`], propagation by the CSR kernel of [`Propagation`], and LayerNorm, ReLU, the
//! cross-entropy and the dropout masks by the fused row passes of
//! [`ferrolab_core::kernels::fused`] (why fused, and their tests against burn's ops, are
//! there).
//!
//! Dropout masks come from a counter-based generator seeded per step: element `i` of layer
//! `l`'s mask depends only on `(seed, l, i)`, so training is deterministic for any thread
//! count. Given the same masks, the step equals the autodiff path up to rounding (a test in
//! `train.rs` feeds both burn's masks).

use ferrolab_core::backend::device;
use ferrolab_core::burn::module::Param;
use ferrolab_core::burn::optim::GradientsParams;
use ferrolab_core::burn::prelude::*;
use ferrolab_core::kernels::fused::{
    add_rows, column_sums, cross_entropy, layer_norm_relu, layer_norm_relu_backward,
};
use ferrolab_core::kernels::gemm::{MatRef, matmul};
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

pub(crate) use ferrolab_core::kernels::fused::dropout_mask;

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
            layer_norm_relu(
                z,
                gamma.as_deref(),
                beta.as_deref(),
                LAYER_NORM_EPSILON,
                n,
                d_out,
            )
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
            let (dgamma, dbeta) = layer_norm_relu_backward(
                &mut grad,
                s.gamma.as_deref(),
                &s.xhat,
                &s.rstd,
                &s.out,
                d_out,
            );
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
