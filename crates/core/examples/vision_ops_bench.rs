//! Benchmark of the non-convolution ops of the vision models: ferrolab's kernels where
//! `core::kernels` has one (batch norm, pooling, activations, ...) and burn flex's own ops
//! otherwise, per layer shape, and the input of `bench/vision_ops_torch.py`, which times
//! PyTorch on the same shapes and prints the ours / torch ratios.
//!
//! Shapes: ResNet-20 (32x32x1, batch 128, 16/32/64 channels), UNet (128x128x1, batch 8, widths
//! 16..256), a YOLOv3-tiny-style detector (128x128x3, batch 16, 16..512 channels) and the
//! attention block of `core::nn::attention` (batch 32, 64 tokens, d 128, 4 heads). `count` is
//! how often the op runs at that shape in one training step of the model (0 for alternatives
//! that the model may use instead, e.g. nearest instead of bilinear up-sampling), so the
//! Python side can weigh each op by its share of a step.
//!
//! Two timings per op and implementation, each the median of `--reps` runs after `--warmup`:
//! `fwd` on the inference device (no autodiff), and `train` = forward on the autodiff device
//! with the inputs requiring gradients, plus `backward()` from a gradient of ones (what
//! PyTorch's `y.backward(torch.ones_like(y))` does on the other side).
//!
//! ```text
//! cargo run --release -p ferrolab-core --example vision_ops_bench -- \
//!     [--threads 2] [--reps 15] [--warmup 3] [--only resnet,unet,yolo,attention] \
//!     [--filter NAME] [--no-burn] > ours.jsonl
//! bench/.venv/bin/python bench/vision_ops_torch.py --ours ours.jsonl
//! ```
//!
//! Output: one JSON object per case on stdout (`name`, `model`, `op`, `shapes`, `count`,
//! `reps`, `warmup`, `threads`, `ours_fwd_ms`, `ours_train_ms`, and `burn_fwd_ms`,
//! `burn_train_ms` when ours is a ferrolab kernel, `replaced`); a readable table on stderr.

use std::process::ExitCode;
use std::time::Instant;

use ferrolab_core::backend::{device, init_threads, train_device, tune_allocator};
use ferrolab_core::burn;
use ferrolab_core::kernels::{batchnorm, pointwise, pool, rowwise};

use burn::prelude::*;
use burn::tensor::activation::{gelu, leaky_relu, relu, silu, softmax};
use burn::tensor::module::{
    adaptive_avg_pool2d, avg_pool2d, batch_norm, batch_norm_train, interpolate, layer_norm,
    max_pool2d,
};
use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};

/// The ops measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    BnTrain,
    BnEval,
    Relu,
    LeakyRelu,
    Silu,
    Add,
    MaxPool2,
    AvgPool2,
    GlobalAvgPool,
    UpNearest,
    UpBilinear,
    Cat,
    Softmax,
    LayerNorm,
    Gelu,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::BnTrain => "bn_train",
            Op::BnEval => "bn_eval",
            Op::Relu => "relu",
            Op::LeakyRelu => "leaky_relu",
            Op::Silu => "silu",
            Op::Add => "add",
            Op::MaxPool2 => "max_pool2x2",
            Op::AvgPool2 => "avg_pool2x2",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::UpNearest => "up_nearest2x",
            Op::UpBilinear => "up_bilinear2x",
            Op::Cat => "cat_channels",
            Op::Softmax => "softmax_last",
            Op::LayerNorm => "layer_norm_last",
            Op::Gelu => "gelu",
        }
    }

    /// Whether `core::kernels` replaces burn's op (then both are timed).
    fn replaced(self) -> bool {
        matches!(
            self,
            Op::BnTrain
                | Op::BnEval
                | Op::Relu
                | Op::LeakyRelu
                | Op::Silu
                | Op::Gelu
                | Op::MaxPool2
                | Op::GlobalAvgPool
                | Op::UpBilinear
                | Op::Softmax
                | Op::LayerNorm
        )
    }

    /// Whether the op has a train (backward) timing: eval-mode batch norm runs in inference.
    fn trains(self) -> bool {
        self != Op::BnEval
    }
}

#[derive(Debug, Clone)]
struct Case {
    model: &'static str,
    op: Op,
    shapes: Vec<[usize; 4]>,
    count: usize,
}

impl Case {
    fn name(&self) -> String {
        let dims = |s: &[usize; 4]| format!("{}x{}x{}x{}", s[0], s[1], s[2], s[3]);
        let shapes: Vec<String> = self.shapes.iter().map(dims).collect();
        format!("{}.{}_{}", self.model, self.op.name(), shapes.join("+"))
    }
}

