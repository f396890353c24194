//! The detection task (issue 22, task b): the factory detector learns the clear-water scenes,
//! its label-free estimate CLC = mean(CC·LC) follows its true mAP@0.5 along a drifting
//! rendered stream, the task's configuration errors are caught before any work, and a short
//! run of AdaEvo, no evolution and naive evolution produces the shared report keys.

#![allow(clippy::unwrap_used)] // test: a panic is the failure report

use ferrolab_edge::config::AdaEvoConfig;
use ferrolab_edge::detect::estimator::frame_clc;
use ferrolab_edge::detect::experiment::{prepare, simulate};
use ferrolab_edge::detect::grid::{GtBox, model_map50};
use ferrolab_edge::estimator::{mean, pearson};

fn small() -> AdaEvoConfig {
    let mut c = AdaEvoConfig::default();
    c.task.name = "detection".into();
    c.stream.ends = 2;
    c.stream.seconds = 240;
    c.stream.jitter_s = 10.0;
    c.stream.eval_every_s = 10;
    c.detect.drifts = vec![
        "sudden:murky@50".into(),
        "incremental:deep@110+40".into(),
        "gradual:green@170+30".into(),
    ];
    c.detect.pretrain_frames = 600;
    c.detect.eval_frames = 12;
    c.mobile.period_s = 60;
    c
}

fn load(sets: &[&str]) -> Result<AdaEvoConfig, String> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    ferrolab_core::config::load::<AdaEvoConfig>(None, &sets).map_err(|e| e.to_string())
}

#[test]
fn detection_config_errors_are_caught() {
    assert!(load(&["task.name=\"detection\""]).is_ok());
    let bad: &[(&[&str], &str)] = &[
        (&["task.name=\"segmentation\""], "task.name"),
        (
            &[
                "task.name=\"detection\"",
                "detect.drifts=[\"sudden:fog@30\"]",
            ],
            "unknown condition",
        ),
        (
            &[
                "task.name=\"detection\"",
                "detect.drifts=[\"sudden:rotate@30\"]",
            ],
            "unknown condition",
        ),
        (
            &[
                "task.name=\"detection\"",
                "detect.drifts=[\"gradual:green@400+200\"]",
            ],
            "after the stream",
        ),
        (
            &["task.name=\"detection\"", "detect.side=50"],
            "detect.side",
        ),
        (
            &["task.name=\"detection\"", "detect.memory_mb=0.01"],
            "detect.memory_mb",
        ),
        (
            &["task.name=\"detection\"", "detect.memory_unit_kb=100000"],
            "detect.memory_unit_kb",
        ),
        // The knapsack counts whole units: a unit above the 1 MB budget fits no task.
        (&["edge.memory_unit_kb=1024"], "edge.memory_unit_kb"),
        // ... and one so fine that the knapsack's table would hold millions of units.
        (&["edge.memory_unit_kb=0.001"], "too fine"),
        // Every task carries the 100 clean anchor samples: 0.2 MB holds its 8 frames only.
        (&["edge.memory_mb=0.2"], "edge.memory_mb"),
        (&["edge.fixed_epochs=8"], "edge.fixed_epochs"),
        (&["detect.context=2"], "detect.context"),
        // A conv stem pools 2×2: a 1-pixel cell window has nothing to pool.
        (
            &[
                "task.name=\"detection\"",
                "mobile.conv_channels=4",
                "edge.teacher_conv_channels=4",
                "detect.context=1",
                "detect.pool=8",
            ],
            "at least 2×2",
        ),
        (
            &["task.name=\"detection\"", "mobile.conv_channels=4"],
            "edge.teacher_conv_channels",
        ),
        (&["task.name=\"detection\"", "stream.fps=3"], "stream.fps"),
        (&["stream.fps=0"], "stream.fps"),
        (&["edge.base=\"latest\""], "edge.base"),
    ];
    for (sets, what) in bad {
        let e = load(sets).expect_err(&format!("{sets:?} accepted"));
        assert!(e.contains(what), "{sets:?}: {e}");
    }
    // The classification task does not read `detect.*` drifts, nor the detection task
    // `stream.drifts`' condition names.
    assert!(load(&["detect.drifts=[\"sudden:clear@1\"]"]).is_ok());
    assert!(load(&["stream.fps=3", "edge.base=\"best\""]).is_ok());
}

