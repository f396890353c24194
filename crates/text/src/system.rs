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

    fn memory_estimate(
        &self,
        cfg: &SecnnConfig,
        data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        let train = match &cfg.data.train {
            Some(p) => std::path::PathBuf::from(p),
            None => ferrolab_data::lookup::find_dataset(data_dir, &cfg.data.preset).ok()?,
        };
        let meta = std::fs::metadata(&train).ok()?;
        if !meta.is_file() {
            return None;
        }
        let file = meta.len();
        // Vocabulary and longest sentence from one pass over the file (sentence files are
        // small; past 256 MiB the file size stands in). Tokenisation splits punctuation off
        // words, so twice the distinct whitespace-separated tokens bounds the vocabulary.
        let (distinct, longest) = if file <= 256 << 20 {
            let bytes = std::fs::read(&train).ok()?;
            let mut words = std::collections::HashSet::new();
            let mut longest = 0u64;
            for line in bytes.split(|&b| b == b'\n') {
                longest = longest.max(line.len() as u64);
                words.extend(
                    line.split(|b| b.is_ascii_whitespace())
                        .filter(|w| !w.is_empty()),
                );
            }
            (words.len() as u64, longest)
        } else {
            (file / 2, file)
        };
        let vocab = distinct.saturating_mul(2).saturating_add(2);
        let e = cfg.model.embed_dim as u64;
        // Word vectors carry a gradient and Adam's two moments, for two models.
        let emb = vocab.saturating_mul(e).saturating_mul(4 * 4 * 2);
        let taps: u64 = cfg.model.widths.iter().map(|&w| w as u64).sum();
        let filters = e
            .saturating_mul(cfg.model.maps as u64)
            .saturating_mul(taps)
            .saturating_mul(16);
        // Activations of one batch: the GEMM output over the batch's words, sentences padded
        // to the longest line's token count at most.
        let tokens = longest / 2 + 1;
        let max_len = if cfg.data.max_len > 0 {
            (cfg.data.max_len as u64).min(tokens)
        } else {
            tokens
        };
        let act = (cfg.train.batch_size as u64)
            .saturating_mul(max_len)
            .saturating_mul(cfg.model.maps as u64 * cfg.model.widths.len() as u64)
            .saturating_mul(12);
        let bytes = file
            .saturating_mul(10)
            .saturating_add(emb)
            .saturating_add(filters)
            .saturating_add(act);
        let setting = if act > emb.max(filters) && cfg.data.max_len == 0 {
            format!("data.max_len={}", cfg.data.max_len)
        } else if act > emb.max(filters) || filters > emb {
            format!("model.maps={}", cfg.model.maps)
        } else {
            format!("model.embed_dim={}", cfg.model.embed_dim)
        };
        Some(ferrolab_core::guard::MemoryEstimate { setting, bytes })
    }

    fn prepare(&self, cfg: &Checked<SecnnConfig>, ctx: &RunContext) -> SysResult<()> {
        experiment::resolve_files(cfg, ctx.data_dir())?;
        Ok(())
    }

    fn run(&self, cfg: &Checked<SecnnConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        let (data_dir, seed, run) = ctx.parts();
        Ok(experiment::run(cfg, data_dir, seed, run)?)
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
    clap::Command::new("predict")
        .about("Read sentences from stdin (one per line); print `label<TAB>probability` per line")
        .arg(ferrolab_core::system::checkpoint_arg(
            "A checkpoint folder written by `ferrolab secnn` (`<out>/checkpoint` holds \
                     SECNN, `<out>/checkpoint-kim-cnn` the baseline)",
        ))
        .arg(ferrolab_core::system::threads_arg())
}

fn predict(m: &clap::ArgMatches) -> SysResult<()> {
    let Some(checkpoint) = m.get_one::<PathBuf>("checkpoint") else {
        return Err(SystemError::usage("predict needs --checkpoint DIR"));
    };
    ferrolab_core::backend::try_init_threads(m.get_one::<usize>("threads").copied())?;
    let p = crate::Predictor::load(checkpoint)?;
    // Bounded input: a sentence longer than 1 MiB or more than 1 GiB in all (`/dev/zero` as
    // stdin, say) is refused instead of read until memory runs out.
    const MAX_LINE: usize = 1 << 20;
    const MAX_TOTAL: u64 = 1 << 30;
    let stdin = std::io::stdin();
    let mut reader = std::io::Read::take(stdin.lock(), MAX_TOTAL + 1);
    let mut lines = Vec::new();
    let mut total = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = std::io::Read::take(std::io::Read::by_ref(&mut reader), MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| SystemError::runtime(format!("reading stdin: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_TOTAL {
            return Err(SystemError::usage("stdin: more than 1 GiB of sentences"));
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE {
            return Err(SystemError::usage(format!(
                "stdin line {}: longer than 1 MiB",
                lines.len() + 1
            )));
        }
        lines.push(ferrolab_data::text::decode_text(&buf));
    }
    let out = p.predict(&lines);
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for (label, prob) in out {
        if let Err(e) = writeln!(w, "{label}\t{prob:.4}") {
            return ferrolab_core::system::stdout_closed(e);
        }
    }
    if let Err(e) = w.flush() {
        return ferrolab_core::system::stdout_closed(e);
    }
    Ok(())
}
