//! One method trained with one seed: SGD with momentum and poly decay for a fixed number of
//! iterations, validation on whole volumes every `train.eval_every` iterations keeping the
//! best-validation weights (AttenScribble's protocol), and a training state every
//! `train.checkpoint_every` iterations that `--resume` continues from bit for bit.
//!
//! Determinism: the batch of iteration `it` comes from the permutation of epoch
//! `it / (n / batch)` seeded by the run's seed and that epoch, its augmentation from a
//! generator seeded by the run's seed and `it`; dropout draws from burn's generator, whose
//! state is not saved, so a resumed run reseeds it from the seed and the iteration.

use super::config::AttenScribbleConfig;
use super::data::{
    CLASSES, NUM_CLASSES, NamedVolume, TrainSet, augment, resize_bilinear, resize_nearest,
    split_mask,
};
use super::losses::{
    AttnWindow, GatedCrf, affinity_attentive_loss, downsample, full_supervision, partial_ce,
};
use super::model::{AttenUNet, AttenUNetSpec, Output, SpatialAttention};
use crate::metrics::seg::class_score;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use ferrolab_core::resources::Stopwatch;
use ferrolab_core::{SysResult, SystemError};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which losses (and network) a method uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Partial cross-entropy on scribbles, plain UNet.
    Pce,
    /// pCE + gated CRF, plain UNet.
    PceGcrf,
    /// pCE + gated CRF + attentive loss, UNet with the attention block.
    AttenScribble,
    /// Dense labels, CE + Dice, plain UNet.
    Full,
}

impl Method {
    /// From a `train.methods` name.
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "pce" => Method::Pce,
            "pce_gcrf" => Method::PceGcrf,
            "attenscribble" => Method::AttenScribble,
            "full" => Method::Full,
            _ => return None,
        })
    }

    /// The report's name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Pce => "pce",
            Method::PceGcrf => "pce_gcrf",
            Method::AttenScribble => "attenscribble",
            Method::Full => "full",
        }
    }
}

/// The network a method trains.
pub fn spec_for(cfg: &AttenScribbleConfig, method: Method) -> AttenUNetSpec {
    AttenUNetSpec {
        in_channels: 1,
        classes: NUM_CLASSES,
        widths: cfg.model.widths.clone(),
        dropout: cfg.model.dropout.clone(),
        attention_level: (method == Method::AttenScribble).then_some(cfg.model.attention_level),
        mlp_ratio: cfg.model.mlp_ratio,
    }
}

/// What one training batch supervises with (row-major `N·H·W`, the image in [0, 1]).
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    /// The input intensities (the gated CRF's colour feature).
    pub image: &'a [f32],
    /// Dense labels (full supervision only).
    pub labels: &'a [u8],
    /// Scribbles, [`super::losses::UNLABELED`] where unannotated.
    pub scribbles: &'a [u8],
    /// Per sample: its scribbles hold more than one class (else the attentive loss skips it).
    pub multi: &'a [bool],
}

/// A method's training loss: the forward pass and the losses of one step, shared by
/// [`train_one`] and the step benchmark (`examples/attenscribble_step_bench.rs`), so that the
/// benchmark times exactly what training runs.
#[derive(Debug)]
pub struct StepLoss {
    method: Method,
    crf: GatedCrf,
    crf_weight: f64,
    attn_weight: f64,
    attn_start: usize,
    /// The attentive loss's window and the attention grid's stride (AttenScribble only).
    window: Option<(AttnWindow, usize)>,
    /// When on, running sums of the weighted terms (pCE, gated CRF, attentive) and the mean
    /// affinity inside the window, for the training log: they show which term moves the
    /// network and whether the affinity has collapsed (the attentive term's gradient only
    /// ever pushes `K` down). Off in the step benchmark, which times the bare step.
    trace: Option<std::sync::Mutex<TermSums>>,
}

/// Running sums of a method's loss terms since the last [`StepLoss::take_terms`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TermSums {
    pub pce: f64,
    pub crf: f64,
    pub attn: f64,
    /// Sum over steps of the mean `K_ij` over the window's pairs (`G_ij > 0`) of the
    /// multi-class samples, and the number of steps that had such pairs.
    pub k_mean: f64,
    pub k_steps: usize,
    /// Sums over steps of the mean `K_ij` over window pairs of label-pure cells with the same
    /// (different) dense label, and the steps that had such pairs (see [`affinity_by_label`]).
    pub k_same: f64,
    pub k_same_steps: usize,
    pub k_diff: f64,
    pub k_diff_steps: usize,
    pub steps: usize,
}

impl TermSums {
    /// The log line's tail: per-step means of the terms, prefixed `; ` (empty when nothing was
    /// recorded).
    pub fn line(&self) -> String {
        // pCE alone and full supervision record no terms: print nothing rather than zeros.
        if self.steps == 0 {
            return String::new();
        }
        let n = self.steps as f64;
        let mut line = format!(
            "; terms/step: pCE {:.4}, w·gCRF {:.4}, w·attentive {:.4}",
            self.pce / n,
            self.crf / n,
            self.attn / n,
        );
        if let Some(k) = self.k_window_mean() {
            line.push_str(&format!(", mean K in window {k:.4}"));
        }
        if let (Some(same), Some(diff)) = (self.k_same_mean(), self.k_diff_mean()) {
            line.push_str(&format!(
                ", K same-label {same:.4} vs different-label {diff:.4} (contrast {:.3})",
                same / diff
            ));
        }
        line
    }

