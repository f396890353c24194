//! `ferrolab adod`: underwater object detection that generalises to unseen water types —
//! ADOD (Saad Saoud et al., "ADOD: Adaptive Domain-Aware Object Detection with Residual
//! Attention for Underwater Environments", ICAR 2023, arXiv 2312.06801): a YOLOv3-style
//! detector with residual attention modules and an attention-based domain classifier trained
//! through gradient reversal, against plain YOLO, each component alone and DG-YOLO (Liu et al.,
//! ICIP 2020: domain classifier + IRM).
//!
//! Data: the physically based renderer [`ferrolab_data::underwater`] (the ten Jerlov water
//! types; a synthetic stand-in, see its page for what it does and does not model).
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[data]`, `[model]`, `[train]`, `[domain]`, `[eval]` keys and checks |
//! | [`model`] | residual attention, gradient reversal, α schedule, domain classifiers, the detector |
//! | [`experiment`] | rendering the domains, training every method, COCO evaluation, the report |
//! | [`checkpoint`] | the checkpoint `adod predict` reads |
//! | [`coco_input`] | `data.coco`: a COCO detection file with water-type domains instead of rendering |
//! | [`render`] | example-detection grids and PR curves as PNG |
//! | [`predict`] | `adod predict` and `adod synth` |

pub mod checkpoint;
pub mod coco_input;
pub mod config;
pub mod experiment;
pub mod model;
pub mod predict;
pub mod render;

use config::AdodConfig;
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System};

/// ADOD on the rendered underwater domains.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdodSystem;

impl System for AdodSystem {
    type Config = AdodConfig;

    fn name(&self) -> &'static str {
        "adod"
    }

    fn about(&self) -> &'static str {
        "ADOD: YOLOv3-tiny + residual attention + attention-based domain classifier (gradient reversal) on unseen Jerlov water types, vs YOLO, each component, DG-YOLO; `predict`, `synth`"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "smoke run: 2 seen + 1 unseen type, 64 px, 300 steps, ADOD vs YOLO, one seed (< 1 min)",
                toml: include_str!("../../../../configs/adod/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "the protocol (seen I, IA, IB, II, 1, 3; unseen III, 5, 7, 9), 128 px, 3000 steps, five methods × five seeds, resumable (82 min at two threads)",
                toml: include_str!("../../../../configs/adod/paper.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "adod-underwater",
            what: "underwater detection on unseen water types (mAP@0.5 and mAP, seen/unseen, ADOD vs YOLO, attention, domain classifier, DG-YOLO)",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, _cfg: &AdodConfig) -> Vec<&'static str> {
        Vec::new()
    }

    fn memory_estimate(
        &self,
        cfg: &AdodConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        // Images as f32 CHW plus their bytes, and a training batch's kept activations (about
        // 12 f32 maps of the first layer's width per pixel across the network).
        let s = cfg.data.image_size as u64;
        let images = (cfg.data.seen.len() * cfg.data.train_per_type
            + (cfg.data.seen.len() + cfg.data.unseen.len()) * cfg.data.test_per_type)
            as u64;
        let data = images * 3 * s * s * 5;
        let act = cfg.train.batch_size.max(cfg.eval.batch) as u64
            * s
            * s
            * cfg.model.widths[0] as u64
            * 4
            * 12;
        Some(ferrolab_core::guard::MemoryEstimate {
            setting: if data > act {
                "data.train_per_type".into()
            } else {
                "train.batch_size".into()
            },
            bytes: data + act,
        })
    }

    fn run(&self, cfg: &Checked<AdodConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        experiment::run(cfg, ctx)
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let r = &o.report;
        let mut lines = Vec::new();
        let row = |name: &str, m: &std::collections::BTreeMap<String, f64>| {
            let g = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            format!(
                "{name:>15}: unseen mAP50 {:.3} ± {:.3} (mAP {:.3}), seen mAP50 {:.3} ± {:.3} (mAP {:.3})",
                g("unseen_map50"),
                g("unseen_map50_std"),
                g("unseen_map"),
                g("seen_map50"),
                g("seen_map50_std"),
                g("seen_map"),
            )
        };
        for (name, m) in &r.baselines {
            lines.push(row(name, m));
        }
        lines.push(row("adod", &r.metrics));
        lines.extend(r.notes.iter().cloned());
        lines
    }

    fn subcommands(&self) -> Vec<SubCommand> {
        vec![
            SubCommand {
                command: predict::command,
                run: predict::run,
            },
            SubCommand {
                command: predict::synth_command,
                run: predict::synth_run,
            },
        ]
    }
}
