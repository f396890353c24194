//! `ferrolab ckks bench`: per-operation latency and precision of the RNS-CKKS scheme on the
//! standard parameter sets, written to report.json.

use crate::common::{UsageError, default_out};
use clap::{Args, Subcommand};
use ferrolab_core::{Report, RunDir};
use ferrolab_fhe::{FheError, ParamSpec, bench};
use std::path::PathBuf;

/// Arguments of `ferrolab ckks`.
#[derive(Args, Debug)]
pub struct CkksArgs {
    #[command(subcommand)]
    pub command: CkksCommand,
}

/// Subcommands of `ferrolab ckks`.
#[derive(Subcommand, Debug)]
pub enum CkksCommand {
    /// Latency (median of --reps runs, one thread unless --threads) and precision bits of every operation.
    Bench(BenchArgs),
}

/// Arguments of `ferrolab ckks bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Ring degrees as log2 N, comma-separated (standard sets exist for 13, 14, 15, 16).
    #[arg(long, value_delimiter = ',', default_value = "14,15")]
    pub log_n: Vec<u32>,
    /// Repetitions per timed operation (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Output folder for report.json (default: runs/ckks-<unix time>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed of the (benchmark-only, insecure) key and noise generators.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads per operation (its RNS limbs spread over them). Default 1: the comparison
    /// with SEAL (bench/run_ckks_bench.sh) is single-threaded.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Maps scheme errors the user can fix (bad parameters, files) to exit status 2.
fn fhe_err(e: FheError) -> anyhow::Error {
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        e.into()
    }
}

/// Runs the subcommand.
pub fn run(args: CkksArgs) -> anyhow::Result<()> {
    match args.command {
        CkksCommand::Bench(b) => bench_cmd(&b),
    }
}

fn bench_cmd(a: &BenchArgs) -> anyhow::Result<()> {
    if a.reps == 0 {
        return Err(UsageError("--reps must be at least 1".into()).into());
    }
    let threads = a.threads.unwrap_or(1);
    if threads == 0 {
        return Err(UsageError("--threads must be at least 1".into()).into());
    }
    // Check every parameter set before any work starts.
    let specs: Vec<ParamSpec> = a
        .log_n
        .iter()
        .map(|&l| ParamSpec::standard(l).map_err(fhe_err))
        .collect::<anyhow::Result<_>>()?;
    let run_dir = RunDir::create(a.out.clone().unwrap_or_else(|| default_out("ckks")))?;
    let mut report = Report::new("ckks", "synthetic-uniform", a.seed);
    let mut config = serde_json::Map::new();
    let mut details = serde_json::Map::new();
    config.insert("reps".into(), a.reps.into());
    config.insert("threads".into(), threads.into());
    for spec in specs {
        let log_n = spec.log_n;
        config.insert(
            format!("n{log_n}"),
            serde_json::json!({
                "log_n": log_n, "q_bits": spec.q_bits, "p_bits": spec.p_bits,
                "log_scale": spec.log_scale,
            }),
        );
        eprintln!("ckks bench: N = 2^{log_n} ...");
        let t = std::time::Instant::now();
        let r = bench::run_threads(spec, a.reps, a.seed, threads).map_err(fhe_err)?;
        report
            .timings
            .insert(format!("bench_n{log_n}"), t.elapsed().as_secs_f64());
        println!(
            "N = 2^{log_n}: L = {}, log2(QP) = {:.1}, dnum = {}, {threads} thread(s), keygen {:.0} ms (incl. 17 Galois keys)",
            r.max_level, r.log_qp, r.dnum, r.keygen_ms
        );
        println!(
            "  {:<22} {:>11} {:>14} {:>13}",
            "op", "latency ms", "bits (worst)", "bits (mean)"
        );
        let fmt = |x: Option<f64>, w: usize, p: usize| {
            x.map_or(format!("{:>w$}", "-"), |v| format!("{v:>w$.p$}"))
        };
        let mut ops = serde_json::Map::new();
        for o in &r.ops {
            println!(
                "  {:<22} {} {} {}",
                o.op,
                fmt(o.ms, 11, 3),
                fmt(o.precision_bits, 14, 2),
                fmt(o.precision_bits_mean, 13, 2)
            );
            if let Some(ms) = o.ms {
                report.metrics.insert(format!("{}_ms_n{log_n}", o.op), ms);
            }
            if let Some(b) = o.precision_bits {
                report
                    .metrics
                    .insert(format!("{}_precision_bits_n{log_n}", o.op), b);
            }
            if let Some(b) = o.precision_bits_mean {
                report
                    .metrics
                    .insert(format!("{}_precision_bits_mean_n{log_n}", o.op), b);
            }
            ops.insert(
                o.op.clone(),
                serde_json::json!({"ms": o.ms, "precision_bits_worst": o.precision_bits,
                                   "precision_bits_mean": o.precision_bits_mean}),
            );
        }
        report
            .metrics
            .insert(format!("keygen_ms_n{log_n}"), r.keygen_ms);
        details.insert(
            format!("n{log_n}"),
            serde_json::json!({"max_level": r.max_level, "log_qp": r.log_qp, "dnum": r.dnum, "ops": ops}),
        );
    }
    report.config = serde_json::Value::Object(config);
    report.details = serde_json::Value::Object(details);
    report.notes.push(
        "precision_bits = -log2(max slot error) over all N/2 slots (worst slot); \
         precision_bits_mean = -log2(mean slot error). Inputs uniform in [-1, 1], public-key \
         encryption, scale 2^40. depth8 multiplies 8 encrypted unit-modulus complex vectors \
         in sequence; poly_relu15 is the degree-15 Chebyshev interpolant of ReLU on [-1, 1], \
         compared with the same polynomial evaluated in plaintext."
            .into(),
    );
    run_dir.write_report(&report)?;
    eprintln!("wrote {}", run_dir.path().display());
    Ok(())
}
