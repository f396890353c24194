//! Training-step and inference time, and the memory training adds, of the vision models
//! (ResNet-20, UNet, YOLO-tiny) on burn's `flex` CPU backend with ferrolab's kernels: the
//! ferrolab side of `bench/run_vision_bench.sh`, which divides these figures by PyTorch's for
//! the twins in `bench/vision_torch.py`.
//!
//! ```text
//! cargo run --release -p ferrolab-vision --example vision_step_bench -- \
//!     --model resnet20|unet|yolo [--threads 2] [--warmup N] [--iters N] [--json] \
//!     [--params-only] [--check-loss] [--in-pool] [--burn-sgd]
//! ```
//!
//! Shapes (the issue's): ResNet-20 on `[128, 1, 32, 32]` with 10 classes and cross-entropy;
//! UNet (default config: widths 16…256, bilinear decoder, encoder dropout) on `[8, 1, 128, 128]`
//! with 4 classes and per-pixel cross-entropy; YOLO-tiny (`yolov3-tiny.cfg` widths, 80
//! classes) on `[16, 3, 128, 128]` with three boxes per image and the model's own YOLOv3 loss
//! (its targets built on the CPU from the read-back box predictions). One process times one
//! model, as `bench/vision_harness.py` runs it, so no model inherits another's caches or
//! allocator state.
//!
//! A training step is forward + loss + backward + optimiser step on one fixed random batch
//! (SGD with momentum 0.9 and weight decay 5e-4 for ResNet and YOLO, as `ferrolab classify`
//! trains, in ferrolab's one-pass [`FusedSgd`](ferrolab_vision::optim::FusedSgd), or burn's
//! composed `Sgd` with `--burn-sgd`; Adam for UNet), the loss read back after the forward pass. Inference is the
//! forward pass of `model.valid()` on the inference device (no autodiff graph, batch norm on
//! its running statistics), its output reduced to one number and read back.
//!
//! Memory: freed heap handed back (`malloc_trim`), then `rss_before_training_mb` = VmRSS once
//! the model, the batch and the optimiser exist, the high-water mark reset, and
//! `train_added_mb` = the highest VmHWM during the training steps minus that. In the first step
//! the mark is reset at each phase boundary (outside the timed windows), so `forward_added_mb`,
//! `backward_added_mb` and `optim_added_mb` say what each phase brings (activations kept for
//! the backward pass, gradients, optimiser state), and `later_added_mb` is the peak of the
//! later steps. PyTorch's side measures the same way.
//!
//! `--json` prints one object: `train_ms`, `train_forward_ms`, `train_backward_ms`,
//! `train_optim_ms`, `infer_ms` (medians over the timed iterations), their per-iteration
//! lists (`*_all`), the memory figures, `params` (burn's count, batch-norm running statistics
//! included) and the first and last training loss. `--params-only` builds the model and prints
//! `{"model": …, "params": …}` without timing anything (the harness checks the twins with it);
//! `--check-loss` (YOLO only) prints `{"model": "yolo", "loss": …}`, the loss of fixed head
//! outputs against the benchmark's targets, which the PyTorch twin of the loss must reproduce.
//! `--in-pool` runs everything on a worker of rayon's pool, as the training loops run their
//! steps (`backend::in_pool`; the harness passes it unless told `--no-pool`); `perf record
//! --call-graph dwarf` then also attributes each kernel to the op that called it.
//! `--infer-only` skips the training steps (the inference passes then run the
//! freshly initialised model: same work, for profiling inference alone).

use std::process::ExitCode;
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::log_softmax;
use ferrolab_core::backend::{device, init_threads, seed_backend, train_device};
use ferrolab_core::metrics::median;
use ferrolab_core::nn::{float_tensor, int_tensor};
use ferrolab_core::resources::{current_rss_mb, peak_rss_mb, release_free_memory, reset_peak_rss};
use ferrolab_vision::models::resnet::ResNet;
use ferrolab_vision::models::unet::{UNet, UNetConfig};
use ferrolab_vision::models::yolo::{YoloConfig, YoloTarget, YoloTiny};
use ferrolab_vision::optim::FusedSgdConfig;

