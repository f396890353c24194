//! The 2x2, stride-2, unpadded transposed convolution of UNet's up-sampling path, as a burn
//! backend extension with a hand-written CPU kernel and backward.
//!
//! Each input pixel writes its own disjoint 2x2 output block, so the operation is one GEMM per
//! sample, `T[(co, a, b), (i, j)] = Σ_ci w[ci, co, a, b] · x[ci, i, j]`, followed by a pixel
//! shuffle `y[co, 2i + a, 2j + b] = T[(co, a, b), (i, j)]`. Its input gradient is the
//! un-shuffle followed by the transposed GEMM, its weight gradient a GEMM of the input against
//! the un-shuffled output gradient, its bias gradient the convolution's sum over N, H, W.
//!
//! - `Flex`, f32: those GEMMs, tiled over input rows so the shuffle buffer stays small, in
//!   parallel over samples.
//! - `Cube` (wgpu / CUDA) and the test oracle: burn's `conv_transpose2d` and its backward ops.
//! - `Autodiff<B>`: the forward of `B` and a backward calling the gradient ops of `B`.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::ops::ConvTransposeOptions;
use rayon::prelude::*;

use super::conv2d::cpu::{
    Mat, gemm, inner_parallelism, reduce_samples_per_chunk, samples_per_chunk,
};
use super::conv2d::{Conv2dKernels, dims4, f32_tensor, flex_out, slice};

/// Largest shuffle tile (values) a worker keeps, as the convolution's im2col tile.
const TILE_BUDGET: usize = 1 << 16;

/// burn's options for the 2x2 stride-2 transposed convolution.
pub fn options() -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1)
}

/// Checks `x: [N, C_in, H, W]`, `w: [C_in, C_out, 2, 2]` and the bias length.
fn check(x: [usize; 4], w: [usize; 4], bias: Option<usize>) -> Result<(), String> {
    if w[2] != 2 || w[3] != 2 {
        return Err(format!("weight {w:?} is not [C_in, C_out, 2, 2]"));
    }
    if x[1] != w[0] {
        return Err(format!(
            "input has {} channels, weight {w:?} expects {}",
            x[1], w[0]
        ));
    }
    if let Some(len) = bias.filter(|&len| len != w[1]) {
        return Err(format!(
            "bias has {len} values for {} output channels",
            w[1]
        ));
    }
    Ok(())
}

/// `x: [N, C_in, H, W]`, `w: [C_in, C_out, 2, 2]` (burn's layout), `b: [C_out]` →
/// `[N, C_out, 2H, 2W]`, differentiable in all three, on any backend.
///
/// # Panics
/// When the shapes do not fit together (a bug of the calling model).
pub fn conv_transpose2d_2x2(x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>) -> Tensor<4> {
    if let Err(e) = check(x.dims(), w.dims(), b.as_ref().map(|b| b.dims()[0])) {
        panic!("conv_transpose2d_2x2: {e}");
    }
    let (x, w) = (x.into_dispatch(), w.into_dispatch());
    Tensor::from_dispatch(match b {
        Some(b) => {
            <Dispatch as ConvTranspose2x2Kernels>::conv_transpose2x2_bias(x, w, b.into_dispatch())
        }
        None => <Dispatch as ConvTranspose2x2Kernels>::conv_transpose2x2(x, w),
    })
}

#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait ConvTranspose2x2Kernels: Backend {
    /// The transposed convolution without bias.
    fn conv_transpose2x2(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::conv_transpose2d(x, w, None, options())
    }

    /// The transposed convolution plus a bias per output channel.
    fn conv_transpose2x2_bias(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d(x, w, Some(b), options())
    }

    /// `∂L/∂x` from `dy = ∂L/∂y`.
    fn conv_transpose2x2_input_grad(
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d_x_backward(w, dy, options())
    }

    /// `∂L/∂w` from `dy` (`w` only gives the shape).
    fn conv_transpose2x2_weight_grad(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d_weight_backward(x, w, dy, options())
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl ConvTranspose2x2Kernels for burn::backend::Cube {}

/// Sizes of one call: batch, input channels, output channels, input height and width.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
}

impl Dims {
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn in_sample(&self) -> usize {
        self.ci * self.hw()
    }
    fn out_sample(&self) -> usize {
        4 * self.co * self.hw()
    }
    /// Input rows per shuffle tile.
    fn tile_rows(&self) -> usize {
        (TILE_BUDGET / (4 * self.co * self.w).max(1)).clamp(1, self.h.max(1))
    }
}

