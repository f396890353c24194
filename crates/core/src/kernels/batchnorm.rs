//! Batch normalisation over `[N, C, H, W]` (statistics per channel over N, H, W; Ioffe &
//! Szegedy, 2015), as a burn backend extension in the pattern of [`propagate`](super::propagate):
//!
//! - `Flex` (CPU): fused slice kernels. Training forward = one pass for the per-channel sums
//!   (shifted by the channel's first value, so a large mean does not cancel the variance away;
//!   f32 lanes within 512-element blocks, f64 across blocks; parallel over channels and, for few
//!   channels, sample blocks) and one pass `y = x·scale + shift` (in place when `x` is not kept
//!   by anyone). Backward = one pass for `Σ dy`, `Σ dy·(x − mean)` and one pass for `dx`,
//!   written into `dy`'s buffer when the gradient is not shared. Eval = the affine pass alone.
//! - Any other listed backend (wgpu / CUDA builds): the trait's default bodies, burn's
//!   composed `ModuleOps::batch_norm*` (reductions and broadcasts). They are also the oracle
//!   the tests check the Flex kernels against.
//! - `Autodiff<B>`: the forward of `B` and a hand-written backward
//!   `dx = γ·σ⁻¹·(dy − mean(dy) − x̂·mean(dy·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`, which keeps
//!   `x`, `γ` and the two `[C]` statistics — what PyTorch keeps (`input`, `weight`,
//!   `save_mean`, `save_invstd`), so training adds no memory over it.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;

use super::flex_slices::{
    channel_sums, contiguous, dot_sums, is_f32, map_rows, shifted_sums, tensor, values, zip_rows,
};

/// Training-mode batch norm: normalises with the batch's own mean and biased variance.
/// Returns `(y, mean, var)` where `mean`/`var: [C]` are the batch statistics (detached; the
/// caller folds them into running averages, with the unbiased variance if it wants PyTorch's
/// convention).
///
/// # Panics
/// When `gamma`/`beta` do not have `C` elements (a shape bug of the model).
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    check_channels(x.dims()[1], &[&gamma, &beta]);
    let (y, mean, var) = <Dispatch as BatchNormKernels>::bn_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    );
    (
        Tensor::from_dispatch(y),
        Tensor::<1>::from_dispatch(mean).detach(),
        Tensor::<1>::from_dispatch(var).detach(),
    )
}

/// Evaluation-mode batch norm with fixed statistics `mean`, `var: [C]`.
///
/// # Panics
/// When a `[C]` argument does not have `C` elements (a shape bug of the model).
pub fn batch_norm_eval(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    eps: f64,
) -> Tensor<4> {
    check_channels(x.dims()[1], &[&gamma, &beta, &mean, &var]);
    Tensor::from_dispatch(<Dispatch as BatchNormKernels>::bn_eval(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        mean.into_dispatch(),
        var.into_dispatch(),
        eps,
    ))
}

fn check_channels(c: usize, params: &[&Tensor<1>]) {
    for p in params {
        assert_eq!(
            p.dims(),
            [c],
            "batch norm: a [C] parameter for {c} channels"
        );
    }
}

#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait BatchNormKernels: Backend {
    /// Training forward on `x: [N, C, ...]`: `(y, mean, biased var)`.
    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let r = Self::batch_norm_train(x, gamma, beta, eps);
        (r.output, r.mean, r.variance)
    }

    /// `(dx, dγ, dβ)` of [`Self::bn_train`] at `x` with its returned `mean`, `var`.
    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let r = Self::batch_norm_train_backward(x, gamma, mean, var, eps, dy);
        (r.x_grad, r.gamma_grad, r.beta_grad)
    }

    /// `γ (x − mean) / √(var + ε) + β` with given statistics.
    fn bn_eval(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::batch_norm(x, gamma, beta, mean, var, eps)
    }
}

/// `[N, C, inner]` of a `[N, C, ...]` shape.
fn planes(shape: &Shape) -> (usize, usize, usize) {
    let (n, c) = (shape[0], shape[1]);
    (n, c, shape.num_elements() / (n * c).max(1))
}

/// Whether the fused kernels apply: f32 everywhere, rank ≥ 2, at least one value per channel.
fn fusable(x: &FlexTensor, others: &[&FlexTensor]) -> bool {
    let shape = x.shape();
    shape.num_dims() >= 2
        && shape.num_elements() > 0
        && is_f32(x)
        && others.iter().all(|t| is_f32(t))
}