const USAGE: &str = "usage: vision_step_bench --model resnet20|unet|yolo [--threads N] \
                     [--warmup N] [--iters N] [--json] [--params-only] [--check-loss] [--in-pool] \
                     [--burn-sgd] [--infer-only]";
const MODELS: [&str; 3] = ["resnet20", "unet", "yolo"];

#[derive(Debug)]
struct Args {
    model: String,
    threads: usize,
    warmup: usize,
    iters: usize,
    json: bool,
    params_only: bool,
    check_loss: bool,
    in_pool: bool,
    burn_sgd: bool,
    infer_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model: String::new(),
        threads: 2,
        warmup: 3,
        iters: 10,
        json: false,
        params_only: false,
        check_loss: false,
        in_pool: false,
        burn_sgd: false,
        infer_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let count = |v: String| {
            v.parse::<usize>()
                .map_err(|e| format!("{flag} {v:?}: not a non-negative integer ({e})"))
        };
        match flag.as_str() {
            "--model" => args.model = value()?,
            "--threads" => args.threads = count(value()?)?,
            "--warmup" => args.warmup = count(value()?)?,
            "--iters" => args.iters = count(value()?)?,
            "--json" => args.json = true,
            "--params-only" => args.params_only = true,
            "--check-loss" => args.check_loss = true,
            "--in-pool" => args.in_pool = true,
            "--burn-sgd" => args.burn_sgd = true,
            "--infer-only" => args.infer_only = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !MODELS.contains(&args.model.as_str()) {
        return Err(format!(
            "--model {:?}: expected one of {MODELS:?}\n{USAGE}",
            args.model
        ));
    }
    if args.check_loss && args.model != "yolo" {
        return Err("--check-loss is for --model yolo (the others use cross-entropy)".into());
    }
    if args.threads == 0 || args.iters == 0 {
        return Err("--threads and --iters must be at least 1".into());
    }
    Ok(args)
}

/// A 64-bit LCG whose integers `bench/vision_torch.py` reproduces exactly, so both sides train
/// on the same labels and boxes without sharing a random generator.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(6364136223846793005).wrapping_add(1))
    }

    /// The next value, uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn labels(n: usize, classes: usize, seed: u64) -> Vec<i64> {
    let mut g = Lcg::new(seed);
    (0..n).map(|_| g.below(classes as u64) as i64).collect()
}

/// Three boxes per image, whole pixels, 4 to 100 pixels a side, inside the `size × size`
/// image (sizes spread over both heads' anchors).
fn yolo_targets(images: usize, size: usize, classes: usize, seed: u64) -> Vec<Vec<YoloTarget>> {
    let mut g = Lcg::new(seed);
    (0..images)
        .map(|_| {
            (0..3)
                .map(|_| {
                    let w = 4 + g.below(97);
                    let h = 4 + g.below(97);
                    let x1 = g.below(size as u64 - w + 1);
                    let y1 = g.below(size as u64 - h + 1);
                    YoloTarget {
                        class: g.below(classes as u64) as usize,
                        x1: x1 as f32,
                        y1: y1 as f32,
                        x2: (x1 + w) as f32,
                        y2: (y1 + h) as f32,
                    }
                })
                .collect()
        })
        .collect()
}

/// What one run measured.
#[derive(Debug, Default)]
struct Measured {
    train: Vec<f64>,
    forward: Vec<f64>,
    backward: Vec<f64>,
    optim: Vec<f64>,
    infer: Vec<f64>,
    rss_before: f64,
    /// Peak RSS over all steps; the first step's per phase (forward + loss, backward,
    /// optimiser step), then over the later steps.
    peak: f64,
    phase_peaks: [f64; 4],
    params: usize,
    loss_first: f32,
    loss_last: f32,
}

