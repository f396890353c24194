//! `ferrolab layer-importance probe`: named layers of one trained member of a run folder under
//! chosen perturbations — the accuracy on the run's evaluation images and the drop from the
//! unperturbed model. The operators, the cached-stage evaluation and the bit-flip seeds are
//! the ground-truth sweep's ([`crate::dataset`]), so a probe at a setting of the run's grid
//! repeats the value `dataset.json` holds; settings outside the grid are measured the same
//! way. The run folder is only read.

use crate::config::LayerImportanceConfig;
use crate::dataset;
use crate::experiment::{self, members};
use crate::ops::{self, Int8Layer, LayerWeights, OpError};
use crate::train::EvalSet;
use crate::zoo::{LayerParams, ZooNet};
use ferrolab_core::{SysResult, SystemError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One perturbation of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perturbation {
    /// Unstructured magnitude pruning at this sparsity.
    Prune(f64),
    /// Channel (L1) pruning at this sparsity.
    PruneChannels(f64),
    /// Per-channel fake quantisation to this many bits (batch norm folded).
    Bits(u32),
    /// This many random bit flips in the layer's int8 storage.
    Flips(u64),
    /// Every stored bit flips with this probability.
    Ber(f64),
}

impl Perturbation {
    /// The dataset family it belongs to (`dataset::FAMILIES`).
    pub fn family(&self) -> &'static str {
        match self {
            Perturbation::Prune(_) => "prune",
            Perturbation::PruneChannels(_) => "prune_structured",
            Perturbation::Bits(_) => "quant",
            Perturbation::Flips(_) => "flip_count",
            Perturbation::Ber(_) => "flip_rate",
        }
    }

    /// The setting as the dataset's keys write it (`s0.5`, `b4`, `m10`, `ber0.0001`).
    pub fn setting(&self) -> String {
        match *self {
            Perturbation::Prune(s) | Perturbation::PruneChannels(s) => format!("s{s}"),
            Perturbation::Bits(b) => format!("b{b}"),
            Perturbation::Flips(m) => dataset::flip_label(Some(m), None),
            Perturbation::Ber(r) => dataset::flip_label(None, Some(r)),
        }
    }

    /// Refuses a value the operator does not take (the flag's own range).
    pub fn check(&self) -> Result<(), OpError> {
        match *self {
            Perturbation::Prune(s) | Perturbation::PruneChannels(s) => ops::check_sparsity(s),
            Perturbation::Bits(b) => ops::check_bits(b),
            // Zero flips (or rate 0) measure the int8 storage alone.
            Perturbation::Flips(_) => Ok(()),
            Perturbation::Ber(r) => {
                if (0.0..=1.0).contains(&r) {
                    Ok(())
                } else {
                    Err(OpError::Rate(r))
                }
            }
        }
    }

    fn random(&self) -> bool {
        matches!(self, Perturbation::Flips(_) | Perturbation::Ber(_))
    }

    /// Layer `l`'s weights under draw `r` (`seed` is the member's probe seed).
    fn weights(
        &self,
        orig: &LayerWeights,
        stored: &Int8Layer,
        seed: u64,
        l: usize,
        r: usize,
    ) -> Result<Vec<f32>, OpError> {
        let flipped = |pos: Vec<u64>| {
            let mut c = stored.clone();
            c.flip(&pos);
            c.dequantize(orig)
        };
        let label = self.setting();
        match *self {
            Perturbation::Prune(s) => ops::magnitude_prune(&orig.weight, s),
            Perturbation::PruneChannels(s) => ops::channel_prune(orig, s),
            Perturbation::Bits(b) => ops::fake_quantize(orig, b),
            Perturbation::Flips(m) => Ok(flipped(ops::flip_positions_count(
                stored.bits(),
                m,
                dataset::flip_seed(seed, l, &label, r),
            ))),
            Perturbation::Ber(rate) => Ok(flipped(ops::flip_positions_rate(
                stored.bits(),
                rate,
                dataset::flip_seed(seed, l, &label, r),
            )?)),
        }
    }
}

/// One measured (layer, perturbation).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    pub layer: String,
    pub params: usize,
    pub family: &'static str,
    pub setting: String,
    /// Mean accuracy over the draws.
    pub accuracy: f64,
    /// Mean drop from the unperturbed accuracy (the dataset's `drops` value).
    pub drop: f64,
    /// Spread of the drop over the draws (population std; 0 for one draw).
    pub drop_std: f64,
    /// Mean of drop / ‖W̃ − W‖₂ (the dataset's `normalized` value; 0 where W̃ = W).
    pub normalized_drop: f64,
    pub draws: usize,
}

