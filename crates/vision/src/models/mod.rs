//! The image-model zoo, one file per model, each a burn `Module` built on [`crate::layers`]:
//!
//! | model | paper | input → output |
//! |---|---|---|
//! | [`resnet::ResNet`] | He et al., CVPR 2016 (CIFAR variant, §4.2) | `[N, C, H, W]` → logits `[N, K]` |
//! | [`vgg::Vgg`] | Simonyan & Zisserman, ICLR 2015 (small, with batch norm) | `[N, C, H, W]` → `[N, K]` |
//! | [`mobilenet::MobileNet`] | Howard et al., 2017 (depthwise-separable) | `[N, C, H, W]` → `[N, K]` |
//! | [`unet::UNet`] | Ronneberger et al., MICCAI 2015, as WSL4MIS / AttenScribble | `[N, C, H, W]` → `[N, K, H, W]` |
//! | [`yolo::YoloTiny`] | Redmon & Farhadi, 2018 (YOLOv3-tiny) | `[N, 3, S, S]` → two heads |

pub mod mobilenet;
pub mod resnet;
pub mod unet;
pub mod vgg;
pub mod yolo;

#[cfg(test)]
pub(crate) mod testutil;
