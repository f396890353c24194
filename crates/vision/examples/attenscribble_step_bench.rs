//! Training-step time of `ferrolab attenscribble`'s four methods on burn's `flex` CPU backend:
//! the ferrolab side of `bench/run_attenscribble_bench.sh`, which divides these figures by the
//! PyTorch twin's (`bench/attenscribble_torch.py`) for the same network, losses, batch and
//! threads.
//!
//! ```text
//! cargo run --release -p ferrolab-vision --example attenscribble_step_bench -- \
//!     --method attenscribble|pce|pce_gcrf|full [--preset small|paper|medium|quick] \
//!     [--threads 2] [--warmup N] [--iters N] [--json] [--params-only] [--check-loss]
//! ```
//!
//! The preset (`configs/attenscribble/<preset>.toml`, as `ferrolab attenscribble --preset`
//! reads it) gives the training size, batch, loss weights and windows. A step is exactly what
//! `train_one` runs per iteration — `StepLoss::loss` (forward pass, partial CE, gated CRF,
//! attentive loss or CE + Dice), the loss read back, backward, SGD with momentum 0.9 and weight
//! decay 1e-4 — on one fixed batch, without the batch assembly and augmentation (the PyTorch
//! side has no data loader either). The batch is integer arithmetic both sides reproduce:
//! image `((g · 7919) mod 1001)/1000` at flat index `g`; label rings around a centre that moves
//! with the sample (LV, Myo, RV, background at radius `< 0.1, 0.2, 0.3 · size`); scribble =
//! label where `(x + 2y + n) mod 7 = 0`, else 4.
//!
//! `--params-only` prints `{"method", "params"}` (burn's count: batch-norm running statistics
//! included); `--check-loss` prints `{"method", "loss"}`: the method's loss of fixed logits
//! `((i · 7919) mod 2001)/1000 − 1` and fixed attention logits `((i · 7907) mod 2001)/250 − 4`
//! with the affinity head at `(a, b) = (2, −1)`, on the benchmark's batch — the value the
//! PyTorch twin must reproduce. `--json` prints the medians of the timed steps (`train_ms`,
//! `train_forward_ms`, `train_backward_ms`, `train_optim_ms`), their lists, and the first and
//! last loss.

use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use ferrolab_core::backend::{init_threads, seed_backend, train_device};
use ferrolab_core::metrics::median;
use ferrolab_core::nn::float_tensor;
use ferrolab_vision::attenscribble::config::AttenScribbleConfig;
use ferrolab_vision::attenscribble::model::{Output, SpatialAttention};
use ferrolab_vision::attenscribble::train::{Method, StepLoss, Targets, spec_for};

const USAGE: &str = "usage: attenscribble_step_bench --method attenscribble|pce|pce_gcrf|full \
                     [--preset small|paper|medium|quick] [--threads N] [--warmup N] [--iters N] \
                     [--json] [--params-only] [--check-loss]";

const PRESETS: [(&str, &str); 4] = [
    (
        "small",
        include_str!("../../../configs/attenscribble/small.toml"),
    ),
    (
        "paper",
        include_str!("../../../configs/attenscribble/paper.toml"),
    ),
    (
        "medium",
        include_str!("../../../configs/attenscribble/medium.toml"),
    ),
    (
        "quick",
        include_str!("../../../configs/attenscribble/quick.toml"),
    ),
];

#[derive(Debug)]
struct Args {
    method: Method,
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
        method: Method::AttenScribble,
        preset: "small".into(),
        threads: 2,
        warmup: 3,
        iters: 10,
        json: false,
        params_only: false,
        check_loss: false,
    };
    let mut method = None;
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
            "--method" => {
                let v = value()?;
                method = Some(Method::parse(&v).ok_or_else(|| {
                    format!("--method {v:?}: expected attenscribble, pce, pce_gcrf or full")
                })?);
            }
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
    args.method = method.ok_or_else(|| format!("--method is required\n{USAGE}"))?;
    if !PRESETS.iter().any(|(n, _)| *n == args.preset) {
        return Err(format!(
            "--preset {:?}: expected small, paper, medium or quick",
            args.preset
        ));
    }
    if args.threads == 0 || args.iters == 0 {
        return Err("--threads and --iters must be at least 1".into());
    }
    Ok(args)
}

fn config(preset: &str) -> Result<AttenScribbleConfig, String> {
    let text = PRESETS
        .iter()
        .find(|(n, _)| *n == preset)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("no preset {preset}"))?;
    let cfg: AttenScribbleConfig =
        ferrolab_core::config::load_layers(Some((preset, text)), None, &[])
            .map_err(|e| e.to_string())?;
    ferrolab_core::Checked::new(cfg)
        .map(|c| c.into_inner())
        .map_err(|e| e.to_string())
}

/// The benchmark's fixed batch (see the module documentation).
struct Batch {
    image: Vec<f32>,
    labels: Vec<u8>,
    scribbles: Vec<u8>,
    multi: Vec<bool>,
}

