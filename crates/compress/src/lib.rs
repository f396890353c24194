//! ferrolab-compress: per-layer compression operators and layer importance (SAfER).
//!
//! Yvinec, Dapogny, Bailly & Fischer, "SAfER: Layer-Level Sensitivity Assessment for Efficient
//! and Robust Neural Network Inference", arXiv 2308.04753. Layer importance is the sensitivity
//! of accuracy to a perturbation applied to one layer only; the paper contributes a dataset of
//! measured sensitivities, a benchmark of cheap criteria against it, and budgets (pruning,
//! quantisation, bit-flip protection) driven by the criteria. No code was published and the
//! full text was not obtainable: the choices made here are listed in this crate's README.
//!
//! | module | what |
//! |---|---|
//! | [`ops`] | magnitude and channel-L1 pruning, per-channel fake quantisation (BN folded), int8 storage, seeded bit flips |
//! | [`zoo`] | [`LayerParams`] (the view every model gives the operators) and the staged zoo networks |
//! | [`train`] | training, fine-tuning under masks, evaluation from cached activations |
//! | [`dataset`] | the ground-truth sweep and its JSON/CSV form |
//! | [`criteria`] | the cheap criteria |
//! | [`crossdomain`] | SECNN on MR and the GCN on Cora as members, through a generic parameter view |
//! | [`bench`] | Spearman, Kendall, top-k precision, leave-one-seed-out choice, heat map |
//! | [`budget`] | per-layer sparsities, bit-widths and protection from a score |
//! | [`probe`] | `layer-importance probe`: named layers of a trained member under chosen perturbations |
//! | [`experiment`] | `ferrolab layer-importance` |
//!
//! ```no_run
//! use ferrolab_compress::{ops, zoo::{LayerParams, ZooSpec}};
//! let dev = ferrolab_core::backend::device();
//! let mut net = ZooSpec { arch: "resnet20".into(), width: 1.0, classes: 10, side: 28 }
//!     .build(&dev).unwrap();
//! let l = net.find_layer("block3.conv1").unwrap();
//! let orig = net.layer(l);
//! net.set_layer_weight(l, &ops::fake_quantize(&orig, 4).unwrap());
//! // ... evaluate, then restore bit for bit:
//! net.set_layer_weight(l, &orig.weight);
//! ```

pub mod bench;
pub mod budget;
pub mod config;
pub mod criteria;
pub mod crossdomain;
pub mod dataset;
pub mod experiment;
pub mod ops;
pub mod probe;
pub mod train;
pub mod zoo;

pub use zoo::LayerParams;

use config::LayerImportanceConfig;
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System};

/// `ferrolab layer-importance`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerImportanceSystem;

impl System for LayerImportanceSystem {
    type Config = LayerImportanceConfig;

