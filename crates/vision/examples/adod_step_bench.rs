//! Training-step and inference time of `ferrolab adod`'s five detectors on burn's `flex` CPU
//! backend: the ferrolab side of `bench/run_adod_bench.sh`, which divides these figures by the
//! PyTorch twin's (`bench/adod_torch.py`) for the same networks, losses, batch and threads.
//!
//! ```text
//! cargo run --release -p ferrolab-vision --example adod_step_bench -- \
//!     --method yolo|yolo_attention|yolo_domain|dg_yolo|adod [--preset paper|quick] \
//!     [--threads 2] [--warmup N] [--iters N] [--json] [--params-only] [--check-loss]
//! ```
//!
//! The preset (`configs/adod/<preset>.toml`, as `ferrolab adod --preset` reads it) fixes the
//! input size, widths, batch size, domain count and loss weights. A training step is exactly
//! the run's ([`step_loss`]: forward through the attention modules and the domain tap, YOLO's
//! loss, the domain cross-entropy through gradient reversal, DG-YOLO's IRM penalty), the loss
//! read back, backward, and the run's Adam step (burn's `AdamConfig::new()`, ε = 1e-5) at the
//! preset's learning rate, with α fixed at α(½) (it only scales terms). The batch is fixed:
//! uniform random pixels in [0, 1) and three boxes per image from a 64-bit LCG that the twin
//! reproduces, domain of image b = b mod domains; no rendering, flipping or batch assembly on
//! either side. Inference is the forward pass of `model.valid()` without the domain head (as
//! `adod predict` and the evaluation run it, before decoding and NMS), its heads summed and
//! read back. Both run on a pool worker ([`in_pool`]), as the run's steps and evaluation do;
//! the step's time includes that crossing, its phases are timed inside.
//!
//! `--json` prints one object: `train_ms`, `train_forward_ms`, `train_backward_ms`,
//! `train_optim_ms`, `infer_ms` (medians over the timed iterations; divide by the batch for
//! per-image figures), their per-iteration lists, `batch`, `params` (burn's count, batch-norm
//! running statistics included) and the first and last loss. `--params-only` prints
//! `{"method", "params"}`; `--check-loss` prints `{"method", "loss", "irm"}`: YOLO's loss and
//! the IRM penalty of fixed head outputs against the benchmark's targets and domains, which the
//! twin must reproduce.

use std::process::ExitCode;
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_core::backend::{device, in_pool, init_threads, seed_backend, train_device};
use ferrolab_core::metrics::median;
use ferrolab_core::nn::float_tensor;
use ferrolab_vision::adod::config::{AdodConfig, METHODS};
use ferrolab_vision::adod::experiment::{irm_penalty, net_config, step_loss};
use ferrolab_vision::adod::model::{AdodNet, Outputs, alpha};
use ferrolab_vision::models::yolo::YoloTarget;

const USAGE: &str = "usage: adod_step_bench --method yolo|yolo_attention|yolo_domain|dg_yolo|adod \
                     [--preset paper|quick] [--threads N] [--warmup N] [--iters N] [--json] \
                     [--params-only] [--check-loss]";

const PRESETS: [(&str, &str); 2] = [
    ("paper", include_str!("../../../configs/adod/paper.toml")),
    ("quick", include_str!("../../../configs/adod/quick.toml")),
];

#[derive(Debug)]
struct Args {
    method: String,
    preset: String,
    threads: usize,
    warmup: usize,
    iters: usize,
    json: bool,
    params_only: bool,
    check_loss: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        method: String::new(),
        preset: "paper".into(),
        threads: 2,
        warmup: 3,
        iters: 10,
        json: false,
        params_only: false,
        check_loss: false,
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
            "--method" => args.method = value()?,
            "--preset" => args.preset = value()?,
            "--threads" => args.threads = count(value()?)?,
            "--warmup" => args.warmup = count(value()?)?,
            "--iters" => args.iters = count(value()?)?,
            "--json" => args.json = true,
            "--params-only" => args.params_only = true,
            "--check-loss" => args.check_loss = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !METHODS.contains(&args.method.as_str()) {
        return Err(format!(
            "--method {:?}: expected one of {METHODS:?}\n{USAGE}",
            args.method
        ));
    }
    if args.threads == 0 || args.iters == 0 {
        return Err("--threads and --iters must be at least 1".into());
    }
    Ok(args)
}

