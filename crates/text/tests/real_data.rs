//! Real-data checks on MR and SST-2 from `../shared/data/text` (or $FERROLAB_DATA). Ignored in
//! a plain `cargo test`; `.ci/run` runs them with `--include-ignored`, and they fail when the
//! data is missing. They train Kim's sizes (the `ferrolab secnn` defaults) with one seed so CI
//! stays short (about a minute each on two cores); the 5-seed figures are in README.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use ferrolab_core::RunDir;
use ferrolab_text::{SecnnConfig, experiment};

fn run_one_seed(preset: &str) -> ferrolab_core::Report {
    let root = ferrolab_data::lookup::resolve_data_root(None)
        .map(|(p, _)| p)
        .filter(|p| p.join("text").is_dir())
        .unwrap_or_else(|| {
            panic!("real data not found: set FERROLAB_DATA or place it at ../shared/data")
        });
    let mut cfg = SecnnConfig::default();
    cfg.data.preset = preset.into();
    cfg.train.seeds = 1;
    let d = std::env::temp_dir().join(format!("ferrolab-real-{preset}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let out = experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        Some(&root),
        0,
        &mut RunDir::create(&d).unwrap(),
    )
    .unwrap();
    std::fs::remove_dir_all(&d).ok();
    out.report
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn mr_both_models_learn_polarity() {
    let r = run_one_seed("mr");
    let se = r.metrics["test_accuracy"];
    let kim = r.baselines["kim_cnn"]["test_accuracy"];
    eprintln!("MR, seed 0: SECNN {se:.4}, Kim-CNN {kim:.4}");
    // Kim-CNN-rand publishes 76.1 (10-fold); one seed must be within 3 points of it.
    assert!(kim > 0.731 && se > 0.731, "SECNN {se}, Kim-CNN {kim}");
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn sst2_both_models_learn_polarity() {
    let r = run_one_seed("sst2");
    let se = r.metrics["test_accuracy"];
    let kim = r.baselines["kim_cnn"]["test_accuracy"];
    eprintln!("SST-2, seed 0: SECNN {se:.4}, Kim-CNN {kim:.4}");
    // Kim-CNN-rand publishes 82.7 (trained on phrases too, which are not at hand); one seed
    // must be within 3 points of it.
    assert!(kim > 0.797 && se > 0.797, "SECNN {se}, Kim-CNN {kim}");
}