    /// Mean over steps of the mean affinity in the window (`None` before the attentive loss
    /// has run).
    pub fn k_window_mean(&self) -> Option<f64> {
        (self.k_steps > 0).then(|| self.k_mean / self.k_steps as f64)
    }

    /// Mean affinity of window pairs whose cells hold the same label.
    pub fn k_same_mean(&self) -> Option<f64> {
        (self.k_same_steps > 0).then(|| self.k_same / self.k_same_steps as f64)
    }

    /// Mean affinity of window pairs whose cells hold different labels.
    pub fn k_diff_mean(&self) -> Option<f64> {
        (self.k_diff_steps > 0).then(|| self.k_diff / self.k_diff_steps as f64)
    }
}

fn scalar(t: &Tensor<1>) -> f64 {
    f64::from(ferrolab_core::nn::to_vec_f32(t.clone().detach())[0])
}

impl StepLoss {
    /// The losses of `method` for `model` at training size `size`.
    pub fn new(
        cfg: &AttenScribbleConfig,
        method: Method,
        model: &AttenUNet,
        size: usize,
    ) -> StepLoss {
        let window = model.attention_stride().map(|s| {
            let g = size / s;
            (
                AttnWindow::new(g, g, cfg.loss.attn_radius, cfg.loss.attn_sigma),
                s,
            )
        });
        StepLoss {
            method,
            crf: GatedCrf {
                radius: cfg.loss.crf_radius,
                sigma_xy: cfg.loss.crf_sigma_xy,
                sigma_rgb: cfg.loss.crf_sigma_rgb,
                weight: cfg.loss.crf_kernel_weight,
            },
            crf_weight: cfg.loss.crf_weight,
            attn_weight: cfg.loss.attn_weight,
            attn_start: cfg.loss.attn_start,
            window,
            trace: None,
        }
    }

    /// Keeps running sums of the loss terms (see [`StepLoss::take_terms`]).
    pub fn with_trace(mut self) -> StepLoss {
        self.trace = Some(std::sync::Mutex::new(TermSums::default()));
        self
    }

    /// The sums since the last call (zeros without [`StepLoss::with_trace`]).
    pub fn take_terms(&self) -> TermSums {
        self.trace
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }

    /// Forward pass of `x: [N, 1, H, W]` and the method's loss at iteration `it`.
    pub fn loss(&self, model: &AttenUNet, x: Tensor<4>, t: &Targets, it: usize) -> Tensor<1> {
        self.loss_of(model.forward(x), model.attention_block(), t, it)
    }

    /// The method's loss of a forward pass's `out` (`block`: the network's attention block,
    /// whose affinity head turns the attention logits into `K`).
    pub fn loss_of(
        &self,
        out: Output,
        block: Option<&SpatialAttention>,
        t: &Targets,
        it: usize,
    ) -> Tensor<1> {
        match self.method {
            Method::Full => full_supervision(out.logits, t.labels),
            Method::Pce => partial_ce(out.logits, t.scribbles),
            Method::PceGcrf | Method::AttenScribble => {
                let p = softmax(out.logits.clone(), 1);
                let pce = partial_ce(out.logits, t.scribbles);
                // NaN: "not measured this step" (no block, or before `attn_start`).
                let mut terms = TermSums {
                    k_same: f64::NAN,
                    k_diff: f64::NAN,
                    ..TermSums::default()
                };
                if self.trace.is_some() {
                    terms.pce = scalar(&pce);
                }
                let mut loss = pce;
                if self.crf_weight > 0.0 {
                    let crf = self.crf.loss(p.clone(), t.image, t.scribbles) * self.crf_weight;
                    if self.trace.is_some() {
                        terms.crf = scalar(&crf);
                    }
                    loss = loss + crf;
                }
                if let (Some(att_logits), Some(block), Some((win, s))) =
                    (out.attention, block, &self.window)
                    && self.attn_weight > 0.0
                    && it >= self.attn_start
                {
                    let (probs, ab) = block.affinity_inputs(att_logits);
                    let out = affinity_attentive_loss(
                        probs,
                        ab,
                        downsample(p, *s),
                        win,
                        t.multi,
                        self.trace.is_some(),
                    );
                    if let Some(kp) = &out.k {
                        terms.k_mean = window_mean(kp);
                        let size = (t.labels.len() / t.multi.len().max(1)).isqrt();
                        let by = affinity_by_label(kp, win, t.labels, t.multi, size, *s);
                        (terms.k_same, terms.k_diff) = (by.same_mean(), by.diff_mean());
                    }
                    let attn = out.loss * self.attn_weight;
                    if self.trace.is_some() {
                        terms.attn = scalar(&attn);
                    }
                    loss = loss + attn;
                }
                if let Some(tr) = &self.trace {
                    // A Mutex, not a RefCell, so that the step can run on a pool worker
                    // (`in_pool`); it is held for these additions only.
                    let mut sums = tr.lock().unwrap_or_else(|p| p.into_inner());
                    sums.pce += terms.pce;
                    sums.crf += terms.crf;
                    sums.attn += terms.attn;
                    if terms.k_mean.is_finite() && terms.k_mean > 0.0 {
                        sums.k_mean += terms.k_mean;
                        sums.k_steps += 1;
                    }
                    if terms.k_same.is_finite() {
                        sums.k_same += terms.k_same;
                        sums.k_same_steps += 1;
                    }
                    if terms.k_diff.is_finite() {
                        sums.k_diff += terms.k_diff;
                        sums.k_diff_steps += 1;
                    }
                    sums.steps += 1;
                }
                loss
            }
        }
    }
}