/// The values of a small `[C]` tensor, widened to f64 for the per-channel arithmetic.
fn channel_values(t: FlexTensor) -> Vec<f64> {
    values(&contiguous(t))
        .iter()
        .map(|&v| f64::from(v))
        .collect()
}

fn channel_tensor(v: &[f64]) -> FlexTensor {
    tensor(v.iter().map(|&x| x as f32).collect(), Shape::new([v.len()]))
}

use burn::backend::flex::FlexTensor;

impl BatchNormKernels for Flex {
    fn bn_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if !fusable(&x, &[&gamma, &beta]) {
            let r = <Flex as ModuleOps<Flex>>::batch_norm_train(x, gamma, beta, eps);
            return (r.output, r.mean, r.variance);
        }
        let x = contiguous(x);
        let (n, c, inner) = planes(&x.shape());
        let xs = values(&x);
        let shifts: Vec<f32> = (0..c).map(|ch| xs[ch * inner]).collect();
        let sums = channel_sums(
            n,
            c,
            |ch, row| shifted_sums(&xs[row * inner..(row + 1) * inner], shifts[ch]),
            |a, b| (a.0 + b.0, a.1 + b.1),
        );
        let count = (n * inner) as f64;
        let (mut mean, mut var) = (vec![0f64; c], vec![0f64; c]);
        for ch in 0..c {
            let (s, q) = (sums[ch].0 / count, sums[ch].1 / count);
            mean[ch] = f64::from(shifts[ch]) + s;
            var[ch] = (q - s * s).max(0.0);
        }
        let (scale, shift) = affine(
            &channel_values(gamma),
            &channel_values(beta),
            &mean,
            &var,
            eps,
        );
        let y = map_rows(x, inner, |r| {
            let (a, b) = (scale[r % c], shift[r % c]);
            move |v| v * a + b
        });
        (y, channel_tensor(&mean), channel_tensor(&var))
    }

    fn bn_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        dy: FlexTensor,
        eps: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if !fusable(&x, &[&gamma, &mean, &var, &dy]) {
            let r =
                <Flex as ModuleOps<Flex>>::batch_norm_train_backward(x, gamma, mean, var, eps, dy);
            return (r.x_grad, r.gamma_grad, r.beta_grad);
        }
        let x = contiguous(x);
        let dy = contiguous(dy);
        let (n, c, inner) = planes(&x.shape());
        let (gamma, mean, var) = (
            channel_values(gamma),
            channel_values(mean),
            channel_values(var),
        );
        let mu: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let xs = values(&x);
        let sums = {
            let gs = values(&dy);
            channel_sums(
                n,
                c,
                |ch, row| {
                    let span = row * inner..(row + 1) * inner;
                    dot_sums(&gs[span.clone()], &xs[span], mu[ch])
                },
                |a, b| (a.0 + b.0, a.1 + b.1),
            )
        };
        let count = (n * inner) as f64;
        let (mut dgamma, mut dbeta) = (vec![0f64; c], vec![0f64; c]);
        // dx = A·dy + B·(x − mean) + C per channel (the three-term formula, expanded).
        let mut coef = vec![(0f32, 0f32, 0f32); c];
        for ch in 0..c {
            let inv = 1.0 / (var[ch] + eps).sqrt();
            let (sdy, sdyx) = sums[ch];
            dbeta[ch] = sdy;
            dgamma[ch] = sdyx * inv;
            let a = gamma[ch] * inv;
            coef[ch] = (
                a as f32,
                (-a * inv * dgamma[ch] / count) as f32,
                (-a * sdy / count) as f32,
            );
        }
        let dx = zip_rows(dy, xs, inner, |r| {
            let ch = r % c;
            let ((a, b, k), m) = (coef[ch], mu[ch]);
            move |g, v| a * g + b * (v - m) + k
        });
        (dx, channel_tensor(&dgamma), channel_tensor(&dbeta))
    }

    fn bn_eval(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        eps: f64,
    ) -> FlexTensor {
        if !fusable(&x, &[&gamma, &beta, &mean, &var]) {
            return <Flex as ModuleOps<Flex>>::batch_norm(x, gamma, beta, mean, var, eps);
        }
        let (_, c, inner) = planes(&x.shape());
        let (scale, shift) = affine(
            &channel_values(gamma),
            &channel_values(beta),
            &channel_values(mean),
            &channel_values(var),
            eps,
        );
        map_rows(x, inner, |r| {
            let (a, b) = (scale[r % c], shift[r % c]);
            move |v| v * a + b
        })
    }
}

