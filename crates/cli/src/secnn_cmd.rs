//! `ferrolab secnn`: train SECNN and Kim-CNN side by side, or `predict` with a checkpoint.

use crate::common::CommonArgs;
use anyhow::Context;
use clap::{Args, Subcommand};
use ferrolab_core::run::Outcome;
use ferrolab_text::{Predictor, SecnnConfig};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Arguments of `ferrolab secnn`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SecnnArgs {
    #[command(subcommand)]
    pub command: Option<SecnnCommand>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Pretrained word vectors (word2vec/GloVe text format); same as `--set model.embeddings=FILE`.
    #[arg(long, value_name = "FILE")]
    pub embeddings: Option<PathBuf>,
}

/// Subcommands of `ferrolab secnn`.
#[derive(Subcommand, Debug)]
pub enum SecnnCommand {
    /// Read sentences from stdin (one per line); print `label<TAB>probability` per line.
    Predict {
        /// A checkpoint folder written by `ferrolab secnn` (`<out>/checkpoint` holds SECNN,
        /// `<out>/checkpoint-kim-cnn` the baseline).
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// CPU threads.
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// Runs the subcommand.
pub fn run(args: SecnnArgs) -> anyhow::Result<()> {
    if let Some(SecnnCommand::Predict {
        checkpoint,
        threads,
    }) = args.command
    {
        return predict(&checkpoint, threads);
    }
    let mut sets = args.common.sets.clone();
    if let Some(e) = &args.embeddings {
        sets.push(format!("model.embeddings={}", e.display()));
    }
    let cfg: SecnnConfig = ferrolab_core::config::load(args.common.config.as_deref(), &sets)?;
    let outcome = train(&cfg, &args.common)?;
    let r = &outcome.report;
    println!(
        "{}: SECNN test accuracy {:.4} ± {:.4}; Kim-CNN {:.4} ± {:.4}",
        r.dataset,
        r.metrics.get("test_accuracy").copied().unwrap_or(f64::NAN),
        r.metrics
            .get("test_accuracy_std")
            .copied()
            .unwrap_or(f64::NAN),
        r.baselines
            .get("kim_cnn")
            .and_then(|b| b.get("test_accuracy"))
            .copied()
            .unwrap_or(f64::NAN),
        r.baselines
            .get("kim_cnn")
            .and_then(|b| b.get("test_accuracy_std"))
            .copied()
            .unwrap_or(f64::NAN),
    );
    for n in &r.notes {
        println!("{n}");
    }
    Ok(())
}

/// Trains and writes the run folder; shared with `reproduce`.
pub fn train(cfg: &SecnnConfig, common: &CommonArgs) -> anyhow::Result<Outcome> {
    ferrolab_core::backend::init_threads(common.run.threads);
    // Resolve the data before creating the output folder, so a data error leaves nothing behind.
    ferrolab_text::experiment::resolve_files(cfg, common.run.data_dir.as_deref())?;
    let mut run = common.run_dir("secnn")?;
    run.write_config(&ferrolab_core::config::to_toml(cfg)?)?;
    let outcome = ferrolab_text::experiment::run(
        cfg,
        common.run.data_dir.as_deref(),
        common.run.seed,
        &mut run,
    )?;
    run.write_report(&outcome.report)?;
    crate::plot::write_curves(
        &run.join("curves.svg"),
        &outcome.curves,
        &format!("secnn on {}", outcome.report.dataset),
    )
    .context("writing curves.svg")?;
    eprintln!("wrote {}", run.path().display());
    Ok(outcome)
}

fn predict(checkpoint: &std::path::Path, threads: Option<usize>) -> anyhow::Result<()> {
    ferrolab_core::backend::init_threads(threads);
    let p = Predictor::load(checkpoint)?;
    let stdin = std::io::stdin();
    let mut lines = Vec::new();
    for line in stdin.lock().split(b'\n') {
        let line = line.context("reading stdin")?;
        lines.push(ferrolab_data::text::decode_text(&line));
    }
    let out = p.predict(&lines);
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for (label, prob) in out {
        writeln!(w, "{label}\t{prob:.4}")?;
    }
    w.flush()?;
    Ok(())
}
