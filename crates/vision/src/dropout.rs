//! Element-wise dropout (`nn.Dropout`) as one parallel pass each way, its mask recomputed
//! from a seed instead of stored.
//!
//! burn's `Dropout` draws a Bernoulli tensor the size of the input on one thread (ChaCha20
//! and a sampler per element), multiplies, then scales: three passes forward, two backward,
//! and the mask kept as `f32` for the backward. In UNet's encoder (4M elements per step at
//! the benchmark's shape) that random draw alone was ~7 % of the training step's CPU
//! samples. Here element `i` is kept when the 32-bit half `i mod 2` of SplitMix64's output
//! `⌊i/2⌋` for the call's seed falls below `keep·2³²`; the output is `x·(1/keep)` or 0, and
//! the backward applies the same mask to `dy`, recomputed from the seed (nothing is saved).
//! The seed is drawn from burn's generator, so `seed_backend` still fixes every mask.
//!
//! - `Flex`: one parallel pass, into the input's buffer when nobody else holds it.
//! - `Autodiff<B>`: the backward is the same op on `dy`.
//! - Any other device (a GPU build): the mask is built on the host with the same rule and
//!   multiplied in with burn's ops, which is also the reference the tests hold the kernel to.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_core::kernels::hash::splitmix64_at;
use rayon::prelude::*;

/// SplitMix64's increment: output `j` of the stream seeded at `s` is `mix(s + (j+1)·GOLDEN)`.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Elements per rayon task (even, so every task starts on a whole 64-bit draw).
const GRAIN: usize = 1 << 15;

/// The keep rule of one call: threshold on 32-bit uniforms and the scale of kept values.
#[derive(Debug, Clone, Copy)]
struct Rule {
    seed: u64,
    /// Kept when the element's 32-bit uniform is below this (`keep·2³²`, rounded).
    threshold: u64,
    scale: f32,
}

impl Rule {
    fn new(seed: u64, prob: f64) -> Self {
        let keep = 1.0 - prob;
        Rule {
            seed,
            threshold: (keep * 4_294_967_296.0).round() as u64,
            scale: (1.0 / keep) as f32,
        }
    }

    /// The factors (`scale` or 0) of elements `2j` and `2j + 1`.
    #[inline(always)]
    fn pair(&self, j: usize) -> (f32, f32) {
        let h = splitmix64_at(self.seed.wrapping_add((j as u64).wrapping_mul(GOLDEN)));
        let f = |u: u64| if u < self.threshold { self.scale } else { 0.0 };
        (f(h & 0xffff_ffff), f(h >> 32))
    }

    /// `dst[k] = src[k]·factor(start + k)`, `start` even.
    #[inline(always)]
    fn apply(&self, start: usize, dst: &mut [f32], src: impl Fn(usize) -> f32) {
        let j0 = start / 2;
        let (pairs, rest) = dst.as_chunks_mut::<2>();
        for (k, d) in pairs.iter_mut().enumerate() {
            let (a, b) = self.pair(j0 + k);
            d[0] = src(2 * k) * a;
            d[1] = src(2 * k + 1) * b;
        }
        if let Some(d) = rest.first_mut() {
            let k = 2 * pairs.len();
            *d = src(k) * self.pair(j0 + pairs.len()).0;
        }
    }

    /// The factors of elements `0..n` (the host-side mask of the composed path).
    fn factors(&self, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n];
        self.apply(0, &mut out, |_| 1.0);
        out
    }
}

/// `x` with each element zeroed with probability `prob` and the others scaled by
/// `1/(1 − prob)`, the mask fixed by `seed` (see the module page). `prob` in `[0, 1)`; 0 is
/// the identity; 1 or more (or NaN) drops everything.
pub fn dropout_seeded<const D: usize>(x: Tensor<D>, prob: f64, seed: u64) -> Tensor<D> {
    if prob <= 0.0 {
        return x;
    }
    if prob >= 1.0 || prob.is_nan() {
        return x.mul_scalar(0.0);
    }
    if x.device() == Device::flex() && x.dtype() == DType::F32 {
        return Tensor::from_dispatch(<Dispatch as DropoutKernels>::dropout_apply(
            x.into_dispatch(),
            seed,
            prob,
        ));
    }
    let mask = Tensor::<D>::from_data(
        TensorData::new(
            Rule::new(seed, prob).factors(x.shape().num_elements()),
            x.shape(),
        ),
        &x.device().inner(),
    );
    x * mask
}

/// Training-time dropout of `x` with a seed drawn from burn's generator on `x`'s device.
pub fn dropout<const D: usize>(x: Tensor<D>, prob: f64) -> Tensor<D> {
    if prob <= 0.0 {
        return x;
    }
    // Two uniforms of burn's generator, their bit patterns joined: `seed_backend` fixes them.
    let draw = Tensor::<1>::random([2], Distribution::Default, &x.device().inner());
    let bits: Vec<u64> = draw
        .into_data()
        .iter::<f32>()
        .map(|v| u64::from(v.to_bits()))
        .collect();
    let seed = bits.iter().fold(0u64, |s, &b| (s << 32) | b);
    dropout_seeded(x, prob, seed)
}

#[backend_extension(Flex, Autodiff)]
pub trait DropoutKernels: Backend {
    /// `x · factor(i)` with the factors of [`Rule`] for `(seed, prob)`; its own adjoint.
    fn dropout_apply(x: FloatTensor<Self>, seed: u64, prob: f64) -> FloatTensor<Self> {
        dropout_composed::<Self>(x, seed, prob)
    }
}

/// The host-mask path for any backend (the trait's default body).
fn dropout_composed<B: Backend>(x: FloatTensor<B>, seed: u64, prob: f64) -> FloatTensor<B> {
    let shape = x.shape();
    let mask = Rule::new(seed, prob).factors(shape.num_elements());
    let mask = B::float_from_data(TensorData::new(mask, shape), &x.device());
    B::float_mul(x, mask)
}

