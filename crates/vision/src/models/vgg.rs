//! A small VGG-style CNN: Simonyan & Zisserman, "Very Deep Convolutional Networks for
//! Large-Scale Image Recognition", ICLR 2015, with batch norm after every convolution
//! (Ioffe & Szegedy, 2015) as torchvision's `vgg*_bn`.
//!
//! Three stages of two 3×3 conv-BN-ReLU layers (32, 64, 128 filters), each followed by a 2×2
//! max pool, then global average pooling and a linear classifier (in place of VGG's three
//! 4096-wide layers, which would dominate a 28×28 or 32×32 model).
//!
//! Shapes: `[N, C, H, W]` with H, W ≥ 8 (28×28 → 14 → 7 → 3) → logits `[N, classes]`.

use crate::layers::{Conv2dConfig, ConvBn, global_avg_pool, max_pool2d};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// Filters per stage; each stage is two convolutions and a pool.
const STAGES: [usize; 3] = [32, 64, 128];

/// Small VGG-style classifier (see the module documentation).
#[derive(Module, Debug)]
pub struct Vgg {
    /// `2 × STAGES.len()` conv-BN layers, a max pool after every second one.
    convs: Vec<ConvBn>,
    fc: Linear,
}

impl Vgg {
    pub fn new(in_channels: usize, classes: usize, device: &Device) -> Vgg {
        let mut convs = Vec::with_capacity(2 * STAGES.len());
        let mut cin = in_channels;
        for &width in &STAGES {
            for _ in 0..2 {
                convs.push(ConvBn::new(Conv2dConfig::new(cin, width, 3), device));
                cin = width;
            }
        }
        Vgg {
            convs,
            fc: LinearConfig::new(cin, classes).init(device),
        }
    }

    /// Pooled features `[N, 128]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for pair in self.convs.chunks(2) {
            for layer in pair {
                x = layer.forward_relu(x);
            }
            x = max_pool2d(x, 2, 2);
        }
        global_avg_pool(x)
    }

    /// Logits `[N, classes]` for `x: [N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testutil::{checkpoint_roundtrip, max_abs_diff};
    use burn::tensor::Distribution;
    use ferrolab_core::backend::{device, exclusive_rng, train_device};
    use ferrolab_core::nn::gradcheck::check_input_gradient;

    #[test]
    fn shapes() {
        let _rng = exclusive_rng();
        let dev = device();
        let net = Vgg::new(1, 10, &dev);
        let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Default, &dev);
        assert_eq!(net.forward(x).dims(), [3, 10]);
        let net = Vgg::new(3, 7, &dev);
        let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &dev);
        assert_eq!(net.forward(x).dims(), [1, 7]);
        // Smallest input: three pools of 8×8.
        let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Default, &dev);
        assert_eq!(net.forward(x).dims(), [2, 7]);
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(21);
        let net = Vgg::new(1, 3, &dev);
        let x = Tensor::<4>::random([4, 1, 8, 8], Distribution::Default, &dev);
        let _ = net.forward(x);
        // Running statistics, for the reason given in `mobilenet`'s gradient test.
        let net = net.freeze();
        check_input_gradient(|x: Tensor<4>| net.forward(x), [2, 1, 8, 8], 22);
    }

    #[test]
    fn checkpoint_roundtrip_gives_identical_outputs() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(23);
        let net = Vgg::new(2, 4, &dev);
        let x = Tensor::<4>::random([4, 2, 12, 12], Distribution::Normal(0.5, 2.0), &dev);
        let _ = net.forward(x);
        let fresh = Vgg::new(2, 4, &dev);
        let x = Tensor::<4>::random([2, 2, 12, 12], Distribution::Default, &device());
        let before = fresh.valid().forward(x.clone());
        let loaded = checkpoint_roundtrip(&net, fresh, "vgg");
        let want = net.valid().forward(x.clone());
        assert!(max_abs_diff(before, want.clone()) > 1e-3);
        assert_eq!(max_abs_diff(loaded.valid().forward(x), want), 0.0);
    }
}
