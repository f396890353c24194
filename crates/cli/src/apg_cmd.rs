//! `ferrolab apg`: every base model (Wide&Deep, DeepFM, DCNv2) with plain and APG deep layers
//! over several seeds; `apg predict` scores TSV rows with a checkpoint; `apg generate` streams
//! synthetic Criteo-shaped rows.

use crate::common::{CommonArgs, UsageError};
use anyhow::Context;
use clap::{Args, Subcommand};
use ferrolab_core::run::Outcome;
use ferrolab_ctr::{ApgExperimentConfig, CtrError, Predictor};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `ferrolab apg`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ApgArgs {
    #[command(subcommand)]
    pub command: Option<ApgCommand>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Subcommands of `ferrolab apg`.
#[derive(Subcommand, Debug)]
pub enum ApgCommand {
    /// Score tab-separated rows from stdin (columns in the checkpoint's field order, multi-hot
    /// values joined by `|`, optional header line); print one click probability per row.
    Predict {
        /// A checkpoint folder written by `ferrolab apg` (`<out>/checkpoint` is DeepFM+APG,
        /// `<out>/checkpoint-<model>[_apg]` the others).
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// CPU threads.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Write the experiment's train/valid/test split as TSV files (label + fields) into DIR,
    /// for training other tools on exactly the same rows.
    Export {
        /// `--out DIR` (required here), and `--config`, `--set`, `--data-dir`, `--seed` as for
        /// a run.
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Stream synthetic Criteo-shaped rows (`label`, I1..I13, C1..C26) as TSV to stdout.
    Generate {
        /// Number of rows (streamed in constant memory; 10,000,000 is fine).
        #[arg(long, default_value_t = 1000)]
        rows: usize,
        /// Seed of the click function and the rows.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Instance groups (values of C1), each with its own click function.
        #[arg(long, default_value_t = 8)]
        groups: usize,
        /// Leave out the label column (rows ready for `apg predict`).
        #[arg(long)]
        no_label: bool,
    },
}

/// Usage errors of the ctr crate exit with status 2, like every other system's.
fn ctr_err(e: CtrError) -> anyhow::Error {
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        anyhow::Error::new(e)
    }
}

/// Runs the subcommand.
pub fn run(args: ApgArgs) -> anyhow::Result<()> {
    match args.command {
        Some(ApgCommand::Predict {
            checkpoint,
            threads,
        }) => return predict(&checkpoint, threads),
        Some(ApgCommand::Generate {
            rows,
            seed,
            groups,
            no_label,
        }) => return generate(rows, seed, groups, no_label),
        Some(ApgCommand::Export { common }) => {
            let out = common
                .out
                .clone()
                .ok_or_else(|| UsageError("apg export needs --out DIR".into()))?;
            let cfg: ApgExperimentConfig =
                ferrolab_core::config::load(common.config.as_deref(), &common.sets)?;
            let data = ferrolab_ctr::experiment::load_data(
                &cfg,
                common.run.data_dir.as_deref(),
                common.run.seed,
            )
            .map_err(ctr_err)?;
            data.export(&out).map_err(ctr_err)?;
            eprintln!(
                "wrote {}/{{train,valid,test}}.tsv ({}, {}, {} rows; {})",
                out.display(),
                data.train.len(),
                data.valid.len(),
                data.test.len(),
                data.protocol
            );
            return Ok(());
        }
        None => {}
    }
    let cfg: ApgExperimentConfig =
        ferrolab_core::config::load(args.common.config.as_deref(), &args.common.sets)?;
    let outcome = train(&cfg, &args.common)?;
    let r = &outcome.report;
    for base in cfg.base_models() {
        let b = base.name();
        let g = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
        let bl = |k: &str| {
            r.baselines
                .get(b)
                .and_then(|m| m.get(k))
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
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
        );
    }
    for n in &r.notes {
        println!("{n}");
    }
    Ok(())
}

/// Trains and writes the run folder; usable from `reproduce`.
pub fn train(cfg: &ApgExperimentConfig, common: &CommonArgs) -> anyhow::Result<Outcome> {
    ferrolab_core::backend::init_threads(common.run.threads);
    // Resolve the data before creating the output folder, so a data error leaves nothing behind.
    ferrolab_ctr::experiment::resolve_data(cfg, common.run.data_dir.as_deref()).map_err(ctr_err)?;
    let mut run = common.run_dir("apg")?;
    run.write_config(&ferrolab_core::config::to_toml(cfg)?)?;
    let outcome = ferrolab_ctr::experiment::run(
        cfg,
        common.run.data_dir.as_deref(),
        common.run.seed,
        &mut run,
    )
    .map_err(ctr_err)?;
    run.write_report(&outcome.report)?;
    crate::plot::write_curves(
        &run.join("curves.svg"),
        &outcome.curves,
        &format!("apg on {}", outcome.report.dataset),
    )
    .context("writing curves.svg")?;
    eprintln!("wrote {}", run.path().display());
    Ok(outcome)
}

fn predict(checkpoint: &std::path::Path, threads: Option<usize>) -> anyhow::Result<()> {
    ferrolab_core::backend::init_threads(threads);
    let p = Predictor::load(checkpoint).map_err(ctr_err)?;
    let scored = p.score(std::io::stdin().lock(), "stdin").map_err(ctr_err)?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for prob in &scored.probabilities {
        writeln!(w, "{prob:.6}")?;
    }
    w.flush()?;
    for (field, n) in &scored.oov {
        eprintln!(
            "note: {n} value(s) of `{field}` not seen in training: scored with the out-of-vocabulary bucket"
        );
    }
    Ok(())
}

fn generate(rows: usize, seed: u64, groups: usize, no_label: bool) -> anyhow::Result<()> {
    if !(1..=1000).contains(&groups) {
        return Err(UsageError(format!("--groups {groups}: must be in 1..=1000")).into());
    }
    let cfg = ferrolab_ctr::data::SyntheticConfig {
        groups,
        ..Default::default()
    };
    let g = ferrolab_ctr::data::Synthetic::new(cfg, seed);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    match g.write_tsv(rows, &mut w, !no_label) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        r => r.context("writing rows")?,
    }
    match w.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r.context("writing rows")?),
    }
}