/// Mean of the affinity over the window's pairs of the multi-class samples, from
/// [`AffinityLoss::k`](super::losses::AffinityLoss) (NaN marks the pairs that do not exist).
fn window_mean(kp: &[f32]) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for k in kp.iter().filter(|k| k.is_finite()) {
        sum += f64::from(*k);
        count += 1;
    }
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

/// The affinity split by the dense label, a diagnostic of whether `K` carries image
/// information (see [`affinity_by_label`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LabelAffinity {
    pub same_sum: f64,
    pub same_pairs: usize,
    pub diff_sum: f64,
    pub diff_pairs: usize,
}

impl LabelAffinity {
    /// Mean `K` over same-label pairs (NaN without any).
    pub fn same_mean(&self) -> f64 {
        if self.same_pairs == 0 {
            f64::NAN
        } else {
            self.same_sum / self.same_pairs as f64
        }
    }

    /// Mean `K` over different-label pairs (NaN without any).
    pub fn diff_mean(&self) -> f64 {
        if self.diff_pairs == 0 {
            f64::NAN
        } else {
            self.diff_sum / self.diff_pairs as f64
        }
    }
}

/// The affinity `kp: [N, L, P]` (`K_ij` of cell `i` and its `p`-th window neighbour, as
/// [`AffinityLoss::k`](super::losses::AffinityLoss) holds it; NaN where there is none) of the
/// multi-class samples, split by the **dense** labels (`labels: [N, size, size]`): a cell of
/// the attention grid (a `stride × stride` block) counts only when every pixel of it has one
/// label, and a pair of such cells is "same" or "different" by those labels.
///
/// Why: the attentive loss can only do more than an image-agnostic smoothing of the
/// prediction if the affinity is higher between pixels of one structure than across a
/// boundary. With `K ≈ sigmoid(b)` everywhere (flat attention, or `a ≈ 0`) the two means are
/// equal; their ratio measures what the attention adds. The labels are read for this log
/// only, never by a loss.
pub fn affinity_by_label(
    kp: &[f32],
    window: &AttnWindow,
    labels: &[u8],
    multi: &[bool],
    size: usize,
    stride: usize,
) -> LabelAffinity {
    let mut out = LabelAffinity::default();
    if stride == 0 || size == 0 {
        return out;
    }
    let g = size / stride;
    let (l, pairs) = (g * g, window.pairs());
    if window.cells() != l
        || kp.len() < multi.len() * l * pairs
        || labels.len() < multi.len() * size * size
    {
        return out;
    }
    for (n, &m) in multi.iter().enumerate() {
        if !m {
            continue;
        }
        let lab = &labels[n * size * size..(n + 1) * size * size];
        // The label of each cell, when the whole cell has one.
        let pure: Vec<Option<u8>> = (0..l)
            .map(|c| {
                let (gy, gx) = (c / g, c % g);
                let first = lab[gy * stride * size + gx * stride];
                let one = (0..stride).all(|dy| {
                    let row = (gy * stride + dy) * size + gx * stride;
                    lab[row..row + stride].iter().all(|&v| v == first)
                });
                one.then_some(first)
            })
            .collect();
        let k = &kp[n * l * pairs..(n + 1) * l * pairs];
        for (i, li) in pure.iter().enumerate() {
            let Some(li) = li else { continue };
            for p in 0..pairs {
                let Some((j, _)) = window.neighbour(i, p) else {
                    continue;
                };
                let (Some(lj), v) = (pure[j], k[i * pairs + p]) else {
                    continue;
                };
                if !v.is_finite() {
                    continue;
                }
                if *li == lj {
                    out.same_sum += f64::from(v);
                    out.same_pairs += 1;
                } else {
                    out.diff_sum += f64::from(v);
                    out.diff_pairs += 1;
                }
            }
        }
    }
    out
}

/// Per-class scores over a set of volumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean Dice per class (RV, Myo, LV) over the volumes holding the class (`NaN` when none
    /// holds it; `null` in a saved unit).
    #[serde(with = "ferrolab_core::run::f64s_or_null")]
    pub dice: [f64; 3],
    /// Mean HD95 (pixels) per class over those volumes with a non-empty prediction
    /// (`NaN` when none had one; `null` in a saved unit).
    #[serde(with = "ferrolab_core::run::f64s_or_null")]
    pub hd95: [f64; 3],
    /// (volume, class) pairs with the class in the label but none predicted: Dice 0, no HD95.
    pub hd95_skipped: usize,
    pub volumes: usize,
}

