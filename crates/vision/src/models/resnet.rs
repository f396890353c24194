//! ResNet for CIFAR-sized images: He, Zhang, Ren & Sun, "Deep Residual Learning for Image
//! Recognition", CVPR 2016, §4.2.
//!
//! Depth `6n + 2` (ResNet-20: n = 3, ResNet-32: n = 5): a 3×3 convolution with 16 filters,
//! then three stages of `n` basic blocks (two 3×3 conv-BN layers and a shortcut) with 16, 32
//! and 64 filters at 1×, ½× and ¼× the input resolution (the first block of stages 2 and 3
//! has stride 2), global average pooling and a fully connected layer.
//!
//! Shapes: `[N, C, H, W]` (CIFAR 32×32×3, Fashion-MNIST 28×28×1) → logits `[N, classes]`.
//!
//! Shortcuts where the shape changes: option A by default, as the paper uses on CIFAR and as
//! the widely used PyTorch reference (akamaster/pytorch_resnet_cifar10) implements it — the
//! identity subsampled by 2 (`x[:, :, ::2, ::2]`) and zero-padded with `planes/4` channels on
//! each side, so ResNet-20 has exactly the paper's 0.27M parameters (269,722 for 3 input
//! channels and 10 classes). Option B (1×1 convolution with stride 2 + batch norm) is
//! available through [`ResNet::with_shortcut`].

use crate::layers::{Conv2dConfig, ConvBn, add_relu, global_avg_pool, shortcut_a};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// How a block's shortcut matches a change of resolution and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// Parameter-free: subsample by 2 and zero-pad the new channels.
    A,
    /// Projection: 1×1 convolution with stride 2, then batch norm.
    B,
}

/// Basic residual block: `relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    /// Option-B projection, when the shape changes.
    projection: Option<ConvBn>,
    /// Option A: channels of zeros added on each side of the (subsampled) identity.
    pad_channels: usize,
    stride: usize,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, shortcut: Shortcut, device: &Device) -> Self {
        let changes = stride != 1 || cin != cout;
        let projection = (changes && shortcut == Shortcut::B)
            .then(|| ConvBn::new(Conv2dConfig::new(cin, cout, 1).with_stride(stride), device));
        BasicBlock {
            conv1: ConvBn::new(Conv2dConfig::new(cin, cout, 3).with_stride(stride), device),
            conv2: ConvBn::new(Conv2dConfig::new(cout, cout, 3), device),
            projection,
            pad_channels: if changes && shortcut == Shortcut::A {
                (cout - cin) / 2
            } else {
                0
            },
            stride,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv1.forward_relu(x.clone());
        let y = self.conv2.forward(y);
        let identity = match &self.projection {
            Some(p) => p.forward(x),
            None => shortcut_a(x, self.stride, self.pad_channels),
        };
        add_relu(y, identity)
    }
}

/// CIFAR-style ResNet (see the module documentation).
#[derive(Module, Debug)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

/// Stage widths of the CIFAR ResNets.
const WIDTHS: [usize; 3] = [16, 32, 64];

impl ResNet {
    /// ResNet-`depth` with option-A shortcuts; `depth` must be `6n + 2` (20, 32, 44, 56, 110…).
    pub fn new(
        depth: usize,
        in_channels: usize,
        classes: usize,
        device: &Device,
    ) -> Result<ResNet, String> {
        Self::with_shortcut(depth, in_channels, classes, Shortcut::A, device)
    }

