//! `ferrolab eval coco` and `ferrolab eval seg` end to end: the numbers pycocotools and medpy
//! 0.5.2 computed on the vision crate's fixture come out of the binary (JSON on stdout), and bad
//! input is exactly one `error:` line naming the file with exit 2.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{ferrolab, stderr, stdout, tmp};
use ferrolab_data::image::{Image, write_png};
use ferrolab_data::npy::npy_bytes;
use ferrolab_data::npz::write_npz;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../vision/tests/fixtures")
        .join(name)
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exit 2, stderr exactly one `error:` line that contains every piece of `needles`.
fn bad(args: &[&str], needles: &[&str]) {
    let o = ferrolab(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
    assert_eq!(e.lines().count(), 1, "{args:?}: one line expected: {e}");
    assert!(e.starts_with("error:"), "{e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: {n:?} missing from {e}");
    }
    assert!(stdout(&o).is_empty());
}

const KEYS: [&str; 12] = [
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
];

#[test]
fn coco_prints_pycocotools_stats_as_json_and_the_table_on_stderr() {
    let expected = json_file(&fixture("coco_expected.json"));
    for scene in ["mixed", "ties", "crowd", "small"] {
        let gt = fixture(&format!("coco_{scene}_gt.json"));
        let dt = fixture(&format!("coco_{scene}_dt.json"));
        let o = ferrolab(&[
            "eval",
            "coco",
            "--gt",
            s(&gt),
            "--dt",
            s(&dt),
            "--per-class",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
        let want = expected[scene]["stats"].as_array().unwrap();
        for (k, w) in KEYS.iter().zip(want) {
            let (g, w) = (got[k].as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-9, "{scene} {k}: {g} vs pycocotools {w}");
        }
        for pair in expected[scene]["per_class_ap"].as_array().unwrap() {
            let id = pair[0].as_i64().unwrap().to_string();
            let g = got["per_class_ap"][&id].as_f64().unwrap();
            assert!(
                (g - pair[1].as_f64().unwrap()).abs() < 1e-9,
                "{scene} class {id}"
            );
        }
        let e = stderr(&o);
        assert!(
            e.contains(
                " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "
            ),
            "{e}"
        );
        assert!(e.contains("detections name a category not listed"), "{e}");
    }
}

#[test]
fn coco_bad_input_is_one_line_naming_the_file() {
    let d = tmp("eval-coco-bad");
    let gt = d.join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images":[{"id":1},{"id":2}],"categories":[{"id":1,"name":"a"}],
           "annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[0,0,10,10],"area":100}]}"#,
    )
    .unwrap();
    let dt = d.join("dt.json");
    let ok = r#"{"image_id":1,"category_id":1,"bbox":[0,0,10,10],"score":0.9}"#;

    std::fs::write(&dt, format!("[{ok}, {{\"image_id\": 3")).unwrap();
    bad(
        &["eval", "coco", "--gt", s(&gt), "--dt", s(&dt)],
        &["dt.json", "line"],
    );

    std::fs::write(
        &dt,
        format!(
            "[{ok},{ok},{{\"image_id\":7,\"category_id\":1,\"bbox\":[0,0,1,1],\"score\":0.5}}]"
        ),
    )
    .unwrap();
    bad(
        &["eval", "coco", "--gt", s(&gt), "--dt", s(&dt)],
        &["dt.json", "detection [2]", "image_id 7"],
    );

    std::fs::write(
        &dt,
        "[{\"image_id\":1,\"category_id\":1,\"bbox\":[0,0,-1,4],\"score\":0.5}]",
    )
    .unwrap();
    bad(
        &["eval", "coco", "--gt", s(&gt), "--dt", s(&dt)],
        &["dt.json", "detection [0]", "negative"],
    );

    let bad_gt = d.join("bad_gt.json");
    std::fs::write(&bad_gt, "{\"images\": [{\"id\": 1}], \"categories\": 5}").unwrap();
    bad(
        &["eval", "coco", "--gt", s(&bad_gt), "--dt", s(&dt)],
        &["bad_gt.json"],
    );
    bad(
        &[
            "eval",
            "coco",
            "--gt",
            s(&d.join("nope.json")),
            "--dt",
            s(&dt),
        ],
        &["nope.json"],
    );
    bad(
        &["eval", "coco", "--gt", s(&gt), "--dt", s(&d)],
        &["eval-coco-bad", "not a regular file"],
    );
    // A correct pair still works after all that: the numbers are a perfect detection's.
    std::fs::write(&dt, format!("[{ok}]")).unwrap();
    let o = ferrolab(&["eval", "coco", "--gt", s(&gt), "--dt", s(&dt)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!((v["ap50"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    // Its one box (area 100) is small: medium and large have no ground truth.
    assert!((v["ap_small"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(v["ap_medium"].as_f64().unwrap(), -1.0);
    assert_eq!(v["ar_large"].as_f64().unwrap(), -1.0);
}

fn digits(v: &Value) -> Vec<u8> {
    v.as_str().unwrap().bytes().map(|b| b - b'0').collect()
}

fn write_volume(path: &Path, key: &str, shape: &[usize], data: &[u8]) {
    write_npz(path, &[(key, npy_bytes("|u1", shape, false, data))], true).unwrap();
}

/// The summary rule of `ferrolab eval seg` applied to medpy's per-volume values.
fn expected_summary(vols: &[&Value]) -> Value {
    let mut out = serde_json::Map::new();
    let mut skipped = 0;
    let mut means = [Vec::new(), Vec::new(), Vec::new()];
    for c in ["1", "2", "3"] {
        let (mut d, mut j, mut h) = (Vec::new(), Vec::new(), Vec::new());
        for v in vols {
            let e = &v["classes"][c];
            if e["label_empty"].as_bool().unwrap() {
                skipped += 1;
                continue;
            }
            let empty = e["pred_empty"].as_bool().unwrap();
            d.push(if empty {
                0.0
            } else {
                e["dc"].as_f64().unwrap()
            });
            j.push(if empty {
                0.0
            } else {
                e["jc"].as_f64().unwrap()
            });
            h.extend(e["hd95"].as_f64());
        }
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
        means[0].push(mean(&d));
        means[1].push(mean(&j));
        if !h.is_empty() {
            means[2].push(mean(&h));
        }
        out.insert(
            c.into(),
            serde_json::json!({"dice": mean(&d), "iou": mean(&j),
                "hd95": if h.is_empty() { None } else { Some(mean(&h)) }}),
        );
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    out.insert(
        "mean".into(),
        serde_json::json!({"dice": mean(&means[0]), "iou": mean(&means[1]),
            "hd95": mean(&means[2])}),
    );
    out.insert("skipped".into(), Value::from(skipped));
    Value::Object(out)
}

fn assert_summary(got: &Value, want: &Value, what: &str) {
    for c in ["1", "2", "3", "mean"] {
        for m in ["dice", "iou", "hd95"] {
            let (g, w) = (&got[c][m], &want[c][m]);
            match (g.as_f64(), w.as_f64()) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{what} {c}.{m}: {a} vs {b}"),
                _ => assert_eq!(g, w, "{what} {c}.{m}"),
            }
        }
    }
    assert_eq!(got["skipped"], want["skipped"], "{what} skipped");
}

#[test]
fn seg_on_npz_volumes_and_png_slices_matches_medpy() {
    let doc = json_file(&fixture("seg_cases.json"));
    let vols = doc["volumes"].as_array().unwrap();
    let d = tmp("eval-seg");

    // 3-D volumes with 5 x 1.5625 x 1.5625 spacing, as npz (`label` / `pred` arrays).
    let (lab, pred) = (d.join("label3d"), d.join("pred3d"));
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    let picked: Vec<&Value> = vols
        .iter()
        .filter(|v| v["spacing"] == serde_json::json!([5.0, 1.5625, 1.5625]))
        .collect();
    assert!(picked.len() >= 4);
    for (i, v) in picked.iter().enumerate() {
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        write_volume(
            &lab.join(format!("case{i:02}.npz")),
            "label",
            &shape,
            &digits(&v["label"]),
        );
        write_volume(
            &pred.join(format!("case{i:02}.npz")),
            "pred",
            &shape,
            &digits(&v["pred"]),
        );
    }
    let o = ferrolab(&[
        "eval",
        "seg",
        "--pred",
        s(&pred),
        "--label",
        s(&lab),
        "--classes",
        "1,2,3",
        "--spacing",
        "5,1.5625,1.5625",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_summary(&got, &expected_summary(&picked), "npz 3-D");

    // 2-D slices with unit spacing, as PNG masks; classes found from the labels.
    let (lab, pred) = (d.join("label2d"), d.join("pred2d"));
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    let picked: Vec<&Value> = vols
        .iter()
        .filter(|v| v["spacing"] == serde_json::json!([1.0, 1.0]))
        .collect();
    assert!(picked.len() >= 4);
    for (i, v) in picked.iter().enumerate() {
        let sh = v["shape"].as_array().unwrap();
        let (h, w) = (
            sh[0].as_u64().unwrap() as usize,
            sh[1].as_u64().unwrap() as usize,
        );
        for (dir, key) in [(&lab, "label"), (&pred, "pred")] {
            let img = Image::gray(w, h, digits(&v[key])).unwrap();
            write_png(dir.join(format!("slice{i:02}.png")), &img).unwrap();
        }
    }
    let o = ferrolab(&["eval", "seg", "--pred", s(&pred), "--label", s(&lab)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_summary(&got, &expected_summary(&picked), "png 2-D");
    assert!(stderr(&o).contains("mean"));
}

#[test]
fn seg_bad_input_is_one_line_naming_the_file() {
    let d = tmp("eval-seg-bad");
    let (lab, pred) = (d.join("label"), d.join("pred"));
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    let mut a = vec![0u8; 48];
    a[10] = 1;
    a[11] = 1;
    write_volume(&lab.join("a.npz"), "label", &[3, 4, 4], &a);
    // Missing partner.
    bad(
        &["eval", "seg", "--pred", s(&pred), "--label", s(&lab)],
        &["a.npz", "no prediction file"],
    );
    // Size mismatch.
    write_volume(&pred.join("a.npz"), "pred", &[3, 4, 5], &[0; 60]);
    bad(
        &["eval", "seg", "--pred", s(&pred), "--label", s(&lab)],
        &["a.npz", "[3, 4, 5]", "[3, 4, 4]"],
    );
    // A prediction without a label.
    write_volume(&pred.join("a.npz"), "pred", &[3, 4, 4], &a);
    write_volume(&pred.join("b.npz"), "pred", &[3, 4, 4], &a);
    bad(
        &["eval", "seg", "--pred", s(&pred), "--label", s(&lab)],
        &["b.npz", "no label file"],
    );
    std::fs::remove_file(pred.join("b.npz")).unwrap();
    // A PNG that does not decode.
    std::fs::write(lab.join("c.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(pred.join("c.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    bad(
        &["eval", "seg", "--pred", s(&pred), "--label", s(&lab)],
        &["c.png"],
    );
    std::fs::remove_file(lab.join("c.png")).unwrap();
    std::fs::remove_file(pred.join("c.png")).unwrap();
    // Bad spacing.
    bad(
        &[
            "eval",
            "seg",
            "--pred",
            s(&pred),
            "--label",
            s(&lab),
            "--spacing",
            "1,-2,1",
        ],
        &["--spacing"],
    );
    // With all of that fixed: a perfect prediction.
    let o = ferrolab(&["eval", "seg", "--pred", s(&pred), "--label", s(&lab)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["1"]["dice"].as_f64(), Some(1.0));
    assert_eq!(v["1"]["hd95"].as_f64(), Some(0.0));
    assert_eq!(v["skipped"], 0);
}
