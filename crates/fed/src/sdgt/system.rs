//! `ferrolab sdgt`: the [`System`] implementation.

use super::config::SdgtConfig;
use super::experiment;
use ferrolab_core::system::{Entry, Preset};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System};

/// SD-GT against SD-FedAvg, SCAFFOLD, gradient tracking and FedAvg on Fashion-MNIST.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdgtSystem;

impl System for SdgtSystem {
    type Config = SdgtConfig;

    fn name(&self) -> &'static str {
        "sdgt"
    }

    fn about(&self) -> &'static str {
        "SD-GT: semi-decentralised FL with gradient tracking at the subnet and global tier, vs SD-FedAvg, SCAFFOLD, decentralised GT and FedAvg on label-skewed Fashion-MNIST over 40 devices (federated runtime, in-process fabric)"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "smoke run: logistic regression, 6000 images, 40 rounds, one step size, 1 seed, label-sorted split (< 1 min)",
                toml: include_str!("../../../../configs/sdgt/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "logistic regression, full Fashion-MNIST, 300 rounds, 3 step sizes, 3 seeds, sorted and IID splits, co-optimised (s, T)",
                toml: include_str!("../../../../configs/sdgt/paper.toml"),
            },
            Preset {
                name: "cnn",
                about: "the reference's CNN, label-sorted split, SD-GT vs SD-FedAvg vs SCAFFOLD (hours on two cores)",
                toml: include_str!("../../../../configs/sdgt/cnn.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "sdgt-fashion-mnist",
            what: "SD-GT vs SD-FedAvg, SCAFFOLD, GT, FedAvg: rounds and communication to a target test accuracy (75% in paper, 70% in the quick smoke run), label-sorted Fashion-MNIST, 40 devices",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, cfg: &SdgtConfig) -> Vec<&'static str> {
        if cfg.data.dataset == "fashion-mnist" && cfg.data.dir.is_none() {
            vec!["fashion-mnist"]
        } else {
            Vec::new()
        }
    }

    fn memory_estimate(
        &self,
        cfg: &SdgtConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        // Images as f32 features (train + val + test), and per device x, y, z, c plus the
        // exchange copies (a subnet's vectors per device, twice) of the model.
        let images: u64 = if cfg.data.dataset == "synthetic" {
            cfg.data.synthetic_train as u64 * 6 / 5
        } else {
            70_000
        };
        let dim: u64 = if cfg.model.arch == "cnn" {
            576_778
        } else {
            7_850
        };
        let n_c = (cfg.topology.devices / cfg.topology.subnets.max(1)).max(1) as u64;
        let devices = cfg.topology.devices as u64;
        let bytes = images * 784 * 4 * 2 + devices * dim * 4 * (6 + 2 * n_c);
        Some(ferrolab_core::guard::MemoryEstimate {
            setting: format!(
                "model.arch={}, topology.devices={}",
                cfg.model.arch, cfg.topology.devices
            ),
            bytes,
        })
    }

    fn prepare(&self, cfg: &Checked<SdgtConfig>, ctx: &RunContext) -> SysResult<()> {
        experiment::prepare(cfg.get(), ctx.data_dir(), ctx.seed())
    }

    fn run(&self, cfg: &Checked<SdgtConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        experiment::run(cfg, ctx)
    }
}
