//! End-to-end checks of the SECNN experiment on small files written by the tests: it learns a
//! separable task, writes the report keys scripts depend on, and its checkpoint predicts.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use ferrolab_core::RunDir;
use ferrolab_text::{Predictor, SecnnConfig, experiment};
use std::path::PathBuf;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrolab-text-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sentences whose label is decided by one cue word among distractors.
fn write_task(path: &std::path::Path, n: usize, offset: usize) {
    let fillers = [
        "the", "film", "plot", "was", "a", "story", "actor", "scene", "really", "quite",
    ];
    let mut s = String::new();
    for i in 0..n {
        let label = (i + offset) % 2;
        let cue = if label == 1 {
            ["great", "wonderful", "superb"][i % 3]
        } else {
            ["awful", "boring", "dull"][i % 3]
        };
        let mut words: Vec<&str> = (0..(4 + i % 7))
            .map(|j| fillers[(i * 7 + j * 3) % fillers.len()])
            .collect();
        words.insert((i * 5) % words.len(), cue);
        s.push_str(&format!("{label} {}\n", words.join(" ")));
    }
    std::fs::write(path, s).unwrap();
}

fn small_config(train: &std::path::Path, test: Option<&std::path::Path>) -> SecnnConfig {
    let mut c = SecnnConfig::default();
    c.data.train = Some(train.display().to_string());
    c.data.test = test.map(|p| p.display().to_string());
    c.model.embed_dim = 16;
    c.model.maps = 8;
    c.model.se_reduction = 4;
    c.train.epochs = 6;
    c.train.seeds = 2;
    c.train.batch_size = 16;
    c.train.lr = 5e-3;
    c.train.patience = 6;
    c
}

