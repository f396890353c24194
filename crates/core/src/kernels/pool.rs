//! Pooling and re-sampling of `[N, C, H, W]` batches as one burn backend extension, in the
//! pattern of [`propagate`](super::propagate): 2x2 stride-2 max pooling (UNet, YOLO),
//! global average pooling (ResNet's head), bilinear 2x up-sampling (UNet's decoder) and
//! ResNet's option-A shortcut (subsample by 2, zero-pad the new channels).
//!
//! - `Flex` (CPU): one pass per op, parallel over the `N·C` planes. Max pooling under
//!   autodiff records the window position of each maximum in one byte (`0..4`), not the
//!   8-byte flat index PyTorch keeps: the backward writes `dy` there and zeros elsewhere.
//! - Other listed backends: the trait's default bodies, burn's `max_pool2d_with_indices`,
//!   `adaptive_avg_pool2d` and `interpolate` with their backward ops; the tests' reference.
//! - `Autodiff<B>`: hand-written backward passes; max pooling keeps only the positions,
//!   average pooling, up-sampling and the shortcut keep nothing but the input's shape.
//!
//! Max pooling floors odd sizes (the last row/column is dropped, gradient 0 there) and, as
//! PyTorch, takes the first maximum of a window in row-major order and propagates NaN.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension, get_or_init_device_settings,
};
use burn::prelude::*;
use burn::tensor::Slice;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use rayon::prelude::*;

use super::flex_slices::{contiguous, is_f32, rows_per_task, tensor, values, zeroed};

/// 2x2 max pooling with stride 2 (`nn.MaxPool2d(2)`): `[N, C, H, W] → [N, C, ⌊H/2⌋, ⌊W/2⌋]`.
///
/// # Panics
/// When `H` or `W` is below 2 (a shape bug of the model).
pub fn max_pool2d_2x2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    assert!(
        h >= 2 && w >= 2,
        "max_pool2d_2x2: spatial size {h}x{w} below 2x2"
    );
    Tensor::from_dispatch(<Dispatch as PoolKernels>::max_pool2x2(x.into_dispatch()))
}

/// Global average pooling `[N, C, H, W] → [N, C, 1, 1]` (`nn.AdaptiveAvgPool2d(1)`).
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolKernels>::global_avg_pool(
        x.into_dispatch(),
    ))
}

/// Bilinear up-sampling by 2 (`nn.Upsample(scale_factor=2, mode="bilinear",
/// align_corners=...)`): `[N, C, H, W] → [N, C, 2H, 2W]`.
pub fn upsample_bilinear2x(x: Tensor<4>, align_corners: bool) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolKernels>::upsample_bilinear2x(
        x.into_dispatch(),
        align_corners,
    ))
}

/// ResNet's option-A shortcut (He et al. 2016; the "identity with extra zero entries"):
/// `x[:, :, ::step, ::step]` with `pad` channels of zeros on each side,
/// `[N, C, H, W] → [N, C + 2·pad, ⌈H/step⌉, ⌈W/step⌉]`, in one pass. Composed from burn's ops
/// (a 1x1 max pool with stride 2, a zero tensor and a concatenation) it took 8 % of ResNet-20's
/// inference: burn's pooling runs its generic windowed kernel with indices even for 1x1.
///
/// # Panics
/// When `step` is not 1 or 2 (a bug of the model).
pub fn shortcut_a(x: Tensor<4>, step: usize, pad: usize) -> Tensor<4> {
    assert!(
        step == 1 || step == 2,
        "shortcut_a: step {step}, expected 1 or 2"
    );
    if step == 1 && pad == 0 {
        return x;
    }
    Tensor::from_dispatch(<Dispatch as PoolKernels>::shortcut_a(
        x.into_dispatch(),
        step,
        pad,
    ))
}

