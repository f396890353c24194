//! `ferrolab layer-importance dataset|benchmark|budget` are the stages of one run: the
//! sub-command gives the same dataset as `--set task.stage=…`, takes the run's options after its
//! name, and stops where it says; bad input stays a one-line usage error.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, stderr, tmp};

/// A tiny synthetic run: one MLP, a sliver of the grid.
const SMALL: &[&str] = &[
    "--preset",
    "quick",
    "--threads",
    "2",
    "--set",
    "data.dataset=synthetic",
    "--set",
    "data.train_images=300",
    "--set",
    "data.eval_images=100",
    "--set",
    "zoo.archs=[\"mlp\"]",
    "--set",
    "zoo.epochs=1",
    "--set",
    "budget.finetune_images=100",
];

fn drops(dir: &std::path::Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("dataset.json")).unwrap()).unwrap();
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["drops"].clone())
        .collect()
}

#[test]
fn dataset_sub_command_is_the_dataset_stage() {
    let d = tmp("li-stage");
    let (a, b) = (d.join("a"), d.join("b"));
    let a_s = a.display().to_string();
    let b_s = b.display().to_string();
    let mut args = vec!["layer-importance", "dataset"];
    args.extend(SMALL);
    args.extend(["--out", &a_s]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = vec!["layer-importance"];
    args.extend(SMALL);
    args.extend(["--set", "task.stage=dataset", "--out", &b_s]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(drops(&a), drops(&b));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("report.json")).unwrap()).unwrap();
    let metrics = report["metrics"].as_object().unwrap();
    assert!(metrics.contains_key("base_accuracy"));
    // The dataset stage stops before the benchmark.
    assert!(!metrics.keys().any(|k| k.starts_with("best_criterion")));
    assert!(!a.join("benchmark.md").exists());
}

#[test]
fn sub_commands_keep_usage_errors() {
    let d = tmp("li-stage-bad");
    let out = d.join("x").display().to_string();
    for (args, what) in [
        (
            vec![
                "layer-importance",
                "benchmark",
                "--set",
                "grid.bits=[9]",
                "--out",
                &out,
            ],
            "grid.bits",
        ),
        (
            vec![
                "layer-importance",
                "dataset",
                "--set",
                "zoo.cross_domain=[\"bert-sst\"]",
                "--out",
                &out,
            ],
            "zoo.cross_domain",
        ),
        (
            vec![
                "layer-importance",
                "budget",
                "--set",
                "grid.sparsities=[1.0]",
                "--out",
                &out,
            ],
            "grid.sparsities",
        ),
    ] {
        let o = ferrolab(&args);
        let e = assert_usage_error(&o, what);
        assert!(e.contains(what), "{e}");
        assert!(!d.join("x").exists(), "{what}: nothing written");
    }
    let o = ferrolab(&["layer-importance", "dataset", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