/// `y[co, 2i + a, 2j + b] = t[(co, a, b), (i - r0, j)] (+ bias[co])` for input rows `r0..r1`.
fn shuffle(d: &Dims, t: &[f32], r0: usize, r1: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let tl = (r1 - r0) * d.w;
    for co in 0..d.co {
        let bv = bias.map_or(0.0, |b| b[co]);
        let plane = &mut y[co * 4 * d.hw()..][..4 * d.hw()];
        for i in r0..r1 {
            for a in 0..2 {
                let row = &mut plane[(2 * i + a) * 2 * d.w..][..2 * d.w];
                let base = (i - r0) * d.w;
                let t0 = &t[(co * 4 + a * 2) * tl + base..][..d.w];
                let t1 = &t[(co * 4 + a * 2 + 1) * tl + base..][..d.w];
                for ((pair, v0), v1) in row.chunks_exact_mut(2).zip(t0).zip(t1) {
                    pair[0] = v0 + bv;
                    pair[1] = v1 + bv;
                }
            }
        }
    }
}

/// The inverse of [`shuffle`] (without bias): gathers `dy` into `t`.
fn unshuffle(d: &Dims, dy: &[f32], r0: usize, r1: usize, t: &mut [f32]) {
    let tl = (r1 - r0) * d.w;
    for co in 0..d.co {
        let plane = &dy[co * 4 * d.hw()..][..4 * d.hw()];
        for i in r0..r1 {
            for a in 0..2 {
                let row = &plane[(2 * i + a) * 2 * d.w..][..2 * d.w];
                let base = (i - r0) * d.w;
                let (lo, hi) = t.split_at_mut((co * 4 + a * 2 + 1) * tl);
                let t0 = &mut lo[(co * 4 + a * 2) * tl + base..][..d.w];
                let t1 = &mut hi[base..][..d.w];
                for ((pair, v0), v1) in row.chunks_exact(2).zip(t0).zip(t1) {
                    *v0 = pair[0];
                    *v1 = pair[1];
                }
            }
        }
    }
}

fn flex_forward(d: &Dims, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let mut y = crate::kernels::flex_slices::zeroed(d.n * d.out_sample());
    if y.is_empty() {
        return y;
    }
    let par = inner_parallelism(d.n);
    let per = samples_per_chunk(d.n);
    let (hw, co4) = (d.hw(), 4 * d.co);
    y.par_chunks_mut(per * d.out_sample())
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut t = Vec::new();
            for (s, y_n) in chunk.chunks_mut(d.out_sample()).enumerate() {
                let x_n = &x[(k * per + s) * d.in_sample()..][..d.in_sample()];
                let rows = d.tile_rows();
                for r0 in (0..d.h).step_by(rows) {
                    let r1 = (r0 + rows).min(d.h);
                    let tl = (r1 - r0) * d.w;
                    t.resize(co4 * tl, 0.0);
                    gemm(
                        co4,
                        tl,
                        d.ci,
                        Mat::rows(w, co4).t(),
                        Mat::rows(&x_n[r0 * d.w..], hw),
                        &mut t,
                        tl,
                        false,
                        par,
                    );
                    shuffle(d, &t, r0, r1, b, y_n);
                }
            }
        });
    y
}

fn flex_input_grad(d: &Dims, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = crate::kernels::flex_slices::zeroed(d.n * d.in_sample());
    if dx.is_empty() {
        return dx;
    }
    let par = inner_parallelism(d.n);
    let per = samples_per_chunk(d.n);
    let (hw, co4) = (d.hw(), 4 * d.co);
    dx.par_chunks_mut(per * d.in_sample())
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut t = Vec::new();
            for (s, dx_n) in chunk.chunks_mut(d.in_sample()).enumerate() {
                let dy_n = &dy[(k * per + s) * d.out_sample()..][..d.out_sample()];
                let rows = d.tile_rows();
                for r0 in (0..d.h).step_by(rows) {
                    let r1 = (r0 + rows).min(d.h);
                    let tl = (r1 - r0) * d.w;
                    t.resize(co4 * tl, 0.0);
                    unshuffle(d, dy_n, r0, r1, &mut t);
                    gemm(
                        d.ci,
                        tl,
                        co4,
                        Mat::rows(w, co4),
                        Mat::rows(&t, tl),
                        &mut dx_n[r0 * d.w..],
                        hw,
                        false,
                        par,
                    );
                }
            }
        });
    dx
}

