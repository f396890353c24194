//! The AttenScribble network: a UNet (Ronneberger et al. 2015, in the WSL4MIS/PyMIC form of
//! [`crate::models::unet`]) with a pluggable spatial self-attention block on one encoder level
//! (Tian, Yang & Gao, "AttenScribble", arXiv 2312.06614, §3.1; reference `unetformer.py`).
//!
//! The block (one transformer layer, single head, as the reference's `Block` + `norm1`):
//!
//! - tokens `t = flatten(x)ᵀ ∈ R^{L×C}` with `L = h·w` of the level;
//! - `A = QKᵀ` with `Q = LN(t)W_q`, `K = LN(t)W_k` (no biases): the **unscaled** logits;
//! - `t ← t + proj(softmax(A/√C) V)`;
//! - `t ← t + fc2(GELU(dwconv3×3(fc1(LN(t)))))` (MLP ratio 4, depth-wise conv between);
//! - output `LN(t)` reshaped back to `[N, C, h, w]`, which continues down the encoder.
//!
//! Affinity (eq. 3 of the paper, the reference's `attn_proj`): `S = softmax(A)` row-wise on the
//! *unscaled* logits, `K = sigmoid(a·(S + Sᵀ) + b)` — a 1×1 convolution over the single head's
//! one channel is the scalar affine map `(a, b)`.
//!
//! Shapes: `[N, 1, H, W]` → logits `[N, classes, H, W]` and, when the block is on, attention
//! logits `[N, L, L]` with `L = (H/2^level)·(W/2^level)`.

use crate::layers::{Conv2d, Conv2dConfig, max_pool2d};
use crate::models::unet::{ConvBlock, UpBlock, UpMode};
use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_core::kernels::pointwise::{gelu, sigmoid};
use ferrolab_core::kernels::rowwise::{layer_norm_module, softmax};

/// Architecture of an [`AttenUNet`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttenUNetSpec {
    pub in_channels: usize,
    pub classes: usize,
    pub widths: Vec<usize>,
    pub dropout: Vec<f64>,
    /// Encoder level followed by the attention block; `None` = plain UNet.
    pub attention_level: Option<usize>,
    pub mlp_ratio: usize,
}

/// Bytes of the network's maps for one `size × size` slice, as the resource guards count them:
/// about 12 f32 maps per channel per level (conv, BN, activation, dropout, decoder copies; what
/// training keeps for backward, which bounds what inference holds), the levels' pixels
/// quartering as widths grow, plus ~10 L×L attention maps (logits, softmaxes, affinity,
/// window products) at the attention level's L pixels.
pub fn maps_bytes_per_slice(widths: &[usize], attention_level: Option<usize>, size: usize) -> u64 {
    let s = size as u64;
    let levels: u64 = widths
        .iter()
        .enumerate()
        .map(|(l, &w)| (s >> l) * (s >> l) * w as u64 * 12 * 4)
        .sum();
    let attn = attention_level.map_or(0, |l| {
        let g = (s >> l).pow(2);
        g * g * 4 * 10
    });
    levels + attn
}

