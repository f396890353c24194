//! `ferrolab apg`: the [`System`] implementation (presets, reproduce entries, and the
//! `predict`, `export` and `generate` sub-commands).

use crate::config::ApgExperimentConfig;
use crate::experiment;
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System, SystemError};
use std::io::Write;
use std::path::PathBuf;

/// APG vs plain deep layers in Wide&Deep, DeepFM and DCNv2.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApgSystem;

impl System for ApgSystem {
    type Config = ApgExperimentConfig;

    fn name(&self) -> &'static str {
        "apg"
    }

    fn about(&self) -> &'static str {
        "APG vs plain deep layers in Wide&Deep, DeepFM and DCNv2 (CTR; train, `predict`, `export`, `generate`)"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "MovieLens-100k smoke run: 2 seeds, 2 epochs (< 1 min)",
                toml: include_str!("../../../configs/apg/quick.toml"),
            },
            Preset {
                name: "quick-synthetic",
                about: "synthetic CTR smoke run: 25k rows, 2 seeds, 3 epochs (< 1 min)",
                toml: include_str!("../../../configs/apg/quick-synthetic.toml"),
            },
            Preset {
                name: "paper",
                about: "MovieLens-100k, 5 seeds, 10 epochs with early stopping",
                toml: include_str!("../../../configs/apg/paper.toml"),
            },
            Preset {
                name: "synthetic",
                about: "synthetic group-dependent CTR data, 100k rows, 5 seeds, group-wise condition",
                toml: include_str!("../../../configs/apg/synthetic.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![
            Entry {
                name: "apg-movielens",
                what: "APG vs plain Wide&Deep / DeepFM / DCNv2 on MovieLens-100k CTR",
                quick: "quick",
                full: "paper",
            },
            Entry {
                name: "apg-synthetic",
                what: "APG vs plain Wide&Deep / DeepFM / DCNv2 on synthetic group-dependent CTR data",
                quick: "quick-synthetic",
                full: "synthetic",
            },
        ]
    }

    fn datasets(&self, cfg: &ApgExperimentConfig) -> Vec<&'static str> {
        if cfg.data.dataset == "movielens" {
            vec!["ml-100k"]
        } else {
            Vec::new()
        }
    }

    fn memory_estimate(
        &self,
        cfg: &ApgExperimentConfig,
        data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        let d = &cfg.data;
        let data = data_rows(cfg, data_dir)?.saturating_mul(ROW_BYTES);
        // Embedding tables (26 fields x vocabulary x width) with Adam's two moments and the
        // gradient; the deep tower and the hyper-network are small next to them.
        let vocab = d.synthetic.max_vocab as u64 * 26;
        let emb = vocab
            .saturating_mul(cfg.model.embed_dim as u64)
            .saturating_mul(16);
        let widest = cfg.model.hidden.iter().copied().max().unwrap_or(1) as u64;
        let hyper = (cfg.apg.hyper_hidden as u64)
            .saturating_mul(cfg.apg.rank as u64)
            .saturating_mul(cfg.apg.rank.max(cfg.apg.overparam) as u64)
            .saturating_mul(16);
        let batch = (cfg.train.batch_size as u64)
            .saturating_mul(widest.saturating_mul(widest))
            .saturating_mul(8);
        // The layer-cost comparison's naive generator materialises a d_in x d_out matrix per
        // instance: output, its gradient and the input gradient.
        let e = &cfg.efficiency;
        let naive = if e.enabled {
            (e.batch_size as u64)
                .saturating_mul(e.d_in as u64)
                .saturating_mul(e.d_out as u64)
                .saturating_mul(12)
        } else {
            0
        };
        let bytes = data
            .saturating_add(emb)
            .saturating_add(hyper)
            .saturating_add(batch)
            .saturating_add(naive);
        let setting = if naive >= data.max(emb).max(batch) {
            format!("efficiency.batch_size={}", e.batch_size)
        } else if data >= emb.max(batch) {
            data_setting(cfg)
        } else if batch >= emb {
            format!("train.batch_size={}", cfg.train.batch_size)
        } else {
            format!("model.embed_dim={}", cfg.model.embed_dim)
        };
        Some(ferrolab_core::guard::MemoryEstimate { setting, bytes })
    }

    fn prepare(&self, cfg: &Checked<ApgExperimentConfig>, ctx: &RunContext) -> SysResult<()> {
        experiment::resolve_data(cfg, ctx.data_dir())?;
        Ok(())
    }

    fn run(&self, cfg: &Checked<ApgExperimentConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        let (data_dir, seed, run) = ctx.parts();
        Ok(experiment::run(cfg, data_dir, seed, run)?)
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let r = &o.report;
        let mut lines = Vec::new();
        let bases: Vec<&String> = r.baselines.keys().collect();
        for b in bases {
            let g = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
            let bl = |k: &str| {
                r.baselines
                    .get(b)
                    .and_then(|m| m.get(k))
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            lines.push(format!(
                "{} {b:<9}: APG AUC {:.4} ± {:.4} logloss {:.4}; plain AUC {:.4} ± {:.4} logloss {:.4}; paired AUC gain {:+.4} ± {:.4}",
                r.dataset,
                g(&format!("{b}_apg_test_auc")),
                g(&format!("{b}_apg_test_auc_std")),
                g(&format!("{b}_apg_test_logloss")),
                bl("test_auc"),
                bl("test_auc_std"),
                bl("test_logloss"),
                g(&format!("{b}_apg_auc_gain_mean")),
                g(&format!("{b}_apg_auc_gain_std")),
            ));
        }
        lines.extend(r.notes.iter().cloned());
        lines
    }

    fn subcommands(&self) -> Vec<SubCommand> {
        vec![
            SubCommand {
                command: predict_command,
                run: predict,
            },
            SubCommand {
                command: export_command,
                run: export,
            },
            SubCommand {
                command: generate_command,
                run: generate,
            },
        ]
    }
}

