//! Element-wise activations of the vision and attention models — ReLU, LeakyReLU, SiLU,
//! GELU (exact, erf-based), sigmoid, the residual-attention gate `t·(1 + σ(z))` and gradient
//! scaling (gradient reversal) — as one burn backend extension in the pattern of
//! [`propagate`](super::propagate):
//!
//! - `Flex` (CPU): one parallel pass per op (burn-flex runs element-wise ops on one thread
//!   below 4M elements, and composes LeakyReLU/SiLU from 3–4 passes whose backward records as
//!   many more); written into the input's buffer when nobody else holds it. `exp` and `erf`
//!   are branch-free polynomials that the compiler vectorises (see [`exp_fast`]).
//! - Other listed backends: the trait's default bodies, burn's composed ops, which are also
//!   the reference of the tests.
//! - `Autodiff<B>`: hand-written backward passes, one element-wise pass each. (Leaky)ReLU keeps
//!   its *output* for the backward (`y > 0 ⟺ x > 0` for a slope ≥ 0): that is the next
//!   layer's input, which the next convolution keeps anyway, so the activation adds no memory
//!   (PyTorch keeps LeakyReLU's input). SiLU and GELU keep their input, as PyTorch does.
//!
//! burn's own `gelu` backward differentiates the tanh approximation, not the erf form its
//! forward computes; ours is the exact derivative `Φ(x) + x·φ(x)` (as PyTorch's), so its
//! gradient is tested against finite differences and an f64 formula rather than burn.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, get_or_init_device_settings,
};
use burn::prelude::*;

use super::flex_slices::{contiguous, is_f32, map_elems, values, writable, zip_elems, zip3_elems};

/// `max(x, 0)`.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    leaky_relu(x, 0.0)
}

/// `x` for `x > 0`, `slope·x` otherwise.
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseKernels>::leaky_relu_fwd(
        x.into_dispatch(),
        slope,
    ))
}

/// `x·σ(x)` (SiLU / swish).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseKernels>::silu_fwd(x.into_dispatch()))
}

/// `x·Φ(x)` with `Φ` the standard normal CDF (exact GELU, PyTorch's default).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseKernels>::gelu_fwd(x.into_dispatch()))
}

/// `max(a + b, 0)`: a residual block's sum and activation in one pass (burn's add, then the
/// ReLU, read and wrote the activation twice). Backward: `dy·[y > 0]` to both inputs, from the
/// saved output.
///
/// # Panics
/// When `a` and `b` differ in shape (a bug of the model).
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    assert_eq!(a.dims(), b.dims(), "add_relu: shapes differ");
    Tensor::from_dispatch(<Dispatch as PointwiseKernels>::add_relu_fwd(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// `σ(x) = 1/(1 + e⁻ˣ)` in one parallel pass (burn-flex's runs on one thread below 4M
/// elements, and its backward recomputes σ before three more passes); backward
/// `dy·y·(1 − y)` from the saved output.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseKernels>::sigmoid_fwd(
        x.into_dispatch(),
    ))
}

/// `t·(1 + σ(z))`: a residual attention module's output from its trunk `t` and its mask's
/// logits `z` (Wang et al. 2017, eq. 3), one pass forward and two backward — `dt = dy·(1 +
/// σ(z))`, `dz = dy·t·σ(z)·(1 − σ(z))` — where burn's sigmoid, add and multiply recorded
/// three ops forward and six passes backward, each on one thread.
///
/// # Panics
/// When `t` and `z` differ in shape (a bug of the model).
pub fn residual_gate<const D: usize>(t: Tensor<D>, z: Tensor<D>) -> Tensor<D> {
    assert_eq!(t.dims(), z.dims(), "residual_gate: shapes differ");
    Tensor::from_dispatch(<Dispatch as PointwiseKernels>::gate_fwd(
        t.into_dispatch(),
        z.into_dispatch(),
    ))
}

