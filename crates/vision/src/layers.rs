//! The convolutional building blocks of every vision model, as burn `Module`s.
//!
//! Convolution and batch norm call `ferrolab_core::kernels` (ferrolab's CPU kernels on
//! `flex`, burn's ops on a GPU build); pooling, up-sampling, concatenation and activations go
//! through the small functions at the end of this file, so that switching one of them to a
//! faster kernel is a one-line change that every model picks up.
//!
//! Initialisation follows PyTorch's defaults (Kaiming-uniform with `a = √5`, i.e. weights and
//! biases uniform in `±1/√fan_in`; batch norm γ = 1, β = 0, running mean 0, var 1) so that
//! PyTorch training recipes carry over unchanged.

use burn::module::{Flag, Param, RunningState};
use burn::nn::Initializer;
use burn::prelude::*;
use burn::tensor::module as ops;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, MaxPoolOptions};
use ferrolab_core::kernels::batchnorm::{batch_norm_eval, batch_norm_train};
use ferrolab_core::kernels::conv2d::{self as conv_kernels, Conv2dSpec};
use ferrolab_core::kernels::{pointwise, pool};

/// PyTorch's default `kaiming_uniform_(a=√5)`: gain √(2/(1+5)) = 1/√3, so the bound
/// gain·√(3/fan_in) is 1/√fan_in, for weights and biases alike.
fn torch_default_init() -> Initializer {
    Initializer::KaimingUniform {
        gain: 1.0 / 3f64.sqrt(),
        fan_out_only: false,
    }
}

/// Configuration of a [`Conv2d`]: square kernel, dilation 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Zero padding on every side. [`Conv2dConfig::new`] sets `kernel / 2` ("same": for an odd
    /// kernel the output is `ceil(H / stride)`, PyTorch's `padding=k//2` convention).
    pub padding: usize,
    /// Groups; `groups == in_channels == out_channels` is a depthwise convolution.
    pub groups: usize,
    pub bias: bool,
}

impl Conv2dConfig {
    /// `kernel × kernel`, stride 1, "same" padding, one group, with bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            groups: 1,
            bias: true,
        }
    }

    /// Depthwise `kernel × kernel` over `channels` channels, "same" padding, no bias (it is
    /// always followed by batch norm in the models here).
    pub fn depthwise(channels: usize, kernel: usize) -> Self {
        Conv2dConfig {
            groups: channels,
            bias: false,
            ..Conv2dConfig::new(channels, channels, kernel)
        }
    }

    pub fn with_stride(self, stride: usize) -> Self {
        Conv2dConfig { stride, ..self }
    }

    pub fn with_padding(self, padding: usize) -> Self {
        Conv2dConfig { padding, ..self }
    }

    pub fn with_groups(self, groups: usize) -> Self {
        Conv2dConfig { groups, ..self }
    }

    pub fn with_bias(self, bias: bool) -> Self {
        Conv2dConfig { bias, ..self }
    }

    /// Why this configuration cannot be built, if it cannot: model constructors call this on
    /// shapes derived from user settings before building anything.
    pub fn check(&self) -> Result<(), String> {
        let c = self;
        if c.in_channels == 0 || c.out_channels == 0 || c.kernel == 0 || c.stride == 0 {
            return Err(format!(
                "conv {}→{} kernel {} stride {}: channels, kernel and stride must be positive",
                c.in_channels, c.out_channels, c.kernel, c.stride
            ));
        }
        if c.groups == 0
            || !c.in_channels.is_multiple_of(c.groups)
            || !c.out_channels.is_multiple_of(c.groups)
        {
            return Err(format!(
                "conv {}→{}: {} groups do not divide both channel counts",
                c.in_channels, c.out_channels, c.groups
            ));
        }
        Ok(())
    }

    /// Builds the layer with PyTorch's default initialisation. The configuration must pass
    /// [`check`](Self::check) (burn panics on the first forward otherwise).
    pub fn init(&self, device: &Device) -> Conv2d {
        let groups = self.groups.max(1);
        let cin = self.in_channels / groups;
        let fan_in = cin * self.kernel * self.kernel;
        let fan_out = self.out_channels / groups * self.kernel * self.kernel;
        let shape = [self.out_channels, cin, self.kernel, self.kernel];
        let init = torch_default_init();
        let weight = init.init_with(shape, Some(fan_in), Some(fan_out), device);
        let bias = self
            .bias
            .then(|| init.init_with([self.out_channels], Some(fan_in), Some(fan_out), device));
        Conv2d {
            weight,
            bias,
            spec: Conv2dSpec::new(self.stride, self.padding).with_groups(groups),
        }
    }
}