/// Probes `layers` of `model` under every perturbation (`flip_seeds` draws for the bit-flip
/// ones, seeded from `seed` as the sweep seeds them). Each layer starts from the activations
/// entering its stage and is written back bit for bit afterwards. Returns the unperturbed
/// accuracy and one row per (layer, perturbation), layers in the order given.
pub fn probe_layers(
    model: &mut ZooNet,
    eval: &EvalSet,
    layers: &[usize],
    perturbations: &[Perturbation],
    seed: u64,
    flip_seeds: usize,
) -> Result<(f64, Vec<ProbeRow>), OpError> {
    for p in perturbations {
        p.check()?;
    }
    let names = model.layer_names();
    let base = eval.accuracy(model);
    let mut rows = Vec::new();
    for &l in layers {
        let Some(name) = names.get(l) else {
            return Err(OpError::Layer(format!("#{l}")));
        };
        let stage = model.stage_of(l);
        let acts = eval.activations(model, stage);
        let orig = model.layer(l);
        let stored = Int8Layer::store(&orig);
        for p in perturbations {
            let draws = if p.random() { flip_seeds.max(1) } else { 1 };
            let (mut accs, mut drops, mut norms) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..draws {
                let w = p.weights(&orig, &stored, seed, l, r);
                let w = match w {
                    Ok(w) => w,
                    Err(e) => {
                        model.set_layer_weight(l, &orig.weight);
                        return Err(e);
                    }
                };
                model.set_layer_weight(l, &w);
                let acc = eval.accuracy_from(model, stage, &acts);
                let change = ops::l2_diff(&w, &orig.weight);
                accs.push(acc);
                drops.push(base - acc);
                norms.push(if change > 0.0 {
                    (base - acc) / change
                } else {
                    0.0
                });
            }
            model.set_layer_weight(l, &orig.weight);
            let n = draws as f64;
            let drop = drops.iter().sum::<f64>() / n;
            rows.push(ProbeRow {
                layer: name.clone(),
                params: orig.weight.len(),
                family: p.family(),
                setting: p.setting(),
                accuracy: accs.iter().sum::<f64>() / n,
                drop,
                drop_std: (drops.iter().map(|d| (d - drop).powi(2)).sum::<f64>() / n).sqrt(),
                normalized_drop: norms.iter().sum::<f64>() / n,
                draws,
            });
        }
    }
    Ok((base, rows))
}

/// The clap command.
pub fn command() -> clap::Command {
    let many = |id: &'static str, value: &'static str, help: &'static str| {
        clap::Arg::new(id)
            .long(id)
            .value_name(value)
            .action(clap::ArgAction::Append)
            // `--prune -0.25` is a value out of range (named as such), not an unknown flag.
            .allow_negative_numbers(true)
            .help(help)
    };
    clap::Command::new("probe")
        .about(
            "Perturb named layers of one trained member of a run folder and print the accuracy \
             drop per layer and setting (tab-separated); reads the run, writes nothing",
        )
        .arg(
            clap::Arg::new("run")
                .long("run")
                .value_name("DIR")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("A folder written by `ferrolab layer-importance` (finished, or DIR.incomplete)"),
        )
        .arg(
            clap::Arg::new("model")
                .long("model")
                .value_name("ID")
                .required(true)
                .help("The zoo member, e.g. resnet20-s0 (its models/ID.safetensors)"),
        )
        .arg(many(
            "layer",
            "NAME",
            "A layer to probe, e.g. block3.conv1 (repeatable; default: every layer)",
        ))
        .arg(
            many("prune", "S", "Magnitude pruning at sparsity S in [0, 1) (repeatable)")
                .value_parser(clap::value_parser!(f64)),
        )
        .arg(
            many("prune-channels", "S", "Channel (L1) pruning at sparsity S in [0, 1) (repeatable)")
                .value_parser(clap::value_parser!(f64)),
        )
        .arg(
            many("bits", "B", "Per-channel fake quantisation to B bits, 2..=8 (repeatable)")
                .value_parser(clap::value_parser!(u32)),
        )
        .arg(
            many("flips", "M", "M random bit flips in the layer's int8 storage (0: the int8 storage alone; repeatable)")
                .value_parser(clap::value_parser!(u64)),
        )
        .arg(
            many("ber", "R", "Bit flips at bit-error rate R in [0, 1] (repeatable)")
                .value_parser(clap::value_parser!(f64)),
        )
        .arg(
            clap::Arg::new("flip-seeds")
                .long("flip-seeds")
                .value_name("N")
                .value_parser(clap::value_parser!(usize))
                .help("Draws per bit-flip setting, 1..=1000 (default: the run's grid.flip_seeds)"),
        )
        .arg(
            clap::Arg::new("data-dir")
                .long("data-dir")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Folder holding the real datasets (as for the run)"),
        )
        .arg(ferrolab_core::system::threads_arg())
        .after_help(
            "At least one of --prune, --prune-channels, --bits, --flips, --ber. Columns: layer, \
             params, family, setting, accuracy, drop, drop_std, normalized_drop, draws; the \
             unperturbed accuracy goes to stderr. A setting of the run's grid gives the value \
             its dataset.json holds (same operators, evaluation images and flip seeds).",
        )
}

