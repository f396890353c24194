//! `--resume` skips the units a killed run finished: here the depth-study points of a small
//! generated-graph Cluster-GCN run, one of which is "lost" and recomputed to the same value.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::process::Command;

const ARGS: &[&str] = &[
    "cluster-gcn",
    "--set",
    "data.synthetic.nodes=600",
    "--set",
    "data.synthetic.features=8",
    "--set",
    "train.epochs=4",
    "--set",
    "train.seeds=2",
    "--set",
    "cluster.parts=6",
    "--set",
    "data.train_per_class=10",
    "--set",
    "data.val_per_class=10",
    "--set",
    "model.layer=cluster",
    "--set",
    "depth.layers=[2,3]",
    "--set",
    "baselines.full_batch=false",
    "--threads",
    "2",
];

fn run(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(ARGS)
        .args(extra)
        .output()
        .expect("binary runs")
}

#[test]
fn resume_reuses_finished_depth_points_and_recomputes_the_lost_one() {
    let d = std::env::temp_dir().join(format!("ferrolab-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let (a, b) = (d.join("a"), d.join("b"));
    let o = run(&["--out", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for u in ["depth2-row", "depth2-diag", "depth3-row", "depth3-diag"] {
        assert!(a.join(format!("units/{u}.json")).is_file(), "{u}");
    }
    // A killed copy: no report yet, one unit not saved.
    let inc = d.join("b.incomplete");
    std::fs::create_dir_all(inc.join("units")).unwrap();
    for f in ["config.toml", "metrics.jsonl"] {
        std::fs::copy(a.join(f), inc.join(f)).unwrap();
    }
    for u in ["depth2-row", "depth2-diag", "depth3-row"] {
        let f = format!("units/{u}.json");
        std::fs::copy(a.join(&f), inc.join(&f)).unwrap();
    }
    let o = run(&["--resume", b.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("already done").count(), 3, "{err}");
    assert!(!inc.exists() && b.join("report.json").is_file());
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("report.json")).unwrap()).unwrap()
    };
    let (ra, rb) = (read(&a), read(&b));
    for k in [
        "depth2_no_enhancement_test_accuracy",
        "depth2_diag_enhanced_test_accuracy",
        "depth3_no_enhancement_test_accuracy",
        "depth3_diag_enhanced_test_accuracy",
    ] {
        let (x, y) = (
            ra["metrics"][k].as_f64().unwrap(),
            rb["metrics"][k].as_f64().unwrap(),
        );
        assert!((x - y).abs() < 1e-12, "{k}: {x} vs {y}");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// A CartPole agent killed mid-run continues from its checkpoint in `train-state/` and the
/// report equals an uninterrupted run's.
#[test]
fn a_killed_cartpole_agent_continues_from_its_checkpoint() {
    let d = std::env::temp_dir().join(format!("ferrolab-cartpole-ck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    #[rustfmt::skip]
    let args = [
        "taskmet", "--preset", "quick-cartpole",
        "--set", "cartpole.distractors=[3]", "--set", "cartpole.steps=2000",
        "--set", "cartpole.init_steps=300", "--set", "cartpole.metric_warmup_steps=600",
        "--set", "cartpole.eval_every=500", "--set", "task.methods=[\"mse\",\"taskmet\"]",
        // Every 60 ms: the kill below finds a checkpoint, and continuing repeats some steps.
        "--set", "cartpole.checkpoint_minutes=0.001", "--threads", "1",
    ];
    let cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferrolab"));
        c.args(args);
        c
    };
    let (a, b) = (d.join("a"), d.join("b"));
    let o = cmd().args(["--out", a.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!a.join("train-state/taskmet-k3-run0").exists());

    let mut child = cmd()
        .args(["--out", b.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = d.join("b.incomplete/train-state/taskmet-k3-run0/state.json");
    let start = std::time::Instant::now();
    while !state.is_file() {
        assert!(
            start.elapsed().as_secs() < 120,
            "no TaskMet checkpoint appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!b.join("report.json").exists(), "killed after it finished");

    let o = cmd()
        .args(["--resume", b.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("report.json")).unwrap()).unwrap()
    };
    let (ra, rb) = (read(&a), read(&b));
    assert_eq!(ra["metrics"], rb["metrics"]);
    assert_eq!(ra["baselines"]["mse"], rb["baselines"]["mse"]);
    assert!(!b.join("train-state/taskmet-k3-run0").exists());
    let _ = std::fs::remove_dir_all(&d);
}
