//! Custom kernels: every hand-written hot path of ferrolab, in one place, each beside a
//! reference path built from burn tensor ops (or a naive loop where burn has no such op) that
//! its tests check it against.
//!
//! | kernel | what | reference path |
//! |---|---|---|
//! | [`gemm`] | strided f32 GEMM on slices (the `gemm` crate burn links) | `Tensor::matmul` |
//! | [`spmm`] | CSR sparse × dense, parallel over rows, and its transpose | [`SparseAdj::propagate`](crate::sparse::SparseAdj::propagate) (gather/scatter) |
//! | [`propagate`] | the CSR spmm as a burn backend extension, differentiable | the same gather/scatter, as the extension's default body |
//! | [`conv1d`] | Kim-CNN/SECNN multi-width "same" convolution, forward and backward | [`conv1d::reference`] (burn ops) |
//! | [`conv2d`] | 2-D convolution (any kernel, stride, padding, groups) as a backend extension: Flex forward, input and weight gradient (tiled im2col + GEMM, 1x1 GEMM, depthwise loops) | burn's `conv2d`, `conv2d_x_backward`, `conv2d_weight_backward` (the extension's default bodies) |
//! | [`conv_transpose2d`] | UNet's 2x2 stride-2 transposed convolution as a backend extension: one GEMM + pixel shuffle per sample, and its two gradients | burn's `conv_transpose2d` and its backward ops (the default bodies) |
//! | [`fused`] | the GCN step's row passes: dropout masks, LayerNorm + ReLU, masked cross-entropy | burn's `LayerNorm`, `relu`, `CrossEntropyLoss` |
//! | [`adam`] | dense and lazy (row-sparse) Adam on slices | burn's `Adam` |
//! | [`batchnorm`] | batch norm (train forward/backward, eval) as a backend extension: fused per-channel passes on Flex | burn's `ModuleOps::batch_norm*` (the extension's default bodies) |
//! | [`pointwise`] | ReLU / LeakyReLU / SiLU / exact GELU as a backend extension: one parallel pass each way on Flex, vectorised `exp`/`erf` | burn's `activation::*` (default bodies; GELU's gradient against the exact formula) |
//! | [`pool`] | 2x2 max pooling (1-byte argmax positions), global average pooling, bilinear 2x up-sampling as a backend extension: one parallel pass over the planes each way on Flex | burn's `max_pool2d_with_indices`, `adaptive_avg_pool2d`, `interpolate` and their backward ops (default bodies) |
//! | [`rowwise`] | softmax and LayerNorm over the last dimension with one hand-written backward each (burn's autodiff records them as 5 and 8 ops); forwards are flex's fused row kernels | burn's `activation::softmax`, `module::layer_norm` (default bodies) |
//! | [`hash`] | counter-based SplitMix64, FNV-1a | published test vectors |
//!
//! **How a new custom op is added.** As a burn backend extension, like [`propagate`]:
//! a trait under `#[backend_extension(Flex, Cube: cfg(..), Autodiff)]` whose default body
//! composes burn primitive ops (the GPU path and the test oracle), a hand-written body for
//! `Flex` (the CPU kernel, on slices), and an `Autodiff` implementation that registers a
//! hand-written backward; the public function takes and returns `Tensor`s, so gradients and
//! device dispatch are never lost. A test checks the op's forward and gradient against the
//! reference. Kernels that run a whole training step by hand on slices ([`fused`], [`adam`],
//! and [`conv1d`] inside SECNN's training step) predate this and are called only from a
//! system's training step, never from a public `forward`.

pub mod adam;
pub mod batchnorm;
pub mod conv1d;
pub mod conv2d;
pub mod conv_transpose2d;
#[cfg(test)]
mod determinism;
pub(crate) mod flex_slices;
pub mod fused;
pub mod gemm;
pub mod hash;
pub mod pointwise;
pub mod pool;
pub mod propagate;
pub mod rowwise;
pub mod spmm;