/// `x` unchanged, with its gradient multiplied by `factor` in the backward pass: gradient
/// reversal (Ganin & Lempitsky 2015) with a negative factor. No copy forward, one in-place
/// pass backward (the `x̄ + (x − x̄)·(−λ)` composition took three passes each way).
pub fn scale_grad<const D: usize>(x: Tensor<D>, factor: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseKernels>::scale_grad_fwd(
        x.into_dispatch(),
        factor,
    ))
}

#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait PointwiseKernels: Backend {
    /// LeakyReLU forward.
    fn leaky_relu_fwd(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        Self::leaky_relu(x, slope.into())
    }

    /// `dx` of LeakyReLU from `saved` (its output for a slope ≥ 0, else its input — the sign
    /// is what matters) and `dy`.
    fn leaky_relu_bwd(
        saved: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        slope: f64,
    ) -> FloatTensor<Self> {
        let bool_dtype = get_or_init_device_settings::<Self>(&saved.device()).bool_dtype;
        let positive = Self::float_greater_elem(saved, 0f32.into(), bool_dtype);
        let scaled = Self::float_mul_scalar(dy.clone(), slope.into());
        Self::float_mask_where(scaled, positive, dy)
    }

    /// `max(a + b, 0)` for equal shapes.
    fn add_relu_fwd(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(Self::float_add(a, b))
    }

    /// SiLU forward.
    fn silu_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(x.clone(), Self::sigmoid(x))
    }

    /// `dx = dy·σ(x)·(1 + x·(1 − σ(x)))`.
    fn silu_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = Self::sigmoid(x.clone());
        let one_minus = Self::float_add_scalar(Self::float_neg(s.clone()), 1f32.into());
        let inner = Self::float_add_scalar(Self::float_mul(x, one_minus), 1f32.into());
        Self::float_mul(dy, Self::float_mul(s, inner))
    }

    /// Sigmoid forward.
    fn sigmoid_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::sigmoid(x)
    }

    /// `dx = dy·y·(1 − y)` from the output `y`.
    fn sigmoid_bwd(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        sigmoid_bwd_composed::<Self>(y, dy)
    }

    /// `t·(1 + σ(z))` for equal shapes.
    fn gate_fwd(t: FloatTensor<Self>, z: FloatTensor<Self>) -> FloatTensor<Self> {
        gate_fwd_composed::<Self>(t, z)
    }

    /// `(dt, dz) = (dy·(1 + σ(z)), dy·t·σ(z)·(1 − σ(z)))`.
    fn gate_bwd(
        t: FloatTensor<Self>,
        z: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        gate_bwd_composed::<Self>(t, z, dy)
    }

    /// The forward of [`scale_grad`]: the identity.
    fn scale_grad_fwd(x: FloatTensor<Self>, _factor: f64) -> FloatTensor<Self> {
        x
    }

    /// `factor·dy`.
    fn scale(dy: FloatTensor<Self>, factor: f64) -> FloatTensor<Self> {
        Self::float_mul_scalar(dy, factor.into())
    }

    /// Exact GELU forward.
    fn gelu_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// `dx = dy·(Φ(x) + x·φ(x))`.
    fn gelu_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let cdf = Self::float_erf(Self::float_mul_scalar(
            x.clone(),
            std::f32::consts::FRAC_1_SQRT_2.into(),
        ));
        let cdf = Self::float_mul_scalar(Self::float_add_scalar(cdf, 1f32.into()), 0.5f32.into());
        let sq = Self::float_mul(x.clone(), x.clone());
        let pdf = Self::float_exp(Self::float_mul_scalar(sq, (-0.5f32).into()));
        let pdf = Self::float_mul_scalar(pdf, INV_SQRT_2PI.into());
        Self::float_mul(dy, Self::float_add(cdf, Self::float_mul(x, pdf)))
    }
}