/// Per-channel `(scale, shift)` with `y = x·scale + shift` equal to `γ (x − μ)/√(σ² + ε) + β`.
fn affine(
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f64> = gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| (b - m * s) as f32)
        .collect();
    (scale.into_iter().map(|s| s as f32).collect(), shift)
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl BatchNormKernels for burn::backend::Cube {}

/// The backward of [`BatchNormKernels::bn_train`].
#[derive(Debug)]
struct BatchNormBackward;

impl<B: Backend + BatchNormKernels> Backward<B, 3> for BatchNormBackward {
    /// `x`, `γ`, the batch mean and variance, `ε`.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        f64,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, mean, var, eps) = ops.state;
        let (dx, dgamma, dbeta) = B::bn_train_backward(x, gamma, mean, var, dy, eps);
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

impl<B: Backend + BatchNormKernels, C: CheckpointStrategy> BatchNormKernels for Autodiff<B, C> {
    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let prep = BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (gamma, beta) = (gamma.into_primitive(), beta.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let (y, mean, var) = B::bn_train(x.clone(), gamma.clone(), beta, eps);
                let y = prep.finish((x, gamma, mean.clone(), var.clone(), eps), y);
                (y, Self::from_inner(mean), Self::from_inner(var))
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, var) = B::bn_train(x.into_primitive(), gamma, beta, eps);
                (
                    prep.finish(y),
                    Self::from_inner(mean),
                    Self::from_inner(var),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{device, train_device};
    use crate::nn::{float_tensor, to_vec_f32};
    use burn::tensor::Distribution;
    use burn::tensor::module::{batch_norm, batch_norm_train as burn_batch_norm_train};

    /// `|a − b| ≤ tol·(|b| + scale) + 1e-6` elementwise, `scale` the mean magnitude of `b` (so
    /// values that cancel to ~0 are compared at the size of their neighbours; the 1e-6 floor is
    /// for a two-element channel, whose exact dx is 0 and whose computed dx is f32 noise).
    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().map(|v| v.abs()).sum::<f32>() / want.len().max(1) as f32;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (w.abs() + scale) + 1e-6 && g.is_finite(),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    fn random(shape: [usize; 4], mean: f64, seed: u64, dev: &Device) -> Tensor<4> {
        // Seed and draw as one step: another test may reseed the shared generator between.
        let _rng = crate::backend::exclusive_rng();
        dev.seed(seed);
        Tensor::random(shape, Distribution::Normal(mean, 2.0), dev)
    }

    fn params(c: usize, dev: &Device) -> (Tensor<1>, Tensor<1>) {
        let g = (0..c).map(|i| 0.5 + 0.1 * i as f32).collect();
        let b = (0..c).map(|i| 0.3 * i as f32 - 0.2).collect();
        (float_tensor(g, [c], dev), float_tensor(b, [c], dev))
    }

    const SHAPES: [[usize; 4]; 6] = [
        [1, 1, 1, 2],
        [1, 3, 5, 7],
        [2, 4, 3, 3],
        [5, 2, 9, 1],
        [3, 16, 11, 13],
        [8, 5, 32, 32],
    ];

    #[test]
    fn forward_matches_burns_batch_norm_on_odd_shapes() {
        let dev = device();
        for (k, &shape) in SHAPES.iter().enumerate() {
            // A large mean tests the shifted sums: E[x²] − E[x]² would lose the variance.
            let x = random(shape, if k % 2 == 0 { 0.0 } else { 300.0 }, k as u64, &dev);
            let (g, b) = params(shape[1], &dev);
            let (y, mean, var) = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
            let want = burn_batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
            assert_close("y", &to_vec_f32(y), &to_vec_f32(want.output), 1e-4);
            assert_close(
                "mean",
                &to_vec_f32(mean.clone()),
                &to_vec_f32(want.mean),
                1e-5,
            );
            assert_close(
                "var",
                &to_vec_f32(var.clone()),
                &to_vec_f32(want.variance),
                1e-4,
            );
            let e = batch_norm_eval(
                x.clone(),
                g.clone(),
                b.clone(),
                mean.clone(),
                var.clone(),
                1e-3,
            );
            let w = batch_norm(x, g, b, mean, var, 1e-3);
            assert_close("eval", &to_vec_f32(e), &to_vec_f32(w), 1e-4);
        }
    }

    #[test]
    fn gradients_match_burns_batch_norm_on_odd_shapes() {
        let dev = train_device();
        for (k, &shape) in SHAPES.iter().enumerate() {
            let x = random(
                shape,
                if k % 2 == 0 { 1.0 } else { -50.0 },
                10 + k as u64,
                &dev,
            );
            let r = random(shape, 0.0, 20 + k as u64, &dev);
            let run = |ours: bool| {
                let x = x.clone().detach().require_grad();
                let (g, b) = params(shape[1], &dev);
                let (g, b) = (g.require_grad(), b.require_grad());
                let y = if ours {
                    batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5).0
                } else {
                    burn_batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5).output
                };
                // Squared, so the loss is not linear in y and dy varies per element.
                let grads = (y * r.clone()).powi_scalar(2).sum().backward();
                let grad = |t: Tensor<1>| to_vec_f32(t.grad(&grads).expect("grad"));
                (
                    to_vec_f32(x.grad(&grads).expect("x grad")),
                    grad(g),
                    grad(b),
                )
            };
            let (ours, want) = (run(true), run(false));
            assert_close("dx", &ours.0, &want.0, 1e-4);
            assert_close("dgamma", &ours.1, &want.1, 1e-4);
            assert_close("dbeta", &ours.2, &want.2, 1e-4);
        }
    }

