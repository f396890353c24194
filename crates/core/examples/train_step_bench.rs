//! Training-step benchmark: ferrolab (burn 0.22.1, flex CPU backend) side of the comparison
//! that `bench/run_step_bench.sh` makes against PyTorch (`bench/pytorch_step.py` builds the
//! same three models).
//!
//! One step = forward + cross-entropy + backward + Adam step, on random inputs and labels that
//! stay fixed for the whole run. The loss scalar is read back every step, so the step's work has
//! finished when its clock stops (the flex backend runs eagerly; the read-back guards the
//! measurement against any lazy backend too).
//!
//! Models:
//! - `mlp`: 784-256-256-10 with ReLU, batch 128.
//! - `cnn`: `[64,1,28,28]` → conv3x3(1→32, pad 1)-ReLU-maxpool2 → conv3x3(32→64, pad 1)-ReLU-
//!   maxpool2 → flatten → Linear(3136→128)-ReLU → Linear(128→10).
//! - `attention`: `x: [32,64,128]` → multi-head self-attention (d 128, 4 heads) + residual →
//!   LayerNorm → mean over tokens → Linear(128→10).
//!
//! ```text
//! cargo run --release -p ferrolab-core --example train_step_bench -- \
//!     [--threads N] [--warmup N] [--iters N] [--only mlp,cnn,attention] [--breakdown] [--json]
//! cargo run --release -p ferrolab-core --example train_step_bench -- --ops [--op NAME] [--json]
//! ```
//!
//! `--json` prints one object `{"mlp_ms":…, "cnn_ms":…, "attention_ms":…}` of median step times
//! in milliseconds; `--breakdown` adds the median of each phase (forward+loss, backward,
//! optimizer) per model, as `<model>_forward_ms`, `<model>_backward_ms`, `<model>_optim_ms`.
//! `--ops` times instead the single kernels the CNN and attention steps are made of, with their
//! shapes and without autodiff (`--op NAME` keeps those whose name contains NAME), to locate a
//! gap kernel by kernel against `bench/pytorch_step.py --ops`.

use std::process::ExitCode;
use std::time::Instant;

use ferrolab_core::backend::{BACKEND_NAME, device, init_threads, seed_backend, train_device};
use ferrolab_core::burn;
use ferrolab_core::nn::{
    MlpConfig, MultiHeadSelfAttention, MultiHeadSelfAttentionConfig, int_tensor,
};

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::{
    conv_transpose2d, conv2d, conv2d_weight_backward, layer_norm, linear, max_pool2d_with_indices,
    max_pool2d_with_indices_backward,
};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, MaxPoolOptions};
use ferrolab_core::metrics::median;

const LEARNING_RATE: f64 = 1e-3;
const CLASSES: usize = 10;

/// Command-line options.
#[derive(Debug, Clone)]
struct Args {
    threads: usize,
    warmup: usize,
    iters: usize,
    only: Vec<String>,
    breakdown: bool,
    ops: bool,
    op: Option<String>,
    json: bool,
}

const USAGE: &str = "usage: train_step_bench [--threads N] [--warmup N] [--iters N] \
                     [--only mlp,cnn,attention] [--breakdown] [--ops] [--op NAME] [--json]";
const MODELS: [&str; 3] = ["mlp", "cnn", "attention"];

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: 2,
        warmup: 5,
        iters: 30,
        only: MODELS.iter().map(|s| s.to_string()).collect(),
        breakdown: false,
        ops: false,
        op: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let count = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|e| format!("{name} {v:?}: not a non-negative integer ({e})"))
        };
        match flag.as_str() {
            "--threads" => args.threads = count("--threads", value("--threads")?)?.max(1),
            "--warmup" => args.warmup = count("--warmup", value("--warmup")?)?,
            "--iters" => args.iters = count("--iters", value("--iters")?)?.max(1),
            "--only" => {
                let list = value("--only")?;
                args.only = list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = args.only.iter().find(|m| !MODELS.contains(&m.as_str())) {
                    return Err(format!(
                        "--only: unknown model {bad:?} (expected some of {MODELS:?})"
                    ));
                }
            }
            "--breakdown" => args.breakdown = true,
            "--ops" => args.ops = true,
            "--op" => {
                args.op = Some(value("--op")?);
                args.ops = true;
            }
            "--json" => args.json = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// The small CNN (Fashion-MNIST shape).
#[derive(Module, Debug)]
struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
}

