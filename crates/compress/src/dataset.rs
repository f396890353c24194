//! The ground-truth layer-sensitivity dataset: for one trained network, every layer and every
//! perturbation family, the accuracy drop on a fixed evaluation set when only that layer is
//! perturbed (raw, and divided by ‖W̃ − W‖₂), the network restored bit for bit after each probe.
//!
//! A probe of layer l starts from the cached activations entering l's stage; the cache is
//! advanced stage by stage as l increases, so one copy of the activations is held at a time.

use crate::ops::{self, Int8Layer, LayerWeights};
use crate::train::EvalSet;
use crate::zoo::{Act, LayerParams, ZooNet};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Dataset format version (bumped on any change of meaning).
pub const VERSION: u32 = 1;

/// The perturbation families, as report keys name them.
pub const FAMILIES: [&str; 5] = [
    "prune",
    "prune_structured",
    "quant",
    "flip_count",
    "flip_rate",
];

/// The grid of perturbations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub sparsities: Vec<f64>,
    pub bits: Vec<u32>,
    pub flip_counts: Vec<u64>,
    pub flip_rates: Vec<f64>,
    /// Seeds per bit-flip setting.
    pub flip_seeds: usize,
}

/// Drops of one family: setting label → one value per layer.
pub type FamilyDrops = BTreeMap<String, Vec<f64>>;

/// Per family: (mean drops, normalised drops, seed spread).
pub type FamilyResults = BTreeMap<String, (FamilyDrops, FamilyDrops, FamilyDrops)>;

/// Splits probe results into the record's three maps: mean drops, normalised drops, and the
/// seed spread (kept for the bit-flip families only, the others are deterministic).
#[allow(clippy::type_complexity)]
pub fn split_families(
    fams: FamilyResults,
) -> (
    BTreeMap<String, FamilyDrops>,
    BTreeMap<String, FamilyDrops>,
    BTreeMap<String, FamilyDrops>,
) {
    let mut drops = BTreeMap::new();
    let mut normalized = BTreeMap::new();
    let mut drop_std = BTreeMap::new();
    for (k, (d, n, s)) in fams {
        drops.insert(k.clone(), d);
        normalized.insert(k.clone(), n);
        if k.starts_with("flip") {
            drop_std.insert(k, s);
        }
    }
    (drops, normalized, drop_std)
}

/// Everything measured on one zoo member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRecord {
    pub id: String,
    pub arch: String,
    pub width: f64,
    pub seed: u64,
    pub layer_names: Vec<String>,
    pub layer_params: Vec<usize>,
    pub base_accuracy: f64,
    pub eval_images: usize,
    pub train_seconds: f64,
    pub probe_seconds: f64,
    /// Probes run (each an evaluation of the set from one stage on).
    pub probes: usize,
    /// Full forwards per second on the evaluation set, images per second (the sweep's
    /// throughput figure).
    pub eval_images_per_second: f64,
    /// family → setting → mean accuracy drop per layer.
    pub drops: BTreeMap<String, FamilyDrops>,
    /// family → setting → mean of drop / ‖W̃ − W‖₂ per layer.
    pub normalized: BTreeMap<String, FamilyDrops>,
    /// Bit-flip families: setting → standard deviation of the drop over seeds, per layer.
    pub drop_std: BTreeMap<String, FamilyDrops>,
}

impl ModelRecord {
    /// The ground-truth sensitivity of `family` per layer: the mean drop over the family's
    /// grid (the area under the drop curve, up to the grid's spacing).
    pub fn ground_truth(&self, family: &str) -> Vec<f64> {
        let l = self.layer_names.len();
        let Some(f) = self.drops.get(family) else {
            return vec![0.0; l];
        };
        let mut v = vec![0.0; l];
        for d in f.values() {
            for (a, b) in v.iter_mut().zip(d) {
                *a += b;
            }
        }
        v.iter().map(|x| x / f.len().max(1) as f64).collect()
    }
}