impl Scores {
    /// Mean Dice over the classes some volume's label holds (all three on ACDC); `NaN` when
    /// no label holds any. A class absent from every label has no Dice, and averaging its
    /// `NaN` in would make every evaluation `NaN` and leave model selection with nothing.
    pub fn mean_dice(&self) -> f64 {
        let v: Vec<f64> = self
            .dice
            .iter()
            .copied()
            .filter(|d| d.is_finite())
            .collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    /// Mean HD95 over the classes that have one.
    pub fn mean_hd95(&self) -> f64 {
        let v: Vec<f64> = self
            .hd95
            .iter()
            .copied()
            .filter(|h| h.is_finite())
            .collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }
}

/// Labels predicted for every slice of `vol` (`d·h·w`): each slice resized to the training
/// size, predicted, and the label map resized back (nearest), as the references do.
pub fn predict_volume(
    model: &AttenUNet,
    image: &[u8],
    (d, h, w): (usize, usize, usize),
    size: usize,
    batch: usize,
) -> Vec<u8> {
    let device = ferrolab_core::backend::device();
    let n = h * w;
    let mut out = Vec::with_capacity(d * n);
    let slices: Vec<usize> = (0..d).collect();
    for chunk in slices.chunks(batch.max(1)) {
        let mut x = Vec::with_capacity(chunk.len() * size * size);
        for &k in chunk {
            x.extend(resize_bilinear(
                &image[k * n..(k + 1) * n],
                (h, w),
                (size, size),
            ));
        }
        let x = Tensor::<4>::from_data(TensorData::new(x, [chunk.len(), 1, size, size]), &device);
        let pred = ferrolab_core::nn::to_vec_i64(model.forward(x).logits.argmax(1));
        for j in 0..chunk.len() {
            let p: Vec<u8> = pred[j * size * size..(j + 1) * size * size]
                .iter()
                .map(|&v| v as u8)
                .collect();
            out.extend(resize_nearest(&p, (size, size), (h, w)));
        }
    }
    out
}

/// Scores `model` (inference mode) on `volumes`.
pub fn evaluate(
    model: &AttenUNet,
    volumes: &[NamedVolume],
    size: usize,
    batch: usize,
) -> SysResult<Scores> {
    let mut sums = [0f64; 3];
    let mut counts = [0usize; 3];
    let mut hsum = [0f64; 3];
    let mut hcount = [0usize; 3];
    let mut skipped = 0;
    for nv in volumes {
        let v = &nv.volume;
        // On a pool worker, as training steps run (`backend::in_pool`).
        let pred = ferrolab_core::backend::in_pool(|| {
            predict_volume(model, &v.image, (v.d, v.h, v.w), size, batch)
        });
        let p: Vec<i64> = pred.iter().map(|&x| i64::from(x)).collect();
        let l: Vec<i64> = v.label.iter().map(|&x| i64::from(x)).collect();
        for (ci, &c) in CLASSES.iter().enumerate() {
            let s = class_score(&p, &l, &[v.d, v.h, v.w], &[1.0, 1.0, 1.0], c)
                .map_err(|e| SystemError::runtime(format!("{}: {e}", nv.name)))?;
            if let Some(s) = s {
                sums[ci] += s.dice;
                counts[ci] += 1;
                match s.hd95 {
                    Some(hd) => {
                        hsum[ci] += hd;
                        hcount[ci] += 1;
                    }
                    None => skipped += 1,
                }
            }
        }
    }
    let mut out = Scores {
        hd95_skipped: skipped,
        volumes: volumes.len(),
        ..Scores::default()
    };
    for ci in 0..3 {
        out.dice[ci] = if counts[ci] > 0 {
            sums[ci] / counts[ci] as f64
        } else {
            f64::NAN
        };
        out.hd95[ci] = if hcount[ci] > 0 {
            hsum[ci] / hcount[ci] as f64
        } else {
            f64::NAN
        };
    }
    Ok(out)
}

/// One validation point of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub iteration: usize,
    /// Mean training loss since the previous record.
    #[serde(with = "ferrolab_core::run::f64_or_null")]
    pub train_loss: f64,
    #[serde(with = "ferrolab_core::run::f64_or_null")]
    pub val_dice: f64,
    pub lr: f64,
    /// Seconds of training since the previous record (validation excluded).
    pub train_seconds: f64,
    /// AttenScribble only, means over the steps since the previous record (of this process:
    /// a resumed run starts them afresh, a log figure only): the affinity `K`
    /// over the window, and over its label-pure pairs with the same / a different dense label
    /// ([`affinity_by_label`]). Absent in records written before these were logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_same_label: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_diff_label: Option<f64>,
}

/// The result of one method and seed (saved as a unit of the run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub method: String,
    pub seed_index: usize,
    pub seed: u64,
    pub val: Scores,
    pub test: Option<Scores>,
    pub best_iteration: usize,
    pub history: Vec<EvalRecord>,
    pub train_seconds: f64,
    /// Mean seconds per training step.
    pub step_seconds: f64,
}

