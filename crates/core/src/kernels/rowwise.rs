//! Row-wise ops of the attention block — softmax and LayerNorm over the last dimension — as a
//! burn backend extension in the pattern of [`pointwise`](super::pointwise).
//!
//! burn-flex already runs both forwards as fused SIMD row kernels, but burn's autodiff knows
//! neither op: under `Autodiff<Flex>` softmax records as five tensor ops (max, subtract, exp,
//! sum, divide) and LayerNorm as eight, each with its own backward pass and saved tensors.
//! Here the forward is flex's fused kernel (the trait's default body, so other backends keep
//! burn's composed op) and the backward is one hand-written op:
//!
//! - softmax: `dx = y ⊙ (dy − ⟨dy, y⟩)` per row, keeping only the output `y` (PyTorch keeps
//!   the output too);
//! - LayerNorm: `dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂))` with `g = dy ⊙ γ`, `x̂ = (x − μ)·r`,
//!   `r = 1/√(var + ε)`, and `dγ = Σ dy ⊙ x̂`, `dβ = Σ dy` over rows, in one pass that
//!   recomputes `μ` and `r` from the saved input (a row is a few hundred floats, so this is
//!   cheaper than keeping two more tensors alive until the backward).
//!
//! The `dγ`/`dβ` sums are split into fixed blocks of rows independent of the thread count and
//! added in block order, so gradients are the same bit for bit at any `--threads`.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use rayon::prelude::*;

use super::flex_slices::{contiguous, is_f32, rows_per_task, tensor, values};

/// Softmax along `dim` (`dim < D`); the fast backward covers the last dimension, any other
/// takes burn's composed gradient.
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    assert!(dim < D, "softmax: dim {dim} out of range for rank {D}");
    Tensor::from_dispatch(<Dispatch as RowwiseKernels>::softmax_fwd(
        x.into_dispatch(),
        dim,
    ))
}

/// LayerNorm over the last dimension: `(x − μ)/√(var + ε) ⊙ γ + β`, biased variance (as
/// `burn::nn::LayerNorm` and PyTorch). `γ` and `β` have the last dimension's size.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as RowwiseKernels>::layer_norm_fwd(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
}

/// [`layer_norm`] with the parameters of a `burn::nn::LayerNorm` module (its ε is private;
/// pass the one it was configured with — `LayerNormConfig`'s default is 1e-5). A module
/// without a bias takes β = 0.
pub fn layer_norm_module<const D: usize>(
    m: &burn::nn::LayerNorm,
    x: Tensor<D>,
    epsilon: f64,
) -> Tensor<D> {
    let gamma = m.gamma.val();
    let beta = match &m.beta {
        Some(b) => b.val(),
        None => gamma.zeros_like(),
    };
    layer_norm(x, gamma, beta, epsilon)
}

#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait RowwiseKernels: Backend {
    /// Softmax forward (flex: its fused row kernel).
    fn softmax_fwd(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        Self::softmax(x, dim)
    }

    /// `dx = y ⊙ (dy − Σ_dim dy ⊙ y)` from the output `y`.
    fn softmax_bwd(y: FloatTensor<Self>, dy: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        softmax_bwd_composed::<Self>(y, dy, dim)
    }

    /// LayerNorm forward (flex: its fused row kernel).
    fn layer_norm_fwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), epsilon)
    }

    /// `(dx, dγ, dβ)` of LayerNorm from its input, `γ` and `dy`.
    fn layer_norm_bwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        layer_norm_bwd_composed::<Self>(x, gamma, dy, epsilon)
    }
}

/// The default body of [`RowwiseKernels::softmax_bwd`], callable for any backend.
fn softmax_bwd_composed<B: Backend>(
    y: FloatTensor<B>,
    dy: FloatTensor<B>,
    dim: usize,
) -> FloatTensor<B> {
    let dot = B::float_sum_dim(B::float_mul(dy.clone(), y.clone()), dim);
    B::float_mul(y, B::float_sub(dy, dot))
}

