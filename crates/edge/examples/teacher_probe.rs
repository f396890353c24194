//! Per-condition accuracy of the factory mobile model, the edge's teacher and a model evolved
//! through the edge on 100 teacher-labelled frames of the condition, for one seed of a preset
//! with `--set`-style overrides: how much evolution can recover under each drift target.
//!
//! `cargo run --release -p ferrolab-edge --example teacher_probe -- paper SEED [probe.frames=N] [K=V …]`

use ferrolab_core::Checked;
use ferrolab_edge::config::AdaEvoConfig;
use ferrolab_edge::edge::EdgeServer;
use ferrolab_edge::experiment::{load_base, method_edge_params, prepare};
use ferrolab_edge::protocol::{DriftType, Frame, TaskRequest};
use ferrolab_edge::stream::{self, Drift, Schedule};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: teacher_probe quick|paper SEED [key=value ...]");
        return ExitCode::from(2);
    }
    let toml = if args[0] == "paper" {
        include_str!("../../../configs/adaevo/paper.toml")
    } else {
        include_str!("../../../configs/adaevo/quick.toml")
    };
    let Ok(seed) = args[1].parse::<u64>() else {
        eprintln!("SEED {:?} is not a number", args[1]);
        return ExitCode::from(2);
    };
    // `probe.frames=N` (not a config key): frames per probe task (default 100, the upload budget).
    let mut frames_n = 100usize;
    let mut sets = Vec::new();
    for a in &args[2..] {
        match a.strip_prefix("probe.frames=") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => frames_n = n,
                _ => {
                    eprintln!("probe.frames={v:?} is not a positive number");
                    return ExitCode::from(2);
                }
            },
            None => sets.push(a.clone()),
        }
    }
    sets.push("stream.ends=1".into());
    let cfg: AdaEvoConfig =
        match ferrolab_core::config::load_layers(Some((&args[0], toml)), None, &sets) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
    let cfg = match Checked::new(cfg) {
        Ok(c) => c.into_inner(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (pre, pool) = match load_base(&cfg, None, seed) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let t0 = Instant::now();
    let prep = prepare(&cfg, &pre, &pool, seed);
    println!(
        "prepare {:.1} s; clean: mobile {:.3} teacher {:.3}",
        t0.elapsed().as_secs_f64(),
        prep.clean_accuracy,
        prep.teacher_accuracy
    );
    let mut sums = [0.0f64; 3];
    for target in [
        "rotate", "dark", "bright", "blur", "noise", "occlude", "prior",
    ] {
        let Ok(d) = Drift::parse(&format!("sudden:{target}@0")) else {
            continue;
        };
        let sch = Schedule {
            drifts: vec![d],
            strength: 1.0,
        };
        let frames: Vec<_> = (0..frames_n)
            .map(|i| stream::draw(&pool, &sch, 1.0 + i as f64, 77 ^ seed))
            .collect();
        let test: Vec<_> = (0..500)
            .map(|i| stream::draw(&pool, &sch, 1.0 + i as f64, 991 ^ seed))
            .collect();
        let xs: Vec<Vec<f32>> = test.iter().map(|f| f.input.clone()).collect();
        let ys: Vec<u8> = test.iter().map(|f| f.label).collect();
        let before = prep.mobile.accuracy(&xs, &ys);
        let teacher = prep.teacher.accuracy(&xs, &ys);
        let mut edge = EdgeServer::new(
            method_edge_params(&cfg, &prep.anchor, "adaevo", seed),
            prep.teacher.clone(),
        );
        edge.register(0, prep.dense.clone(), prep.mobile.clone());
        let req = TaskRequest {
            end: 0,
            seq: 0,
            model_version: 0,
            trigger_t: 0.0,
            drift: DriftType::Sudden,
            estimate: 0.5,
            threshold: 0.8,
            remaining_s: 1000.0,
            frames: frames
                .iter()
                .map(|f| Frame {
                    t: 0.0,
                    pixels: f.pixels.clone(),
                })
                .collect(),
        };
        if let Err(e) = edge.submit(req, 0.0) {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
        edge.schedule(0.0);
        let done = edge.advance(0.0, 1e9);
        let after = done
            .first()
            .and_then(|c| c.blob.decode().ok())
            .map_or(0.0, |m| m.accuracy(&xs, &ys));
        println!("{target:8} factory {before:.3} teacher {teacher:.3} evolved {after:.3}");
        sums[0] += before;
        sums[1] += teacher;
        sums[2] += after;
    }
    println!(
        "mean     factory {:.3} teacher {:.3} evolved {:.3}",
        sums[0] / 7.0,
        sums[1] / 7.0,
        sums[2] / 7.0
    );
    ExitCode::SUCCESS
}
