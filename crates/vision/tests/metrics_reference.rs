//! ferrolab's COCO and segmentation metrics against the numbers pycocotools and medpy 0.5.2
//! computed on the same inputs (`bench/vision_metrics_fixture.py` wrote both into
//! `tests/fixtures/`; no Python runs here). The issue asks for agreement to 1e-4; the checks
//! use 1e-9, since the same arithmetic in the same order should give the same doubles.
//!
//! The last tests show the fixture is sharp: evaluating with one reproduced rule switched off
//! (the `area` field, crowd handling, the tie order, the id-0 quirk) moves the numbers away from pycocotools'.

#![allow(clippy::unwrap_used)] // a panic is the test failure report

use std::path::PathBuf;

use ferrolab_vision::metrics::coco::{self, CocoEval, CocoGt, Detection, NUM_AREA, NUM_IOU};
use ferrolab_vision::metrics::seg;
use serde_json::Value;

const TOL: f64 = 1e-9;
const SCENES: [&str; 4] = ["mixed", "ties", "crowd", "small"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn load(scene: &str) -> (CocoGt, Vec<Detection>) {
    let gt = CocoGt::from_json_file(fixture(&format!("coco_{scene}_gt.json"))).unwrap();
    let dt =
        coco::detections_from_json_file(fixture(&format!("coco_{scene}_dt.json")), &gt).unwrap();
    (gt, dt)
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= TOL,
        "{what}: ferrolab {a} vs reference {b}"
    );
}

fn stats_match(ev: &CocoEval, expected: &Value) -> bool {
    ev.stats
        .iter()
        .zip(floats(&expected["stats"]))
        .all(|(a, b)| (a - b).abs() <= TOL)
}

