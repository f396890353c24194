//! The runtime's share of an SD-GT round with 40 in-process devices (issue 16's target:
//! everything but local training < 5% of the round).
//!
//! A repetition runs `rounds` rounds of the real model and the same rounds with a model of the
//! same size whose gradient is free (`NullModel`: tasks, replies, D2D exchanges, aggregation
//! and the algorithms' vector updates all still happen, local training does not). The two
//! sides alternate in a seeded random order, after one warm-up round of each. The overhead
//! fraction of a repetition is null round / real round; the median over repetitions and its
//! range are printed, with the load average before and after, one JSON line per algorithm.
//!
//! ```text
//! cargo run --release -p ferrolab-fed --example sdgt_round_overhead -- \
//!     [--arch logreg|cnn] [--reps 7] [--rounds 5] [--threads 1] [--algos sdgt,sd_fedavg,...] \
//!     [--null-only] [--checksum]
//! ```
//!
//! Each side also reports the process CPU seconds per round (`/proc/self/stat`, every thread,
//! 10 ms ticks), which a loaded machine distorts less than wall time. `--null-only` runs only
//! the null side (for A/B of runtime changes); `--checksum` runs `rounds` real rounds per
//! algorithm and prints a hash of the final x̄'s bits, so two builds can be checked to give
//! bit-identical models.
//!
//! Data: Fashion-MNIST from the usual lookup (`$FERROLAB_DATA`, `/usr/share/datasets`, …),
//! or `--synthetic`. 40 devices in 10 subnets of 4, 4 devices per client thread, label-sorted,
//! batch 32, T = 5, s = 2: `ferrolab sdgt`'s defaults.

use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::sdgt::algo::Algo;
use ferrolab_fed::sdgt::config::SdgtConfig;
use ferrolab_fed::sdgt::data as part;
use ferrolab_fed::sdgt::driver::{self, RunData, RunSpec};
use ferrolab_fed::sdgt::experiment::{self, NullModel};
use ferrolab_vision::data::Normalization;
use rand::seq::SliceRandom;
use std::sync::Arc;

