//! `ferrolab hyphen`: the [`System`]. One run trains the networks in plaintext (HerPN for
//! HyPHEN and `mpconv_aespa`, batch norm + ReLU for Lee et al.'s MPConv), folds them, counts
//! every packing's rotations and bootstraps on the slot simulator with the level budget of a
//! bootstrapping chain, checks top-1 agreement of a CKKS-noise simulation, and then runs the
//! HerPN network truly encrypted in both packings (HyPHEN and MPConv, interleaved per image,
//! same keys, same parameters), decrypting the logits against the plaintext network.
//!
//! The encrypted run is leveled (no bootstrapping): the chain gets as many primes as the
//! network's depth, at a ring degree the configuration names. Below N = 2^16 those parameters
//! are not 128-bit secure (a deep chain over a small ring); the report says so
//! (`details.encrypted.secure`). MPConv with AppReLU needs 14 levels per activation and so
//! bootstrapping in every block; it is counted and simulated, not run encrypted.

use super::backend::{Backend, Ckks, Sim, Stats, key_steps};
use super::conv::OpCost;
use super::layout::Geometry;
use super::net::{LayerRecord, Net, Packing, RunOptions, encode_input, logits, run, totals};
use super::train::{Arch, PlainNet, Prepared, TrainOptions, argmax, predict, train};
use crate::params::{Context, ParamSpec};
use crate::{Bootstrapper, Decryptor, Encryptor, Evaluator, KeyGenerator, SlotKind};
use ferrolab_core::config::Validate;
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, Outcome, Report, RunContext, SysResult, System, SystemError};
use std::collections::BTreeMap;
use std::time::Instant;