/// `train-state/<unit>/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    iterations_done: usize,
    size: usize,
    /// `None` until the first validation (a state saved before it once held −∞, which JSON
    /// writes as `null` and could not read back).
    best_dice: Option<f64>,
    best_iteration: usize,
    history: Vec<EvalRecord>,
    train_seconds: f64,
    #[serde(with = "ferrolab_core::run::f64_or_null")]
    loss_sum: f64,
    loss_count: usize,
    since_eval_seconds: f64,
}

/// SGD as the reference trains (momentum, no dampening, L2 weight decay added to the gradient),
/// one fused parallel pass per parameter (`crate::optim::FusedSgd`, the same arithmetic as
/// burn's `Sgd` to the bit, where burn's composed update took twice PyTorch's time). Its record
/// is burn `Sgd`'s, so checkpoints saved before resume unchanged. Shared with the step
/// benchmark, which times what training runs.
pub fn optimizer(cfg: &AttenScribbleConfig) -> ModuleOptimizer {
    crate::optim::FusedSgdConfig::default()
        .with_momentum(cfg.train.momentum.max(0.0))
        .with_weight_decay(cfg.train.weight_decay.max(0.0))
        .init()
}

/// `lr · (1 − it/total)^power`, the reference's poly schedule.
pub fn poly_lr(base: f64, it: usize, total: usize, power: f64) -> f64 {
    base * (1.0 - it as f64 / total as f64).max(0.0).powf(power)
}

fn werr(p: &Path, e: impl std::fmt::Display) -> SystemError {
    SystemError::runtime(format!("{}: {e}", p.display()))
}