fn flex_weight_grad(d: &Dims, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let co4 = 4 * d.co;
    let len = d.ci * co4;
    if d.n == 0 || len == 0 {
        return vec![0.0; len];
    }
    // Fixed chunks (not one per share of the pool), so the sum order is the same for any
    // thread count; with fewer chunks than threads the GEMMs share the pool.
    let per = reduce_samples_per_chunk(d.n);
    let par = inner_parallelism(d.n.div_ceil(per));
    let hw = d.hw();
    let partial: Vec<Vec<f32>> = (0..d.n.div_ceil(per))
        .into_par_iter()
        .map(|k| {
            let mut acc = vec![0.0f32; len];
            let mut t = Vec::new();
            for n in k * per..((k + 1) * per).min(d.n) {
                let x_n = &x[n * d.in_sample()..][..d.in_sample()];
                let dy_n = &dy[n * d.out_sample()..][..d.out_sample()];
                let rows = d.tile_rows();
                for r0 in (0..d.h).step_by(rows) {
                    let r1 = (r0 + rows).min(d.h);
                    let tl = (r1 - r0) * d.w;
                    t.resize(co4 * tl, 0.0);
                    unshuffle(d, dy_n, r0, r1, &mut t);
                    gemm(
                        d.ci,
                        co4,
                        tl,
                        Mat::rows(&x_n[r0 * d.w..], hw),
                        Mat::rows(&t, tl).t(),
                        &mut acc,
                        co4,
                        true,
                        par,
                    );
                }
            }
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0.0; len]);
    for part in parts {
        for (a, b) in dw.iter_mut().zip(&part) {
            *a += *b;
        }
    }
    dw
}

fn flex_transposed(x: FlexTensor, w: FlexTensor, b: Option<FlexTensor>) -> FlexTensor {
    let (xs, ws) = (dims4(&x.shape()), dims4(&w.shape()));
    let b_len = b.as_ref().map(|b| b.shape()[0]);
    let b32 = b.clone().map(f32_tensor);
    let (Ok(()), Some(x32), Some(w32), Some(b32)) = (
        check(xs, ws, b_len),
        f32_tensor(x.clone()),
        f32_tensor(w.clone()),
        b32.map_or(Some(None), |b| b.map(Some)),
    ) else {
        return Flex::conv_transpose2d(x, w, b, options());
    };
    let d = Dims {
        n: xs[0],
        ci: xs[1],
        co: ws[1],
        h: xs[2],
        w: xs[3],
    };
    let y = flex_forward(&d, slice(&x32), slice(&w32), b32.as_ref().map(slice));
    flex_out(y, [d.n, d.co, 2 * d.h, 2 * d.w])
}

/// The sizes of a backward call if every operand is f32 and the shapes agree.
fn backward_dims(x: [usize; 4], w: [usize; 4], dy: [usize; 4]) -> Option<Dims> {
    let d = Dims {
        n: x[0],
        ci: x[1],
        co: w[1],
        h: x[2],
        w: x[3],
    };
    (check(x, w, None).is_ok() && dy == [d.n, d.co, 2 * d.h, 2 * d.w]).then_some(d)
}

impl ConvTranspose2x2Kernels for Flex {
    fn conv_transpose2x2(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        flex_transposed(x, w, None)
    }

    fn conv_transpose2x2_bias(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
        flex_transposed(x, w, Some(b))
    }

    fn conv_transpose2x2_input_grad(w: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let (ws, ys) = (dims4(&w.shape()), dims4(&dy.shape()));
        let xs = [ys[0], ws[0], ys[2] / 2, ys[3] / 2];
        let (Some(d), Some(w32), Some(dy32)) = (
            backward_dims(xs, ws, ys),
            f32_tensor(w.clone()),
            f32_tensor(dy.clone()),
        ) else {
            return Flex::conv_transpose2d_x_backward(w, dy, options());
        };
        flex_out(flex_input_grad(&d, slice(&w32), slice(&dy32)), xs)
    }

    fn conv_transpose2x2_weight_grad(x: FlexTensor, w: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let (xs, ws, ys) = (dims4(&x.shape()), dims4(&w.shape()), dims4(&dy.shape()));
        let (Some(d), Some(x32), Some(dy32), true) = (
            backward_dims(xs, ws, ys),
            f32_tensor(x.clone()),
            f32_tensor(dy.clone()),
            w.dtype() == DType::F32,
        ) else {
            return Flex::conv_transpose2d_weight_backward(x, w, dy, options());
        };
        flex_out(flex_weight_grad(&d, slice(&x32), slice(&dy32)), ws)
    }
}