fn usage(msg: impl Into<String>) -> SystemError {
    SystemError::usage(msg.into())
}

/// The perturbations the flags ask for, each checked (exit 2 naming the flag).
pub fn perturbations(m: &clap::ArgMatches) -> SysResult<Vec<Perturbation>> {
    fn all<T: Clone + Send + Sync + 'static>(m: &clap::ArgMatches, id: &str) -> Vec<T> {
        m.get_many::<T>(id)
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    }
    let mut out = Vec::new();
    let flagged = |flag: &str, p: Perturbation, v: String| -> SysResult<Perturbation> {
        p.check().map_err(|e| usage(format!("--{flag} {v}: {e}")))?;
        Ok(p)
    };
    for s in all::<f64>(m, "prune") {
        out.push(flagged("prune", Perturbation::Prune(s), s.to_string())?);
    }
    for s in all::<f64>(m, "prune-channels") {
        out.push(flagged(
            "prune-channels",
            Perturbation::PruneChannels(s),
            s.to_string(),
        )?);
    }
    for b in all::<u32>(m, "bits") {
        out.push(flagged("bits", Perturbation::Bits(b), b.to_string())?);
    }
    for c in all::<u64>(m, "flips") {
        out.push(flagged("flips", Perturbation::Flips(c), c.to_string())?);
    }
    for r in all::<f64>(m, "ber") {
        out.push(flagged("ber", Perturbation::Ber(r), r.to_string())?);
    }
    if out.is_empty() {
        return Err(usage(
            "probe needs at least one of --prune, --prune-channels, --bits, --flips, --ber",
        ));
    }
    // A setting given twice is measured once.
    let mut unique: Vec<Perturbation> = Vec::with_capacity(out.len());
    for p in out {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    Ok(unique)
}

/// The run's resolved configuration and master seed (errors are usage errors naming the file).
pub fn run_settings(dir: &Path) -> SysResult<(LayerImportanceConfig, u64)> {
    if !dir.is_dir() {
        return Err(usage(format!("--run {}: not a folder", dir.display())));
    }
    let cfg_path = dir.join("config.toml");
    if !cfg_path.is_file() {
        return Err(usage(format!(
            "--run {}: no config.toml (not a layer-importance run folder)",
            dir.display()
        )));
    }
    let cfg: LayerImportanceConfig =
        ferrolab_core::config::load(Some(&cfg_path), &[]).map_err(|e| usage(e.to_string()))?;
    let seed_path = dir.join("seed.txt");
    let text = std::fs::read_to_string(&seed_path)
        .map_err(|e| usage(format!("{}: {e}", seed_path.display())))?;
    let seed = text.trim().parse::<u64>().map_err(|_| {
        let shown: String = text.trim().chars().take(40).collect();
        usage(format!(
            "{}: not a seed ({shown:?}); the folder is damaged",
            seed_path.display()
        ))
    })?;
    Ok((cfg, seed))
}

