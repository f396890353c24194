//! `ferrolab reproduce`: every registered system's entries, one folder each, one `report.md`.
//!
//! Before anything runs, the datasets the chosen entries need are located, and those that no
//! location holds are fetched (one probe per host; `--offline` skips the fetch). An entry whose
//! dataset cannot be had is skipped with the command that fetches it; the exit status is 0
//! unless an entry that ran failed.

use crate::common::UsageError;
use crate::runner::{RunOptions, execute};
use clap::Args;
use ferrolab_core::Outcome;
use ferrolab_core::run::write_atomic;
use ferrolab_core::system::{DynSystem, Entry, Resolved};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Arguments of `ferrolab reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Each entry's `quick` preset: a smoke run of the claim, ≤ 60 s per entry (the default).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Each entry's `paper` preset (paper-scale settings).
    #[arg(long)]
    pub full: bool,
    /// Only these entries or systems (comma-separated; `secnn` selects both of its datasets).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub only: Vec<String>,
    /// Do not download missing datasets (their entries are skipped).
    #[arg(long)]
    pub offline: bool,
    /// Output folder (default: runs/reproduce-<unix time>); must not exist yet.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub run: crate::common::RunArgs,
}

/// Every `(system, entry)` of the registry, in registry order.
pub fn all_entries() -> Vec<(&'static dyn DynSystem, Entry)> {
    crate::registry::systems()
        .into_iter()
        .flat_map(|s| s.entries().into_iter().map(move |e| (s, e)))
        .collect()
}

/// Runs the selected entries and writes `report.md`.
pub fn run(args: &ReproduceArgs) -> anyhow::Result<()> {
    crate::runner::check_threads(args.run.threads)?;
    // Each entry parses it again; a bad size is a usage error before any folder is made.
    if let Some(t) = &args.run.max_memory {
        ferrolab_core::guard::parse_size(t)?;
    }
    let all = all_entries();
    for o in &args.only {
        if !all.iter().any(|(s, e)| e.name == o || s.name() == o) {
            let names: Vec<&str> = all.iter().map(|(_, e)| e.name).collect();
            return Err(UsageError(format!(
                "--only: unknown system or entry `{o}` (known: {})",
                names.join(", ")
            ))
            .into());
        }
    }
    let chosen: Vec<&(&'static dyn DynSystem, Entry)> = all
        .iter()
        .filter(|(s, e)| {
            args.only.is_empty() || args.only.iter().any(|o| o == e.name || o == s.name())
        })
        .collect();
    // Missing datasets are fetched into `--data-dir`, so it may be made here; a file there
    // would fail every entry.
    if let Some(d) = &args.run.data_dir
        && d.exists()
        && !d.is_dir()
    {
        return Err(UsageError(format!("--data-dir {} is not a folder", d.display())).into());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| ferrolab_core::run::default_out("reproduce"));
    ferrolab_core::run::ensure_fresh(&out)?;
    let mode = if args.full { "full" } else { "quick" };
    // Resolve every entry's configuration first: a broken preset is a bug to report before
    // any work, and the configurations say which datasets are needed.
    let mut plans: Vec<(&'static dyn DynSystem, &Entry, Resolved)> = Vec::new();
    for (s, e) in chosen {
        let preset = if args.full { e.full } else { e.quick };
        let r = s.resolve(Some(preset), None, &[])?;
        plans.push((*s, e, r));
    }
    let mut needed: Vec<&'static str> = plans
        .iter()
        .flat_map(|(_, _, r)| r.datasets.iter().copied())
        .collect();
    needed.sort_unstable();
    needed.dedup();
    let data_dir = args.run.data_dir.as_deref();
    let sw = ferrolab_core::resources::Stopwatch::start();
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|d| !ferrolab_data::lookup::is_available(data_dir, d))
        .collect();
    let mut unavailable: std::collections::BTreeMap<String, String> = Default::default();
    if !missing.is_empty() {
        if args.offline {
            eprintln!("--offline: not fetching {}", missing.join(", "));
        } else {
            eprintln!("fetching {}", missing.join(", "));
        }
        for (name, r) in ferrolab_data::fetch::fetch_missing(&missing, data_dir, args.offline) {
            match r {
                Ok(p) => eprintln!("  {name}: {}", p.display()),
                Err(e) => {
                    eprintln!("  {name}: {e}");
                    unavailable.insert(name, e.to_string());
                }
            }
        }
        eprintln!("fetch phase: {:.1} s", sw.seconds());
    }
    if let Some(d) = data_dir {
        std::fs::create_dir_all(d).map_err(|e| ferrolab_core::CoreError::io(d, e))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| ferrolab_core::CoreError::io(&out, e))?;
    let threads = crate::runner::start_threads(args.run.threads)?;
    let mut md = format!(
        "# ferrolab reproduce ({mode})\n\nSeed {}, {threads} threads, backend {}. Each section: ours vs the baseline measured in the same run \
         (mean ± std over runs), and the paper's figure where one exists.{}\n\n",
        args.run.seed,
        ferrolab_core::backend::BACKEND_NAME,
        if args.full {
            ""
        } else {
            " **Quick mode: each entry is a smoke run of the claim (small settings), not the paper-scale figure; `--full` runs those.**"
        }
    );
    let (mut failures, mut skipped, mut ran) = (0, 0, 0);
    for (s, e, resolved) in &plans {
        let missing_here: Vec<&str> = resolved
            .datasets
            .iter()
            .copied()
            .filter(|d| unavailable.contains_key(*d))
            .collect();
        if !missing_here.is_empty() {
            skipped += 1;
            let msg = missing_here
                .iter()
                .map(|d| format!("dataset {d} unavailable (run `ferrolab data fetch {d}`)"))
                .collect::<Vec<_>>()
                .join("; ");
            eprintln!("== {}: skipped: {msg}", e.name);
            let _ = write!(md, "## {}\n\n{}\n\n**skipped:** {msg}\n\n", e.name, e.what);
            write_atomic(&out.join("report.md"), md.as_bytes())?;
            continue;
        }
        eprintln!("== {} ({mode}): {}", e.name, e.what);
        let opts = RunOptions {
            out: Some(out.join(e.name)),
            resume: None,
            data_dir: args.run.data_dir.clone(),
            seed: args.run.seed,
            threads: args.run.threads,
            max_memory: args.run.max_memory.clone(),
        };
        let sw = ferrolab_core::resources::Stopwatch::start();
        ran += 1;
        match execute(*s, resolved, &opts) {
            Ok((o, _)) => section(&mut md, e, &o, sw.seconds()),
            Err(err) => {
                failures += 1;
                let line = crate::common::one_line(&err);
                eprintln!("{}: {line}", e.name);
                let _ = write!(md, "## {}\n\n{}\n\n**failed:** {line}\n\n", e.name, e.what);
            }
        }
        write_atomic(&out.join("report.md"), md.as_bytes())?;
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    eprintln!(
        "wrote {} ({ran} ran, {skipped} skipped, {failures} failed)",
        out.join("report.md").display()
    );
    if failures > 0 {
        anyhow::bail!(
            "{failures} of {ran} entries failed; see {}",
            out.join("report.md").display()
        );
    }
    Ok(())
}

fn fmt_pm(m: &std::collections::BTreeMap<String, f64>, key: &str) -> String {
    match (m.get(key), m.get(&format!("{key}_std"))) {
        (Some(v), Some(s)) => format!("{v:.4} ± {s:.4}"),
        (Some(v), None) => format!("{v:.4}"),
        _ => "–".into(),
    }
}

/// The table's columns: metrics with a `_std` companion that some baseline also reports (the
/// aligned keys); when no baseline shares one, every metric with a `_std` companion; when
/// there are none (a benchmark), every metric.
pub fn headline(r: &ferrolab_core::Report) -> Vec<String> {
    let with_std: Vec<&String> = r
        .metrics
        .keys()
        .filter(|k| !k.ends_with("_std") && r.metrics.contains_key(&format!("{k}_std")))
        .collect();
    let aligned: Vec<String> = with_std
        .iter()
        .filter(|k| r.baselines.values().any(|b| b.contains_key(k.as_str())))
        .map(|k| k.to_string())
        .collect();
    if !aligned.is_empty() {
        aligned
    } else if !with_std.is_empty() {
        with_std.into_iter().cloned().collect()
    } else {
        r.metrics.keys().cloned().collect()
    }
}

fn table(md: &mut String, r: &ferrolab_core::Report, o: &Outcome, cols: &[String]) {
    let _ = writeln!(md, "| model | {} |", cols.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(cols.len()));
    let row = |m: &std::collections::BTreeMap<String, f64>| {
        cols.iter()
            .map(|k| fmt_pm(m, k))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let _ = writeln!(md, "| **{}** (ours) | {} |", r.system, row(&r.metrics));
    for (b, m) in &r.baselines {
        let _ = writeln!(md, "| {b} (baseline, same run) | {} |", row(m));
    }
    for p in &o.paper {
        let cells: Vec<String> = cols
            .iter()
            .map(|k| {
                if *k == p.metric {
                    format!("{:.4}", p.value)
                } else {
                    "–".into()
                }
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} (paper: {}) | {} |",
            p.model,
            p.source,
            cells.join(" | ")
        );
    }
}

fn section(md: &mut String, e: &Entry, o: &Outcome, seconds: f64) {
    let r = &o.report;
    let name = e.name;
    let _ = write!(
        md,
        "## {name}\n\n{}. Dataset `{}`; {seconds:.0} s.\n\n",
        e.what, r.dataset
    );
    let cols = headline(r);
    if r.baselines.is_empty() && o.paper.is_empty() && cols.len() > 8 {
        // A benchmark (no baseline in the run): one row per figure reads better than one
        // very wide row.
        let _ = writeln!(md, "| figure | {} (ours) |", r.system);
        let _ = writeln!(md, "|---|---:|");
        for k in &cols {
            let _ = writeln!(md, "| `{k}` | {} |", fmt_pm(&r.metrics, k));
        }
    } else {
        table(md, r, o, &cols);
    }
    md.push('\n');
    for n in &r.notes {
        let _ = writeln!(md, "- {n}");
    }
    if !o.curves.is_empty() {
        let _ = write!(md, "\n![training curves]({name}/curves.svg)\n");
    }
    let _ = write!(md, "\nFull figures: `{name}/report.json`.\n\n");
}