fn batch(n: usize, size: usize) -> Batch {
    let hw = size * size;
    let image = (0..n * hw)
        .map(|g| ((g * 7919) % 1001) as f32 / 1000.0)
        .collect();
    let (mut labels, mut scribbles) = (Vec::with_capacity(n * hw), Vec::with_capacity(n * hw));
    let mut multi = Vec::with_capacity(n);
    for s in 0..n {
        let c = (size / 2 + s) as i64;
        let mut present = [false; 4];
        for y in 0..size {
            for x in 0..size {
                let (dy, dx) = (y as i64 - c, x as i64 - c);
                let d2 = 100 * (dy * dy + dx * dx);
                let ring = |k: i64| d2 < (k * size as i64).pow(2);
                let l = if ring(1) {
                    3
                } else if ring(2) {
                    2
                } else if ring(3) {
                    1
                } else {
                    0
                };
                let sc = if (x + 2 * y + s).is_multiple_of(7) {
                    l
                } else {
                    4
                };
                if sc < 4 {
                    present[usize::from(sc)] = true;
                }
                labels.push(l);
                scribbles.push(sc);
            }
        }
        multi.push(present.iter().filter(|&&p| p).count() > 1);
    }
    Batch {
        image,
        labels,
        scribbles,
        multi,
    }
}

fn json_list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|t| format!("{t:.3}")).collect();
    format!("[{}]", items.join(", "))
}

fn run(args: &Args) -> Result<String, String> {
    let cfg = config(&args.preset)?;
    let (size, bs) = (cfg.data.size, cfg.train.batch_size);
    let device = train_device();
    let spec = spec_for(&cfg, args.method);
    let model = spec.build(&device)?;
    let step = StepLoss::new(&cfg, args.method, &model, size);
    let b = batch(bs, size);
    let targets = Targets {
        image: &b.image,
        labels: &b.labels,
        scribbles: &b.scribbles,
        multi: &b.multi,
    };
    let name = args.method.name();
    if args.params_only {
        return Ok(format!(
            "{{\"method\": \"{name}\", \"params\": {}}}",
            model.num_params()
        ));
    }
    // Past the attentive loss's start, as in most of a run.
    let it = cfg.loss.attn_start;
    if args.check_loss {
        let logits = float_tensor(
            (0..bs * 4 * size * size)
                .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
                .collect(),
            [bs, 4, size, size],
            &device,
        );
        let grid = size >> cfg.model.attention_level;
        let l = grid * grid;
        let attention = float_tensor(
            (0..bs * l * l)
                .map(|i| ((i * 7907) % 2001) as f32 / 250.0 - 4.0)
                .collect(),
            [bs, l, l],
            &device,
        );
        let width = cfg.model.widths[cfg.model.attention_level];
        let block =
            SpatialAttention::new(width, cfg.model.mlp_ratio, &device).with_affine(2.0, -1.0);
        let attn = args.method == Method::AttenScribble;
        let out = Output {
            logits,
            attention: attn.then_some(attention),
            grid: (grid, grid),
        };
        let v = step
            .loss_of(out, attn.then_some(&block), &targets, it)
            .into_scalar::<f32>();
        return Ok(format!("{{\"method\": \"{name}\", \"loss\": {v}}}"));
    }
    let mut optim = ferrolab_vision::attenscribble::train::optimizer(&cfg);
    let x = float_tensor(b.image.clone(), [bs, 1, size, size], &device);
    let mut model = model;
    let (mut train, mut fwd, mut bwd, mut opt) = (vec![], vec![], vec![], vec![]);
    let (mut first, mut last) = (f32::NAN, f32::NAN);
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    for i in 0..args.warmup + args.iters {
        // As `ferrolab attenscribble` trains: the whole step on a pool worker
        // (`backend::in_pool`); the timings include the crossing into the pool.
        let t0 = Instant::now();
        let (value, t1, t2, stepped) = ferrolab_core::backend::in_pool(|| {
            let loss = step.loss(&model, x.clone(), &targets, it);
            // The training loop reads the loss back every step (it logs it and checks it is
            // finite).
            let value = loss.clone().into_scalar::<f32>();
            let t1 = Instant::now();
            let grads = loss.backward();
            let t2 = Instant::now();
            let grads = GradientsParams::from_grads(grads, &model);
            (value, t1, t2, optim.step(cfg.train.lr, model, grads))
        });
        model = stepped;
        let t3 = Instant::now();
        if i == 0 {
            first = value;
        }
        last = value;
        if i >= args.warmup {
            train.push(ms(t0, t3));
            fwd.push(ms(t0, t1));
            bwd.push(ms(t1, t2));
            opt.push(ms(t2, t3));
        }
    }
    Ok(format!(
        "{{\"method\": \"{name}\", \"preset\": \"{}\", \"size\": {size}, \"batch\": {bs}, \
         \"threads\": {}, \"train_ms\": {:.4}, \"train_forward_ms\": {:.4}, \
         \"train_backward_ms\": {:.4}, \"train_optim_ms\": {:.4}, \"train_ms_all\": {}, \
         \"params\": {}, \"loss_first\": {first}, \"loss_last\": {last}}}",
        args.preset,
        args.threads,
        median(train.clone()),
        median(fwd),
        median(bwd),
        median(opt),
        json_list(&train),
        model.num_params()
    ))
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
    match run(&args) {
        Ok(line) => {
            if args.json || args.params_only || args.check_loss {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
