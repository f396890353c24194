//! `ferrolab adaevo`: the [`System`] implementation.

use crate::config::AdaEvoConfig;
use crate::experiment;
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System};

/// AdaEvo against no evolution, naive evolution and four ablations on drifting streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdaEvoSystem;

impl System for AdaEvoSystem {
    type Config = AdaEvoConfig;

    fn name(&self) -> &'static str {
        "adaevo"
    }

    fn about(&self) -> &'static str {
        "AdaEvo: one edge keeps many mobile ends' pruned+int8 models fresh under drift (label-free trigger, drift-aware sampling, profiler, knapsack scheduler) vs no evolution, naive evolution and ablations; simulated clock, real compute"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "smoke run: 8 ends, 480 s synthetic-shape streams with a sudden, an incremental and a gradual drift, 3 seeds, all methods (< 1 min)",
                toml: include_str!("../../../configs/adaevo/quick.toml"),
            },
            Preset {
                name: "detection",
                about: "the detection task: 8 ends, 480 s rendered underwater camera paths (water type, light and turbidity drift), mAP@0.5, CLC estimate, 3 seeds, all methods (minutes)",
                toml: include_str!("../../../configs/adaevo/detection.toml"),
            },
            Preset {
                name: "fashion",
                about: "the paper preset on Fashion-MNIST frames with a small CNN as the mobile model (8 3×3 filters, pruned, int8) and a 15 MFLOP/s edge, 5 seeds, all methods (minutes)",
                toml: include_str!("../../../configs/adaevo/fashion.toml"),
            },
            Preset {
                name: "fashion-quick",
                about: "smoke run of `fashion`: 8 ends, 480 s Fashion-MNIST streams with three drifts, 1 seed, all methods (< 1 min)",
                toml: include_str!("../../../configs/adaevo/fashion-quick.toml"),
            },
            Preset {
                name: "paper",
                about: "16 ends contending for one edge, 1200 s streams with six drifts, 5 seeds, all methods (minutes)",
                toml: include_str!("../../../configs/adaevo/paper.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![
            Entry {
                name: "adaevo-synthetic",
                what: "AdaEvo vs no evolution, naive evolution and ablations: average QoE (90%/80% thresholds), accuracy and upload over 8+ drifting mobile streams sharing one edge",
                quick: "quick",
                full: "paper",
            },
            Entry {
                name: "adaevo-fashion-mnist",
                what: "the same comparison on Fashion-MNIST frames with small-CNN mobile models (the issue's classification source)",
                quick: "fashion-quick",
                full: "fashion",
            },
        ]
    }

    fn datasets(&self, cfg: &AdaEvoConfig) -> Vec<&'static str> {
        if cfg.data.dataset == "fashion-mnist" && cfg.data.dir.is_none() {
            vec!["fashion-mnist"]
        } else {
            Vec::new()
        }
    }

    fn memory_estimate(
        &self,
        cfg: &AdaEvoConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        if cfg.task.name == "detection" {
            // Per seed: every end's RGB frames and evaluation frames, the pre-training renders
            // and their cell samples (inputs of the kept cells), and per method (run in
            // parallel) the mobile buffers of RGB frames.
            let d = &cfg.detect;
            let g = cfg.grid();
            let ends = cfg.stream.ends as u64;
            let secs = cfg.stream.seconds as u64;
            let frame = (d.side * d.side * 3 + 256) as u64;
            let ticks = secs / cfg.stream.eval_every_s.max(1) as u64 + 1;
            let streams = ends * (secs + ticks * d.eval_frames as u64) * frame;
            let pre = (d.pretrain_frames * (1 + d.teacher_renders)) as u64;
            let kept = (g.cells() as f64 * d.bg_keep).ceil() as u64 + 4;
            let samples = pre * (frame + kept * (g.input() as u64 * 4 + 32));
            let methods = cfg.experiment.methods.len() as u64;
            let buffers = methods * ends * 500 * (frame + 1_000);
            return Some(ferrolab_core::guard::MemoryEstimate {
                setting: format!(
                    "stream.ends={}, stream.seconds={}, detect.eval_frames={}, detect.pretrain_frames={}",
                    cfg.stream.ends, cfg.stream.seconds, d.eval_frames, d.pretrain_frames
                ),
                bytes: streams + samples + buffers,
            });
        }
        // Per seed: every end's frames (raw + input) and evaluation inputs, the base images,
        // and per method (run in parallel) the mobile buffers and edge replay.
        let ends = cfg.stream.ends as u64;
        let secs = cfg.stream.seconds as u64;
        let frame = 784 + 196 * 4 + 64;
        let ticks = secs / cfg.stream.eval_every_s.max(1) as u64 + 1;
        let eval = ends * ticks * cfg.stream.eval_frames as u64 * (196 * 4 + 32);
        let base = 70_000 * 785 * 2;
        let methods = cfg.experiment.methods.len() as u64;
        let buffers = methods * ends * (1_000 * 1_700 + cfg.edge.replay as u64 * 4 * 900);
        // The teacher's training renders (model inputs, live while it trains).
        let teacher = (cfg.edge.teacher_renders * cfg.data.pretrain_images) as u64 * (196 * 4 + 32);
        Some(ferrolab_core::guard::MemoryEstimate {
            setting: format!(
                "stream.ends={}, stream.seconds={}, stream.eval_frames={}",
                cfg.stream.ends, cfg.stream.seconds, cfg.stream.eval_frames
            ),
            bytes: ends * secs * frame + eval + base + buffers + teacher,
        })
    }

    /// `edge` and `mobile` over NATS (feature `nats`, on in the `ferrolab` binary).
    fn subcommands(&self) -> Vec<SubCommand> {
        #[cfg(feature = "nats")]
        return crate::net::cli::subcommands();
        #[cfg(not(feature = "nats"))]
        Vec::new()
    }

    fn run(&self, cfg: &Checked<AdaEvoConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        experiment::run(cfg, ctx)
    }
}
