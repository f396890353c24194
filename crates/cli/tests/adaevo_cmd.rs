//! `ferrolab adaevo`: a tiny in-process run writes the report keys the issue names (ours and
//! every baseline, each with `_std`) and the timeline SVGs; bad input — an edge memory budget
//! smaller than any task, unknown task / drift / condition / method names, drifts outside the
//! stream — is one `error:` line and exit status 2 before any work starts.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, stderr, tmp};

#[rustfmt::skip]
const TINY: &[&str] = &[
    "--set", "stream.ends=3", "--set", "stream.seconds=120", "--set", "stream.jitter_s=5",
    "--set", "stream.drifts=[\"sudden:rotate@20\", \"incremental:dark@60+30\"]",
    "--set", "stream.eval_frames=16", "--set", "data.synthetic_images=400",
    "--set", "data.pretrain_images=200", "--set", "data.pretrain_epochs=2",
    "--set", "experiment.seeds=2", "--set", "mobile.period_s=40", "--threads", "1",
];

#[test]
fn tiny_run_writes_every_report_key() {
    let d = tmp("adaevo-tiny");
    let out = d.join("run");
    let out_s = out.display().to_string();
    let mut args = vec!["adaevo"];
    args.extend(TINY);
    args.extend(["--out", &out_s]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["system"], "adaevo");
    let keys = ["avg_qoe_t90", "avg_qoe_t80", "avg_accuracy", "upload_mb"];
    let check = |m: &serde_json::Value, who: &str| {
        for k in keys {
            for key in [k.to_string(), format!("{k}_std")] {
                let v = m[&key]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{who}.{key} missing"));
                assert!(v.is_finite() && v >= 0.0, "{who}.{key} = {v}");
            }
        }
        for k in ["avg_qoe_t90", "avg_qoe_t80", "avg_accuracy"] {
            assert!(m[k].as_f64().unwrap() <= 1.0, "{who}.{k} is a fraction");
        }
    };
    check(&r["metrics"], "metrics");
    for b in [
        "no_evolution",
        "naive",
        "ablation_periodic_trigger",
        "ablation_fixed_sampling",
        "ablation_fifo_scheduler",
        "ablation_no_profiler",
    ] {
        check(&r["baselines"][b], b);
    }
    // No evolution uploads nothing; the others do.
    assert_eq!(
        r["baselines"]["no_evolution"]["upload_mb"]
            .as_f64()
            .unwrap(),
        0.0
    );
    assert!(r["baselines"]["naive"]["upload_mb"].as_f64().unwrap() > 0.0);
    assert!(r["metrics"]["edge_peak_memory_frac"].as_f64().unwrap() <= 1.0);
    // The binary installs the counting allocator: task memory is measured on the heap, and the
    // measurement is not the prediction's own formula.
    assert_eq!(r["metrics"]["profiler_memory_heap_measured"], 1.0);
    assert!(r["metrics"]["profiler_memory_error_frac"].as_f64().unwrap() > 0.0);
    // Per-end accuracy over time (seed 0): every end, one point per evaluation, and its mean.
    let seed0 = &r["details"]["adaevo_seed0"];
    let per_end = seed0["accuracy_per_end"].as_array().unwrap();
    assert_eq!(per_end.len(), 3);
    for (k, tl) in per_end.iter().enumerate() {
        let pts = tl.as_array().unwrap();
        assert!(pts.len() >= 120 / 5, "end {k}: {} points", pts.len());
        let accs: Vec<f64> = pts.iter().map(|p| p[1].as_f64().unwrap()).collect();
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        let avg = seed0["avg_accuracy_per_end"][k].as_f64().unwrap();
        assert!((avg - mean).abs() < 1e-12, "end {k}: {avg} vs {mean}");
    }
    for f in [
        "timeline_adaevo.svg",
        "timeline_naive.svg",
        "timeline_methods.svg",
    ] {
        let s = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(s.starts_with("<svg") && s.contains("polyline"), "{f}");
    }
}