#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait PoolKernels: Backend {
    /// 2x2 stride-2 max pooling.
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
    }

    /// 2x2 stride-2 max pooling and the positions of the maxima, in the backend's encoding.
    fn max_pool2x2_with_indices(x: FloatTensor<Self>) -> (FloatTensor<Self>, IntTensor<Self>) {
        let int_dtype = get_or_init_device_settings::<Self>(&x.device()).int_dtype;
        let r = Self::max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], false, int_dtype);
        (r.output, r.indices)
    }

    /// `dx` (of shape `x_shape`) from `dy` and the positions of the maxima.
    fn max_pool2x2_bwd(
        x_shape: [usize; 4],
        dy: FloatTensor<Self>,
        indices: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let x = Self::float_zeros(Shape::new(x_shape), &dy.device(), dy.dtype().into());
        Self::max_pool2d_with_indices_backward(
            x,
            [2, 2],
            [2, 2],
            [0, 0],
            [1, 1],
            false,
            dy,
            indices,
        )
        .x_grad
    }

    /// [`shortcut_a`]: subsample by `step`, then `pad` zero channels on each side.
    fn shortcut_a(x: FloatTensor<Self>, step: usize, pad: usize) -> FloatTensor<Self> {
        default_shortcut_a::<Self>(x, step, pad)
    }

    /// `dx` (of shape `x_shape`) of [`Self::shortcut_a`]: the middle channels of `dy` at the
    /// kept positions, zero elsewhere.
    fn shortcut_a_bwd(
        x_shape: [usize; 4],
        dy: FloatTensor<Self>,
        step: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        default_shortcut_a_bwd::<Self>(x_shape, dy, step, pad)
    }

    /// Mean over `H, W`.
    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::adaptive_avg_pool2d(x, [1, 1])
    }

    /// `dx = dy / (H·W)` broadcast over `H, W`.
    fn global_avg_pool_bwd(x_shape: [usize; 4], dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let hw = (x_shape[2] * x_shape[3]) as f32;
        Self::float_expand(Self::float_div_scalar(dy, hw.into()), Shape::new(x_shape))
    }

    /// Bilinear 2x up-sampling.
    fn upsample_bilinear2x(x: FloatTensor<Self>, align_corners: bool) -> FloatTensor<Self> {
        let [_, _, h, w] = x.shape().dims();
        Self::interpolate(x, [2 * h, 2 * w], bilinear(align_corners))
    }

    /// `dx` of [`Self::upsample_bilinear2x`] for an input of `x_shape`.
    fn upsample_bilinear2x_bwd(
        x_shape: [usize; 4],
        dy: FloatTensor<Self>,
        align_corners: bool,
    ) -> FloatTensor<Self> {
        let x = Self::float_zeros(Shape::new(x_shape), &dy.device(), dy.dtype().into());
        let [_, _, h, w] = x_shape;
        Self::interpolate_backward(x, dy, [2 * h, 2 * w], bilinear(align_corners))
    }
}

/// `0..len` with `step`, bound (backends receive bound slices from burn's own API).
fn every(len: usize, step: usize) -> Slice {
    Slice::new(0, Some(len as isize), step as isize)
}

/// [`PoolKernels::shortcut_a`] from burn's ops: a stepped slice and a concatenation.
fn default_shortcut_a<B: Backend>(x: FloatTensor<B>, step: usize, pad: usize) -> FloatTensor<B> {
    let [n, c, h, w] = x.shape().dims();
    let s = if step == 1 {
        x
    } else {
        B::float_slice(
            x,
            &[every(n, 1), every(c, 1), every(h, step), every(w, step)],
        )
    };
    if pad == 0 {
        return s;
    }
    let shape = Shape::new([n, pad, h.div_ceil(step), w.div_ceil(step)]);
    let zeros = B::float_zeros(shape, &s.device(), s.dtype().into());
    B::float_cat(vec![zeros.clone(), s, zeros], 1)
}

/// [`PoolKernels::shortcut_a_bwd`] from burn's ops: a channel slice, then a stepped assignment
/// into zeros.
fn default_shortcut_a_bwd<B: Backend>(
    x_shape: [usize; 4],
    dy: FloatTensor<B>,
    step: usize,
    pad: usize,
) -> FloatTensor<B> {
    let [n, c, h, w] = x_shape;
    let [_, _, oh, ow] = dy.shape().dims();
    let g = if pad == 0 {
        dy
    } else {
        let mid = Slice::new(pad as isize, Some((pad + c) as isize), 1);
        B::float_slice(dy, &[every(n, 1), mid, every(oh, 1), every(ow, 1)])
    };
    if step == 1 {
        return g;
    }
    let dx = B::float_zeros(Shape::new(x_shape), &g.device(), g.dtype().into());
    B::float_slice_assign(
        dx,
        &[every(n, 1), every(c, 1), every(h, step), every(w, step)],
        g,
    )
}

