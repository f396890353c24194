//! ferrolab-vision: the convolutional foundation shared by layer importance, HyPHEN, ADOD,
//! AttenScribble and AdaEvo.
//!
//! - [`layers`]: burn `Module`s (convolution, batch norm, pooling, up-sampling) whose ops go
//!   through `ferrolab_core::kernels`, so the CPU runs ferrolab's kernels and a GPU build runs
//!   burn's.
//! - [`models`]: ResNet-20/32, a VGG-style and a MobileNet-style small CNN, UNet, YOLOv3-tiny.
//! - [`augment`]: seeded augmentations for classification, segmentation and detection.
//! - [`dropout`]: element-wise dropout in one pass each way, its mask recomputed from a seed.
//! - [`optim`]: SGD with momentum and weight decay fused into one pass per parameter.
//! - [`tiny`]: a convolution + ReLU + max-pool block for tiny on-device models, one sample at
//!   a time in plain `f32` (AdaEvo's mobile models), held to [`layers`] by its tests.
//! - [`metrics`]: COCO mAP (as pycocotools) and segmentation Dice / IoU / HD95 (as medpy 0.5.2).

pub mod adod;
pub mod attenscribble;
pub mod augment;
pub mod classify;
pub mod data;
pub mod dropout;
pub mod layers;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod tiny;
