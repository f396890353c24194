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

/// Probe output rows keyed by (layer, family, setting): (accuracy, drop, drop_std, draws).
fn probe_rows(text: &str) -> std::collections::BTreeMap<(String, String, String), Vec<f64>> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("layer\tparams\tfamily\tsetting\taccuracy\tdrop\tdrop_std\tnormalized_drop\tdraws")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 9, "{l}");
            let nums = [4, 5, 6, 8]
                .iter()
                .map(|&i| f[i].parse().unwrap())
                .collect();
            ((f[0].into(), f[2].into(), f[3].into()), nums)
        })
        .collect()
}

#[test]
fn probe_repeats_the_datasets_drops_and_refuses_bad_input_writing_nothing() {
    let d = tmp("li-probe");
    let out = d.join("run");
    let out_s = out.display().to_string();
    let o = ferrolab(&tiny_args(&["--out", &out_s]));
    assert!(o.status.success(), "{}", stderr(&o));
    let ds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    let rec = ds["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "resnet8-s0")
        .unwrap();
    let names: Vec<String> = rec["layer_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let (first, last) = (names[0].clone(), names[names.len() - 1].clone());
    let probe = |extra: &[&str]| {
        let mut a = vec![
            "layer-importance",
            "probe",
            "--run",
            &out_s,
            "--model",
            "resnet8-s0",
            "--threads",
            "2",
        ];
        a.extend(extra);
        ferrolab(&a)
    };
    // The quick grid's settings (sparsity 0.5, 4 bits, 10 flips, rate 1e-3, 2 flip seeds):
    // the same values dataset.json holds for those layers, to the printed digit.
    let o = probe(&[
        "--layer",
        &last,
        "--layer",
        &first,
        "--prune",
        "0.5",
        "--prune-channels",
        "0.5",
        "--bits",
        "4",
        "--flips",
        "10",
        "--ber",
        "0.001",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = probe_rows(&stdout(&o));
    assert_eq!(rows.len(), 10);
    for (layer, li) in [(&first, 0), (&last, names.len() - 1)] {
        for (family, setting) in [
            ("prune", "s0.5"),
            ("prune_structured", "s0.5"),
            ("quant", "b4"),
            ("flip_count", "m10"),
            ("flip_rate", "ber0.001"),
        ] {
            let got = &rows[&(layer.clone(), family.to_string(), setting.to_string())];
            let want = rec["drops"][family][setting][li].as_f64().unwrap();
            assert!(
                (got[1] - want).abs() < 6e-5,
                "{layer} {family} {setting}: {got:?} vs {want}"
            );
            let draws = if family.starts_with("flip") { 2.0 } else { 1.0 };
            assert_eq!(got[3], draws, "{layer} {family}");
            if family.starts_with("flip") {
                let s = rec["drop_std"][family][setting][li].as_f64().unwrap();
                assert!(
                    (got[2] - s).abs() < 6e-5,
                    "{layer} {family} std: {got:?} vs {s}"
                );
            }
        }
    }
    // Every layer when none is named; settings outside the grid are measured too.
    let o = probe(&["--bits", "3", "--flip-seeds", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(probe_rows(&stdout(&o)).len(), names.len());
    assert!(
        stderr(&o).contains("unperturbed accuracy"),
        "{}",
        stderr(&o)
    );

    let before = files(&out);
    let elsewhere = d.join("not-a-run");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let elsewhere_s = elsewhere.display().to_string();
    for (args, needle) in [
        (vec!["--prune", "1.0"], "--prune 1"),
        (vec!["--prune", "-0.25"], "--prune -0.25"),
        (vec!["--prune-channels", "1.5"], "--prune-channels"),
        (vec!["--bits", "9"], "--bits 9"),
        (vec!["--bits", "1"], "--bits 1"),
        (vec!["--ber", "-0.001"], "--ber -0.001"),
        (vec!["--ber", "2"], "--ber 2"),
        (vec!["--flips", "-1"], "-1"),
        (vec!["--bits", "4", "--flip-seeds", "0"], "--flip-seeds 0"),
        (vec!["--layer", "nope", "--bits", "4"], "nope"),
        (vec![], "at least one of"),
    ] {
        let o = probe(&args);
        let e = assert_usage_error(&o, needle);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    let o = ferrolab(&[
        "layer-importance",
        "probe",
        "--run",
        &out_s,
        "--model",
        "vgg-s0",
        "--bits",
        "4",
    ]);
    let e = assert_usage_error(&o, "unknown member");
    assert!(e.contains("resnet8-s0, mlp-s0"), "{e}");
    let o = ferrolab(&[
        "layer-importance",
        "probe",
        "--run",
        &elsewhere_s,
        "--model",
        "mlp-s0",
        "--bits",
        "4",
    ]);
    let e = assert_usage_error(&o, "not a run folder");
    assert!(e.contains("config.toml"), "{e}");
    assert_eq!(files(&out), before, "nothing written");

    // A checkpoint of another architecture under the member's name.
    std::fs::copy(
        out.join("models/mlp-s0.safetensors"),
        out.join("models/resnet8-s0.safetensors"),
    )
    .unwrap();
    let before = files(&out);
    let o = probe(&["--bits", "4"]);
    let e = assert_usage_error(&o, "mismatched checkpoint");
    assert!(e.contains("resnet8-s0.safetensors"), "{e}");
    assert_eq!(files(&out), before, "nothing written");
    assert!(listing(&elsewhere).is_empty());
}