/// The backward of the transposed convolution, with or without a bias parent.
#[derive(Debug)]
struct TransposedBackward;

/// Checkpointed input and weight.
type State = (NodeId, NodeId);

fn transposed_backward<B: Backend + ConvTranspose2x2Kernels + Conv2dKernels>(
    [x_node, w_node, b_node]: [Option<NodeId>; 3],
    dy: FloatTensor<B>,
    (x_state, w_state): State,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
    let w = checkpointer.retrieve_node_output::<FloatTensor<B>>(w_state);
    if let Some(id) = b_node {
        grads.register::<B>(id, B::conv2d_bias_grad(dy.clone()));
    }
    if let Some(id) = x_node {
        grads.register::<B>(id, B::conv_transpose2x2_input_grad(w.clone(), dy.clone()));
    }
    if let Some(id) = w_node {
        grads.register::<B>(id, B::conv_transpose2x2_weight_grad(x, w, dy));
    }
}

impl<B: Backend + ConvTranspose2x2Kernels + Conv2dKernels> Backward<B, 3> for TransposedBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let ids = ops.parents.map(|p| p.map(|p| p.id));
        transposed_backward::<B>(ids, dy, ops.state, grads, checkpointer);
    }
}

impl<B: Backend + ConvTranspose2x2Kernels + Conv2dKernels> Backward<B, 2> for TransposedBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|p| p.id));
        transposed_backward::<B>([x, w, None], dy, ops.state, grads, checkpointer);
    }
}

