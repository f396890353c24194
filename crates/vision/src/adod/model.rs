//! ADOD's networks: a YOLOv3-tiny-layout detector with optional residual attention modules and
//! an optional domain classifier behind a gradient-reversal layer.
//!
//! - **Residual attention** (Wang et al., "Residual Attention Network", CVPR 2017, eq. 3):
//!   `H(x) = (1 + M(x)) · T(x)`, with the trunk `T` a 3×3 conv-BN-LeakyReLU and the soft mask
//!   `M` one bottom-up/top-down pass — 2×2 max pool, 3×3 conv-BN-LeakyReLU, bilinear ×2
//!   up-sampling, 1×1 conv, sigmoid — so `M ∈ (0, 1)` re-weights the trunk while the identity
//!   term keeps its features. Modules follow backbone layers 2 and 3 (strides 4 and 8): the
//!   stages where the water's colour cast and contrast loss live in the features and where
//!   the maps (32² and 16² at 128 px) are still fine enough for a mask to single out objects
//!   of 8–60 px; the stride-16 and stride-32 maps (8² and 4²) are too coarse to mask. ADOD's
//!   paper does not say where it puts them (its text is not readable), so this is our choice.
//! - **Gradient reversal** (Ganin & Lempitsky 2015): identity forward, gradient times `−λ`
//!   backward ([`grad_reverse`]), with `λ = α(p)·domain.grl` and `α(p) = 2/(1+e^(−10p)) − 1`
//!   ([`alpha`]).
//! - **Domain classifiers**, all on the stride-8 features (after the second attention module
//!   when there is one):
//!   - [`DomainKind::Attention`] (ADOD): 3×3 conv-LeakyReLU, then *attention pooling* — the
//!     features averaged with the attention mask's channel mean as weights, so the classifier
//!     sees what the detector attends to — then FC → hidden → FC → domains;
//!   - [`DomainKind::Plain`] (`yolo_domain`): the same with global average pooling;
//!   - [`DomainKind::DgYolo`] (DG-YOLO, Liu et al. ICIP 2020): conv 7×7 stride 2, conv 5×5
//!     stride 2, global average pooling, FC to the domains.
//!
//! The detector is a [`YoloTiny`](crate::models::yolo::YoloTiny) run through its hooked
//! forward, which inserts the attention modules and taps the domain classifier's features.
//! Shapes: `[N, C, S, S]` → heads `p32: [N, 3(5+K), S/32, S/32]`, `p16: [N, 3(5+K), S/16, S/16]`
//! exactly as `YoloTiny`'s, whose loss, decoding and NMS are used on them, and domain logits
//! `[N, D]`.

use crate::layers::{
    Conv2d, Conv2dConfig, ConvBn, global_avg_pool, leaky_relu, max_pool2d, upsample_bilinear2x,
};
use crate::models::yolo::{YoloConfig, YoloTiny};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use ferrolab_core::kernels::pointwise;

const LEAKY: f64 = 0.1;
/// Backbone layers followed by a residual attention module.
pub const ATTENTION_AFTER: [usize; 2] = [2, 3];
/// The backbone layer whose (attended) output the domain classifier reads.
pub const DOMAIN_FEATURES_AFTER: usize = 3;

/// `α(p) = 2/(1 + e^(−10p)) − 1` for training progress `p ∈ [0, 1]` (DANN, DG-YOLO): 0 at
/// the start, 0.987 at the end, 0.987·½ near p = 0.1.
pub fn alpha(p: f64) -> f64 {
    2.0 / (1.0 + (-10.0 * p.clamp(0.0, 1.0)).exp()) - 1.0
}

/// Gradient reversal: returns `x` unchanged, and in backward multiplies the incoming gradient
/// by `−lambda` (one op: no copy forward, one pass backward).
pub fn grad_reverse<const D: usize>(x: Tensor<D>, lambda: f64) -> Tensor<D> {
    pointwise::scale_grad(x, -lambda)
}

/// Which domain classifier a network carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DomainKind {
    Plain,
    Attention,
    DgYolo,
}

