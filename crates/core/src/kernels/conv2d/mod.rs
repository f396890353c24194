//! 2-D convolution (NCHW, dilation 1, any stride / padding / groups) for the vision models.
//!
//! PLACEHOLDER ENTRY POINT: the public signature below is the contract the models in
//! `ferrolab-vision` call; the body delegates to burn's `conv2d` until the backend extension
//! with the hand-written Flex kernels (forward, input backward, weight backward) replaces it.

use burn::prelude::*;
use burn::tensor::module;
use burn::tensor::ops::ConvOptions;

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
}

/// `x: [N, C, H, W]`, `w: [F, C / groups, kh, kw]`, `b: [F]` → `[N, F, H', W']`,
/// differentiable in all three, on any backend.
pub fn conv2d(x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>, spec: Conv2dSpec) -> Tensor<4> {
    module::conv2d(
        x,
        w,
        b,
        ConvOptions::new(spec.stride, spec.padding, [1, 1], spec.groups),
    )
}