/// `1/√(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `eˣ` to ~2 ulp for `x ∈ [−87, 88]` (clamped outside: `e⁻⁸⁷ ≈ 1.6e-38`, `e⁸⁸ ≈ 1.7e38`).
/// Cephes' `expf`: `x = n·ln2 + r`, a degree-7 polynomial for `eʳ` on `|r| ≤ ln2/2`, and `2ⁿ`
/// built from its exponent bits. Branch-free, so loops over it vectorise (libm's `expf` is a
/// scalar call, ~4x slower here).
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    e * f32::from_bits((k + 127).cast_unsigned() << 23)
}

/// `σ(x) = 1/(1 + e⁻ˣ)`.
#[inline(always)]
fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// `Φ(x)`, the standard normal CDF, from the complementary error function `erfc(|x|/√2)` of
/// Numerical Recipes' Chebyshev fit (`erfcc`: relative error < 1.2e-7 everywhere, so the tail
/// `Φ(x) = erfc/2` for `x < 0` keeps its relative accuracy; `1 − erfc/2` above 0).
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_3 + t * 0.170_872_77))))))));
    let half_erfc = 0.5 * t * exp_fast(p - z * z);
    if x >= 0.0 { 1.0 - half_erfc } else { half_erfc }
}

/// `φ(x)`, the standard normal density.
#[inline(always)]
fn normal_pdf(x: f32) -> f32 {
    INV_SQRT_2PI * exp_fast(-0.5 * x * x)
}

/// Whether the Flex kernels apply (f32; anything else takes the composed path).
fn flex_ok(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| is_f32(t))
}

impl PointwiseKernels for Flex {
    fn leaky_relu_fwd(x: FlexTensor, slope: f64) -> FlexTensor {
        if !flex_ok(&[&x]) {
            return Flex::leaky_relu(x, slope.into());
        }
        let a = slope as f32;
        map_elems(x, move |v| if v > 0.0 { v } else { v * a })
    }

    fn leaky_relu_bwd(saved: FlexTensor, dy: FlexTensor, slope: f64) -> FlexTensor {
        if !flex_ok(&[&saved, &dy]) {
            let bool_dtype = get_or_init_device_settings::<Flex>(&saved.device()).bool_dtype;
            let positive = Flex::float_greater_elem(saved, 0f32.into(), bool_dtype);
            let scaled = Flex::float_mul_scalar(dy.clone(), slope.into());
            return Flex::float_mask_where(scaled, positive, dy);
        }
        let saved = contiguous(saved);
        let a = slope as f32;
        zip_elems(
            dy,
            values(&saved),
            move |g, s| if s > 0.0 { g } else { g * a },
        )
    }