ferrolab_core::config_section! {
    /// `ferrolab hyphen` configuration.
    pub struct HyphenConfig {
        /// Images.
        pub data: DataSection = DataSection::default();
        /// The networks and their training.
        pub model: ModelSection = ModelSection::default();
        /// Simulation and the encrypted run.
        pub fhe: FheSection = FheSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `data.*`.
    pub struct DataSection {
        /// Input side: 32 pads Fashion-MNIST to 32×32 (the size), 16 average-pools it
        /// 2×2 and pads to 16×16 (a small ring holds a whole map).
        pub side: usize = 32, "16 or 32" => |v| *v == 16 || *v == 32;
        /// Training images (0 = all 60,000).
        pub train_limit: usize = 0, "0..=60000" => |v| *v <= 60_000;
        /// Test images for plaintext accuracy (0 = all 10,000).
        pub test_limit: usize = 0, "0..=10000" => |v| *v <= 10_000;
    }
}

ferrolab_core::config_section! {
    /// Keys `model.*`.
    pub struct ModelSection {
        /// Basic blocks per stage: 3 is ResNet-20, 1 ResNet-8.
        pub blocks_per_stage: usize = 3, "1..=9" => |v| (1..=9).contains(v);
        /// First stage's width (ResNet-20: 16).
        pub width: usize = 16, "4..=64, a multiple of 4" => |v| (4..=64).contains(v) && v.is_multiple_of(4);
        /// Training epochs.
        pub epochs: usize = 10, "1..=500" => |v| (1..=500).contains(v);
        /// Batch size.
        pub batch: usize = 128, "1..=4096" => |v| (1..=4096).contains(v);
        /// Adam learning rate (cosine decay to 0).
        pub lr: f64 = 2e-3, "in (0, 1]" => |v| *v > 0.0 && *v <= 1.0;
    }
}

ferrolab_core::config_section! {
    /// Keys `fhe.*`.
    pub struct FheSection {
        /// Ring degree (log2 N) of the simulation and of the encrypted run.
        pub log_n: u32 = 16, "11..=16" => |v| (11..=16).contains(v);
        /// Levels after a bootstrap in the simulated chain (16: the set MPConv+AppReLU needs;
        /// a value some layer cannot run on is refused before training, naming the smallest
        /// that fits).
        pub levels_after_boot: usize = 16, "2..=40" => |v| (2..=MAX_LEVELS_AFTER_BOOT).contains(v);
        /// Test images in the noisy simulation (agreement_top1).
        pub sim_images: usize = 100, "1..=10000" => |v| (1..=10_000).contains(v);
        /// log2 of the simulated noise per operation (message units; −25 ≈ the measured 26 bits).
        pub noise_log2: f64 = -25.0, "in [-60, -5]" => |v| (-60.0..=-5.0).contains(v);
        /// log2 of the simulated noise per bootstrap.
        pub boot_noise_log2: f64 = -17.0, "in [-60, -5]" => |v| (-60.0..=-5.0).contains(v);
        /// Test images run truly encrypted in both packings (0 = none).
        pub encrypted_images: usize = 5, "0..=1000" => |v| *v <= 1000;
        /// Run the MPConv + AESPA baseline encrypted too (false: HyPHEN only, its baseline rows
        /// are counted and simulated; the quick preset's time budget).
        pub encrypted_baseline: bool = true, "true or false" => |_| true;
        /// Special primes of the leveled encrypted chain (more: fewer key digits, smaller keys).
        pub special_primes: usize = 4, "1..=8" => |v| (1..=8).contains(v);
        /// Rotation keys beyond the powers of two: the most used amounts (hyphen.md §3.6);
        /// every other amount is composed from these. 10000 = a key for every amount used.
        pub extra_keys: usize = 8, "0..=10000" => |v| *v <= 10_000;
        /// Bootstrap inside the encrypted run (a `BootChain`: at log_n = 16 the documented
        /// 128-bit sparse-secret set, below that the insecure test chain) instead of a leveled
        /// chain as deep as the network.
        pub bootstrapping: bool = false, "true or false" => |_| true;
        /// Levels after a bootstrap in the encrypted run when `bootstrapping` (the 128-bit
        /// N = 2^16 sets leave 9 or 16; the 9-level one bootstraps all 32,768 real slots).
        pub encrypted_boot_levels: usize = 9, "2..=40" => |v| (2..=40).contains(v);
        /// Test images run truly encrypted as MPConv as published (the ReLU network with
        /// AppReLU), after the other rows, on its own bootstrapping set with 16 levels after a
        /// bootstrap (0 = counted and simulated only). At N = 2^16 that leg needs ~12 GB.
        pub encrypted_mpconv_images: usize = 0, "0..=1000" => |v| *v <= 1000;
        /// Of each encrypted row's images, how many run a second time on a two-thread pool
        /// (`latency_seconds_…_t2` beside the run's `_t1`; needs `--threads 1`, and the
        /// machine's second core idle while they run). 0 = none.
        pub encrypted_images_t2: usize = 0, "0..=1000" => |v| *v <= 1000;
    }
}

impl Validate for HyphenConfig {
    fn validate(&self) -> std::result::Result<(), ferrolab_core::ConfigError> {
        // MPConv as published needs a bootstrapping set (AppReLU alone takes 14 levels per
        // activation): those exist for log N 13..=16 only. Refused here, before any training.
        if self.fhe.encrypted_mpconv_images > 0 && self.fhe.log_n < 13 {
            return Err(ferrolab_core::ConfigError::Invalid {
                key: "fhe.encrypted_mpconv_images".into(),
                value: self.fhe.encrypted_mpconv_images.to_string(),
                reason: format!(
                    "MPConv as published runs on a bootstrapping set, which needs fhe.log_n >= 13 (it is {})",
                    self.fhe.log_n
                ),
            });
        }
        // The encrypted leg's bootstrapping set is chosen after training: a choice that has
        // no set must be refused before it, not hours later.
        if self.fhe.encrypted_images > 0 && self.fhe.bootstrapping {
            let (log_n, levels) = (self.fhe.log_n, self.fhe.encrypted_boot_levels);
            if crate::bootstrap::bench::chain_for(log_n, levels, log_n < 16).is_err() {
                let (key, value, reason) = if log_n == 16 {
                    (
                        "fhe.encrypted_boot_levels",
                        levels.to_string(),
                        "the N = 2^16 bootstrapping sets leave 9 or 16 levels".to_string(),
                    )
                } else {
                    (
                        "fhe.log_n",
                        log_n.to_string(),
                        "fhe.encrypted_images with fhe.bootstrapping needs a bootstrapping set, which exists for fhe.log_n 13..=16".to_string(),
                    )
                };
                return Err(ferrolab_core::ConfigError::Invalid {
                    key: key.into(),
                    value,
                    reason,
                });
            }
        }
        let slots = 1usize << (self.fhe.log_n - 1);
        let s = self.data.side * self.data.side;
        // CA layouts hold every channel of a stage in one ciphertext (k² channels per block
        // after k-fold gap packing): the first stage needs `width` blocks.
        if slots / s < self.model.width {
            return Err(ferrolab_core::ConfigError::Invalid {
                key: "fhe.log_n".into(),
                value: self.fhe.log_n.to_string(),
                reason: format!(
                    "the ring holds {} blocks of {}×{}, the first stage needs model.width = {}: raise fhe.log_n or lower data.side",
                    slots / s,
                    self.data.side,
                    self.data.side,
                    self.model.width
                ),
            });
        }
        Ok(())
    }
}

/// HyPHEN vs MPConv: encrypted ResNet inference.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyphenSystem;

impl System for HyphenSystem {
    type Config = HyphenConfig;

    fn name(&self) -> &'static str {
        "hyphen"
    }

    fn about(&self) -> &'static str {
        "HyPHEN (CAConv/RAConv, 2D gap packing, HerPN) vs Lee et al.'s MPConv: encrypted ResNet inference under CKKS on a network trained on Fashion-MNIST"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "ResNet-8 at 16×16 on 3,000 images, both packings' counts + 10-image noisy simulation, 1 image truly encrypted in HyPHEN packing at N = 2^13 (insecure, flagged); ≤ 60 s on two cores",
                toml: include_str!("../../../../configs/hyphen/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "ResNet-20 at 32×32 on all of Fashion-MNIST, 200-image simulation at N = 2^16 / 16 levels, 5 images truly encrypted with bootstrapping at 128-bit parameters in both packings, then as MPConv as published (AppReLU, 16-level set) (hours, ~14 GB)",
                toml: include_str!("../../../../configs/hyphen/paper.toml"),
            },
            Preset {
                name: "secure20",
                about: "one ResNet-20 image truly encrypted with bootstrapping at 128-bit parameters (N = 2^16, n16_l9), HyPHEN vs MPConv+AESPA, briefly trained network (tens of minutes, ~13 GB)",
                toml: include_str!("../../../../configs/hyphen/secure20.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "hyphen-resnet20",
            what: "HyPHEN vs MPConv: rotations, bootstraps, encrypted latency and logit agreement of a HerPN ResNet trained on Fashion-MNIST",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, _cfg: &HyphenConfig) -> Vec<&'static str> {
        vec!["fashion-mnist"]
    }

    fn memory_estimate(
        &self,
        cfg: &HyphenConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        // Images as f32 (3 channels), and the encrypted run's Galois keys (both packings'
        // steps), each dnum digits × 2 polynomials over all limbs.
        let s = (cfg.data.side * cfg.data.side) as u64;
        let images = 70_000u64 * 3 * s * 4;
        let depth = (3 + 18 * cfg.model.blocks_per_stage + 2) as u64;
        let limbs = depth + 1 + cfg.fhe.special_primes as u64;
        let dnum = (depth + 1).div_ceil(cfg.fhe.special_primes as u64);
        let n = 1u64 << cfg.fhe.log_n;
        // Powers of two and the extra keys (the network's amounts, at most ~150 per packing).
        let net_keys = (cfg.fhe.log_n as u64 - 1) + (cfg.fhe.extra_keys as u64).min(300);
        let keys = if cfg.fhe.encrypted_images == 0 {
            0
        } else if cfg.fhe.bootstrapping {
            // A bootstrapping chain: 31 limbs at N = 2^16, dnum 5 (n16_l9); bootstrapping's
            // own ~40 keys (measured: 6.3 GB at 32,768 slots) plus its DFT factors (3.0 GB),
            // scaled by the ring.
            let key = 5 * 2 * 31 * n * 8;
            let boot = (6_300u64 + 3_000) << 20;
            net_keys * key + boot * n / (1 << 16)
        } else {
            net_keys * dnum * 2 * limbs * n * 8
        };
        // MPConv as published runs after the other rows' keys are dropped, on the 16-level
        // set: measured at N = 2^16 with 32,768 slots, 8.4 GiB of evaluation keys (34 rotation
        // keys) and 11.9 GB resident in all, scaled by the ring.
        let mpconv_keys = if cfg.fhe.encrypted_mpconv_images == 0 {
            0
        } else {
            (12_500u64 << 20) * n / (1 << 16)
        };
        // The two-thread pass: each pool thread keeps its own key-switching buffers (the
        // paper run's peak went from 13.7 to 15.1 GB with it), scaled by the ring.
        let second_pass = if cfg.fhe.encrypted_images_t2 > 0 && keys.max(mpconv_keys) > 0 {
            (1_500u64 << 20) * n / (1 << 16)
        } else {
            0
        };
        Some(ferrolab_core::guard::MemoryEstimate {
            setting: format!(
                "fhe.log_n={}, model.blocks_per_stage={}, fhe.encrypted_mpconv_images={}, fhe.encrypted_images_t2={}",
                cfg.fhe.log_n,
                cfg.model.blocks_per_stage,
                cfg.fhe.encrypted_mpconv_images,
                cfg.fhe.encrypted_images_t2
            ),
            bytes: images + keys.max(mpconv_keys) + second_pass,
        })
    }

    fn run(&self, cfg: &Checked<HyphenConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        experiment(cfg.get(), ctx)
    }

    fn subcommands(&self) -> Vec<SubCommand> {
        // Also reachable as the top-level `ferrolab hcnn` (HyPHEN's own CLI name).
        vec![SubCommand {
            command: super::hcnn::command,
            run: super::hcnn::run_command,
        }]
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let r = &o.report;
        let mut lines = vec![];
        let mut row = |name: &str, m: &BTreeMap<String, f64>| {
            let lat = m
                .iter()
                .find(|(k, _)| k.starts_with("latency_seconds_resnet"))
                .map(|(k, v)| format!("{k} {v:.2}"))
                .unwrap_or_else(|| "not run encrypted".into());
            lines.push(format!(
                "{name:<13} rotations {:>6} bootstraps {:>3} agreement {:.3} acc {:.4} {lat}",
                m.get("rotations_total").copied().unwrap_or(f64::NAN),
                m.get("bootstraps_total").copied().unwrap_or(f64::NAN),
                m.get("agreement_top1").copied().unwrap_or(f64::NAN),
                m.get("plaintext_accuracy").copied().unwrap_or(f64::NAN),
            ));
        };
        row("hyphen", &r.metrics);
        for (k, m) in &r.baselines {
            row(k, m);
        }
        lines.extend(r.notes.iter().cloned());
        lines
    }
}

