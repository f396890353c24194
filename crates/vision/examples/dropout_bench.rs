//! burn-nn's `Dropout` against ferrolab's one-pass dropout (`ferrolab_vision::dropout`) on
//! UNet's encoder shapes at the benchmark's batch (`[8, C, H, W]`, the default rates),
//! forward + backward of `sum(dropout(x))`, the two alternating in one process so that other
//! load hits both alike. Prints the median and minimum per side over `--reps` and their
//! ratios.
//!
//! ```text
//! cargo run --release -p ferrolab-vision --example dropout_bench -- [--threads 2] [--reps 15]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use burn::nn::DropoutConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_core::backend::{init_threads, seed_backend, train_device};
use ferrolab_core::metrics::median;

fn main() -> ExitCode {
    let (mut threads, mut reps) = (2usize, 15usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--threads", Some(v)) if v > 0 => threads = v,
            ("--reps", Some(v)) if v > 0 => reps = v,
            _ => {
                eprintln!("usage: dropout_bench [--threads N] [--reps N] (positive integers)");
                return ExitCode::from(2);
            }
        }
    }
    init_threads(Some(threads));
    seed_backend(0);
    let dev = train_device();
    let levels: [(usize, usize, f64); 5] = [
        (16, 128, 0.05),
        (32, 64, 0.1),
        (64, 32, 0.2),
        (128, 16, 0.3),
        (256, 8, 0.5),
    ];
    let inputs: Vec<(Tensor<4>, f64)> = levels
        .iter()
        .map(|&(c, s, p)| {
            let x = Tensor::<4>::random([8, c, s, s], Distribution::Normal(0.0, 1.0), &dev);
            (x, p)
        })
        .collect();
    let burn_layers: Vec<_> = levels
        .iter()
        .map(|&(_, _, p)| DropoutConfig::new(p).init())
        .collect();
    let step = |ours: bool| {
        let t0 = Instant::now();
        for ((x, p), layer) in inputs.iter().zip(&burn_layers) {
            let x = x.clone().require_grad();
            let y = if ours {
                ferrolab_vision::dropout::dropout(x.clone(), *p)
            } else {
                layer.forward(x.clone())
            };
            let g = y.sum().backward();
            let _ = x.grad(&g).map(|d| d.sum().into_scalar::<f32>());
        }
        t0.elapsed().as_secs_f64() * 1e3
    };
    let (mut tb, mut to) = (Vec::new(), Vec::new());
    for i in 0..reps + 2 {
        let (b, o) = (step(false), step(true));
        if i >= 2 {
            tb.push(b);
            to.push(o);
        }
    }
    let (mb, mo) = (median(tb.clone()), median(to.clone()));
    let (nb, no) = (
        tb.iter().copied().fold(f64::MAX, f64::min),
        to.iter().copied().fold(f64::MAX, f64::min),
    );
    println!(
        "dropout fwd+bwd over UNet's 5 encoder levels, batch 8, {threads} threads, {reps} reps: \
         burn median {mb:.2} ms (min {nb:.2}), ferrolab median {mo:.2} ms (min {no:.2}); \
         ratio median {:.3}, min {:.3}",
        mo / mb,
        no / nb
    );
    ExitCode::SUCCESS
}