impl AttenUNetSpec {
    /// Why this network cannot be built, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        // Labels are written as uint8, and a checkpoint's meta.json must not be able to ask
        // for a network too large to allocate (found by the fuzz target ckpt-attenscribble).
        if !(1..=64).contains(&self.in_channels) || !(2..=256).contains(&self.classes) {
            return Err(format!(
                "attenscribble network: in_channels {} must be in 1..=64 and classes {} in 2..=256",
                self.in_channels, self.classes
            ));
        }
        if !(2..=6).contains(&self.widths.len())
            || self.widths.iter().any(|w| !(1..=1024).contains(w))
        {
            return Err(format!(
                "attenscribble network: widths {:?}: 2 to 6 levels of 1..=1024 channels",
                self.widths
            ));
        }
        if self.dropout.len() != self.widths.len()
            || self.dropout.iter().any(|p| !(0.0..1.0).contains(p))
        {
            return Err(format!(
                "attenscribble network: dropout {:?}: one rate in [0, 1) per level",
                self.dropout
            ));
        }
        if self.attention_level.is_some_and(|l| l >= self.widths.len())
            || !(1..=16).contains(&self.mlp_ratio)
        {
            return Err(format!(
                "attenscribble network: attention level {:?} of {} levels, MLP ratio {} (1..=16)",
                self.attention_level,
                self.widths.len(),
                self.mlp_ratio
            ));
        }
        Ok(())
    }

    /// H and W must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << (self.widths.len() - 1)
    }

    /// Builds the network.
    pub fn build(&self, device: &Device) -> Result<AttenUNet, String> {
        self.check()?;
        let w = &self.widths;
        let mut encoder = Vec::with_capacity(w.len());
        let mut cin = self.in_channels;
        for (&width, &p) in w.iter().zip(&self.dropout) {
            encoder.push(ConvBlock::new(cin, width, p, device));
            cin = width;
        }
        let decoder = (1..w.len())
            .rev()
            .map(|l| UpBlock::new(w[l], w[l - 1], UpMode::Bilinear, device))
            .collect();
        let attention = self
            .attention_level
            .map(|l| SpatialAttention::new(w[l], self.mlp_ratio, device));
        Ok(AttenUNet {
            encoder,
            attention,
            attention_level: self.attention_level.unwrap_or(usize::MAX),
            decoder,
            out_conv: Conv2dConfig::new(w[0], self.classes, 3).init(device),
        })
    }
}

/// ε of the block's layer norms: `LayerNormConfig`'s default and PyTorch's, which the
/// reference's `nn.LayerNorm(dim)` uses.
const LN_EPS: f64 = 1e-5;

/// The spatial self-attention block and its affinity head (see the module documentation).
#[derive(Module, Debug)]
pub struct SpatialAttention {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    dwconv: Conv2d,
    fc2: Linear,
    norm_out: LayerNorm,
    /// `(a, b)` of the affinity's 1×1 convolution.
    affine: Param<Tensor<1>>,
    dim: usize,
}

impl SpatialAttention {
    /// A block over `dim` channels with an MLP of `mlp_ratio · dim` hidden units.
    ///
    /// Initialisation as the reference's `_init_weights` (`unetformer.py`, applied by `Block`
    /// and `Mlp`): linear weights `trunc_normal_(std=.02)` with **zero** biases (burn's
    /// `Linear` would draw its bias from the weight's initializer), the depth-wise conv
    /// He-normal `N(0, 2/fan_out)` with `fan_out = 3·3·hidden/groups = 9` and a zero bias
    /// (not PyTorch's default uniform), layer norms γ = 1, β = 0.
    pub fn new(dim: usize, mlp_ratio: usize, device: &Device) -> Self {
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let zero_bias = |o: usize| Some(Param::from_tensor(Tensor::<1>::zeros([o], device)));
        let lin = |i: usize, o: usize, bias: bool| {
            let mut l = LinearConfig::new(i, o)
                .with_bias(bias)
                .with_initializer(init.clone())
                .init(device);
            if bias {
                l.bias = zero_bias(o);
            }
            l
        };
        let hidden = dim * mlp_ratio;
        let mut dwconv = Conv2dConfig::depthwise(hidden, 3)
            .with_bias(true)
            .init(device);
        dwconv.weight = Param::from_tensor(Tensor::<4>::random(
            [hidden, 1, 3, 3],
            Distribution::Normal(0.0, (2.0f64 / 9.0).sqrt()),
            device,
        ));
        dwconv.bias = zero_bias(hidden);
        // PyTorch's default Conv2d(1, 1, 1) initialisation (the reference's `attn_proj` is
        // outside every `_init_weights`): both uniform in [-1, 1].
        let affine = Tensor::<1>::random([2], Distribution::Uniform(-1.0, 1.0), device);
        SpatialAttention {
            norm1: LayerNormConfig::new(dim).with_epsilon(LN_EPS).init(device),
            q: lin(dim, dim, false),
            k: lin(dim, dim, false),
            v: lin(dim, dim, false),
            proj: lin(dim, dim, true),
            norm2: LayerNormConfig::new(dim).with_epsilon(LN_EPS).init(device),
            fc1: lin(dim, hidden, true),
            dwconv,
            fc2: lin(hidden, dim, true),
            norm_out: LayerNormConfig::new(dim).with_epsilon(LN_EPS).init(device),
            affine: Param::from_tensor(affine),
            dim,
        }
    }

