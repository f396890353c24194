//! `ferrolab layer-importance`: the public sub-commands as `--help` lists them, and the issue's
//! bad input at the command line — an unknown stage, a sparsity outside [0, 1), a bit-width
//! outside 2–8, a checkpoint that does not match its architecture, a damaged unit file — each
//! one `error:` line, exit 2, nothing written.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, incomplete, listing, stderr, stdout, tmp};
use std::path::Path;

/// One quarter-width ResNet-8 and one MLP on generated images, the dataset stage only.
const TINY: &[&str] = &[
    "--preset",
    "quick",
    "--threads",
    "2",
    "--set",
    "data.dataset=synthetic",
    "--set",
    "data.train_images=300",
    "--set",
    "data.eval_images=100",
    "--set",
    "zoo.epochs=1",
    "--set",
    "budget.finetune_images=100",
    "--set",
    "task.stage=dataset",
];

fn tiny_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["layer-importance"];
    v.extend(TINY);
    v.extend(extra);
    v
}

#[test]
fn help_lists_the_three_stages() {
    let o = ferrolab(&["layer-importance", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for stage in ["dataset", "benchmark", "budget"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(stage)),
            "{stage} missing from --help:\n{text}"
        );
    }
    for stage in ["dataset", "benchmark", "budget"] {
        let o = ferrolab(&["layer-importance", stage, "--help"]);
        assert!(o.status.success(), "{stage}: {}", stderr(&o));
        assert!(stdout(&o).contains("task.stage"), "{stage}: {}", stdout(&o));
    }
}

#[test]
fn unknown_stage_is_a_usage_error_and_writes_nothing() {
    let d = tmp("li-input-stage");
    let out = d.join("run");
    let out_s = out.display().to_string();
    let o = ferrolab(&["layer-importance", "datasets", "--out", &out_s]);
    let e = assert_usage_error(&o, "positional stage");
    assert!(e.contains("datasets"), "{e}");
    let o = ferrolab(&[
        "layer-importance",
        "--set",
        "task.stage=sweep",
        "--out",
        &out_s,
    ]);
    let e = assert_usage_error(&o, "--set task.stage");
    assert!(e.contains("task.stage"), "{e}");
    assert!(!out.exists() && !incomplete(&out).exists());
    assert!(listing(&d).is_empty(), "{:?}", listing(&d));
}

#[test]
fn out_of_range_sparsity_and_bit_width_are_usage_errors() {
    let d = tmp("li-input-range");
    let out = d.join("run");
    let out_s = out.display().to_string();
    for (set, key) in [
        ("grid.sparsities=[0.5, 1.0]", "grid.sparsities"),
        ("grid.sparsities=[-0.25]", "grid.sparsities"),
        ("budget.sparsities=[1.5]", "budget.sparsities"),
        ("grid.bits=[4, 9]", "grid.bits"),
        ("grid.bits=[1]", "grid.bits"),
        ("budget.avg_bits=[8.5]", "budget.avg_bits"),
    ] {
        let o = ferrolab(&tiny_args(&["--set", set, "--out", &out_s]));
        let e = assert_usage_error(&o, set);
        assert!(e.contains(key), "{set}: {e}");
        assert!(listing(&d).is_empty(), "{set}: {:?}", listing(&d));
    }
}

/// A finished tiny run turned back into an incomplete one without the probe unit of `id`,
/// so that `--resume` loads that member's checkpoint again.
fn unfinished_run(d: &Path, id: &str) -> (String, std::path::PathBuf) {
    let out = d.join("run");
    let out_s = out.display().to_string();
    let o = ferrolab(&tiny_args(&["--out", &out_s]));
    assert!(o.status.success(), "{}", stderr(&o));
    let work = incomplete(&out);
    std::fs::rename(&out, &work).unwrap();
    std::fs::remove_file(work.join("report.json")).unwrap();
    std::fs::remove_file(work.join(format!("units/probe-{id}.json"))).unwrap();
    (out_s, work)
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for sub in ["", "models", "units"] {
        let p = dir.join(sub);
        for name in listing(&p) {
            let f = p.join(&name);
            if f.is_file() {
                v.push((format!("{sub}/{name}"), std::fs::read(f).unwrap()));
            }
        }
    }
    v
}

#[test]
fn checkpoint_of_another_architecture_is_a_usage_error() {
    let d = tmp("li-input-ckpt");
    let (out_s, work) = unfinished_run(&d, "mlp-s0");
    std::fs::copy(
        work.join("models/resnet8-s0.safetensors"),
        work.join("models/mlp-s0.safetensors"),
    )
    .unwrap();
    let before = files(&work);
    let o = ferrolab(&tiny_args(&["--resume", &out_s]));
    let e = assert_usage_error(&o, "mismatched checkpoint");
    assert!(e.contains("mlp-s0.safetensors"), "{e}");
    assert_eq!(files(&work), before, "nothing written");
    assert!(!Path::new(&out_s).exists());
}

#[test]
fn damaged_unit_file_is_a_usage_error() {
    let d = tmp("li-input-unit");
    let (out_s, work) = unfinished_run(&d, "mlp-s0");
    // The ResNet's probe record with one layer's drops cut off: it parses, but indexing it
    // would run past the end.
    let unit = work.join("units/probe-resnet8-s0.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&unit).unwrap()).unwrap();
    let drops = v["drops"]["quant"]["b4"].as_array_mut().unwrap();
    drops.pop();
    std::fs::write(&unit, v.to_string()).unwrap();
    let before = files(&work);
    let o = ferrolab(&tiny_args(&["--resume", &out_s]));
    let e = assert_usage_error(&o, "damaged unit");
    assert!(e.contains("probe-resnet8-s0.json"), "{e}");
    assert!(e.contains("drops.quant.b4"), "{e}");
    assert_eq!(files(&work), before, "nothing written");
}