/// Times `warmup + iters` training steps, measuring the memory they add, then as many
/// inference passes of the validation copy of the model.
///
/// `loss` is the training forward pass with its loss; `infer` the inference forward pass
/// reduced to a scalar (so that reading it back waits for the whole output).
fn run<M: Module>(
    mut model: M,
    mut optim: ModuleOptimizer,
    lr: f64,
    loss: impl Fn(&M) -> Tensor<1>,
    infer: impl Fn(&M) -> Tensor<1>,
    args: &Args,
) -> Measured {
    let mut m = Measured {
        params: model.num_params(),
        ..Measured::default()
    };
    if args.params_only {
        return m;
    }
    release_free_memory();
    m.rss_before = current_rss_mb().unwrap_or(f64::NAN);
    let measurable = reset_peak_rss();
    // The first step's peak RSS per phase (the mark reset at each phase boundary, outside the
    // timed windows) says where the memory goes: activations kept for the backward pass,
    // gradients, optimiser state. Later steps can only reuse or add to that (the tuned
    // allocator keeps freed blocks resident), so one high-water mark covers them.
    let phase_peak = |i: usize, peak: &mut f64| {
        if measurable && i == 0 {
            *peak = peak_rss_mb().unwrap_or(f64::NAN);
            reset_peak_rss();
        }
    };
    let (mut fwd_peak, mut bwd_peak, mut opt_peak) = (f64::NAN, f64::NAN, f64::NAN);
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let train_steps = if args.infer_only {
        0
    } else {
        args.warmup + args.iters
    };
    for i in 0..train_steps {
        let t0 = Instant::now();
        let l = loss(&model);
        // The read-back is the step's own (the loss is logged); it also ends the forward phase.
        let value = l.clone().into_scalar::<f32>();
        let t1 = Instant::now();
        phase_peak(i, &mut fwd_peak);
        let t1b = Instant::now();
        let grads = l.backward();
        let t2 = Instant::now();
        phase_peak(i, &mut bwd_peak);
        let t2b = Instant::now();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(lr, model, grads);
        let t3 = Instant::now();
        phase_peak(i, &mut opt_peak);
        if i == 0 {
            m.loss_first = value;
        }
        m.loss_last = value;
        if i >= args.warmup {
            let (f, b, o) = (ms(t0, t1), ms(t1b, t2), ms(t2b, t3));
            m.train.push(f + b + o);
            m.forward.push(f);
            m.backward.push(b);
            m.optim.push(o);
        }
    }
    let later = if measurable {
        peak_rss_mb().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    m.phase_peaks = [fwd_peak, bwd_peak, opt_peak, later];
    m.peak = fwd_peak.max(bwd_peak).max(opt_peak).max(later);
    drop(optim);
    let eval = model.valid();
    drop(model);
    for i in 0..args.warmup + args.iters {
        let t0 = Instant::now();
        let _ = infer(&eval).into_scalar::<f32>();
        if i >= args.warmup {
            m.infer.push(ms(t0, Instant::now()));
        }
    }
    m
}

/// SGD as `ferrolab classify` configures it (PyTorch semantics: no dampening, weight decay
/// added to the gradient): one fused pass per parameter, or burn's composed `Sgd`.
fn sgd(args: &Args) -> ModuleOptimizer {
    if !args.burn_sgd {
        return FusedSgdConfig::default()
            .with_momentum(0.9)
            .with_weight_decay(5e-4)
            .init();
    }
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig { penalty: 5e-4 }))
        .init()
}

/// Adam with PyTorch's defaults (ε = 1e-8; burn's default is 1e-5).
fn adam() -> ModuleOptimizer {
    AdamConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .init()
}

