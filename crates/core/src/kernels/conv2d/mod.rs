//! 2-D convolution (NCHW, dilation 1, any stride / padding / groups) for the vision models, as
//! a burn backend extension with hand-written CPU kernels and a hand-written backward.
//!
//! - `Flex` (the CPU backend), f32: the kernels of [`cpu`] — tiled im2col + GEMM in general,
//!   plain GEMM for 1x1 stride 1, direct loops for depthwise — for the forward and for both
//!   backward passes. burn's `flex` overrides only the forward; its backward passes are
//!   burn-backend's generic compositions, which made a small CNN's training step 2.2-2.6x
//!   PyTorch's. Other dtypes take the reference path.
//! - Any other listed backend (`Cube`: wgpu or CUDA): the trait's default bodies, burn's own
//!   `conv2d`, `conv2d_x_backward`, `conv2d_weight_backward` and a sum over N, H, W for the
//!   bias, so the GPU runs burn's kernels. The same bodies are the test oracle.
//! - `Autodiff<B>`: the forward of `B` and a backward that calls the three gradient ops of
//!   `B`, each only for the operands that need a gradient.
//!
//! A backend missing from the list would panic when called, so the list names every backend
//! ferrolab-core can be built with.

pub(crate) mod cpu;
#[cfg(test)]
mod tests;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

pub(crate) use cpu::Geom;

/// Stride, zero padding and groups of a convolution (dilation is always 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub groups: usize,
}

impl Conv2dSpec {
    /// Stride `s`, padding `p` on both axes, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dSpec {
            stride: [stride, stride],
            padding: [padding, padding],
            groups: 1,
        }
    }

    /// The same with `groups` groups (depthwise: groups = channels).
    pub fn with_groups(self, groups: usize) -> Self {
        Conv2dSpec { groups, ..self }
    }

    /// burn's options for the same convolution.
    pub fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, [1, 1], self.groups)
    }
}

/// Checks the operand shapes of a convolution and derives its output size.
///
/// `x: [N, C, H, W]`, `w: [F, C / groups, kh, kw]`, `bias`: the bias length if any.
pub(crate) fn geometry(
    x: [usize; 4],
    w: [usize; 4],
    bias: Option<usize>,
    spec: Conv2dSpec,
) -> Result<Geom, String> {
    let [n, c, h, wd] = x;
    let [f, cg, kh, kw] = w;
    let [sh, sw] = spec.stride;
    let [ph, pw] = spec.padding;
    let groups = spec.groups;
    if groups == 0 || sh == 0 || sw == 0 {
        return Err(format!("{spec:?}: stride and groups must be positive"));
    }
    if kh == 0 || kw == 0 {
        return Err(format!("empty {kh}x{kw} kernel"));
    }
    if cg * groups != c || f % groups != 0 {
        return Err(format!(
            "input has {c} channels, weight {w:?} with {groups} groups expects {}",
            cg * groups
        ));
    }
    if let Some(len) = bias.filter(|&len| len != f) {
        return Err(format!("bias has {len} values for {f} output channels"));
    }
    if h + 2 * ph < kh || wd + 2 * pw < kw {
        return Err(format!(
            "{kh}x{kw} kernel larger than the padded {}x{} input",
            h + 2 * ph,
            wd + 2 * pw
        ));
    }
    Ok(Geom {
        n,
        c,
        h,
        w: wd,
        f,
        kh,
        kw,
        sh,
        sw,
        ph,
        pw,
        groups,
        oh: (h + 2 * ph - kh) / sh + 1,
        ow: (wd + 2 * pw - kw) / sw + 1,
    })
}

pub(crate) fn dims4(s: &Shape) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
}

/// `x: [N, C, H, W]`, `w: [F, C / groups, kh, kw]`, `b: [F]` → `[N, F, H', W']`,
/// differentiable in all three, on any backend.
///
/// # Panics
/// When the shapes do not fit together (a bug of the calling model, as in burn's `conv2d`).
pub fn conv2d(x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>, spec: Conv2dSpec) -> Tensor<4> {
    if let Err(e) = geometry(x.dims(), w.dims(), b.as_ref().map(|b| b.dims()[0]), spec) {
        panic!("conv2d: {e}");
    }
    let (x, w) = (x.into_dispatch(), w.into_dispatch());
    Tensor::from_dispatch(match b {
        Some(b) => <Dispatch as Conv2dKernels>::conv2d_forward_bias(x, w, b.into_dispatch(), spec),
        None => <Dispatch as Conv2dKernels>::conv2d_forward(x, w, spec),
    })
}

