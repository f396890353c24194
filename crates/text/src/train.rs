//! Training and prediction for either classifier: bucketed mini-batches padded to their own
//! longest sentence, Adam (lazy Adam for the word vectors), cross-entropy, Kim's max-norm
//! constraint after each step, early stopping on dev accuracy through core's loop.

use crate::models::SentenceClassifier;
use crate::models::kernel::{self, ConvShape, NONE};
// Lazy Adam for the word vectors, dense Adam for the filters: see the kernel's page for why.
use ferrolab_core::Result;
use ferrolab_core::burn::nn::loss::CrossEntropyLossConfig;
use ferrolab_core::burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::activation::softmax;
use ferrolab_core::kernels::adam::AdamParam;
use ferrolab_core::train::{StepOutput, TrainStep};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// Sentences as token ids with their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// Token ids per sentence (non-empty).
    pub ids: Vec<Vec<usize>>,
    /// Class per sentence.
    pub labels: Vec<usize>,
}

impl Encoded {
    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// The subset at `idx`.
    pub fn subset(&self, idx: &[usize]) -> Encoded {
        Encoded {
            ids: idx.iter().map(|&i| self.ids[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// Token and mask tensors `[B, T]` for the sentences `idx`, padded to the longest one (and at
/// least `min_len`, so every filter width fits).
pub fn batch_tensors(
    data: &Encoded,
    idx: &[usize],
    min_len: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2>) {
    let t = idx
        .iter()
        .map(|&i| data.ids[i].len())
        .max()
        .unwrap_or(1)
        .max(min_len);
    let mut tokens = vec![0i64; idx.len() * t];
    let mut mask = vec![0f32; idx.len() * t];
    for (r, &i) in idx.iter().enumerate() {
        for (c, &tok) in data.ids[i].iter().enumerate() {
            tokens[r * t + c] = tok as i64;
            mask[r * t + c] = 1.0;
        }
    }
    (
        Tensor::from_data(TensorData::new(tokens, [idx.len(), t]), device),
        Tensor::from_data(TensorData::new(mask, [idx.len(), t]), device),
    )
}

/// Class probabilities `[n][classes]` of a model in evaluation mode. Sentences are batched by
/// length so little time goes into padding; results come back in input order.
pub fn predict_proba<M: SentenceClassifier>(
    model: &M,
    data: &Encoded,
    min_len: usize,
    device: &Device,
) -> Vec<Vec<f32>> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| data.ids[i].len());
    let mut out = vec![Vec::new(); data.len()];
    for chunk in order.chunks(256) {
        let (tokens, mask) = batch_tensors(data, chunk, min_len, device);
        let probs = softmax(model.forward(tokens, mask), 1);
        let classes = probs.dims()[1];
        let flat = ferrolab_core::nn::to_vec_f32(probs);
        for (r, &i) in chunk.iter().enumerate() {
            out[i] = flat[r * classes..(r + 1) * classes].to_vec();
        }
    }
    out
}

/// Arg-max of each probability row.
pub fn argmax(probs: &[Vec<f32>]) -> Vec<usize> {
    probs
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}

/// Accuracy of `model` on `data`.
pub fn accuracy<M: SentenceClassifier>(
    model: &M,
    data: &Encoded,
    min_len: usize,
    device: &Device,
) -> f64 {
    let pred = argmax(&predict_proba(model, data, min_len, device));
    ferrolab_core::metrics::accuracy(&pred, &data.labels)
}

/// The distinct token ids of a batch and, per position, the index into them ([`NONE`] for
/// padding, which is neither looked up nor multiplied).
fn unique_ids(data: &Encoded, idx: &[usize], t: usize) -> (Vec<usize>, Vec<u32>) {
    let mut slot: std::collections::HashMap<usize, u32> = std::collections::HashMap::new();
    let mut uniq = Vec::new();
    let mut rows = vec![NONE; idx.len() * t];
    for (r, &i) in idx.iter().enumerate() {
        for (c, &tok) in data.ids[i].iter().take(t).enumerate() {
            rows[r * t + c] = *slot.entry(tok).or_insert_with(|| {
                uniq.push(tok);
                (uniq.len() - 1) as u32
            });
        }
    }
    (uniq, rows)
}

/// One model being trained: the system's side of core's loop.
pub struct Fit<'a, M: SentenceClassifier> {
    model: Option<M>,
    embedding: AdamParam,
    conv_weight: AdamParam,
    conv_bias: AdamParam,
    shape: ConvShape,
    /// Whether `model`'s own word vectors and filters match the ones trained here.
    synced: bool,
    best: Option<M>,
    optim: ModuleOptimizer,
    train: &'a Encoded,
    dev: Option<&'a Encoded>,
    rng: StdRng,
    batch_size: usize,
    min_len: usize,
    max_norm: f64,
    device: Device,
}

impl<'a, M: SentenceClassifier> Fit<'a, M> {
    /// Prepares training of `model` (built on the training device) with batches drawn by `seed`.
    pub fn new(
        model: M,
        train: &'a Encoded,
        dev: Option<&'a Encoded>,
        batch_size: usize,
        min_len: usize,
        max_norm: f64,
        seed: u64,
    ) -> Self {
        let encoder = model.encoder();
        let shape = encoder.shape();
        let (w, b) = encoder.conv_params();
        Fit {
            embedding: AdamParam::new(
                ferrolab_core::nn::to_vec_f32(encoder.embedding.weight.val()),
                shape.embed,
            ),
            conv_weight: AdamParam::new(w, 1),
            conv_bias: AdamParam::new(b, 1),
            shape,
            synced: true,
            model: Some(model),
            best: None,
            optim: AdamConfig::new().init(),
            train,
            dev,
            rng: StdRng::seed_from_u64(seed),
            batch_size,
            min_len,
            max_norm,
            device: ferrolab_core::backend::train_device(),
        }
    }

    /// The trained model (the best on dev if early stopping restored it).
    pub fn into_model(mut self) -> Option<M> {
        self.sync();
        self.model
    }

    /// Copies the word vectors and filters trained here into the model.
    fn sync(&mut self) {
        if !self.synced {
            let rows = self.embedding.w.len() / self.shape.embed.max(1);
            let emb = Tensor::from_data(
                TensorData::new(self.embedding.w.clone(), [rows, self.shape.embed]),
                &self.device,
            );
            let (w, b) = (self.conv_weight.w.clone(), self.conv_bias.w.clone());
            self.model = self
                .model
                .take()
                .map(|m| m.map_encoder(|e| e.set_embedding_tensor(emb).with_conv_params(w, b)));
            self.synced = true;
        }
    }
}

impl<M: SentenceClassifier> Fit<'_, M> {
    /// [`TrainStep::step`]'s work, on whichever thread calls it.
    fn step_here(&mut self, batch: Vec<usize>, lr: f64) -> Result<StepOutput> {
        let model = self.model.take().ok_or_else(|| {
            ferrolab_core::CoreError::Runtime("model lost after a failed step".into())
        })?;
        let t = batch
            .iter()
            .map(|&i| self.train.ids[i].len())
            .max()
            .unwrap_or(1)
            .max(self.min_len);
        let (uniq, rows) = unique_ids(self.train, &batch, t);
        let x = self.embedding.rows(&uniq);
        let (wc, bc) = (&self.conv_weight.w, &self.conv_bias.w);
        let y = kernel::forward(&self.shape, &x, &rows, t, wc, bc);
        let (b, c) = (batch.len(), self.shape.channels());
        let maps = Tensor::<3>::from_data(TensorData::new(y.clone(), [b, c, t]), &self.device)
            .require_grad();
        let mask: Vec<f32> = rows
            .iter()
            .map(|&r| if r == NONE { 0.0 } else { 1.0 })
            .collect();
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), &self.device);
        let labels: Vec<i64> = batch.iter().map(|&i| self.train.labels[i] as i64).collect();
        let targets =
            Tensor::<1, Int>::from_data(TensorData::new(labels, [batch.len()]), &self.device);
        let logits = model.forward_maps(maps.clone(), mask);
        let loss = CrossEntropyLossConfig::new()
            .init(&self.device)
            .forward(logits, targets);
        let loss_value = f64::from(ferrolab_core::nn::to_vec_f32(loss.clone())[0]);
        let mut grads = loss.backward();
        if let Some(dy) = maps.grad_remove(&mut grads) {
            let dy = ferrolab_core::nn::to_vec_f32(dy);
            let g = kernel::backward(&self.shape, &x, &rows, t, wc, &y, &dy);
            self.embedding.update_rows(&uniq, &g.x, lr);
            self.conv_weight.update(&g.w, lr);
            self.conv_bias.update(&g.bias, lr);
            self.synced = false;
        }
        let grads = GradientsParams::from_grads(grads, &model);
        let mut model = self.optim.step(lr, model, grads);
        if self.max_norm > 0.0 {
            model = model.apply_max_norm(self.max_norm);
        }
        self.model = Some(model);
        Ok(StepOutput {
            loss: loss_value,
            examples: batch.len(),
        })
    }
}