/// What to build.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdodNetConfig {
    pub yolo: YoloConfig,
    /// Residual attention after backbone layers [`ATTENTION_AFTER`].
    pub attention: bool,
    pub domain: Option<DomainKind>,
    /// Domains the classifier separates (the seen water types).
    pub domains: usize,
}

/// One residual attention module `H = (1 + M)·T` over `c` channels.
#[derive(Module, Debug)]
pub struct ResidualAttention {
    trunk: ConvBn,
    mask_conv: ConvBn,
    mask_out: Conv2d,
}

impl ResidualAttention {
    pub fn new(c: usize, device: &Device) -> Self {
        ResidualAttention {
            trunk: ConvBn::new(Conv2dConfig::new(c, c, 3), device),
            mask_conv: ConvBn::new(Conv2dConfig::new(c, c, 3), device),
            mask_out: Conv2dConfig::new(c, c, 1).init(device),
        }
    }

    /// `x: [N, C, H, W]` (H, W even) → `(H(x), M(x))`, both `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (h, z) = self.forward_logits(x);
        (h, pointwise::sigmoid(z))
    }

    /// `(H(x), z)` with `M(x) = σ(z)`: the detector's path, whose one reader of the mask
    /// besides `H` (attention pooling) takes it detached, so σ is applied there only, and
    /// `H = t·(1 + σ(z))` is one fused op ([`pointwise::residual_gate`]).
    pub fn forward_logits(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let t = leaky_relu(self.trunk.forward(x.clone()), LEAKY);
        let m = leaky_relu(self.mask_conv.forward(max_pool2d(x, 2, 2)), LEAKY);
        let z = self.mask_out.forward(upsample_bilinear2x(m, false));
        (pointwise::residual_gate(t, z.clone()), z)
    }
}

/// A domain classifier (see the module documentation).
#[derive(Module, Debug)]
pub struct DomainHead {
    convs: Vec<Conv2d>,
    hidden: Option<Linear>,
    out: Linear,
    attention_pool: bool,
}

impl DomainHead {
    pub fn new(kind: DomainKind, c: usize, domains: usize, device: &Device) -> Self {
        let width = 64;
        match kind {
            DomainKind::DgYolo => DomainHead {
                convs: vec![
                    Conv2dConfig::new(c, width, 7).with_stride(2).init(device),
                    Conv2dConfig::new(width, width, 5)
                        .with_stride(2)
                        .init(device),
                ],
                hidden: None,
                out: LinearConfig::new(width, domains).init(device),
                attention_pool: false,
            },
            DomainKind::Plain | DomainKind::Attention => DomainHead {
                convs: vec![Conv2dConfig::new(c, width, 3).init(device)],
                hidden: Some(LinearConfig::new(width, width).init(device)),
                out: LinearConfig::new(width, domains).init(device),
                attention_pool: kind == DomainKind::Attention,
            },
        }
    }

    /// `x: [N, C, H, W]` (already through gradient reversal), `mask` the attention mask of the
    /// same size (used by attention pooling) → logits `[N, D]`.
    pub fn forward(&self, x: Tensor<4>, mask: Option<Tensor<4>>) -> Tensor<2> {
        let mut h = x;
        for conv in &self.convs {
            h = leaky_relu(conv.forward(h), LEAKY);
        }
        let pooled = match (self.attention_pool, mask) {
            (true, Some(m)) => {
                let [n, c, _, _] = h.dims();
                // Weights: the mask's mean over channels, normalised over positions.
                let w = m.mean_dim(1);
                let total = w.clone().sum_dim(2).sum_dim(3).add_scalar(1e-6);
                (h * (w / total)).sum_dim(2).sum_dim(3).reshape([n, c])
            }
            _ => global_avg_pool(h),
        };
        let z = match &self.hidden {
            Some(l) => leaky_relu(l.forward(pooled), LEAKY),
            None => pooled,
        };
        self.out.forward(z)
    }
}

/// Outputs of one forward pass.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub p32: Tensor<4>,
    pub p16: Tensor<4>,
    /// `[N, D]` when the network has a domain classifier.
    pub domain: Option<Tensor<2>>,
}