/// `relu(conv2d(x, w, b))` for inference: on the CPU the ReLU is applied to each sample as
/// soon as the convolution has written it (one pass less over the activation). Not
/// differentiable through ferrolab's kernels: on an autodiff device it is the composed
/// [`conv2d`] then ReLU.
///
/// # Panics
/// When the shapes do not fit together (a bug of the calling model).
pub fn conv2d_bias_relu(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, spec: Conv2dSpec) -> Tensor<4> {
    if x.device().is_autodiff() {
        return crate::kernels::pointwise::relu(conv2d(x, w, Some(b), spec));
    }
    if let Err(e) = geometry(x.dims(), w.dims(), Some(b.dims()[0]), spec) {
        panic!("conv2d_bias_relu: {e}");
    }
    Tensor::from_dispatch(<Dispatch as Conv2dKernels>::conv2d_forward_bias_relu(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        spec,
    ))
}

#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait Conv2dKernels: Backend {
    /// The convolution without bias. (The extension macro of burn 0.22.1 does not convert
    /// `Option` tensor arguments, hence two forward ops.)
    fn conv2d_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        spec: Conv2dSpec,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, w, None, spec.options())
    }

    /// The convolution plus a bias per output channel.
    fn conv2d_forward_bias(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        spec: Conv2dSpec,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, w, Some(b), spec.options())
    }

    /// [`conv2d_bias_relu`]: the convolution plus bias, rectified.
    fn conv2d_forward_bias_relu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        spec: Conv2dSpec,
    ) -> FloatTensor<Self> {
        Self::relu(Self::conv2d(x, w, Some(b), spec.options()))
    }

    /// `∂L/∂x` from `dy = ∂L/∂y` (`x` only gives the shape).
    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        spec: Conv2dSpec,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, w, dy, spec.options())
    }

    /// `∂L/∂w` from `dy` (`w` only gives the shape).
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        spec: Conv2dSpec,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, w, dy, spec.options())
    }

    /// `∂L/∂b[f] = Σ_{n,h,w} dy[n, f, h, w]`.
    fn conv2d_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        reference_bias_grad::<Self>(dy)
    }
}

/// The bias gradient from burn primitive ops: channels first, flatten, sum.
pub fn reference_bias_grad<B: Backend>(dy: FloatTensor<B>) -> FloatTensor<B> {
    let [n, f, oh, ow] = dims4(&dy.shape());
    let t = B::float_swap_dims(dy, 0, 1);
    let t = B::float_reshape(t, Shape::new([f, n * oh * ow]));
    B::float_reshape(B::float_sum_dim(t, 1), Shape::new([f]))
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl Conv2dKernels for burn::backend::Cube {}

/// The f32 values of a Flex tensor, contiguous; `None` for other dtypes.
pub(crate) fn f32_tensor(t: FlexTensor) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then(|| t.to_contiguous())
}

pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    // `f32_tensor` made it contiguous f32, for which `as_slice` always succeeds.
    t.as_slice::<f32>().unwrap_or(&[])
}