    fn add_relu_fwd(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&a, &b]) || a.shape() != b.shape() {
            return Flex::relu(Flex::float_add(a, b));
        }
        // Into whichever input nobody else holds (the block's branch usually; the identity is
        // often still referenced by the autodiff graph).
        let (a, b) = if writable(&a) { (a, b) } else { (b, a) };
        let b = contiguous(b);
        // NaN stays NaN, as in the ReLU kernel and burn's `relu`.
        zip_elems(a, values(&b), |u, v| {
            let s = u + v;
            if s < 0.0 { 0.0 } else { s }
        })
    }

    fn silu_fwd(x: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&x]) {
            return Flex::float_mul(x.clone(), Flex::sigmoid(x));
        }
        map_elems(x, |v| v * sigmoid_fast(v))
    }

    fn silu_bwd(x: FlexTensor, dy: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&x, &dy]) {
            return silu_bwd_composed::<Flex>(x, dy);
        }
        let x = contiguous(x);
        zip_elems(dy, values(&x), |g, v| {
            let s = sigmoid_fast(v);
            g * s * (1.0 + v * (1.0 - s))
        })
    }

    fn sigmoid_fwd(x: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&x]) {
            return Flex::sigmoid(x);
        }
        map_elems(x, sigmoid_fast)
    }

    fn sigmoid_bwd(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&y, &dy]) {
            return sigmoid_bwd_composed::<Flex>(y, dy);
        }
        let y = contiguous(y);
        zip_elems(dy, values(&y), |g, s| g * s * (1.0 - s))
    }

    fn gate_fwd(t: FlexTensor, z: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&t, &z]) || t.shape() != z.shape() {
            return gate_fwd_composed::<Flex>(t, z);
        }
        let z = contiguous(z);
        zip_elems(t, values(&z), |u, v| u * (1.0 + sigmoid_fast(v)))
    }

    fn gate_bwd(t: FlexTensor, z: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
        if !flex_ok(&[&t, &z, &dy]) || t.shape() != z.shape() || t.shape() != dy.shape() {
            return gate_bwd_composed::<Flex>(t, z, dy);
        }
        let (t, z, dy) = (contiguous(t), contiguous(z), contiguous(dy));
        // `dz` first, into a new buffer: it reads `dy`, which `dt` then overwrites.
        let dz = zip3_elems(
            dy.shape(),
            values(&dy),
            values(&t),
            values(&z),
            |g, u, v| {
                let s = sigmoid_fast(v);
                g * u * s * (1.0 - s)
            },
        );
        let dt = zip_elems(dy, values(&z), |g, v| g * (1.0 + sigmoid_fast(v)));
        (dt, dz)
    }

    fn scale(dy: FlexTensor, factor: f64) -> FlexTensor {
        if !flex_ok(&[&dy]) {
            return Flex::float_mul_scalar(dy, factor.into());
        }
        let k = factor as f32;
        map_elems(dy, move |g| g * k)
    }

    fn gelu_fwd(x: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&x]) {
            return Flex::gelu(x);
        }
        map_elems(x, |v| v * normal_cdf(v))
    }

    fn gelu_bwd(x: FlexTensor, dy: FlexTensor) -> FlexTensor {
        if !flex_ok(&[&x, &dy]) {
            return gelu_bwd_composed::<Flex>(x, dy);
        }
        let x = contiguous(x);
        zip_elems(dy, values(&x), |g, v| {
            g * (normal_cdf(v) + v * normal_pdf(v))
        })
    }
}

/// The default body of [`PointwiseKernels::silu_bwd`], callable for any backend.
fn silu_bwd_composed<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1f32.into());
    let inner = B::float_add_scalar(B::float_mul(x, one_minus), 1f32.into());
    B::float_mul(dy, B::float_mul(s, inner))
}

/// The default body of [`PointwiseKernels::sigmoid_bwd`], callable for any backend.
fn sigmoid_bwd_composed<B: Backend>(y: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let one_minus = B::float_add_scalar(B::float_neg(y.clone()), 1f32.into());
    B::float_mul(dy, B::float_mul(y, one_minus))
}

/// The default body of [`PointwiseKernels::gate_fwd`], callable for any backend.
fn gate_fwd_composed<B: Backend>(t: FloatTensor<B>, z: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(t, B::float_add_scalar(B::sigmoid(z), 1f32.into()))
}

/// The default body of [`PointwiseKernels::gate_bwd`], callable for any backend.
fn gate_bwd_composed<B: Backend>(
    t: FloatTensor<B>,
    z: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let s = B::sigmoid(z);
    let dz = sigmoid_bwd_composed::<B>(s.clone(), B::float_mul(dy.clone(), t));
    let dt = B::float_mul(dy, B::float_add_scalar(s, 1f32.into()));
    (dt, dz)
}

/// The default body of [`PointwiseKernels::gelu_bwd`], callable for any backend.
fn gelu_bwd_composed<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let cdf = B::float_erf(B::float_mul_scalar(
        x.clone(),
        std::f32::consts::FRAC_1_SQRT_2.into(),
    ));
    let cdf = B::float_mul_scalar(B::float_add_scalar(cdf, 1f32.into()), 0.5f32.into());
    let sq = B::float_mul(x.clone(), x.clone());
    let pdf = B::float_exp(B::float_mul_scalar(sq, (-0.5f32).into()));
    let pdf = B::float_mul_scalar(pdf, INV_SQRT_2PI.into());
    B::float_mul(dy, B::float_add(cdf, B::float_mul(x, pdf)))
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl PointwiseKernels for burn::backend::Cube {}