impl ModelRecord {
    /// Checks that the record is self-consistent (what a reader of `dataset.json` or a resumed
    /// unit relies on before indexing it): at least one layer, one parameter count per layer
    /// name, only known families, every drop vector one value per layer, the normalised drops
    /// with the same settings as the raw ones, and finite values. The error names the field.
    pub fn check(&self) -> Result<(), String> {
        let l = self.layer_names.len();
        let who = &self.id;
        if l == 0 {
            return Err(format!("model {who}: no layers"));
        }
        if self.layer_params.len() != l {
            return Err(format!(
                "model {who}: {} parameter counts for {l} layers",
                self.layer_params.len()
            ));
        }
        // The CSV form has no quoting: a name must not break its row.
        let csv_safe = |t: &str| !t.contains([',', '"', '\n', '\r']);
        if let Some(bad) = std::iter::once(&self.id)
            .chain(std::iter::once(&self.arch))
            .chain(&self.layer_names)
            .find(|t| !csv_safe(t))
        {
            return Err(format!(
                "model {who}: the name {bad:?} holds a comma, quote or line break"
            ));
        }
        if !(self.base_accuracy.is_finite() && (0.0..=1.0).contains(&self.base_accuracy)) {
            return Err(format!(
                "model {who}: base_accuracy {} is not in [0, 1]",
                self.base_accuracy
            ));
        }
        for (what, maps) in [
            ("drops", &self.drops),
            ("normalized", &self.normalized),
            ("drop_std", &self.drop_std),
        ] {
            for (family, settings) in maps {
                if !FAMILIES.contains(&family.as_str()) {
                    return Err(format!("model {who}: {what}: unknown family `{family}`"));
                }
                for (setting, v) in settings {
                    if !csv_safe(setting) {
                        return Err(format!(
                            "model {who}: {what}.{family}: the setting {setting:?} holds a comma, quote or line break"
                        ));
                    }
                    if v.len() != l {
                        return Err(format!(
                            "model {who}: {what}.{family}.{setting} has {} values for {l} layers",
                            v.len()
                        ));
                    }
                    if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                        return Err(format!("model {who}: {what}.{family}.{setting} holds {x}"));
                    }
                }
            }
        }
        for (family, settings) in &self.drops {
            let same = self
                .normalized
                .get(family)
                .is_some_and(|n| n.keys().eq(settings.keys()));
            if !same {
                return Err(format!(
                    "model {who}: normalized.{family} does not have the settings of drops.{family}"
                ));
            }
        }
        if self.normalized.len() != self.drops.len() {
            return Err(format!(
                "model {who}: normalized has families that drops does not"
            ));
        }
        Ok(())
    }
}

/// `dataset.json` as written by `ferrolab layer-importance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetFile {
    pub version: u32,
    pub what: String,
    /// `fashion-mnist` or `synthetic`.
    pub dataset: String,
    pub eval_images: usize,
    pub grid: Grid,
    pub models: Vec<ModelRecord>,
}

/// Reads `dataset.json` text: the version first, then every model record checked
/// ([`ModelRecord::check`]). The error is one line naming what is wrong.
pub fn read_json(text: &str) -> Result<DatasetFile, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON document: {e}"))?;
    match v.get("version").and_then(serde_json::Value::as_u64) {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => {
            return Err(format!(
                "dataset version {n}: this build reads version {VERSION}"
            ));
        }
        None => return Err("no dataset version (not a layer-importance dataset)".into()),
    }
    let d: DatasetFile = serde_json::from_value(v).map_err(|e| format!("dataset fields: {e}"))?;
    for m in &d.models {
        m.check()?;
    }
    Ok(d)
}

/// One row of `dataset.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow {
    pub model: String,
    pub arch: String,
    pub seed: u64,
    pub layer_index: usize,
    pub layer: String,
    pub params: usize,
    pub family: String,
    pub setting: String,
    pub drop: f64,
    pub normalized_drop: f64,
    pub drop_std: f64,
}

/// The header [`to_csv`] writes.
pub const CSV_HEADER: &str =
    "model,arch,seed,layer_index,layer,params,family,setting,drop,normalized_drop,drop_std";

