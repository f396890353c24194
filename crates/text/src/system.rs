//! `ferrolab secnn`: the [`System`] implementation (presets, reproduce entries, `predict`).

use crate::config::SecnnConfig;
use crate::experiment;
use ferrolab_core::system::{Entry, FlagAlias, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System, SystemError};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// SECNN vs Kim-CNN sentence classification.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecnnSystem;

impl System for SecnnSystem {
    type Config = SecnnConfig;

    fn name(&self) -> &'static str {
        "secnn"
    }

    fn about(&self) -> &'static str {
        "SECNN vs Kim-CNN sentence classification (train + evaluate, or `predict`)"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "MR smoke run: 128-d embeddings, 4 epochs, 3 seeds (< 1 min)",
                toml: include_str!("../../../configs/secnn/quick.toml"),
            },
            Preset {
                name: "quick-sst2",
                about: "SST-2 smoke run: 128-d embeddings, 4 epochs, 3 seeds (< 1 min)",
                toml: include_str!("../../../configs/secnn/quick-sst2.toml"),
            },
            Preset {
                name: "paper",
                about: "MR, Kim (2014) settings, 10-fold cross-validation (~12 min)",
                toml: include_str!("../../../configs/secnn/paper.toml"),
            },
            Preset {
                name: "mr",
                about: "MR, Kim (2014) settings, 5 seeds on a seeded 10% hold-out (~6 min)",
                toml: include_str!("../../../configs/secnn/mr.toml"),
            },
            Preset {
                name: "sst2",
                about: "SST-2, Kim (2014) settings, 5 seeds on the published splits",
                toml: include_str!("../../../configs/secnn/sst2.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![
            Entry {
                name: "secnn-mr",
                what: "SECNN vs Kim-CNN-rand on MR (movie-review polarity)",
                quick: "quick",
                full: "paper",
            },
            Entry {
                name: "secnn-sst2",
                what: "SECNN vs Kim-CNN-rand on SST-2",
                quick: "quick-sst2",
                full: "sst2",
            },
        ]
    }

    fn datasets(&self, cfg: &SecnnConfig) -> Vec<&'static str> {
        if cfg.data.train.is_some() {
            Vec::new()
        } else if cfg.data.preset == "sst2" {
            vec!["sst2"]
        } else {
            vec!["mr"]
        }
    }

    fn prepare(&self, cfg: &Checked<SecnnConfig>, ctx: &RunContext) -> SysResult<()> {
        experiment::resolve_files(cfg, ctx.data_dir())?;
        Ok(())
    }

    fn run(&self, cfg: &Checked<SecnnConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        let data_dir = ctx.data_dir().map(std::path::Path::to_path_buf);
        let seed = ctx.seed();
        Ok(experiment::run(
            cfg,
            data_dir.as_deref(),
            seed,
            ctx.run_dir(),
        )?)
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let r = &o.report;
        let get = |m: Option<&std::collections::BTreeMap<String, f64>>, k: &str| {
            m.and_then(|m| m.get(k)).copied().unwrap_or(f64::NAN)
        };
        let kim = r.baselines.get("kim_cnn");
        let mut lines = vec![format!(
            "{}: SECNN test accuracy {:.4} ± {:.4}; Kim-CNN {:.4} ± {:.4}",
            r.dataset,
            get(Some(&r.metrics), "test_accuracy"),
            get(Some(&r.metrics), "test_accuracy_std"),
            get(kim, "test_accuracy"),
            get(kim, "test_accuracy_std"),
        )];
        lines.extend(r.notes.iter().cloned());
        lines
    }

    fn flag_aliases(&self) -> Vec<FlagAlias> {
        vec![FlagAlias {
            flag: "embeddings",
            key: "model.embeddings",
            help: "Pretrained word vectors (word2vec/GloVe text format); same as --set model.embeddings=FILE",
        }]
    }

    fn subcommands(&self) -> Vec<SubCommand> {
        vec![SubCommand {
            command: predict_command,
            run: predict,
        }]
    }
}

fn predict_command() -> clap::Command {
    use clap::{Arg, value_parser};
    clap::Command::new("predict")
        .about("Read sentences from stdin (one per line); print `label<TAB>probability` per line")
        .arg(
            Arg::new("checkpoint")
                .long("checkpoint")
                .value_name("DIR")
                .required(true)
                .value_parser(value_parser!(PathBuf))
                .help(
                    "A checkpoint folder written by `ferrolab secnn` (`<out>/checkpoint` holds \
                     SECNN, `<out>/checkpoint-kim-cnn` the baseline)",
                ),
        )
        .arg(
            Arg::new("threads")
                .long("threads")
                .value_parser(value_parser!(usize))
                .help("CPU threads"),
        )
}

fn predict(m: &clap::ArgMatches) -> SysResult<()> {
    let Some(checkpoint) = m.get_one::<PathBuf>("checkpoint") else {
        return Err(SystemError::usage("predict needs --checkpoint DIR"));
    };
    ferrolab_core::backend::init_threads(m.get_one::<usize>("threads").copied());
    let p = crate::Predictor::load(checkpoint)?;
    let stdin = std::io::stdin();
    let mut lines = Vec::new();
    for line in stdin.lock().split(b'\n') {
        let line = line.map_err(|e| SystemError::runtime(format!("reading stdin: {e}")))?;
        lines.push(ferrolab_data::text::decode_text(&line));
    }
    let out = p.predict(&lines);
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    let io = |e: std::io::Error| SystemError::runtime(format!("writing stdout: {e}"));
    for (label, prob) in out {
        writeln!(w, "{label}\t{prob:.4}").map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}