/// The small-CNN mobile model (`mobile.conv_channels`) and teacher run the whole experiment:
/// every method reports, evolution ships conv models that the ends install (AdaEvo completes
/// tasks and its accuracy differs from no evolution's), and the heap-measured task memory
/// stays within the prediction's reach.
#[test]
fn a_conv_mobile_model_runs_the_whole_experiment() {
    let d = tmp("adaevo-conv");
    let out = d.join("run");
    let out_s = out.display().to_string();
    let mut args = vec!["adaevo"];
    args.extend(TINY);
    args.extend([
        "--set",
        "mobile.conv_channels=4",
        "--set",
        "edge.teacher_conv_channels=4",
        "--set",
        "edge.throughput_mflops=12",
        "--out",
        &out_s,
    ]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let m = &r["metrics"];
    assert!(m["tasks_completed"].as_f64().unwrap() > 0.0, "{m}");
    let acc = m["avg_accuracy"].as_f64().unwrap();
    let none = r["baselines"]["no_evolution"]["avg_accuracy"]
        .as_f64()
        .unwrap();
    assert!(acc.is_finite() && acc != none, "{acc} vs {none}");
    let err = m["profiler_memory_error_frac"].as_f64().unwrap();
    assert!(err > 0.0 && err < 0.5, "memory prediction off by {err}");
    assert_eq!(r["config"]["mobile"]["conv_channels"], 4);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let cases: &[(&str, &str)] = &[
        ("edge.memory_mb=0.01", "edge.memory_mb"),
        ("task.name=\"segmentation\"", "task.name"),
        ("stream.drifts=[\"sideways:blur@30\"]", "unknown drift type"),
        ("stream.drifts=[\"sudden:fog@30\"]", "unknown condition"),
        (
            "stream.drifts=[\"gradual:blur@100+500\"]",
            "after the stream",
        ),
        (
            "experiment.methods=[\"adaevo\", \"magic\"]",
            "unknown method",
        ),
        // 4000 synthetic images by default: 5 left for the streams cannot hold every class.
        ("data.pretrain_images=3995", "one per class"),
        // 1e20 KB overflowed the byte count and slipped past the memory check.
        ("edge.workspace_kb=1e20", "edge.workspace_kb"),
        ("mobile.bandwidth_mb_s=1e-300", "mobile.bandwidth_mb_s"),
        // Only the evaluation at t = 0, before any drift, would fall inside the stream.
        ("stream.eval_every_s=480", "stream.eval_every_s"),
        // The teacher as the mobile model reads plain inputs: a standardising teacher cannot.
        (
            "mobile.source=\"teacher\"",
            "edge.teacher_standardise = false",
        ),
        ("mobile.source=\"student\"", "mobile.source"),
        ("mobile.conv_kernel=4", "mobile.conv_kernel"),
        ("mobile.conv_channels=65", "mobile.conv_channels"),
    ];
    for (set, what) in cases {
        let d = tmp("adaevo-bad");
        let out = d.join("run");
        let o = ferrolab(&["adaevo", "--set", set, "--out", &out.display().to_string()]);
        let e = assert_usage_error(&o, set);
        assert!(e.contains(what), "{set}: {e}");
        assert_eq!(e.lines().count(), 1, "{set}: {e}");
        assert!(!out.exists(), "{set}: a run folder was created");
    }
}

/// `adaevo edge` / `adaevo mobile` (NATS processes): arguments that cannot work are one line
/// and exit 2, before any model is built or a server is contacted; an unreachable server is a
/// usage error too (the URL is the user's to fix).
#[test]
fn edge_and_mobile_bad_arguments_are_exit_2() {
    let net = ["--nats", "nats://127.0.0.1:1", "--run", "t"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["adaevo", "mobile", "--id", "8"], "--id 8"),
        (vec!["adaevo", "edge", "--preset", "huge"], "unknown preset"),
        (vec!["adaevo", "edge", "--speed", "0"], "--speed"),
        (
            vec!["adaevo", "edge", "--set", "stream.ends=0"],
            "stream.ends",
        ),
        (vec!["adaevo", "mobile", "--id", "0", "--tail=-1"], "--tail"),
        (
            vec![
                "adaevo",
                "mobile",
                "--id",
                "0",
                "--preset",
                "detection",
                "--set",
                "detect.side=50",
            ],
            "detect.side",
        ),
        // The resource guard, as for the in-process run: 1000 ends' streams do not fit 1 GB.
        (
            vec![
                "adaevo",
                "edge",
                "--set",
                "stream.ends=1000",
                "--set",
                "stream.seconds=20000",
                "--max-memory",
                "1G",
            ],
            "--max-memory",
        ),
        (vec!["adaevo", "edge", "--max-memory", "lots"], "lots"),
    ];
    for (args, what) in cases {
        let mut a = args.clone();
        a.extend(net);
        let o = ferrolab(&a);
        let e = assert_usage_error(&o, what);
        assert!(e.contains(what), "{args:?}: {e}");
    }
    let mut a = vec!["adaevo", "edge", "--set", "stream.ends=2", "--threads", "1"];
    a.extend(net);
    let o = ferrolab(&a);
    let e = assert_usage_error(&o, "refused server");
    assert!(e.contains("cannot connect to NATS"), "{e}");
}

