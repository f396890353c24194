//! `ferrolab classify` end to end: the quick preset on a tiny Fashion-MNIST-format folder,
//! `classify predict` on IDX and PNG input, and the bad-input rule (one `error:` line, exit
//! status 2, nothing written) for damaged IDX files, undecodable PNGs and unknown models.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, stderr, stdout, tmp};
use ferrolab_vision::data::{ImageSet, synthetic};
use std::path::{Path, PathBuf};

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn write_images(path: &Path, set: &ImageSet) {
    let n = set.len() as u32;
    let dims = [n, set.height as u32, set.width as u32];
    std::fs::write(path, idx_bytes(&dims, &set.pixels)).unwrap();
}

/// A folder laid out as Fashion-MNIST (plain IDX files) holding generated 28x28 images.
fn fashion_folder(root: &Path) -> PathBuf {
    let d = root.join("fmnist");
    std::fs::create_dir_all(&d).unwrap();
    for (prefix, n, seed) in [("train", 1200, 1), ("t10k", 300, 2)] {
        let s = synthetic(n, 28, seed);
        write_images(&d.join(format!("{prefix}-images-idx3-ubyte")), &s);
        std::fs::write(
            d.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_bytes(&[n as u32], &s.labels),
        )
        .unwrap();
    }
    d
}