/// Runs it: every flag, the run folder, the member, its layers and its checkpoint are checked
/// before the evaluation images are loaded; rows are printed once every probe has run.
pub fn run(m: &clap::ArgMatches) -> SysResult<()> {
    let perts = perturbations(m)?;
    let flip_seeds_flag = m.get_one::<usize>("flip-seeds").copied();
    if let Some(n) = flip_seeds_flag
        && !(1..=1000).contains(&n)
    {
        return Err(usage(format!("--flip-seeds {n}: outside 1..=1000")));
    }
    ferrolab_core::backend::try_init_threads(m.get_one::<usize>("threads").copied())?;
    let data_dir = ferrolab_core::system::data_dir_arg(m)?;
    let Some(dir) = m.get_one::<PathBuf>("run") else {
        return Err(usage("probe needs --run DIR"));
    };
    let Some(id) = m.get_one::<String>("model") else {
        return Err(usage("probe needs --model ID"));
    };
    let (cfg, master) = run_settings(dir)?;
    let zoo = members(&cfg, master);
    let Some(member) = zoo.iter().find(|z| &z.id == id) else {
        let ids: Vec<&str> = zoo.iter().map(|z| z.id.as_str()).collect();
        if cfg.zoo.cross_domain.contains(id) {
            return Err(usage(format!(
                "--model {id}: a cross-domain member (trained in the run, no checkpoint kept); probe takes the zoo's members: {}",
                ids.join(", ")
            )));
        }
        return Err(usage(format!(
            "--model {id}: not a member of this run (members: {})",
            ids.join(", ")
        )));
    };
    let ckpt = dir.join("models").join(format!("{id}.safetensors"));
    if !ckpt.is_file() {
        let why = if ckpt.exists() {
            "not a file"
        } else {
            "missing (the run has not trained this member yet)"
        };
        return Err(usage(format!(
            "{}: {id}'s checkpoint is {why}",
            ckpt.display()
        )));
    }
    let dev = ferrolab_core::backend::device();
    let net = member.spec.build(&dev).map_err(usage)?;
    let names = net.layer_names();
    let layers: Vec<usize> = match m.get_many::<String>("layer") {
        None => (0..names.len()).collect(),
        Some(v) => v
            .map(|n| {
                net.find_layer(n).map_err(|e| {
                    usage(format!(
                        "--layer {n}: {e} in {id} (layers: {})",
                        names.join(", ")
                    ))
                })
            })
            .collect::<SysResult<Vec<usize>>>()?
            .into_iter()
            .fold(Vec::new(), |mut v, l| {
                // A layer named twice is probed once.
                if !v.contains(&l) {
                    v.push(l);
                }
                v
            }),
    };
    let mut net = ferrolab_core::run::load_checkpoint(net, &ckpt)
        .map_err(|e| usage(ferrolab_core::run::first_line(&e.to_string())))?;
    let data = experiment::load(&cfg, data_dir)?;
    let eval = EvalSet::new(&data.eval, data.norm, cfg.data.eval_batch);
    let flip_seeds = flip_seeds_flag.unwrap_or(cfg.grid.flip_seeds);
    let (base, rows) = probe_layers(&mut net, &eval, &layers, &perts, member.seed, flip_seeds)
        .map_err(|e| usage(e.to_string()))?;
    eprintln!(
        "layer-importance probe: {id} unperturbed accuracy {base:.4} on {} evaluation images",
        eval.labels.len()
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut text = String::from(
        "layer\tparams\tfamily\tsetting\taccuracy\tdrop\tdrop_std\tnormalized_drop\tdraws\n",
    );
    for r in &rows {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{:.4}\t{:.4}\t{:.4}\t{:.6}\t{}\n",
            r.layer,
            r.params,
            r.family,
            r.setting,
            r.accuracy,
            r.drop,
            r.drop_std,
            r.normalized_drop,
            r.draws
        ));
    }
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        return ferrolab_core::system::stdout_closed(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::zoo::{ZooSpec, snapshot};
    use ferrolab_vision::data::{self as vdata, Normalization};

    fn tiny() -> (ZooNet, EvalSet) {
        let dev = ferrolab_core::backend::device();
        let net = ZooSpec {
            arch: "resnet8".into(),
            width: 0.25,
            classes: 10,
            side: 28,
        }
        .build(&dev)
        .unwrap();
        let set = vdata::synthetic(64, 28, 7);
        let eval = EvalSet::new(&set, Normalization::of(&set), 32);
        (net, eval)
    }

    #[test]
    fn every_probe_restores_the_model_bit_for_bit_and_repeats_itself() {
        let (mut net, eval) = tiny();
        let before = snapshot(&net);
        let perts = [
            Perturbation::Prune(0.75),
            Perturbation::PruneChannels(0.5),
            Perturbation::Bits(2),
            Perturbation::Flips(50),
            Perturbation::Ber(0.01),
        ];
        let layers: Vec<usize> = (0..net.layer_names().len()).collect();
        let (base, rows) = probe_layers(&mut net, &eval, &layers, &perts, 3, 3).unwrap();
        assert_eq!(snapshot(&net), before);
        assert_eq!(rows.len(), layers.len() * perts.len());
        assert_eq!(base, eval.accuracy(&net));
        for r in &rows {
            assert!((r.drop - (base - r.accuracy)).abs() < 1e-12, "{r:?}");
            let random = r.family.starts_with("flip");
            assert_eq!(r.draws, if random { 3 } else { 1 }, "{r:?}");
            if !random {
                assert_eq!(r.drop_std, 0.0, "{r:?}");
            }
        }
        // The same seed repeats every row; another seed draws other flips while the
        // deterministic operators do not move.
        let (_, again) = probe_layers(&mut net, &eval, &layers, &perts, 3, 3).unwrap();
        assert_eq!(again, rows);
        let (_, other) = probe_layers(&mut net, &eval, &layers, &perts, 4, 3).unwrap();
        for (a, b) in other.iter().zip(&rows) {
            if !a.family.starts_with("flip") {
                assert_eq!(a, b);
            }
        }
        // (Accuracy need not move on an untrained net, so the draws are compared as weights.)
        let l = net.layer_names().len() - 2;
        let orig = net.layer(l);
        let stored = Int8Layer::store(&orig);
        for p in [Perturbation::Flips(50), Perturbation::Ber(0.01)] {
            let w = |seed| p.weights(&orig, &stored, seed, l, 0).unwrap();
            assert_eq!(w(3), w(3), "{p:?}");
            assert_ne!(w(3), w(4), "{p:?}: another seed must draw other flips");
        }
        assert_eq!(snapshot(&net), before);
    }

    #[test]
    fn at_grid_settings_every_value_equals_the_sweeps_exactly() {
        let (mut net, eval) = tiny();
        let grid = dataset::Grid {
            sparsities: vec![0.5, 0.9],
            bits: vec![3],
            flip_counts: vec![20],
            flip_rates: vec![0.02],
            flip_seeds: 3,
        };
        let (base, fams, _, _) = dataset::probe(&mut net, &eval, &grid, 11);
        let perts = [
            Perturbation::Prune(0.5),
            Perturbation::Prune(0.9),
            Perturbation::PruneChannels(0.5),
            Perturbation::PruneChannels(0.9),
            Perturbation::Bits(3),
            Perturbation::Flips(20),
            Perturbation::Ber(0.02),
        ];
        let layers: Vec<usize> = (0..net.layer_names().len()).collect();
        let (b, rows) = probe_layers(&mut net, &eval, &layers, &perts, 11, 3).unwrap();
        assert_eq!(b, base);
        for r in &rows {
            let l = layers[rows.iter().position(|x| x.layer == r.layer).unwrap() / perts.len()];
            let (drops, norms, stds) = &fams[r.family];
            assert_eq!(r.drop, drops[&r.setting][l], "{r:?}");
            assert_eq!(r.normalized_drop, norms[&r.setting][l], "{r:?}");
            assert_eq!(r.drop_std, stds[&r.setting][l], "{r:?}");
        }
    }

    #[test]
    fn out_of_range_settings_are_refused_before_anything_is_perturbed() {
        let (mut net, eval) = tiny();
        let before = snapshot(&net);
        for (p, msg) in [
            (Perturbation::Prune(1.0), "sparsity 1 is outside [0, 1)"),
            (Perturbation::PruneChannels(-0.1), "sparsity -0.1"),
            (Perturbation::Bits(9), "bit-width 9"),
            (Perturbation::Bits(1), "bit-width 1"),
            (Perturbation::Ber(-1e-3), "bit-error rate -0.001"),
            (Perturbation::Ber(1.5), "bit-error rate 1.5"),
            (Perturbation::Ber(f64::NAN), "bit-error rate NaN"),
        ] {
            let e =
                probe_layers(&mut net, &eval, &[0], &[Perturbation::Bits(4), p], 0, 1).unwrap_err();
            assert!(e.to_string().contains(msg), "{p:?}: {e}");
        }
        let e = probe_layers(&mut net, &eval, &[99], &[Perturbation::Bits(4)], 0, 1).unwrap_err();
        assert!(matches!(e, OpError::Layer(_)), "{e}");
        assert_eq!(snapshot(&net), before);
    }

    #[test]
    fn settings_are_labelled_as_the_dataset_labels_them() {
        assert_eq!(Perturbation::Prune(0.5).setting(), "s0.5");
        assert_eq!(Perturbation::PruneChannels(0.9).setting(), "s0.9");
        assert_eq!(Perturbation::Bits(4).setting(), "b4");
        assert_eq!(Perturbation::Flips(10).setting(), "m10");
        assert_eq!(Perturbation::Ber(1e-4).setting(), "ber0.0001");
        let fams: Vec<&str> = [
            Perturbation::Prune(0.5),
            Perturbation::PruneChannels(0.5),
            Perturbation::Bits(4),
            Perturbation::Flips(1),
            Perturbation::Ber(0.5),
        ]
        .iter()
        .map(Perturbation::family)
        .collect();
        assert_eq!(fams, dataset::FAMILIES);
    }
}