/// The detection task (`task.name = "detection"`): its configuration errors — water
/// conditions it does not know, drifts outside the stream, a frame side the grid cannot cut,
/// an edge memory smaller than any detection task — are one line and exit 2; a tiny run of
/// AdaEvo, no evolution and naive evolution writes the shared keys (accuracy = mAP@0.5).
#[test]
fn detection_task_bad_input_and_tiny_run() {
    let cases: &[(&str, &str)] = &[
        ("detect.drifts=[\"sudden:fog@30\"]", "unknown condition"),
        ("detect.drifts=[\"sudden:rotate@30\"]", "unknown condition"),
        (
            "detect.drifts=[\"gradual:green@400+200\"]",
            "after the stream",
        ),
        ("detect.side=50", "detect.side"),
        ("detect.memory_mb=0.01", "detect.memory_mb"),
        // The mobile detector and the teacher read the same cell windows: both have a conv
        // stem or neither has.
        ("mobile.conv_channels=4", "edge.teacher_conv_channels"),
        ("edge.teacher_conv_channels=4", "edge.teacher_conv_channels"),
    ];
    for (set, what) in cases {
        let d = tmp("adaevo-det-bad");
        let out = d.join("run");
        let o = ferrolab(&[
            "adaevo",
            "--set",
            "task.name=\"detection\"",
            "--set",
            set,
            "--out",
            &out.display().to_string(),
        ]);
        let e = assert_usage_error(&o, set);
        assert!(e.contains(what), "{set}: {e}");
        assert_eq!(e.lines().count(), 1, "{set}: {e}");
        assert!(!out.exists(), "{set}: a run folder was created");
    }
    let d = tmp("adaevo-det-tiny");
    let out = d.join("run");
    let out_s = out.display().to_string();
    #[rustfmt::skip]
    let args = [
        "adaevo", "--preset", "detection", "--set", "stream.ends=2", "--set", "stream.seconds=120",
        "--set", "stream.jitter_s=5", "--set", "stream.eval_every_s=20",
        "--set", "detect.drifts=[\"sudden:murky@30\", \"incremental:turbid@60+20\"]",
        "--set", "detect.pretrain_frames=60", "--set", "detect.eval_frames=4",
        "--set", "experiment.seeds=1", "--set", "mobile.period_s=40",
        "--set", "experiment.methods=[\"adaevo\", \"no_evolution\", \"naive\"]",
        "--threads", "1", "--out", &out_s,
    ];
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["dataset"], "underwater-synthetic");
    for who in ["metrics", "baselines.no_evolution", "baselines.naive"] {
        let m = who.split('.').fold(&r, |v, k| &v[k]);
        for k in ["avg_qoe_t90", "avg_qoe_t80", "avg_accuracy", "upload_mb"] {
            let v = m[k].as_f64().unwrap_or_else(|| panic!("{who}.{k} missing"));
            assert!(v.is_finite() && v >= 0.0, "{who}.{k} = {v}");
            assert!(m[format!("{k}_std")].is_number(), "{who}.{k}_std missing");
        }
        assert!(m["estimate_correlation"].is_number(), "{who}");
    }
}
