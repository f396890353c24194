//! Runs the in-process AdaEvo comparison as `ferrolab adaevo --preset P [--set K=V …]` does
//! (master seed 0, the same seeds and methods) without building the whole CLI, prints every
//! method's headline figures as mean ± std over seeds, and writes `report.json` to OUT.
//!
//! `cargo run --release -p ferrolab-edge --example adaevo_table -- paper OUT [seed=N] [K=V …]`

use ferrolab_core::{Checked, RunContext, RunDir};
use ferrolab_edge::config::AdaEvoConfig;
use ferrolab_edge::experiment;
use std::collections::BTreeMap;
use std::process::ExitCode;

// Measured task memory is the heap peak, as in the `ferrolab` binary.
#[global_allocator]
static ALLOC: ferrolab_core::alloc::PeakAlloc = ferrolab_core::alloc::PeakAlloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: adaevo_table quick|paper|detection|fashion OUT [key=value ...]");
        return ExitCode::from(2);
    }
    let toml = match args[0].as_str() {
        "quick" => include_str!("../../../configs/adaevo/quick.toml"),
        "paper" => include_str!("../../../configs/adaevo/paper.toml"),
        "detection" => include_str!("../../../configs/adaevo/detection.toml"),
        "fashion" => include_str!("../../../configs/adaevo/fashion.toml"),
        other => {
            eprintln!("unknown preset {other:?} (quick, paper, detection, fashion)");
            return ExitCode::from(2);
        }
    };
    // `seed=N` (not a config key): the master seed, as `ferrolab adaevo --seed N` (default 0).
    let mut master = 0u64;
    let mut sets = Vec::new();
    for a in &args[2..] {
        match a.strip_prefix("seed=") {
            Some(v) => match v.parse::<u64>() {
                Ok(n) => master = n,
                Err(_) => {
                    eprintln!("seed={v:?} is not a number");
                    return ExitCode::from(2);
                }
            },
            None => sets.push(a.clone()),
        }
    }
    let cfg: AdaEvoConfig =
        match ferrolab_core::config::load_layers(Some((&args[0], toml)), None, &sets) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
    let cfg = match Checked::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let run = match RunDir::create(&args[1]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let threads = rayon::current_num_threads();
    let mut ctx = RunContext::new(master, threads, None, run);
    let out = match experiment::run(&cfg, &mut ctx) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let r = &out.report;
    let mut all: Vec<(&str, &BTreeMap<String, f64>)> = vec![("adaevo", &r.metrics)];
    for (k, v) in &r.baselines {
        all.push((k.as_str(), v));
    }
    let keys = [
        "avg_qoe_t90",
        "avg_qoe_t80",
        "avg_accuracy",
        "upload_mb",
        "edge_utilisation",
        "drift_type_accuracy",
        "estimate_correlation",
        "estimate_correlation_cc",
        "tasks_completed",
        "evolution_latency_seconds",
    ];
    println!("| method | {} |", keys.join(" | "));
    for (name, m) in &all {
        let cells: Vec<String> = keys
            .iter()
            .map(|k| match (m.get(*k), m.get(&format!("{k}_std"))) {
                (Some(v), Some(s)) => format!("{v:.3} ± {s:.3}"),
                _ => "–".into(),
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    for (k, v) in &r.timings {
        println!("{k}: {v:.1}");
    }
    if let Some(d) = r.details.as_object() {
        for s in 0..8 {
            if let Some(x) = d.get(&format!("seed{s}")) {
                println!(
                    "seed{s}: clean {:.3} teacher clean {:.3}",
                    x["clean_accuracy"]
                        .as_f64()
                        .or(x["clean_map50"].as_f64())
                        .unwrap_or(0.0),
                    x["teacher_clean_accuracy"]
                        .as_f64()
                        .or(x["teacher_clean_map50"].as_f64())
                        .unwrap_or(0.0)
                );
            }
        }
        if let Some(p) = d.get("paired_differences") {
            println!("paired differences (ours − baseline, mean ± std over seeds): {p}");
        }
    }
    let json = serde_json::to_string_pretty(r).unwrap_or_default();
    let path = std::path::Path::new(&args[1]).join("report.json");
    if let Err(e) = ferrolab_core::run::write_atomic(&path, json.as_bytes()) {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
