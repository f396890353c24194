//! `ferrolab fedgraph hpo` and `ferrolab fedgraph privacy`: bad input is one clear error line
//! and exit 2 before any work; the report keys the issue names appear (the runs need Cora, so
//! those tests are `#[ignore]`d; `.ci/run` runs them with the data). The table on a generated
//! graph (`data.synthetic`) runs without any data.

mod common;
use common::*;

#[test]
fn a_noise_multiplier_at_or_below_zero_no_sigma_or_a_repeated_one_is_a_usage_error() {
    // 1e-160: ε = ∞ (the accountant), whose curve once sent the plot's tick search into a loop.
    for bad in [
        "[0.0]",
        "[0.8, -1]",
        "[0]",
        "[]",
        "[0.8, 1.6, 0.8]",
        "[1e-160]",
    ] {
        let root = tmp("fedgraph-sigma");
        let o = ferrolab_fresh(
            &root,
            &[
                "fedgraph",
                "privacy",
                "--set",
                &format!("privacy.sigmas={bad}"),
                "--out",
                root.join("out").to_str().unwrap_or("out"),
            ],
        );
        let e = assert_usage_error(&o, bad);
        assert!(e.contains("privacy.sigmas"), "{bad}: {e}");
        assert!(!root.join("out").exists() && !incomplete(&root.join("out")).exists());
    }
}