impl<M: SentenceClassifier> TrainStep for Fit<'_, M> {
    type Batch = Vec<usize>;

    fn batches(&mut self, _epoch: usize) -> Result<Vec<Vec<usize>>> {
        // Bucketing: shuffle, sort by length within windows of 50 batches, cut batches, shuffle
        // the batches. Each batch then pads to a similar length (about half the FLOPs of
        // random batches on MR) while the order stays random from epoch to epoch.
        let mut idx: Vec<usize> = (0..self.train.len()).collect();
        idx.shuffle(&mut self.rng);
        for window in idx.chunks_mut(self.batch_size * 50) {
            window.sort_by_key(|&i| self.train.ids[i].len());
        }
        let mut batches: Vec<Vec<usize>> =
            idx.chunks(self.batch_size).map(<[usize]>::to_vec).collect();
        batches.shuffle(&mut self.rng);
        Ok(batches)
    }

    fn step(&mut self, batch: Vec<usize>, lr: f64) -> Result<StepOutput> {
        // On a pool worker (`backend::in_pool`): the step's many short parallel loops then
        // start without waking this thread each time. Same bits either way.
        ferrolab_core::backend::in_pool(|| self.step_here(batch, lr))
    }

    fn validate(&mut self) -> Result<BTreeMap<String, f64>> {
        self.sync();
        let (Some(dev), Some(model)) = (self.dev, self.model.as_ref()) else {
            return Ok(BTreeMap::new());
        };
        let acc = accuracy(
            &model.valid(),
            dev,
            self.min_len,
            &ferrolab_core::backend::device(),
        );
        Ok([("dev_accuracy".to_string(), acc)].into())
    }

    fn save_best(&mut self) {
        self.sync();
        self.best = self.model.clone();
    }

    fn restore_best(&mut self) {
        if let Some(b) = self.best.take() {
            self.model = Some(b);
            self.synced = true;
        }
    }
}
