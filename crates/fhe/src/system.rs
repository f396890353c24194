//! `ferrolab ckks`: the [`System`] implementation. The experiment is the scheme's benchmark:
//! per-operation latency and precision on the standard parameter sets, as report.json.

use crate::bench;
use crate::params::ParamSpec;
use ferrolab_core::config::Validate;
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, Report, RunContext, SysResult, System, SystemError};
use std::path::PathBuf;

ferrolab_core::config_section! {
    /// `ferrolab ckks` configuration.
    pub struct CkksConfig {
        /// The benchmark.
        pub bench: BenchSection = BenchSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `bench.*`.
    pub struct BenchSection {
        /// Ring degrees as log2 N (standard parameter sets exist for 13, 14, 15, 16).
        pub log_n: Vec<u32> = vec![14, 15], "a non-empty list of 13..=16" => |v| !v.is_empty() && v.iter().all(|l| (13..=16).contains(l));
        /// Repetitions per timed operation (the median is reported).
        pub reps: usize = 5, "1..=1000" => |v| (1..=1000).contains(v);
        /// Threads per operation (its RNS limbs spread over them); 1 = the SEAL comparison.
        pub threads: usize = 1, "1..=256" => |v| (1..=256).contains(v);
    }
}

impl Validate for CkksConfig {}

/// The RNS-CKKS scheme's benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct CkksSystem;

impl System for CkksSystem {
    type Config = CkksConfig;

    fn name(&self) -> &'static str {
        "ckks"
    }

    fn about(&self) -> &'static str {
        "RNS-CKKS homomorphic encryption: per-operation latency and precision (`bench` for flags)"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "N = 2^13, median of 3 (seconds)",
                toml: include_str!("../../../configs/ckks/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "N = 2^14 and 2^15, median of 5, one thread (the SEAL/OpenFHE comparison)",
                toml: include_str!("../../../configs/ckks/paper.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "ckks-bench",
            what: "RNS-CKKS per-operation latency and precision (the SEAL/OpenFHE comparison is bench/run_ckks_bench.sh)",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, _cfg: &CkksConfig) -> Vec<&'static str> {
        Vec::new()
    }

    fn memory_estimate(
        &self,
        cfg: &CkksConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        // The largest parameter set dominates: 18 switching keys (relinearisation + 17 Galois),
        // each dnum digits x 2 polynomials over the L+1+alpha limbs of N 64-bit words, plus the
        // benchmark's ciphertexts and scratch (~64 polynomials of the same size); half again on
        // top, since the count alone came within 5% of the measured peak (2^14: 513 MiB,
        // 2^15: 3.8 GiB).
        let log_n = cfg.bench.log_n.iter().copied().max()?;
        let spec = ParamSpec::standard(log_n).ok()?;
        let limbs = (spec.q_bits.len() + spec.p_bits.len()) as u64;
        let dnum = spec.q_bits.len().div_ceil(spec.p_bits.len().max(1)) as u64;
        let poly = (1u64 << log_n) * limbs * 8;
        let bytes = poly.saturating_mul(18 * 2 * dnum + 64).saturating_mul(3) / 2;
        Some(ferrolab_core::guard::MemoryEstimate {
            setting: format!("bench.log_n={log_n}"),
            bytes,
        })
    }

    fn run(&self, cfg: &Checked<CkksConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        let b = &cfg.bench;
        let report = bench_report(&b.log_n, b.reps, ctx.seed(), b.threads)?;
        // One metrics.jsonl line per parameter set: its operations' latency and precision.
        if let serde_json::Value::Object(sets) = &report.details {
            for (set, d) in sets {
                ctx.log_metrics(&serde_json::json!({ "params": set, "figures": d }))?;
            }
        }
        Ok(Outcome {
            report,
            ..Default::default()
        })
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let mut lines: Vec<String> = o
            .report
            .metrics
            .iter()
            .filter(|(k, _)| k.contains("_ms_n"))
            .map(|(k, v)| format!("{k:<32} {v:>10.3}"))
            .collect();
        lines.extend(o.report.notes.iter().cloned());
        lines
    }

    fn subcommands(&self) -> Vec<SubCommand> {
        vec![
            SubCommand {
                command: bench_command,
                run: bench_cmd,
            },
            SubCommand {
                command: bootstrap_bench_command,
                run: bootstrap_bench_cmd,
            },
        ]
    }
}

