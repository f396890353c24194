//! Squeeze-and-excitation channel attention (Hu et al., CVPR 2018):
//! `s = σ(W₂ · ReLU(W₁ · mean_L(x)))`, `y = x ⊙ s`, with `W₁: C → C/r`, `W₂: C/r → C`.
//! SECNN applies it to stacked 1-D convolution maps; the 2-D form serves image models.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

/// Configuration of a [`SqueezeExcitation`] block.
#[derive(Config, Debug)]
pub struct SqueezeExcitationConfig {
    /// Channels C.
    pub channels: usize,
    /// Reduction ratio r (the bottleneck has `max(1, C / r)` units).
    #[config(default = 16)]
    pub reduction: usize,
}

/// Channel attention by squeeze (global average pool) and excitation (bottleneck MLP + sigmoid).
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    fc1: Linear,
    fc2: Linear,
}

impl SqueezeExcitationConfig {
    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> SqueezeExcitation {
        let hidden = (self.channels / self.reduction.max(1)).max(1);
        SqueezeExcitation {
            fc1: LinearConfig::new(self.channels, hidden).init(device),
            fc2: LinearConfig::new(hidden, self.channels).init(device),
        }
    }
}

impl SqueezeExcitation {
    /// Channel weights `[batch, C]` in (0, 1) for `x: [batch, C, L]`.
    pub fn weights(&self, x: &Tensor<3>) -> Tensor<2> {
        let squeezed = x.clone().mean_dim(2).squeeze_dim::<2>(2);
        sigmoid(self.fc2.forward(relu(self.fc1.forward(squeezed))))
    }

    /// `[batch, C, L] → [batch, C, L]`: each channel rescaled by its weight.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let s = self.weights(&x).unsqueeze_dim::<3>(2);
        x * s
    }

    /// Like [`forward`](Self::forward) for padded sequences: the squeeze averages only the
    /// valid positions (`mask: [batch, L]`, 1 = valid, 0 = padding), so a sentence's channel
    /// weights do not depend on how much padding its batch needed.
    pub fn forward_masked(&self, x: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let s = self.weights_masked(&x, mask);
        x * s.unsqueeze_dim::<3>(2)
    }

    /// Channel weights `[batch, C]` with the squeeze averaged over valid positions only.
    pub fn weights_masked(&self, x: &Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
        let m = mask.unsqueeze_dim::<3>(1); // [b, 1, L]
        let len = m.clone().sum_dim(2).clamp_min(1.0); // [b, 1, 1]
        let squeezed = (x.clone() * m).sum_dim(2).div(len).squeeze_dim::<2>(2);
        sigmoid(self.fc2.forward(relu(self.fc1.forward(squeezed))))
    }

    /// `[batch, C, H, W] → [batch, C, H, W]`.
    pub fn forward_2d(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        self.forward(x.reshape([b, c, h * w])).reshape([b, c, h, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Tests that seed hold `exclusive_rng`: other tests draw from the same process-global generator.
    use crate::backend::{exclusive_rng, train_device};
    use crate::nn::gradcheck::check_input_gradient;

    #[test]
    fn shape_and_weights_in_unit_interval() {
        let _rng = crate::backend::exclusive_rng();
        let dev = train_device();
        let se = SqueezeExcitationConfig::new(8).with_reduction(4).init(&dev);
        let x = Tensor::<3>::random([2, 8, 5], burn::tensor::Distribution::Default, &dev);
        assert_eq!(se.forward(x.clone()).dims(), [2, 8, 5]);
        let w = crate::nn::to_vec_f32(se.weights(&x));
        assert_eq!(w.len(), 16);
        assert!(w.iter().all(|&v| v > 0.0 && v < 1.0));
        let y = se.forward_2d(Tensor::<4>::zeros([2, 8, 3, 3], &dev));
        assert_eq!(y.dims(), [2, 8, 3, 3]);
    }

    #[test]
    fn masked_squeeze_ignores_padding() {
        let _rng = crate::backend::exclusive_rng();
        let dev = train_device();
        let se = SqueezeExcitationConfig::new(4).with_reduction(2).init(&dev);
        let x = Tensor::<3>::random([1, 4, 3], burn::tensor::Distribution::Default, &dev);
        let full = se.forward(x.clone());
        // Same sequence with two padded positions appended: valid outputs must not change.
        let padded = Tensor::cat(vec![x, Tensor::<3>::ones([1, 4, 2], &dev)], 2);
        let mask = crate::nn::float_tensor(vec![1., 1., 1., 0., 0.], [1, 5], &dev);
        let y = se.forward_masked(padded, mask).slice([0..1, 0..4, 0..3]);
        let d = crate::nn::to_vec_f32((y - full).abs().max())[0];
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(2);
        let se = SqueezeExcitationConfig::new(6).with_reduction(2).init(&dev);
        check_input_gradient(|x: Tensor<3>| se.forward(x), [2, 6, 4], 12);
    }
}