#[test]
fn coco_stats_per_class_ap_recall_and_precision_match_pycocotools() {
    let expected = json("coco_expected.json");
    for scene in SCENES {
        let e = &expected[scene];
        let (gt, dt) = load(scene);
        let ev = coco::evaluate(&gt, &dt);
        for (i, (a, b)) in ev.stats.iter().zip(floats(&e["stats"])).enumerate() {
            close(
                *a,
                b,
                &format!("{scene} stats[{i}] ({})", coco::STAT_KEYS[i]),
            );
        }
        close(
            ev.map50(),
            floats(&e["stats"])[1],
            &format!("{scene} map50"),
        );
        let cat_ids: Vec<i64> = e["cat_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(ev.cat_ids, cat_ids, "{scene} categories");
        for ((k, ap), want) in ev
            .per_class_ap()
            .iter()
            .zip(e["per_class_ap"].as_array().unwrap())
        {
            assert_eq!(*k, want[0].as_i64().unwrap());
            close(
                *ap,
                want[1].as_f64().unwrap(),
                &format!("{scene} AP of class {k}"),
            );
        }
        let kk = cat_ids.len();
        let rec = floats(&e["recall_tkam"]);
        let prec = floats(&e["precision_mean_over_r_tkam"]);
        assert_eq!(rec.len(), NUM_IOU * kk * NUM_AREA * 3);
        for t in 0..NUM_IOU {
            for k in 0..kk {
                for a in 0..NUM_AREA {
                    for m in 0..3 {
                        let i = ((t * kk + k) * NUM_AREA + a) * 3 + m;
                        let what = format!("{scene} t={t} k={k} a={a} m={m}");
                        close(ev.recall_at(t, k, a, m), rec[i], &format!("recall {what}"));
                        let pm = if ev.precision_at(t, 0, k, a, m) == -1.0 {
                            -1.0
                        } else {
                            (0..coco::NUM_REC)
                                .map(|r| ev.precision_at(t, r, k, a, m))
                                .sum::<f64>()
                                / coco::NUM_REC as f64
                        };
                        // The reference rounded this mean to 12 decimals.
                        assert!(
                            (pm - prec[i]).abs() <= 1e-11,
                            "precision {what}: {pm} vs {}",
                            prec[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn coco_fixture_covers_every_case_the_issue_lists() {
    let mut crowd = 0;
    let mut area_not_wh = 0;
    let mut on_bound = 0;
    let mut zero_id = 0;
    let mut no_gt_images = 0;
    let mut max_dets_in_cell = 0;
    let mut tied = 0;
    for scene in SCENES {
        let (gt, dt) = load(scene);
        crowd += gt.annotations.iter().filter(|a| a.iscrowd).count();
        area_not_wh += gt
            .annotations
            .iter()
            .filter(|a| (a.area - a.bbox[2] * a.bbox[3]).abs() > 1.0)
            .count();
        on_bound += gt
            .annotations
            .iter()
            .filter(|a| a.area == 1024.0 || a.area == 9216.0)
            .count();
        zero_id += gt.annotations.iter().filter(|a| a.id == 0).count();
        no_gt_images += gt
            .images
            .iter()
            .filter(|i| !gt.annotations.iter().any(|a| a.image_id == **i))
            .count();
        let mut cells = std::collections::HashMap::<(i64, i64), usize>::new();
        let mut scores = std::collections::HashMap::<u64, usize>::new();
        for d in &dt {
            *cells.entry((d.image_id, d.category_id)).or_default() += 1;
            *scores.entry(d.score.to_bits()).or_default() += 1;
        }
        max_dets_in_cell = max_dets_in_cell.max(cells.values().copied().max().unwrap_or(0));
        tied += scores.values().filter(|&&n| n > 1).count();
        assert!(dt.iter().any(|d| d.category_id == 42), "unlisted category");
    }
    assert!(crowd >= 10, "iscrowd=1 ground truth: {crowd}");
    assert!(area_not_wh >= 20, "area unlike w*h: {area_not_wh}");
    assert!(on_bound >= 4, "areas on the range bounds: {on_bound}");
    assert!(zero_id >= 1);
    assert!(
        no_gt_images >= 10,
        "images without ground truth: {no_gt_images}"
    );
    assert!(
        max_dets_in_cell > 100,
        "most detections in one cell: {max_dets_in_cell}"
    );
    assert!(tied >= 5, "tied score values: {tied}");
    let expected = json("coco_expected.json");
    assert!(
        SCENES
            .iter()
            .any(|s| floats(&expected[s]["stats"]).contains(&-1.0)),
        "an area range without ground truth"
    );
}

#[test]
fn fixture_detects_each_reproduced_rule_being_dropped() {
    let expected = json("coco_expected.json");
    let mut caught = [false; 4];
    for scene in SCENES {
        let e = &expected[scene];
        let (gt, dt) = load(scene);
        assert!(stats_match(&coco::evaluate(&gt, &dt), e));
        // Area ranges by w*h instead of the `area` field.
        let mut g = gt.clone();
        for a in &mut g.annotations {
            a.area = a.bbox[2] * a.bbox[3];
        }
        caught[0] |= !stats_match(&coco::evaluate(&g, &dt), e);
        // Crowd boxes treated as regular ones.
        let mut g = gt.clone();
        for a in &mut g.annotations {
            a.iscrowd = false;
        }
        caught[1] |= !stats_match(&coco::evaluate(&g, &dt), e);
        // Ties broken the other way: reversing the file order reverses the order of equal scores.
        let mut d = dt.clone();
        d.reverse();
        caught[2] |= !stats_match(&coco::evaluate(&gt, &d), e);
        // A match to the annotation with id 0 counted as a match after all.
        let mut g = gt.clone();
        for a in &mut g.annotations {
            if a.id == 0 {
                a.id = 1 << 40;
            }
        }
        caught[3] |= !stats_match(&coco::evaluate(&g, &dt), e);
    }
    assert_eq!(caught, [true; 4], "[area field, crowd, tie order, id 0]");
}

fn decode(s: &Value) -> Vec<i64> {
    s.as_str()
        .unwrap()
        .bytes()
        .map(|b| i64::from(b - b'0'))
        .collect()
}

#[test]
fn dice_jaccard_hd95_match_medpy_and_the_summary_rule() {
    let doc = json("seg_cases.json");
    let vols = doc["volumes"].as_array().unwrap();
    assert!(vols.len() >= 30);
    let mut acc = seg::SegAccumulator::new(&[1, 2, 3]);
    let (mut hd_checked, mut dims) = (0, [0usize; 4]);
    for (vi, v) in vols.iter().enumerate() {
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        dims[shape.len()] += 1;
        let spacing = floats(&v["spacing"]);
        let (label, pred) = (decode(&v["label"]), decode(&v["pred"]));
        for c in 1..=3i64 {
            let e = &v["classes"][c.to_string()];
            let what = format!("volume {vi} ({}) class {c}", v["case"]);
            let p: Vec<bool> = pred.iter().map(|&x| x == c).collect();
            let l: Vec<bool> = label.iter().map(|&x| x == c).collect();
            if let Some(dc) = e["dc"].as_f64() {
                close(seg::dice(&p, &l), dc, &format!("dice {what}"));
            }
            if let Some(jc) = e["jc"].as_f64() {
                close(seg::jaccard(&p, &l), jc, &format!("jaccard {what}"));
            }
            let h = seg::hd95(&p, &l, &shape, &spacing).unwrap();
            match (h, e["hd95"].as_f64()) {
                (Some(a), Some(b)) => {
                    close(a, b, &format!("hd95 {what}"));
                    hd_checked += 1;
                }
                (None, None) => {}
                (a, b) => panic!("hd95 {what}: ferrolab {a:?} vs medpy {b:?}"),
            }
        }
        acc.add(&pred, &label, &shape, &spacing).unwrap();
    }
    assert!(hd_checked >= 70, "hd95 values compared: {hd_checked}");
    assert!(
        dims[2] >= 10 && dims[3] >= 10,
        "2-D and 3-D volumes: {dims:?}"
    );
    let got = acc.to_json();
    let want = &doc["summary"];
    for key in ["1", "2", "3", "mean"] {
        for m in ["dice", "iou", "hd95"] {
            close(
                got[key][m].as_f64().unwrap(),
                want[key][m].as_f64().unwrap(),
                &format!("summary {key}.{m}"),
            );
        }
    }
    assert_eq!(got["skipped"], want["skipped"]);
    assert!(want["skipped"].as_u64().unwrap() > 0);
}