    /// The block with the affinity head's `(a, b)` set (fixed-input checks, e.g. the step
    /// benchmark's loss comparison with its PyTorch twin).
    pub fn with_affine(mut self, a: f32, b: f32) -> Self {
        let device = self.affine.val().device();
        self.affine =
            Param::from_tensor(Tensor::from_data(TensorData::new(vec![a, b], [2]), &device));
        self
    }

    /// The affinity head's current `(a, b)` (the training log).
    pub fn affine_values(&self) -> (f32, f32) {
        let v = ferrolab_core::nn::to_vec_f32(self.affine.val());
        (v[0], v[1])
    }

    /// `x: [N, C, h, w]` → (`[N, C, h, w]`, unscaled attention logits `[N, hw, hw]`).
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<3>) {
        let [n, c, h, w] = x.dims();
        let t = x.reshape([n, c, h * w]).swap_dims(1, 2);
        let z = layer_norm_module(&self.norm1, t.clone(), LN_EPS);
        let (q, k, v) = (
            self.q.forward(z.clone()),
            self.k.forward(z.clone()),
            self.v.forward(z),
        );
        let logits = q.matmul(k.swap_dims(1, 2));
        let scale = 1.0 / (self.dim as f64).sqrt();
        let attn = softmax(logits.clone() * scale, 2);
        let t = t + self.proj.forward(attn.matmul(v));
        let m = self
            .fc1
            .forward(layer_norm_module(&self.norm2, t.clone(), LN_EPS));
        let hidden = m.dims()[2];
        let m = m.swap_dims(1, 2).reshape([n, hidden, h, w]);
        let m = self
            .dwconv
            .forward(m)
            .reshape([n, hidden, h * w])
            .swap_dims(1, 2);
        let t = t + self.fc2.forward(gelu(m));
        let out = layer_norm_module(&self.norm_out, t, LN_EPS)
            .swap_dims(1, 2)
            .reshape([n, c, h, w]);
        (out, logits)
    }

    /// `S = softmax(logits)` row-wise and the affinity head's `(a, b)` (autodiff-tracked): the
    /// inputs of [`affinity_attentive_loss`](super::losses::affinity_attentive_loss), which
    /// forms `K` on the attentive loss's window only.
    pub fn affinity_inputs(&self, logits: Tensor<3>) -> (Tensor<3>, Tensor<1>) {
        (softmax(logits, 2), self.affine.val())
    }

    /// `K = sigmoid(a·(S + Sᵀ) + b)`, `S = softmax(logits)` row-wise: `[N, L, L]` → `[N, L, L]`
    /// (dense; training uses [`SpatialAttention::affinity_inputs`]).
    pub fn affinity(&self, logits: Tensor<3>) -> Tensor<3> {
        let (s, ab) = self.affinity_inputs(logits);
        let sym = s.clone() + s.swap_dims(1, 2);
        let a = ab.clone().slice(0..1).reshape([1, 1, 1]);
        let b = ab.slice(1..2).reshape([1, 1, 1]);
        sigmoid(sym * a + b)
    }
}

/// UNet with an optional attention block (see the module documentation).
#[derive(Module, Debug)]
pub struct AttenUNet {
    encoder: Vec<ConvBlock>,
    attention: Option<SpatialAttention>,
    /// `usize::MAX` without a block.
    attention_level: usize,
    decoder: Vec<UpBlock>,
    out_conv: Conv2d,
}