/// The default body of [`RowwiseKernels::layer_norm_bwd`], callable for any backend.
fn layer_norm_bwd_composed<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    dy: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let rank = shape.num_dims();
    let last = rank - 1;
    let c = shape[last];
    let mean = B::float_mean_dim(x.clone(), last);
    let centered = B::float_sub(x, mean);
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), last);
    let r = B::float_recip(B::float_sqrt(B::float_add_scalar(var, epsilon.into())));
    let xhat = B::float_mul(centered, r.clone());
    let bcast: Vec<usize> = (0..rank).map(|i| if i == last { c } else { 1 }).collect();
    let g = B::float_mul(dy.clone(), B::float_reshape(gamma, Shape::from(bcast)));
    let mean_g = B::float_mean_dim(g.clone(), last);
    let mean_gx = B::float_mean_dim(B::float_mul(g.clone(), xhat.clone()), last);
    let dx = B::float_mul(
        r,
        B::float_sub(B::float_sub(g, mean_g), B::float_mul(xhat.clone(), mean_gx)),
    );
    let rows = shape.num_elements() / c.max(1);
    let flat = |t: FloatTensor<B>| B::float_reshape(t, Shape::from(vec![rows, c]));
    let dgamma = B::float_sum_dim(flat(B::float_mul(dy.clone(), xhat)), 0);
    let dbeta = B::float_sum_dim(flat(dy), 0);
    (
        dx,
        B::float_reshape(dgamma, Shape::from(vec![c])),
        B::float_reshape(dbeta, Shape::from(vec![c])),
    )
}

/// Rows per block of the `dγ`/`dβ` partial sums: fixed (not derived from the thread count) so
/// that the summation order, and so the result, does not depend on it.
fn ln_rows_per_block(c: usize) -> usize {
    rows_per_task(c).max(16)
}

impl RowwiseKernels for Flex {
    fn softmax_bwd(y: FlexTensor, dy: FlexTensor, dim: usize) -> FlexTensor {
        let rank = y.shape().num_dims();
        if dim + 1 != rank || !is_f32(&y) || !is_f32(&dy) {
            return softmax_bwd_composed::<Flex>(y, dy, dim);
        }
        let c = y.shape()[dim];
        let (y, dy) = (contiguous(y), contiguous(dy));
        let shape = dy.shape();
        let (ys, gs) = (values(&y), values(&dy));
        if c == 0 {
            return dy;
        }
        let chunk = rows_per_task(c) * c;
        let mut out = vec![0f32; gs.len()];
        out.par_chunks_mut(chunk)
            .zip(gs.par_chunks(chunk).zip(ys.par_chunks(chunk)))
            .for_each(|(o, (g, yv))| {
                for ((orow, grow), yrow) in o.chunks_mut(c).zip(g.chunks(c)).zip(yv.chunks(c)) {
                    let dot: f32 = grow.iter().zip(yrow).map(|(a, b)| a * b).sum();
                    for ((d, &gi), &yi) in orow.iter_mut().zip(grow).zip(yrow) {
                        *d = yi * (gi - dot);
                    }
                }
            });
        tensor(out, shape)
    }

