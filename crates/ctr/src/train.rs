//! Training (Adam on the binary cross-entropy of the logits, early stopping on validation
//! AUC through core's loop) and batched prediction.

use crate::model::CtrNet;
use crate::schema::Encoded;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use ferrolab_core::Result;
use ferrolab_core::metrics::{log_loss, roc_auc};
use ferrolab_core::train::{StepOutput, TrainStep};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// Slot ids, weights and labels of the instances `idx` as tensors.
pub fn batch_tensors(
    data: &Encoded,
    idx: &[usize],
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2>, Tensor<1>) {
    let s = data.slots;
    let mut ids = Vec::with_capacity(idx.len() * s);
    let mut w = Vec::with_capacity(idx.len() * s);
    let mut y = Vec::with_capacity(idx.len());
    for &i in idx {
        ids.extend(data.ids[i * s..(i + 1) * s].iter().map(|&v| i64::from(v)));
        w.extend_from_slice(&data.w[i * s..(i + 1) * s]);
        y.push(data.labels[i]);
    }
    (
        Tensor::from_data(TensorData::new(ids, [idx.len(), s]), device),
        Tensor::from_data(TensorData::new(w, [idx.len(), s]), device),
        Tensor::from_data(TensorData::new(y, [idx.len()]), device),
    )
}

/// Mean binary cross-entropy of `logits` against 0/1 `labels`, computed stably:
/// `max(l, 0) − l·y + log(1 + e^{−|l|})`.
pub fn bce_with_logits(logits: Tensor<1>, labels: Tensor<1>) -> Tensor<1> {
    let pos = logits.clone().clamp_min(0.0);
    let soft = logits.clone().abs().neg().exp().log1p();
    (pos - logits * labels + soft).mean()
}

/// Click probabilities of every instance, in chunks of 4096 on the inference device.
pub fn predict_proba(model: &CtrNet, data: &Encoded, device: &Device) -> Vec<f64> {
    let mut out = Vec::with_capacity(data.len());
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(4096) {
        let (ids, w, _) = batch_tensors(data, chunk, device);
        let p = sigmoid(model.forward(ids, w));
        out.extend(ferrolab_core::nn::to_vec_f32(p).into_iter().map(f64::from));
    }
    out
}

/// `(AUC, log-loss)` of `model` on `data`.
pub fn evaluate(model: &CtrNet, data: &Encoded, device: &Device) -> (f64, f64) {
    let p = predict_proba(model, data, device);
    let y = data.clicks();
    (roc_auc(&p, &y), log_loss(&p, &y))
}

/// One model being trained: the system's side of core's loop.
pub struct Fit<'a> {
    model: Option<CtrNet>,
    best: Option<CtrNet>,
    optim: ModuleOptimizer,
    train: &'a Encoded,
    valid: Option<&'a Encoded>,
    rng: StdRng,
    batch_size: usize,
    device: Device,
    /// Seconds spent inside `step` (training throughput without validation).
    pub step_seconds: f64,
    /// Examples seen by `step`.
    pub step_examples: usize,
}

impl<'a> Fit<'a> {
    /// Prepares training of `model` (built on the training device); batches drawn by `seed`.
    pub fn new(
        model: CtrNet,
        train: &'a Encoded,
        valid: Option<&'a Encoded>,
        batch_size: usize,
        seed: u64,
    ) -> Self {
        Fit {
            model: Some(model),
            best: None,
            optim: AdamConfig::new().init(),
            train,
            valid,
            rng: StdRng::seed_from_u64(seed),
            batch_size,
            device: ferrolab_core::backend::train_device(),
            step_seconds: 0.0,
            step_examples: 0,
        }
    }

    /// The trained model (the best on validation if early stopping restored it).
    pub fn into_model(self) -> Option<CtrNet> {
        self.model
    }
}

impl TrainStep for Fit<'_> {
    type Batch = Vec<usize>;

    fn batches(&mut self, _epoch: usize) -> Result<Vec<Vec<usize>>> {
        let mut idx: Vec<usize> = (0..self.train.len()).collect();
        idx.shuffle(&mut self.rng);
        Ok(idx.chunks(self.batch_size).map(<[usize]>::to_vec).collect())
    }

    fn step(&mut self, batch: Vec<usize>, lr: f64) -> Result<StepOutput> {
        let sw = ferrolab_core::resources::Stopwatch::start();
        let model = self.model.take().ok_or_else(|| {
            ferrolab_core::CoreError::Runtime("model lost after a failed step".into())
        })?;
        let (ids, w, y) = batch_tensors(self.train, &batch, &self.device);
        let loss = bce_with_logits(model.forward(ids, w), y);
        let loss_value = f64::from(ferrolab_core::nn::to_vec_f32(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(lr, model, grads));
        self.step_seconds += sw.seconds();
        self.step_examples += batch.len();
        Ok(StepOutput {
            loss: loss_value,
            examples: batch.len(),
        })
    }

    fn validate(&mut self) -> Result<BTreeMap<String, f64>> {
        let (Some(valid), Some(model)) = (self.valid, self.model.as_ref()) else {
            return Ok(BTreeMap::new());
        };
        let (auc, ll) = evaluate(&model.valid(), valid, &ferrolab_core::backend::device());
        Ok([
            ("valid_auc".to_string(), auc),
            ("valid_logloss".to_string(), ll),
        ]
        .into())
    }

    fn save_best(&mut self) {
        self.best = self.model.clone();
    }

    fn restore_best(&mut self) {
        if let Some(b) = self.best.take() {
            self.model = Some(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::backend::device;

    #[test]
    fn bce_matches_the_formula() {
        let dev = device();
        let l = Tensor::<1>::from_data(TensorData::new(vec![2.0f32, -1.0, 0.0], [3]), &dev);
        let y = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [3]), &dev);
        let got = f64::from(ferrolab_core::nn::to_vec_f32(bce_with_logits(l, y))[0]);
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let want = -((s(2.0)).ln() + (s(-1.0)).ln() + (1.0 - s(0.0)).ln()) / 3.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