fn cases(only: &[String]) -> Vec<Case> {
    let mut v = Vec::new();
    let wanted = |m: &str| only.is_empty() || only.iter().any(|o| o == m);
    let mut push = |model: &'static str, op: Op, shapes: Vec<[usize; 4]>, count: usize| {
        v.push(Case {
            model,
            op,
            shapes,
            count,
        });
    };
    if wanted("resnet") {
        // 3 stages of 3 basic blocks: stem BN+ReLU, then BN, ReLU, BN, add, ReLU per block.
        for (c, hw, bn) in [(16, 32, 7), (32, 16, 6), (64, 8, 6)] {
            let s = [128, c, hw, hw];
            push("resnet", Op::BnTrain, vec![s], bn);
            push("resnet", Op::BnEval, vec![s], 0);
            push("resnet", Op::Relu, vec![s], bn);
            push("resnet", Op::Add, vec![s, s], 3);
        }
        push("resnet", Op::GlobalAvgPool, vec![[128, 64, 8, 8]], 1);
    }
    if wanted("unet") {
        // Two conv-BN-LeakyReLU per block; 4 encoder blocks + bottleneck + 4 decoder blocks.
        for (c, hw, bn) in [
            (16, 128, 4),
            (32, 64, 4),
            (64, 32, 4),
            (128, 16, 4),
            (256, 8, 2),
        ] {
            let s = [8, c, hw, hw];
            push("unet", Op::BnTrain, vec![s], bn);
            push("unet", Op::LeakyRelu, vec![s], bn);
            if hw > 8 {
                push("unet", Op::MaxPool2, vec![s], 1);
                push("unet", Op::Cat, vec![s, s], 1);
            }
            if hw < 128 {
                // The decoder halves the channels (1x1 conv) before up-sampling.
                let up = [8, c / 2, hw, hw];
                push("unet", Op::UpBilinear, vec![up], 1);
                push("unet", Op::UpNearest, vec![up], 0);
            }
        }
        push("unet", Op::AvgPool2, vec![[8, 32, 64, 64]], 0);
    }
    if wanted("yolo") {
        let n = 16;
        for (c, hw) in [(16, 128), (32, 64), (64, 32), (128, 16), (256, 8), (512, 4)] {
            let s = [n, c, hw, hw];
            // The 4x4 stage runs three BN+activation layers (512, 256 -> 512) in the head.
            let k = if hw == 4 { 3 } else { 1 };
            push("yolo", Op::BnTrain, vec![s], k);
            push("yolo", Op::LeakyRelu, vec![s], k);
            push("yolo", Op::Silu, vec![s], 0);
            if hw > 4 {
                push("yolo", Op::MaxPool2, vec![s], 1);
            }
        }
        push("yolo", Op::UpNearest, vec![[n, 128, 4, 4]], 1);
        push("yolo", Op::Cat, vec![[n, 128, 8, 8], [n, 256, 8, 8]], 1);
    }
    if wanted("attention") {
        push("attention", Op::Softmax, vec![[32, 4, 64, 64]], 1);
        push("attention", Op::LayerNorm, vec![[1, 32, 64, 128]], 2);
        push("attention", Op::Gelu, vec![[1, 32, 64, 512]], 1);
    }
    v
}

/// Inputs of one case on a device: the tensors of `shapes` and the `[C]` parameters.
struct Inputs {
    xs: Vec<Tensor<4>>,
    params: Vec<Tensor<1>>,
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn inputs(case: &Case, dev: &Device) -> Inputs {
    let xs = case
        .shapes
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let n = s.iter().product();
            Tensor::from_data(TensorData::new(values(n, 1 + k as u64), *s), dev)
        })
        .collect();
    // Per-channel parameters for batch norm (dim 1) and layer norm (last dim).
    let width = match case.op {
        Op::LayerNorm => case.shapes[0][3],
        _ => case.shapes[0][1],
    };
    let param = |seed: u64, offset: f32| {
        let v = values(width, seed)
            .iter()
            .map(|x| x * 0.1 + offset)
            .collect();
        Tensor::<1>::from_data(TensorData::new(v, [width]), dev)
    };
    Inputs {
        xs,
        // gamma, beta, running mean, running variance
        params: vec![
            param(11, 1.0),
            param(12, 0.0),
            param(13, 0.0),
            param(14, 1.0),
        ],
    }
}

