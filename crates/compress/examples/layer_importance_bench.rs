//! Evaluation throughput of the layer-importance sweep on ResNet-20: the ferrolab side of
//! `bench/run_layer_importance_bench.sh`, which divides these figures by PyTorch's for the twin
//! in `bench/layer_importance_torch.py` (issue 17's speed target).
//!
//! ```text
//! cargo run --release -p ferrolab-compress --example layer_importance_bench -- \
//!     [--threads 2] [--images 2000] [--batch 500] [--warmup N] [--iters N] [--sweeps N] \
//!     [--json] [--params-only]
//! ```
//!
//! The model is the zoo's full-width ResNet-20 (`ZooSpec { arch: "resnet20", width: 1 }`, one
//! input channel, 10 classes) on `images` random 28×28 inputs (Fashion-MNIST's shape) held in
//! batches of `batch`, as the sweep holds its evaluation set. Weights are the initial ones:
//! dense kernels take the same time whatever the values.
//!
//! - **full**: `EvalSet::accuracy`, the whole forward pass over the set and the arg-max
//!   (`warmup` untimed, then `iters` timed); `full_images_per_second` is the median.
//! - **sweep**: `dataset::probe`, the ground-truth sweep's own code, on a one-setting grid
//!   (4-bit fake quantisation, so one probe per layer): a base evaluation, then for each layer
//!   in order the cached activations advanced to its stage, the layer quantised, the set
//!   evaluated from that stage, the weights written back. `sweep_images_per_second` = images ×
//!   (probes + 1) / seconds of the whole call (cache advances and operators included), median
//!   over `sweeps` calls. The full grid repeats the same per-layer loop with more settings.
//!
//! `--json` prints one object (the harness reads the last line); `--params-only` prints
//! `{"params": …}` (burn's count, batch-norm running statistics included) without timing, so
//! the harness can check that the PyTorch twin has the same layers.

use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_compress::dataset::{self, Grid};
use ferrolab_compress::train::EvalSet;
use ferrolab_compress::zoo::ZooSpec;
use ferrolab_core::backend::{device, init_threads, seed_backend};
use ferrolab_core::metrics::median;

const USAGE: &str = "usage: layer_importance_bench [--threads N] [--images N] [--batch N] \
                     [--warmup N] [--iters N] [--sweeps N] [--json] [--params-only]";

#[derive(Debug)]
struct Args {
    threads: usize,
    images: usize,
    batch: usize,
    warmup: usize,
    iters: usize,
    sweeps: usize,
    json: bool,
    params_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        images: 2000,
        batch: 500,
        warmup: 1,
        iters: 3,
        sweeps: 1,
        json: false,
        params_only: false,
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
            "--threads" => a.threads = count(value()?)?,
            "--images" => a.images = count(value()?)?,
            "--batch" => a.batch = count(value()?)?,
            "--warmup" => a.warmup = count(value()?)?,
            "--iters" => a.iters = count(value()?)?,
            "--sweeps" => a.sweeps = count(value()?)?,
            "--json" => a.json = true,
            "--params-only" => a.params_only = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.threads == 0 || a.images == 0 || a.batch == 0 || a.iters == 0 || a.sweeps == 0 {
        return Err(format!(
            "--threads, --images, --batch, --iters and --sweeps must be at least 1\n{USAGE}"
        ));
    }
    Ok(a)
}

fn json_list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|t| format!("{t:.2}")).collect();
    format!("[{}]", items.join(", "))
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_threads(Some(a.threads));
    seed_backend(0);
    let dev = device();
    let spec = ZooSpec {
        arch: "resnet20".into(),
        width: 1.0,
        classes: 10,
        side: 28,
    };
    let mut model = match spec.build(&dev) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let params = model.num_params();
    if a.params_only {
        println!("{{\"params\": {params}}}");
        return ExitCode::SUCCESS;
    }
    let eval = EvalSet {
        batches: (0..a.images)
            .step_by(a.batch)
            .map(|s| {
                let n = a.batch.min(a.images - s);
                Tensor::<4>::random([n, 1, 28, 28], Distribution::Normal(0.0, 1.0), &dev)
            })
            .collect(),
        // Labels only feed the accuracy, which costs the same whatever they are.
        labels: (0..a.images).map(|i| (i % 10) as u8).collect(),
    };
    let n = a.images as f64;
    let mut full = Vec::with_capacity(a.iters);
    let mut acc = 0.0;
    for i in 0..a.warmup + a.iters {
        let t = Instant::now();
        acc = eval.accuracy(&model);
        let s = t.elapsed().as_secs_f64();
        if i >= a.warmup {
            full.push(n / s);
        }
    }
    let grid = Grid {
        sparsities: Vec::new(),
        bits: vec![4],
        flip_counts: Vec::new(),
        flip_rates: Vec::new(),
        flip_seeds: 1,
    };
    let mut sweep = Vec::with_capacity(a.sweeps);
    let mut probes = 0;
    for _ in 0..a.sweeps {
        let t = Instant::now();
        let (_, _, p, _) = dataset::probe(&mut model, &eval, &grid, 0);
        let s = t.elapsed().as_secs_f64();
        probes = p;
        sweep.push(n * (p + 1) as f64 / s);
    }
    let (f, s) = (median(full.clone()), median(sweep.clone()));
    if a.json {
        println!(
            "{{\"model\": \"resnet20\", \"images\": {}, \"batch\": {}, \"params\": {params}, \
             \"probes\": {probes}, \"accuracy\": {acc}, \"full_images_per_second\": {f:.2}, \
             \"sweep_images_per_second\": {s:.2}, \"full_all\": {}, \"sweep_all\": {}}}",
            a.images,
            a.batch,
            json_list(&full),
            json_list(&sweep)
        );
    } else {
        println!(
            "ResNet-20, {} images in batches of {}, {} threads: full forward {f:.1} images/s; \
             sweep ({probes} probes + base) {s:.1} images/s",
            a.images, a.batch, a.threads
        );
    }
    ExitCode::SUCCESS
}