/// The quick preset, shrunk to seconds on the generated folder.
fn train(root: &Path, data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let dir = format!("data.dir={}", data.display());
    let mut args = vec![
        "classify",
        "--preset",
        "quick",
        "--set",
        &dir,
        "--set",
        "data.val_size=200",
        "--set",
        "data.train_limit=0",
        "--set",
        "data.test_limit=0",
        "--set",
        "train.batch_size=50",
        "--set",
        "train.lr=0.05",
        // The preset's ResNet-8 needs ~10 s here for a clear signal; the MLP takes well under
        // one (the library tests train the ResNet and resume it).
        "--set",
        "model.arch=mlp",
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    let _ = root;
    ferrolab(&args)
}

#[test]
fn quick_preset_trains_reports_and_its_checkpoint_predicts_idx_and_png() {
    let root = tmp("classify-e2e");
    let data = fashion_folder(&root);
    let out = root.join("run");
    let o = train(&root, &data, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["system"], "classify");
    let m = &report["metrics"];
    let acc = m["test_accuracy"].as_f64().unwrap();
    // Ten classes: chance is 0.1; two short epochs on the strokes do far better (about 0.5).
    assert!(acc > 0.3, "test accuracy {acc}");
    for k in ["epoch_seconds", "peak_rss_mb", "val_accuracy", "train_loss"] {
        assert!(m[k].as_f64().unwrap() > 0.0, "{k}: {m}");
    }
    assert_eq!(report["config"]["model"]["arch"], "mlp");
    assert_eq!(report["config"]["data"]["val_size"], 200);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let epochs = report["config"]["train"]["epochs"].as_u64().unwrap();
    assert_eq!(lines.lines().count() as u64, epochs, "{lines}");
    let ck = out.join("checkpoint");

    // IDX input: one line per image, labels mostly right.
    let test = synthetic(40, 28, 9);
    let idx = root.join("some.idx");
    write_images(&idx, &test);
    let o = ferrolab(&[
        "classify",
        "predict",
        "--checkpoint",
        ck.to_str().unwrap(),
        idx.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 40, "{text}");
    let right = rows
        .iter()
        .zip(&test.labels)
        .filter(|(r, l)| r[2] == l.to_string())
        .count();
    assert!(right > 12, "{right} of 40 right: {text}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), 5, "{text}");
        assert_eq!(r[1], i.to_string());
        let p: f64 = r[4].parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }

    // PNG input: the same image gives the same answer as from IDX.
    let png = root.join("one.png");
    let img = ferrolab_data::image::Image::gray(28, 28, test.image(3).to_vec()).unwrap();
    ferrolab_data::image::write_png(&png, &img).unwrap();
    let o = ferrolab(&[
        "classify",
        "predict",
        "--checkpoint",
        ck.to_str().unwrap(),
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    let cols: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(
        (cols[1], cols[2], cols[3]),
        ("0", rows[3][2], rows[3][3]),
        "{line}"
    );
    let (a, b): (f64, f64) = (cols[4].parse().unwrap(), rows[3][4].parse().unwrap());
    assert!((a - b).abs() < 2e-3, "{line} vs {:?}", rows[3]);

    // Bad predict inputs: one error line naming the file, exit 2, nothing on stdout.
    let bad_magic = root.join("magic.idx");
    std::fs::write(&bad_magic, b"\x01\x02\x08\x03\x00\x00\x00\x01").unwrap();
    let short = root.join("short.idx");
    std::fs::write(&short, idx_bytes(&[2, 28, 28], &test.pixels[..784 + 100])).unwrap();
    let junk_png = root.join("junk.png");
    let mut junk = b"\x89PNG\r\n\x1a\n".to_vec();
    junk.extend_from_slice(&[7u8; 64]);
    std::fs::write(&junk_png, junk).unwrap();
    let small = root.join("small.png");
    ferrolab_data::image::write_png(
        &small,
        &ferrolab_data::image::Image::gray(10, 10, vec![0; 100]).unwrap(),
    )
    .unwrap();
    for (file, needle) in [
        (&bad_magic, "magic"),
        (&short, "need 1568 bytes"),
        (&junk_png, "junk.png"),
        (&small, "10x10"),
    ] {
        let o = ferrolab(&[
            "classify",
            "predict",
            "--checkpoint",
            ck.to_str().unwrap(),
            idx.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        let e = assert_usage_error(&o, needle);
        assert!(
            e.contains(file.file_name().unwrap().to_str().unwrap()),
            "{e}"
        );
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(
            stdout(&o).is_empty(),
            "printed before the bad file: {}",
            stdout(&o)
        );
    }
    // A damaged checkpoint.
    std::fs::write(ck.join("meta.json"), "{\"version\": 1}").unwrap();
    let o = ferrolab(&[
        "classify",
        "predict",
        "--checkpoint",
        ck.to_str().unwrap(),
        idx.to_str().unwrap(),
    ]);
    let e = assert_usage_error(&o, "damaged meta.json");
    assert!(e.contains("meta.json"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_training_data_and_unknown_models_are_usage_errors_that_write_nothing() {
    let root = tmp("classify-bad");
    let data = fashion_folder(&root);
    // Unknown architecture: found while checking the configuration.
    let out = root.join("o1");
    let o = train(&root, &data, &out, &["--set", "model.arch=alexnet"]);
    let e = assert_usage_error(&o, "unknown arch");
    assert!(e.contains("model.arch") && e.contains("alexnet"), "{e}");
    assert!(!out.exists());
    // A label file with the wrong magic, an image file shorter than its header says, labels
    // that do not match the images' count.
    let labels = data.join("train-labels-idx1-ubyte");
    let images = data.join("t10k-images-idx3-ubyte");
    let good_labels = std::fs::read(&labels).unwrap();
    let good_images = std::fs::read(&images).unwrap();
    let cases: Vec<(&Path, Vec<u8>, &str)> = vec![
        (
            &labels,
            [&[9u8, 9, 9, 9][..], &good_labels[4..]].concat(),
            "magic",
        ),
        (
            &images,
            good_images[..good_images.len() - 5].to_vec(),
            "truncated data",
        ),
        (
            &labels,
            idx_bytes(&[7], &[0; 7]),
            "7 labels for the 1200 images",
        ),
    ];
    for (i, (file, bytes, needle)) in cases.into_iter().enumerate() {
        std::fs::write(file, &bytes).unwrap();
        let out = root.join(format!("bad{i}"));
        let o = train(&root, &data, &out, &[]);
        let e = assert_usage_error(&o, needle);
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(
            e.contains(file.file_name().unwrap().to_str().unwrap()),
            "{e}"
        );
        assert!(!out.exists(), "{} was written", out.display());
        std::fs::write(&labels, &good_labels).unwrap();
        std::fs::write(&images, &good_images).unwrap();
    }
    // No data anywhere: the error names the dataset and where it looked.
    if !Path::new("/usr/share/datasets/fashion-mnist").is_dir() {
        let o = common::ferrolab_fresh(&root.join("fresh"), &["classify", "--preset", "quick"]);
        let e = assert_usage_error(&o, "no data");
        assert!(e.contains("fashion-mnist"), "{e}");
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
#[ignore = "needs the real Fashion-MNIST (apt-get install dataset-fashion-mnist, or ferrolab data fetch fashion-mnist)"]
fn quick_preset_on_the_real_data_is_well_above_chance_and_predicts_the_test_set() {
    let root = tmp("classify-real");
    let out = root.join("run");
    // Exactly what `reproduce --quick` runs for classify-fashion-mnist.
    let o = ferrolab(&[
        "classify",
        "--preset",
        "quick",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["dataset"], "fashion-mnist");
    let acc = report["metrics"]["test_accuracy"].as_f64().unwrap();
    // Three epochs of a ResNet-8 on 5000 images: about 0.70 (chance 0.1).
    assert!(acc > 0.6, "{acc}");
    let dir = ferrolab_data::lookup::find_dataset(None, "fashion-mnist").unwrap();
    let test = dir.join("t10k-images-idx3-ubyte.gz");
    let o = ferrolab(&[
        "classify",
        "predict",
        "--checkpoint",
        out.join("checkpoint").to_str().unwrap(),
        test.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 10_000);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_killed_run_resumed_from_its_state_ends_as_an_uninterrupted_one() {
    let root = tmp("classify-resume");
    let args = |out: &Path| -> Vec<String> {
        [
            "classify",
            "--preset",
            "synthetic",
            "--set",
            "data.synthetic_train=1100",
            "--set",
            "data.synthetic_test=200",
            "--set",
            "data.val_size=100",
            "--set",
            "train.epochs=3",
            "--threads",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let straight = root.join("straight");
    let o = ferrolab(
        &args(&straight)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Kill the second run as soon as its first epoch's state is on disk.
    let killed = root.join("killed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(args(&killed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = common::incomplete(&killed).join("train-state/state.json");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"epochs_done\": 1")) {
        assert!(
            started.elapsed().as_secs() < 120,
            "no state after 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("report.json").exists());
    let mut resume = args(&killed);
    let at = resume.iter().position(|a| a == "--out").unwrap();
    resume[at] = "--resume".into();
    resume[at + 1] = common::incomplete(&killed).display().to_string();
    let o = ferrolab(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resume: continuing after epoch"),
        "{}",
        stderr(&o)
    );
    let read = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap()
    };
    let (a, b) = (read(&straight), read(&killed));
    for k in ["test_accuracy", "val_accuracy", "train_loss"] {
        assert_eq!(a["metrics"][k], b["metrics"][k], "{k}");
    }
    assert_eq!(
        std::fs::read_to_string(killed.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    std::fs::remove_dir_all(&root).ok();
}
