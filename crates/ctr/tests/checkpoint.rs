//! An apg checkpoint folder is checked before anything is built from it: `meta.json` against
//! the config's ranges, `model.safetensors`'s header against the shapes `meta.json` describes.
//! Every damaged or mismatched folder is one line naming the file, of the usage class.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use ferrolab_ctr::model::ApgSpec;
use ferrolab_ctr::schema::{Field, Layout, Schema};
use ferrolab_ctr::{BaseModel, ConditionMode, CtrError, CtrNet, ModelSpec, Predictor};
use std::path::{Path, PathBuf};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrolab-ctr-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spec(embed_dim: usize) -> ModelSpec {
    ModelSpec {
        base: BaseModel::Deepfm,
        embed_dim,
        hidden: vec![6, 4],
        cross_layers: 0,
        apg: Some(ApgSpec {
            rank: 2,
            overparam: 0,
            condition: ConditionMode::SelfWise,
            condition_fields: Vec::new(),
            hyper_hidden: 5,
            generate_bias: true,
        }),
    }
}

fn write(dir: &Path, embed_dim: usize) {
    let schema = Schema {
        fields: vec![
            Field::categorical("user", vec!["u1".into(), "u2".into()]),
            Field::categorical("item", vec!["i1".into(), "i2".into(), "i3".into()]),
        ],
    };
    let layout = Layout::new(schema).unwrap();
    let s = spec(embed_dim);
    let dev = ferrolab_core::backend::device();
    let net = CtrNet::new(&s, &layout, &dev).unwrap();
    ferrolab_ctr::checkpoint::save(net, &s, &layout, "t", dir).unwrap();
}

fn assert_one_line_usage(e: &CtrError, needles: &[&str]) {
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
fn damaged_meta_json_is_refused_before_anything_is_built() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|m| m["spec"]["embed_dim"] = 0.into()), "embed_dim"),
        (
            Box::new(|m| m["spec"]["embed_dim"] = 1_000_000_000u64.into()),
            "embed_dim",
        ),
        (
            Box::new(|m| m["spec"]["hidden"] = serde_json::json!([])),
            "hidden",
        ),
        (Box::new(|m| m["spec"]["apg"]["rank"] = 0.into()), "rank"),
        (
            Box::new(|m| m["spec"]["cross_layers"] = 1000.into()),
            "cross_layers",
        ),
        (
            Box::new(|m| m["schema"]["fields"][0]["max_len"] = 0.into()),
            "max_len",
        ),
        (
            Box::new(|m| m["schema"]["fields"] = serde_json::json!([])),
            "no fields",
        ),
        // A meta.json that asks for a huge table: refused by the header comparison.
        (
            Box::new(|m| m["spec"]["hidden"] = serde_json::json!([4096, 4096, 4096])),
            "[4096]",
        ),
    ];
    for (i, (edit, needle)) in cases.into_iter().enumerate() {
        let d = tmp(&format!("meta{i}"));
        write(&d, 3);
        edit_meta(&d, |m| edit(m));
        let e = Predictor::load(&d).unwrap_err();
        assert_one_line_usage(&e, &[needle]);
        std::fs::remove_dir_all(&d).ok();
    }
}

#[test]
fn damaged_or_mismatched_weights_are_one_line_usage_errors() {
    let d = tmp("weights");
    write(&d, 3);
    assert!(Predictor::load(&d).is_ok());
    let w = d.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 7]).unwrap();
    assert_one_line_usage(&Predictor::load(&d).unwrap_err(), &["model.safetensors"]);
    std::fs::remove_file(&w).unwrap();
    assert_one_line_usage(
        &Predictor::load(&d).unwrap_err(),
        &["model.safetensors", "not found"],
    );
    // Weights of a model with another embedding width.
    let other = tmp("weights-other");
    write(&other, 5);
    std::fs::copy(other.join("model.safetensors"), &w).unwrap();
    let e = Predictor::load(&d).unwrap_err();
    assert_one_line_usage(&e, &["apg.0.hyper_in.weight", "[10, 5]", "[6, 5]"]);
    std::fs::remove_file(d.join("meta.json")).unwrap();
    assert_one_line_usage(&Predictor::load(&d).unwrap_err(), &["meta.json"]);
    std::fs::remove_dir_all(&d).ok();
    std::fs::remove_dir_all(&other).ok();
}
