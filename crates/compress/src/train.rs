//! Training and evaluation of zoo members: SGD with momentum 0.9, weight decay 5e-4 and a
//! cosine learning rate (the CIFAR ResNet recipe `ferrolab classify` uses), no augmentation
//! (the zoo is retrained many times; the sweep needs trained networks, not record accuracy).
//! A fine-tune keeps pruned weights at zero by re-applying the masks after every step.

use crate::zoo::{Act, LayerParams, ZooNet, ZooSpec};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use burn::prelude::*;
use ferrolab_vision::data::{ImageSet, Normalization};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// How one network is trained.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

/// Model inputs `[n, 1, h, w]` for the images `idx` of `set`, standardised.
pub fn images(set: &ImageSet, idx: &[usize], norm: Normalization, device: &Device) -> Tensor<4> {
    let mut v = Vec::with_capacity(idx.len() * set.height * set.width);
    for &i in idx {
        v.extend(
            set.image(i)
                .iter()
                .map(|&p| norm.apply(f32::from(p) / 255.0)),
        );
    }
    Tensor::from_data(
        TensorData::new(v, [idx.len(), 1, set.height, set.width]),
        device,
    )
}

/// Labels of `idx` as an int tensor.
pub fn labels(set: &ImageSet, idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let l: Vec<i64> = idx.iter().map(|&i| i64::from(set.labels[i])).collect();
    Tensor::from_data(TensorData::new(l, [idx.len()]), device)
}

fn optimizer(s: &TrainSettings) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay((s.weight_decay > 0.0).then_some(WeightDecayConfig {
            penalty: s.weight_decay as f32,
        }))
        .init()
}

/// Zeroes the weights that `masks` (per layer, `true` = pruned) mark.
pub fn apply_masks<M: LayerParams>(model: &mut M, masks: &[Option<Vec<bool>>]) {
    for (l, m) in masks.iter().enumerate() {
        if let Some(m) = m {
            let mut w = model.layer(l).weight;
            for (v, &z) in w.iter_mut().zip(m) {
                if z {
                    *v = 0.0;
                }
            }
            model.set_layer_weight(l, &w);
        }
    }
}

/// Trains `model` (on the autodiff device) for `s.epochs` over `set`; the order of images is
/// drawn from `seed`. With masks, pruned weights stay zero.
pub fn fit(
    mut model: ZooNet,
    set: &ImageSet,
    norm: Normalization,
    s: &TrainSettings,
    seed: u64,
    masks: Option<&[Option<Vec<bool>>]>,
) -> ZooNet {
    let dev = ferrolab_core::backend::train_device();
    let mut optim = optimizer(s);
    let loss_fn = CrossEntropyLossConfig::new().init(&dev);
    let mut order: Vec<usize> = (0..set.len()).collect();
    let steps_per_epoch = set.len().div_ceil(s.batch_size.max(1));
    let total = (steps_per_epoch * s.epochs).max(1);
    let mut step = 0usize;
    for e in 0..s.epochs {
        order.shuffle(&mut StdRng::seed_from_u64(ferrolab_core::seed::derive(
            seed,
            &format!("order-{e}"),
        )));
        for idx in order.chunks(s.batch_size.max(1)) {
            let lr = s.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
            let x = images(set, idx, norm, &dev);
            let y = labels(set, idx, &dev);
            let loss = loss_fn.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            if let Some(m) = masks {
                apply_masks(&mut model, m);
            }
            step += 1;
        }
    }
    model
}

/// Builds and trains a zoo member; returns it on the inference device.
pub fn train(
    spec: &ZooSpec,
    set: &ImageSet,
    norm: Normalization,
    s: &TrainSettings,
    seed: u64,
) -> Result<ZooNet, String> {
    let dev = ferrolab_core::backend::train_device();
    ferrolab_core::backend::seed_backend(ferrolab_core::seed::derive(seed, "init"));
    let model = spec.build(&dev)?;
    Ok(fit(model, set, norm, s, seed, None).valid())
}

/// Index of the largest value in each row.
pub fn argmax_rows(logits: Tensor<2>) -> Vec<usize> {
    ferrolab_core::nn::to_vec_i64(logits.argmax(1))
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

/// Fraction of `pred` equal to `labels`.
pub fn accuracy_of(pred: &[usize], labels: &[u8]) -> f64 {
    let hit = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    hit as f64 / labels.len().max(1) as f64
}

/// The evaluation set as model inputs, kept in batches.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub batches: Vec<Tensor<4>>,
    pub labels: Vec<u8>,
}

impl EvalSet {
    pub fn new(set: &ImageSet, norm: Normalization, batch: usize) -> EvalSet {
        let dev = ferrolab_core::backend::device();
        let all: Vec<usize> = (0..set.len()).collect();
        EvalSet {
            batches: all
                .chunks(batch.max(1))
                .map(|c| images(set, c, norm, &dev))
                .collect(),
            labels: set.labels.clone(),
        }
    }

    /// The activations entering `stage`, per batch.
    pub fn activations(&self, model: &ZooNet, stage: usize) -> Vec<Act> {
        self.batches
            .iter()
            .map(|x| model.advance(0, stage, Act::Map(x.clone())))
            .collect()
    }

    /// Accuracy of `model` from cached activations entering `stage`.
    pub fn accuracy_from(&self, model: &ZooNet, stage: usize, acts: &[Act]) -> f64 {
        let mut pred = Vec::with_capacity(self.labels.len());
        for a in acts {
            pred.extend(argmax_rows(model.forward_from(stage, a.clone())));
        }
        accuracy_of(&pred, &self.labels)
    }

    /// Accuracy of `model` on the whole set.
    pub fn accuracy(&self, model: &ZooNet) -> f64 {
        let mut pred = Vec::with_capacity(self.labels.len());
        for x in &self.batches {
            pred.extend(argmax_rows(model.forward(x.clone())));
        }
        accuracy_of(&pred, &self.labels)
    }
}

/// Moves an inference model to the autodiff device (for gradients and fine-tuning).
pub fn to_train(model: &ZooNet) -> ZooNet {
    // An inference copy's parameters (some written back by the operators without a gradient
    // flag) get autodiff and a gradient flag each; `train` restores batch norm's flags.
    model.clone().train().train_params()
}

trait TrainParams {
    fn train_params(self) -> Self;
}

impl TrainParams for ZooNet {
    /// Every float parameter requires a gradient (batch-norm γ/β and biases too).
    fn train_params(self) -> Self {
        struct Req;
        impl burn::module::ModuleMapper for Req {
            fn map_float<const D: usize>(
                &mut self,
                p: burn::module::Param<Tensor<D>>,
            ) -> burn::module::Param<Tensor<D>> {
                let (id, t, mapper) = p.consume();
                burn::module::Param::from_mapped_value(
                    id,
                    t.detach().autodiff().require_grad(),
                    mapper,
                )
            }
        }
        self.map(&mut Req)
    }
}