    #[test]
    fn finite_differences_and_default_bodies_agree() {
        crate::nn::gradcheck::check_input_gradient(
            |x: Tensor<4>| {
                let (g, b) = params(3, &x.device());
                batch_norm_train(x, g, b, 1e-5).0
            },
            [2, 3, 2, 3],
            7,
        );
        // The Flex backward kernel against the default body (burn's composed backward), on
        // the primitives, with a large mean to exercise the centred form of dx.
        let data = |shape: [usize; 4], mean: f64, seed: u64| {
            to_vec_f32(random(shape, mean, seed, &device()))
        };
        for (k, &shape) in SHAPES.iter().enumerate() {
            let c = shape[1];
            let flex = |v: Vec<f32>, s: Vec<usize>| FlexTensor::from_data(TensorData::new(v, s));
            let x = data(shape, 40.0, 30 + k as u64);
            let dy = data(shape, 0.5, 40 + k as u64);
            let g: Vec<f32> = (0..c).map(|i| 1.0 - 0.2 * i as f32).collect();
            let (_, mean, var) = <Flex as BatchNormKernels>::bn_train(
                flex(x.clone(), shape.to_vec()),
                flex(g.clone(), vec![c]),
                flex(vec![0.0; c], vec![c]),
                1e-5,
            );
            let args = || {
                (
                    flex(x.clone(), shape.to_vec()),
                    flex(g.clone(), vec![c]),
                    mean.clone(),
                    var.clone(),
                    flex(dy.clone(), shape.to_vec()),
                )
            };
            let (xa, ga, ma, va, da) = args();
            let ours = <Flex as BatchNormKernels>::bn_train_backward(xa, ga, ma, va, da, 1e-5);
            let (xa, ga, ma, va, da) = args();
            let want =
                <Flex as ModuleOps<Flex>>::batch_norm_train_backward(xa, ga, ma, va, 1e-5, da);
            let v = |t: FlexTensor| t.into_data().iter::<f32>().collect::<Vec<_>>();
            assert_close("dx", &v(ours.0), &v(want.x_grad), 1e-4);
            assert_close("dgamma", &v(ours.1), &v(want.gamma_grad), 1e-4);
            assert_close("dbeta", &v(ours.2), &v(want.beta_grad), 1e-4);
        }
    }

    #[test]
    fn batch_statistics_are_detached() {
        let dev = train_device();
        let x = random([2, 3, 4, 4], 0.0, 5, &dev).require_grad();
        let (g, b) = params(3, &dev);
        let (_, mean, var) = batch_norm_train(x, g, b, 1e-5);
        assert!(!mean.is_require_grad() && !var.is_require_grad());
    }
}