/// Reads `dataset.csv` text (the header, then one row per model, layer, family and setting).
/// The error is one line naming the line and the column.
pub fn read_csv(text: &str) -> Result<Vec<CsvRow>, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.trim_end() == CSV_HEADER => {}
        _ => return Err(format!("line 1: expected the header `{CSV_HEADER}`")),
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 11 {
            return Err(format!("line {n}: {} columns, expected 11", f.len()));
        }
        fn num<T: std::str::FromStr>(n: usize, col: &str, v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("line {n}: {col} `{v}` is not a valid number"))
        }
        let real = |col: &str, v: &str| -> Result<f64, String> {
            let x: f64 = num(n, col, v)?;
            if x.is_finite() {
                Ok(x)
            } else {
                Err(format!("line {n}: {col} is {x}"))
            }
        };
        if !FAMILIES.contains(&f[6]) {
            return Err(format!("line {n}: unknown family `{}`", f[6]));
        }
        out.push(CsvRow {
            model: f[0].to_string(),
            arch: f[1].to_string(),
            seed: num(n, "seed", f[2])?,
            layer_index: num(n, "layer_index", f[3])?,
            layer: f[4].to_string(),
            params: num(n, "params", f[5])?,
            family: f[6].to_string(),
            setting: f[7].to_string(),
            drop: real("drop", f[8])?,
            normalized_drop: real("normalized_drop", f[9])?,
            drop_std: real("drop_std", f[10])?,
        });
    }
    Ok(out)
}

struct Acc {
    drops: FamilyDrops,
    norm: FamilyDrops,
    std: FamilyDrops,
}

impl Acc {
    fn new() -> Self {
        Acc {
            drops: BTreeMap::new(),
            norm: BTreeMap::new(),
            std: BTreeMap::new(),
        }
    }
    fn put(&mut self, key: &str, l: usize, nl: usize, drops: &[f64], norms: &[f64]) {
        let n = drops.len().max(1) as f64;
        let m = drops.iter().sum::<f64>() / n;
        let var = drops.iter().map(|d| (d - m).powi(2)).sum::<f64>() / n;
        let nm = drops
            .iter()
            .zip(norms)
            .map(|(d, e)| if *e > 0.0 { d / e } else { 0.0 })
            .sum::<f64>()
            / n;
        for (map, v) in [
            (&mut self.drops, m),
            (&mut self.norm, nm),
            (&mut self.std, var.sqrt()),
        ] {
            map.entry(key.to_string()).or_insert_with(|| vec![0.0; nl])[l] = v;
        }
    }
}

fn label_f(prefix: &str, v: f64) -> String {
    format!("{prefix}{v}")
}

/// The setting label of a flip count (`m10`) or a bit-error rate (`ber0.0001`), as the
/// dataset's keys and its flip seeds name them.
pub fn flip_label(count: Option<u64>, rate: Option<f64>) -> String {
    match (count, rate) {
        (Some(m), _) => format!("m{m}"),
        (None, Some(r)) => label_f("ber", r),
        (None, None) => String::new(),
    }
}

/// The seed of flip draw `r` of layer `l` at setting `label` for a member probed with `seed`:
/// shared by the sweep and `layer-importance probe`, so a probe repeats the dataset's draws.
pub fn flip_seed(seed: u64, l: usize, label: &str, r: usize) -> u64 {
    ferrolab_core::seed::derive(seed, &format!("flip-{l}-{label}-{r}"))
}

/// Probes every layer of `model` over `grid` (`seed` draws the bit flips). Returns the base
/// accuracy, the drops per family, the number of probes and the full-forward throughput
/// (images per second) on the evaluation set.
pub fn probe(
    model: &mut ZooNet,
    eval: &EvalSet,
    grid: &Grid,
    seed: u64,
) -> (f64, FamilyResults, usize, f64) {
    let t = Instant::now();
    let base = eval.accuracy(model);
    let full_secs = t.elapsed().as_secs_f64().max(1e-9);
    let ips = eval.labels.len() as f64 / full_secs;
    let mut stage = 0usize;
    let mut acts: Vec<Act> = eval.activations(model, 0);
    let (fams, probes) = sweep(model, base, grid, seed, |model, l| {
        // The cache moves forward stage by stage as l increases (one copy held at a time).
        let st = model.stage_of(l);
        if st > stage {
            acts = std::mem::take(&mut acts)
                .into_iter()
                .map(|a| model.advance(stage, st, a))
                .collect();
            stage = st;
        }
        eval.accuracy_from(model, st, &acts)
    });
    (base, fams, probes, ips)
}