/// Bytes a row takes while a split is built: 13 numeric + 26 categorical fields of 4 bytes and
/// a label, in two copies.
const ROW_BYTES: u64 = 40 * 4 * 2;

/// Rows the configured data holds: the synthetic sizes, or for MovieLens a bound from the
/// ratings file (a rating line is at least 8 bytes). `None` where the file cannot be found
/// (the data lookup reports that).
fn data_rows(cfg: &ApgExperimentConfig, data_dir: Option<&std::path::Path>) -> Option<u64> {
    let d = &cfg.data;
    if d.dataset == "synthetic" {
        Some(
            (d.train_rows as u64)
                .saturating_add(d.valid_rows as u64)
                .saturating_add(d.test_rows as u64),
        )
    } else {
        let dir = ferrolab_data::lookup::find_dataset(data_dir, "ml-100k").ok()?;
        Some(std::fs::metadata(dir.join("u.data")).ok()?.len() / 8)
    }
}

/// The setting that sizes the data, for a refusal.
fn data_setting(cfg: &ApgExperimentConfig) -> String {
    let d = &cfg.data;
    if d.dataset == "synthetic" {
        format!(
            "data.train_rows={}, data.valid_rows={}, data.test_rows={}",
            d.train_rows, d.valid_rows, d.test_rows
        )
    } else {
        format!("data.dataset={}", d.dataset)
    }
}

fn predict_command() -> clap::Command {
    clap::Command::new("predict")
        .about(
            "Score tab-separated rows from stdin (columns in the checkpoint's field order); \
             print one click probability per line",
        )
        .arg(ferrolab_core::system::checkpoint_arg(
            "A checkpoint folder written by `ferrolab apg` (`<out>/checkpoint` = DeepFM+APG)",
        ))
        .arg(ferrolab_core::system::threads_arg())
}

fn predict(m: &clap::ArgMatches) -> SysResult<()> {
    let Some(checkpoint) = m.get_one::<PathBuf>("checkpoint") else {
        return Err(SystemError::usage("predict needs --checkpoint DIR"));
    };
    ferrolab_core::backend::try_init_threads(m.get_one::<usize>("threads").copied())?;
    let p = crate::Predictor::load(checkpoint)?;
    let scored = p.score(std::io::stdin().lock(), "stdin")?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for prob in &scored.probabilities {
        if let Err(e) = writeln!(w, "{prob:.6}") {
            return ferrolab_core::system::stdout_closed(e);
        }
    }
    if let Err(e) = w.flush() {
        return ferrolab_core::system::stdout_closed(e);
    }
    for (field, n) in &scored.oov {
        eprintln!(
            "note: {n} value(s) of `{field}` not seen in training: scored with the out-of-vocabulary bucket"
        );
    }
    Ok(())
}