/// One packing of one network.
struct Row {
    name: &'static str,
    quad: bool,
    packing: Packing,
}

const ROWS: [Row; 3] = [
    Row {
        name: "hyphen",
        quad: true,
        packing: Packing::Hyphen,
    },
    Row {
        name: "mpconv",
        quad: false,
        packing: Packing::Mpconv,
    },
    Row {
        name: "mpconv_aespa",
        quad: true,
        packing: Packing::Mpconv,
    },
];

fn accuracy(preds: &[Vec<f64>], y: &[u8]) -> f64 {
    let ok = preds
        .iter()
        .zip(y)
        .filter(|(p, l)| argmax(p) == usize::from(**l))
        .count();
    ok as f64 / preds.len().max(1) as f64
}

fn per_layer(log: &[LayerRecord]) -> serde_json::Value {
    serde_json::Value::Array(
        log.iter()
            .map(|l| {
                serde_json::json!({
                    "layer": l.name, "kind": l.kind, "rotations": l.stats.rot_calls,
                    "key_switches": l.stats.key_switches(), "pmults": l.stats.pmult,
                    "cmults": l.stats.cmult, "bootstraps": l.stats.boot,
                    "level_after": l.level_after, "note": l.note,
                    "seconds_rotation": l.stats.t_rot, "seconds_mult": l.stats.t_mult,
                    "seconds_bootstrap": l.stats.t_boot,
                    "seconds_wall": l.wall_seconds, "seconds_cpu": l.cpu_seconds,
                })
            })
            .collect(),
    )
}

/// What a simulated row's count run leaves (a resumable unit).
#[derive(serde::Serialize, serde::Deserialize)]
struct SimCounts {
    stats: Stats,
    depth: usize,
    step_uses: BTreeMap<i64, u64>,
    rotation_keys: usize,
    per_layer: serde_json::Value,
    seconds: f64,
}

/// Top-1 agreement of one chunk of simulated images (a resumable unit).
#[derive(serde::Serialize, serde::Deserialize)]
struct Agreement {
    images: usize,
    agree: usize,
    max_err: f64,
}

/// One image run truly encrypted in one packing (a resumable unit).
#[derive(serde::Serialize, serde::Deserialize)]
struct EncResult {
    seconds: f64,
    cpu_seconds: f64,
    logits: Vec<f64>,
    plaintext_logits: Vec<f64>,
    stats: Stats,
    per_layer: serde_json::Value,
    eval_key_mb: f64,
    rotation_keys: usize,
    keygen_seconds: f64,
}

/// The client's keys and the server's evaluator of one encrypted leg.
struct Keyset {
    ctx: std::sync::Arc<Context>,
    pk: crate::PublicKey,
    enc: Encryptor,
    dec: Decryptor,
    ev: Evaluator,
    boot: Option<Bootstrapper>,
    key_mb: f64,
    rotation_keys: usize,
    keygen_seconds: f64,
    /// Level of a fresh input ciphertext.
    top: usize,
}

/// Rows run truly encrypted on one key set.
struct EncGroup<'r> {
    rows: Vec<&'r Row>,
    images: usize,
    chain: Option<crate::bootstrap::BootChain>,
}

/// Levels after a bootstrap for MPConv as published: AppReLU takes 14, a convolution one or
/// two (the 16-level N = 2^16 set).
const MPCONV_BOOT_LEVELS: usize = 16;

/// Simulated images per agreement unit (one unit stays well under ten minutes).
const SIM_CHUNK: usize = 100;

/// Measured time and counts of one layer kind, per image (mean over the encrypted images).
#[derive(Default)]
struct KindTime {
    kind: String,
    layers: f64,
    rotations: f64,
    key_switches: f64,
    pmults: f64,
    cmults: f64,
    bootstraps: f64,
    rotation_s: f64,
    mult_s: f64,
    bootstrap_s: f64,
    wall_s: f64,
    cpu_s: f64,
}

/// Sums each image's per-layer records by layer kind and divides by the images.
fn by_kind(rs: &[EncResult]) -> Vec<KindTime> {
    let mut out: Vec<KindTime> = vec![];
    let n = rs.len().max(1) as f64;
    for r in rs {
        for l in r
            .per_layer
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let kind = l["kind"].as_str().unwrap_or("?").to_string();
            let i = match out.iter().position(|k| k.kind == kind) {
                Some(i) => i,
                None => {
                    out.push(KindTime {
                        kind,
                        ..KindTime::default()
                    });
                    out.len() - 1
                }
            };
            let k = &mut out[i];
            let f = |key: &str| l[key].as_f64().unwrap_or(0.0) / n;
            k.layers += 1.0 / n;
            k.rotations += f("rotations");
            k.key_switches += f("key_switches");
            k.pmults += f("pmults");
            k.cmults += f("cmults");
            k.bootstraps += f("bootstraps");
            k.rotation_s += f("seconds_rotation");
            k.mult_s += f("seconds_mult");
            k.bootstrap_s += f("seconds_bootstrap");
            k.wall_s += f("seconds_wall");
            k.cpu_s += f("seconds_cpu");
        }
    }
    out
}

/// The measured per-layer-kind breakdown of the encrypted run: a Markdown table and a
/// stacked-bar SVG of CPU seconds per layer kind (one bar per packing).
fn breakdown(rows: &[(&str, Vec<KindTime>)]) -> (String, String) {
    let mut md = String::from(
        "Measured on the encrypted run, per image (mean over the encrypted images). Wall time \
         is split by operation timers (rotation / multiplication, encoding and addition / \
         bootstrapping); CPU is the process' CPU time per layer kind.\n\n\
         | row | kind | layers | rotations | key switches | pmults | cmults | bootstraps | rotation s | mult s | bootstrap s | wall s | CPU s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (row, kinds) in rows {
        for k in kinds {
            md.push_str(&format!(
                "| {row} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                k.kind, k.layers, k.rotations, k.key_switches, k.pmults, k.cmults, k.bootstraps,
                k.rotation_s, k.mult_s, k.bootstrap_s, k.wall_s, k.cpu_s
            ));
        }
        let total = |f: fn(&KindTime) -> f64| kinds.iter().map(f).sum::<f64>();
        md.push_str(&format!(
            "| **{row}** | **total** | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            total(|k| k.layers), total(|k| k.rotations), total(|k| k.key_switches),
            total(|k| k.pmults), total(|k| k.cmults), total(|k| k.bootstraps),
            total(|k| k.rotation_s), total(|k| k.mult_s), total(|k| k.bootstrap_s),
            total(|k| k.wall_s), total(|k| k.cpu_s)
        ));
    }
    let palette = [
        "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f",
    ];
    let mut kinds: Vec<&str> = vec![];
    for (_, ks) in rows {
        for k in ks {
            if !kinds.contains(&k.kind.as_str()) {
                kinds.push(&k.kind);
            }
        }
    }
    let max_t = rows
        .iter()
        .map(|(_, ks)| ks.iter().map(|k| k.cpu_s).sum::<f64>())
        .fold(1e-9, f64::max);
    let h = 40 + rows.len() * 55 + 20;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    for (i, (row, ks)) in rows.iter().enumerate() {
        let y = 20 + i * 55;
        let mut x = 120.0;
        svg.push_str(&format!("<text x=\"5\" y=\"{}\">{row}</text>\n", y + 20));
        for k in ks {
            let c = kinds.iter().position(|n| *n == k.kind).unwrap_or(0) % palette.len();
            let w = 560.0 * k.cpu_s / max_t;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"30\" fill=\"{}\"><title>{} {:.1} s</title></rect>\n",
                palette[c], k.kind, k.cpu_s
            ));
            x += w;
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\">{:.0} s CPU</text>\n",
            x + 4.0,
            y + 20,
            ks.iter().map(|k| k.cpu_s).sum::<f64>()
        ));
    }
    let mut x = 120.0;
    let y = h - 12;
    for (c, k) in kinds.iter().enumerate() {
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{y}\">{k}</text>\n",
            y - 9,
            palette[c % palette.len()],
            x + 14.0
        ));
        x += 14.0 + 8.0 * k.len() as f64 + 16.0;
    }
    svg.push_str("</svg>\n");
    (md, svg)
}