/// Which activation a [`PointwiseBackward`] differentiates.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// LeakyReLU with this slope (0 = ReLU).
    Leaky(f64),
    Silu,
    Gelu,
    Sigmoid,
}

/// The backward of the activations: state = the saved tensor (see [`Act`]).
#[derive(Debug)]
struct PointwiseBackward(Act);

impl<B: Backend + PointwiseKernels> Backward<B, 1> for PointwiseBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let Some(node) = parent else { return };
        let saved = ops.state;
        let dx = match self.0 {
            Act::Leaky(slope) => B::leaky_relu_bwd(saved, dy, slope),
            Act::Silu => B::silu_bwd(saved, dy),
            Act::Gelu => B::gelu_bwd(saved, dy),
            Act::Sigmoid => B::sigmoid_bwd(saved, dy),
        };
        grads.register::<B>(node.id, dx);
    }
}

/// The backward of [`add_relu`]: state = its output; both inputs get `dy·[y > 0]`.
#[derive(Debug)]
struct AddReluBackward;

impl<B: Backend + PointwiseKernels> Backward<B, 2> for AddReluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pa, pb] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let dx = B::leaky_relu_bwd(ops.state, dy, 0.0);
        match (pa, pb) {
            (Some(a), Some(b)) => {
                grads.register::<B>(a.id, dx.clone());
                grads.register::<B>(b.id, dx);
            }
            (Some(p), None) | (None, Some(p)) => grads.register::<B>(p.id, dx),
            (None, None) => {}
        }
    }
}

/// The backward of [`residual_gate`]: state = `(t, z)`.
#[derive(Debug)]
struct GateBackward;

impl<B: Backend + PointwiseKernels> Backward<B, 2> for GateBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pt, pz] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (t, z) = ops.state;
        let (dt, dz) = B::gate_bwd(t, z, dy);
        if let Some(node) = pt {
            grads.register::<B>(node.id, dt);
        }
        if let Some(node) = pz {
            grads.register::<B>(node.id, dz);
        }
    }
}

/// The backward of [`scale_grad`]: `factor·dy`.
#[derive(Debug)]
struct ScaleGradBackward(f64);

impl<B: Backend + PointwiseKernels> Backward<B, 1> for ScaleGradBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::scale(dy, self.0));
        }
    }
}

/// Runs `fwd` under autodiff with the backward of `act`, saving the output (LeakyReLU with a
/// slope ≥ 0, sigmoid) or the input.
fn tracked<B, C>(
    x: FloatTensor<Autodiff<B, C>>,
    act: Act,
    fwd: impl FnOnce(FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend + PointwiseKernels,
    C: CheckpointStrategy,
{
    let save_output = matches!(act, Act::Leaky(s) if s >= 0.0) || matches!(act, Act::Sigmoid);
    match PointwiseBackward(act)
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            if save_output {
                let y = fwd(x);
                prep.finish(y.clone(), y)
            } else {
                let y = fwd(x.clone());
                prep.finish(x, y)
            }
        }
        OpsKind::UnTracked(prep) => prep.finish(fwd(x.into_primitive())),
    }
}

impl<B: Backend + PointwiseKernels, C: CheckpointStrategy> PointwiseKernels for Autodiff<B, C> {
    fn leaky_relu_fwd(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        tracked::<B, C>(x, Act::Leaky(slope), |x| B::leaky_relu_fwd(x, slope))
    }