impl<B, C> ConvTranspose2x2Kernels for Autodiff<B, C>
where
    B: Backend + ConvTranspose2x2Kernels + Conv2dKernels,
    C: CheckpointStrategy,
{
    fn conv_transpose2x2(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = <TransposedBackward as Backward<B, 2>>::prepare::<C>(
            TransposedBackward,
            [x.node(), w.node()],
        );
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&w));
                let out = B::conv_transpose2x2(x.into_primitive(), w.into_primitive());
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv_transpose2x2(x.into_primitive(), w.into_primitive()))
            }
        }
    }

    fn conv_transpose2x2_bias(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = <TransposedBackward as Backward<B, 3>>::prepare::<C>(
            TransposedBackward,
            [x.node(), w.node(), b.node()],
        );
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&w));
                let out = B::conv_transpose2x2_bias(
                    x.into_primitive(),
                    w.into_primitive(),
                    b.into_primitive(),
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv_transpose2x2_bias(
                x.into_primitive(),
                w.into_primitive(),
                b.into_primitive(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{device, train_device};
    use crate::kernels::hash::splitmix64;
    use crate::nn::{float_tensor, to_vec_f32};
    use burn::tensor::module;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| (splitmix64(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }

    #[test]
    fn the_weight_gradient_does_not_depend_on_the_pool() {
        // 11 samples: uneven chunks. dy is the 2x output, `[n, co, 2h, 2w]`.
        let d = Dims {
            n: 11,
            ci: 5,
            co: 3,
            h: 6,
            w: 7,
        };
        let x = values(d.n * d.in_sample(), 7);
        let dy = values(d.n * d.out_sample(), 8);
        crate::kernels::determinism::assert_same_bits_in_pools("conv_transpose2d dw", || {
            flex_weight_grad(&d, &x, &dy)
        });
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let rms = (want.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
            / want.len().max(1) as f64)
            .sqrt();
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-4 * (f64::from(w.abs()) + rms).max(1e-6);
            assert!(f64::from((g - w).abs()) <= tol, "{what}[{k}]: {g} vs {w}");
        }
    }

    /// Forward and the three gradients of `Σ y ⊙ r`, ours against burn's `conv_transpose2d`.
    fn check_against_burn(x_shape: [usize; 4], co: usize, bias: bool, seed: u64) {
        let dev = train_device();
        let w_shape = [x_shape[1], co, 2, 2];
        let xv = values(x_shape.iter().product(), seed);
        let wv = values(w_shape.iter().product(), seed + 1);
        let bv = values(co, seed + 2);
        let y_shape = [x_shape[0], co, 2 * x_shape[2], 2 * x_shape[3]];
        let r = float_tensor(values(y_shape.iter().product(), seed + 3), y_shape, &dev);
        let run = |ours: bool| {
            let x = float_tensor(xv.clone(), x_shape, &dev).require_grad();
            let w = float_tensor(wv.clone(), w_shape, &dev).require_grad();
            let b = bias.then(|| float_tensor(bv.clone(), [co], &dev).require_grad());
            let y = if ours {
                conv_transpose2d_2x2(x.clone(), w.clone(), b.clone())
            } else {
                module::conv_transpose2d(x.clone(), w.clone(), b.clone(), options())
            };
            assert_eq!(y.dims(), y_shape);
            let grads = (y.clone() * r.clone()).sum().backward();
            (
                to_vec_f32(y),
                to_vec_f32(x.grad(&grads).unwrap()),
                to_vec_f32(w.grad(&grads).unwrap()),
                b.map(|b| to_vec_f32(b.grad(&grads).unwrap())),
            )
        };
        let (y, dx, dw, db) = run(true);
        let (ry, rdx, rdw, rdb) = run(false);
        let what = |t: &str| format!("{t} for x {x_shape:?}, {co} out");
        assert_close(&what("y"), &y, &ry);
        assert_close(&what("dx"), &dx, &rdx);
        assert_close(&what("dw"), &dw, &rdw);
        if let (Some(db), Some(rdb)) = (db, rdb) {
            assert_close(&what("db"), &db, &rdb);
        }
        let y_inf = conv_transpose2d_2x2(
            float_tensor(xv, x_shape, &device()),
            float_tensor(wv, w_shape, &device()),
            bias.then(|| float_tensor(bv, [co], &device())),
        );
        assert_close(&what("inference y"), &to_vec_f32(y_inf), &ry);
    }

    #[test]
    fn forward_and_gradients_match_burn() {
        check_against_burn([2, 3, 5, 7], 4, true, 1);
        check_against_burn([1, 4, 3, 3], 2, false, 2);
        check_against_burn([5, 2, 4, 1], 3, true, 3);
        // 8 output channels x 4 x 600 columns: three input rows per shuffle tile.
        check_against_burn([2, 3, 7, 600], 8, true, 4);
        check_against_burn([9, 6, 6, 6], 5, false, 5);
    }

    #[test]
    fn finite_differences_agree_with_the_input_gradient() {
        let dev = train_device();
        let w = float_tensor(values(3 * 2 * 4, 10), [3, 2, 2, 2], &dev);
        let b = float_tensor(values(2, 11), [2], &dev);
        crate::nn::gradcheck::check_input_gradient(
            |x: Tensor<4>| conv_transpose2d_2x2(x, w.clone(), Some(b.clone())),
            [2, 3, 3, 4],
            12,
        );
    }

    #[test]
    fn the_default_bodies_agree_with_the_flex_kernels() {
        let t = |v: Vec<f32>, s: [usize; 4]| FlexTensor::from_data(TensorData::new(v, s));
        let x = t(values(2 * 3 * 20, 20), [2, 3, 4, 5]);
        let w = t(values(3 * 4 * 4, 21), [3, 4, 2, 2]);
        let dy = t(values(2 * 4 * 80, 22), [2, 4, 8, 10]);
        let v = |t: FlexTensor| t.into_data().iter::<f32>().collect::<Vec<_>>();
        assert_close(
            "dx",
            &v(
                <Flex as ConvTranspose2x2Kernels>::conv_transpose2x2_input_grad(
                    w.clone(),
                    dy.clone(),
                ),
            ),
            &v(Flex::conv_transpose2d_x_backward(
                w.clone(),
                dy.clone(),
                options(),
            )),
        );
        assert_close(
            "dw",
            &v(
                <Flex as ConvTranspose2x2Kernels>::conv_transpose2x2_weight_grad(
                    x.clone(),
                    w.clone(),
                    dy.clone(),
                ),
            ),
            &v(Flex::conv_transpose2d_weight_backward(x, w, dy, options())),
        );
    }

    #[test]
    fn mismatched_shapes_are_reported() {
        assert!(check([1, 3, 4, 4], [3, 2, 2, 2], None).is_ok());
        assert!(check([1, 3, 4, 4], [3, 2, 3, 3], None).is_err());
        assert!(check([1, 4, 4, 4], [3, 2, 2, 2], None).is_err());
        assert!(check([1, 3, 4, 4], [3, 2, 2, 2], Some(3)).is_err());
    }
}
