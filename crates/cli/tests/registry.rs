//! Every system the binary lists is complete: `quick` and `paper` presets, at least one
//! `reproduce` entry named `<system>-<dataset>` that `--only <system>` selects, and a row in
//! README.md's systems table with its command.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, ferrolab_fresh, stderr, systems, tmp};

/// Every `reproduce` entry, as the usage error for an unknown `--only` name lists them.
fn entries() -> Vec<String> {
    let o = ferrolab(&["reproduce", "--only", "nosuch", "--offline"]);
    let e = assert_usage_error(&o, "reproduce --only nosuch");
    let known = e
        .split_once("known: ")
        .unwrap_or_else(|| panic!("the error lists the known entries: {e}"))
        .1;
    let known = known.trim().trim_end_matches(')');
    let v: Vec<String> = known.split(',').map(|p| p.trim().to_string()).collect();
    assert!(v.iter().all(|n| !n.is_empty()), "{e}");
    v
}

#[test]
fn every_system_has_quick_and_paper_presets() {
    for system in systems() {
        for p in ["quick", "paper"] {
            let o = ferrolab(&[&system, "--preset", p, "--print-config"]);
            assert!(o.status.success(), "{system} --preset {p}: {}", stderr(&o));
        }
    }
}

#[test]
fn every_system_has_a_reproduce_entry_that_only_selects() {
    let entries = entries();
    for system in systems() {
        let prefix = format!("{system}-");
        let own: Vec<&String> = entries.iter().filter(|e| e.starts_with(&prefix)).collect();
        assert!(
            !own.is_empty(),
            "{system}: no reproduce entry named `{system}-<dataset>` in {entries:?}"
        );
    }
    // Every entry belongs to a listed system.
    let systems = systems();
    for e in &entries {
        assert!(
            systems.iter().any(|s| e.starts_with(&format!("{s}-"))),
            "entry {e} belongs to no system in --help ({systems:?})"
        );
    }
    // `--only <system>` and `--only <entry>` are accepted. Checked without running anything:
    // with a non-empty --out, an accepted selection fails on the folder, not on the name.
    let root = tmp("registry-only");
    let out = root.join("taken");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("report.md"), "old").unwrap();
    for name in systems.iter().chain(entries.iter()) {
        let o = ferrolab_fresh(
            &root,
            &[
                "reproduce",
                "--offline",
                "--only",
                name,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let e = assert_usage_error(&o, &format!("reproduce --only {name}"));
        assert!(
            e.contains("already exists") && !e.contains("unknown"),
            "--only {name} is not accepted: {e}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        "old"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// Whether `line` holds `ferrolab <system>` or `-- <system>` followed by something that
/// cannot continue a system name (so `secnn` does not match `secnn-x`).
fn names_command(line: &str, system: &str) -> bool {
    ["ferrolab ", "-- "].iter().any(|lead| {
        let pat = format!("{lead}{system}");
        line.match_indices(&pat).any(|(i, _)| {
            let next = line[i + pat.len()..].chars().next();
            !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    })
}

#[test]
fn readme_systems_table_has_a_row_with_each_systems_command() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    // The rows of the first table under the `## Systems` heading (not its separator).
    let after = readme
        .split_once("\n## Systems")
        .unwrap_or_else(|| panic!("README.md has no `## Systems` section"))
        .1;
    let rows: Vec<&str> = after
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("|---") && !l.starts_with("| ---"))
        .collect();
    assert!(rows.len() > 1, "README.md's systems section has no table");
    let mut missing = Vec::new();
    for system in systems() {
        if !rows.iter().any(|r| names_command(r, &system)) {
            missing.push(format!("`ferrolab {system} ...` (or `-- {system}`)"));
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's systems table has no row naming {}",
        missing.join(", ")
    );
}

#[test]
fn names_command_matches_whole_system_names() {
    assert!(names_command(
        "| SECNN | `ferrolab secnn --preset paper` |",
        "secnn"
    ));
    assert!(names_command(
        "| x | `cargo run --release -- ckks` |",
        "ckks"
    ));
    assert!(!names_command("| x | `ferrolab secnn-x` |", "secnn"));
    assert!(!names_command("| x | `ferrolab apgx` |", "apg"));
}