/// The sweep over layers and the grid for any model: `accuracy(model, l)` evaluates the model
/// as it stands, layer `l` perturbed (called for l in increasing order). Every layer is
/// written back bit for bit after its probes. Returns the drops per family against `base`
/// and the number of evaluations run (a bit-flip draw that hits no bit reuses the layer's
/// one unflipped int8 evaluation).
pub fn sweep<P: LayerParams>(
    model: &mut P,
    base: f64,
    grid: &Grid,
    seed: u64,
    mut accuracy: impl FnMut(&P, usize) -> f64,
) -> (FamilyResults, usize) {
    let nl = model.layer_names().len();
    let mut fam: BTreeMap<&str, Acc> = FAMILIES.iter().map(|f| (*f, Acc::new())).collect();
    let mut probes = 0usize;
    for l in 0..nl {
        let orig: LayerWeights = model.layer(l);
        let mut run = |model: &mut P, w: &[f32]| -> (f64, f64) {
            model.set_layer_weight(l, w);
            let acc = accuracy(model, l);
            probes += 1;
            (base - acc, ops::l2_diff(w, &orig.weight))
        };
        for &s in &grid.sparsities {
            if let Ok(w) = ops::magnitude_prune(&orig.weight, s) {
                let (d, e) = run(model, &w);
                if let Some(a) = fam.get_mut("prune") {
                    a.put(&label_f("s", s), l, nl, &[d], &[e]);
                }
            }
            if let Ok(w) = ops::channel_prune(&orig, s) {
                let (d, e) = run(model, &w);
                if let Some(a) = fam.get_mut("prune_structured") {
                    a.put(&label_f("s", s), l, nl, &[d], &[e]);
                }
            }
        }
        for &b in &grid.bits {
            if let Ok(w) = ops::fake_quantize(&orig, b) {
                let (d, e) = run(model, &w);
                if let Some(a) = fam.get_mut("quant") {
                    a.put(&format!("b{b}"), l, nl, &[d], &[e]);
                }
            }
        }
        let stored = Int8Layer::store(&orig);
        // A flip draw that hits no bit (most seeds at a low rate on a small layer) leaves the
        // layer at its int8 codes: the same weights give the same accuracy, so that probe is
        // evaluated once per layer and reused (exact; it saves evaluations, not precision).
        let mut unflipped: Option<(f64, f64)> = None;
        for (family, settings) in [
            (
                "flip_count",
                grid.flip_counts
                    .iter()
                    .map(|&m| (flip_label(Some(m), None), Some(m), None))
                    .collect::<Vec<_>>(),
            ),
            (
                "flip_rate",
                grid.flip_rates
                    .iter()
                    .map(|&r| (flip_label(None, Some(r)), None, Some(r)))
                    .collect(),
            ),
        ] {
            for (label, count, rate) in settings {
                let (mut ds, mut es) = (Vec::new(), Vec::new());
                for r in 0..grid.flip_seeds.max(1) {
                    let s = flip_seed(seed, l, &label, r);
                    let pos = match (count, rate) {
                        (Some(m), _) => ops::flip_positions_count(stored.bits(), m, s),
                        (_, Some(b)) => {
                            ops::flip_positions_rate(stored.bits(), b, s).unwrap_or_default()
                        }
                        _ => Vec::new(),
                    };
                    let (d, e) = if pos.is_empty() {
                        match unflipped {
                            Some(v) => v,
                            None => *unflipped.insert(run(model, &stored.dequantize(&orig))),
                        }
                    } else {
                        let mut c = stored.clone();
                        c.flip(&pos);
                        run(model, &c.dequantize(&orig))
                    };
                    ds.push(d);
                    es.push(e);
                }
                if let Some(a) = fam.get_mut(family) {
                    a.put(&label, l, nl, &ds, &es);
                }
            }
        }
        model.set_layer_weight(l, &orig.weight);
    }
    let out = fam
        .into_iter()
        .map(|(k, a)| (k.to_string(), (a.drops, a.norm, a.std)))
        .collect();
    (out, probes)
}