fn usage(msg: &str) -> ! {
    eprintln!("error: {msg}");
    eprintln!(
        "usage: sdgt_round_overhead [--arch logreg|cnn] [--reps N] [--rounds N] [--threads N] \
         [--algos a,b] [--synthetic] [--null-only] [--checksum]"
    );
    std::process::exit(2)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// CPU seconds used by this process so far, all threads (utime + stime, Linux clock ticks of
/// 10 ms); 0 where `/proc` is missing.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Field 2 (the command) may hold spaces; the fields after its ')' are fixed: utime and
    // stime are fields 14 and 15, i.e. 11 and 12 after the state (field 3).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// FNV-1a over the bits of `v`: equal hashes mean (with overwhelming odds) equal vectors.
fn fnv(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        x.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

/// Per round of `rounds` rounds (a fresh fabric, so nothing is resumed): wall seconds, client
/// compute seconds, and process CPU seconds of the whole run (evaluation of x̄ at the end
/// included: 200 test and 200 validation images, free for the null model).
fn per_round(spec: &RunSpec, data: &RunData, rounds: u64) -> Result<(f64, f64, f64), String> {
    let s = RunSpec {
        rounds,
        eval_every: rounds,
        checkpoint_every: 0,
        ..*spec
    };
    let c0 = cpu_seconds();
    let r = driver::run(&s, data, Arc::new(InProcFabric::new()), &mut |_| {})
        .map_err(|e| e.to_string())?;
    let cpu = cpu_seconds() - c0;
    Ok((
        r.round_seconds / rounds as f64,
        r.compute_seconds / rounds as f64,
        cpu / rounds as f64,
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut arch = "logreg".to_string();
    let mut reps = 7usize;
    let mut rounds = 5u64;
    let mut threads = 1usize;
    let mut algos = vec!["sdgt".to_string()];
    let mut synthetic = false;
    // Only the null side (for profiling the runtime alone): no fraction is printed.
    let mut null_only = false;
    let mut checksum = false;
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| {
            args.get(i + 1)
                .cloned()
                .unwrap_or_else(|| usage(&format!("{} needs a value", args[i])))
        };
        let num = |i: usize| -> usize {
            val(i)
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| usage(&format!("{} takes a positive integer", args[i])))
        };
        match args[i].as_str() {
            "--arch" => arch = val(i),
            "--reps" => reps = num(i),
            "--rounds" => rounds = num(i) as u64,
            "--threads" => threads = num(i),
            "--algos" => algos = val(i).split(',').map(str::to_string).collect(),
            "--synthetic" => {
                synthetic = true;
                i += 1;
                continue;
            }
            "--null-only" => {
                null_only = true;
                i += 1;
                continue;
            }
            "--checksum" => {
                checksum = true;
                i += 1;
                continue;
            }
            other => usage(&format!("unknown argument `{other}`")),
        }
        i += 2;
    }
    if arch != "logreg" && arch != "cnn" {
        usage("--arch is `logreg` or `cnn`");
    }
    let algos: Vec<Algo> = algos
        .iter()
        .map(|a| Algo::parse(a).unwrap_or_else(|| usage(&format!("unknown algorithm `{a}`"))))
        .collect();
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        usage(&format!("threads: {e}"));
    }
    // The `ferrolab` binary's malloc thresholds, so the model-sized vectors of a round are
    // reused heap blocks here as they are there (not fresh, page-faulting mappings).
    ferrolab_core::backend::tune_allocator();
    let mut cfg = SdgtConfig::default();
    cfg.model.arch = arch.clone();
    if synthetic {
        cfg.data.dataset = "synthetic".into();
    }
    let images = match experiment::load_images(&cfg, None, 1) {
        Ok(im) => im,
        Err(e) => usage(&e.to_string()),
    };
    let norm = Normalization::of(&images.train);
    let train = Arc::new(part::to_samples(&images.train, norm, 10));
    let val = Arc::new(part::to_samples(&images.val.head(200), norm, 10));
    let test = Arc::new(part::to_samples(&images.test.head(200), norm, 10));
    ferrolab_core::backend::seed_backend(7);
    let model = experiment::build_model(&cfg, 7);
    let x0 = Arc::new(model.init(7));
    let (topo, gt) = match experiment::topologies(&cfg, 11, &algos) {
        Ok(t) => t,
        Err(e) => usage(&e.to_string()),
    };
    let real = RunData {
        model: Arc::clone(&model),
        parts: Arc::new(experiment::partition(&cfg, "sorted", &train.y, 11)),
        train,
        val,
        test,
        topo: Arc::new(topo),
        gt_topo: Arc::new(gt),
        x0,
        state_dir: None,
    };
    let null = RunData {
        model: Arc::new(NullModel { dim: model.dim() }),
        ..real.clone()
    };
    let mut rng = ferrolab_core::seed::rng(3, "overhead-order");
    for algo in algos {
        let spec = experiment::unit_spec(&cfg, algo, 0.03, 11, false);
        let load0 = loadavg();
        let run = |d: &RunData, n: u64| {
            per_round(&spec, d, n).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1)
            })
        };
        if checksum {
            let s = RunSpec {
                rounds,
                eval_every: rounds,
                checkpoint_every: 0,
                ..spec
            };
            let r = driver::run(&s, &real, Arc::new(InProcFabric::new()), &mut |_| {})
                .unwrap_or_else(|e| {
                    eprintln!("error: {e}");
                    std::process::exit(1)
                });
            println!(
                "{}",
                serde_json::json!({"arch": arch, "algo": algo.key(), "rounds": rounds,
                    "final_params_fnv": format!("{:016x}", fnv(&r.final_params)),
                    "test_accuracy": r.history.last().map(|h| h.test_accuracy)})
            );
            continue;
        }
        if null_only {
            let runs: Vec<(f64, f64, f64)> = (0..reps).map(|_| run(&null, rounds)).collect();
            let v: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let cpu: Vec<f64> = runs.iter().map(|r| r.2).collect();
            println!(
                "{}",
                serde_json::json!({"arch": arch, "algo": algo.key(),
                    "overhead_round_seconds_median": median(&v),
                    "overhead_round_seconds_range": range(&v),
                    "overhead_round_cpu_seconds_median": median(&cpu),
                    "overhead_round_cpu_seconds_range": range(&cpu),
                    "loadavg_before": load0, "loadavg_after": loadavg()})
            );
            continue;
        }
        // Warm-up: allocator, burn's first kernels, thread start-up.
        run(&real, 1);
        run(&null, 1);
        let (mut real_s, mut null_s, mut frac, mut compute) = (vec![], vec![], vec![], vec![]);
        let (mut real_cpu, mut null_cpu, mut frac_cpu) = (vec![], vec![], vec![]);
        for _ in 0..reps {
            let mut order = [true, false];
            order.shuffle(&mut rng);
            let (mut r, mut n) = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0));
            for is_real in order {
                if is_real {
                    r = run(&real, rounds);
                } else {
                    n = run(&null, rounds);
                }
            }
            real_s.push(r.0);
            compute.push(r.1);
            null_s.push(n.0);
            frac.push(n.0 / r.0);
            real_cpu.push(r.2);
            null_cpu.push(n.2);
            frac_cpu.push(n.2 / r.2);
        }
        let (flo, fhi) = range(&frac);
        println!(
            "{}",
            serde_json::json!({
                "arch": arch,
                "algo": algo.key(),
                "devices": cfg.topology.devices,
                "client_threads": cfg.topology.devices / cfg.fed.devices_per_client,
                "rayon_threads": threads,
                "reps": reps,
                "rounds_per_rep": rounds,
                "round_seconds_median": median(&real_s),
                "round_seconds_range": range(&real_s),
                "overhead_round_seconds_median": median(&null_s),
                "overhead_round_seconds_range": range(&null_s),
                "overhead_fraction_median": median(&frac),
                "overhead_fraction_range": [flo, fhi],
                "client_compute_seconds_per_round_median": median(&compute),
                "round_cpu_seconds_median": median(&real_cpu),
                "overhead_round_cpu_seconds_median": median(&null_cpu),
                "overhead_cpu_fraction_median": median(&frac_cpu),
                "overhead_cpu_fraction_range": range(&frac_cpu),
                "loadavg_before": load0,
                "loadavg_after": loadavg(),
            })
        );
    }
}
