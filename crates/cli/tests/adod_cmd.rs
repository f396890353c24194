//! `ferrolab data synth-underwater` (the name for `adod synth`) writes the same files
//! as `adod synth`, and ADOD trains on a COCO file through `--set data.coco=FILE`; bad
//! arguments and a broken COCO file are usage errors (exit 2).

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, stderr, tmp};

#[test]
fn data_synth_underwater_is_adod_synth() {
    let d = tmp("synth-underwater");
    let (a, b) = (d.join("a"), d.join("b"));
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    let common = [
        "--types", "I,7", "--images", "2", "--size", "64", "--seed", "3",
    ];
    let mut args = vec!["data", "synth-underwater"];
    args.extend(common);
    args.extend(["--out", &a_s]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = vec!["adod", "synth"];
    args.extend(common);
    args.extend(["--out", &b_s]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "annotations.json",
        "images/i_00001.png",
        "images/7_00000.png",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let o = ferrolab(&["data", "synth-underwater", "--types", "XI", "--out", &b_s]);
    let e = assert_usage_error(&o, "unknown water type");
    assert!(e.contains("unknown water type \"XI\""), "{e}");
    let o = ferrolab(&["data", "synth-underwater", "--bogus"]);
    assert_usage_error(&o, "unknown flag");
    let o = ferrolab(&["data", "synth-underwater", "--help"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("--types"));
}

#[test]
fn adod_trains_on_a_coco_file_and_names_a_bad_entry() {
    let d = tmp("adod-coco");
    let data = d.join("set");
    let data_s = data.display().to_string();
    let o = ferrolab(&[
        "data",
        "synth-underwater",
        "--types",
        "I,3,7",
        "--images",
        "5",
        "--size",
        "64",
        "--out",
        &data_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = data.join("annotations.json");
    let coco = format!("data.coco={}", json.display());
    let out = d.join("run");
    let out_s = out.display().to_string();
    #[rustfmt::skip]
    let tiny = ["--preset", "quick", "--set", &coco, "--set", "data.unseen=[\"7\"]",
        "--set", "data.image_size=64", "--set", "train.iterations=3", "--set", "train.batch_size=4",
        "--set", "model.widths=[2,2,2,2,2,2,2]", "--threads", "1"];
    let mut args = vec!["adod"];
    args.extend(tiny);
    args.extend(["--out", &out_s]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["dataset"], "coco", "{r}");
    for k in [
        "seen_map50",
        "unseen_map50",
        "map50_7",
        "map50_i",
        "map50_3",
        "unseen_map_std",
    ] {
        assert!(r["metrics"][k].is_number(), "metrics.{k}: {r}");
        assert!(r["baselines"]["yolo"][k].is_number(), "baselines.yolo.{k}");
    }
    // The same images without domains: the mAP-only mode.
    let text = std::fs::read_to_string(&json).unwrap();
    let mut plain: serde_json::Value = serde_json::from_str(&text).unwrap();
    for im in plain["images"].as_array_mut().unwrap() {
        im.as_object_mut().unwrap().remove("domain");
    }
    let plain_json = data.join("plain.json");
    std::fs::write(&plain_json, plain.to_string()).unwrap();
    let out3 = d.join("run3");
    let plain_coco = format!("data.coco={}", plain_json.display());
    let mut args = vec!["adod"];
    args.extend(
        tiny.iter()
            .map(|a| if *a == coco { plain_coco.as_str() } else { *a }),
    );
    let out3_s = out3.display().to_string();
    args.extend(["--out", &out3_s]);
    let o = ferrolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out3.join("report.json")).unwrap()).unwrap();
    for k in ["map50", "map", "map50_std", "map_std"] {
        assert!(r["metrics"][k].is_number(), "metrics.{k}: {r}");
        assert!(r["baselines"]["yolo"][k].is_number(), "baselines.yolo.{k}");
    }
    assert!(r["metrics"]["seen_map50"].is_null(), "{r}");
    assert!(r["baselines"]["dg_yolo"].is_null(), "{r}");
    assert_eq!(r["details"]["domains"], false, "{r}");
    assert!(r["notes"].to_string().contains("mAP-only"), "{r}");

    // An annotation of an unknown category: one line naming the file and the entry, exit 2.
    std::fs::write(
        &json,
        text.replacen("\"category_id\": ", "\"category_id\": 4", 1),
    )
    .unwrap();
    let out2 = d.join("run2").display().to_string();
    let mut args = vec!["adod"];
    args.extend(tiny);
    args.extend(["--out", &out2]);
    let e = assert_usage_error(&ferrolab(&args), "bad coco");
    assert!(
        e.contains("annotations.json") && e.contains("annotations[0]"),
        "{e}"
    );
}
