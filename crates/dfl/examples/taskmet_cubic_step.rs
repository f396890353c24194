//! One TaskMet outer step on the reference's CubicTopK sizes, for `bench/run_taskmet_reference.sh`
//! to divide by the reference's (github.com/bamos/taskmet, `LODLs/`) time for the same step.
//!
//! `cargo run --release -p ferrolab-dfl --example taskmet_cubic_step -- [--threads N]
//! [--warmup N] [--steps N] [--seed N] [--data-seed N] [--json] [--train]`
//!
//! Data: `config/problem/cubic.yaml`'s sizes, 200 training / 200 validation / 400 test
//! instances of 50 items (one feature each, `y = 10(x³ − 0.65x)`), top-1; settings
//! [`LearnConfig::reference`]`("cubic")` (linear predictor, metric net of 200 hidden units,
//! inner Adam lr 0.1 on batches of 10 instances, 500 inner iterations on the first step and 100
//! on later ones, normal CG with 5 iterations on 10 instances, outer batch 50).
//!
//! Timing mode (default): `--warmup` untimed outer steps, the first being the cold one with
//! its 500-iteration inner solve, then `--steps` timed warm-started steps (inner solve, `∇θ`
//! of the task loss through the soft top-k, the CG implicit gradient, the metric's Adam step),
//! reported as the median in ms, with the phases' medians.
//!
//! `--train`: a full `train(Method::TaskMet, ...)` run (up to 1000 outer steps, validation
//! every 10, patience 100) and its normalised test decision quality
//! `(DQ − DQ_random) / (DQ_optimal − DQ_random)` (10 random draws), as `ferrolab taskmet`
//! reports it.

use clap::Parser;
use ferrolab_core::backend::try_init_threads;
use ferrolab_core::metrics::median;
use ferrolab_dfl::learn::{self, LearnConfig, Method, PhaseTimes};
use ferrolab_dfl::tasks::{self, CubicSpec};
use serde_json::json;
use std::process::ExitCode;

const TRAIN: usize = 200;
const VAL: usize = 200;
const TEST: usize = 400;
const RANDOM_DRAWS: usize = 10;

/// One TaskMet outer step (or a full run with --train) on CubicTopK at the reference's sizes.
#[derive(Parser, Debug)]
#[command(name = "taskmet_cubic_step")]
struct Args {
    /// Threads of the rayon pool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Untimed outer steps before the timed ones, counting the first (cold) step; at least 1.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed outer steps; the median is reported.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Model seed (initial predictor and metric, batches).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the generated instances (the reference's `dataset_seed`).
    #[arg(long, default_value_t = 0)]
    data_seed: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Train to the end and report the normalised test decision quality instead of timing.
    #[arg(long)]
    train: bool,
}

fn run(a: &Args) -> Result<serde_json::Value, String> {
    let threads = try_init_threads(Some(a.threads)).map_err(|e| e.to_string())?;
    let spec = CubicSpec {
        instances: TRAIN + VAL + TEST,
        ..CubicSpec::default()
    };
    let task = tasks::cubic_topk(&spec, a.data_seed).map_err(|e| format!("cubic: {e}"))?;
    let all = task.data;
    let (train, val, test) = (
        all.range(0, TRAIN),
        all.range(TRAIN, TRAIN + VAL),
        all.range(TRAIN + VAL, all.len()),
    );
    let problem = task.problem;
    let cfg = LearnConfig::reference("cubic").ok_or("no reference settings for cubic")?;

    if a.train {
        let trained = learn::train(
            Method::TaskMet,
            &problem,
            &train,
            &val,
            &cfg,
            a.seed,
            &mut |_| {},
        )
        .map_err(|e| e.to_string())?;
        let preds = learn::predict(&trained, &test).map_err(|e| e.to_string())?;
        let (norm, dq, random, optimal) =
            tasks::normalised_dq(&problem, &test, &preds, RANDOM_DRAWS, a.seed ^ 0x5eed_d0a1)
                .map_err(|e| format!("normalised DQ: {e}"))?;
        return Ok(json!({
            "test_dq_norm": norm,
            "test_dq": dq,
            "dq_random": random,
            "dq_optimal": optimal,
            "val_dq": trained.best_val_dq,
            "best_step": trained.best_step,
            "steps_run": trained.steps_run,
            "stopped_early": trained.stopped_early,
            "train_s": trained.wall_s,
            "cg_not_converged": trained.cg.not_converged,
            "cg_solves": trained.cg.solves,
            "seed": a.seed,
            "data_seed": a.data_seed,
            "threads": threads,
        }));
    }

    // time_taskmet_steps runs the cold first step plus `n` warm ones; the first `warmup - 1`
    // warm ones are warm-up too.
    let skip = a.warmup - 1;
    let t = learn::time_taskmet_steps(&problem, &train, &cfg, a.seed, skip + a.steps)
        .map_err(|e| e.to_string())?;
    let timed = &t.steps[skip..];
    let ms =
        |f: fn(&PhaseTimes) -> f64| median(timed.iter().map(|p| f(p) * 1e3).collect::<Vec<f64>>());
    let iters: Vec<f64> = t.inner_iters[skip..].iter().map(|&i| i as f64).collect();
    Ok(json!({
        "step_ms": ms(PhaseTimes::total),
        "inner_ms": ms(|p| p.inner_s),
        "task_grad_ms": ms(|p| p.task_grad_s),
        "implicit_ms": ms(|p| p.implicit_s),
        "metric_update_ms": ms(|p| p.metric_update_s),
        "first_step_ms": t.first.total() * 1e3,
        "inner_iters_median": median(iters),
        "threads": threads,
        "warmup": a.warmup,
        "steps": a.steps,
        "seed": a.seed,
        "data_seed": a.data_seed,
    }))
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.threads == 0 || a.warmup == 0 || a.steps == 0 {
        eprintln!(
            "error: --threads, --warmup and --steps must be at least 1 (the first warm-up step is the cold one)"
        );
        return ExitCode::from(2);
    }
    match run(&a) {
        Ok(v) => {
            if a.json {
                println!("{v}");
            } else if a.train {
                println!(
                    "TaskMet CubicTopK seed {}: normalised test DQ {:.4} (DQ {:.4}, random {:.4}, optimal {:.4}); best step {} of {} ({:.1} s, {} threads)",
                    a.seed,
                    v["test_dq_norm"].as_f64().unwrap_or(f64::NAN),
                    v["test_dq"].as_f64().unwrap_or(f64::NAN),
                    v["dq_random"].as_f64().unwrap_or(f64::NAN),
                    v["dq_optimal"].as_f64().unwrap_or(f64::NAN),
                    v["best_step"],
                    v["steps_run"],
                    v["train_s"].as_f64().unwrap_or(f64::NAN),
                    v["threads"]
                );
            } else {
                println!(
                    "TaskMet CubicTopK outer step ({} threads, warm-up {}, median of {}): {:.3} ms = inner {:.3} + task grad {:.3} + implicit {:.3} + metric update {:.3}; first (cold) step {:.2} ms; inner iterations median {}",
                    v["threads"],
                    a.warmup,
                    a.steps,
                    v["step_ms"].as_f64().unwrap_or(f64::NAN),
                    v["inner_ms"].as_f64().unwrap_or(f64::NAN),
                    v["task_grad_ms"].as_f64().unwrap_or(f64::NAN),
                    v["implicit_ms"].as_f64().unwrap_or(f64::NAN),
                    v["metric_update_ms"].as_f64().unwrap_or(f64::NAN),
                    v["first_step_ms"].as_f64().unwrap_or(f64::NAN),
                    v["inner_iters_median"]
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