/// Runs the benchmark on each `log_n` and builds the report (keys `<op>_ms_n<log N>`,
/// `<op>_precision_bits_n<log N>`, `<op>_precision_bits_mean_n<log N>`, `keygen_ms_n<log N>`),
/// printing a table per parameter set. Every parameter set is checked before any work starts.
pub fn bench_report(log_n: &[u32], reps: usize, seed: u64, threads: usize) -> SysResult<Report> {
    bench_report_warmup(log_n, reps, 0, seed, threads)
}

/// [`bench_report`] with `warmup` untimed runs of every timed operation before its timed ones
/// (recorded as `config.warmup`).
pub fn bench_report_warmup(
    log_n: &[u32],
    reps: usize,
    warmup: usize,
    seed: u64,
    threads: usize,
) -> SysResult<Report> {
    if reps == 0 {
        return Err(SystemError::usage("reps must be at least 1"));
    }
    if threads == 0 {
        return Err(SystemError::usage("threads must be at least 1"));
    }
    let specs: Vec<ParamSpec> = log_n
        .iter()
        .map(|&l| ParamSpec::standard(l))
        .collect::<crate::Result<_>>()?;
    let mut report = Report::new("ckks", "synthetic-uniform", seed);
    let mut config = serde_json::Map::new();
    let mut details = serde_json::Map::new();
    config.insert("reps".into(), reps.into());
    config.insert("threads".into(), threads.into());
    config.insert("warmup".into(), warmup.into());
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
        let r = bench::run_warmup(spec, reps, warmup, seed, threads)?;
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
    Ok(report)
}

