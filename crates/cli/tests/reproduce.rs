//! `ferrolab reproduce` on a fresh machine: no dataset anywhere, offline. Entries whose data
//! cannot be had are skipped with the command that fetches it, and the run still succeeds.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab_fresh, listing, stderr, tmp};
use std::time::{Duration, Instant};

#[test]
fn reproduce_offline_on_a_fresh_machine_skips_entries_without_data() {
    let root = tmp("fresh");
    let out = root.join("out");
    let started = Instant::now();
    let o = ferrolab_fresh(
        &root,
        &[
            "reproduce",
            "--offline",
            "--only",
            "secnn,apg-movielens",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let took = started.elapsed();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        took < Duration::from_secs(20),
        "skipping takes seconds, took {took:?}: {e}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for (entry, dataset) in [
        ("secnn-mr", "mr"),
        ("secnn-sst2", "sst2"),
        ("apg-movielens", "ml-100k"),
    ] {
        let fetch = format!("ferrolab data fetch {dataset}");
        assert!(md.contains(&format!("## {entry}")), "{entry}: {md}");
        let section = md.split(&format!("## {entry}")).nth(1).unwrap();
        let section = section.split("\n## ").next().unwrap();
        assert!(section.contains("skipped"), "{entry}: {section}");
        assert!(section.contains(&fetch), "{entry}: {section}");
        assert!(
            e.lines()
                .any(|l| l.contains(entry) && l.contains("skipped") && l.contains(&fetch)),
            "{entry}: stderr does not say it was skipped: {e}"
        );
    }
    // Nothing else was selected, nothing ran, and nothing was written outside --out.
    for other in ["cluster-gcn-cora", "apg-synthetic", "ckks-bench"] {
        assert!(!md.contains(other), "{other} was not selected: {md}");
    }
    assert_eq!(listing(&out), ["report.md"]);
    for d in ["cwd", "xdg", "home"] {
        assert!(
            listing(&root.join(d)).is_empty(),
            "{d}: {:?}",
            listing(&root.join(d))
        );
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn reproduce_refuses_a_non_empty_out_and_unknown_entries() {
    let root = tmp("repro-usage");
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("report.md"), "old").unwrap();
    let o = ferrolab_fresh(
        &root,
        &[
            "reproduce",
            "--offline",
            "--only",
            "secnn",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let e = assert_usage_error(&o, "reproduce --out non-empty");
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        "old"
    );

    let out2 = root.join("out2");
    let o = ferrolab_fresh(
        &root,
        &[
            "reproduce",
            "--offline",
            "--only",
            "secnn,nosuch",
            "--out",
            out2.to_str().unwrap(),
        ],
    );
    let e = assert_usage_error(&o, "reproduce --only nosuch");
    assert!(e.contains("nosuch"), "{e}");
    assert!(!out2.exists());
    std::fs::remove_dir_all(&root).ok();
}