fn export_command() -> clap::Command {
    use clap::{Arg, value_parser};
    clap::Command::new("export")
        .about("Write the configured data split as train/valid/test TSV files")
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .required(true)
                .value_parser(value_parser!(PathBuf))
                .help("Output folder"),
        )
        .arg(
            Arg::new("preset")
                .long("preset")
                .value_name("NAME")
                .help("A preset of `ferrolab apg` (quick, paper, synthetic, ...)"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("TOML file layered over the defaults"),
        )
        .arg(
            Arg::new("set")
                .long("set")
                .value_name("KEY=VALUE")
                .action(clap::ArgAction::Append)
                .help("Override one key (repeatable)"),
        )
        .arg(
            Arg::new("data-dir")
                .long("data-dir")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Folder holding the real datasets"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("Master seed (the split depends on it)"),
        )
        .arg(
            Arg::new("max-memory")
                .long("max-memory")
                .value_name("SIZE")
                .help(
                    "Refuse an export whose estimated memory exceeds SIZE (8G, 512M or bytes; \
                     default 80% of the machine's or cgroup's memory)",
                ),
        )
}

fn export(m: &clap::ArgMatches) -> SysResult<()> {
    let Some(out) = m.get_one::<PathBuf>("out") else {
        return Err(SystemError::usage("apg export needs --out DIR"));
    };
    let sets: Vec<String> = m
        .get_many::<String>("set")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let preset = m.get_one::<String>("preset").map(String::as_str);
    let file = m.get_one::<PathBuf>("config").map(PathBuf::as_path);
    let cfg = ferrolab_core::system::resolve_config(&ApgSystem, preset, file, &sets)?;
    let data_dir = ferrolab_core::system::data_dir_arg(m)?;
    let seed = m.get_one::<u64>("seed").copied().unwrap_or(0);
    let limit = match m.get_one::<String>("max-memory") {
        Some(t) => {
            ferrolab_core::guard::parse_size(t).map_err(|e| SystemError::usage(e.to_string()))?
        }
        None => ferrolab_core::guard::default_limit(),
    };
    // The split, plus its text (a row prints as at most ~256 bytes). Only one part's text is
    // held at a time, so counting every row's is a bound, as estimates here are.
    if let Some(rows) = data_rows(&cfg, data_dir) {
        let estimate = ferrolab_core::guard::MemoryEstimate {
            setting: data_setting(&cfg),
            bytes: rows.saturating_mul(ROW_BYTES + 256),
        };
        ferrolab_core::guard::check(&estimate, limit)
            .map_err(|e| SystemError::usage(e.to_string()))?;
    }
    // An export never replaces an earlier one or lands inside a run folder, and appears whole
    // or not at all (a reader would take a lone train.tsv for a finished export).
    ferrolab_core::run::ensure_fresh(out)?;
    let data = experiment::load_data(&cfg, data_dir, seed)?;
    ferrolab_core::run::fill_fresh_folder(out, |dir| data.export(dir))?;
    eprintln!(
        "wrote {}/{{train,valid,test}}.tsv ({}, {}, {} rows; {})",
        out.display(),
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        data.protocol
    );
    Ok(())
}

fn generate_command() -> clap::Command {
    use clap::{Arg, ArgAction, value_parser};
    clap::Command::new("generate")
        .about("Stream synthetic Criteo-shaped rows (label, 13 numeric, 26 categorical) as TSV to stdout")
        .arg(
            Arg::new("rows")
                .long("rows")
                .value_parser(value_parser!(usize))
                .default_value("1000")
                .help("Rows to write"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("Generator seed"),
        )
        .arg(
            Arg::new("groups")
                .long("groups")
                .value_parser(value_parser!(usize))
                .default_value("8")
                .help("Instance groups (values of C1), each with its own click function (1..=1000)"),
        )
        .arg(
            Arg::new("no-label")
                .long("no-label")
                .action(ArgAction::SetTrue)
                .help("Omit the label column (rows to feed `apg predict`)"),
        )
}

fn generate(m: &clap::ArgMatches) -> SysResult<()> {
    let rows = m.get_one::<usize>("rows").copied().unwrap_or(1000);
    let seed = m.get_one::<u64>("seed").copied().unwrap_or(0);
    let groups = m.get_one::<usize>("groups").copied().unwrap_or(8);
    let no_label = m.get_flag("no-label");
    if !(1..=1000).contains(&groups) {
        return Err(SystemError::usage(format!(
            "--groups {groups}: must be in 1..=1000"
        )));
    }
    let cfg = crate::data::SyntheticConfig {
        groups,
        ..Default::default()
    };
    let g = crate::data::Synthetic::new(cfg, seed);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    if let Err(e) = g.write_tsv(rows, &mut w, !no_label) {
        return ferrolab_core::system::stdout_closed(e);
    }
    if let Err(e) = w.flush() {
        return ferrolab_core::system::stdout_closed(e);
    }
    Ok(())
}
