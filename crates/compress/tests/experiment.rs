//! The whole experiment on generated images (report keys as the issue names them, the dataset
//! files, resume, determinism), bad input (exit-2 errors before any work), and the quick preset
//! on the real Fashion-MNIST (ignored without it).

#![allow(clippy::unwrap_used)]

use ferrolab_compress::LayerImportanceSystem;
use ferrolab_compress::config::LayerImportanceConfig;
use ferrolab_core::run::RunDir;
use ferrolab_core::system::{DynSystem, ErrorClass};
use ferrolab_core::{Checked, RunContext};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ferrolab-li-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&p).ok();
    p
}

fn small() -> LayerImportanceConfig {
    let mut c: LayerImportanceConfig =
        toml::from_str(include_str!("../../../configs/layer-importance/quick.toml")).unwrap();
    c.data.dataset = "synthetic".into();
    c.data.train_images = 600;
    c.data.eval_images = 200;
    c.zoo.epochs = 1;
    c.budget.finetune_images = 200;
    c
}

fn ctx(dir: &Path, fresh: bool) -> RunContext {
    let run = if fresh {
        RunDir::create(dir).unwrap()
    } else {
        RunDir::reopen(dir).unwrap()
    };
    RunContext::new(4, 2, None, run)
}

#[test]
fn synthetic_run_reports_every_key_writes_the_dataset_and_resumes_exactly() {
    // `run` holds the backend's generator itself.
    let root = tmp("synthetic");
    let cfg = Checked::new(small()).unwrap();
    let a = ferrolab_compress::experiment::run(&cfg, &mut ctx(&root, true)).unwrap();
    let r = &a.report;
    let m = &r.metrics;
    let mut keys = Vec::new();
    for s in ["50", "70", "90"] {
        keys.push(format!("prune_s{s}_accuracy"));
        keys.push(format!("prune_s{s}_ft_accuracy"));
    }
    keys.push("quant_b4p5_accuracy".into());
    keys.push("quant_b3p5_accuracy".into());
    let mut flip = Vec::new();
    for t in ["top1", "top2", "topq"] {
        for b in ["1em3"] {
            for s in ["mean", "p5"] {
                flip.push(format!("flip_{t}_ber{b}_{s}_accuracy"));
            }
        }
    }
    for k in keys.iter().chain(&flip) {
        assert!(
            m.contains_key(k) && m.contains_key(&format!("{k}_std")),
            "{k}"
        );
        assert!((0.0..=1.0).contains(&m[k]), "{k} = {}", m[k]);
        assert!(r.baselines["oracle"].contains_key(k), "oracle {k}");
    }
    for k in &keys {
        assert!(r.baselines["uniform"].contains_key(k), "uniform {k}");
    }
    for k in &flip {
        assert!(r.baselines["random"].contains_key(k) && r.baselines["largest"].contains_key(k));
    }
    for f in [
        "prune",
        "prune_structured",
        "quant",
        "flip_count",
        "flip_rate",
    ] {
        let v = m[&format!("best_criterion_spearman_{f}")];
        assert!((-1.0..=1.0).contains(&v), "{f}: {v}");
        assert!(r.details["best_criterion"][f].is_string(), "{f}");
    }
    // The unprotected model under each budget rate: flips counted, the sign bit among them,
    // and no protection can do better than int8 without flips nor worse than no protection.
    let cost = r.details["flip_cost_unprotected"].as_object().unwrap();
    assert_eq!(cost.len(), 2);
    for member in cost.values() {
        let c = &member["ber1em3"];
        let f = |k: &str| c[k].as_f64().unwrap();
        assert!(f("flips_mean") > 0.0 && f("sign_flips_mean") <= f("flips_mean"));
        assert!(f("layers_hit_mean") >= 1.0);
        assert!(f("unprotected_min_accuracy") <= f("unprotected_p5_accuracy"));
        assert!(f("unprotected_p5_accuracy") <= f("unprotected_mean_accuracy") + 1e-12);
    }
    // The quick preset calibrates its budgets: every member names the rule each budget kept,
    // a sharpness from the grid (never 0, the uniform rule) and its calibration accuracy, and
    // its gap to uniform under every pruning and bit key.
    let cal = r.details["budget_calibration"].as_object().unwrap();
    assert_eq!(cal.len(), 2);
    let grid = &cfg.budget.sharpness_grid;
    for (id, member) in cal {
        for who in ["ours", "oracle"] {
            for s in ["50", "70", "90"] {
                let c = &member[format!("{who}_prune_s{s}")];
                let k = c["sharpness"].as_f64().unwrap();
                assert!(grid.contains(&k) && k > 0.0, "{id} {who} s{s}: {c}");
                assert!(c["per_weight"].is_boolean(), "{id}: {c}");
                let a = c["calibration_accuracy"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&a), "{id}: {c}");
            }
            for b in ["4p5", "3p5"] {
                let c = &member[format!("{who}_quant_b{b}")];
                assert!(c["per_weight"].is_boolean(), "{id} {who} b{b}: {c}");
            }
        }
        let gap = r.details["budget_minus_uniform"][id].as_object().unwrap();
        assert_eq!(gap.len(), keys.len(), "{id}: {gap:?}");
        for k in &keys {
            let g = gap[k].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&g), "{id} {k}: {g}");
        }
    }
    // The dataset: versioned JSON with every model's layers, and the CSV.
    let ds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(ds["version"], 1);
    let models = ds["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let resnet = &models[0];
    assert_eq!(resnet["layer_names"].as_array().unwrap().len(), 8);
    assert_eq!(
        resnet["drops"]["quant"]["b2"].as_array().unwrap().len(),
        8,
        "one drop per layer"
    );
    let csv = std::fs::read_to_string(root.join("dataset.csv")).unwrap();
    assert!(csv.starts_with("model,arch,seed,layer_index,layer,params,family,setting,drop"));
    // 2 sparsities × 2 pruning kinds + 2 bit-widths + 1 count + 1 rate per layer, 11 layers.
    assert_eq!(csv.lines().count(), 1 + 11 * 8);
    // Both files read back through the dataset's own readers.
    let back = ferrolab_compress::dataset::read_json(
        &std::fs::read_to_string(root.join("dataset.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(back.models.len(), 2);
    assert_eq!(
        back.models[0].layer_names,
        resnet["layer_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ferrolab_compress::dataset::read_csv(&csv).unwrap().len(),
        11 * 8
    );
    assert!(
        std::fs::read_to_string(root.join("benchmark.svg"))
            .unwrap()
            .contains("<svg")
    );

    // Resume: every unit is read back, the report is the same.
    let b = ferrolab_compress::experiment::run(&cfg, &mut ctx(&root, false)).unwrap();
    assert_eq!(b.report.metrics, a.report.metrics);
    assert_eq!(b.report.baselines, a.report.baselines);

    // A checkpoint of another architecture in its place: a one-line checkpoint error (usage).
    std::fs::copy(
        root.join("models/resnet8-s0.safetensors"),
        root.join("models/mlp-s0.safetensors"),
    )
    .unwrap();
    std::fs::remove_file(root.join("units/budget-mlp-s0.json")).unwrap();
    let e = ferrolab_compress::experiment::run(&cfg, &mut ctx(&root, false)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage);
    assert!(e.to_string().contains("mlp-s0.safetensors"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_settings_are_usage_errors_before_any_work() {
    let sys = LayerImportanceSystem;
    for (set, key) in [
        ("grid.sparsities=[0.5, 1.0]", "grid.sparsities"),
        ("grid.sparsities=[-0.1]", "grid.sparsities"),
        ("grid.bits=[9]", "grid.bits"),
        ("grid.bits=[1]", "grid.bits"),
        ("budget.sparsities=[1.0]", "budget.sparsities"),
        ("budget.avg_bits=[1.5]", "budget.avg_bits"),
        ("zoo.archs=[\"resnet21\"]", "zoo.archs"),
        ("grid.flip_rates=[2.0]", "grid.flip_rates"),
        ("budget.sharpness_grid=[0.0, 1.0]", "budget.sharpness_grid"),
        ("budget.sharpness_grid=[]", "budget.sharpness_grid"),
        ("budget.calibrate_images=70000", "budget.calibrate_images"),
    ] {
        let e = sys
            .resolve(Some("quick"), None, &[set.to_string()])
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage, "{set}");
        assert!(e.to_string().contains(key), "{set}: {e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
    assert!(sys.resolve(Some("paper"), None, &[]).is_ok());
    assert!(sys.resolve(Some("medium"), None, &[]).is_ok());
}

#[test]
#[ignore = "needs the real Fashion-MNIST (apt-get install dataset-fashion-mnist, or ferrolab data fetch fashion-mnist)"]
fn quick_preset_on_fashion_mnist() {
    let root = tmp("real");
    let cfg: LayerImportanceConfig =
        toml::from_str(include_str!("../../../configs/layer-importance/quick.toml")).unwrap();
    let cfg = Checked::new(cfg).unwrap();
    let o = ferrolab_compress::experiment::run(&cfg, &mut ctx(&root, true)).unwrap();
    let m = &o.report.metrics;
    // Two epochs of two small networks on 4000 images: well above the 0.1 of chance.
    assert!(m["base_accuracy"] > 0.5, "{}", m["base_accuracy"]);
    // At 90% sparsity, sparing the layers the ground truth marks as sensitive beats pruning
    // every layer alike (0.47 vs 0.35 when written).
    assert!(
        o.report.baselines["oracle"]["prune_s90_accuracy"]
            >= o.report.baselines["uniform"]["prune_s90_accuracy"]
    );
    std::fs::remove_dir_all(&root).ok();
}