    fn layer_norm_bwd(
        x: FlexTensor,
        gamma: FlexTensor,
        dy: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if !is_f32(&x) || !is_f32(&gamma) || !is_f32(&dy) {
            return layer_norm_bwd_composed::<Flex>(x, gamma, dy, epsilon);
        }
        let shape = x.shape();
        let c = shape[shape.num_dims() - 1];
        let (x, gamma, dy) = (contiguous(x), contiguous(gamma), contiguous(dy));
        let (xs, gam, gs) = (values(&x), values(&gamma), values(&dy));
        let eps = epsilon as f32;
        let block = ln_rows_per_block(c.max(1)) * c.max(1);
        let mut dx = vec![0f32; xs.len()];
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(block)
            .zip(xs.par_chunks(block).zip(gs.par_chunks(block)))
            .map(|(o, (xb, gb))| {
                let (mut dgam, mut dbet) = (vec![0f32; c], vec![0f32; c]);
                let n = c as f32;
                for ((orow, xrow), grow) in o.chunks_mut(c).zip(xb.chunks(c)).zip(gb.chunks(c)) {
                    // Zipped iterators throughout: no bounds checks, so the loops vectorise.
                    let mean = xrow.iter().sum::<f32>() / n;
                    let var = xrow.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                    let r = 1.0 / (var + eps).sqrt();
                    let (mut sg, mut sgx) = (0f32, 0f32);
                    for (((&x, &g), &gm), (dg, db)) in xrow
                        .iter()
                        .zip(grow)
                        .zip(gam)
                        .zip(dgam.iter_mut().zip(dbet.iter_mut()))
                    {
                        let xh = (x - mean) * r;
                        let gg = g * gm;
                        sg += gg;
                        sgx += gg * xh;
                        *dg += g * xh;
                        *db += g;
                    }
                    let (mg, mgx) = (sg / n, sgx / n);
                    for (((o, &x), &g), &gm) in orow.iter_mut().zip(xrow).zip(grow).zip(gam) {
                        *o = r * (g * gm - mg - (x - mean) * r * mgx);
                    }
                }
                (dgam, dbet)
            })
            .collect();
        let (mut dgam, mut dbet) = (vec![0f32; c], vec![0f32; c]);
        for (pg, pb) in &partials {
            for i in 0..c {
                dgam[i] += pg[i];
                dbet[i] += pb[i];
            }
        }
        (
            tensor(dx, shape),
            tensor(dgam, Shape::new([c])),
            tensor(dbet, Shape::new([c])),
        )
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl RowwiseKernels for burn::backend::Cube {}

/// The backward of softmax: state = its output and the dimension.
#[derive(Debug)]
struct SoftmaxBackward;

impl<B: Backend + RowwiseKernels> Backward<B, 1> for SoftmaxBackward {
    type State = (FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let Some(node) = parent else { return };
        let (y, dim) = ops.state;
        grads.register::<B>(node.id, B::softmax_bwd(y, dy, dim));
    }
}

/// The backward of LayerNorm: state = its input, `γ` and ε.
#[derive(Debug)]
struct LayerNormBackward;

impl<B: Backend + RowwiseKernels> Backward<B, 3> for LayerNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, eps) = ops.state;
        let (dx, dgamma, dbeta) = B::layer_norm_bwd(x, gamma, dy, eps);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, dbeta);
        }
    }
}