fn config(preset: &str) -> Result<AdodConfig, String> {
    let text = PRESETS
        .iter()
        .find(|(n, _)| *n == preset)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("--preset {preset:?}: expected paper or quick"))?;
    let cfg: AdodConfig = ferrolab_core::config::load_layers(Some((preset, text)), None, &[])
        .map_err(|e| e.to_string())?;
    ferrolab_core::Checked::new(cfg)
        .map(|c| c.into_inner())
        .map_err(|e| e.to_string())
}

/// A 64-bit LCG whose integers `bench/adod_torch.py` reproduces exactly (the constants of
/// `vision_step_bench.rs`'s), so both sides train on the same boxes.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(6364136223846793005).wrapping_add(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Three boxes per image, whole pixels, 6 to `size/2` pixels a side (the renderer's objects
/// are 8–60 px at 96 px), inside the `size × size` image.
fn targets(images: usize, size: usize, classes: usize, seed: u64) -> Vec<Vec<YoloTarget>> {
    let mut g = Lcg::new(seed);
    let span = (size / 2 - 6 + 1) as u64;
    (0..images)
        .map(|_| {
            (0..3)
                .map(|_| {
                    let w = 6 + g.below(span);
                    let h = 6 + g.below(span);
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

#[derive(Debug, Default)]
struct Measured {
    train: Vec<f64>,
    forward: Vec<f64>,
    backward: Vec<f64>,
    optim: Vec<f64>,
    infer: Vec<f64>,
    batch: usize,
    params: usize,
    loss_first: f32,
    loss_last: f32,
}

fn bench(args: &Args, cfg: &AdodConfig) -> Result<Measured, String> {
    let (tdev, idev) = (train_device(), device());
    let ncfg = net_config(cfg, &args.method);
    let mut model = AdodNet::new(&ncfg, &tdev)?;
    let mut m = Measured {
        params: model.num_params(),
        batch: cfg.train.batch_size,
        ..Measured::default()
    };
    if args.params_only {
        return Ok(m);
    }
    let (b, s) = (cfg.train.batch_size, cfg.data.image_size);
    let x = Tensor::<4>::random([b, 3, s, s], Distribution::Default, &tdev);
    let xi = Tensor::<4>::from_data(x.to_data(), &idev);
    let t = targets(b, s, ncfg.yolo.classes, 3);
    model.yolo().check_targets(&t)?;
    let domains: Vec<usize> = (0..b).map(|i| i % ncfg.domains).collect();
    let ce = CrossEntropyLossConfig::new().init(&tdev);
    let mut optim = AdamConfig::new().init();
    let a = alpha(0.5);
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    for i in 0..args.warmup + args.iters {
        // As the run does: the step on a pool worker (`in_pool`), timed from outside, so the
        // step's figure includes the crossing into the pool; its phases are timed inside.
        let t0 = Instant::now();
        let (value, next, [f, bw, o]) = in_pool(|| {
            let t0 = Instant::now();
            let l = step_loss(
                &model,
                cfg,
                &args.method,
                x.clone(),
                &t,
                &domains,
                a,
                &ce,
                &tdev,
            );
            // The run reads the loss back every step (it is logged and checked for NaN).
            let value = l.clone().into_scalar::<f32>();
            let t1 = Instant::now();
            let grads = l.backward();
            let t2 = Instant::now();
            let grads = GradientsParams::from_grads(grads, &model);
            let next = optim.step(cfg.train.lr, model, grads);
            let t3 = Instant::now();
            (value, next, [ms(t0, t1), ms(t1, t2), ms(t2, t3)])
        });
        let total = ms(t0, Instant::now());
        model = next;
        if i == 0 {
            m.loss_first = value;
        }
        m.loss_last = value;
        if i >= args.warmup {
            m.train.push(total);
            m.forward.push(f);
            m.backward.push(bw);
            m.optim.push(o);
        }
    }
    drop(optim);
    let eval = model.valid();
    drop(model);
    for i in 0..args.warmup + args.iters {
        let t0 = Instant::now();
        in_pool(|| {
            let out = eval.forward(xi.clone(), 0.0, false);
            let _ = (out.p32.sum() + out.p16.sum()).into_scalar::<f32>();
        });
        if i >= args.warmup {
            m.infer.push(ms(t0, Instant::now()));
        }
    }
    Ok(m)
}

/// YOLO's loss and the IRM penalty on fixed head outputs (`((i · 7919) mod 2001) / 1000 − 1`
/// at flat index i, per head) against the benchmark's targets and domains.
fn check_loss(args: &Args, cfg: &AdodConfig) -> Result<(f32, f32), String> {
    let dev = device();
    let ncfg = net_config(cfg, &args.method);
    let model = AdodNet::new(&ncfg, &dev)?;
    let (b, s) = (cfg.train.batch_size, cfg.data.image_size);
    let outputs = 3 * (5 + ncfg.yolo.classes);
    let head = |grid: usize| {
        let shape = [b, outputs, grid, grid];
        let values = (0..shape.iter().product::<usize>())
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        float_tensor(values, shape, &dev)
    };
    let t = targets(b, s, ncfg.yolo.classes, 3);
    let domains: Vec<usize> = (0..b).map(|i| i % ncfg.domains.max(1)).collect();
    let out = Outputs {
        p32: head(s / 32),
        p16: head(s / 16),
        domain: None,
    };
    let loss = model
        .yolo()
        .loss((out.p32.clone(), out.p16.clone()), &t)
        .into_scalar::<f32>();
    let irm = irm_penalty(model.yolo(), &out, &t, &domains, &dev).into_scalar::<f32>();
    Ok((loss, irm))
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
    let cfg = match config(&args.preset) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_threads(Some(args.threads));
    seed_backend(0);
    if args.check_loss {
        return match check_loss(&args, &cfg) {
            Ok((loss, irm)) => {
                println!(
                    "{{\"method\": \"{}\", \"loss\": {loss}, \"irm\": {irm}}}",
                    args.method
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let m = match bench(&args, &cfg) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.params_only {
        println!(
            "{{\"method\": \"{}\", \"params\": {}}}",
            args.method, m.params
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
            format!("\"method\": \"{}\"", args.method),
            format!("\"preset\": \"{}\"", args.preset),
            format!("\"threads\": {}", args.threads),
            format!("\"batch\": {}", m.batch),
            format!("\"train_ms\": {train:.3}"),
            format!("\"train_forward_ms\": {:.3}", median(m.forward.clone())),
            format!("\"train_backward_ms\": {:.3}", median(m.backward.clone())),
            format!("\"train_optim_ms\": {:.3}", median(m.optim.clone())),
            format!("\"infer_ms\": {infer:.3}"),
            format!("\"train_ms_all\": {}", json_list(&m.train)),
            format!("\"infer_ms_all\": {}", json_list(&m.infer)),
            format!("\"params\": {}", m.params),
            format!("\"loss_first\": {}", m.loss_first),
            format!("\"loss_last\": {}", m.loss_last),
        ];
        println!("{{{}}}", fields.join(", "));
    } else {
        println!(
            "{} ({} preset, batch {}): train step {train:.1} ms (forward {:.1}, backward {:.1}, \
             optimiser {:.1}), inference {infer:.1} ms; {} parameters, loss {:.4} -> {:.4} \
             ({} threads)",
            args.method,
            args.preset,
            m.batch,
            median(m.forward),
            median(m.backward),
            median(m.optim),
            m.params,
            m.loss_first,
            m.loss_last,
            args.threads
        );
    }
    ExitCode::SUCCESS
}