#[test]
fn clc_follows_map_along_a_rendered_drifting_stream() {
    let cfg = small();
    let prep = prepare(&cfg, 3).unwrap();
    // The NATS processes prepare only their share; it is the whole preparation's, bit for bit.
    let edge = ferrolab_edge::detect::experiment::prepare_edge(&cfg, 3).unwrap();
    let whole = prep.edge_part();
    assert!(edge.teacher == whole.teacher && edge.dense == whole.dense);
    assert!(edge.mobile == whole.mobile && edge.anchor == whole.anchor);
    assert_eq!(edge.ends, whole.ends);
    let end = ferrolab_edge::detect::experiment::prepare_end(&cfg, 3, 1).unwrap();
    let whole = prep.end_part(1).unwrap();
    assert!(end.mobile == whole.mobile && end.iou == whole.iou);
    assert_eq!(end.clean_map, whole.clean_map);
    assert!(end.frames == whole.frames && end.eval == whole.eval);
    assert!(ferrolab_edge::detect::experiment::prepare_end(&cfg, 3, 2).is_err());
    eprintln!(
        "clean mAP@0.5: factory {:.3}, teacher {:.3}; teacher on the drift targets {:.3}",
        prep.clean_map, prep.teacher_map, prep.teacher_map_drifted
    );
    // The factory detector has learnt the clear-water scenes (an untrained one scores about
    // 0.01), the teacher too.
    assert!(
        prep.clean_map > 0.1,
        "factory clean mAP@0.5 {}",
        prep.clean_map
    );
    assert!(
        prep.teacher_map > 0.1,
        "teacher clean mAP@0.5 {}",
        prep.teacher_map
    );
    let floor = cfg.detect.det_score as f32;
    let (mut est, mut cc, mut truth) = (vec![], vec![], vec![]);
    for k in 0..cfg.stream.ends {
        for set in &prep.eval[k] {
            let pairs: Vec<(&[u8], &[GtBox])> = set
                .iter()
                .map(|f| (f.rgb.as_slice(), f.boxes.as_slice()))
                .collect();
            truth.push(model_map50(&prep.grid, &prep.mobile, &pairs));
            let per: Vec<(f64, f64)> = set
                .iter()
                .map(|f| {
                    let d = prep.grid.detect(&prep.mobile, &f.rgb, floor);
                    frame_clc(&prep.iou, &f.rgb, &d, floor)
                })
                .collect();
            est.push(mean(&per.iter().map(|p| p.0).collect::<Vec<_>>()));
            cc.push(mean(&per.iter().map(|p| p.1).collect::<Vec<_>>()));
        }
    }
    let r = pearson(&est, &truth);
    let r_cc = pearson(&cc, &truth);
    eprintln!(
        "CLC vs mAP@0.5: r = {r:.3} (CC only {r_cc:.3}) over {} evaluation sets; clean mAP {:.3}",
        est.len(),
        prep.clean_map
    );
    assert!(r > 0.4, "CLC correlation with mAP@0.5 {r}");
}

fn short() -> AdaEvoConfig {
    let mut cfg = small();
    cfg.stream.seconds = 160;
    cfg.stream.jitter_s = 5.0;
    cfg.detect.drifts = vec!["sudden:murky@40".into(), "incremental:turbid@90+20".into()];
    cfg.detect.pretrain_frames = 120;
    cfg.detect.eval_frames = 6;
    cfg.stream.eval_every_s = 20;
    cfg
}

