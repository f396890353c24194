//! The classifier behind `ferrolab classify`: one burn `Module` over the architectures of
//! [`crate::models`] plus an MLP baseline, chosen by name, so that training, checkpoints and
//! prediction handle every architecture the same way.

use crate::models::{mobilenet::MobileNet, resnet::ResNet, vgg::Vgg};
use burn::prelude::*;
use ferrolab_core::nn::mlp::{Mlp, MlpConfig};

/// Any of the classifiers; `forward` maps `[N, C, H, W]` images to `[N, classes]` logits.
#[derive(Module, Debug)]
pub enum Net {
    /// Fully connected network on the flattened image.
    Mlp(Mlp),
    /// CIFAR-style ResNet (any `6n + 2` depth).
    ResNet(ResNet),
    /// Small VGG-style CNN.
    Vgg(Vgg),
    /// Small MobileNet-style CNN.
    MobileNet(MobileNet),
}

/// What a [`Net`] is built from (also the architecture part of a checkpoint's `meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetSpec {
    /// `resnet<depth>`, `vgg`, `mobilenet` or `mlp`.
    pub arch: String,
    /// Image channels.
    pub channels: usize,
    /// Image rows (used by the MLP's input width).
    pub height: usize,
    /// Image columns.
    pub width: usize,
    /// Classes.
    pub classes: usize,
    /// The MLP's hidden widths (ignored by the other architectures).
    pub mlp_hidden: Vec<usize>,
}

impl NetSpec {
    /// Builds the network on `device` with burn's process-wide generator (seed it first), or
    /// says why it cannot be built.
    pub fn build(&self, device: &Device) -> Result<Net, String> {
        if self.channels == 0 || self.classes == 0 {
            return Err(format!(
                "channels ({}) and classes ({}) must be positive",
                self.channels, self.classes
            ));
        }
        if let Some(depth) = super::config::resnet_depth(&self.arch) {
            return ResNet::new(depth, self.channels, self.classes, device).map(Net::ResNet);
        }
        Ok(match self.arch.as_str() {
            "vgg" => Net::Vgg(Vgg::new(self.channels, self.classes, device)),
            "mobilenet" => Net::MobileNet(MobileNet::new(self.channels, self.classes, device)),
            "mlp" => {
                let mut dims = vec![self.channels * self.height * self.width];
                dims.extend(&self.mlp_hidden);
                dims.push(self.classes);
                Net::Mlp(MlpConfig::new(dims).init(device))
            }
            other => {
                return Err(format!(
                    "unknown architecture `{other}` (known: {})",
                    super::config::ARCHS.join(", ")
                ));
            }
        })
    }

    /// Parameters of the MLP this spec describes (0 for the convolutional ones, whose size
    /// does not depend on the image), to refuse a damaged spec before allocating it.
    pub fn mlp_params(&self) -> u128 {
        if self.arch != "mlp" {
            return 0;
        }
        let mut dims = vec![(self.channels as u128) * (self.height as u128) * (self.width as u128)];
        dims.extend(self.mlp_hidden.iter().map(|&w| w as u128));
        dims.push(self.classes as u128);
        dims.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }
}

impl Net {
    /// Logits `[N, classes]` for images `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Net::Mlp(m) => {
                let [n, c, h, w] = x.dims();
                m.forward(x.reshape([n, c * h * w]))
            }
            Net::ResNet(m) => m.forward(x),
            Net::Vgg(m) => m.forward(x),
            Net::MobileNet(m) => m.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_architecture_builds_and_maps_images_to_logits() {
        let _rng = ferrolab_core::backend::exclusive_rng();
        let dev = ferrolab_core::backend::device();
        for arch in ["mlp", "resnet8", "vgg", "mobilenet"] {
            let spec = NetSpec {
                arch: arch.into(),
                channels: 1,
                height: 28,
                width: 28,
                classes: 10,
                mlp_hidden: vec![16],
            };
            let net = spec.build(&dev).unwrap();
            let x = Tensor::<4>::zeros([2, 1, 28, 28], &dev);
            assert_eq!(net.forward(x).dims(), [2, 10], "{arch}");
        }
        let bad = NetSpec {
            arch: "resnet21".into(),
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
            mlp_hidden: vec![],
        };
        assert!(bad.build(&dev).unwrap_err().contains("resnet21"));
    }
}