fn save_state(
    dir: &Path,
    model: &AttenUNet,
    best: &AttenUNet,
    optim: &ModuleOptimizer,
    st: &State,
) -> SysResult<()> {
    // Files are written to a fresh folder, then `state.json` names it (atomically).
    let folder = dir.join(format!("it-{:08}", st.iterations_done));
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(|e| werr(&folder, e))?;
    }
    std::fs::create_dir_all(&folder).map_err(|e| werr(&folder, e))?;
    model
        .clone()
        .save_file(folder.join("model.bpk"))
        .map_err(|e| werr(&folder, e))?;
    best.clone()
        .save_file(folder.join("best.bpk"))
        .map_err(|e| werr(&folder, e))?;
    optim
        .save(folder.join("optim.bpk"))
        .map_err(|e| werr(&folder, e))?;
    let text = serde_json::to_vec_pretty(st).map_err(|e| werr(dir, e))?;
    ferrolab_core::run::write_atomic(&dir.join("state.json"), &text)?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        let keep = folder.file_name().map(|s| s.to_os_string());
        for e in entries.flatten() {
            if e.path().is_dir() && Some(e.file_name()) != keep {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

type Loaded = (State, AttenUNet, AttenUNet, ModuleOptimizer);

fn load_state(
    dir: &Path,
    fresh: AttenUNet,
    optim: ModuleOptimizer,
    size: usize,
) -> SysResult<Option<Loaded>> {
    let path = dir.join("state.json");
    if !path.exists() {
        return Ok(None);
    }
    let bad =
        |p: &Path, m: String| SystemError::usage(format!("training state {}: {m}", p.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| bad(&path, e.to_string()))?;
    let st: State = serde_json::from_str(&text)
        .map_err(|e| bad(&path, format!("not an attenscribble training state: {e}")))?;
    if st.size != size {
        return Err(bad(
            &path,
            format!("saved for input size {} but data.size is {size}", st.size),
        ));
    }
    let folder = dir.join(format!("it-{:08}", st.iterations_done));
    let first = |s: String| s.lines().next().unwrap_or("unreadable").to_string();
    let model = fresh
        .clone()
        .try_load_file(folder.join("model.bpk"))
        .map_err(|e| bad(&folder.join("model.bpk"), first(e.to_string())))?;
    let best = fresh
        .try_load_file(folder.join("best.bpk"))
        .map_err(|e| bad(&folder.join("best.bpk"), first(e.to_string())))?;
    // A damaged record can decode into NaN or infinite weights; training would then stop at
    // its first step with "loss is NaN", which names neither the cause nor the file.
    for (m, name) in [(&model, "model.bpk"), (&best, "best.bpk")] {
        if !all_weights_finite(m) {
            return Err(bad(
                &folder.join(name),
                "holds a weight that is NaN or infinite".into(),
            ));
        }
    }
    let optim_path = folder.join("optim.bpk");
    let optim =
        crate::optim::load_optimizer_record(optim, &optim_path).map_err(|m| bad(&optim_path, m))?;
    Ok(Some((st, model, best, optim)))
}

/// Whether every float parameter of `m` is finite.
fn all_weights_finite<M: Module>(m: &M) -> bool {
    struct Finite(bool);
    impl burn::module::ModuleVisitor for Finite {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if self.0 {
                self.0 = p.val().into_data().iter::<f32>().all(f32::is_finite);
            }
        }
    }
    let mut v = Finite(true);
    m.visit(&mut v);
    v.0
}

/// Everything one training run reads.
pub struct Job<'a> {
    pub cfg: &'a AttenScribbleConfig,
    pub train: &'a TrainSet,
    pub val: &'a [NamedVolume],
    pub test: Option<&'a [NamedVolume]>,
    pub method: Method,
    pub seed_index: usize,
    pub seed: u64,
    /// `train-state/<method>-<seed index>/`.
    pub state_dir: PathBuf,
    /// Stop (with an error saying so) after this many iterations in this call (tests).
    pub max_iterations_now: Option<usize>,
}

/// Trains and evaluates one method with one seed; returns its result and best model.
pub fn train_one(job: &Job) -> SysResult<(RunResult, AttenUNet)> {
    let cfg = job.cfg;
    let set = job.train;
    let size = set.size;
    let bs = cfg.train.batch_size;
    if set.len() < bs {
        return Err(SystemError::usage(format!(
            "train.batch_size = {bs} exceeds the {} training slices",
            set.len()
        )));
    }
    // The best checkpoint is chosen by validation Dice: labels without any structure give
    // none, and the run would end with its initial weights.
    let labelled = |c: i64| {
        job.val
            .iter()
            .any(|nv| nv.volume.label.iter().any(|&x| i64::from(x) == c))
    };
    if !CLASSES.iter().any(|&c| labelled(c)) {
        return Err(SystemError::usage(format!(
            "the {} validation volume(s) label no RV, Myo or LV voxel (classes 1-3): no Dice to select the model by (data.val)",
            job.val.len()
        )));
    }
    let device = ferrolab_core::backend::train_device();
    let _rng = ferrolab_core::backend::exclusive_rng();
    ferrolab_core::backend::seed_backend(ferrolab_core::seed::derive(job.seed, "init"));
    let spec = spec_for(cfg, job.method);
    let model = spec.build(&device).map_err(SystemError::usage)?;
    let (mut st, mut model, mut best, mut optim) =
        match load_state(&job.state_dir, model.clone(), optimizer(cfg), size)? {
            Some((st, m, b, o)) => {
                eprintln!(
                    "resume: {} seed {} continues after iteration {}",
                    job.method.name(),
                    job.seed_index,
                    st.iterations_done
                );
                // An independent inference copy: see where `best` is updated.
                (st, m, b.valid(), o)
            }
            None => (
                State {
                    iterations_done: 0,
                    size,
                    best_dice: None,
                    best_iteration: 0,
                    history: Vec::new(),
                    train_seconds: 0.0,
                    loss_sum: 0.0,
                    loss_count: 0,
                    since_eval_seconds: 0.0,
                },
                model.clone(),
                model.valid(),
                optimizer(cfg),
            ),
        };
    let total = cfg.train.iterations;
    let per_epoch = (set.len() / bs).max(1);
    let step_loss = StepLoss::new(cfg, job.method, &model, size).with_trace();
    let mut order: Vec<usize> = Vec::new();
    let mut order_epoch = usize::MAX;
    let start = st.iterations_done;
    let stop = job
        .max_iterations_now
        .map_or(total, |k| (start + k).min(total));
    // Dropout draws continue from a generator reseeded at the start of this call.
    ferrolab_core::backend::seed_backend(ferrolab_core::seed::derive(
        job.seed,
        &format!("dropout-{start}"),
    ));
    let label = format!(
        "attenscribble {} seed {}",
        job.method.name(),
        job.seed_index
    );
    let mut last_save = std::time::Instant::now();
    for it in start..stop {
        let clock = Stopwatch::start();
        let epoch = it / per_epoch;
        if epoch != order_epoch {
            order = (0..set.len()).collect();
            order.shuffle(&mut StdRng::seed_from_u64(ferrolab_core::seed::derive(
                job.seed,
                &format!("order-{epoch}"),
            )));
            order_epoch = epoch;
        }
        let b = it % per_epoch;
        let idx = &order[b * bs..(b + 1) * bs];
        let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(
            job.seed,
            &format!("augment-{it}"),
        ));
        let n = size * size;
        let (mut xs, mut labels, mut scribbles, mut multi) = (
            Vec::with_capacity(bs * n),
            Vec::with_capacity(bs * n),
            Vec::with_capacity(bs * n),
            Vec::with_capacity(bs),
        );
        for &i in idx {
            let s = set.sample(i);
            let s = if cfg.augment.enabled {
                augment(&s, cfg.augment.max_degrees as f32, &mut rng)
            } else {
                s
            };
            let (l, sc) = split_mask(&s.mask.data);
            xs.extend_from_slice(&s.image.data);
            labels.extend(l);
            scribbles.extend(sc);
            multi.push(set.multi_class[i]);
        }
        let x = Tensor::<4>::from_data(TensorData::new(xs.clone(), [bs, 1, size, size]), &device);
        let lr = poly_lr(cfg.train.lr, it, total, cfg.train.poly_power);
        let targets = Targets {
            image: &xs,
            labels: &labels,
            scribbles: &scribbles,
            multi: &multi,
        };
        // The step runs on a pool worker (`backend::in_pool`): its several hundred parallel
        // loops then start without waking this thread each time.
        let (value, stepped) = ferrolab_core::backend::in_pool(|| {
            let loss = step_loss.loss(&model, x, &targets, it);
            let value = f64::from(ferrolab_core::nn::to_vec_f32(loss.clone().detach())[0]);
            if !value.is_finite() {
                return (value, None);
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (value, Some(optim.step(lr, model, grads)))
        });
        let Some(stepped) = stepped else {
            // Right after a resume the likeliest cause is a damaged training state (optimiser
            // momentum or batch-norm statistics, which the load does not check): say where.
            let resumed = if start > 0 && it < start + 10 {
                format!(
                    " (continued from the training state in {} at iteration {start}, which may \
                     be damaged)",
                    job.state_dir.display()
                )
            } else {
                String::new()
            };
            return Err(SystemError::runtime(format!(
                "{label}: loss is {value} at iteration {it}{resumed}"
            )));
        };
        model = stepped;
        st.loss_sum += value;
        st.loss_count += 1;
        let secs = clock.seconds();
        st.train_seconds += secs;
        st.since_eval_seconds += secs;
        st.iterations_done = it + 1;
        let done = it + 1;
        if done.is_multiple_of(cfg.train.eval_every) || done == total {
            let scores = evaluate(&model.valid(), job.val, size, cfg.train.eval_batch)?;
            let d = scores.mean_dice();
            let terms = step_loss.take_terms();
            st.history.push(EvalRecord {
                iteration: done,
                train_loss: st.loss_sum / st.loss_count.max(1) as f64,
                val_dice: d,
                lr,
                train_seconds: st.since_eval_seconds,
                k_mean: terms.k_window_mean(),
                k_same_label: terms.k_same_mean(),
                k_diff_label: terms.k_diff_mean(),
            });
            let affine = model.attention_block().map_or(String::new(), |b| {
                let (a, b) = b.affine_values();
                format!(", affinity a {a:.3} b {b:.3}")
            });
            eprintln!(
                "{label}: iteration {done}/{total}, loss {:.4}, val Dice {d:.4} (RV {:.3}, Myo {:.3}, LV {:.3}), {:.2} s/step{}{affine}",
                st.loss_sum / st.loss_count.max(1) as f64,
                scores.dice[0],
                scores.dice[1],
                scores.dice[2],
                st.since_eval_seconds / st.loss_count.max(1) as f64,
                terms.line()
            );
            (st.loss_sum, st.loss_count, st.since_eval_seconds) = (0.0, 0, 0.0);
            if d > st.best_dice.unwrap_or(f64::NEG_INFINITY) {
                st.best_dice = Some(d);
                st.best_iteration = done;
                // `valid()` snapshots batch norm's running statistics; a clone would share
                // them with the training model, which keeps updating them in place.
                best = model.valid();
            }
        }
        // DESIGN's long-run rule: at least every 10 minutes, whatever the iteration count (a
        // step of the reference recipe takes seconds, so 500 of them would be most of an hour).
        if (done.is_multiple_of(cfg.train.checkpoint_every)
            || last_save.elapsed() >= std::time::Duration::from_secs(600))
            && done < total
        {
            save_state(&job.state_dir, &model, &best, &optim, &st)?;
            last_save = std::time::Instant::now();
        }
    }
    if st.iterations_done < total {
        save_state(&job.state_dir, &model, &best, &optim, &st)?;
        return Err(SystemError::runtime(format!(
            "{label}: stopped after iteration {} of {total}; continue with --resume",
            st.iterations_done
        )));
    }
    let val = evaluate(&best, job.val, size, cfg.train.eval_batch)?;
    let test = match job.test {
        Some(t) => Some(evaluate(&best, t, size, cfg.train.eval_batch)?),
        None => None,
    };
    let result = RunResult {
        method: job.method.name().into(),
        seed_index: job.seed_index,
        seed: job.seed,
        val,
        test,
        best_iteration: st.best_iteration,
        step_seconds: st.train_seconds / total as f64,
        train_seconds: st.train_seconds,
        history: st.history,
    };
    Ok((result, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state saved before the first validation, and records and scores of a run that
    /// predicted no class at all (Dice and HD95 NaN), read back as saved: JSON writes the
    /// non-finite figures as `null`.
    #[test]
    fn states_and_results_with_missing_figures_read_back() {
        let rec = EvalRecord {
            iteration: 20,
            train_loss: f64::NAN,
            val_dice: f64::NAN,
            lr: 0.01,
            train_seconds: 1.0,
            k_mean: None,
            k_same_label: None,
            k_diff_label: None,
        };
        let st = State {
            iterations_done: 10,
            size: 64,
            best_dice: None,
            best_iteration: 0,
            history: vec![rec.clone()],
            train_seconds: 2.0,
            loss_sum: 3.0,
            loss_count: 4,
            since_eval_seconds: 0.5,
        };
        let text = serde_json::to_string(&st).expect("serialise");
        let back: State = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back.best_dice, None);
        assert!(back.history[0].val_dice.is_nan() && back.history[0].train_loss.is_nan());
        // A state written before this change held a number there; it still reads.
        let old = text.replace("\"best_dice\":null", "\"best_dice\":0.25");
        assert_eq!(
            serde_json::from_str::<State>(&old).expect("old").best_dice,
            Some(0.25)
        );
        let sc = Scores {
            dice: [f64::NAN, 0.5, 0.0],
            hd95: [f64::NAN, 3.0, f64::NAN],
            hd95_skipped: 2,
            volumes: 1,
        };
        let r = RunResult {
            method: "pce".into(),
            seed_index: 0,
            seed: 1,
            val: sc.clone(),
            test: Some(sc),
            best_iteration: 20,
            history: vec![rec],
            train_seconds: 1.0,
            step_seconds: 0.1,
        };
        let back: RunResult =
            serde_json::from_str(&serde_json::to_string(&r).expect("serialise")).expect("reads");
        assert!(back.val.dice[0].is_nan() && back.val.hd95[2].is_nan());
        assert_eq!(back.val.dice[1], 0.5);
        assert_eq!(back.val.hd95[1], 3.0);
    }

    /// A 4×4 slice on a 2×2 attention grid (stride 2), window radius 1 (every other cell):
    /// cells 0 and 1 are all background, cell 2 all LV, cell 3 mixed (left out). Ordered window
    /// pairs of pure cells: (0,1), (1,0) same label; (0,2), (2,0), (1,2), (2,1) different. The
    /// second sample is single-class and must not count.
    #[test]
    fn affinity_is_split_by_the_dense_label_of_pure_cells() {
        let (size, stride, l) = (4, 2, 4);
        let win = AttnWindow::new(2, 2, 1, 1.0);
        let p = win.pairs();
        #[rustfmt::skip]
        let first: [u8; 16] = [
            0, 0, 0, 0,
            0, 0, 0, 0,
            3, 3, 3, 2,
            3, 3, 3, 3,
        ];
        let mut labels = first.to_vec();
        labels.extend([0u8; 16]);
        // K_ij = (i·L + j)/100 on the first sample's window pairs, 0.9 on the second's.
        let mut kp = vec![f32::NAN; 2 * l * p];
        for i in 0..l {
            for q in 0..p {
                if let Some((j, _)) = win.neighbour(i, q) {
                    kp[i * p + q] = (i * l + j) as f32 / 100.0;
                    kp[(l + i) * p + q] = 0.9;
                }
            }
        }
        let by = affinity_by_label(&kp, &win, &labels, &[true, false], size, stride);
        assert_eq!((by.same_pairs, by.diff_pairs), (2, 4));
        assert!(
            (by.same_mean() - (0.01 + 0.04) / 2.0).abs() < 1e-6,
            "{by:?}"
        );
        assert!(
            (by.diff_mean() - (0.02 + 0.08 + 0.06 + 0.09) / 4.0).abs() < 1e-6,
            "{by:?}"
        );
        // A pair without a value (NaN) does not count.
        let q01 = (0..p)
            .find(|&q| win.neighbour(0, q).map(|(j, _)| j) == Some(1))
            .unwrap_or_else(|| panic!("cell 1 is in cell 0's window"));
        kp[q01] = f32::NAN;
        let by = affinity_by_label(&kp, &win, &labels, &[true, false], size, stride);
        assert_eq!(by.same_pairs, 1);
        assert!((by.same_mean() - 0.04).abs() < 1e-6);
        // No multi-class sample: nothing measured.
        let none = affinity_by_label(&kp, &win, &labels, &[false, false], size, stride);
        assert!(none.same_mean().is_nan() && none.diff_mean().is_nan());
        assert!((window_mean(&kp[l * p..]) - 0.9).abs() < 1e-6);
    }

    /// A training state whose weights decoded to NaN or infinity is refused at load time
    /// (`load_state`), not discovered as a NaN loss one step later.
    #[test]
    fn non_finite_weights_are_found() {
        let dev = ferrolab_core::backend::device();
        let lin = |v: f32| {
            let mut l = burn::nn::LinearConfig::new(2, 1).init(&dev);
            l.weight = burn::module::Param::from_tensor(Tensor::<2>::from_data(
                TensorData::new(vec![0.5f32, v], [2, 1]),
                &dev,
            ));
            l
        };
        assert!(all_weights_finite(&lin(1.0)));
        assert!(!all_weights_finite(&lin(f32::NAN)));
        assert!(!all_weights_finite(&lin(f32::INFINITY)));
    }

    /// Records written before the affinity fields existed still load (a `--resume` of an older
    /// run folder), and the fields are left out of the JSON when absent.
    #[test]
    fn eval_records_without_affinity_fields_still_load() {
        let old =
            r#"{"iteration":200,"train_loss":0.5,"val_dice":0.4,"lr":0.05,"train_seconds":30.0}"#;
        let r: EvalRecord = serde_json::from_str(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.k_mean, r.k_same_label, r.k_diff_label),
            (None, None, None)
        );
        let back = serde_json::to_string(&r).unwrap_or_else(|e| panic!("{e}"));
        assert!(!back.contains("k_mean"), "{back}");
    }

    /// The per-step terms of a method without the block measure no affinity, so the log's
    /// contrast is absent rather than 0/0 or a count of zeros.
    #[test]
    fn term_sums_report_affinity_only_when_measured() {
        let t = TermSums::default();
        assert_eq!(
            (t.k_same_mean(), t.k_diff_mean(), t.k_window_mean()),
            (None, None, None)
        );
        assert_eq!(t.line(), "", "nothing recorded, nothing printed");
        let t = TermSums {
            k_same: 0.6,
            k_same_steps: 2,
            k_diff: 0.2,
            k_diff_steps: 2,
            steps: 2,
            ..TermSums::default()
        };
        assert!(t.line().contains("contrast 3.000"), "{}", t.line());
    }
}