fn sim_input(
    sim: &Sim,
    net: &Net,
    geo: Geometry,
    p: Packing,
    x: &super::layout::Map,
    level: usize,
) -> Vec<super::backend::SimCt> {
    encode_input(net, geo, p, x)
        .into_iter()
        .map(|v| sim.encrypt(v, level))
        .collect()
}

/// Levels a fresh ciphertext starts at in `row`: the bootstrap's `lb`, and for the ReLU rows
/// the bootstrapping levels too (Lee et al. start at 30).
fn fresh_level(row: &Row, lb: usize) -> usize {
    if row.quad { lb } else { lb + 14 }
}

/// The simulator's slot count, geometry and options for `cfg`.
fn sim_setup(cfg: &HyphenConfig) -> (usize, Geometry, RunOptions) {
    let slots = 1usize << (cfg.fhe.log_n - 1);
    let geo = Geometry {
        n: slots,
        wr: cfg.data.side,
    };
    let opt = RunOptions {
        geo,
        cost: OpCost::default(),
    };
    (slots, geo, opt)
}

/// Refuses an `fhe.levels_after_boot` some layer cannot run on, before hours of training
/// find it: the levels a layer needs depend on the network's shape, not on its weights, so
/// untrained networks of the configured shape go through the simulator (on a blank image).
/// The error names the smallest value that fits every packing.
fn check_chain(cfg: &HyphenConfig) -> SysResult<()> {
    let (slots, geo, opt) = sim_setup(cfg);
    let side = cfg.data.side;
    let blank = super::layout::Map {
        c: 3,
        h: side,
        v: vec![0.0; 3 * side * side],
    };
    let nets: Vec<(bool, Net)> = [true, false]
        .into_iter()
        .map(|quad| {
            let arch = Arch {
                n: cfg.model.blocks_per_stage,
                width: cfg.model.width,
                quad,
                classes: 10,
            };
            (quad, super::train::untrained(arch, 0))
        })
        .collect();
    // The first layer that does not fit with `lb` levels after a bootstrap, if any.
    let short = |lb: usize| -> SysResult<Option<crate::FheError>> {
        for row in &ROWS {
            let Some((_, net)) = nets.iter().find(|(q, _)| *q == row.quad) else {
                continue;
            };
            let mut sim = Sim::new(slots, lb);
            let input = sim_input(&sim, net, geo, row.packing, &blank, fresh_level(row, lb));
            match run(&mut sim, net, row.packing, input, &opt) {
                Ok(_) => {}
                Err(e @ crate::FheError::ChainTooShort { .. }) => return Ok(Some(e)),
                Err(e) => return Err(runtime(e)),
            }
        }
        Ok(None)
    };
    let lb = cfg.fhe.levels_after_boot;
    let Some(first) = short(lb)? else {
        return Ok(());
    };
    // No value below a failing layer's need can fit it, so the search jumps to that need.
    let need_of = |e: &crate::FheError, at: usize| match e {
        crate::FheError::ChainTooShort { need, .. } => (*need).max(at + 1),
        _ => at + 1,
    };
    let mut fits = None;
    let mut at = need_of(&first, lb);
    while at <= MAX_LEVELS_AFTER_BOOT {
        match short(at)? {
            None => {
                fits = Some(at);
                break;
            }
            Some(e) => at = need_of(&e, at),
        }
    }
    let hint = match fits {
        Some(m) => format!("this network needs fhe.levels_after_boot ≥ {m}"),
        None => format!("no fhe.levels_after_boot up to {MAX_LEVELS_AFTER_BOOT} fits this network"),
    };
    Err(SystemError::usage(format!(
        "hyphen: fhe.levels_after_boot = {lb}: {first}; {hint}"
    )))
}

/// The largest `fhe.levels_after_boot` the configuration accepts.
const MAX_LEVELS_AFTER_BOOT: usize = 40;

fn runtime(e: crate::FheError) -> SystemError {
    SystemError::runtime(format!("hyphen: {e}"))
}

