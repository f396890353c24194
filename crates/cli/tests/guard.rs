//! The resource guard: a run whose estimated peak memory exceeds `--max-memory` is refused
//! before anything is allocated or written, in one line naming the setting.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::process::Command;

fn ferrolab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn oversized_settings_are_refused_in_one_line_before_any_work() {
    let d = std::env::temp_dir().join(format!("ferrolab-guard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let out = d.join("run");
    let out_s = out.to_str().unwrap();
    for (args, setting) in [
        (
            vec!["cluster-gcn", "--set", "data.synthetic.nodes=4000000000"],
            "data.synthetic.nodes=4000000000",
        ),
        (
            vec![
                "cluster-gcn",
                "--set",
                "data.synthetic.nodes=100000",
                "--max-memory",
                "10M",
            ],
            "data.synthetic.nodes=100000",
        ),
        (
            vec![
                "apg",
                "--set",
                "data.dataset=synthetic",
                "--set",
                "data.train_rows=100000000",
                "--max-memory",
                "8GiB",
            ],
            "data.train_rows=100000000, data.valid_rows=25000, data.test_rows=50000",
        ),
        (
            vec![
                "fedgraph",
                // Synthetic graphs: the refusal must not depend on Cora being installed.
                "--set",
                "data.dataset=graph-families",
                "--set",
                "fed.algo=gcfl",
                "--set",
                "model.hidden=65536",
                "--set",
                "model.layers=16",
            ],
            "model.hidden=65536, model.layers=16, fed.clients=5",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["--out", out_s]);
        let o = ferrolab(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let line = err.lines().next().unwrap();
        assert!(
            line.starts_with(&format!("error: {setting}: needs ~"))
                && line.contains("--max-memory)"),
            "{line}"
        );
        assert!(!out.exists() && !d.join("run.incomplete").exists());
    }
    let o = ferrolab(&["cluster-gcn", "--max-memory", "12X", "--out", out_s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-memory"));
    std::fs::remove_dir_all(&d).ok();
}
