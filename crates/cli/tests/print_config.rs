//! `--print-config` and `--preset` for every system `ferrolab --help` lists: the printed TOML
//! documents each key and parses back to the same configuration; every preset resolves; an
//! unknown preset is a usage error naming the known ones.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, ferrolab_in, listing, stderr, stdout, systems, tmp};

/// The presets of `system`, as the unknown-preset error lists them.
fn presets(system: &str) -> Vec<String> {
    let o = ferrolab(&[system, "--preset", "no-such-preset", "--print-config"]);
    let e = assert_usage_error(&o, &format!("{system} --preset no-such-preset"));
    assert!(e.contains("no-such-preset"), "{e}");
    let known = e
        .split_once("known: ")
        .unwrap_or_else(|| panic!("{system}: the error lists the known presets: {e}"))
        .1;
    let known = known.trim().trim_end_matches(')');
    known.split(',').map(|p| p.trim().to_string()).collect()
}

/// Prints the configuration of `args`, feeds it back with `--config` and checks that the
/// second print is identical. Returns the printed text.
fn round_trip(system: &str, args: &[&str], dir: &std::path::Path) -> String {
    let what = format!("{system} {}", args.join(" "));
    let mut a = vec![system];
    a.extend_from_slice(args);
    a.push("--print-config");
    let o = ferrolab(&a);
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    let first = stdout(&o);
    assert!(!first.trim().is_empty(), "{what}: empty --print-config");
    let file = dir.join(format!("{system}-{}.toml", args.len()));
    std::fs::write(&file, &first).unwrap();
    let o = ferrolab(&[system, "--print-config", "--config", file.to_str().unwrap()]);
    assert!(o.status.success(), "{what} fed back: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        first,
        "{what}: --print-config does not round-trip"
    );
    // It parses as TOML on its own too.
    first
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{what}: not TOML: {e}"));
    first
}

#[test]
fn print_config_round_trips_for_every_system_and_preset() {
    let d = tmp("printcfg");
    for system in systems() {
        let defaults = round_trip(&system, &[], &d);
        for p in presets(&system) {
            round_trip(&system, &["--preset", &p], &d);
        }
        // Every value line is documented: a comment (the key's doc and range) precedes it.
        let lines: Vec<&str> = defaults.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "{system}: `{l}` has no doc comment above it"
            );
        }
    }
    // Optional keys and sections once set are printed as values and still round-trip.
    round_trip("secnn", &["--set", "data.train=/x/train.txt"], &d);
    round_trip(
        "cluster-gcn",
        &common::TINY_CLUSTER_GCN
            .iter()
            .copied()
            .chain(["--set", "data.synthetic.feature_signal=0.05"])
            .collect::<Vec<_>>(),
        &d,
    );
    let text = round_trip("apg", &["--set", "train.epochs=3"], &d);
    assert!(text.lines().any(|l| l.trim() == "epochs = 3"), "{text}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn every_system_has_quick_and_paper_presets_and_unknown_presets_are_usage_errors() {
    for system in systems() {
        let known = presets(&system);
        for p in ["quick", "paper"] {
            assert!(
                known.iter().any(|k| k == p),
                "{system}: no `{p}` in {known:?}"
            );
            let o = ferrolab(&[&system, "--preset", p, "--print-config"]);
            assert!(o.status.success(), "{system} --preset {p}: {}", stderr(&o));
        }
        // An unknown key is refused over a preset too.
        let o = ferrolab(&[
            &system,
            "--preset",
            "quick",
            "--set",
            "no_such_section.no_such_key=1",
            "--print-config",
        ]);
        assert_usage_error(&o, &format!("{system}: unknown key over a preset"));
    }
}

#[test]
fn print_config_writes_nothing() {
    let d = tmp("printcfg-cwd");
    for system in systems() {
        let o = ferrolab_in(&d, &[&system, "--print-config"]);
        assert!(o.status.success(), "{system}: {}", stderr(&o));
    }
    assert!(
        listing(&d).is_empty(),
        "--print-config wrote {:?}",
        listing(&d)
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    // `ferrolab … --print-config | head -1`: the reader is gone before the first write (the
    // pipe's read end is closed before the child starts, so this does not depend on timing).
    for args in [&["fedgraph", "--print-config"][..], &["--help"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ferrolab"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
}