#[test]
fn hpo_bad_input_is_a_usage_error() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["--set", "hpo.min_rounds=50", "--set", "hpo.max_rounds=10"],
            "hpo.min_rounds",
        ),
        (&["--set", "hpo.methods=[\"sh\", \"bogus\"]"], "hpo.methods"),
        (&["--set", "hpo.eta=1"], "hpo.eta"),
        (&["--set", "fed.algo=fedsage"], "task.mode"),
        // A repeated grid point would run twice under one unit name.
        (&["--set", "hpo.lrs=[0.01, 0.01]"], "hpo.lrs"),
        (&["--set", "hpo.dropouts=[0.5, 0.5]"], "hpo.dropouts"),
        (&["--set", "hpo.local_steps=[4, 4]"], "hpo.local_steps"),
        // 1e-300 once made a 300-digit unit file name ("File name too long", exit 1).
        (&["--set", "fed.lrs=[1e-300]"], "fed.lrs"),
        (&["--set", "fed.local_steps=[4, 4]"], "fed.local_steps"),
    ];
    for (args, key) in cases {
        let root = tmp("fedgraph-hpo-bad");
        let mut v = vec!["fedgraph", "hpo"];
        v.extend_from_slice(args);
        let o = ferrolab_fresh(&root, &v);
        let e = assert_usage_error(&o, key);
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn the_subcommands_are_listed() {
    let o = ferrolab(&["fedgraph", "--help"]);
    let h = stdout(&o);
    assert!(h.contains("hpo") && h.contains("privacy"), "{h}");
    let o = ferrolab(&["fedgraph", "--print-config", "--preset", "privacy"]);
    let c = stdout(&o);
    assert!(c.contains("mode = \"privacy\""), "{c}");
}

#[test]
#[ignore = "needs Cora (graphs/cora_planetoid.npz under $FERROLAB_DATA or ../shared/data)"]
fn hpo_report_has_its_keys() {
    let root = tmp("fedgraph-hpo");
    let out = root.join("out");
    let o = ferrolab(&[
        "fedgraph",
        "hpo",
        "--preset",
        "hpo",
        "--set",
        "hpo.max_rounds=12",
        "--set",
        "hpo.lrs=[0.05, 0.25]",
        "--out",
        out.to_str().unwrap_or("out"),
        "--threads",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&out);
    for k in ["best_val_accuracy", "best_test_accuracy", "rounds_used"] {
        let v = r["metrics"][k].as_f64();
        assert!(v.is_some_and(f64::is_finite), "metrics.{k}: {r}");
    }
    let acc = r["metrics"]["best_test_accuracy"].as_f64().unwrap_or(0.0);
    assert!(acc > 0.5 && acc <= 1.0, "{acc}");
    // The grid is the cost reference, run beside the search.
    let grid = r["baselines"]["grid"]["rounds_used"]
        .as_f64()
        .unwrap_or(0.0);
    let sh = r["metrics"]["rounds_used"].as_f64().unwrap_or(f64::MAX);
    assert_eq!(grid, 8.0 * 12.0);
    assert!(sh < grid, "{sh} vs {grid}");
    let best = &r["details"]["best_config"];
    for k in ["lr", "local_steps", "dropout"] {
        assert!(best[k].is_number(), "details.best_config.{k}: {best}");
    }
}

#[test]
#[ignore = "needs Cora (graphs/cora_planetoid.npz under $FERROLAB_DATA or ../shared/data)"]
fn privacy_report_has_its_keys() {
    let root = tmp("fedgraph-privacy");
    let out = root.join("out");
    let o = ferrolab(&[
        "fedgraph",
        "privacy",
        "--preset",
        "privacy",
        "--set",
        "privacy.rounds=10",
        "--set",
        "privacy.sigmas=[0.8, 1.6]",
        "--out",
        out.to_str().unwrap_or("out"),
        "--threads",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = &report(&out)["metrics"];
    let auc = m["mia_auc"].as_f64().unwrap_or(f64::NAN);
    assert!((0.0..=1.0).contains(&auc), "{m}");
    for s in ["0p8", "1p6"] {
        for k in ["epsilon", "epsilon_node", "mia_auc", "test_accuracy"] {
            let key = format!("dp_sigma{s}_{k}");
            assert!(m[&key].as_f64().is_some_and(f64::is_finite), "{key}: {m}");
        }
    }
    // More noise, less privacy loss.
    let e = |s: &str| m[format!("dp_sigma{s}_epsilon")].as_f64().unwrap_or(0.0);
    assert!(e("0p8") > e("1p6") && e("1p6") > 0.0, "{m}");
    // Node level (replace-one, sensitivity 2·clip) at σ is the client level at σ/2, so worse.
    let en = |s: &str| {
        m[format!("dp_sigma{s}_epsilon_node")]
            .as_f64()
            .unwrap_or(0.0)
    };
    assert!(en("1p6") > e("1p6") && en("0p8") > en("1p6"), "{m}");
}

/// FedSage+'s `server_mb` is its whole server traffic: the generator stage's relayed
/// generators and gradients plus the classifier's FedAvg rounds, each part under its own key.
#[test]
#[ignore = "needs Cora (graphs/cora_planetoid.npz under $FERROLAB_DATA or ../shared/data)"]
fn fedsage_server_traffic_counts_the_generator_stage() {
    let root = tmp("fedgraph-fedsage-mb");
    let out = root.join("out");
    let o = ferrolab(&[
        "fedgraph",
        "--preset",
        "quick",
        "--set",
        "fed.algo=fedsage",
        "--set",
        "fed.seeds=1",
        "--set",
        "fed.rounds=5",
        "--set",
        "fedsage.gen_rounds=2",
        "--set",
        "fedsage.gen_hidden=16",
        "--out",
        out.to_str().unwrap_or("out"),
        "--threads",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&out);
    let m = &r["metrics"];
    let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
    let (total, classifier, generator) = (
        f("server_mb"),
        f("classifier_server_mb"),
        f("generator_server_mb"),
    );
    assert!(classifier > 0.0 && generator > 0.0, "{m}");
    assert!(
        (total - classifier - generator).abs() <= 1e-9 * total,
        "{m}"
    );
    assert!(
        (f("server_mib") * 1_048_576.0 - total * 1e6).abs() <= 1e-6 * total * 1e6,
        "{m}"
    );
    // The per-seed stage figure the total was built from.
    let gen_bytes = r["details"]["fedsage_generator"][0]["server_bytes"]
        .as_f64()
        .unwrap_or(f64::NAN);
    assert!(
        (gen_bytes / 1e6 - generator).abs() <= 1e-9 * generator,
        "{r}"
    );
    // FedAvg's classifier traffic alone, as its baseline reports it.
    assert!(
        r["baselines"]["fedavg"]["generator_server_mb"].is_null(),
        "{r}"
    );
}

/// `data.synthetic.*`: the table runs on a generated graph on a machine without any data
/// folder, learns it, and refuses a file and a generator together.
#[test]
fn the_table_runs_on_a_generated_graph_without_data() {
    let root = tmp("fedgraph-synthetic");
    let out = root.join("out");
    #[rustfmt::skip]
    let args = [
        "fedgraph", "--preset", "quick",
        // FS-G's Louvain assignment packs pieces largest first under a cap of N/K + δ: the
        // four big class blocks of this small graph need δ = 60 to fit 5 clients.
        "--set", "data.synthetic.nodes=800", "--set", "data.synthetic.classes=4",
        "--set", "data.delta=60",
        "--set", "data.synthetic.features=16", "--set", "data.synthetic.p_in_ratio=0.9",
        "--set", "data.train_per_class=40", "--set", "data.num_val=120",
        "--set", "fed.rounds=20", "--set", "fed.seeds=1", "--threads", "2",
    ];
    let mut v: Vec<&str> = args.to_vec();
    let out_s = out.to_string_lossy().into_owned();
    v.extend(["--out", &out_s]);
    let o = ferrolab_fresh(&root, &v);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&out);
    assert_eq!(r["dataset"], "csbm", "{r}");
    let acc = |m: &serde_json::Value| m["test_accuracy"].as_f64().unwrap_or(0.0);
    // Four balanced classes: chance is 0.25.
    assert!(acc(&r["metrics"]) > 0.5, "{}", r["metrics"]);
    assert!(acc(&r["baselines"]["global"]) > 0.5, "{}", r["baselines"]);
    assert!(r["baselines"]["local"]["test_accuracy"].is_number(), "{r}");
    // metrics.jsonl: a line per run, each with its per-round curves.
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let fedavg: serde_json::Value = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["regime"] == "fedavg")
        .unwrap();
    let rounds = fedavg["rounds"].as_u64().unwrap() as usize;
    for k in ["curve_rounds", "val_accuracy_curve", "test_accuracy_curve"] {
        assert_eq!(
            fedavg[k].as_array().map_or(0, Vec::len),
            rounds,
            "{k}: {fedavg}"
        );
    }

    let bad = root.join("bad");
    let bad_s = bad.to_string_lossy().into_owned();
    let o = ferrolab_fresh(
        &root,
        &[
            "fedgraph",
            "--set",
            "data.synthetic.nodes=800",
            "--set",
            "data.path=g.npz",
            "--out",
            &bad_s,
        ],
    );
    assert_usage_error(&o, "data.synthetic");
    assert!(!bad.exists());
}
