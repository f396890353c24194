//! `ferrolab classify`: the image-classification proving ground of the vision crate.
//!
//! Trains one network of the zoo (ResNet-20/32, the VGG- and MobileNet-style CNNs, or an MLP
//! baseline) on Fashion-MNIST (or a generated stand-in) with the CIFAR ResNet recipe, writes
//! the usual report (`metrics.test_accuracy`, `metrics.epoch_seconds`, `metrics.peak_rss_mb`,
//! validation accuracy and training curves), a checkpoint for `classify predict`, and after
//! every epoch the training state that `--resume` continues from.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[data]`, `[model]`, `[augment]`, `[train]`, `[optim]` keys and checks |
//! | [`model`] | [`model::Net`], one `Module` over every architecture |
//! | [`experiment`] | data, training loop side, evaluation, report |
//! | [`checkpoint`] | the predict checkpoint and the per-epoch training state |
//! | [`predict`] | `classify predict` on IDX and PNG files |

pub mod checkpoint;
pub mod config;
pub mod experiment;
pub mod model;
pub mod predict;

use config::ClassifyConfig;
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System};

/// Image classification on Fashion-MNIST.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifySystem;

impl System for ClassifySystem {
    type Config = ClassifyConfig;

    fn name(&self) -> &'static str {
        "classify"
    }

    fn about(&self) -> &'static str {
        "Image classification (ResNet-20/32, VGG, MobileNet, MLP) on Fashion-MNIST: train + evaluate, or `predict`"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "smoke run: a ResNet-8 on 5000 Fashion-MNIST images, three epochs (< 1 min)",
                toml: include_str!("../../../../configs/classify/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "ResNet-20 on all of Fashion-MNIST, the CIFAR recipe, 20 epochs, resumable (~6 min per epoch with --threads 1 here)",
                toml: include_str!("../../../../configs/classify/paper.toml"),
            },
            Preset {
                name: "synthetic",
                about: "a small ResNet on generated strokes, no data needed (seconds)",
                toml: include_str!("../../../../configs/classify/synthetic.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "classify-fashion-mnist",
            what: "image classification on Fashion-MNIST (test accuracy, epoch time, peak memory)",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, cfg: &ClassifyConfig) -> Vec<&'static str> {
        if cfg.data.dataset == "fashion-mnist" && cfg.data.dir.is_none() {
            vec!["fashion-mnist"]
        } else {
            Vec::new()
        }
    }

    fn memory_estimate(
        &self,
        cfg: &ClassifyConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        let images: u64 = if cfg.data.dataset == "synthetic" {
            (cfg.data.synthetic_train + cfg.data.synthetic_test) as u64
        } else {
            70_000
        };
        // The images as bytes, twice (the file and the split); then the larger of a training
        // batch's activations kept for backward (about two 16-channel f32 maps per pixel per
        // layer: conv, batch-norm and ReLU outputs, channels doubling as maps halve; ResNet-20
        // measured 300 MB in all at batch 128) and an evaluation batch's (a few live maps).
        let data = images * 784 * 2;
        let depth = config::resnet_depth(&cfg.model.arch).unwrap_or(20) as u64;
        let map = 784u64 * 16 * 4;
        let train = (cfg.train.batch_size as u64).saturating_mul(map * 2 * depth);
        let eval = (cfg.optim.eval_batch as u64).saturating_mul(map * 4);
        let act = train.max(eval);
        let setting = if train >= eval && act > data {
            format!("train.batch_size={}", cfg.train.batch_size)
        } else if act > data {
            format!("optim.eval_batch={}", cfg.optim.eval_batch)
        } else {
            format!("data.dataset={}", cfg.data.dataset)
        };
        Some(ferrolab_core::guard::MemoryEstimate {
            setting,
            bytes: data.saturating_add(act),
        })
    }

    fn prepare(&self, cfg: &Checked<ClassifyConfig>, ctx: &RunContext) -> SysResult<()> {
        experiment::prepare(cfg, ctx.data_dir(), ctx.seed_for("split")).map(|_| ())
    }

    fn run(&self, cfg: &Checked<ClassifyConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        experiment::run(cfg, ctx)
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let r = &o.report;
        let get = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
        let arch = r.details["arch"].as_str().unwrap_or("?");
        let mut lines = vec![format!(
            "{arch} on {}: test accuracy {:.4} (validation {:.4}), {:.1} s per epoch, peak RSS {:.0} MB",
            r.dataset,
            get("test_accuracy"),
            get("val_accuracy"),
            get("epoch_seconds"),
            get("peak_rss_mb"),
        )];
        lines.extend(r.notes.iter().cloned());
        lines
    }

    fn subcommands(&self) -> Vec<SubCommand> {
        vec![SubCommand {
            command: predict::command,
            run: predict::run,
        }]
    }
}