/// The dataset as CSV: one row per model, layer, family and setting.
pub fn to_csv(records: &[ModelRecord]) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for r in records {
        for (family, settings) in &r.drops {
            for (setting, v) in settings {
                for (l, d) in v.iter().enumerate() {
                    let nd = r.normalized[family][setting][l];
                    let sd = r
                        .drop_std
                        .get(family)
                        .and_then(|f| f.get(setting))
                        .map_or(0.0, |v| v[l]);
                    s.push_str(&format!(
                        "{},{},{},{},{},{},{},{},{},{},{}\n",
                        r.id,
                        r.arch,
                        r.seed,
                        l,
                        r.layer_names[l],
                        r.layer_params[l],
                        family,
                        setting,
                        d,
                        nd,
                        sd
                    ));
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Two plain layers and an "accuracy" that moves with every weight.
    struct Toy(Vec<LayerWeights>);

    impl LayerParams for Toy {
        fn layer_names(&self) -> Vec<String> {
            (0..self.0.len()).map(|l| format!("l{l}")).collect()
        }
        fn layer(&self, l: usize) -> LayerWeights {
            self.0[l].clone()
        }
        fn set_layer_weight(&mut self, l: usize, w: &[f32]) {
            self.0[l].weight = w.to_vec();
        }
    }

    fn score(t: &Toy) -> f64 {
        let mut s = 0.0;
        for (l, lw) in t.0.iter().enumerate() {
            for (i, w) in lw.weight.iter().enumerate() {
                s += f64::from(*w) * ((l * 7 + i) % 13) as f64;
            }
        }
        0.5 + 1e-3 * s
    }

    #[test]
    fn empty_flip_draws_reuse_one_evaluation_and_give_the_same_drops() {
        let layer = |n: usize, f: usize| LayerWeights {
            weight: (0..n).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect(),
            out_channels: f,
            bn_scale: None,
        };
        // 4 weights = 32 stored bits: at 1e-3 most of 30 draws hit nothing; 2000 weights do.
        let mut toy = Toy(vec![layer(4, 2), layer(2000, 20)]);
        let grid = Grid {
            sparsities: vec![],
            bits: vec![],
            flip_counts: vec![1],
            flip_rates: vec![1e-3],
            flip_seeds: 30,
        };
        let seed = 11;
        let base = score(&toy);
        let mut calls = 0usize;
        let (fams, evals) = sweep(&mut toy, base, &grid, seed, |m, _| {
            calls += 1;
            score(m)
        });
        assert_eq!(evals, calls);
        // Every draw evaluated from scratch, as before the reuse.
        let mut empty = [0usize; 2];
        for (l, empty_l) in empty.iter_mut().enumerate() {
            let orig = toy.layer(l);
            let stored = Int8Layer::store(&orig);
            let mut rate = Vec::new();
            let mut count = Vec::new();
            for r in 0..30 {
                let key = label_f("ber", 1e-3);
                let s = ferrolab_core::seed::derive(seed, &format!("flip-{l}-{key}-{r}"));
                let pos = ops::flip_positions_rate(stored.bits(), 1e-3, s).unwrap();
                *empty_l += usize::from(pos.is_empty());
                let mut c = stored.clone();
                c.flip(&pos);
                toy.set_layer_weight(l, &c.dequantize(&orig));
                rate.push(base - score(&toy));
                let s = ferrolab_core::seed::derive(seed, &format!("flip-{l}-m1-{r}"));
                let mut c = stored.clone();
                c.flip(&ops::flip_positions_count(stored.bits(), 1, s));
                toy.set_layer_weight(l, &c.dequantize(&orig));
                count.push(base - score(&toy));
            }
            toy.set_layer_weight(l, &orig.weight);
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let key = label_f("ber", 1e-3);
            assert!((fams["flip_rate"].0[&key][l] - mean(&rate)).abs() < 1e-12);
            assert!((fams["flip_count"].0["m1"][l] - mean(&count)).abs() < 1e-12);
        }
        // The small layer's empty draws cost one evaluation together; the large layer has none.
        assert!(empty[0] >= 20 && empty[1] == 0, "{empty:?}");
        assert_eq!(evals, 2 * 30 + (30 - empty[0]) + 1 + 30);
    }
}