fn bilinear(align_corners: bool) -> InterpolateOptions {
    InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(align_corners)
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.shape();
    [s[0], s[1], s[2], s[3]]
}

/// Runs `f(plane_in, plane_out)` over the `N·C` planes in parallel (several small planes per
/// task).
fn per_plane(
    src: &[f32],
    in_len: usize,
    out: &mut [f32],
    out_len: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let per_task = rows_per_task(in_len.max(out_len));
    out.par_chunks_mut(out_len * per_task)
        .zip(src.par_chunks(in_len * per_task))
        .for_each(|(o, s)| {
            for (po, ps) in o.chunks_mut(out_len).zip(s.chunks(in_len)) {
                f(ps, po);
            }
        });
}

/// The window position (0..4, row-major) of the first maximum of `[a, b, c, d]`, NaN first.
/// Branch-free (`|`/`&` on the comparisons, selects): with branches, random data mispredicted
/// half of them and the pass ran 5x slower.
#[inline(always)]
fn argmax4(v: [f32; 4]) -> (f32, u8) {
    let (mut m, mut k) = (v[0], 0u8);
    for (i, &x) in v.iter().enumerate().skip(1) {
        let take = (x > m) | (x.is_nan() & !m.is_nan());
        m = if take { x } else { m };
        k = if take { i as u8 } else { k };
    }
    (m, k)
}

/// `max(a, b)` that propagates NaN (`f32::max` drops it); branch-free as [`argmax4`].
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if (a >= b) | a.is_nan() { a } else { b }
}

/// Max pooling on slices; `idx` receives the positions when given.
fn max_pool_planes(x: &[f32], [n, c, h, w]: [usize; 4], idx: Option<&mut [u8]>) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let (in_len, out_len) = (h * w, ho * wo);
    let mut out = zeroed(n * c * out_len);
    let Some(idx) = idx else {
        per_plane(x, in_len, &mut out, out_len, |p, o| {
            for (oy, orow) in o.chunks_mut(wo.max(1)).enumerate() {
                let (r0, r1) = (&p[2 * oy * w..][..w], &p[(2 * oy + 1) * w..][..w]);
                for (ox, v) in orow.iter_mut().enumerate() {
                    let top = max_nan(r0[2 * ox], r0[2 * ox + 1]);
                    *v = max_nan(top, max_nan(r1[2 * ox], r1[2 * ox + 1]));
                }
            }
        });
        return out;
    };
    let per_task = rows_per_task(in_len);
    out.par_chunks_mut(out_len * per_task)
        .zip(idx.par_chunks_mut(out_len * per_task))
        .zip(x.par_chunks(in_len * per_task))
        .for_each(|((o, ixs), s)| {
            let planes = o.chunks_mut(out_len).zip(ixs.chunks_mut(out_len));
            for ((po, pi), p) in planes.zip(s.chunks(in_len)) {
                for oy in 0..ho {
                    let (r0, r1) = (&p[2 * oy * w..][..w], &p[(2 * oy + 1) * w..][..w]);
                    let outs = po[oy * wo..][..wo].iter_mut().zip(&mut pi[oy * wo..][..wo]);
                    for ((o, k), (a, b)) in outs.zip(r0.chunks_exact(2).zip(r1.chunks_exact(2))) {
                        (*o, *k) = argmax4([a[0], a[1], b[0], b[1]]);
                    }
                }
            }
        });
    out
}

/// One plane's max-pooling gradient: every value of `pd` (`[h, w]`) written once, `dy`
/// where the window's maximum was and 0 elsewhere (the dropped last row / column of odd
/// sizes too). Whole rows, branch-free: scattering `dy` into a zeroed plane cost a
/// dependent store per value and, the plane being larger than L2, each line twice.
fn unpool_plane(pd: &mut [f32], pg: &[f32], pi: &[u8], [h, w]: [usize; 2]) {
    let (ho, wo) = (h / 2, w / 2);
    for (oy, rows) in pd[..2 * ho * w].chunks_exact_mut(2 * w).enumerate() {
        let (top, bot) = rows.split_at_mut(w);
        unpool_rows(top, bot, &pg[oy * wo..][..wo], &pi[oy * wo..][..wo]);
    }
    pd[2 * ho * w..].fill(0.0);
}

