//! A checkpoint folder is checked before anything is built from it: `meta.json` like a config,
//! `model.safetensors`'s header against the shapes `meta.json` describes. Every damaged or
//! mismatched folder is one line naming the file, of the usage class (exit status 2).

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use ferrolab_text::checkpoint::{Checkpoint, ModelKind};
use ferrolab_text::models::ConvEncoderConfig;
use ferrolab_text::tokenize::Vocab;
use ferrolab_text::{Predictor, Secnn, SecnnConfig, TextError};
use std::path::{Path, PathBuf};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrolab-text-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_cfg(embed_dim: usize) -> SecnnConfig {
    let mut cfg = SecnnConfig::default();
    cfg.model.embed_dim = embed_dim;
    cfg.model.widths = vec![2, 3];
    cfg.model.maps = 4;
    cfg.model.se_reduction = 2;
    cfg
}

fn vocab() -> Vocab {
    let mut t = vec!["<pad>".to_string(), "<unk>".to_string()];
    t.extend(["good", "bad", "film"].map(String::from));
    Vocab::from_tokens(t)
}

/// Writes a SECNN checkpoint of `classes` classes and embedding width `embed_dim` to `dir`.
fn write(dir: &Path, embed_dim: usize, classes: usize, class_map: Vec<u32>) {
    let cfg = small_cfg(embed_dim);
    let v = vocab();
    let enc = ConvEncoderConfig::new(v.len())
        .with_embed_dim(embed_dim)
        .with_widths(cfg.model.widths.clone())
        .with_maps(cfg.model.maps);
    let dev = ferrolab_core::backend::device();
    let model = Secnn::new(&enc, classes, 0.5, 2, &dev);
    Checkpoint::new(ModelKind::Secnn, &cfg, classes, v)
        .with_class_map(class_map)
        .save(&model, dir)
        .unwrap();
}

fn load_err(dir: &Path) -> TextError {
    Predictor::load(dir).unwrap_err()
}

fn assert_one_line_usage(e: &TextError, needles: &[&str]) {
    let msg = e.to_string();
    assert!(e.is_usage(), "not a usage error: {msg}");
    assert!(!msg.contains('\n'), "more than one line: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
}

fn edit_meta(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("meta.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn a_sound_checkpoint_loads_and_reports_the_data_labels() {
    let d = tmp("ok");
    write(&d, 6, 2, vec![5, 2_147_483_648]);
    let p = Predictor::load(&d).unwrap();
    assert_eq!(p.labels(), vec![5, 2_147_483_648]);
    let got = p.predict(&["good film".into(), "bad".into()]);
    assert!(
        got.iter().all(|(l, _)| [5, 2_147_483_648].contains(l)),
        "{got:?}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn damaged_meta_json_is_refused_before_anything_is_built() {
    let cases: [(&str, serde_json::Value, &str); 8] = [
        ("dropout", serde_json::json!(1.0), "dropout"),
        ("embed_dim", serde_json::json!(0), "embed_dim"),
        (
            "embed_dim",
            serde_json::json!(1_000_000_000u64),
            "embed_dim",
        ),
        ("widths", serde_json::json!([]), "widths"),
        ("widths", serde_json::json!([0]), "widths"),
        ("maps", serde_json::json!(0), "maps"),
        ("classes", serde_json::json!(1), "classes"),
        ("se_reduction", serde_json::json!(0), "se_reduction"),
    ];
    for (i, (key, value, needle)) in cases.into_iter().enumerate() {
        let d = tmp(&format!("meta{i}"));
        write(&d, 6, 2, vec![0, 1]);
        edit_meta(&d, |m| m[key] = value.clone());
        let e = load_err(&d);
        assert_one_line_usage(&e, &["meta.json", needle]);
        std::fs::remove_dir_all(&d).ok();
    }
    // A class map that does not match the class count.
    let d = tmp("map");
    write(&d, 6, 2, vec![0, 1]);
    edit_meta(&d, |m| m["class_map"] = serde_json::json!([3]));
    assert_one_line_usage(&load_err(&d), &["meta.json", "class_map"]);
    std::fs::write(d.join("meta.json"), "{not json").unwrap();
    assert_one_line_usage(&load_err(&d), &["meta.json"]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn missing_parts_and_damaged_weights_are_all_usage_errors() {
    let d = tmp("parts");
    write(&d, 6, 2, vec![0, 1]);
    let w = d.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();

    // Truncated: the header promises more data than the file holds.
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_usage(&load_err(&d), &["model.safetensors", "truncated"]);
    // Too short for a header at all.
    std::fs::write(&w, &bytes[..5]).unwrap();
    assert_one_line_usage(&load_err(&d), &["model.safetensors"]);
    // Padded: bytes after the last tensor.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 16]);
    std::fs::write(&w, &padded).unwrap();
    assert_one_line_usage(&load_err(&d), &["model.safetensors"]);
    // Garbage header.
    let mut garbage = bytes.clone();
    for b in garbage.iter_mut().skip(8).take(20) {
        *b = b'#';
    }
    std::fs::write(&w, &garbage).unwrap();
    assert_one_line_usage(&load_err(&d), &["model.safetensors"]);
    // Missing weights and missing meta.json: the same class as damage.
    std::fs::remove_file(&w).unwrap();
    assert_one_line_usage(&load_err(&d), &["model.safetensors"]);
    std::fs::write(&w, &bytes).unwrap();
    assert!(Predictor::load(&d).is_ok());
    std::fs::remove_file(d.join("meta.json")).unwrap();
    assert_one_line_usage(&load_err(&d), &["meta.json"]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn weights_of_another_shape_name_the_tensor_and_both_shapes() {
    let d = tmp("shape");
    write(&d, 6, 2, vec![0, 1]);
    let other = tmp("shape-other");
    write(&other, 8, 2, vec![0, 1]);
    std::fs::copy(other.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    let e = load_err(&d);
    assert_one_line_usage(&e, &["encoder.embedding.weight", "[5, 8]", "[5, 6]"]);
    assert!(!e.to_string().contains("Summary"), "{e}");

    // Only the class count differs: the output layer is named.
    write(&other, 6, 3, vec![0, 1, 2]);
    std::fs::copy(other.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    assert_one_line_usage(&load_err(&d), &["output.", "[3]", "[2]"]);

    // A vocabulary that does not match the embedding rows.
    write(&d, 6, 2, vec![0, 1]);
    std::fs::write(d.join("vocab.txt"), "<pad>\n<unk>\ngood").unwrap();
    assert_one_line_usage(
        &load_err(&d),
        &["encoder.embedding.weight", "[5, 6]", "[3, 6]"],
    );
    std::fs::remove_dir_all(&d).ok();
    std::fs::remove_dir_all(&other).ok();
}

#[cfg(unix)]
#[test]
fn a_fifo_as_checkpoint_part_is_refused_without_blocking() {
    let d = tmp("fifo");
    write(&d, 6, 2, vec![0, 1]);
    std::fs::remove_file(d.join("meta.json")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(d.join("meta.json"))
        .status();
    // mkfifo is coreutils': a machine without it would silently skip the check.
    assert!(status.is_ok_and(|s| s.success()), "mkfifo failed");
    assert_one_line_usage(&load_err(&d), &["meta.json", "not a regular file"]);
    std::fs::remove_dir_all(&d).ok();
}