impl SmallCnn {
    fn new(device: &Device) -> Self {
        let conv = |c_in, c_out| {
            Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            conv1: conv(1, 32),
            conv2: conv(32, 64),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(64 * 7 * 7, 128).init(device),
            fc2: LinearConfig::new(128, CLASSES).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.pool.forward(relu(self.conv1.forward(x)));
        let h = self.pool.forward(relu(self.conv2.forward(h)));
        let h: Tensor<2> = h.flatten(1, 3);
        self.fc2.forward(relu(self.fc1.forward(h)))
    }
}

/// Self-attention block with a classification head.
#[derive(Module, Debug)]
struct AttentionBlock {
    attn: MultiHeadSelfAttention,
    norm: LayerNorm,
    head: Linear,
}

impl AttentionBlock {
    fn new(d_model: usize, heads: usize, device: &Device) -> Self {
        Self {
            attn: MultiHeadSelfAttentionConfig::new(d_model, heads).init(device),
            norm: LayerNormConfig::new(d_model).init(device),
            head: LinearConfig::new(d_model, CLASSES).init(device),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        // ε = LayerNormConfig's default, with which `norm` was built.
        let h = ferrolab_core::kernels::rowwise::layer_norm_module(
            &self.norm,
            x.clone() + self.attn.forward(x, None),
            1e-5,
        );
        let pooled: Tensor<2> = h.mean_dim(1).squeeze_dim(1);
        self.head.forward(pooled)
    }
}

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------

/// Median step time and median of each phase, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Timing {
    step: f64,
    forward: f64,
    backward: f64,
    optim: f64,
}

/// Runs `warmup + iters` training steps of `model` on the fixed batch `(x, y)` and returns the
/// medians over the last `iters`.
fn bench_model<M, const D: usize>(
    mut model: M,
    forward: impl Fn(&M, Tensor<D>) -> Tensor<2>,
    x: Tensor<D>,
    y: Tensor<1, Int>,
    args: &Args,
) -> Timing
where
    M: Module,
{
    let loss_fn: CrossEntropyLoss = CrossEntropyLossConfig::new().init(&x.device());
    let mut optim: ModuleOptimizer = AdamConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .init();
    let (mut steps, mut fwd, mut bwd, mut opt) = (vec![], vec![], vec![], vec![]);
    let mut last_loss = f32::NAN;
    for i in 0..args.warmup + args.iters {
        let t0 = Instant::now();
        let loss = loss_fn.forward(forward(&model, x.clone()), y.clone());
        // Reading the loss back forces the forward pass to have completed.
        last_loss = loss.clone().into_scalar::<f32>();
        let t1 = Instant::now();
        let grads = loss.backward();
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(LEARNING_RATE, model, grads);
        let t3 = Instant::now();
        if i >= args.warmup {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            steps.push(ms(t0, t3));
            fwd.push(ms(t0, t1));
            bwd.push(ms(t1, t2));
            opt.push(ms(t2, t3));
        }
    }
    if !last_loss.is_finite() {
        eprintln!("warning: final loss is {last_loss}");
    }
    Timing {
        step: median(steps),
        forward: median(fwd),
        backward: median(bwd),
        optim: median(opt),
    }
}

fn random_labels(n: usize, seed: u64) -> Vec<i64> {
    // A small LCG keeps the labels deterministic without another dependency.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % CLASSES as u64) as i64
        })
        .collect()
}