#[inline(always)]
fn unpool_rows(top: &mut [f32], bot: &mut [f32], g: &[f32], k: &[u8]) {
    let wo = g.len();
    let pick = |k: u8, at: u8, g: f32| if k == at { g } else { 0.0 };
    for (((t, b), &g), &k) in top
        .chunks_exact_mut(2)
        .zip(bot.chunks_exact_mut(2))
        .zip(g)
        .zip(k)
    {
        t[0] = pick(k, 0, g);
        t[1] = pick(k, 1, g);
        b[0] = pick(k, 2, g);
        b[1] = pick(k, 3, g);
    }
    top[2 * wo..].fill(0.0);
    bot[2 * wo..].fill(0.0);
}

/// The source rows/columns of a 2x up-sampling of `len` points: `(i0, i1, w1)` per output,
/// `v = (1 − w1)·x[i0] + w1·x[i1]`.
fn taps(len: usize, align_corners: bool) -> Vec<(usize, usize, f32)> {
    let out = 2 * len;
    (0..out)
        .map(|o| {
            let src = if align_corners {
                if out > 1 {
                    o as f64 * (len - 1) as f64 / (out - 1) as f64
                } else {
                    0.0
                }
            } else {
                ((o as f64 + 0.5) / 2.0 - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(len - 1);
            let i1 = (i0 + 1).min(len - 1);
            (i0, i1, (src - i0 as f64) as f32)
        })
        .collect()
}

impl PoolKernels for Flex {
    fn max_pool2x2(x: FlexTensor) -> FlexTensor {
        if !is_f32(&x) {
            return Flex::max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        let x = contiguous(x);
        let [n, c, h, w] = dims4(&x);
        let out = max_pool_planes(values(&x), [n, c, h, w], None);
        tensor(out, Shape::new([n, c, h / 2, w / 2]))
    }

    fn max_pool2x2_with_indices(x: FlexTensor) -> (FlexTensor, FlexTensor) {
        if !is_f32(&x) {
            let int_dtype = get_or_init_device_settings::<Flex>(&x.device()).int_dtype;
            let r =
                Flex::max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], false, int_dtype);
            return (r.output, r.indices);
        }
        let x = contiguous(x);
        let [n, c, h, w] = dims4(&x);
        let mut idx = vec![0u8; n * c * (h / 2) * (w / 2)];
        let out = max_pool_planes(values(&x), [n, c, h, w], Some(&mut idx));
        let shape = Shape::new([n, c, h / 2, w / 2]);
        (
            tensor(out, shape.clone()),
            FlexTensor::from_data(TensorData::new(idx, shape)),
        )
    }

    fn max_pool2x2_bwd(x_shape: [usize; 4], dy: FlexTensor, indices: FlexTensor) -> FlexTensor {
        if !is_f32(&dy) || indices.dtype() != DType::U8 {
            let x = FlexTensor::zeros(Shape::new(x_shape), dy.dtype());
            return Flex::max_pool2d_with_indices_backward(
                x,
                [2, 2],
                [2, 2],
                [0, 0],
                [1, 1],
                false,
                dy,
                indices,
            )
            .x_grad;
        }
        let (dy, indices) = (contiguous(dy), contiguous(indices));
        let [n, c, h, w] = x_shape;
        let (ho, wo) = (h / 2, w / 2);
        let (g, ix) = (values(&dy), indices.as_slice::<u8>().unwrap_or(&[]));
        assert_eq!(
            ix.len(),
            g.len(),
            "max_pool2x2_bwd: positions and gradient differ"
        );
        let mut dx = zeroed(n * c * h * w);
        let (in_len, out_len) = (h * w, ho * wo);
        let per_task = rows_per_task(in_len);
        dx.par_chunks_mut(in_len * per_task)
            .zip(
                g.par_chunks(out_len * per_task)
                    .zip(ix.par_chunks(out_len * per_task)),
            )
            .for_each(|(d, (gs, is))| {
                let planes = d
                    .chunks_mut(in_len)
                    .zip(gs.chunks(out_len).zip(is.chunks(out_len)));
                for (pd, (pg, pi)) in planes {
                    unpool_plane(pd, pg, pi, [h, w]);
                }
            });
        tensor(dx, Shape::new(x_shape))
    }

    fn shortcut_a(x: FlexTensor, step: usize, pad: usize) -> FlexTensor {
        if !is_f32(&x) {
            return default_shortcut_a::<Flex>(x, step, pad);
        }
        let x = contiguous(x);
        let [n, c, h, w] = dims4(&x);
        let (oh, ow) = (h.div_ceil(step), w.div_ceil(step));
        let (in_len, out_len) = (h * w, oh * ow);
        let co = c + 2 * pad;
        let mut out = vec![0f32; n * co * out_len];
        let xs = values(&x);
        // One task per sample: its middle planes copied (strided), the pad planes left zero.
        out.par_chunks_mut((co * out_len).max(1))
            .zip(xs.par_chunks((c * in_len).max(1)))
            .with_min_len(rows_per_task(co * out_len))
            .for_each(|(o, s)| {
                let mid = &mut o[pad * out_len..(pad + c) * out_len];
                for (po, ps) in mid.chunks_exact_mut(out_len).zip(s.chunks_exact(in_len)) {
                    for (orow, srow) in po
                        .chunks_exact_mut(ow)
                        .zip(ps.chunks_exact(w).step_by(step))
                    {
                        for (v, &sv) in orow.iter_mut().zip(srow.iter().step_by(step)) {
                            *v = sv;
                        }
                    }
                }
            });
        tensor(out, Shape::new([n, co, oh, ow]))
    }

    fn shortcut_a_bwd(x_shape: [usize; 4], dy: FlexTensor, step: usize, pad: usize) -> FlexTensor {
        if !is_f32(&dy) {
            return default_shortcut_a_bwd::<Flex>(x_shape, dy, step, pad);
        }
        let dy = contiguous(dy);
        let [n, c, h, w] = x_shape;
        let (oh, ow) = (h.div_ceil(step), w.div_ceil(step));
        let (in_len, out_len) = (h * w, oh * ow);
        let co = c + 2 * pad;
        let mut dx = vec![0f32; n * c * in_len];
        // Every value written once: kept positions take `dy`, the others 0 (whole rows, no
        // scatter into a zeroed plane).
        dx.par_chunks_mut((c * in_len).max(1))
            .zip(values(&dy).par_chunks((co * out_len).max(1)))
            .with_min_len(rows_per_task(c * in_len))
            .for_each(|(d, g)| {
                let mid = &g[pad * out_len..(pad + c) * out_len];
                for (pd, pg) in d.chunks_exact_mut(in_len).zip(mid.chunks_exact(out_len)) {
                    for (i, drow) in pd.chunks_exact_mut(w).enumerate() {
                        if i % step != 0 {
                            drow.fill(0.0);
                            continue;
                        }
                        let grow = &pg[(i / step) * ow..][..ow];
                        if step == 1 {
                            drow.copy_from_slice(grow);
                            continue;
                        }
                        for (pair, &gv) in drow.chunks_mut(2).zip(grow) {
                            pair[0] = gv;
                            if let Some(z) = pair.get_mut(1) {
                                *z = 0.0;
                            }
                        }
                    }
                }
            });
        tensor(dx, Shape::new(x_shape))
    }

    fn global_avg_pool(x: FlexTensor) -> FlexTensor {
        if !is_f32(&x) {
            return Flex::adaptive_avg_pool2d(x, [1, 1]);
        }
        let x = contiguous(x);
        let [n, c, h, w] = dims4(&x);
        let hw = (h * w).max(1);
        let xs = values(&x);
        let out: Vec<f32> = xs
            .par_chunks(hw)
            .with_min_len(rows_per_task(hw))
            .map(|p| (p.iter().map(|&v| f64::from(v)).sum::<f64>() / hw as f64) as f32)
            .collect();
        tensor(out, Shape::new([n, c, 1, 1]))
    }

    fn global_avg_pool_bwd(x_shape: [usize; 4], dy: FlexTensor) -> FlexTensor {
        if !is_f32(&dy) {
            let hw = (x_shape[2] * x_shape[3]) as f32;
            return Flex::float_expand(Flex::float_div_scalar(dy, hw.into()), Shape::new(x_shape));
        }
        let dy = contiguous(dy);
        let hw = x_shape[2] * x_shape[3];
        let g = values(&dy);
        let mut dx = vec![0f32; g.len() * hw];
        dx.par_chunks_mut(hw.max(1))
            .with_min_len(rows_per_task(hw))
            .zip(g.par_iter())
            .for_each(|(d, &v)| d.fill(v / hw as f32));
        tensor(dx, Shape::new(x_shape))
    }

    fn upsample_bilinear2x(x: FlexTensor, align_corners: bool) -> FlexTensor {
        if !is_f32(&x) {
            let [_, _, h, w] = dims4(&x);
            return Flex::interpolate(x, [2 * h, 2 * w], bilinear(align_corners));
        }
        let x = contiguous(x);
        let [n, c, h, w] = dims4(&x);
        let (ty, tx) = (taps(h, align_corners), taps(w, align_corners));
        let mut out = zeroed(n * c * 4 * h * w);
        per_plane(values(&x), h * w, &mut out, 4 * h * w, |p, o| {
            let mut row = vec![0f32; w];
            for (oy, &(y0, y1, wy)) in ty.iter().enumerate() {
                let (r0, r1) = (&p[y0 * w..][..w], &p[y1 * w..][..w]);
                for ((t, &a), &b) in row.iter_mut().zip(r0).zip(r1) {
                    *t = a + (b - a) * wy;
                }
                for (v, &(x0, x1, wx)) in o[oy * 2 * w..][..2 * w].iter_mut().zip(&tx) {
                    *v = row[x0] + (row[x1] - row[x0]) * wx;
                }
            }
        });
        tensor(out, Shape::new([n, c, 2 * h, 2 * w]))
    }

    fn upsample_bilinear2x_bwd(
        x_shape: [usize; 4],
        dy: FlexTensor,
        align_corners: bool,
    ) -> FlexTensor {
        let [n, c, h, w] = x_shape;
        if !is_f32(&dy) {
            let x = FlexTensor::zeros(Shape::new(x_shape), dy.dtype());
            return Flex::interpolate_backward(x, dy, [2 * h, 2 * w], bilinear(align_corners));
        }
        let dy = contiguous(dy);
        let (ty, tx) = (taps(h, align_corners), taps(w, align_corners));
        let mut dx = zeroed(n * c * h * w);
        // Per plane: each output row's gradient is spread over the columns, then added to its
        // two source rows with the row weights.
        let per_task = rows_per_task(4 * h * w);
        dx.par_chunks_mut(h * w * per_task)
            .zip(values(&dy).par_chunks(4 * h * w * per_task))
            .for_each(|(d, g)| {
                let mut row = vec![0f32; w];
                for (pd, pg) in d.chunks_mut(h * w).zip(g.chunks(4 * h * w)) {
                    for (oy, &(y0, y1, wy)) in ty.iter().enumerate() {
                        row.fill(0.0);
                        for (&v, &(x0, x1, wx)) in pg[oy * 2 * w..][..2 * w].iter().zip(&tx) {
                            row[x0] += v * (1.0 - wx);
                            row[x1] += v * wx;
                        }
                        for (o, &r) in pd[y0 * w..][..w].iter_mut().zip(&row) {
                            *o += r * (1.0 - wy);
                        }
                        for (o, &r) in pd[y1 * w..][..w].iter_mut().zip(&row) {
                            *o += r * wy;
                        }
                    }
                }
            });
        tensor(dx, Shape::new(x_shape))
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl PoolKernels for burn::backend::Cube {}

/// The backward of max pooling: state = the input's shape and the positions of the maxima.
#[derive(Debug)]
struct MaxPoolBackward;

impl<B: Backend + PoolKernels> Backward<B, 1> for MaxPoolBackward {
    type State = ([usize; 4], IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = parent {
            let (shape, indices) = ops.state;
            grads.register::<B>(node.id, B::max_pool2x2_bwd(shape, dy, indices));
        }
    }
}

/// Which shape-only backward a [`LinearBackward`] runs.
#[derive(Debug, Clone, Copy)]
enum Linear {
    GlobalAvg,
    Bilinear(bool),
    /// `(step, pad)`.
    ShortcutA(usize, usize),
}

/// The backward of the linear ops (average pooling, up-sampling): state = the input's shape.
#[derive(Debug)]
struct LinearBackward(Linear);

impl<B: Backend + PoolKernels> Backward<B, 1> for LinearBackward {
    type State = [usize; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = parent {
            let dx = match self.0 {
                Linear::GlobalAvg => B::global_avg_pool_bwd(ops.state, dy),
                Linear::Bilinear(ac) => B::upsample_bilinear2x_bwd(ops.state, dy, ac),
                Linear::ShortcutA(step, pad) => B::shortcut_a_bwd(ops.state, dy, step, pad),
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

fn prim_dims4<B: Backend>(x: &FloatTensor<B>) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

impl<B: Backend + PoolKernels, C: CheckpointStrategy> PoolKernels for Autodiff<B, C> {
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let shape = prim_dims4::<B>(&x);
                let (y, indices) = B::max_pool2x2_with_indices(x);
                prep.finish((shape, indices), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::max_pool2x2(x.into_primitive())),
        }
    }

    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_op::<B, C>(x, Linear::GlobalAvg, B::global_avg_pool)
    }

    fn upsample_bilinear2x(x: FloatTensor<Self>, align_corners: bool) -> FloatTensor<Self> {
        linear_op::<B, C>(x, Linear::Bilinear(align_corners), |x| {
            B::upsample_bilinear2x(x, align_corners)
        })
    }

    fn shortcut_a(x: FloatTensor<Self>, step: usize, pad: usize) -> FloatTensor<Self> {
        linear_op::<B, C>(x, Linear::ShortcutA(step, pad), |x| {
            B::shortcut_a(x, step, pad)
        })
    }
}

fn linear_op<B, C>(
    x: FloatTensor<Autodiff<B, C>>,
    kind: Linear,
    fwd: impl FnOnce(FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend + PoolKernels,
    C: CheckpointStrategy,
{
    match LinearBackward(kind)
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            let shape = prim_dims4::<B>(&x);
            prep.finish(shape, fwd(x))
        }
        OpsKind::UnTracked(prep) => prep.finish(fwd(x.into_primitive())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{device, train_device};
    use crate::nn::to_vec_f32;
    use burn::tensor::Distribution;
    use burn::tensor::module::{adaptive_avg_pool2d, interpolate, max_pool2d};
    use burn::tensor::ops::MaxPoolOptions;

    const SHAPES: [[usize; 4]; 6] = [
        [1, 1, 2, 2],
        [1, 3, 5, 7],
        [2, 4, 6, 3],
        [3, 16, 11, 13],
        [2, 5, 32, 32],
        [1, 2, 2, 9],
    ];

    fn random(shape: [usize; 4], seed: u64, dev: &Device) -> Tensor<4> {
        // Seed and draw as one step: another test may reseed the shared generator between.
        let _rng = crate::backend::exclusive_rng();
        dev.seed(seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), dev)
    }

    /// `|a − b| ≤ tol·(|b| + scale)`, `scale` the mean magnitude of `b` (interpolation of
    /// values of both signs cancels to ~0 in different orders).
    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().map(|v| v.abs()).sum::<f32>() / want.len().max(1) as f32;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (w.abs() + scale) && g.is_finite(),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// The option-A shortcut as the models composed it before [`shortcut_a`]: a 1x1 max pool
    /// with the step as stride, then zero channels concatenated on each side.
    fn composed_shortcut(x: Tensor<4>, step: usize, pad: usize) -> Tensor<4> {
        let s = max_pool2d(x, MaxPoolOptions::new([1, 1]).with_stride([step, step]));
        if pad == 0 {
            return s;
        }
        let [n, _, h, w] = s.dims();
        let zeros = Tensor::<4>::zeros([n, pad, h, w], &s.device());
        Tensor::cat(vec![zeros.clone(), s, zeros], 1)
    }

    type Pair = (
        Box<dyn Fn(Tensor<4>) -> Tensor<4>>,
        Box<dyn Fn(Tensor<4>) -> Tensor<4>>,
    );

    fn pairs() -> Vec<(&'static str, Pair)> {
        let up = |ac: bool| {
            move |x: Tensor<4>| {
                let [_, _, h, w] = x.dims();
                interpolate(x, bilinear(ac).with_output_size([2 * h, 2 * w]))
            }
        };
        vec![
            (
                "max_pool",
                (
                    Box::new(max_pool2d_2x2),
                    Box::new(|x| max_pool2d(x, MaxPoolOptions::new([2, 2]))),
                ),
            ),
            (
                "global_avg",
                (
                    Box::new(global_avg_pool),
                    Box::new(|x| adaptive_avg_pool2d(x, [1, 1])),
                ),
            ),
            (
                "bilinear_ac",
                (
                    Box::new(|x| upsample_bilinear2x(x, true)),
                    Box::new(up(true)),
                ),
            ),
            (
                "bilinear",
                (
                    Box::new(|x| upsample_bilinear2x(x, false)),
                    Box::new(up(false)),
                ),
            ),
            (
                "shortcut_a",
                (
                    Box::new(|x| shortcut_a(x, 2, 3)),
                    Box::new(|x| composed_shortcut(x, 2, 3)),
                ),
            ),
            (
                "subsample",
                (
                    Box::new(|x| shortcut_a(x, 2, 0)),
                    Box::new(|x| composed_shortcut(x, 2, 0)),
                ),
            ),
            (
                "pad_only",
                (
                    Box::new(|x| shortcut_a(x, 1, 2)),
                    Box::new(|x| composed_shortcut(x, 1, 2)),
                ),
            ),
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
    }

    #[test]
    fn gradients_match_burn_on_odd_shapes() {
        let dev = train_device();
        for (k, &shape) in SHAPES.iter().enumerate() {
            let x0 = random(shape, 10 + k as u64, &dev);
            for (name, (ours, theirs)) in pairs() {
                let probe = ours(x0.clone());
                let r = random(probe.dims(), 20 + k as u64, &dev);
                let grad = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                    let x = x0.clone().detach().require_grad();
                    let grads = (f(x.clone()) * r.clone()).sum().backward();
                    to_vec_f32(x.grad(&grads).expect("grad"))
                };
                assert_close(name, &grad(&*ours), &grad(&*theirs), 1e-4);
            }
        }
        crate::nn::gradcheck::check_input_gradient(
            |x| upsample_bilinear2x(x, true),
            [1, 2, 3, 4],
            3,
        );
        crate::nn::gradcheck::check_input_gradient(max_pool2d_2x2, [2, 1, 4, 5], 4);
    }

    /// The default bodies (the GPU builds' path, burn's slice / cat / slice-assign) against
    /// the Flex kernels, forward and backward, odd sizes included.
    #[test]
    fn shortcut_default_bodies_match_flex() {
        let dev = device();
        let flex = |t: Tensor<4>| FlexTensor::from_data(t.to_data());
        for (k, &shape) in SHAPES.iter().enumerate() {
            for (step, pad) in [(2, 0), (2, 3), (1, 2)] {
                let x = flex(random(shape, 30 + k as u64, &dev));
                let ours = Flex::shortcut_a(x.clone(), step, pad);
                let theirs = contiguous(default_shortcut_a::<Flex>(x, step, pad));
                assert_eq!(dims4(&ours), dims4(&theirs), "{shape:?} {step} {pad}");
                assert_eq!(values(&ours), values(&theirs), "{shape:?} {step} {pad}");
                let dy = flex(random(dims4(&ours), 40 + k as u64, &dev));
                let ours = Flex::shortcut_a_bwd(shape, dy.clone(), step, pad);
                let theirs = contiguous(default_shortcut_a_bwd::<Flex>(shape, dy, step, pad));
                assert_eq!(values(&ours), values(&theirs), "{shape:?} {step} {pad} bwd");
            }
        }
    }

    #[test]
    fn ties_take_the_first_maximum_and_nan_propagates() {
        let dev = train_device();
        let x = crate::nn::float_tensor(
            vec![1.0, 1.0, 1.0, 1.0, f32::NAN, 0.0, 2.0, 3.0],
            [1, 2, 2, 2],
            &dev,
        )
        .require_grad();
        let y = max_pool2d_2x2(x.clone());
        let v = to_vec_f32(y.clone());
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_nan());
        let g = to_vec_f32(x.grad(&y.sum().backward()).expect("grad"));
        assert_eq!(&g[..4], &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(g[4], 1.0);
    }
}