impl DropoutKernels for Flex {
    fn dropout_apply(x: FlexTensor, seed: u64, prob: f64) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return dropout_composed::<Flex>(x, seed, prob);
        }
        let rule = Rule::new(seed, prob);
        let n = x.shape().num_elements();
        let exact = x.is_contiguous()
            && x.layout().start_offset() == 0
            && x.bytes().len() == n * std::mem::size_of::<f32>();
        if exact && x.is_unique() {
            let mut x = x;
            x.storage_mut::<f32>()
                .par_chunks_mut(GRAIN)
                .enumerate()
                .for_each(|(t, d)| rule.apply_in_place(t * GRAIN, d));
            return x;
        }
        let x = if x.is_contiguous() && x.layout().start_offset() == 0 {
            x
        } else {
            x.to_contiguous()
        };
        let src = &x.storage::<f32>()[..n];
        let mut out = vec![0.0f32; n];
        out.par_chunks_mut(GRAIN)
            .zip(src.par_chunks(GRAIN))
            .enumerate()
            .for_each(|(t, (d, s))| rule.apply(t * GRAIN, d, |k| s[k]));
        FlexTensor::from_data(TensorData::new(out, x.shape()))
    }
}

impl Rule {
    /// [`apply`](Self::apply) with `dst` as its own source.
    #[inline(always)]
    fn apply_in_place(&self, start: usize, dst: &mut [f32]) {
        let j0 = start / 2;
        let (pairs, rest) = dst.as_chunks_mut::<2>();
        for (k, d) in pairs.iter_mut().enumerate() {
            let (a, b) = self.pair(j0 + k);
            d[0] *= a;
            d[1] *= b;
        }
        if let Some(d) = rest.first_mut() {
            *d *= self.pair(j0 + pairs.len()).0;
        }
    }
}

/// The backward: the same mask on `dy`; state = `(seed, prob)`.
#[derive(Debug)]
struct DropoutBackward;

impl<B: Backend + DropoutKernels> Backward<B, 1> for DropoutBackward {
    type State = (u64, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let Some(node) = parent else { return };
        let (seed, prob) = ops.state;
        grads.register::<B>(node.id, B::dropout_apply(dy, seed, prob));
    }
}

impl<B: Backend + DropoutKernels, C: CheckpointStrategy> DropoutKernels for Autodiff<B, C> {
    fn dropout_apply(x: FloatTensor<Self>, seed: u64, prob: f64) -> FloatTensor<Self> {
        match DropoutBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (seed, prob),
                B::dropout_apply(x.into_primitive(), seed, prob),
            ),
            OpsKind::UnTracked(prep) => {
                prep.finish(B::dropout_apply(x.into_primitive(), seed, prob))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::backend::{device, exclusive_rng, train_device};
    use ferrolab_core::nn::to_vec_f32;

    /// Forward and input gradient equal the host-mask path (burn's ops) for in-place and
    /// copying calls and odd sizes; the kept share is `1 − p` within sampling error.
    #[test]
    fn matches_host_mask_and_keeps_the_expected_share() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(31);
        for (shape, p) in [
            ([1, 1, 1, 3], 0.5),
            ([2, 3, 5, 7], 0.3),
            ([4, 16, 33, 32], 0.1),
        ] {
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
            let seed = 0x1234_5678_9abc_def0;
            let n = x.shape().num_elements();
            let want_mask = Rule::new(seed, p).factors(n);
            // Tracked: the input is kept (shared), so the kernel writes a new buffer.
            let xr = x.clone().require_grad();
            let y = dropout_seeded(xr.clone(), p, seed);
            let r = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
            let g = (y.clone() * r.clone()).sum().backward();
            let xv = to_vec_f32(x.clone());
            let yv = to_vec_f32(y);
            for i in 0..n {
                assert_eq!(yv[i], xv[i] * want_mask[i], "forward {shape:?}[{i}]");
            }
            let dx = to_vec_f32(xr.grad(&g).expect("dx"));
            let rv = to_vec_f32(r);
            for i in 0..n {
                assert_eq!(dx[i], rv[i] * want_mask[i], "dx {shape:?}[{i}]");
            }
            // Untracked, uniquely held: written in place, same values.
            let inf = x.inner();
            let yi = to_vec_f32(dropout_seeded(inf, p, seed));
            assert_eq!(yi, yv);
            if n > 10_000 {
                let kept = want_mask.iter().filter(|&&m| m != 0.0).count() as f64 / n as f64;
                let sd = (p * (1.0 - p) / n as f64).sqrt();
                assert!((kept - (1.0 - p)).abs() < 5.0 * sd, "kept {kept} for p {p}");
            }
        }
    }

    /// The seed comes from burn's generator: reseeding repeats the mask, and two calls differ.
    #[test]
    fn seeded_by_the_backend() {
        let _rng = exclusive_rng();
        let dev = device();
        let x = Tensor::<2>::ones([64, 64], &dev);
        dev.seed(5);
        let a = to_vec_f32(dropout(x.clone(), 0.5));
        let b = to_vec_f32(dropout(x.clone(), 0.5));
        dev.seed(5);
        let c = to_vec_f32(dropout(x, 0.5));
        assert_eq!(a, c);
        assert_ne!(a, b);
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        let ones = Tensor::<2>::ones([3, 3], &dev);
        assert!(
            to_vec_f32(dropout_seeded(ones.clone(), 1.0, 7))
                .iter()
                .all(|&v| v == 0.0)
        );
        assert_eq!(to_vec_f32(dropout_seeded(ones, 0.0, 7)), vec![1.0; 9]);
    }
}