/// The detector (see the module documentation): a [`YoloTiny`] whose backbone features pass
/// through the attention modules and feed the domain classifier by its
/// [`forward_hooked`](YoloTiny::forward_hooked).
#[derive(Module, Debug)]
pub struct AdodNet {
    yolo: YoloTiny,
    attention: Vec<ResidualAttention>,
    domain: Option<DomainHead>,
}

impl AdodNet {
    pub fn new(cfg: &AdodNetConfig, device: &Device) -> Result<AdodNet, String> {
        if cfg.domain.is_some() && cfg.domains < 2 {
            return Err(format!(
                "adod: a domain classifier needs ≥ 2 domains, got {}",
                cfg.domains
            ));
        }
        // Attention modules are built between the backbone and the heads, the domain head
        // last: the initial weights are drawn in layer order, as before the detector was
        // composed from `YoloTiny` (format-1 checkpoints), so seeds give the same networks.
        let (yolo, attention) = YoloTiny::new_with(&cfg.yolo, device, |w| {
            if cfg.attention {
                ATTENTION_AFTER
                    .iter()
                    .map(|&i| ResidualAttention::new(w[i], device))
                    .collect()
            } else {
                Vec::new()
            }
        })?;
        let domain = cfg.domain.map(|k| {
            DomainHead::new(
                k,
                cfg.yolo.widths[DOMAIN_FEATURES_AFTER],
                cfg.domains,
                device,
            )
        });
        Ok(AdodNet {
            yolo,
            attention,
            domain,
        })
    }

    /// The detector underneath: its loss, decoding and NMS score [`Outputs`]' heads.
    pub fn yolo(&self) -> &YoloTiny {
        &self.yolo
    }

    /// `x: [N, C, S, S]`; `lambda` the gradient-reversal coefficient in front of the domain
    /// classifier (ignored without one). Domain logits are computed only when `with_domain`.
    pub fn forward(&self, x: Tensor<4>, lambda: f64, with_domain: bool) -> Outputs {
        let mut domain_in = None;
        let mut att = self.attention.iter();
        let (p32, p16) = self.yolo.forward_hooked(x, &mut |i, x| {
            let mut x = x;
            let mut mask = None;
            if ATTENTION_AFTER.contains(&i)
                && let Some(a) = att.next()
            {
                let (h, z) = a.forward_logits(x);
                x = h;
                mask = Some(z);
            }
            if i == DOMAIN_FEATURES_AFTER {
                domain_in = Some((x.clone(), mask));
            }
            x
        });
        let domain = match (&self.domain, domain_in, with_domain) {
            (Some(head), Some((f, m)), true) => {
                let f = grad_reverse(f, lambda);
                // The mask only weights the pooling; the reversed gradient reaches the mask
                // branch through the features H = (1 + M)·T already.
                Some(head.forward(f, m.map(|z| pointwise::sigmoid(z.detach()))))
            }
            _ => None,
        };
        Outputs { p32, p16, domain }
    }

    pub fn has_domain_head(&self) -> bool {
        self.domain.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use ferrolab_core::backend::{device, exclusive_rng};
    use ferrolab_core::nn::to_vec_f32;

    /// `H = T·(1 + M)` with `T` the trunk's output: the module re-weights the trunk by
    /// between one and two times and never changes its sign (what the fused gate must keep).
    #[test]
    fn residual_attention_scales_the_trunk_by_one_plus_the_mask() {
        let _g = exclusive_rng();
        let dev = device();
        let m = ResidualAttention::new(4, &dev);
        let x = Tensor::<4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
        let t = to_vec_f32(leaky_relu(m.trunk.forward(x.clone()), LEAKY));
        let (h, mask) = m.forward(x);
        let (h, mask) = (to_vec_f32(h), to_vec_f32(mask));
        assert_eq!(h.len(), t.len());
        assert!(t.iter().any(|v| *v > 0.0) && t.iter().any(|v| *v < 0.0));
        for ((h, t), m) in h.iter().zip(&t).zip(&mask) {
            assert!(*m > 0.0 && *m < 1.0, "mask {m}");
            let want = t * (1.0 + m);
            assert!(
                (h - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{h} vs {want}"
            );
        }
    }
}