fn resnet20(args: &Args) -> Result<Measured, String> {
    let (batch, classes) = (128, 10);
    let (tdev, idev) = (train_device(), device());
    let model = ResNet::new(20, 1, classes, &tdev)?;
    let x = Tensor::<4>::random([batch, 1, 32, 32], Distribution::Normal(0.0, 1.0), &tdev);
    let xi = Tensor::<4>::from_data(x.to_data(), &idev);
    let y = int_tensor(&labels(batch, classes, 1), &tdev);
    let ce = CrossEntropyLossConfig::new().init(&tdev);
    Ok(run(
        model,
        sgd(args),
        0.01,
        |m: &ResNet| ce.forward(m.forward(x.clone()), y.clone()),
        |m: &ResNet| m.forward(xi.clone()).sum(),
        args,
    ))
}

/// Mean cross-entropy over every pixel of `logits: [N, K, H, W]` against `labels: [N, 1, H, W]`
/// (PyTorch's `F.cross_entropy` on `[N, K, H, W]`): log-softmax over the class axis, then the
/// label's entry, without moving the class axis last.
fn pixel_cross_entropy(logits: Tensor<4>, labels: Tensor<4, Int>) -> Tensor<1> {
    log_softmax(logits, 1).gather(1, labels).mean().neg()
}

fn unet(args: &Args) -> Result<Measured, String> {
    let (batch, size) = (8, 128);
    let cfg = UNetConfig::default();
    let (tdev, idev) = (train_device(), device());
    let model = UNet::new(&cfg, &tdev)?;
    model.check_input(size, size)?;
    let x = Tensor::<4>::random(
        [batch, cfg.in_channels, size, size],
        Distribution::Normal(0.0, 1.0),
        &tdev,
    );
    let xi = Tensor::<4>::from_data(x.to_data(), &idev);
    let y = int_tensor(&labels(batch * size * size, cfg.classes, 2), &tdev)
        .reshape([batch, 1, size, size]);
    Ok(run(
        model,
        adam(),
        1e-3,
        |m: &UNet| pixel_cross_entropy(m.forward(x.clone()), y.clone()),
        |m: &UNet| m.forward(xi.clone()).sum(),
        args,
    ))
}

/// The YOLO-tiny of the benchmark: `yolov3-tiny.cfg` at 128 pixels with its 80 classes.
fn yolo_config() -> YoloConfig {
    YoloConfig::new(128, 3, 80)
}

fn yolo(args: &Args) -> Result<Measured, String> {
    let batch = 16;
    let cfg = yolo_config();
    let (tdev, idev) = (train_device(), device());
    let model = YoloTiny::new(&cfg, &tdev)?;
    let s = cfg.input_size;
    let x = Tensor::<4>::random([batch, 3, s, s], Distribution::Normal(0.0, 1.0), &tdev);
    let xi = Tensor::<4>::from_data(x.to_data(), &idev);
    let targets = yolo_targets(batch, s, cfg.classes, 3);
    model.check_targets(&targets)?;
    // darknet's yolov3-tiny.cfg learning rate; 0.01 makes the loss grow on this batch.
    Ok(run(
        model,
        sgd(args),
        1e-3,
        |m: &YoloTiny| m.loss(m.forward(x.clone()), &targets),
        |m: &YoloTiny| {
            let (p32, p16) = m.forward(xi.clone());
            p32.sum() + p16.sum()
        },
        args,
    ))
}

/// YOLO's loss on fixed head outputs (`((i · 7919) mod 2001) / 1000 − 1` at flat index i, per
/// head) and the benchmark's targets: `bench/vision_torch.py --check-loss` computes the same
/// number with its twin of the loss, and the harness compares the two.
fn yolo_check_loss() -> Result<f32, String> {
    let batch = 16;
    let cfg = yolo_config();
    let dev = device();
    let model = YoloTiny::new(&cfg, &dev)?;
    let outputs = 3 * (5 + cfg.classes);
    let head = |grid: usize| {
        let shape = [batch, outputs, grid, grid];
        let values = (0..shape.iter().product::<usize>())
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        float_tensor(values, shape, &dev)
    };
    let s = cfg.input_size;
    let targets = yolo_targets(batch, s, cfg.classes, 3);
    Ok(model
        .loss((head(s / 32), head(s / 16)), &targets)
        .into_scalar::<f32>())
}

