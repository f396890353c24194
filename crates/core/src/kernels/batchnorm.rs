//! Batch normalisation over `[N, C, H, W]` (statistics per channel over N, H, W).
//!
//! PLACEHOLDER ENTRY POINT: the public signatures below are the contract the vision layers
//! call; the bodies compose burn ops until the backend extension with fused Flex kernels
//! (one pass for the statistics, one for the normalisation, a fused backward) replaces them.

use burn::prelude::*;

/// Training-mode batch norm: normalises with the batch's own mean and biased variance.
/// Returns `(y, mean, var)` where `mean`/`var: [C]` are the batch statistics (detached; the
/// caller folds them into running averages, with the unbiased variance if it wants PyTorch's
/// convention).
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let [_, c, _, _] = x.dims();
    let mean = x.clone().mean_dims(&[0, 2, 3]);
    let centered = x - mean.clone();
    let var = centered.clone().square().mean_dims(&[0, 2, 3]);
    let y = centered / (var.clone() + eps).sqrt();
    let y = y * gamma.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1]);
    (y, mean.reshape([c]).detach(), var.reshape([c]).detach())
}

/// Evaluation-mode batch norm with fixed statistics `mean`, `var: [C]`.
pub fn batch_norm_eval(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    eps: f64,
) -> Tensor<4> {
    let [_, c, _, _] = x.dims();
    let scale = gamma / (var + eps).sqrt();
    let shift = beta - mean * scale.clone();
    x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
}
