//! The dataset's readers (`dataset::read_json`, `dataset::read_csv`) and the record check a
//! resumed unit goes through: a dataset as written reads back, and every kind of damage is one
//! line naming the field or line.

#![allow(clippy::unwrap_used)]

use ferrolab_compress::dataset::{self, DatasetFile, FAMILIES, Grid, ModelRecord};
use std::collections::BTreeMap;

fn record(id: &str, layers: usize) -> ModelRecord {
    let mut drops = BTreeMap::new();
    let mut normalized = BTreeMap::new();
    let mut drop_std = BTreeMap::new();
    for (k, f) in FAMILIES.iter().enumerate() {
        let d: Vec<f64> = (0..layers).map(|l| 0.01 * (k + l) as f64).collect();
        let setting = if f.starts_with("quant") { "b4" } else { "s0.5" };
        drops.insert(
            f.to_string(),
            BTreeMap::from([(setting.to_string(), d.clone())]),
        );
        normalized.insert(
            f.to_string(),
            BTreeMap::from([(setting.to_string(), d.iter().map(|x| x * 2.0).collect())]),
        );
        if f.starts_with("flip") {
            drop_std.insert(f.to_string(), BTreeMap::from([(setting.to_string(), d)]));
        }
    }
    ModelRecord {
        id: id.into(),
        arch: "mlp".into(),
        width: 0.5,
        seed: 3,
        layer_names: (0..layers).map(|l| format!("fc{}", l + 1)).collect(),
        layer_params: vec![10; layers],
        base_accuracy: 0.8,
        eval_images: 100,
        train_seconds: 1.0,
        probe_seconds: 1.0,
        probes: 5 * layers,
        eval_images_per_second: 100.0,
        drops,
        normalized,
        drop_std,
    }
}

fn file(models: Vec<ModelRecord>) -> DatasetFile {
    DatasetFile {
        version: dataset::VERSION,
        what: "test".into(),
        dataset: "synthetic".into(),
        eval_images: 100,
        grid: Grid {
            sparsities: vec![0.5],
            bits: vec![4],
            flip_counts: vec![1],
            flip_rates: vec![1e-3],
            flip_seeds: 1,
        },
        models,
    }
}

#[test]
fn a_written_dataset_reads_back() {
    let d = file(vec![record("a", 3), record("b", 1)]);
    let back = dataset::read_json(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(back.models.len(), 2);
    assert_eq!(back.models[0].drops, d.models[0].drops);
    // quant is family 2: drops 0.01·(2 + l), one setting, so the ground truth is the drops.
    let want: Vec<f64> = (0..3).map(|l| 0.01 * (2 + l) as f64).collect();
    assert_eq!(back.models[0].ground_truth("quant"), want);
    let rows = dataset::read_csv(&dataset::to_csv(&d.models)).unwrap();
    // One row per model, layer, family and setting (one setting per family here).
    assert_eq!(rows.len(), (3 + 1) * FAMILIES.len());
    let r = &rows[0];
    assert_eq!(
        (r.model.as_str(), r.layer.as_str(), r.layer_index),
        ("a", "fc1", 0)
    );
}

/// An edit that breaks a record.
type Damage = Box<dyn Fn(&mut ModelRecord)>;

#[test]
fn damaged_records_are_named() {
    let cases: Vec<(Damage, &str)> = vec![
        (
            Box::new(|r| {
                r.drops
                    .get_mut("quant")
                    .unwrap()
                    .get_mut("b4")
                    .unwrap()
                    .pop();
            }),
            "drops.quant.b4 has 2 values for 3 layers",
        ),
        (
            Box::new(|r| {
                r.layer_params.push(1);
            }),
            "4 parameter counts for 3 layers",
        ),
        (
            Box::new(|r| {
                r.normalized.get_mut("prune").unwrap().clear();
            }),
            "normalized.prune does not have the settings",
        ),
        (
            Box::new(|r| {
                r.drops.insert("rotate".into(), BTreeMap::new());
            }),
            "unknown family `rotate`",
        ),
        (
            Box::new(|r| {
                r.drop_std
                    .get_mut("flip_rate")
                    .unwrap()
                    .get_mut("s0.5")
                    .unwrap()[1] = f64::NAN;
            }),
            "drop_std.flip_rate.s0.5 holds NaN",
        ),
        (
            Box::new(|r| {
                r.layer_names[2] = "fc,3".into();
            }),
            "comma",
        ),
        (Box::new(|r| r.base_accuracy = 1.5), "base_accuracy 1.5"),
        (
            Box::new(|r| {
                r.layer_names.clear();
            }),
            "no layers",
        ),
    ];
    for (damage, want) in cases {
        let mut r = record("m", 3);
        assert!(r.check().is_ok());
        damage(&mut r);
        let e = r.check().unwrap_err();
        assert!(
            e.contains(want) && e.contains("model m"),
            "{e} (wanted {want})"
        );
        let text = serde_json::to_string(&file(vec![r])).unwrap();
        // JSON cannot hold NaN: serde writes null, which is a field error instead.
        let e = dataset::read_json(&text).unwrap_err();
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn bad_json_and_csv_are_one_line_errors() {
    let ok = serde_json::to_value(file(vec![record("a", 2)])).unwrap();
    let mut v2 = ok.clone();
    v2["version"] = 2.into();
    let mut no_models = ok.clone();
    no_models.as_object_mut().unwrap().remove("models");
    for (text, want) in [
        ("{".to_string(), "not a JSON document"),
        ("[]".to_string(), "no dataset version"),
        (v2.to_string(), "dataset version 2"),
        (no_models.to_string(), "dataset fields"),
    ] {
        let e = dataset::read_json(&text).unwrap_err();
        assert!(e.contains(want), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let csv = dataset::to_csv(&[record("a", 2)]);
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    for (edit, want) in [
        ((0, "model,arch".to_string()), "line 1: expected the header"),
        (
            (2, "a,mlp,3,1,fc2,10,prune,s0.5,x,0,0".to_string()),
            "line 3: drop `x`",
        ),
        (
            (2, "a,mlp,3,1,fc2,10,prune,s0.5".to_string()),
            "line 3: 8 columns",
        ),
        (
            (3, "a,mlp,3,0,fc1,10,spin,s0.5,0,0,0".to_string()),
            "line 4: unknown family",
        ),
        (
            (3, "a,mlp,-3,0,fc1,10,prune,s0.5,0,0,0".to_string()),
            "line 4: seed",
        ),
        (
            (3, "a,mlp,3,0,fc1,10,prune,s0.5,inf,0,0".to_string()),
            "line 4: drop is inf",
        ),
    ] {
        let keep = lines[edit.0].clone();
        lines[edit.0] = edit.1;
        let e = dataset::read_csv(&lines.join("\n")).unwrap_err();
        assert!(e.contains(want), "{e} (wanted {want})");
        lines[edit.0] = keep;
    }
    assert!(dataset::read_csv(&lines.join("\n")).is_ok());
}