fn json_list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|t| format!("{t:.3}")).collect();
    format!("[{}]", items.join(", "))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_threads(Some(args.threads));
    seed_backend(0);
    if args.check_loss {
        return match yolo_check_loss() {
            Ok(v) => {
                println!("{{\"model\": \"yolo\", \"loss\": {v}}}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let bench = || match args.model.as_str() {
        "resnet20" => resnet20(&args),
        "unet" => unet(&args),
        "yolo" => yolo(&args),
        _ => unreachable!("parse_args checked the model"),
    };
    // `--in-pool` runs on a worker of the pool, as `ferrolab classify` and `ferrolab adod` run
    // their steps (`backend::in_pool`; bench/run_vision_bench.sh passes it): every kernel's
    // parallel loop then starts on the calling thread without waking the main thread, and a
    // profiler's call stacks reach the op that called it. Without it each loop is handed to
    // the pool from the main thread.
    let result = if args.in_pool {
        ferrolab_core::backend::in_pool(bench)
    } else {
        bench()
    };
    let m = match result {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.params_only {
        println!(
            "{{\"model\": \"{}\", \"params\": {}}}",
            args.model, m.params
        );
        return ExitCode::SUCCESS;
    }
    if !m.loss_last.is_finite() {
        eprintln!(
            "error: the training loss is {} after the last step",
            m.loss_last
        );
        return ExitCode::FAILURE;
    }
    let (train, infer) = (median(m.train.clone()), median(m.infer.clone()));
    if args.json {
        let fields = [
            format!("\"model\": \"{}\"", args.model),
            format!("\"threads\": {}", args.threads),
            format!("\"train_ms\": {train:.3}"),
            format!("\"train_forward_ms\": {:.3}", median(m.forward.clone())),
            format!("\"train_backward_ms\": {:.3}", median(m.backward.clone())),
            format!("\"train_optim_ms\": {:.3}", median(m.optim.clone())),
            format!("\"infer_ms\": {infer:.3}"),
            format!("\"train_ms_all\": {}", json_list(&m.train)),
            format!("\"infer_ms_all\": {}", json_list(&m.infer)),
            format!("\"rss_before_training_mb\": {:.1}", m.rss_before),
            format!("\"train_peak_rss_mb\": {:.1}", m.peak),
            format!("\"train_added_mb\": {:.1}", m.peak - m.rss_before),
            format!(
                "\"forward_added_mb\": {:.1}",
                m.phase_peaks[0] - m.rss_before
            ),
            format!(
                "\"backward_added_mb\": {:.1}",
                m.phase_peaks[1] - m.rss_before
            ),
            format!("\"optim_added_mb\": {:.1}", m.phase_peaks[2] - m.rss_before),
            format!("\"later_added_mb\": {:.1}", m.phase_peaks[3] - m.rss_before),
            format!("\"params\": {}", m.params),
            format!("\"loss_first\": {}", m.loss_first),
            format!("\"loss_last\": {}", m.loss_last),
        ];
        println!("{{{}}}", fields.join(", "));
    } else {
        println!(
            "{}: train step {train:.1} ms (forward {:.1}, backward {:.1}, optimiser {:.1}), \
             inference {infer:.1} ms, training adds {:.1} MiB over {:.1} MiB (first step's \
             peak in forward {:.1}, backward {:.1}, optimiser {:.1}; later steps {:.1}); {} \
             parameters, loss {:.4} -> {:.4} \
             ({} threads)",
            args.model,
            median(m.forward),
            median(m.backward),
            median(m.optim),
            m.peak - m.rss_before,
            m.rss_before,
            m.phase_peaks[0] - m.rss_before,
            m.phase_peaks[1] - m.rss_before,
            m.phase_peaks[2] - m.rss_before,
            m.phase_peaks[3] - m.rss_before,
            m.params,
            m.loss_first,
            m.loss_last,
            args.threads
        );
    }
    ExitCode::SUCCESS
}