/// The op on `inp`, with ferrolab's kernel (`ours`) or burn's.
fn apply(op: Op, ours: bool, inp: &Inputs) -> Tensor<4> {
    let x = inp.xs[0].clone();
    let p = |k: usize| inp.params[k].clone();
    const EPS: f64 = 1e-5;
    match op {
        Op::BnTrain if ours => batchnorm::batch_norm_train(x, p(0), p(1), EPS).0,
        Op::BnTrain => batch_norm_train(x, p(0), p(1), EPS).output,
        Op::BnEval if ours => batchnorm::batch_norm_eval(x, p(0), p(1), p(2), p(3), EPS),
        Op::BnEval => batch_norm(x, p(0), p(1), p(2), p(3), EPS),
        Op::Relu if ours => pointwise::relu(x),
        Op::Relu => relu(x),
        Op::LeakyRelu if ours => pointwise::leaky_relu(x, 0.1),
        Op::LeakyRelu => leaky_relu(x, 0.1),
        Op::Silu if ours => pointwise::silu(x),
        Op::Silu => silu(x),
        Op::Add => x + inp.xs[1].clone(),
        Op::MaxPool2 if ours => pool::max_pool2d_2x2(x),
        Op::MaxPool2 => max_pool2d(x, MaxPoolOptions::new([2, 2])),
        Op::AvgPool2 => avg_pool2d(x, AvgPoolOptions::new([2, 2])),
        Op::GlobalAvgPool if ours => pool::global_avg_pool(x),
        Op::GlobalAvgPool => adaptive_avg_pool2d(x, [1, 1]),
        Op::UpNearest => interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]),
        ),
        Op::UpBilinear if ours => pool::upsample_bilinear2x(x, true),
        Op::UpBilinear => interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(true)
                .with_scale_factor([2.0, 2.0]),
        ),
        Op::Cat => Tensor::cat(inp.xs.clone(), 1),
        Op::Softmax if ours => rowwise::softmax(x, 3),
        Op::Softmax => softmax(x, 3),
        Op::LayerNorm if ours => rowwise::layer_norm(x, p(0), p(1), EPS),
        Op::LayerNorm => layer_norm(x, p(0), Some(p(1)), EPS),
        Op::Gelu if ours => pointwise::gelu(x),
        Op::Gelu => gelu(x),
    }
}

/// Median milliseconds of `reps` runs after `warmup`.
fn time(warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut ms: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// `(fwd_ms, train_ms)` of one implementation.
fn measure(case: &Case, ours: bool, warmup: usize, reps: usize) -> (f64, Option<f64>) {
    let inp = inputs(case, &device());
    let fwd = time(warmup, reps, || {
        std::hint::black_box(apply(case.op, ours, &inp));
    });
    if !case.op.trains() {
        return (fwd, None);
    }
    let base = inputs(case, &train_device());
    let train = time(warmup, reps, || {
        let inp = Inputs {
            xs: base.xs.iter().map(|x| x.clone().require_grad()).collect(),
            params: base
                .params
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    if k < 2 {
                        p.clone().require_grad()
                    } else {
                        p.clone()
                    }
                })
                .collect(),
        };
        let grads = apply(case.op, ours, &inp).backward();
        std::hint::black_box(inp.xs[0].grad(&grads));
    });
    (fwd, Some(train))
}

struct Args {
    threads: usize,
    reps: usize,
    warmup: usize,
    only: Vec<String>,
    filter: Option<String>,
    burn: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        reps: 15,
        warmup: 3,
        only: Vec::new(),
        filter: None,
        burn: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--threads" => a.threads = number(value()?)?,
            "--reps" => a.reps = number(value()?)?,
            "--warmup" => a.warmup = number(value()?)?,
            "--only" => a.only = value()?.split(',').map(str::to_string).collect(),
            "--filter" => a.filter = Some(value()?),
            "--no-burn" => a.burn = false,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vision_ops_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = init_threads(Some(args.threads));
    // Training reuses freed buffers, as the `ferrolab` binary arranges before it trains.
    tune_allocator();
    eprintln!(
        "threads {threads}, median of {} reps after {} warm-up; ms",
        args.reps, args.warmup
    );
    eprintln!(
        "{:<48} {:>8} {:>8} | {:>8} {:>8}",
        "case", "fwd", "train", "burn fwd", "burn trn"
    );
    let (w, r) = (args.warmup, args.reps);
    for case in cases(&args.only) {
        let name = case.name();
        if args.filter.as_ref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let (fwd, train) = measure(&case, true, w, r);
        let burn_times = (args.burn && case.op.replaced()).then(|| measure(&case, false, w, r));
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        eprintln!(
            "{:<48} {:>8} {:>8} | {:>8} {:>8}",
            name,
            ms(Some(fwd)),
            ms(train),
            ms(burn_times.map(|b| b.0)),
            ms(burn_times.and_then(|b| b.1)),
        );
        let mut obj = serde_json::json!({
            "name": name,
            "model": case.model,
            "op": case.op.name(),
            "shapes": case.shapes,
            "count": case.count,
            "reps": r,
            "warmup": w,
            "threads": threads,
            "replaced": case.op.replaced(),
            "ours_fwd_ms": fwd,
        });
        if let Some(t) = train {
            obj["ours_train_ms"] = serde_json::json!(t);
        }
        if let Some((bf, bt)) = burn_times {
            obj["burn_fwd_ms"] = serde_json::json!(bf);
            if let Some(bt) = bt {
                obj["burn_train_ms"] = serde_json::json!(bt);
            }
        }
        println!("{obj}");
    }
    ExitCode::SUCCESS
}
