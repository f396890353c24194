//! The binary's contract: exit codes, one-line errors, the run folder, refusal to overwrite.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferrolab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrolab-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_task(dir: &Path) -> PathBuf {
    let mut s = String::new();
    for i in 0..120 {
        let (label, cue) = if i % 2 == 0 {
            (1, "great")
        } else {
            (0, "awful")
        };
        s.push_str(&format!(
            "{label} the film was {cue} and the plot {}\n",
            ["moved", "ran", "went"][i % 3]
        ));
    }
    let p = dir.join("train.txt");
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let o = ferrolab(&["secnn", "--set", "train.lrr=1"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("train.lrr") && e.lines().count() == 1, "{e}");

    let o = ferrolab(&["secnn", "--set", "model.dropout=1.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.dropout"));

    let o = ferrolab(&["reproduce", "--only", "nosuchsystem"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nosuchsystem"));

    let o = ferrolab(&["data", "--data-dir", "/nonexistent/ferrolab-data"]);
    assert_eq!(o.status.code(), Some(2));

    let d = tmp("badcfg");
    let cfg = d.join("c.toml");
    std::fs::write(&cfg, "[train\nepochs = 1\n").unwrap();
    let o = ferrolab(&["secnn", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("c.toml"), "{}", stderr(&o));
    assert!(ferrolab(&["--help"]).status.success());
}

#[test]
fn a_run_writes_its_folder_refuses_to_overwrite_it_and_predicts() {
    let d = tmp("run");
    let train = tiny_task(&d);
    let out = d.join("out");
    let args = [
        "secnn",
        "--set",
        &format!("data.train={}", train.display()),
        "--set",
        "model.embed_dim=8",
        "--set",
        "model.maps=4",
        "--set",
        "model.se_reduction=2",
        "--set",
        "train.epochs=2",
        "--set",
        "train.seeds=1",
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ];
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "report.json",
        "config.toml",
        "metrics.jsonl",
        "curves.svg",
        "checkpoint/meta.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["metrics"]["test_accuracy"].is_number());
    assert!(report["baselines"]["kim_cnn"]["test_accuracy"].is_number());
    let before = std::fs::read(out.join("report.json")).unwrap();

    let o = ferrolab(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already holds a run"));
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), before);

    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args([
            "secnn",
            "predict",
            "--checkpoint",
            out.join("checkpoint").to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one line\nanother line\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let (label, prob) = line.split_once('\t').unwrap();
        assert!(label == "0" || label == "1");
        let p: f64 = prob.parse().unwrap();
        assert!((0.5..=1.0).contains(&p), "{line}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn cluster_gcn_runs_on_a_generated_graph_and_reports_the_contract_keys() {
    let dir = tmp("cgcn");
    let out = dir.join("run");
    let cache = dir.join("cache");
    let args = [
        "cluster-gcn",
        "--set",
        "data.synthetic.nodes=600",
        "--set",
        "data.synthetic.features=16",
        "--set",
        "data.synthetic.classes=3",
        "--set",
        "train.epochs=15",
        "--set",
        "train.seeds=2",
        "--set",
        "cluster.parts=6",
        "--set",
    ];
    let cache_set = format!("cluster.cache_dir={}", cache.display());
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        cache_set.as_str(),
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = ferrolab(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for key in [
        "test_accuracy",
        "test_accuracy_std",
        "peak_rss_mb",
        "epoch_seconds",
    ] {
        assert!(r["metrics"][key].is_number(), "metrics.{key}: {r}");
        for b in ["full_batch_gcn", "random_partition"] {
            assert!(
                r["baselines"][b][key].is_number(),
                "baselines.{b}.{key}: {r}"
            );
        }
    }
    assert!(
        r["details"]["partition_cache"]
            .as_str()
            .unwrap()
            .starts_with("stored")
    );
    // The second run finds the partition in the cache.
    let out2 = dir.join("run2");
    all.truncate(all.len() - 1);
    all.push(out2.to_str().unwrap());
    let o = ferrolab(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out2.join("report.json")).unwrap()).unwrap();
    assert!(
        r["details"]["partition_cache"]
            .as_str()
            .unwrap()
            .starts_with("hit")
    );

    // More clusters than nodes, a missing file, an unknown key: usage errors, no folder.
    for bad in [
        "cluster.parts=100000",
        "data.path=/nonexistent/graph.npz",
        "cluster.q=2",
    ] {
        let out3 = dir.join("bad");
        let o = ferrolab(&[
            "cluster-gcn",
            "--set",
            "data.synthetic.nodes=600",
            "--set",
            bad,
            "--out",
            out3.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(!out3.join("report.json").exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ckks_bench_reports_latency_and_precision_per_op() {
    let d = tmp("ckks");
    let out = d.join("out");
    // The smallest standard set (N = 2^13, depth 2) on two threads, one repetition.
    let o = ferrolab(&[
        "ckks",
        "bench",
        "--log-n",
        "13",
        "--reps",
        "1",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let m = &report["metrics"];
    for op in [
        "encode",
        "encrypt",
        "decrypt",
        "add",
        "mul_relin",
        "rescale",
        "mul_relin_rescale",
        "rotate",
        "hoisted_rotate16",
        "conjugate",
    ] {
        let ms = m[format!("{op}_ms_n13")].as_f64();
        assert!(ms.is_some_and(|v| v > 0.0), "{op}: {ms:?}");
    }
    for op in ["mul_relin_rescale", "rotate", "hoisted_rotate16"] {
        let bits = m[format!("{op}_precision_bits_n13")].as_f64().unwrap();
        assert!(bits > 20.0, "{op}: {bits} bits");
    }
    assert_eq!(report["config"]["threads"], 2);
    assert_eq!(report["config"]["n13"]["q_bits"][0], 56);

    // Bad flags: exit 2 with one line naming the problem, and no run folder.
    for (i, (bad, says)) in [
        (&["--log-n", "12"][..], "log N = 12"),
        (&["--threads", "0"], "--threads"),
        (&["--reps", "0"], "--reps"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = d.join(format!("bad{i}"));
        let mut args = vec!["ckks", "bench", "--out", dir.to_str().unwrap()];
        args.extend_from_slice(bad);
        let o = ferrolab(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {e}");
        assert!(e.contains(says) && e.lines().count() == 1, "{bad:?}: {e}");
        assert!(!dir.exists(), "{bad:?} created {}", dir.display());
    }
    std::fs::remove_dir_all(&d).ok();
}