/// A forward pass's outputs.
#[derive(Debug, Clone)]
pub struct Output {
    /// Class logits `[N, classes, H, W]`.
    pub logits: Tensor<4>,
    /// Unscaled attention logits `[N, L, L]` (when the network has the block).
    pub attention: Option<Tensor<3>>,
    /// `(h, w)` of the attention grid.
    pub grid: (usize, usize),
}

impl AttenUNet {
    /// The attention block, if any.
    pub fn attention_block(&self) -> Option<&SpatialAttention> {
        self.attention.as_ref()
    }

    /// Down-sampling factor of the attention grid (`2^level`).
    pub fn attention_stride(&self) -> Option<usize> {
        self.attention.as_ref().map(|_| 1 << self.attention_level)
    }

    /// `x: [N, in_channels, H, W]`, H and W multiples of `2^(levels − 1)`.
    pub fn forward(&self, x: Tensor<4>) -> Output {
        let mut feats: Vec<Tensor<4>> = Vec::with_capacity(self.encoder.len());
        let mut x = x;
        let mut attention = None;
        let mut grid = (0, 0);
        for (level, block) in self.encoder.iter().enumerate() {
            if level > 0 {
                x = max_pool2d(x, 2, 2);
            }
            x = block.forward(x);
            if level == self.attention_level
                && let Some(att) = &self.attention
            {
                let [_, _, h, w] = x.dims();
                grid = (h, w);
                let (y, logits) = att.forward(x);
                x = y;
                attention = Some(logits);
            }
            feats.push(x.clone());
        }
        let mut x = feats.pop().unwrap_or(x);
        for block in &self.decoder {
            let Some(skip) = feats.pop() else { break };
            x = block.forward(x, skip);
        }
        Output {
            logits: self.out_conv.forward(x),
            attention,
            grid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::backend::{exclusive_rng, train_device};
    use ferrolab_core::nn::to_vec_f32;

    fn std(v: &[f32]) -> f64 {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        (v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / n).sqrt()
    }

    /// The block starts as the reference's `_init_weights` leaves it. Before this test the
    /// linear biases were drawn N(0, 0.02) and the depth-wise conv had PyTorch's default
    /// uniform weights (std 0.19) and a uniform bias in ±1/3 instead of N(0, 2/9) (std 0.47)
    /// and 0: a bias of that size dominated the MLP's hidden units at initialisation.
    #[test]
    fn block_initialisation_is_the_references() {
        let _rng = exclusive_rng();
        let dev = train_device();
        dev.seed(91);
        let b = SpatialAttention::new(64, 4, &dev);
        for (name, bias) in [
            ("proj", &b.proj.bias),
            ("fc1", &b.fc1.bias),
            ("fc2", &b.fc2.bias),
            ("dwconv", &b.dwconv.bias),
        ] {
            let v = to_vec_f32(bias.as_ref().expect("has a bias").val());
            assert!(v.iter().all(|&x| x == 0.0), "{name} bias is not zero");
        }
        assert!(b.q.bias.is_none() && b.k.bias.is_none() && b.v.bias.is_none());
        // 2304 depth-wise weights: the sample std is within ±0.02 of √(2/9) = 0.471.
        let s = std(&to_vec_f32(b.dwconv.weight.val()));
        assert!((s - (2.0f64 / 9.0).sqrt()).abs() < 0.02, "dwconv std {s}");
        for (name, w) in [("q", &b.q.weight), ("fc1", &b.fc1.weight)] {
            let s = std(&to_vec_f32(w.val()));
            assert!((s - 0.02).abs() < 0.002, "{name} std {s}");
        }
        let (a, bb) = b.affine_values();
        assert!(a.abs() <= 1.0 && bb.abs() <= 1.0, "({a}, {bb})");
    }
}