fn bench_command() -> clap::Command {
    use clap::{Arg, value_parser};
    clap::Command::new("bench")
        .about("Latency (median of --reps runs, one thread unless --threads) and precision bits of every operation")
        .arg(
            Arg::new("log-n")
                .long("log-n")
                .value_delimiter(',')
                .value_parser(value_parser!(u32))
                .default_value("14,15")
                .help("Ring degrees as log2 N, comma-separated (standard sets exist for 13, 14, 15, 16)"),
        )
        .arg(
            Arg::new("reps")
                .long("reps")
                .value_parser(value_parser!(usize))
                .default_value("5")
                .help("Repetitions per timed operation (the median is reported)"),
        )
        .arg(
            Arg::new("warmup")
                .long("warmup")
                .value_parser(value_parser!(usize))
                .default_value("0")
                .help("Untimed runs of every timed operation before its --reps timed ones"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Output folder for report.json (default: runs/ckks-<unix time>)"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("Seed of the (benchmark-only, insecure) key and noise generators"),
        )
        .arg(
            Arg::new("threads")
                .long("threads")
                .value_parser(value_parser!(usize))
                .help(
                    "Threads per operation (its RNS limbs spread over them). Default 1: the \
                     comparison with SEAL (bench/run_ckks_bench.sh) is single-threaded",
                ),
        )
}

fn bench_cmd(m: &clap::ArgMatches) -> SysResult<()> {
    let log_n: Vec<u32> = m
        .get_many::<u32>("log-n")
        .map(|v| v.copied().collect())
        .unwrap_or_default();
    let reps = m.get_one::<usize>("reps").copied().unwrap_or(5);
    let seed = m.get_one::<u64>("seed").copied().unwrap_or(0);
    let threads = m.get_one::<usize>("threads").copied().unwrap_or(1);
    let warmup = m.get_one::<usize>("warmup").copied().unwrap_or(0);
    if !(1..=1000).contains(&reps) {
        return Err(SystemError::usage(format!(
            "--reps {reps}: expected 1..=1000"
        )));
    }
    if !(1..=256).contains(&threads) {
        return Err(SystemError::usage(format!(
            "--threads {threads}: expected 1..=256"
        )));
    }
    if warmup > 1000 {
        return Err(SystemError::usage(format!(
            "--warmup {warmup}: expected 0..=1000"
        )));
    }
    for &l in &log_n {
        ParamSpec::standard(l)?;
    }
    let out = m
        .get_one::<PathBuf>("out")
        .cloned()
        .unwrap_or_else(|| ferrolab_core::run::default_out("ckks"));
    let run_dir = ferrolab_core::RunDir::create_fresh(out)?;
    let report = bench_report_warmup(&log_n, reps, warmup, seed, threads)?;
    run_dir.write_report(&report)?;
    eprintln!("wrote {}", run_dir.path().display());
    Ok(())
}

fn bootstrap_bench_command() -> clap::Command {
    use clap::{Arg, ArgAction, value_parser};
    clap::Command::new("bootstrap-bench")
        .about("Bootstrapping latency, precision, levels left and key size (report.json)")
        .arg(
            Arg::new("log-n")
                .long("log-n")
                .value_parser(value_parser!(u32))
                .default_value("16")
                .help("log2 N: 16 (the documented h = 192 sets); 13..=15 only with --allow-insecure"),
        )
        .arg(
            Arg::new("slots")
                .long("slots")
                .value_delimiter(',')
                .value_parser(value_parser!(usize))
                .default_value("4096,32768")
                .help("Slot counts, comma-separated: powers of two up to N/2"),
        )
        .arg(
            Arg::new("kinds")
                .long("kinds")
                .value_delimiter(',')
                .default_value("real,complex")
                .help("Slot kinds: real (imaginary-removing), complex"),
        )
        .arg(
            Arg::new("levels-after")
                .long("levels-after")
                .value_parser(value_parser!(usize))
                .default_value("9")
                .help("Levels left after bootstrapping: 9 or 16 at N = 2^16"),
        )
        .arg(
            Arg::new("reps")
                .long("reps")
                .value_parser(value_parser!(usize))
                .default_value("2")
                .help("Timed bootstraps per configuration, each of fresh inputs (the median is reported)"),
        )
        .arg(
            Arg::new("threads")
                .long("threads")
                .value_parser(value_parser!(usize))
                .default_value("1")
                .help("Threads (RNS limbs spread over them); 1 for the OpenFHE comparison"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("Seed of the (benchmark-only, insecure) key and noise generators"),
        )
        .arg(
            Arg::new("max-memory")
                .long("max-memory")
                .value_name("SIZE")
                .help("Refuse configurations whose estimated peak memory exceeds SIZE (8G, 512M; default 80% of the machine's or cgroup's memory)"),
        )
        .arg(
            Arg::new("allow-insecure")
                .long("allow-insecure")
                .action(ArgAction::SetTrue)
                .help("Allow the insecure test chain at log N < 16"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Output folder for report.json (default: runs/ckks-<unix time>)"),
        )
}

fn bootstrap_bench_cmd(m: &clap::ArgMatches) -> SysResult<()> {
    use crate::bootstrap::Bootstrapper;
    use crate::bootstrap::SlotKind;
    use crate::bootstrap::bench::{
        SECRET_WEIGHT, chain_for, key_bytes_estimate, peak_bytes_estimate, peak_rss_bytes,
        run_prepared,
    };
    use ferrolab_core::guard;
    let log_n = m.get_one::<u32>("log-n").copied().unwrap_or(16);
    let slots: Vec<usize> = m
        .get_many::<usize>("slots")
        .map(|v| v.copied().collect())
        .unwrap_or_default();
    let kinds: Vec<SlotKind> = m
        .get_many::<String>("kinds")
        .map(|v| v.cloned().collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .map(|k| match k.as_str() {
            "real" => Ok(SlotKind::Real),
            "complex" => Ok(SlotKind::Complex),
            other => Err(SystemError::usage(format!(
                "--kinds {other}: expected real or complex"
            ))),
        })
        .collect::<SysResult<_>>()?;
    let levels_after = m.get_one::<usize>("levels-after").copied().unwrap_or(9);
    let reps = m.get_one::<usize>("reps").copied().unwrap_or(2);
    let threads = m.get_one::<usize>("threads").copied().unwrap_or(1);
    let seed = m.get_one::<u64>("seed").copied().unwrap_or(0);
    let insecure = m.get_flag("allow-insecure");
    if !(1..=100).contains(&reps) {
        return Err(SystemError::usage(format!(
            "--reps {reps}: expected 1..=100"
        )));
    }
    if !(1..=256).contains(&threads) {
        return Err(SystemError::usage(format!(
            "--threads {threads}: expected 1..=256"
        )));
    }
    if slots.is_empty() || kinds.is_empty() {
        return Err(SystemError::usage(
            "--slots and --kinds need at least one value",
        ));
    }
    // Everything that can be refused is refused before any work: the chain (security), and
    // every slot count against N/2.
    let chain = chain_for(log_n, levels_after, insecure)?;
    let ctx = crate::params::Context::new(chain.spec())?;
    for &n in &slots {
        if !n.is_power_of_two() || n < 2 || n > ctx.slots() {
            return Err(crate::FheError::InvalidInput(format!(
                "--slots {n}: the slot count must be a power of two in 2..={} (N/2)",
                ctx.slots()
            ))
            .into());
        }
    }
    let limit = match m.get_one::<String>("max-memory") {
        Some(text) => guard::parse_size(text).map_err(|e| SystemError::usage(e.to_string()))?,
        None => guard::default_limit(),
    };
    // A taken --out is a usage error to report before the guard's precomputation below (seconds
    // and hundreds of MB for each configuration), not after it.
    let out = m
        .get_one::<PathBuf>("out")
        .cloned()
        .unwrap_or_else(|| ferrolab_core::run::default_out("ckks"));
    ferrolab_core::run::ensure_fresh(&out)?;
    // The resource guard, for every configuration before any of them runs: the key set and
    // DFT factors are sized from the prepared bootstrapper (its precomputation is seconds,
    // and it is dropped again), so a configuration that cannot fit is refused up front
    // instead of ending in an out-of-memory abort after the others' minutes of work.
    for &n in &slots {
        for &kind in &kinds {
            let bt = Bootstrapper::new(&ctx, chain.config(n, kind, SECRET_WEIGHT))?;
            let estimate = guard::MemoryEstimate {
                setting: format!(
                    "bootstrap-bench --log-n {log_n} --levels-after {levels_after} --slots {n} ({kind:?} slots, keys {:.1} GB)",
                    key_bytes_estimate(&ctx, &bt) as f64 / 1e9
                ),
                bytes: peak_bytes_estimate(&ctx, &bt),
            };
            guard::check(&estimate, limit).map_err(|e| SystemError::usage(e.to_string()))?;
        }
    }
    let run_dir = ferrolab_core::RunDir::create_fresh(out)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| SystemError::usage(format!("cannot start {threads} threads: {e}")))?;
    let mut report = Report::new("ckks", "synthetic-uniform", seed);
    let mut details = serde_json::Map::new();
    let (mut key_mb, mut wire_mb, mut levels) = (0.0f64, 0.0f64, 0usize);
    for &n in &slots {
        for &kind in &kinds {
            let k = match kind {
                SlotKind::Real => "real",
                SlotKind::Complex => "complex",
            };
            eprintln!("ckks bootstrap-bench: N = 2^{log_n}, {n} {k} slots ...");
            let row = pool.install(|| -> crate::error::Result<_> {
                let t = std::time::Instant::now();
                let bt = Bootstrapper::new(&ctx, chain.config(n, kind, SECRET_WEIGHT))?;
                let setup_ms = t.elapsed().as_secs_f64() * 1e3;
                run_prepared(&ctx, &bt, setup_ms, reps, seed)
            })?;
            let tag = format!("n{log_n}_s{n}_{k}");
            report
                .metrics
                .insert(format!("bootstrap_ms_{tag}"), row.median_ms());
            report.metrics.insert(
                format!("bootstrap_precision_bits_{tag}"),
                row.precision_bits,
            );
            report.metrics.insert(
                format!("bootstrap_precision_bits_{tag}_mean"),
                row.precision_bits_mean,
            );
            key_mb = key_mb.max(row.key_bytes as f64 / 1e6);
            wire_mb = wire_mb.max(row.key_wire_bytes as f64 / 1e6);
            levels = row.levels_after;
            details.insert(
                tag,
                serde_json::json!({
                    "ms": row.ms, "rotation_keys": row.rotation_keys,
                    "key_mb": row.key_bytes as f64 / 1e6,
                    "key_wire_mb": row.key_wire_bytes as f64 / 1e6,
                    "dft_mb": row.dft_bytes as f64 / 1e6,
                    "diagonals_cts": row.diagonals.0, "diagonals_stc": row.diagonals.1,
                    "evalmod_degree": row.evalmod_degree, "k_range": row.k_range,
                    "keygen_ms": row.keygen_ms, "setup_ms": row.setup_ms,
                    "levels_after": row.levels_after,
                    "stage_ms": {
                        "mod_raise": row.stages.mod_raise_ms, "trace": row.stages.trace_ms,
                        "coeff_to_slot": row.stages.coeff_to_slot_ms,
                        "eval_mod": row.stages.eval_mod_ms,
                        "slot_to_coeff": row.stages.slot_to_coeff_ms,
                    },
                }),
            );
            eprintln!(
                "  stages (last run, ms): ModRaise {:.0}, trace {:.0}, CoeffToSlot {:.0}, EvalMod {:.0}, SlotToCoeff {:.0}",
                row.stages.mod_raise_ms,
                row.stages.trace_ms,
                row.stages.coeff_to_slot_ms,
                row.stages.eval_mod_ms,
                row.stages.slot_to_coeff_ms
            );
            eprintln!(
                "  {n} {k}: {:.0} ms (median of {}), {:.1} bits worst / {:.1} mean, {} levels left, keys {:.0} MB ({:.0} MB on the wire), DFT factors {:.0} MB",
                row.median_ms(),
                row.ms.len(),
                row.precision_bits,
                row.precision_bits_mean,
                row.levels_after,
                row.key_bytes as f64 / 1e6,
                row.key_wire_bytes as f64 / 1e6,
                row.dft_bytes as f64 / 1e6
            );
        }
    }
    report
        .metrics
        .insert(format!("levels_after_bootstrap_n{log_n}"), levels as f64);
    report
        .metrics
        .insert(format!("bootstrap_key_mb_n{log_n}"), key_mb);
    report
        .metrics
        .insert(format!("bootstrap_key_wire_mb_n{log_n}"), wire_mb);
    report.metrics.insert(
        format!("bootstrap_peak_rss_mb_n{log_n}"),
        peak_rss_bytes() as f64 / 1e6,
    );
    let spec = chain.spec();
    report.config = serde_json::json!({
        "log_n": log_n, "slots": slots, "reps": reps, "threads": threads,
        "levels_after": levels_after, "q_bits": spec.q_bits, "p_bits": spec.p_bits,
        "log_scale": spec.log_scale, "log_qp": ctx.log_qp, "dnum": ctx.dnum,
        "secret_weight": crate::bootstrap::bench::SECRET_WEIGHT,
        "allow_insecure": spec.allow_insecure,
    });
    report.details = serde_json::Value::Object(details);
    report.notes.push(format!(
        "bootstrap_precision_bits = -log2(max slot error) over every slot of {reps} runs, each on fresh uniform inputs in [-1, 1] (real, or real and imaginary parts for complex); _mean = -log2(mean slot error). Sparse ternary secret h = 192; the N = 2^16 sets (log QP <= 1555) follow the setting documented as 128-bit by Lee et al. (ICML 2022) and HEaaN's FGb preset, not re-estimated here. Key sizes: the largest key set of any configuration (exactly the rotations used, conjugation, relinearisation); wire = seed-compressed. Peak RSS covers the whole run."
    ));
    run_dir.write_report(&report)?;
    eprintln!("wrote {}", run_dir.path().display());
    Ok(())
}