#[test]
fn learns_a_separable_task_and_reports_the_contract_keys() {
    let d = tmp("sep");
    let train = d.join("train.txt");
    let test = d.join("test.txt");
    write_task(&train, 400, 0);
    write_task(&test, 100, 1);
    let cfg = small_config(&train, Some(&test));
    let mut run = RunDir::create(d.join("run")).unwrap();
    let out = experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        None,
        7,
        &mut run,
    )
    .unwrap();
    let r = &out.report;
    assert!(r.metrics["test_accuracy"] > 0.9, "{:?}", r.metrics);
    assert!(
        r.baselines["kim_cnn"]["test_accuracy"] > 0.9,
        "{:?}",
        r.baselines
    );
    for k in [
        "test_accuracy_std",
        "paired_difference_mean",
        "paired_difference_std",
    ] {
        assert!(r.metrics.contains_key(k), "missing {k}");
    }
    assert!(r.baselines["kim_cnn"].contains_key("test_accuracy_std"));
    assert_eq!(
        r.details["secnn_test_accuracy_per_run"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(!r.notes.is_empty());
    // metrics.jsonl has one line per epoch per model per run.
    let lines = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert!(lines.lines().count() >= 4);

    // The saved SECNN predicts the cue words.
    let p = Predictor::load(&d.join("run/checkpoint")).unwrap();
    let got = p.predict(&[
        "the film was great".into(),
        "the plot was awful really".into(),
    ]);
    assert_eq!(got[0].0, 1, "{got:?}");
    assert_eq!(got[1].0, 0, "{got:?}");
    assert!(got.iter().all(|&(_, prob)| prob > 0.5 && prob <= 1.0));
    let kim = Predictor::load(&d.join("run/checkpoint-kim-cnn")).unwrap();
    assert_eq!(kim.kind(), ferrolab_text::ModelKind::KimCnn);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn same_seed_gives_the_same_figures() {
    let d = tmp("det");
    let train = d.join("train.txt");
    write_task(&train, 200, 0);
    let mut cfg = small_config(&train, None);
    cfg.train.seeds = 1;
    cfg.train.epochs = 2;
    let a = experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        None,
        3,
        &mut RunDir::create(d.join("a")).unwrap(),
    )
    .unwrap();
    let b = experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        None,
        3,
        &mut RunDir::create(d.join("b")).unwrap(),
    )
    .unwrap();
    assert_eq!(a.report.metrics, b.report.metrics);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_input_is_reported_with_file_and_line() {
    let d = tmp("bad");
    let train = d.join("train.txt");
    write_task(&train, 50, 0);
    let test = d.join("test.txt");
    std::fs::write(&test, "1 fine\n\n5 unseen label\n").unwrap();
    let cfg = small_config(&train, Some(&test));
    let e = experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        None,
        1,
        &mut RunDir::create(d.join("r1")).unwrap(),
    )
    .unwrap_err();
    assert!(e.is_usage());
    let msg = e.to_string();
    assert!(msg.contains("test.txt") && msg.contains("line 3"), "{msg}");

    std::fs::write(&test, "").unwrap();
    let e = experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        None,
        1,
        &mut RunDir::create(d.join("r2")).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("test.txt"), "{e}");

    std::fs::write(&test, "positive no numeric label\n").unwrap();
    let e = experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        None,
        1,
        &mut RunDir::create(d.join("r3")).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");

    let missing = small_config(&d.join("nope.txt"), None);
    let e = experiment::run(
        &ferrolab_core::Checked::new(missing.clone()).unwrap(),
        None,
        1,
        &mut RunDir::create(d.join("r4")).unwrap(),
    )
    .unwrap_err();
    assert!(e.is_usage() && e.to_string().contains("nope.txt"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn shipped_presets_load_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/secnn");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg: SecnnConfig = ferrolab_core::config::load(Some(&path), &[])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(["mr", "sst2"].contains(&cfg.data.preset.as_str()));
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

/// Labels are remapped to class indices: a label of 2^31 is a name, not a table size, and the
/// map is in the report and the checkpoint.
#[test]
fn labels_are_remapped_and_the_map_is_recorded() {
    let d = tmp("remap");
    let train = d.join("train.txt");
    write_task(&train, 120, 0);
    let text = std::fs::read_to_string(&train).unwrap();
    let relabelled: String = text
        .lines()
        .map(|l| match l.split_once(' ') {
            Some(("1", rest)) => format!("2147483648 {rest}\n"),
            Some(("0", rest)) => format!("7 {rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&train, relabelled).unwrap();
    let mut cfg = small_config(&train, None);
    cfg.train.seeds = 1;
    cfg.train.epochs = 1;
    let out = experiment::run(
        &ferrolab_core::Checked::new(cfg).unwrap(),
        None,
        1,
        &mut RunDir::create(d.join("run")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        out.report.details["class_map"],
        serde_json::json!([7, 2_147_483_648u64])
    );
    let p = Predictor::load(&d.join("run/checkpoint")).unwrap();
    assert_eq!(p.labels(), vec![7, 2_147_483_648]);
    let got = p.predict(&["the film was great".into()]);
    assert!([7, 2_147_483_648].contains(&got[0].0), "{got:?}");
    std::fs::remove_dir_all(&d).ok();
}

/// Training files that cannot give a meaningful accuracy are refused, naming the file.
#[test]
fn degenerate_training_data_is_refused() {
    let d = tmp("degenerate");
    let train = d.join("train.txt");
    let run = |name: &str, cfg: SecnnConfig| {
        experiment::run(
            &ferrolab_core::Checked::new(cfg).unwrap(),
            None,
            1,
            &mut RunDir::create(d.join(name)).unwrap(),
        )
        .unwrap_err()
    };
    // One example: one class.
    std::fs::write(&train, "1 a good film\n").unwrap();
    let e = run("one", small_config(&train, None));
    assert!(e.is_usage() && e.to_string().contains("two classes"), "{e}");
    // Two classes, one example of label 4.
    std::fs::write(&train, "0 a\n0 b\n0 c\n4 d\n").unwrap();
    let e = run("single", small_config(&train, None));
    let msg = e.to_string();
    assert!(
        e.is_usage()
            && msg.contains("train.txt")
            && msg.contains("line 4")
            && msg.contains("label 4"),
        "{msg}"
    );
    // Too few examples for a held-out test part.
    std::fs::write(&train, "0 a\n0 b\n1 c\n1 d\n").unwrap();
    let e = run("split", small_config(&train, None));
    assert!(e.is_usage() && e.to_string().contains("empty"), "{e}");
    // data.limit leaving a single class to train on.
    write_task(&train, 200, 0);
    let mut cfg = small_config(&train, None);
    cfg.data.limit = 1;
    let e = run("limit", cfg);
    assert!(e.is_usage() && e.to_string().contains("data.limit"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}
