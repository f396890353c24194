//! Time and memory per training step of one deep layer: plain linear, APG (low-rank core,
//! with and without over-parameterisation) and the naive generation of a full in×out matrix
//! per instance, on the same batch.
//!
//! Memory is measured two ways: the process's peak-RSS growth over the measured steps (what the
//! allocator really took, including burn's buffers), and the floats of per-instance generated
//! parameters a step materialises (`B·in·out` naive, `B·K²` APG, 0 plain), which is what the
//! paper's memory figure is about.

use crate::apg::{ApgLayerConfig, ConditionMode};
use crate::config::EfficiencyConfig;
use burn::nn::LinearConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_core::backend::{device, train_device};
use ferrolab_core::resources::{
    Stopwatch, current_rss_mb, peak_rss_mb, release_free_memory, reset_peak_rss,
};
use serde::Serialize;

/// Figures of one variant.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCost {
    /// `plain`, `apg`, `apg_overparam`, `naive`.
    pub variant: String,
    /// Trainable parameters of the layer.
    pub params: usize,
    /// Mean milliseconds per training step (forward, backward, Adam).
    pub train_ms_per_step: f64,
    /// Mean milliseconds per inference forward pass of the batch.
    pub infer_ms_per_step: f64,
    /// Peak-RSS growth over the training steps (warm-up included), MiB, measured after freed
    /// heap memory was handed back to the kernel, so earlier variants do not hide it.
    pub step_memory_mb: f64,
    /// Per-instance generated parameters materialised per step, MiB (f32).
    pub generated_mb: f64,
}

fn measure<M: burn::module::Module + Clone>(
    variant: &str,
    model: M,
    forward: impl Fn(&M, Tensor<2>) -> Tensor<2>,
    cfg: &EfficiencyConfig,
    generated_floats: usize,
) -> LayerCost {
    let tdev = train_device();
    let x = Tensor::<2>::random(
        [cfg.batch_size, cfg.d_in],
        Distribution::Normal(0.0, 1.0),
        &tdev,
    );
    let target = Tensor::<2>::random(
        [cfg.batch_size, cfg.d_out],
        Distribution::Normal(0.0, 1.0),
        &tdev,
    );
    let params = model.num_params();
    let mut optim = AdamConfig::new().init();
    let mut step = |m: M| -> M {
        let y = forward(&m, x.clone());
        let loss = (y - target.clone()).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        optim.step(1e-3, m, grads)
    };
    // Memory: peak-RSS growth from before the first step (warm-up included, since the
    // allocator keeps freed blocks and later steps reuse the first step's memory).
    release_free_memory();
    let base = current_rss_mb().unwrap_or(0.0);
    reset_peak_rss();
    let mut model = model;
    for _ in 0..2 {
        model = step(model);
    }
    let sw = Stopwatch::start();
    for _ in 0..cfg.steps {
        model = step(model);
    }
    let train_ms = sw.seconds() * 1000.0 / cfg.steps as f64;
    let peak = peak_rss_mb().unwrap_or(0.0);
    // Inference: the model in evaluation mode on the plain device (no autodiff graph).
    let eval = model.valid().to_device(&device());
    let xi = x.detach().to_device(&device());
    let sw = Stopwatch::start();
    for _ in 0..cfg.steps {
        let _ = forward(&eval, xi.clone()).into_data();
    }
    let infer_ms = sw.seconds() * 1000.0 / cfg.steps as f64;
    LayerCost {
        variant: variant.into(),
        params,
        train_ms_per_step: train_ms,
        infer_ms_per_step: infer_ms,
        step_memory_mb: (peak - base).max(0.0),
        generated_mb: generated_floats as f64 * 4.0 / (1024.0 * 1024.0),
    }
}

/// Measures the four variants with a self-wise condition of rank `rank` (over-parameterised
/// width `overparam`, when > 0). Call with the backend RNG guard held.
pub fn compare_layers(cfg: &EfficiencyConfig, rank: usize, overparam: usize) -> Vec<LayerCost> {
    let tdev = train_device();
    let (b, i, o) = (cfg.batch_size, cfg.d_in, cfg.d_out);
    let apg_cfg = ApgLayerConfig::new(i, o, ConditionMode::SelfWise)
        .with_rank(rank)
        .with_hyper_hidden(64);
    let mut out = vec![measure(
        "plain",
        LinearConfig::new(i, o).init(&tdev),
        |m, x| m.forward(x),
        cfg,
        0,
    )];
    out.push(measure(
        "apg",
        apg_cfg.init(&tdev),
        |m, x| m.forward(x, None),
        cfg,
        b * rank * rank,
    ));
    if overparam > 0 {
        out.push(measure(
            "apg_overparam",
            apg_cfg.clone().with_overparam(overparam).init(&tdev),
            |m, x| m.forward(x, None),
            cfg,
            b * rank * rank,
        ));
    }
    out.push(measure(
        "naive",
        apg_cfg.init_naive(&tdev),
        |m, x| m.forward(x, None),
        cfg,
        b * i * o,
    ));
    out
}
