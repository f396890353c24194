//! Training-step time of Kim-CNN and SECNN as `ferrolab secnn` trains them (bucketed batch of
//! 50 sentences, Kim's sizes, lazy Adam for the word vectors, dense Adam for the rest), for
//! `bench/run_secnn_bench.sh` to divide by PyTorch's time for the same architecture.
//!
//! `cargo run --release -p ferrolab-text --example secnn_step_bench -- [--threads N] [--len T]
//! [--warmup N] [--iters N] [--model kim|secnn|both] [--json]`
//!
//! `--model` times one model per process, as `bench/secnn_harness.py` runs it, so neither model
//! inherits the other's warm caches and allocator state.

use ferrolab_core::metrics::median;
use ferrolab_core::train::TrainStep;
use ferrolab_text::models::{ConvEncoderConfig, KimCnn, Secnn, SentenceClassifier};
use ferrolab_text::train::{Encoded, Fit};
use std::time::Instant;

const VOCAB: usize = 18_000;
const BATCH: usize = 50;

fn arg(name: &str, default: usize) -> Result<usize, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn time_model<M: SentenceClassifier>(model: M, data: &Encoded, warmup: usize, iters: usize) -> f64 {
    let mut fit = Fit::new(model, data, None, BATCH, 5, 3.0, 1);
    let batch: Vec<usize> = (0..BATCH).collect();
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t = Instant::now();
        // step() reads the loss back, so the work is complete when it returns.
        if let Err(e) = fit.step(batch.clone(), 1e-3) {
            eprintln!("step failed: {e}");
            std::process::exit(1);
        }
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    median(times)
}

fn main() {
    let parsed = (|| {
        Ok::<_, String>((
            arg("--threads", 2)?,
            arg("--len", 22)?,
            arg("--warmup", 5)?,
            arg("--iters", 30)?,
        ))
    })();
    let (threads, len, warmup, iters) = match parsed {
        Ok((_, 0, _, _)) | Ok((_, _, _, 0)) => {
            eprintln!("error: --len and --iters must be at least 1");
            std::process::exit(2);
        }
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let args: Vec<String> = std::env::args().collect();
    let model = match args.iter().position(|a| a == "--model") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "both".to_string(),
    };
    if !matches!(model.as_str(), "kim" | "secnn" | "both") {
        eprintln!("error: --model must be kim, secnn or both (got {model:?})");
        std::process::exit(2);
    }
    ferrolab_core::backend::init_threads(Some(threads));
    ferrolab_core::backend::seed_backend(0);
    // Deterministic pseudo-random token ids (no padding: every sentence has `len` tokens).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let ids: Vec<Vec<usize>> = (0..BATCH)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    2 + (x % (VOCAB as u64 - 2)) as usize
                })
                .collect()
        })
        .collect();
    let data = Encoded {
        labels: (0..BATCH).map(|i| i % 2).collect(),
        ids,
    };
    let enc = ConvEncoderConfig::new(VOCAB);
    let dev = ferrolab_core::backend::train_device();
    let mut times = Vec::new();
    if matches!(model.as_str(), "kim" | "both") {
        let ms = time_model(KimCnn::new(&enc, 2, 0.5, &dev), &data, warmup, iters);
        times.push(("kim_cnn_ms", ms));
    }
    if matches!(model.as_str(), "secnn" | "both") {
        let ms = time_model(Secnn::new(&enc, 2, 0.5, 16, &dev), &data, warmup, iters);
        times.push(("secnn_ms", ms));
    }
    if std::env::args().any(|a| a == "--json") {
        let fields: Vec<String> = times
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v:.3}"))
            .collect();
        println!("{{{}}}", fields.join(", "));
    } else {
        for (k, v) in &times {
            println!("{k} {v:.2} (batch {BATCH}, length {len}, {threads} threads)");
        }
    }
}