fn experiment(cfg: &HyphenConfig, ctx: &mut RunContext) -> SysResult<Outcome> {
    let t_all = Instant::now();
    let threads = ctx.threads();
    if cfg.fhe.encrypted_images_t2 > 0 && threads != 1 {
        return Err(SystemError::usage(format!(
            "fhe.encrypted_images_t2 = {} re-runs images on two threads beside a one-thread run: pass --threads 1 (this run has {threads}; its own encrypted images give _t{threads})",
            cfg.fhe.encrypted_images_t2
        )));
    }
    check_chain(cfg)?;
    let dir = ctx.dataset("fashion-mnist")?;
    let (train_set, test_set) = ferrolab_vision::data::load_fashion_mnist(&dir)?;
    let train_set = if cfg.data.train_limit > 0 {
        train_set.head(cfg.data.train_limit)
    } else {
        train_set
    };
    let test_set = if cfg.data.test_limit > 0 {
        test_set.head(cfg.data.test_limit)
    } else {
        test_set
    };
    let train_p = Prepared::new(&train_set, cfg.data.side);
    let test_p = Prepared::new(&test_set, cfg.data.side);
    let mut report = Report::new("hyphen", "fashion-mnist", ctx.seed());
    report.config = serde_json::to_value(cfg).unwrap_or_default();

    // Every step below is a unit (`units/<name>.json`): a run continued with `--resume`
    // skips the trained networks, the simulated rows and chunks, and each (image, packing)
    // already run encrypted; keys are made again only if an encrypted unit is left.
    // 1. The plaintext networks.
    let mut nets: BTreeMap<bool, (Net, f64, f64)> = BTreeMap::new();
    let test_idx: Vec<usize> = (0..test_p.x.len()).collect();
    for quad in [true, false] {
        let tag = if quad { "herpn" } else { "relu" };
        let saved_net: serde_json::Value = ctx.unit(&format!("net-{tag}"), |ctx| {
            let t = Instant::now();
            let arch = Arch {
                n: cfg.model.blocks_per_stage,
                width: cfg.model.width,
                quad,
                classes: 10,
            };
            let opt = TrainOptions {
                epochs: cfg.model.epochs,
                batch: cfg.model.batch,
                lr: cfg.model.lr,
                seed: ctx.seed_for(if quad { "train-herpn" } else { "train-relu" }),
            };
            let (model, loss): (PlainNet, f64) = train(arch, &train_p, &opt);
            if !loss.is_finite() {
                return Err(SystemError::runtime(format!(
                    "hyphen: training the {} network diverged (loss {loss})",
                    if quad { "HerPN" } else { "ReLU" }
                )));
            }
            let preds = predict(&model, &test_p, &test_idx);
            let acc = accuracy(&preds, &test_p.y);
            let net = model.fold();
            net.check().map_err(runtime)?;
            ctx.log_metrics(
                &serde_json::json!({"network": tag, "train_loss": loss, "test_accuracy": acc}),
            )?;
            Ok(serde_json::json!({
                "model": super::hcnn::model_to_json(&net), "accuracy": acc, "loss": loss,
                "seconds": t.elapsed().as_secs_f64(),
            }))
        })?;
        // The folded network as an `hcnn infer --model` checkpoint (and the resumed run's
        // network: the saved text is checked like any checkpoint).
        let path = ctx.run_dir().join(&format!("model_{tag}.json"));
        let text = saved_net["model"].as_str().unwrap_or_default();
        let net = super::hcnn::model_from_json(text, &path)?;
        super::hcnn::save_model(&path, &net)?;
        let num = |k: &str| saved_net[k].as_f64().unwrap_or(f64::NAN);
        report
            .timings
            .insert(format!("train_{tag}"), num("seconds"));
        nets.insert(quad, (net, num("accuracy"), num("loss")));
    }

    // 2. Counts, bootstrap placement and noisy agreement on the simulator.
    let (slots, geo, opt) = sim_setup(cfg);
    let lb = cfg.fhe.levels_after_boot;
    let n_sim = cfg.fhe.sim_images.min(test_p.x.len());
    let mut details = serde_json::Map::new();
    let mut metrics_of: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    let mut step_uses: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut depth_of: BTreeMap<&str, usize> = BTreeMap::new();
    let fresh_of = |row: &Row| fresh_level(row, lb);
    // Test image `i` through the noisy simulator: the same draw whenever it is asked for, so
    // an encrypted image can be set against the simulation of exactly that image.
    let noise_seed = ctx.seed_for("noise");
    let simulate = |row: &Row, i: usize| -> SysResult<Vec<f64>> {
        let (net, _, _) = &nets[&row.quad];
        let x = test_p.map(i);
        let mut s = Sim::new(slots, lb).with_noise(
            2f64.powf(cfg.fhe.noise_log2),
            2f64.powf(cfg.fhe.boot_noise_log2),
            noise_seed ^ i as u64,
        );
        let input = sim_input(&s, net, geo, row.packing, &x, fresh_of(row));
        let (o, pf, _) = run(&mut s, net, row.packing, input, &opt).map_err(runtime)?;
        let vs: Vec<Vec<f64>> = o.iter().map(|c| c.v.clone()).collect();
        Ok(logits(net, &pf, &vs))
    };
    for row in &ROWS {
        let (net, acc, _) = &nets[&row.quad];
        let fresh = fresh_of(row);
        let counts: SimCounts = ctx.unit(&format!("sim-{}", row.name), |_| {
            let t = Instant::now();
            let mut sim = Sim::new(slots, lb);
            let x0 = test_p.map(0);
            let input = sim_input(&sim, net, geo, row.packing, &x0, fresh);
            let (_, _, log) = run(&mut sim, net, row.packing, input, &opt).map_err(|e| {
                SystemError::runtime(format!("hyphen: {} on the simulator: {e}", row.name))
            })?;
            // Depth of the leveled (bootstrap-free) run: what the encrypted chain must hold.
            let big = 400;
            let mut deep = Sim::new(slots, big);
            let input = sim_input(&deep, net, geo, row.packing, &x0, big);
            let (out, _, _) = run(&mut deep, net, row.packing, input, &opt).map_err(runtime)?;
            Ok(SimCounts {
                stats: totals(&log),
                depth: big - deep.level(&out[0]),
                step_uses: deep.step_uses.clone(),
                rotation_keys: deep.steps.len(),
                per_layer: per_layer(&log),
                seconds: t.elapsed().as_secs_f64(),
            })
        })?;
        let t = Instant::now();
        let (mut agree, mut max_err) = (0usize, 0.0f64);
        for start in (0..n_sim).step_by(SIM_CHUNK) {
            let end = (start + SIM_CHUNK).min(n_sim);
            let chunk: Agreement = ctx.unit(&format!("sim-{}-{start}-{end}", row.name), |_| {
                let (mut agree, mut max_err) = (0usize, 0.0f64);
                for i in start..end {
                    let got = simulate(row, i)?;
                    let want = net.reference(&test_p.map(i));
                    agree += usize::from(argmax(&got) == argmax(&want));
                    for (a, b) in got.iter().zip(&want) {
                        max_err = max_err.max((a - b).abs());
                    }
                }
                Ok(Agreement {
                    images: end - start,
                    agree,
                    max_err,
                })
            })?;
            agree += chunk.agree;
            max_err = max_err.max(chunk.max_err);
        }
        let st = counts.stats;
        depth_of.insert(row.name, counts.depth);
        step_uses.insert(row.name, counts.step_uses);
        let mut m = BTreeMap::new();
        m.insert("plaintext_accuracy".to_string(), *acc);
        m.insert("rotations_total".to_string(), st.rot_calls as f64);
        m.insert(
            "key_switch_rotations_total".to_string(),
            st.key_switches() as f64,
        );
        m.insert("bootstraps_total".to_string(), st.boot as f64);
        m.insert("pmults_total".to_string(), st.pmult as f64);
        m.insert(
            "agreement_top1".to_string(),
            agree as f64 / n_sim.max(1) as f64,
        );
        m.insert("max_logit_error_sim".to_string(), max_err);
        m.insert("rotation_keys".to_string(), counts.rotation_keys as f64);
        metrics_of.insert(row.name, m);
        details.insert(
            row.name.to_string(),
            serde_json::json!({
                "per_layer_sim": counts.per_layer, "depth_leveled": counts.depth,
                "sim_seconds": counts.seconds + t.elapsed().as_secs_f64(),
            }),
        );
    }

    // Which sign polynomial the AppReLU rows used (it was a different one before session 36).
    let sign = super::act::app_sign();
    details.insert(
        "app_relu".to_string(),
        serde_json::json!({
            "kind": "composite minimax sign approximation (Lee et al.), Remez",
            "degrees": super::act::APP_SIGN_DEGREES, "eps": sign.eps, "margin": super::act::APP_SIGN_MARGIN,
            "sign_error": sign.error, "stage_errors": sign.stage_errors,
            "stage_bounds": sign.bounds, "input_bound": super::act::APP_RELU_B,
        }),
    );

    // 3. Truly encrypted. Group one: the HerPN network in both packings, interleaved per
    // image, on one key set. Group two (on request): MPConv as published, the ReLU network
    // with AppReLU, on its own bootstrapping set with 16 levels after a bootstrap (AppReLU
    // alone takes 14); its keys are made after group one's are dropped, since both sets at
    // N = 2^16 do not fit in memory together.
    let n_enc = cfg.fhe.encrypted_images.min(test_p.x.len());
    let n_mp = cfg.fhe.encrypted_mpconv_images.min(test_p.x.len());
    let mut groups: Vec<EncGroup> = vec![];
    if n_enc > 0 {
        groups.push(EncGroup {
            rows: ROWS
                .iter()
                .filter(|r| r.quad && (cfg.fhe.encrypted_baseline || r.name == "hyphen"))
                .collect(),
            images: n_enc,
            chain: if cfg.fhe.bootstrapping {
                Some(
                    crate::bootstrap::bench::chain_for(
                        cfg.fhe.log_n,
                        cfg.fhe.encrypted_boot_levels,
                        cfg.fhe.log_n < 16,
                    )
                    .map_err(runtime)?,
                )
            } else {
                None
            },
        });
    }
    if n_mp > 0 {
        groups.push(EncGroup {
            rows: ROWS.iter().filter(|r| r.name == "mpconv").collect(),
            images: n_mp,
            chain: Some(
                crate::bootstrap::bench::chain_for(
                    cfg.fhe.log_n,
                    MPCONV_BOOT_LEVELS,
                    cfg.fhe.log_n < 16,
                )
                .map_err(runtime)?,
            ),
        });
    }
    let mut results: BTreeMap<&str, Vec<EncResult>> = BTreeMap::new();
    let mut results_t2: BTreeMap<&str, Vec<EncResult>> = BTreeMap::new();
    let mut enc_rows: Vec<&Row> = vec![];
    for (g, group) in groups.iter().enumerate() {
        let depth = group
            .rows
            .iter()
            .map(|r| depth_of[r.name])
            .max()
            .unwrap_or(1);
        // Keys: powers of two plus the most used amounts of the group's packings (hyphen.md §3.6).
        let mut uses: BTreeMap<i64, u64> = BTreeMap::new();
        for r in &group.rows {
            for (&k, &c) in &step_uses[r.name] {
                *uses.entry(k).or_default() += c;
            }
        }
        let steps = key_steps(slots, &uses, cfg.fhe.extra_keys);
        let chain = &group.chain;
        let (spec, secure) = match chain {
            Some(c) => (c.spec(), !c.allow_insecure),
            None => {
                // One 41-bit prime on top makes the chain non-uniform, so Context anchors the
                // scale ladder at the bottom (Δ_l = √(Δ_{l−1}·q_l), errors halve going up);
                // the top-down rule for uniform chains (Δ_{l−1} = Δ_l²/q_l) doubles the
                // primes' distance from 2^40 at every level and overflows a ~30-level chain.
                let mut q_bits = vec![60];
                q_bits.extend(std::iter::repeat_n(40, depth.saturating_sub(1)));
                q_bits.push(41);
                let secure = crate::params::max_log_qp_128(1 << cfg.fhe.log_n)
                    .is_some_and(|m| (61 + 40 * depth + 60 * cfg.fhe.special_primes) as u32 <= m);
                (
                    ParamSpec {
                        log_n: cfg.fhe.log_n,
                        q_bits,
                        p_bits: vec![60; cfg.fhe.special_primes],
                        log_scale: 40,
                        allow_insecure: true,
                    },
                    secure,
                )
            }
        };
        let make_keys = || -> SysResult<Keyset> {
            let t = Instant::now();
            let ctx_fhe = Context::new(spec.clone()).map_err(runtime)?;
            // Client side: the secret key stays here; the server gets `ev` (evaluation keys).
            let h = crate::bootstrap::bench::SECRET_WEIGHT;
            let mut kg = if chain.is_some() {
                KeyGenerator::new_sparse(&ctx_fhe, h).map_err(runtime)?
            } else {
                KeyGenerator::new(&ctx_fhe).map_err(runtime)?
            };
            let pk = kg.public_key();
            let boot = match chain {
                Some(c) => Some(
                    Bootstrapper::new(&ctx_fhe, c.config(slots, SlotKind::Real, h))
                        .map_err(runtime)?,
                ),
                None => None,
            };
            let keys = super::hcnn::network_keys(&mut kg, boot.as_ref(), &steps);
            let rotation_keys = keys.galois.keys.len();
            let key_mb = keys.size_bytes() as f64 / (1 << 20) as f64;
            let dec = Decryptor::new(&ctx_fhe, kg.secret_key()).map_err(runtime)?;
            let enc = Encryptor::new(&ctx_fhe).map_err(runtime)?;
            let ev = Evaluator::new(&ctx_fhe, keys).map_err(runtime)?;
            // A bootstrapping chain's top primes belong to bootstrapping: a fresh ciphertext
            // starts where a bootstrap leaves one.
            let top = chain
                .as_ref()
                .map_or(ctx_fhe.max_level(), |c| c.levels_after);
            Ok(Keyset {
                ctx: ctx_fhe,
                pk,
                enc,
                dec,
                ev,
                boot,
                key_mb,
                rotation_keys,
                keygen_seconds: t.elapsed().as_secs_f64(),
                top,
            })
        };
        let mut keyset: Option<Keyset> = None;
        // Pass one at the run's thread count; pass two re-runs the first images on a
        // two-thread pool (same keys, the same images encrypted afresh), for `_t2`.
        let n_t2 = cfg.fhe.encrypted_images_t2.min(group.images);
        let pool2 = if n_t2 > 0 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .map_err(|e| SystemError::runtime(format!("hyphen: two-thread pool: {e}")))?,
            )
        } else {
            None
        };
        let passes = [
            (None, group.images, "enc"),
            (pool2.as_ref(), n_t2, "enc-t2"),
        ];
        for (pool, images, prefix) in passes {
            for i in 0..images {
                let x = test_p.map(i);
                // Alternate which packing goes first, so drift in machine load hits both.
                let order: Vec<&&Row> = if i % 2 == 0 {
                    group.rows.iter().collect()
                } else {
                    group.rows.iter().rev().collect()
                };
                for row in order {
                    let (net, _, _) = &nets[&row.quad];
                    let name = format!("{prefix}-{i}-{}", row.name);
                    if ctx.saved_unit::<EncResult>(&name).is_none() && keyset.is_none() {
                        let ks = make_keys()?;
                        ctx.log_metrics(&serde_json::json!({"keygen_seconds": ks.keygen_seconds, "eval_key_mb": ks.key_mb, "rotation_keys": ks.rotation_keys, "key_group": g}))?;
                        keyset = Some(ks);
                    }
                    let r: EncResult = ctx.unit(&name, |ctx| {
                    let ks = keyset.as_mut().ok_or_else(|| {
                        SystemError::runtime("hyphen: encrypted unit without keys".to_string())
                    })?;
                    let want = net.reference(&x);
                    let cts = encode_input(net, geo, row.packing, &x)
                        .iter()
                        .map(|v| {
                            let pt = ks.ctx.encode_real(v, ks.top, ks.ctx.scale_at(ks.top))?;
                            ks.enc.encrypt(&ks.pk, &pt)
                        })
                        .collect::<crate::Result<Vec<_>>>()
                        .map_err(runtime)?;
                    let mut be = Ckks::new(&ks.ev, ks.boot.as_ref());
                    let (t, cpu) = (Instant::now(), crate::bootstrap::bench::process_cpu_ms());
                    let (out, pf, log) = match pool {
                        Some(p) => p.install(|| run(&mut be, net, row.packing, cts, &opt)),
                        None => run(&mut be, net, row.packing, cts, &opt),
                    }
                    .map_err(runtime)?;
                    let cpu_seconds = (crate::bootstrap::bench::process_cpu_ms() - cpu) / 1e3;
                    let seconds = t.elapsed().as_secs_f64();
                    let vs = out
                        .iter()
                        .map(|c| {
                            ks.dec
                                .decrypt_decode(c)
                                .map(|v| v.iter().map(|z| z.re).collect::<Vec<f64>>())
                        })
                        .collect::<crate::Result<Vec<_>>>()
                        .map_err(runtime)?;
                    let got = logits(net, &pf, &vs);
                    let pool_threads = pool.map_or(threads, |p| p.current_num_threads());
                    ctx.log_metrics(&serde_json::json!({"encrypted": row.name, "image": i, "threads": pool_threads, "seconds": seconds, "cpu_seconds": cpu_seconds, "logits": got, "plaintext_logits": want}))?;
                    Ok(EncResult {
                        seconds,
                        cpu_seconds,
                        logits: got,
                        plaintext_logits: want,
                        stats: *be.stats(),
                        per_layer: per_layer(&log),
                        eval_key_mb: ks.key_mb,
                        rotation_keys: ks.rotation_keys,
                        keygen_seconds: ks.keygen_seconds,
                    })
                })?;
                    let into = if pool.is_some() {
                        &mut results_t2
                    } else {
                        &mut results
                    };
                    into.entry(row.name).or_default().push(r);
                }
            }
        }
        drop(keyset);
        let first = group
            .rows
            .iter()
            .find_map(|r| results.get(r.name).and_then(|v| v.first()));
        // Keyed by what ran, not by position: a run of MPConv alone still fills
        // `encrypted_mpconv`.
        let hyphen_group = group.rows.iter().any(|r| r.name == "hyphen");
        if let Some(r) = first {
            let key = if hyphen_group {
                "keygen"
            } else {
                "keygen_mpconv"
            };
            report.timings.insert(key.into(), r.keygen_seconds);
        }
        let names = group.rows.iter().map(|r| r.name).collect::<Vec<_>>();
        details.insert(
            if hyphen_group { "encrypted" } else { "encrypted_mpconv" }.into(),
            serde_json::json!({
                "rows": names,
                "log_n": cfg.fhe.log_n, "levels": depth, "special_primes": cfg.fhe.special_primes,
                "secure": secure, "rotation_keys": first.map_or(0, |r| r.rotation_keys),
                "network_key_steps": steps,
                "eval_key_mb": first.map_or(f64::NAN, |r| r.eval_key_mb),
                "keygen_seconds": first.map_or(f64::NAN, |r| r.keygen_seconds),
                "images": group.images, "bootstrapping": chain.is_some(),
                "levels_after_bootstrap": chain.as_ref().map(|c| c.levels_after), "threads": threads,
            }),
        );
        let names = names.join(", ");
        report.notes.push(match (secure, chain) {
            (true, Some(c)) => {
                let sp = c.spec();
                format!(
                    "encrypted run ({names}): N = 2^{}, bootstrapping chain with {} levels after a bootstrap (sparse secret h = 192, nominal log QP {}); 128-bit secure as documented",
                    cfg.fhe.log_n,
                    c.levels_after,
                    sp.q_bits.iter().chain(&sp.p_bits).map(|&b| u64::from(b)).sum::<u64>()
                )
            }
            (true, None) => format!(
                "encrypted run ({names}): N = 2^{}, leveled, {depth} levels; 128-bit secure as documented",
                cfg.fhe.log_n
            ),
            (false, _) => format!(
                "encrypted run ({names}): N = 2^{} ({}) is NOT 128-bit secure (insecure test parameters, flagged); latency ratios are meaningful, absolute figures are not those of a secure set",
                cfg.fhe.log_n,
                if chain.is_some() {
                    "insecure bootstrapping test chain".to_string()
                } else {
                    format!("leveled, {depth} levels")
                }
            ),
        });
        enc_rows.extend(group.rows.iter().copied());
    }
    if !enc_rows.is_empty() {
        use ferrolab_core::metrics::median;
        let depth_name = nets[&true].0.depth();
        let mut kinds_of: Vec<(&str, Vec<KindTime>)> = vec![];
        let mut cpu_of: BTreeMap<&str, f64> = BTreeMap::new();
        for row in &enc_rows {
            let rs = results.remove(row.name).unwrap_or_default();
            kinds_of.push((row.name, by_kind(&rs)));
            let walls: Vec<f64> = rs.iter().map(|r| r.seconds).collect();
            let cpus: Vec<f64> = rs.iter().map(|r| r.cpu_seconds).collect();
            let (mut err, mut agree) = (0.0f64, 0usize);
            let mut st = Stats::default();
            for r in &rs {
                for (a, b) in r.logits.iter().zip(&r.plaintext_logits) {
                    err = err.max((a - b).abs());
                }
                agree += usize::from(argmax(&r.logits) == argmax(&r.plaintext_logits));
                st.add(&r.stats);
            }
            // The check of the simulator: each encrypted image against the noisy
            // simulation of that same image (two independent noise draws; the simulated one is
            // set pessimistically, so it dominates the difference).
            let (mut err_sim, mut agree_sim) = (0.0f64, 0usize);
            for (i, r) in rs.iter().enumerate() {
                let sim = simulate(row, i)?;
                for (a, b) in r.logits.iter().zip(&sim) {
                    err_sim = err_sim.max((a - b).abs());
                }
                agree_sim += usize::from(argmax(&r.logits) == argmax(&sim));
            }
            let n = rs.len().max(1) as f64;
            if !rs.is_empty() {
                report.notes.push(format!(
                    "{}: encrypted vs simulated logits of the same {} images: max difference {err_sim:.1e} (bound 1e-2), top-1 equal on {agree_sim}",
                    row.name,
                    rs.len()
                ));
            }
            cpu_of.insert(row.name, median(&cpus));
            if let Some(m) = metrics_of.get_mut(row.name) {
                m.insert(
                    format!("latency_seconds_resnet{depth_name}_t{threads}"),
                    median(&walls),
                );
                // Process CPU time of the same runs: what a quiet machine's wall time would be
                // at one thread (at two threads it is the sum over both cores).
                m.insert(
                    format!("cpu_seconds_resnet{depth_name}_t{threads}"),
                    median(&cpus),
                );
                m.insert("agreement_top1_encrypted".into(), agree as f64 / n);
                m.insert("max_logit_error".into(), err);
                m.insert("max_logit_error_vs_sim".into(), err_sim);
                m.insert(
                    "agreement_top1_encrypted_vs_sim".into(),
                    agree_sim as f64 / n,
                );
                m.insert(
                    "eval_key_mb".into(),
                    rs.first().map_or(f64::NAN, |r| r.eval_key_mb),
                );
                m.insert("bootstraps_encrypted".into(), st.boot as f64 / n);
                m.insert(
                    "key_switches_encrypted".into(),
                    st.key_switches() as f64 / n,
                );
            }
            let rs2 = results_t2.remove(row.name).unwrap_or_default();
            if !rs2.is_empty() {
                let walls2: Vec<f64> = rs2.iter().map(|r| r.seconds).collect();
                let cpus2: Vec<f64> = rs2.iter().map(|r| r.cpu_seconds).collect();
                // Same keys and operations on a fresh encryption of the same image: the logits
                // differ from the one-thread run's by encryption noise only.
                let diff = rs2
                    .iter()
                    .zip(&rs)
                    .flat_map(|(a, b)| a.logits.iter().zip(&b.logits))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f64, f64::max);
                if let Some(m) = metrics_of.get_mut(row.name) {
                    m.insert(
                        format!("latency_seconds_resnet{depth_name}_t2"),
                        median(&walls2),
                    );
                    m.insert(format!("cpu_seconds_resnet{depth_name}_t2"), median(&cpus2));
                }
                if let Some(serde_json::Value::Object(d)) = details.get_mut(row.name) {
                    d.insert(
                        "encrypted_t2".into(),
                        serde_json::json!({
                            "seconds_per_image": walls2, "cpu_seconds_per_image": cpus2,
                            "max_logit_difference_to_t1": diff,
                        }),
                    );
                }
                report.notes.push(format!(
                    "{}: two threads {:.1} s vs one thread {:.1} s wall per image (median, {} vs {} images; {:.2}x), logits equal to the one-thread run's within {diff:.1e}",
                    row.name,
                    median(&walls2),
                    median(&walls),
                    rs2.len(),
                    rs.len(),
                    median(&walls) / median(&walls2)
                ));
            }
            if let Some(serde_json::Value::Object(d)) = details.get_mut(row.name) {
                d.insert(
                    "encrypted".into(),
                    serde_json::json!({
                        "seconds_per_image": walls, "cpu_seconds_per_image": cpus,
                        "seconds_rotation": st.t_rot / n,
                        "seconds_mult": st.t_mult / n,
                        "seconds_bootstrap": st.t_boot / n,
                        "composed_rotation_hops": st.rot_extra as f64 / n,
                        "per_layer_image0": rs.first().map_or(serde_json::Value::Null, |r| r.per_layer.clone()),
                    }),
                );
            }
        }
        let (md, svg) = breakdown(&kinds_of);
        for (name, text) in [("breakdown.md", md), ("breakdown.svg", svg)] {
            let path = ctx.run_dir().join(name);
            std::fs::write(&path, text).map_err(|e| {
                SystemError::runtime(format!("hyphen: writing {}: {e}", path.display()))
            })?;
        }
        for base in ["mpconv", "mpconv_aespa"] {
            if let (Some(h), Some(b)) = (cpu_of.get("hyphen"), cpu_of.get(base)) {
                report.notes.push(format!(
                    "encrypted CPU seconds per image (median): hyphen {h:.1} vs {base} {b:.1}, {:.2}x",
                    b / h
                ));
            }
        }
    }
    if n_mp == 0 {
        report.notes.push(
            "mpconv (AppReLU, ReLU-trained network) is counted and simulated only in this run (fhe.encrypted_mpconv_images = 0)".into(),
        );
    }
    if n_enc > 0 && !cfg.fhe.encrypted_baseline {
        report.notes.push(
            "mpconv_aespa is counted and simulated only in this run (fhe.encrypted_baseline = false)".into(),
        );
    }
    let rss = crate::bootstrap::bench::peak_rss_bytes() as f64 / (1 << 20) as f64;
    for (name, mut m) in metrics_of {
        m.insert("peak_rss_mb".into(), rss);
        if name == "hyphen" {
            report.metrics = m;
        } else {
            report.baselines.insert(name.to_string(), m);
        }
    }
    if let (Some(h), Some(b)) = (
        report.metrics.get("rotations_total"),
        report
            .baselines
            .get("mpconv")
            .and_then(|m| m.get("rotations_total")),
    ) {
        report.notes.push(format!(
            "rotations: HyPHEN {h} vs MPConv {b} ({:.2}x fewer) at N = 2^{}, {}x{} raster, {lb} levels after bootstrap",
            b / h.max(1.0),
            cfg.fhe.log_n,
            cfg.data.side,
            cfg.data.side
        ));
    }
    report.details = serde_json::Value::Object(details);
    report
        .timings
        .insert("total".into(), t_all.elapsed().as_secs_f64());
    Ok(Outcome {
        report,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(conv_cpu: f64, boot_cpu: f64) -> EncResult {
        EncResult {
            seconds: 0.0,
            cpu_seconds: conv_cpu + boot_cpu,
            logits: vec![],
            plaintext_logits: vec![],
            stats: Stats::default(),
            per_layer: serde_json::json!([
                {"kind": "conv", "rotations": 10, "key_switches": 12, "pmults": 40, "cmults": 0,
                 "bootstraps": 0, "seconds_rotation": 1.0, "seconds_mult": 2.0,
                 "seconds_bootstrap": 0.0, "seconds_wall": 3.0, "seconds_cpu": conv_cpu},
                {"kind": "bootstrap", "rotations": 0, "key_switches": 0, "pmults": 0, "cmults": 0,
                 "bootstraps": 1, "seconds_rotation": 0.0, "seconds_mult": 0.0,
                 "seconds_bootstrap": 5.0, "seconds_wall": 5.0, "seconds_cpu": boot_cpu},
                {"kind": "conv", "rotations": 6, "key_switches": 6, "pmults": 20, "cmults": 0,
                 "bootstraps": 0, "seconds_rotation": 0.5, "seconds_mult": 1.0,
                 "seconds_bootstrap": 0.0, "seconds_wall": 1.5, "seconds_cpu": conv_cpu},
            ]),
            eval_key_mb: 0.0,
            rotation_keys: 0,
            keygen_seconds: 0.0,
        }
    }

    #[test]
    fn breakdown_sums_layers_by_kind_and_averages_images() {
        let ks = by_kind(&[image(1.0, 4.0), image(3.0, 6.0)]);
        assert_eq!(ks.len(), 2);
        let conv = &ks[0];
        assert_eq!(conv.kind, "conv");
        // Two conv layers per image, two images: per image 2 layers, 16 rotations, and CPU
        // (1 + 1 + 3 + 3) / 2 = 4.
        assert!((conv.layers - 2.0).abs() < 1e-12);
        assert!((conv.rotations - 16.0).abs() < 1e-12);
        assert!((conv.key_switches - 18.0).abs() < 1e-12);
        assert!((conv.cpu_s - 4.0).abs() < 1e-12);
        assert!((ks[1].cpu_s - 5.0).abs() < 1e-12);
        assert!((ks[1].bootstraps - 1.0).abs() < 1e-12);
        let (md, svg) = breakdown(&[
            ("hyphen", ks),
            ("mpconv_aespa", by_kind(&[image(8.0, 1.0)])),
        ]);
        assert!(
            md.contains("| **hyphen** | **total** | 3 | 16 | 18 | 60 | 0 | 1 |"),
            "{md}"
        );
        assert!(md.contains("| 9.5 | 9.0 |\n"), "{md}");
        assert!(md.contains("| 9.5 | 17.0 |\n"), "{md}");
        // One bar per packing: the longer (mpconv_aespa, 17 s CPU) spans the full width.
        assert_eq!(svg.matches("<rect").count(), 4 + 2);
        assert!(svg.contains("17 s CPU") && svg.contains("9 s CPU"), "{svg}");
    }

    /// A chain some layer cannot run on is refused before any training (a usage error), and
    /// the smallest value it names is the one that fits.
    #[test]
    fn too_short_a_chain_is_refused_before_training_with_the_value_that_fits() {
        let with = |lb: usize| {
            let set = vec![format!("fhe.levels_after_boot={lb}")];
            let cfg =
                ferrolab_core::system::resolve_config(&HyphenSystem, Some("quick"), None, &set)
                    .unwrap();
            check_chain(cfg.get())
        };
        let e = with(3).unwrap_err();
        assert_eq!(e.class(), ferrolab_core::ErrorClass::Usage, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("fhe.levels_after_boot = 3") && msg.contains("too short"),
            "{msg}"
        );
        let need: usize = msg
            .rsplit("needs fhe.levels_after_boot ≥ ")
            .next()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no value named: {msg}"));
        assert!(need > 3 && need <= MAX_LEVELS_AFTER_BOOT, "{need}");
        assert!(with(need).is_ok());
        assert!(with(need - 1).is_err());
        // The quick preset's own value fits.
        let cfg =
            ferrolab_core::system::resolve_config(&HyphenSystem, Some("quick"), None, &[]).unwrap();
        assert!(check_chain(cfg.get()).is_ok());
    }
}
