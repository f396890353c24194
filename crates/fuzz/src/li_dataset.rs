//! The layer-importance ground truth as a reader target (`li-dataset`): `dataset.json` and
//! `dataset.csv` as `ferrolab layer-importance` writes them, read by
//! `ferrolab_compress::dataset::{read_json, read_csv}`.
//!
//! JSON mutants mostly edit one to three nodes of a valid document (so they reach the record
//! checks behind the version); the rest, and the CSV, are text mutations. A JSON document that
//! reads must give ground truths of one value per layer and a CSV that reads back with one row
//! per model, layer, family and setting.

use crate::mutate;
use crate::readers::{Seed, SeedKind};
use crate::rng::Rng;
use ferrolab_compress::dataset::{self, DatasetFile, FAMILIES, Grid, ModelRecord};
use ferrolab_data::DataError;
use std::collections::BTreeMap;
use std::path::Path;

fn record(id: &str, layers: usize) -> ModelRecord {
    let mut drops = BTreeMap::new();
    let mut normalized = BTreeMap::new();
    let mut drop_std = BTreeMap::new();
    for (k, f) in FAMILIES.iter().enumerate() {
        let d: Vec<f64> = (0..layers).map(|l| 0.01 * (k + l) as f64).collect();
        let n: Vec<f64> = d.iter().map(|x| x / 3.0).collect();
        let setting = |v: Vec<f64>| BTreeMap::from([("s0.5".to_string(), v)]);
        drops.insert(f.to_string(), setting(d.clone()));
        normalized.insert(f.to_string(), setting(n));
        if f.starts_with("flip") {
            drop_std.insert(f.to_string(), setting(d));
        }
    }
    ModelRecord {
        id: id.into(),
        arch: "mlp".into(),
        width: 0.25,
        seed: 7,
        layer_names: (0..layers).map(|l| format!("fc{}", l + 1)).collect(),
        layer_params: (0..layers).map(|l| 100 * (l + 1)).collect(),
        base_accuracy: 0.75,
        eval_images: 100,
        train_seconds: 1.5,
        probe_seconds: 0.25,
        probes: 12,
        eval_images_per_second: 1000.0,
        drops,
        normalized,
        drop_std,
    }
}

/// A two-member dataset (a three-layer and a one-layer network, every family) as JSON and CSV.
pub fn seeds() -> Vec<Seed> {
    let d = DatasetFile {
        version: dataset::VERSION,
        what: "fuzz seed".into(),
        dataset: "synthetic".into(),
        eval_images: 100,
        grid: Grid {
            sparsities: vec![0.5],
            bits: vec![4],
            flip_counts: vec![10],
            flip_rates: vec![1e-3],
            flip_seeds: 2,
        },
        models: vec![record("mlp-s0", 3), record("mlp-s1", 1)],
    };
    let file = |name: &str, bytes: Vec<u8>| Seed {
        name: name.into(),
        kind: SeedKind::File,
        members: vec![(name.into(), bytes)],
    };
    vec![
        file(
            "dataset.json",
            serde_json::to_vec_pretty(&d).unwrap_or_default(),
        ),
        file("dataset.csv", dataset::to_csv(&d.models).into_bytes()),
    ]
}

/// JSON: mostly one to three nodes edited; otherwise (and for the CSV) text mutations.
pub fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(mut v) if rng.chance(0.8) => {
            crate::json::mutate(rng, &mut v);
            *bytes = v.to_string().into_bytes();
        }
        _ => mutate::text(rng, bytes, &[]),
    }
}

/// Errors at the header: not JSON, the version, or the CSV's header line.
pub fn is_header(msg: &str, e: &DataError) -> bool {
    msg.contains("not a JSON document")
        || msg.contains("dataset version")
        || msg.contains("not UTF-8")
        || msg.contains("line 1:")
        || matches!(e, DataError::Io { .. })
}

/// Reads `path` as `dataset.csv` (by its extension) or `dataset.json`, and what a reader does
/// next with a dataset that reads.
pub fn read(path: &Path) -> ferrolab_data::Result<()> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |msg: String| DataError::Malformed {
        path: path.to_path_buf(),
        at: "layer-importance dataset".into(),
        msg,
    };
    let text = String::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    if path.extension().is_some_and(|e| e == "csv") {
        let rows = dataset::read_csv(&text).map_err(bad)?;
        assert!(rows.iter().all(|r| r.drop.is_finite()));
        return Ok(());
    }
    let d = dataset::read_json(&text).map_err(bad)?;
    for m in &d.models {
        for f in FAMILIES {
            assert_eq!(m.ground_truth(f).len(), m.layer_names.len());
        }
    }
    let want: usize = d
        .models
        .iter()
        .map(|m| m.drops.values().map(BTreeMap::len).sum::<usize>() * m.layer_names.len())
        .sum();
    let rows = dataset::read_csv(&dataset::to_csv(&d.models)).map(|r| r.len());
    assert_eq!(
        rows,
        Ok(want),
        "li-dataset: a dataset that reads does not give back its CSV"
    );
    Ok(())
}