/// 2-D convolution `[N, C, H, W] → [N, F, H', W']` through `core::kernels::conv2d`.
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[F, C / groups, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[F]`.
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub spec: Conv2dSpec,
}

impl Conv2d {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_kernels::conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            self.spec,
        )
    }

    /// Output channels F.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// Batch normalisation over `[N, C, H, W]` (statistics per channel), PyTorch's conventions:
/// ε = 1e-5, momentum 0.1, running variance updated with the *unbiased* batch variance.
///
/// Train or eval is decided as burn-nn 0.22's `BatchNorm` decides: batch statistics (and a
/// running-average update) when the input lives on an autodiff device *and* the layer's
/// `training` flag is on; the running statistics otherwise. So the inference device gives
/// eval mode, and a subtree frozen in place on the training device (flag off) neither
/// recomputes statistics nor changes them.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    /// γ `[C]`.
    pub gamma: Param<Tensor<1>>,
    /// β `[C]`.
    pub beta: Param<Tensor<1>>,
    pub training: Param<Flag>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub momentum: f64,
    pub epsilon: f64,
}

impl BatchNorm2d {
    /// `channels` channels, PyTorch's defaults.
    pub fn new(channels: usize, device: &Device) -> Self {
        BatchNorm2d {
            gamma: Initializer::Ones.init([channels], device),
            beta: Initializer::Zeros.init([channels], device),
            training: Param::from_bool(true),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if x.device().is_autodiff() && self.training.is_enabled() {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    fn forward_eval(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        batch_norm_eval(
            x,
            self.gamma.val(),
            self.beta.val(),
            self.running_mean.value_sync().to_device(&device),
            self.running_var.value_sync().to_device(&device),
            self.epsilon,
        )
    }

    fn forward_train(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let [n, _, h, w] = x.dims();
        let count = n * h * w;
        let (y, mean, var) = batch_norm_train(x, self.gamma.val(), self.beta.val(), self.epsilon);
        // Bessel's correction as PyTorch applies it; one value per channel has no spread to
        // correct, so its (zero) variance is kept as is rather than divided by zero.
        let unbias = if count > 1 {
            count as f64 / (count - 1) as f64
        } else {
            1.0
        };
        let m = self.momentum;
        let running_mean = self.running_mean.value_sync().to_device(&device);
        let running_var = self.running_var.value_sync().to_device(&device);
        let running_mean = running_mean.mul_scalar(1.0 - m) + mean.detach().mul_scalar(m);
        let running_var = running_var.mul_scalar(1.0 - m) + var.detach().mul_scalar(m * unbias);
        self.running_mean.update(running_mean.detach());
        self.running_var.update(running_var.detach());
        // burn parks an update until the next read on this thread, and a checkpoint reads the
        // parked-behind value: fold it in now so a model saved right after a training step
        // saves that step's statistics (an O(C) op).
        let _ = self.running_mean.value_sync();
        let _ = self.running_var.value_sync();
        y
    }
}

/// Transposed convolution with kernel 2 and stride 2 (`[N, C, H, W] → [N, F, 2H, 2W]`), the
/// UNet up-sampling of the reference implementations (`nn.ConvTranspose2d(c, f, 2, 2)`).
#[derive(Module, Debug)]
pub struct ConvTranspose2x2 {
    /// `[C, F, 2, 2]` (PyTorch's layout for transposed convolutions).
    pub weight: Param<Tensor<4>>,
    /// `[F]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl ConvTranspose2x2 {
    /// PyTorch's default initialisation: its fan-in of a transposed convolution is computed
    /// from the weight's second axis, i.e. `F · 2 · 2`.
    pub fn new(in_channels: usize, out_channels: usize, bias: bool, device: &Device) -> Self {
        let fan_in = out_channels * 4;
        let fan_out = in_channels * 4;
        let init = torch_default_init();
        ConvTranspose2x2 {
            weight: init.init_with(
                [in_channels, out_channels, 2, 2],
                Some(fan_in),
                Some(fan_out),
                device,
            ),
            bias: bias.then(|| init.init_with([out_channels], Some(fan_in), Some(fan_out), device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        ferrolab_core::kernels::conv_transpose2d::conv_transpose2d_2x2(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
        )
    }
}

/// Conv → batch norm, the unit every CNN here is made of (each model applies its own
/// activation after it). The convolution has no bias: batch norm's β replaces it.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvBn {
    /// `cfg`'s bias is turned off.
    pub fn new(cfg: Conv2dConfig, device: &Device) -> Self {
        ConvBn {
            conv: cfg.with_bias(false).init(device),
            bn: BatchNorm2d::new(cfg.out_channels, device),
        }
    }

    /// Conv and batch norm, no activation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self.folded(&x) {
            Some((w, b)) => conv_kernels::conv2d(x, w, Some(b), self.conv.spec),
            None => self.bn.forward(self.conv.forward(x)),
        }
    }

    /// `relu(self.forward(x))`; at inference one pass (see [`Self::folded`]).
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        match self.folded(&x) {
            Some((w, b)) => conv_kernels::conv2d_bias_relu(x, w, b, self.conv.spec),
            None => relu(self.bn.forward(self.conv.forward(x))),
        }
    }

    /// At inference (batch norm on its running statistics, no autodiff graph): the
    /// convolution with batch norm folded in, `w' = w·s`, `b' = β + (b − μ)·s` with
    /// `s = γ/√(σ² + ε)` per output channel, so that the normalisation rides on the
    /// convolution's bias and a following ReLU on its output pass (batch norm and ReLU were
    /// two more passes over each activation: ~10 % of ResNet-20's inference). `None` when
    /// batch norm uses batch statistics or a gradient may be needed.
    fn folded(&self, x: &Tensor<4>) -> Option<(Tensor<4>, Tensor<1>)> {
        if x.device().is_autodiff() {
            return None;
        }
        let device = x.device();
        let bn = &self.bn;
        let mean = bn.running_mean.value_sync().to_device(&device);
        let var = bn.running_var.value_sync().to_device(&device);
        let scale = bn.gamma.val() / (var + bn.epsilon).sqrt();
        let f = scale.dims()[0];
        let w = self.conv.weight.val() * scale.clone().reshape([f, 1, 1, 1]);
        let shift = match &self.conv.bias {
            Some(b) => b.val() - mean,
            None => mean.neg(),
        };
        Some((w, bn.beta.val() + shift * scale))
    }
}