    /// As [`new`](Self::new) with the shortcut option chosen.
    pub fn with_shortcut(
        depth: usize,
        in_channels: usize,
        classes: usize,
        shortcut: Shortcut,
        device: &Device,
    ) -> Result<ResNet, String> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(format!(
                "resnet depth {depth}: expected 6n+2 with n ≥ 1 (20, 32, 44, 56, 110)"
            ));
        }
        if in_channels == 0 || classes == 0 {
            return Err(format!(
                "resnet: in_channels ({in_channels}) and classes ({classes}) must be positive"
            ));
        }
        let n = (depth - 2) / 6;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut cin = WIDTHS[0];
        for (stage, &cout) in WIDTHS.iter().enumerate() {
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(cin, cout, stride, shortcut, device));
                cin = cout;
            }
        }
        Ok(ResNet {
            stem: ConvBn::new(Conv2dConfig::new(in_channels, WIDTHS[0], 3), device),
            blocks,
            fc: LinearConfig::new(WIDTHS[2], classes).init(device),
        })
    }

    /// Pooled features `[N, 64]` (the input of the final layer).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.stem.forward_relu(x);
        let x = self.blocks.iter().fold(x, |x, b| b.forward(x));
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
    fn shapes_parameter_count_and_bad_depth() {
        let _rng = exclusive_rng();
        let dev = device();
        let net = ResNet::new(20, 3, 10, &dev).unwrap();
        // The paper's 0.27M (Table 6): convolutions, batch-norm affine and the classifier,
        // 269,722 trainable; burn also counts the 688 channels' running mean and variance.
        assert_eq!(net.num_params(), 269_722 + 2 * 688);
        assert_eq!(net.blocks.len(), 9);
        let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &dev);
        assert_eq!(net.forward(x).dims(), [2, 10]);
        let net32 = ResNet::new(32, 1, 10, &dev).unwrap();
        assert_eq!(net32.blocks.len(), 15);
        // Odd sizes and batch 1: 28 → 14 → 7.
        let x = Tensor::<4>::random([1, 1, 28, 28], Distribution::Default, &dev);
        assert_eq!(net32.forward(x).dims(), [1, 10]);
        let b = ResNet::with_shortcut(20, 3, 10, Shortcut::B, &dev).unwrap();
        // Two projections: 16·32 + 4·32 and 32·64 + 4·64 more (γ, β and running statistics).
        assert_eq!(b.num_params(), 269_722 + 2 * 688 + 640 + 2304);
        for bad in [0, 7, 19, 21] {
            assert!(ResNet::new(bad, 3, 10, &dev).is_err(), "{bad}");
        }
        assert!(ResNet::new(20, 0, 10, &dev).is_err());
    }

    #[test]
    fn option_a_shortcut_pads_the_subsampled_identity() {
        let _rng = exclusive_rng();
        let dev = device();
        let block = BasicBlock::new(4, 8, 2, Shortcut::A, &dev);
        assert_eq!(block.pad_channels, 2);
        let x = Tensor::<4>::random([1, 4, 5, 5], Distribution::Default, &dev);
        assert_eq!(block.forward(x).dims(), [1, 8, 3, 3]);
    }

    /// With batch statistics, so that batch norm's training gradient is checked inside a whole
    /// network once (the other models check theirs on running statistics; 16 seeds of this
    /// one passed, 8 per shortcut option).
    #[test]
    fn input_gradient_matches_finite_differences() {
        let _rng = exclusive_rng();
        let dev = train_device();
        for (seed, shortcut) in [(1, Shortcut::A), (2, Shortcut::B)] {
            dev.seed(seed);
            let net = ResNet::with_shortcut(8, 2, 3, shortcut, &dev).unwrap();
            check_input_gradient(|x: Tensor<4>| net.forward(x), [2, 2, 6, 5], 10 + seed);
        }
    }

    #[test]
    fn checkpoint_roundtrip_gives_identical_outputs() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(4);
        let net = ResNet::new(8, 1, 4, &dev).unwrap();
        // A few training-mode passes move the running statistics away from their init.
        for _ in 0..3 {
            let x = Tensor::<4>::random([4, 1, 8, 8], Distribution::Normal(1.0, 2.0), &dev);
            let _ = net.forward(x);
        }
        let fresh = ResNet::new(8, 1, 4, &dev).unwrap();
        let x = Tensor::<4>::random([2, 1, 8, 8], Distribution::Default, &device());
        let before = fresh.valid().forward(x.clone());
        // Saved straight after the training passes: the last step's statistics must be in it.
        let loaded = checkpoint_roundtrip(&net, fresh, "resnet");
        let want = net.valid().forward(x.clone());
        assert!(max_abs_diff(before, want.clone()) > 1e-3);
        assert_eq!(max_abs_diff(loaded.valid().forward(x), want), 0.0);
    }
}