pub(crate) fn flex_out(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

fn flex_forward(
    x: FlexTensor,
    w: FlexTensor,
    b: Option<FlexTensor>,
    spec: Conv2dSpec,
    relu: bool,
) -> FlexTensor {
    let (xs, ws) = (dims4(&x.shape()), dims4(&w.shape()));
    let b_len = b.as_ref().map(|b| b.shape()[0]);
    let b32 = b.clone().map(f32_tensor);
    let (Ok(g), Some(x32), Some(w32), Some(b32)) = (
        geometry(xs, ws, b_len, spec),
        f32_tensor(x.clone()),
        f32_tensor(w.clone()),
        b32.map_or(Some(None), |b| b.map(Some)),
    ) else {
        let y = Flex::conv2d(x, w, b, spec.options());
        return if relu { Flex::relu(y) } else { y };
    };
    let mut out = crate::kernels::flex_slices::zeroed(g.n * g.f * g.oh * g.ow);
    cpu::forward_act(
        &g,
        slice(&x32),
        slice(&w32),
        b32.as_ref().map(slice),
        relu,
        &mut out,
    );
    flex_out(out, [g.n, g.f, g.oh, g.ow])
}

impl Conv2dKernels for Flex {
    fn conv2d_forward(x: FlexTensor, w: FlexTensor, spec: Conv2dSpec) -> FlexTensor {
        flex_forward(x, w, None, spec, false)
    }

    fn conv2d_forward_bias(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        spec: Conv2dSpec,
    ) -> FlexTensor {
        flex_forward(x, w, Some(b), spec, false)
    }

    fn conv2d_forward_bias_relu(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        spec: Conv2dSpec,
    ) -> FlexTensor {
        flex_forward(x, w, Some(b), spec, true)
    }

    fn conv2d_input_grad(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
        spec: Conv2dSpec,
    ) -> FlexTensor {
        let (xs, ws) = (dims4(&x.shape()), dims4(&w.shape()));
        let (Ok(g), Some(w32), Some(dy32)) = (
            geometry(xs, ws, None, spec),
            f32_tensor(w.clone()),
            f32_tensor(dy.clone()),
        ) else {
            return Self::conv2d_x_backward(x, w, dy, spec.options());
        };
        if x.dtype() != DType::F32 || dims4(&dy.shape()) != [g.n, g.f, g.oh, g.ow] {
            return Self::conv2d_x_backward(x, w, dy, spec.options());
        }
        let mut dx = crate::kernels::flex_slices::zeroed(g.n * g.c * g.h * g.w);
        cpu::input_grad(&g, slice(&w32), slice(&dy32), &mut dx);
        flex_out(dx, xs)
    }

    fn conv2d_weight_grad(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
        spec: Conv2dSpec,
    ) -> FlexTensor {
        let (xs, ws) = (dims4(&x.shape()), dims4(&w.shape()));
        let (Ok(g), Some(x32), Some(dy32)) = (
            geometry(xs, ws, None, spec),
            f32_tensor(x.clone()),
            f32_tensor(dy.clone()),
        ) else {
            return Self::conv2d_weight_backward(x, w, dy, spec.options());
        };
        if w.dtype() != DType::F32 || dims4(&dy.shape()) != [g.n, g.f, g.oh, g.ow] {
            return Self::conv2d_weight_backward(x, w, dy, spec.options());
        }
        flex_out(cpu::weight_grad(&g, slice(&x32), slice(&dy32)), ws)
    }

    fn conv2d_bias_grad(dy: FlexTensor) -> FlexTensor {
        let [n, f, oh, ow] = dims4(&dy.shape());
        match f32_tensor(dy.clone()) {
            Some(dy32) => flex_out(cpu::bias_grad(slice(&dy32), n, f, oh * ow), [f]),
            None => reference_bias_grad::<Self>(dy),
        }
    }
}

/// The backward of [`Conv2dKernels::conv2d_forward`], with or without a bias parent.
#[derive(Debug)]
struct Conv2dBackward;

/// Checkpointed input and weight, and the spec.
type State = (NodeId, NodeId, Conv2dSpec);

fn conv_backward<B: Backend + Conv2dKernels>(
    [x_node, w_node, b_node]: [Option<NodeId>; 3],
    dy: FloatTensor<B>,
    (x_state, w_state, spec): State,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
    let w = checkpointer.retrieve_node_output::<FloatTensor<B>>(w_state);
    if let Some(id) = b_node {
        grads.register::<B>(id, B::conv2d_bias_grad(dy.clone()));
    }
    if let Some(id) = x_node {
        let dx = B::conv2d_input_grad(x.clone(), w.clone(), dy.clone(), spec);
        grads.register::<B>(id, dx);
    }
    if let Some(id) = w_node {
        grads.register::<B>(id, B::conv2d_weight_grad(x, w, dy, spec));
    }
}

impl<B: Backend + Conv2dKernels> Backward<B, 3> for Conv2dBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let ids = ops.parents.map(|p| p.map(|p| p.id));
        conv_backward::<B>(ids, dy, ops.state, grads, checkpointer);
    }
}

impl<B: Backend + Conv2dKernels> Backward<B, 2> for Conv2dBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|p| p.id));
        conv_backward::<B>([x, w, None], dy, ops.state, grads, checkpointer);
    }
}

impl<B: Backend + Conv2dKernels, C: CheckpointStrategy> Conv2dKernels for Autodiff<B, C> {
    fn conv2d_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        spec: Conv2dSpec,
    ) -> FloatTensor<Self> {
        let prep =
            <Conv2dBackward as Backward<B, 2>>::prepare::<C>(Conv2dBackward, [x.node(), w.node()]);
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&w), spec);
                let out = B::conv2d_forward(x.into_primitive(), w.into_primitive(), spec);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv2d_forward(
                x.into_primitive(),
                w.into_primitive(),
                spec,
            )),
        }
    }

    fn conv2d_forward_bias(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        spec: Conv2dSpec,
    ) -> FloatTensor<Self> {
        let prep = <Conv2dBackward as Backward<B, 3>>::prepare::<C>(
            Conv2dBackward,
            [x.node(), w.node(), b.node()],
        );
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&w), spec);
                let out = B::conv2d_forward_bias(
                    x.into_primitive(),
                    w.into_primitive(),
                    b.into_primitive(),
                    spec,
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv2d_forward_bias(
                x.into_primitive(),
                w.into_primitive(),
                b.into_primitive(),
                spec,
            )),
        }
    }
}