// ---- functional ops: the one place each is bound to an implementation ----

/// Max pooling with a square window, no padding (PyTorch's `nn.MaxPool2d(k, s)`).
pub fn max_pool2d(x: Tensor<4>, kernel: usize, stride: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if kernel == 2 && stride == 2 && h >= 2 && w >= 2 {
        return pool::max_pool2d_2x2(x);
    }
    ops::max_pool2d(
        x,
        MaxPoolOptions::new([kernel, kernel]).with_stride([stride, stride]),
    )
}

/// Max pooling whose window may run past the bottom/right edge (padding there counts as −∞):
/// darknet's `maxpool size=2 stride=1`, which keeps the spatial size.
pub fn max_pool2d_pad_end(x: Tensor<4>, kernel: usize, stride: usize, pad: usize) -> Tensor<4> {
    ops::max_pool2d(
        x,
        MaxPoolOptions::new([kernel, kernel])
            .with_stride([stride, stride])
            .with_padding_pairs([(0, pad), (0, pad)]),
    )
}

/// Average pooling with a square window, no padding.
pub fn avg_pool2d(x: Tensor<4>, kernel: usize, stride: usize) -> Tensor<4> {
    ops::avg_pool2d(
        x,
        burn::tensor::ops::AvgPoolOptions::new([kernel, kernel]).with_stride([stride, stride]),
    )
}