fn run(args: &Args) -> Vec<(&'static str, Timing)> {
    let device = train_device();
    let mut out = vec![];
    for name in MODELS {
        if !args.only.iter().any(|m| m == name) {
            continue;
        }
        seed_backend(42);
        let timing = match name {
            "mlp" => {
                let batch = 128;
                let model = MlpConfig::new(vec![784, 256, 256, CLASSES]).init(&device);
                let x = Tensor::<2>::random([batch, 784], Distribution::Default, &device);
                let y = int_tensor(&random_labels(batch, 1), &device);
                bench_model(model, |m, x| m.forward(x), x, y, args)
            }
            "cnn" => {
                let batch = 64;
                let model = SmallCnn::new(&device);
                let x = Tensor::<4>::random([batch, 1, 28, 28], Distribution::Default, &device);
                let y = int_tensor(&random_labels(batch, 2), &device);
                bench_model(model, |m, x| m.forward(x), x, y, args)
            }
            _ => {
                let (batch, tokens, d) = (32, 64, 128);
                let model = AttentionBlock::new(d, 4, &device);
                let x = Tensor::<3>::random([batch, tokens, d], Distribution::Default, &device);
                let y = int_tensor(&random_labels(batch, 3), &device);
                bench_model(model, |m, x| m.forward(x), x, y, args)
            }
        };
        out.push((name, timing));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Per-op timing (--ops): the kernels that the CNN and attention steps are made of, timed one by
// one on the inference device (no autodiff graph), with the shapes those models run them at.
// bench/pytorch_step.py --ops times the same kernels through ATen, so the two lists can be
// divided entry by entry to see which kernel carries a gap.
// ---------------------------------------------------------------------------------------------

/// Median wall time of `f` in milliseconds. The flex backend is eager: an op's result is
/// computed when the call returns, so dropping it is enough.
fn time_op<T>(args: &Args, mut f: impl FnMut() -> T) -> f64 {
    let mut times = Vec::with_capacity(args.iters);
    for i in 0..args.warmup + args.iters {
        let t = Instant::now();
        let out = f();
        let dt = t.elapsed().as_secs_f64() * 1e3;
        drop(out);
        if i >= args.warmup {
            times.push(dt);
        }
    }
    median(times)
}

fn rand<const D: usize>(shape: [usize; D], dev: &Device) -> Tensor<D> {
    Tensor::<D>::random(shape, Distribution::Default, dev)
}

fn ops(args: &Args) -> Vec<(String, f64)> {
    let dev = device();
    seed_backend(7);
    let mut out: Vec<(String, f64)> = vec![];
    // Times `$body` as kernel `$name` unless `--op` filters it out.
    macro_rules! op {
        ($name:expr, $body:expr) => {
            if args.op.as_deref().is_none_or(|f| $name.contains(f)) {
                out.push(($name.to_string(), time_op(args, || $body)));
            }
        };
    }
    let pad1 = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let pool = MaxPoolOptions::new([2, 2]);

    if args.only.iter().any(|m| m == "cnn") {
        let (x1, w1, b1) = (
            rand([64, 1, 28, 28], &dev),
            rand([32, 1, 3, 3], &dev),
            rand([32], &dev),
        );
        let g1 = rand([64, 32, 28, 28], &dev);
        let (x2, w2, b2) = (
            rand([64, 32, 14, 14], &dev),
            rand([64, 32, 3, 3], &dev),
            rand([64], &dev),
        );
        let g2 = rand([64, 64, 14, 14], &dev);
        let (h, wf, gf) = (
            rand([64, 3136], &dev),
            rand([3136, 128], &dev),
            rand([64, 128], &dev),
        );
        let (p1, idx1) = max_pool2d_with_indices(g1.clone(), pool.clone());
        let (p2, idx2) = max_pool2d_with_indices(g2.clone(), pool.clone());
        // What burn's conv2d_x_backward runs: a transposed convolution of the output gradient.
        let tr = ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1);

        op!(
            "cnn.conv1_forward",
            conv2d(x1.clone(), w1.clone(), Some(b1.clone()), pad1())
        );
        op!(
            "cnn.conv1_weight_grad",
            conv2d_weight_backward(x1.clone(), w1.clone(), g1.clone(), pad1())
        );
        // burn's conv2d_bias_backward: swap batch and channels, flatten, sum.
        op!(
            "cnn.conv1_bias_grad",
            g1.clone()
                .swap_dims(0, 1)
                .reshape([32, 64 * 28 * 28])
                .sum_dim(1)
        );
        op!("cnn.relu1_forward", relu(g1.clone()));
        op!(
            "cnn.pool1_forward",
            max_pool2d_with_indices(g1.clone(), pool.clone())
        );
        op!(
            "cnn.pool1_backward",
            max_pool2d_with_indices_backward(
                g1.clone(),
                [2, 2],
                [2, 2],
                [0, 0],
                [1, 1],
                false,
                p1.clone(),
                idx1.clone()
            )
        );
        op!(
            "cnn.conv2_forward",
            conv2d(x2.clone(), w2.clone(), Some(b2.clone()), pad1())
        );
        op!(
            "cnn.conv2_input_grad",
            conv_transpose2d(g2.clone(), w2.clone(), None, tr.clone())
        );
        op!(
            "cnn.conv2_weight_grad",
            conv2d_weight_backward(x2.clone(), w2.clone(), g2.clone(), pad1())
        );
        // The GEMM a dedicated weight-gradient kernel would run (dW = grad · im2col(x), with
        // K = batch·H·W), given the im2col matrix: what cnn.conv2_weight_grad could approach.
        let (g2_rows, cols2) = (
            rand([64, 64 * 14 * 14], &dev),
            rand([64 * 14 * 14, 32 * 9], &dev),
        );
        op!(
            "cnn.conv2_weight_grad_gemm_only",
            g2_rows.clone().matmul(cols2.clone())
        );
        op!(
            "cnn.conv2_bias_grad",
            g2.clone()
                .swap_dims(0, 1)
                .reshape([64, 64 * 14 * 14])
                .sum_dim(1)
        );
        op!(
            "cnn.pool2_forward",
            max_pool2d_with_indices(g2.clone(), pool.clone())
        );
        op!(
            "cnn.pool2_backward",
            max_pool2d_with_indices_backward(
                g2.clone(),
                [2, 2],
                [2, 2],
                [0, 0],
                [1, 1],
                false,
                p2.clone(),
                idx2.clone()
            )
        );
        op!("cnn.fc1_forward", linear(h.clone(), wf.clone(), None));
        op!(
            "cnn.fc1_weight_grad",
            h.clone().transpose().matmul(gf.clone())
        );
        op!(
            "cnn.fc1_input_grad",
            gf.clone().matmul(wf.clone().transpose())
        );
    }

    if args.only.iter().any(|m| m == "attention") {
        let (b, t, d, heads) = (32, 64, 128, 4);
        let dh = d / heads;
        let x = rand([b, t, d], &dev);
        let (w, bias) = (rand([d, d], &dev), rand([d], &dev));
        let (q, k) = (rand([b, heads, t, dh], &dev), rand([b, heads, t, dh], &dev));
        let scores = rand([b, heads, t, t], &dev);
        let (gamma, beta) = (rand([d], &dev), rand([d], &dev));

        op!(
            "attention.linear_forward",
            linear(x.clone(), w.clone(), Some(bias.clone()))
        );
        // reshape + swap_dims, made contiguous the way a following kernel needs it
        op!(
            "attention.split_heads_copy",
            x.clone()
                .reshape([b, t, heads, dh])
                .swap_dims(1, 2)
                .reshape([b * heads, t, dh])
        );
        op!(
            "attention.scores_matmul",
            q.clone().matmul(k.clone().swap_dims(2, 3))
        );
        op!("attention.softmax", softmax(scores.clone(), 3));
        // Under autodiff, burn 0.22 does not reach flex's fused softmax/layer-norm kernels: the
        // Autodiff backend keeps burn-backend's default decompositions (max_dim, sub, exp,
        // sum_dim, div; mean, sub, mul, mean, add, sqrt, div, mul, add). These two entries time
        // those decompositions, i.e. what the training step runs forward.
        op!("attention.softmax_as_trained", {
            let max = scores.clone().detach().max_dim(3);
            let e = (scores.clone() - max).exp();
            let sum = e.clone().sum_dim(3);
            e / sum
        });
        op!("attention.layer_norm_as_trained", {
            let mean = x.clone().mean_dim(2);
            let centered = x.clone() - mean;
            let var = (centered.clone() * centered.clone()).mean_dim(2);
            let normalized = centered / var.add_scalar(1e-5).sqrt();
            normalized * gamma.clone().reshape([1, 1, d]) + beta.clone().reshape([1, 1, d])
        });
        op!("attention.context_matmul", scores.clone().matmul(k.clone()));
        op!(
            "attention.layer_norm",
            layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), 1e-5)
        );
        op!("attention.add_residual", x.clone() + x.clone());
    }
    out
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let threads = init_threads(Some(args.threads));
    if args.ops {
        let timings = ops(&args);
        if args.json {
            let fields: Vec<String> = timings
                .iter()
                .map(|(name, ms)| format!("\"{name}\": {ms:.4}"))
                .collect();
            println!("{{{}}}", fields.join(", "));
        } else {
            println!("{BACKEND_NAME}, {threads} threads, per-op median ms");
            for (name, ms) in &timings {
                println!("{name:<32} {ms:>10.3}");
            }
        }
        return ExitCode::SUCCESS;
    }
    let results = run(&args);
    if args.json {
        let mut fields = vec![];
        for (name, t) in &results {
            fields.push(format!("\"{name}_ms\": {:.4}", t.step));
            if args.breakdown {
                fields.push(format!("\"{name}_forward_ms\": {:.4}", t.forward));
                fields.push(format!("\"{name}_backward_ms\": {:.4}", t.backward));
                fields.push(format!("\"{name}_optim_ms\": {:.4}", t.optim));
            }
        }
        println!("{{{}}}", fields.join(", "));
    } else {
        println!(
            "{BACKEND_NAME}, {threads} threads, warmup {}, iters {} (median ms)",
            args.warmup, args.iters
        );
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>10}",
            "model", "step", "fwd+loss", "backward", "optim"
        );
        for (name, t) in &results {
            println!(
                "{:<10} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                name, t.step, t.forward, t.backward, t.optim
            );
        }
    }
    ExitCode::SUCCESS
}