    fn name(&self) -> &'static str {
        "layer-importance"
    }

    fn about(&self) -> &'static str {
        "SAfER layer importance: ground-truth layer sensitivities, a benchmark of criteria, pruning/quantisation/bit-flip budgets"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "smoke run: two small networks, a subset of the grid (< 1 min)",
                toml: include_str!("../../../configs/layer-importance/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "ResNet-20, VGG, MobileNet, MLP × 3 seeds on Fashion-MNIST, the full grid, resumable (hours)",
                toml: include_str!("../../../configs/layer-importance/paper.toml"),
            },
            Preset {
                name: "medium",
                about: "half-width zoo × 2 seeds on 10,000 training images, reduced grid (~20 min at 2 threads)",
                toml: include_str!("../../../configs/layer-importance/medium.toml"),
            },
            Preset {
                name: "flip",
                about: "bit-flip protection comparison: half-width ResNet-20, MobileNet, MLP × 2 seeds, protection at 1e-4 and 1e-3 over 40 flip seeds (~30 min loaded)",
                toml: include_str!("../../../configs/layer-importance/flip.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "layer-importance-fashion-mnist",
            what: "layer sensitivity dataset, criteria benchmark and budgets on Fashion-MNIST",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, cfg: &LayerImportanceConfig) -> Vec<&'static str> {
        let mut v = Vec::new();
        if cfg.data.dataset == "fashion-mnist" && cfg.data.dir.is_none() {
            v.push("fashion-mnist");
        }
        for m in &cfg.zoo.cross_domain {
            match m.as_str() {
                "secnn-mr" => v.push("mr"),
                "gcn-cora" => v.push("cora-planetoid"),
                _ => {}
            }
        }
        v
    }

    fn memory_estimate(
        &self,
        cfg: &LayerImportanceConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        // Images (file and subsets), the evaluation set as f32, one cached activation set
        // (the widest map: 64·width channels at 28×28 per image) and a training batch's
        // kept activations (as classify measured: ~300 MB for ResNet-20 at batch 128).
        let w = cfg.zoo.width.max(0.25);
        let images = 70_000u64 * 784 * 2;
        let eval = cfg.data.eval_images as u64 * 784 * 4;
        let cache = (cfg.data.eval_images as f64 * 784.0 * 64.0 * w * 4.0 * 2.0) as u64;
        let train = (cfg.zoo.batch_size as f64 * 784.0 * 16.0 * 4.0 * 2.0 * 20.0 * w) as u64;
        Some(ferrolab_core::guard::MemoryEstimate {
            setting: format!("data.eval_images={}", cfg.data.eval_images),
            bytes: images + eval + cache + train,
        })
    }

    fn prepare(&self, cfg: &Checked<LayerImportanceConfig>, ctx: &RunContext) -> SysResult<()> {
        experiment::load(cfg, ctx.data_dir())?;
        // The cross-domain data files must exist before the run folder does.
        for m in &cfg.zoo.cross_domain {
            let name = if m == "secnn-mr" {
                "mr"
            } else {
                "cora_planetoid"
            };
            ferrolab_data::lookup::find_dataset(ctx.data_dir(), name)?;
        }
        Ok(())
    }

    /// `dataset`, `benchmark` and `budget`: the run up to that part, exactly as
    /// `--set task.stage=<part>` (which keeps working); `probe`: chosen layers of a trained
    /// member under chosen perturbations.
    fn subcommands(&self) -> Vec<SubCommand> {
        vec![
            SubCommand {
                command: dataset_command,
                run: run_dataset,
            },
            SubCommand {
                command: benchmark_command,
                run: run_benchmark,
            },
            SubCommand {
                command: budget_command,
                run: run_budget,
            },
            SubCommand {
                command: probe::command,
                run: probe::run,
            },
        ]
    }

    fn run(
        &self,
        cfg: &Checked<LayerImportanceConfig>,
        ctx: &mut RunContext,
    ) -> SysResult<Outcome> {
        experiment::run(cfg, ctx)
    }
}

fn stage_command(name: &'static str, about: &'static str) -> clap::Command {
    ferrolab_core::system::setting_command(name, about, "layer-importance")
}

fn dataset_command() -> clap::Command {
    stage_command(
        "dataset",
        "Build the ground-truth dataset only (dataset.json, dataset.csv); same as --set task.stage=dataset",
    )
}

fn benchmark_command() -> clap::Command {
    stage_command(
        "benchmark",
        "Dataset and criteria benchmark; same as --set task.stage=benchmark",
    )
}

fn budget_command() -> clap::Command {
    stage_command(
        "budget",
        "Dataset, benchmark and budgets (the budgets need the benchmark's choice); same as --set task.stage=budget",
    )
}

fn run_dataset(m: &clap::ArgMatches) -> SysResult<()> {
    run_stage("dataset", m)
}

fn run_benchmark(m: &clap::ArgMatches) -> SysResult<()> {
    run_stage("benchmark", m)
}

fn run_budget(m: &clap::ArgMatches) -> SysResult<()> {
    run_stage("budget", m)
}

/// The command line that runs `stage` through the generic runner: every argument of the
/// original one except the sub-command's name, plus `--set task.stage=<stage>`. `argv` is
/// the process's arguments, `rest` what followed the sub-command.
pub fn stage_argv(
    argv: &[std::ffi::OsString],
    rest: &[String],
    stage: &str,
) -> Option<Vec<std::ffi::OsString>> {
    ferrolab_core::system::setting_argv(argv, rest, stage, "task.stage")
}

/// Runs the stage by running this program again with the stage as a setting
/// ([`ferrolab_core::system::run_setting_command`]).
fn run_stage(stage: &str, m: &clap::ArgMatches) -> SysResult<()> {
    ferrolab_core::system::run_setting_command("layer-importance", stage, "task.stage", m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_sub_command_becomes_a_setting() {
        let os = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
        let argv = os(&[
            "ferrolab",
            "layer-importance",
            "--preset",
            "quick",
            "dataset",
            "--out",
            "dataset",
        ]);
        let rest = vec!["--out".to_string(), "dataset".to_string()];
        assert_eq!(
            stage_argv(&argv, &rest, "dataset"),
            Some(os(&[
                "layer-importance",
                "--preset",
                "quick",
                "--out",
                "dataset",
                "--set",
                "task.stage=dataset"
            ]))
        );
        assert_eq!(stage_argv(&argv, &rest, "budget"), None);
        assert_eq!(stage_argv(&os(&["x"]), &rest, "dataset"), None);
    }
}