/// Global average pooling `[N, C, H, W] → [N, C]`.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    pool::global_avg_pool(x).reshape([n, c])
}

/// ResNet's option-A shortcut: the identity, subsampled (`x[:, :, ::2, ::2]`) when `stride`
/// is 2, with `pad` channels of zeros on each side — one pass (see `pool::shortcut_a`).
///
/// # Panics
/// When `stride` is not 1 or 2 (a bug of the model).
pub fn shortcut_a(x: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    pool::shortcut_a(x, stride, pad)
}

/// Nearest-neighbour up-sampling by 2 (`nn.Upsample(scale_factor=2)`, darknet's `upsample`).
pub fn upsample_nearest2x(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    ops::interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
    )
}

/// Bilinear up-sampling by 2; `align_corners` as PyTorch's flag (the UNet reference uses true).
pub fn upsample_bilinear2x(x: Tensor<4>, align_corners: bool) -> Tensor<4> {
    pool::upsample_bilinear2x(x, align_corners)
}

/// Concatenation along the channel axis.
pub fn concat_channels(xs: Vec<Tensor<4>>) -> Tensor<4> {
    Tensor::cat(xs, 1)
}

/// `layer`'s dropout as burn-nn's `Dropout::forward` decides it (only on an autodiff device
/// with the layer's training flag on), through [`crate::dropout`]: one pass each way, no
/// stored mask.
pub fn dropout<const D: usize>(layer: &burn::nn::Dropout, x: Tensor<D>) -> Tensor<D> {
    if !layer.training.is_enabled() || !x.device().is_autodiff() {
        return x;
    }
    crate::dropout::dropout(x, layer.prob)
}

pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    pointwise::relu(x)
}

/// `relu(a + b)` in one pass: a residual block's sum and activation.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    pointwise::add_relu(a, b)
}

pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    pointwise::leaky_relu(x, slope)
}

pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    pointwise::silu(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig as BurnConv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    use burn::tensor::Distribution;
    use ferrolab_core::backend::{device, exclusive_rng, train_device};
    use ferrolab_core::nn::to_vec_f32;

    /// Largest |a − b| / (1 + |b|): relative for large values, absolute near zero.
    fn rel_err<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let (a, b) = (to_vec_f32(a), to_vec_f32(b));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    fn normal<const D: usize>(shape: [usize; D], dev: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), dev)
    }

    /// Ours and burn-nn's convolution with the same weights: forward, input gradient and both
    /// parameter gradients agree, over strides, paddings, groups (depthwise), odd sizes, batch 1.
    #[test]
    fn conv2d_matches_burn_nn() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(7);
        let cases = [
            // (n, cin, cout, k, stride, groups, h, w)
            (2, 3, 5, 3, 1, 1, 9, 7),
            (1, 4, 6, 3, 2, 1, 11, 8),
            (3, 6, 6, 3, 1, 6, 5, 5),
            (2, 8, 8, 3, 2, 8, 7, 10),
            (1, 5, 7, 1, 1, 1, 6, 6),
            (2, 4, 4, 1, 2, 1, 9, 5),
            (2, 4, 6, 3, 1, 2, 6, 9),
        ];
        for (n, cin, cout, k, s, g, h, w) in cases {
            let ours = Conv2dConfig::new(cin, cout, k)
                .with_stride(s)
                .with_groups(g)
                .init(&dev);
            let mut theirs = BurnConv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_groups(g)
                .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                .init(&dev);
            theirs.weight = Param::from_tensor(ours.weight.val().detach());
            theirs.bias = ours
                .bias
                .as_ref()
                .map(|b| Param::from_tensor(b.val().detach()));

            let x = normal([n, cin, h, w], &dev);
            let (xa, xb) = (x.clone().require_grad(), x.require_grad());
            let ya = ours.forward(xa.clone());
            let yb = theirs.forward(xb.clone());
            assert_eq!(ya.dims(), yb.dims());
            let r = normal(ya.dims(), &dev);
            let ga = (ya.clone() * r.clone()).sum().backward();
            let gb = (yb.clone() * r).sum().backward();
            let case = format!("{:?}", (n, cin, cout, k, s, g, h, w));
            assert!(rel_err(ya, yb) < 1e-4, "forward {case}");
            let grad = |t: &Tensor<4>, g| t.grad(g).expect("input gradient");
            assert!(rel_err(grad(&xa, &ga), grad(&xb, &gb)) < 1e-4, "dx {case}");
            let dwa = ours.weight.val().grad(&ga).expect("weight gradient");
            let dwb = theirs.weight.val().grad(&gb).expect("weight gradient");
            assert!(rel_err(dwa, dwb) < 1e-4, "dw {case}");
            let dba = ours.bias.as_ref().and_then(|b| b.val().grad(&ga));
            let dbb = theirs.bias.as_ref().and_then(|b| b.val().grad(&gb));
            assert!(
                rel_err(dba.expect("db"), dbb.expect("db")) < 1e-4,
                "db {case}"
            );
        }
    }

    /// PyTorch's default bound 1/√fan_in, for weights and biases.
    #[test]
    fn conv2d_init_is_pytorch_default() {
        let _rng = exclusive_rng();
        let dev = device();
        dev.seed(3);
        let conv = Conv2dConfig::new(16, 32, 3).init(&dev);
        let bound = 1.0 / ((16 * 9) as f32).sqrt();
        let w = to_vec_f32(conv.weight.val());
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= bound && max > 0.9 * bound, "{max} vs {bound}");
        // Uniform(−b, b) has standard deviation b/√3.
        let sd = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((sd - bound / 3f32.sqrt()).abs() < 0.05 * bound, "{sd}");
        let b = to_vec_f32(conv.bias.as_ref().expect("bias").val());
        assert!(b.iter().all(|v| v.abs() <= bound));
        let dw = Conv2dConfig::depthwise(8, 3).init(&dev);
        assert_eq!(dw.weight.dims(), [8, 1, 3, 3]);
        assert!(dw.bias.is_none());
        assert!(Conv2dConfig::new(6, 4, 3).with_groups(4).check().is_err());
        assert!(Conv2dConfig::new(6, 4, 3).with_stride(0).check().is_err());
    }

    /// At inference `ConvBn` folds batch norm into the convolution: the same values (to float
    /// rounding) as the convolution then batch norm on its running statistics, with and
    /// without the ReLU, with and without a conv bias, stride 1 and 2.
    #[test]
    fn folded_conv_bn_matches_conv_then_batch_norm() {
        let _rng = exclusive_rng();
        let tdev = train_device();
        tdev.seed(11);
        for (cfg, bias) in [
            (Conv2dConfig::new(3, 8, 3), false),
            (Conv2dConfig::new(4, 6, 3).with_stride(2), true),
            (Conv2dConfig::new(16, 16, 3), false),
        ] {
            let mut unit = ConvBn::new(cfg, &tdev);
            if bias {
                unit.conv = cfg.init(&tdev);
            }
            // Training passes move the running statistics away from (0, 1).
            for _ in 0..3 {
                let x = Tensor::<4>::random(
                    [4, cfg.in_channels, 9, 8],
                    Distribution::Normal(0.5, 2.0),
                    &tdev,
                );
                let _ = unit.forward(x);
            }
            let unit = unit.valid();
            let dev = device();
            let x = normal([2, cfg.in_channels, 9, 8], &dev);
            let want = unit.bn.forward(unit.conv.forward(x.clone()));
            assert!(rel_err(unit.forward(x.clone()), want.clone()) < 1e-5);
            let got = unit.forward_relu(x);
            assert!(rel_err(got, relu(want)) < 1e-5);
        }
    }

    /// Train mode: output and gradients (input, γ, β) equal burn-nn's `BatchNorm`; running mean
    /// equals burn's, running variance follows PyTorch's unbiased rule (burn keeps the biased
    /// one). Eval mode after several steps equals burn's eval with the same statistics.
    #[test]
    fn batchnorm_matches_burn_nn_train_and_eval() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(11);
        let c = 5;
        let mut ours = BatchNorm2d::new(c, &dev);
        let mut theirs = BatchNormConfig::new(c).init(&dev);
        // Non-trivial affine parameters, shared.
        ours.gamma = Param::from_tensor(normal([c], &dev).detach());
        ours.beta = Param::from_tensor(normal([c], &dev).detach());
        theirs.gamma = Param::from_tensor(ours.gamma.val().detach());
        theirs.beta = Param::from_tensor(ours.beta.val().detach());

        let mut expect_mean = vec![0f32; c];
        let mut expect_var = vec![1f32; c];
        for (step, (n, h, w)) in [(2, 4, 3), (1, 5, 5), (3, 3, 7)].into_iter().enumerate() {
            let x = normal([n, c, h, w], &dev)
                .mul_scalar(2.0)
                .add_scalar(step as f32);
            // PyTorch's running statistics, by hand.
            let xv = to_vec_f32(x.clone());
            let count = n * h * w;
            for ch in 0..c {
                let vals: Vec<f32> = (0..n)
                    .flat_map(|i| (0..h * w).map(move |p| (i, p)))
                    .map(|(i, p)| xv[(i * c + ch) * h * w + p])
                    .collect();
                let mean = vals.iter().sum::<f32>() / count as f32;
                let ss = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>();
                expect_mean[ch] = 0.9 * expect_mean[ch] + 0.1 * mean;
                expect_var[ch] = 0.9 * expect_var[ch] + 0.1 * ss / (count - 1) as f32;
            }
            let (xa, xb) = (x.clone().require_grad(), x.require_grad());
            let ya = ours.forward(xa.clone());
            let yb = theirs.forward(xb.clone());
            let r = normal(ya.dims(), &dev);
            let ga = (ya.clone() * r.clone()).sum().backward();
            let gb = (yb.clone() * r).sum().backward();
            assert!(rel_err(ya, yb) < 1e-4, "forward step {step}");
            let dx = |t: &Tensor<4>, g| t.grad(g).expect("dx");
            assert!(rel_err(dx(&xa, &ga), dx(&xb, &gb)) < 1e-4, "dx step {step}");
            let d1 = |t: Tensor<1>, g| t.grad(g).expect("param gradient");
            assert!(rel_err(d1(ours.gamma.val(), &ga), d1(theirs.gamma.val(), &gb)) < 1e-4);
            assert!(rel_err(d1(ours.beta.val(), &ga), d1(theirs.beta.val(), &gb)) < 1e-4);
            assert!(
                rel_err(
                    ours.running_mean.value_sync(),
                    theirs.running_mean.value_sync()
                ) < 1e-5,
                "running mean step {step}"
            );
            let rv = to_vec_f32(ours.running_var.value_sync());
            for (a, b) in rv.iter().zip(&expect_var) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "running var {a} vs {b}"
                );
            }
        }
        let rm = to_vec_f32(ours.running_mean.value_sync());
        for (a, b) in rm.iter().zip(&expect_mean) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "running mean {a} vs {b}"
            );
        }

        // Eval: the inference device selects it; burn's layer gets our statistics.
        let inf = device();
        let ours = ours.valid();
        let mut theirs = theirs.valid();
        theirs.running_mean = RunningState::new(ours.running_mean.value());
        theirs.running_var = RunningState::new(ours.running_var.value());
        let x = normal([2, c, 3, 4], &inf);
        let before = to_vec_f32(ours.running_var.value());
        let (ya, yb) = (ours.forward(x.clone()), theirs.forward(x));
        assert!(rel_err(ya, yb) < 1e-4, "eval forward");
        assert_eq!(
            before,
            to_vec_f32(ours.running_var.value()),
            "eval changed stats"
        );
    }

    /// A layer whose training flag is off takes the eval path even on the autodiff device.
    #[test]
    fn batchnorm_frozen_flag_uses_running_stats() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(5);
        let mut bn = BatchNorm2d::new(3, &dev);
        bn.training = Param::from_bool(false);
        let x = normal([2, 3, 4, 4], &dev).add_scalar(3.0);
        let y = bn.forward(x.clone());
        // Running mean 0, var 1, γ 1, β 0: the identity up to ε.
        assert!(rel_err(y, x) < 1e-4);
        assert_eq!(to_vec_f32(bn.running_mean.value()), vec![0.0; 3]);
    }

    /// Our 2×2 transposed convolution equals burn-nn's `ConvTranspose2d` with the same weights.
    #[test]
    fn conv_transpose_matches_burn_nn() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(9);
        let ours = ConvTranspose2x2::new(6, 4, true, &dev);
        let mut theirs = burn::nn::conv::ConvTranspose2dConfig::new([6, 4], [2, 2])
            .with_stride([2, 2])
            .init(&dev);
        theirs.weight = Param::from_tensor(ours.weight.val().detach());
        theirs.bias = ours
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(b.val().detach()));
        let x = normal([2, 6, 3, 5], &dev);
        let (xa, xb) = (x.clone().require_grad(), x.require_grad());
        let ya = ours.forward(xa.clone());
        assert_eq!(ya.dims(), [2, 4, 6, 10]);
        let yb = theirs.forward(xb.clone());
        let r = normal(ya.dims(), &dev);
        let ga = (ya.clone() * r.clone()).sum().backward();
        let gb = (yb.clone() * r).sum().backward();
        assert!(rel_err(ya, yb) < 1e-4);
        let dx = |t: &Tensor<4>, g| t.grad(g).expect("dx");
        assert!(rel_err(dx(&xa, &ga), dx(&xb, &gb)) < 1e-4);
        let dwa = ours.weight.val().grad(&ga).expect("dw");
        let dwb = theirs.weight.val().grad(&gb).expect("dw");
        assert!(rel_err(dwa, dwb) < 1e-4);
        // PyTorch's bound: fan-in from the weight's second axis (4 · 2 · 2).
        let bound = 1.0 / 16f32.sqrt();
        assert!(
            to_vec_f32(ours.weight.val())
                .iter()
                .all(|v| v.abs() <= bound)
        );
    }

    #[test]
    fn functional_ops_shapes_and_values() {
        let _rng = exclusive_rng();
        let dev = device();
        let x = ferrolab_core::nn::float_tensor(
            (0..32).map(|v| v as f32).collect(),
            [1, 2, 4, 4],
            &dev,
        );
        // x[:, :, ::2, ::2]
        assert_eq!(
            to_vec_f32(shortcut_a(x.clone(), 2, 0)),
            vec![0., 2., 8., 10., 16., 18., 24., 26.]
        );
        let odd = normal([1, 1, 5, 5], &dev);
        assert_eq!(shortcut_a(odd, 2, 0).dims(), [1, 1, 3, 3]);
        assert_eq!(
            to_vec_f32(max_pool2d(x.clone(), 2, 2)),
            vec![5., 7., 13., 15., 21., 23., 29., 31.]
        );
        // Darknet's size-2 stride-1 pool keeps 4×4; the last row/column see only themselves.
        let p = to_vec_f32(max_pool2d_pad_end(x.clone(), 2, 1, 1));
        assert_eq!(p.len(), 32);
        assert_eq!(&p[..4], &[5., 6., 7., 7.]);
        assert_eq!(&p[12..16], &[13., 14., 15., 15.]);
        assert_eq!(to_vec_f32(global_avg_pool(x.clone())), vec![7.5, 23.5]);
        assert_eq!(avg_pool2d(x.clone(), 2, 2).dims(), [1, 2, 2, 2]);
        let up = to_vec_f32(upsample_nearest2x(x.clone()));
        assert_eq!(&up[..8], &[0., 0., 1., 1., 2., 2., 3., 3.]);
        let bl = upsample_bilinear2x(x.clone(), true);
        assert_eq!(bl.dims(), [1, 2, 8, 8]);
        // align_corners keeps the corners.
        let bl = to_vec_f32(bl);
        assert!((bl[0] - 0.0).abs() < 1e-6 && (bl[63] - 15.0).abs() < 1e-5);
        assert_eq!(concat_channels(vec![x.clone(), x]).dims(), [1, 4, 4, 4]);
    }
}