    fn add_relu_fwd(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        match AddReluBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::add_relu_fwd(a.into_primitive(), b.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::add_relu_fwd(a.into_primitive(), b.into_primitive()))
            }
        }
    }

    fn silu_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, Act::Silu, B::silu_fwd)
    }

    fn gelu_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, Act::Gelu, B::gelu_fwd)
    }

    fn sigmoid_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, Act::Sigmoid, B::sigmoid_fwd)
    }

    fn gate_fwd(t: FloatTensor<Self>, z: FloatTensor<Self>) -> FloatTensor<Self> {
        match GateBackward
            .prepare::<C>([t.node(), z.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (t, z) = (t.into_primitive(), z.into_primitive());
                let h = B::gate_fwd(t.clone(), z.clone());
                prep.finish((t, z), h)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::gate_fwd(t.into_primitive(), z.into_primitive()))
            }
        }
    }

    fn scale_grad_fwd(x: FloatTensor<Self>, factor: f64) -> FloatTensor<Self> {
        ScaleGradBackward(factor)
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateless(x.into_primitive())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{device, train_device};
    use crate::nn::to_vec_f32;
    use burn::tensor::Distribution;
    use burn::tensor::activation as burn_act;

    const SHAPES: [[usize; 4]; 5] = [
        [1, 1, 1, 1],
        [1, 3, 5, 7],
        [2, 4, 3, 3],
        [3, 16, 11, 13],
        [8, 5, 33, 32],
    ];

    fn random(shape: [usize; 4], seed: u64, dev: &Device) -> Tensor<4> {
        // Seed and draw as one step: another test may reseed the shared generator between.
        let _rng = crate::backend::exclusive_rng();
        dev.seed(seed);
        Tensor::random(shape, Distribution::Normal(0.0, 3.0), dev)
    }

    /// `|a − b| ≤ tol·(|b| + 1e-3)`.
    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (w.abs() + 1e-3) && g.is_finite(),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    type Pair = (fn(Tensor<4>) -> Tensor<4>, fn(Tensor<4>) -> Tensor<4>);

    fn pairs() -> Vec<(&'static str, Pair)> {
        vec![
            ("relu", (|x| relu(x), |x| burn_act::relu(x))),
            (
                "leaky",
                (|x| leaky_relu(x, 0.1), |x| burn_act::leaky_relu(x, 0.1)),
            ),
            (
                "leaky_neg",
                (|x| leaky_relu(x, -0.3), |x| burn_act::leaky_relu(x, -0.3)),
            ),
            ("silu", (|x| silu(x), |x| burn_act::silu(x))),
            ("gelu", (|x| gelu(x), |x| burn_act::gelu(x))),
        ]
    }

    #[test]
    fn forward_matches_burn_on_odd_shapes() {
        let dev = device();
        for (k, &shape) in SHAPES.iter().enumerate() {
            let x = random(shape, k as u64, &dev);
            for (name, (ours, theirs)) in pairs() {
                let got = to_vec_f32(ours(x.clone()));
                let want = to_vec_f32(theirs(x.clone()));
                assert_close(name, &got, &want, 1e-4);
            }
        }
        // Tails and extremes: no overflow, exact zeros/identities where they belong.
        let ext =
            crate::nn::float_tensor(vec![-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], [7], &dev);
        let s = to_vec_f32(silu(ext.clone()));
        let g = to_vec_f32(gelu(ext));
        assert_eq!(s[3], 0.0);
        assert_eq!(&s[4..], &[20.0, 100.0, 1e4]);
        assert_eq!(&g[4..], &[20.0, 100.0, 1e4]);
        assert!(s[..3].iter().chain(&g[..3]).all(|v| v.abs() < 1e-6));
    }

    /// `add_relu` against burn's add then ReLU: the values, and the gradient of each input
    /// (one of them also used elsewhere, so that it is shared and the other is written in
    /// place), on the inference and the training device.
    #[test]
    fn add_relu_matches_burn() {
        for (k, &shape) in SHAPES.iter().enumerate() {
            let dev = device();
            let (a, b) = (
                random(shape, 50 + k as u64, &dev),
                random(shape, 60 + k as u64, &dev),
            );
            let want = to_vec_f32(burn_act::relu(a.clone() + b.clone()));
            assert_close(
                "add_relu",
                &to_vec_f32(add_relu(a.clone(), b.clone())),
                &want,
                0.0,
            );
            // `a` held elsewhere: the sum goes into `b`'s buffer, `a` keeps its values.
            let keep = a.clone();
            assert_close("add_relu shared", &to_vec_f32(add_relu(a, b)), &want, 0.0);
            let again = to_vec_f32(add_relu(keep.clone(), keep.clone()));
            let twice = to_vec_f32(burn_act::relu(keep.clone() + keep));
            assert_close("add_relu same", &again, &twice, 0.0);
            let nan = crate::nn::float_tensor(vec![f32::NAN, -1.0, 2.0], [3], &dev);
            let y = to_vec_f32(add_relu(nan.clone(), nan.ones_like()));
            assert!(y[0].is_nan() && y[1] == 0.0 && y[2] == 3.0, "{y:?}");
            let dev = train_device();
            let a0 = random(shape, 70 + k as u64, &dev);
            let b0 = random(shape, 80 + k as u64, &dev);
            let r = random(shape, 90 + k as u64, &dev);
            let grads = |ours: bool| {
                let a = a0.clone().detach().require_grad();
                let b = b0.clone().detach().require_grad();
                // `b` also feeds a second term, as a residual block's identity does.
                let y = if ours {
                    add_relu(a.clone(), b.clone())
                } else {
                    burn_act::relu(a.clone() + b.clone())
                };
                let g = ((y * r.clone()).sum() + (b.clone() * 0.5).sum()).backward();
                let ga = to_vec_f32(a.grad(&g).expect("grad a"));
                let gb = to_vec_f32(b.grad(&g).expect("grad b"));
                (ga, gb)
            };
            let ((ga, gb), (wa, wb)) = (grads(true), grads(false));
            assert_close("add_relu da", &ga, &wa, 0.0);
            assert_close("add_relu db", &gb, &wb, 0.0);
        }
    }

    #[test]
    fn gradients_match_burn_and_the_exact_formulas() {
        let dev = train_device();
        for (k, &shape) in SHAPES.iter().enumerate() {
            let x0 = random(shape, 10 + k as u64, &dev);
            let r = random(shape, 20 + k as u64, &dev);
            for (name, (ours, theirs)) in pairs() {
                let grad = |f: fn(Tensor<4>) -> Tensor<4>| {
                    let x = x0.clone().detach().require_grad();
                    let grads = (f(x.clone()) * r.clone()).sum().backward();
                    to_vec_f32(x.grad(&grads).expect("grad"))
                };
                let got = grad(ours);
                if name == "gelu" {
                    // burn differentiates the tanh approximation; compare with Φ + xφ in f64.
                    let xs = to_vec_f32(x0.clone());
                    let rs = to_vec_f32(r.clone());
                    let want: Vec<f32> = xs
                        .iter()
                        .zip(&rs)
                        .map(|(&x, &r)| {
                            let x = f64::from(x);
                            let cdf = 0.5 * (1.0 + erf64(x / std::f64::consts::SQRT_2));
                            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                            (f64::from(r) * (cdf + x * pdf)) as f32
                        })
                        .collect();
                    assert_close(name, &got, &want, 1e-4);
                } else {
                    assert_close(name, &got, &grad(theirs), 1e-4);
                }
            }
        }
        for (k, (name, (ours, _))) in pairs().into_iter().enumerate() {
            if name.starts_with("leaky") || name == "relu" {
                continue; // kinks: the finite-difference checker handles them, but slowly
            }
            crate::nn::gradcheck::check_input_gradient(ours, [2, 3, 2, 3], 30 + k as u64);
        }
    }

    /// `sigmoid`, `residual_gate` and `scale_grad` against burn's compositions: values on the
    /// inference device, each operand's gradient on the training device (the trunk also used
    /// elsewhere, as the graph holds it), and finite differences.
    #[test]
    fn sigmoid_gate_and_scale_grad_match_burn() {
        for (k, &shape) in SHAPES.iter().enumerate() {
            let dev = device();
            let (t, z) = (
                random(shape, 100 + k as u64, &dev),
                random(shape, 110 + k as u64, &dev),
            );
            let want_s = to_vec_f32(burn_act::sigmoid(z.clone()));
            assert_close("sigmoid", &to_vec_f32(sigmoid(z.clone())), &want_s, 1e-6);
            let want_h = to_vec_f32(t.clone() * (burn_act::sigmoid(z.clone()) + 1.0));
            // `t` held elsewhere: the gate writes a new buffer and `t` keeps its values; owned
            // by nobody else, it is written in place with the same result.
            let (keep, before) = (t.clone(), to_vec_f32(t.clone()));
            assert_close(
                "gate",
                &to_vec_f32(residual_gate(t, z.clone())),
                &want_h,
                1e-6,
            );
            assert_eq!(
                to_vec_f32(keep.clone()),
                before,
                "gate keeps a shared trunk"
            );
            let owned = keep.clone() + 0.0;
            drop(keep);
            assert_close(
                "gate in place",
                &to_vec_f32(residual_gate(owned, z.clone())),
                &want_h,
                1e-6,
            );
            let x = random(shape, 115 + k as u64, &dev);
            assert_eq!(
                to_vec_f32(scale_grad(x.clone(), -0.7)),
                to_vec_f32(x),
                "scale_grad is the identity"
            );

            let dev = train_device();
            let t0 = random(shape, 120 + k as u64, &dev);
            let z0 = random(shape, 130 + k as u64, &dev);
            let r = random(shape, 140 + k as u64, &dev);
            let grads = |ours: bool| {
                let t = t0.clone().detach().require_grad();
                let z = z0.clone().detach().require_grad();
                let (h, s, q) = if ours {
                    (
                        residual_gate(t.clone(), z.clone()),
                        sigmoid(z.clone()),
                        scale_grad(t.clone(), -0.7),
                    )
                } else {
                    let s = burn_act::sigmoid(z.clone());
                    (t.clone() * (s.clone() + 1.0), s, t.clone().mul_scalar(-0.7))
                };
                let loss = (h * r.clone()).sum()
                    + (s * r.clone()).sum().mul_scalar(0.3)
                    + (q * r.clone()).sum().mul_scalar(0.2)
                    + (t.clone() * 0.5).sum();
                let g = loss.backward();
                (
                    to_vec_f32(t.grad(&g).expect("grad t")),
                    to_vec_f32(z.grad(&g).expect("grad z")),
                )
            };
            let ((gt, gz), (wt, wz)) = (grads(true), grads(false));
            assert_close("gate dt", &gt, &wt, 1e-4);
            assert_close("gate dz", &gz, &wz, 1e-4);
        }
        crate::nn::gradcheck::check_input_gradient(sigmoid::<4>, [2, 3, 2, 3], 150);
        crate::nn::gradcheck::check_input_gradient(
            |x| residual_gate(x.clone(), x.mul_scalar(0.5).sin()),
            [2, 3, 2, 3],
            151,
        );
    }

    /// erf in f64 by its Maclaurin series / continued fraction (reference only).
    fn erf64(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut term, mut sum, x2) = (x, x, x * x);
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(z) by Lentz's continued fraction.
            let z = x.abs();
            let mut f = z;
            for k in (1..60).rev() {
                f = z + (k as f64 / 2.0) / f;
            }
            let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
            x.signum() * (1.0 - erfc)
        }
    }

    #[test]
    fn exp_fast_is_accurate() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (f64::from(exp_fast(x)), f64::from(x).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "exp_fast relative error {worst}");
        assert!(exp_fast(f32::NAN).is_nan());
    }

    #[test]
    fn input_is_reused_when_free_and_kept_when_shared() {
        let dev = device();
        let x = random([2, 3, 4, 5], 3, &dev);
        let before = to_vec_f32(x.clone());
        let y = leaky_relu(x.clone(), 0.2);
        assert_eq!(to_vec_f32(x), before, "a shared input is not overwritten");
        let want: Vec<f32> = before
            .iter()
            .map(|&v| if v > 0.0 { v } else { 0.2 * v })
            .collect();
        assert_eq!(to_vec_f32(y), want);
    }
}