impl<B: Backend + RowwiseKernels, C: CheckpointStrategy> RowwiseKernels for Autodiff<B, C> {
    fn softmax_fwd(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::softmax_fwd(x.into_primitive(), dim);
                prep.finish((y.clone(), dim), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_fwd(x.into_primitive(), dim)),
        }
    }

    fn layer_norm_fwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let prep = LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (gamma, beta) = (gamma.into_primitive(), beta.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let y = B::layer_norm_fwd(x.clone(), gamma.clone(), beta, epsilon);
                prep.finish((x, gamma, epsilon), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::layer_norm_fwd(x.into_primitive(), gamma, beta, epsilon))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{device, train_device};
    use crate::nn::to_vec_f32;
    use burn::tensor::Distribution;

    const SHAPES: [[usize; 3]; 5] = [[1, 1, 1], [1, 3, 7], [2, 5, 16], [3, 17, 33], [2, 64, 64]];

    fn random<const D: usize>(shape: [usize; D], seed: u64, dev: &Device) -> Tensor<D> {
        // Seed and draw as one step: another test may reseed the shared generator between.
        let _rng = crate::backend::exclusive_rng();
        dev.seed(seed);
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), dev)
    }

    /// `|a − b| ≤ tol·|b| + 1e-5·max|b|`: gradients near zero are sums of cancelling terms,
    /// so their rounding error is relative to the largest entry, not to themselves.
    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let floor = 1e-5 * want.iter().fold(1e-3f32, |m, w| m.max(w.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * w.abs() + floor && g.is_finite(),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn softmax_forward_and_gradient_match_burn() {
        for (k, &shape) in SHAPES.iter().enumerate() {
            let dev = train_device();
            let x0 = random(shape, k as u64, &dev);
            let r = random(shape, 50 + k as u64, &dev);
            for dim in 0..3 {
                let run = |ours: bool| {
                    let x = x0.clone().detach().require_grad();
                    let y = if ours {
                        softmax(x.clone(), dim)
                    } else {
                        burn::tensor::activation::softmax(x.clone(), dim)
                    };
                    let grads = (y.clone() * r.clone()).sum().backward();
                    (to_vec_f32(y), to_vec_f32(x.grad(&grads).expect("grad")))
                };
                let (y1, g1) = run(true);
                let (y2, g2) = run(false);
                assert_close(&format!("softmax {shape:?} dim {dim}"), &y1, &y2, 1e-5);
                assert_close(&format!("dsoftmax {shape:?} dim {dim}"), &g1, &g2, 1e-4);
            }
        }
        crate::nn::gradcheck::check_input_gradient(|x| softmax(x, 3), [2, 3, 2, 5], 9);
    }

    #[test]
    fn layer_norm_forward_and_gradients_match_burn() {
        for (k, &shape) in SHAPES.iter().enumerate() {
            let dev = train_device();
            let c = shape[2];
            let x0 = random(shape, 100 + k as u64, &dev);
            let r = random(shape, 200 + k as u64, &dev);
            let g0 = random([c], 300 + k as u64, &dev);
            let b0 = random([c], 400 + k as u64, &dev);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let g = g0.clone().detach().require_grad();
                let b = b0.clone().detach().require_grad();
                let y = if ours {
                    layer_norm(x.clone(), g.clone(), b.clone(), 1e-5)
                } else {
                    burn::tensor::module::layer_norm(x.clone(), g.clone(), Some(b.clone()), 1e-5)
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                [
                    to_vec_f32(y),
                    to_vec_f32(x.grad(&grads).expect("dx")),
                    to_vec_f32(g.grad(&grads).expect("dgamma")),
                    to_vec_f32(b.grad(&grads).expect("dbeta")),
                ]
            };
            let (ours, theirs) = (run(true), run(false));
            for (i, what) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
                // A one-element row normalises to 0 and its dx is pure rounding noise.
                let tol = if c == 1 && i == 1 { 1.0 } else { 2e-4 };
                assert_close(&format!("{what} {shape:?}"), &ours[i], &theirs[i], tol);
            }
        }
        let dev = train_device();
        let g = random([5], 7, &dev);
        let b = random([5], 8, &dev);
        crate::nn::gradcheck::check_input_gradient(
            move |x| layer_norm(x, g.clone(), b.clone(), 1e-5),
            [2, 3, 2, 5],
            10,
        );
    }

    #[test]
    fn inference_path_matches_burn() {
        let dev = device();
        let x = random([4, 9, 12], 1, &dev);
        let g = random([12], 2, &dev);
        let b = random([12], 3, &dev);
        let ours = to_vec_f32(layer_norm(x.clone(), g.clone(), b.clone(), 1e-5));
        let theirs = to_vec_f32(burn::tensor::module::layer_norm(
            x.clone(),
            g,
            Some(b),
            1e-5,
        ));
        assert_close("layer_norm", &ours, &theirs, 1e-5);
        let ours = to_vec_f32(softmax(x.clone(), 2));
        let theirs = to_vec_f32(burn::tensor::activation::softmax(x, 2));
        assert_close("softmax", &ours, &theirs, 1e-6);
    }

    #[test]
    fn layer_norm_gradients_do_not_depend_on_the_thread_count() {
        let dev = train_device();
        let x0 = random([3, 700, 24], 5, &dev);
        let g0 = random([24], 6, &dev);
        let b0 = random([24], 7, &dev);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let x = x0.clone().detach().require_grad();
                let g = g0.clone().detach().require_grad();
                let b = b0.clone().detach().require_grad();
                let y = layer_norm(x.clone(), g.clone(), b.clone(), 1e-5);
                let grads = (y.clone() * y).sum().backward();
                (
                    to_vec_f32(g.grad(&grads).expect("dgamma")),
                    to_vec_f32(b.grad(&grads).expect("dbeta")),
                )
            })
        };
        assert_eq!(run(1), run(3));
    }
}
