//! End to end on small synthetic data: the experiment's report keys, a checkpoint scored by
//! the predictor exactly as in training, and bad prediction input.

#![allow(clippy::unwrap_used)]

use ferrolab_core::run::RunDir;
use ferrolab_ctr::config::ApgExperimentConfig;
use ferrolab_ctr::{CtrError, Predictor};

fn tiny() -> ApgExperimentConfig {
    let mut c = ApgExperimentConfig::default();
    c.data.dataset = "synthetic".into();
    c.data.train_rows = 3000;
    c.data.valid_rows = 1000;
    c.data.test_rows = 1000;
    c.data.synthetic.max_vocab = 50;
    c.model.embed_dim = 4;
    c.model.hidden = vec![16, 8];
    c.apg.rank = 4;
    c.apg.overparam = 8;
    c.apg.hyper_hidden = 8;
    c.train.epochs = 1;
    c.train.seeds = 2;
    c.efficiency.batch_size = 16;
    c.efficiency.d_in = 8;
    c.efficiency.d_out = 8;
    c.efficiency.steps = 1;
    c
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ferrolab-ctr-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn experiment_report_checkpoint_and_predict() {
    let dir = tmp("exp");
    let mut run = RunDir::create(&dir).unwrap();
    let cfg = tiny();
    let out = ferrolab_ctr::experiment::run(
        &ferrolab_core::Checked::new(cfg.clone()).unwrap(),
        None,
        7,
        &mut run,
    )
    .unwrap();
    let r = &out.report;
    assert_eq!(r.system, "apg");
    assert_eq!(r.dataset, "synthetic");
    for m in ["wide_deep", "deepfm", "dcnv2"] {
        for k in ["test_auc", "test_logloss"] {
            let v = r.metrics[&format!("{m}_apg_{k}")];
            assert!(v.is_finite() && v > 0.0, "{m} {k} {v}");
            let b = r.baselines[m][k];
            assert!(b.is_finite() && b > 0.0, "{m} {k} {b}");
        }
        assert!(r.metrics[&format!("{m}_apg_params")] > r.baselines[m]["params"]);
        // Merged for serving: fewer parameters than while training.
        assert!(
            r.metrics[&format!("{m}_apg_serving_params")] < r.metrics[&format!("{m}_apg_params")]
        );
        assert!(r.metrics[&format!("{m}_apg_train_rows_per_second")] > 0.0);
        assert!(r.metrics[&format!("{m}_apg_infer_ms_per_1000_rows")] > 0.0);
    }
    assert!(r.metrics.contains_key("layer_naive_train_ms_per_step"));
    assert!(r.metrics["peak_rss_mb"] > 0.0);
    assert_eq!(r.notes.len(), 4);

    // The DeepFM+APG checkpoint scores the test rows as the experiment did.
    let p = Predictor::load(&dir.join("checkpoint")).unwrap();
    assert_eq!(p.spec().name(), "deepfm_apg");
    let g = ferrolab_ctr::data::Synthetic::new(
        cfg.data.synthetic.clone(),
        ferrolab_core::seed::derive(7, "synthetic"),
    );
    let mut tsv = Vec::new();
    g.write_tsv(50, &mut tsv, false).unwrap();
    let text = String::from_utf8(tsv).unwrap();
    let with_header = format!("{}\n{text}", p.header());
    let a = p.score(text.as_bytes(), "rows").unwrap();
    let b = p.score(with_header.as_bytes(), "rows").unwrap();
    assert_eq!(a.probabilities.len(), 50);
    assert_eq!(a, b);
    assert!(a.probabilities.iter().all(|&x| x > 0.0 && x < 1.0));
    assert!(a.oov.is_empty());

    // Bad input: line numbers, OOV counted, empty input.
    let lines: Vec<&str> = text.lines().collect();
    let mut cols: Vec<String> = lines[1].split('\t').map(String::from).collect();
    cols[13] = "999999".into(); // C1 unknown
    let oov_row = cols.join("\t");
    let s = p
        .score(format!("{}\n{oov_row}\n", lines[0]).as_bytes(), "rows")
        .unwrap();
    assert_eq!(s.oov, vec![("C1".to_string(), 1)]);
    let mut bad = cols.clone();
    bad[2] = "abc".into();
    let e = p
        .score(
            format!("{}\n{}\n{}\n", lines[0], lines[1], bad.join("\t")).as_bytes(),
            "rows",
        )
        .unwrap_err();
    assert!(matches!(e, CtrError::Row { line: 3, .. }), "{e}");
    assert!(
        e.to_string().contains("I3") && e.to_string().contains("not a number"),
        "{e}"
    );
    let short = cols[..38].join("\t");
    let e = p
        .score(format!("{short}\n").as_bytes(), "rows")
        .unwrap_err();
    assert!(
        e.to_string().contains("line 1") && e.to_string().contains("missing field `C26`"),
        "{e}"
    );
    let e = p.score(&b""[..], "rows").unwrap_err();
    assert!(e.is_usage() && e.to_string().contains("no rows"), "{e}");
    let e = p
        .score(format!("{}\n\n{}\n", lines[0], lines[1]).as_bytes(), "rows")
        .unwrap_err();
    assert!(matches!(e, CtrError::Row { line: 2, .. }), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_or_foreign_checkpoint_is_a_clear_error() {
    let dir = tmp("ck");
    std::fs::create_dir_all(&dir).unwrap();
    let e = Predictor::load(&dir).unwrap_err().to_string();
    assert!(e.contains("meta.json"), "{e}");
    std::fs::write(dir.join("meta.json"), "{\"version\": 1}").unwrap();
    let e = Predictor::load(&dir).unwrap_err().to_string();
    assert!(e.contains("not a ferrolab apg checkpoint"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_rejects_bad_values_before_work() {
    let e = ferrolab_core::config::load::<ApgExperimentConfig>(None, &["apg.overparam=3".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("apg.overparam"), "{e}");
    let e =
        ferrolab_core::config::load::<ApgExperimentConfig>(None, &["apg.condition=users".into()])
            .unwrap_err()
            .to_string();
    assert!(e.contains("apg.condition"), "{e}");
    let e =
        ferrolab_core::config::load::<ApgExperimentConfig>(None, &["model.models=[\"fm\"]".into()])
            .unwrap_err()
            .to_string();
    assert!(e.contains("model.models"), "{e}");
    // Every shipped preset (embedded from configs/apg/) resolves and passes the checks.
    use ferrolab_core::System;
    let presets = ferrolab_ctr::ApgSystem.presets();
    for name in ["quick", "paper", "quick-synthetic", "synthetic"] {
        assert!(presets.iter().any(|p| p.name == name), "{name}");
    }
    for p in presets {
        ferrolab_core::system::resolve_config(&ferrolab_ctr::ApgSystem, Some(p.name), None, &[])
            .unwrap_or_else(|e| panic!("preset {}: {e}", p.name));
    }
}