/// The detectors can be small CNNs (`mobile.conv_channels`, `edge.teacher_conv_channels`): a
/// conv block on each cell's window in front of the shared perceptron. The factory model is
/// pruned with its stem, shipped as AEVO2, and the edge retrains and re-ships it.
#[test]
fn conv_detectors_run_the_detection_task() {
    let mut cfg = short();
    cfg.mobile.conv_channels = 4;
    cfg.edge.teacher_conv_channels = 6;
    let prep = prepare(&cfg, 1).unwrap();
    let g = prep.grid;
    assert!(g.conv);
    for (what, m, c) in [("mobile", &prep.mobile, 4), ("teacher", &prep.teacher, 6)] {
        let st = m
            .stem
            .as_ref()
            .unwrap_or_else(|| panic!("{what} has no stem"));
        assert_eq!(
            (st.in_channels, st.side, st.out_channels),
            (3, g.window_side(), c)
        );
        assert_eq!(m.input(), g.input(), "{what}");
    }
    // Pruned with its stem (the mobile model ships as the int8 blob the edge re-ships).
    let stem = prep.mobile.stem.as_ref().unwrap();
    let zeros = stem.weight.iter().filter(|w| **w == 0.0).count();
    assert!(
        zeros * 3 >= stem.weight.len(),
        "{zeros} of {} stem weights pruned",
        stem.weight.len()
    );
    assert!(
        prep.teacher_map > 0.05,
        "teacher clean mAP@0.5 {}",
        prep.teacher_map
    );
    let r = simulate(&cfg, &prep, "naive", 1);
    assert!(r.metrics["tasks_completed"] > 0.0, "{:?}", r.metrics);
    for k in ["avg_qoe_t90", "avg_accuracy", "edge_peak_memory_frac"] {
        let v = r.metrics[k];
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    // The cost model charges the stem: the same run with MLP detectors counts fewer FLOPs
    // per frame.
    let mut flat = cfg.clone();
    flat.mobile.conv_channels = 0;
    assert!(g.frame_flops(&prep.mobile) > flat.grid().frame_flops(&flat.new_detector(1)));
}

#[test]
fn a_short_detection_run_reports_the_shared_keys() {
    let cfg = short();
    let prep = prepare(&cfg, 1).unwrap();
    for m in ["adaevo", "no_evolution", "naive"] {
        let r = simulate(&cfg, &prep, m, 1);
        for k in ["avg_qoe_t90", "avg_qoe_t80", "avg_accuracy", "avg_map50"] {
            let v = r.metrics[k];
            assert!((0.0..=1.0).contains(&v), "{m}.{k} = {v}");
        }
        assert!(r.metrics["estimate_correlation"].is_finite(), "{m}");
        let up = r.metrics["upload_mb"];
        match m {
            "no_evolution" => assert_eq!(up, 0.0),
            "naive" => {
                assert!(up > 0.0, "naive uploads");
                assert!(r.metrics["tasks_completed"] > 0.0, "naive installs a model");
            }
            _ => {}
        }
        assert!(r.metrics["edge_peak_memory_frac"] <= 1.0, "{m}");
        // details.diagnostics: settled accuracy per drift target, accuracy by time since the
        // drift's onset, and (for evolving methods) install gains and upload sizes.
        for k in ["settled_murky", "settled_turbid", "since_onset_000"] {
            let v = r.diag.get(k).copied().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&v), "{m}: diag {k} = {v}");
        }
        let installs: f64 = r
            .diag
            .iter()
            .filter(|(k, _)| k.starts_with("installs_"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(
            installs,
            r.installs.len() as f64,
            "{m}: an install per diag count"
        );
        if m == "naive" {
            assert!(
                r.diag.keys().any(|k| k.starts_with("upload_frames_")),
                "{m}"
            );
        }
    }
    // edge.min_gain: with the profiler (the periodic-trigger ablation, so that tasks come), a
    // task predicting less mAP@0.5 gain than 0.99 — every task — is declined, none installed.
    let m = "ablation_periodic_trigger";
    let open = simulate(&cfg, &prep, m, 1);
    assert_eq!(open.metrics["tasks_declined"], 0.0);
    assert!(open.metrics["tasks_completed"] > 0.0);
    let mut strict = cfg.clone();
    strict.edge.min_gain = 0.99;
    let r = simulate(&strict, &prep, m, 1);
    assert!(r.metrics["tasks_declined"] > 0.0, "{:?}", r.metrics);
    assert_eq!(r.metrics["tasks_completed"], 0.0);
}
