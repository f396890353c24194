//! `ferrolab reproduce`: every system that exists, one folder each, one `report.md`.

use crate::common::{CommonArgs, UsageError};
use clap::Args;
use ferrolab_core::run::{Outcome, write_atomic};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Arguments of `ferrolab reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Small settings that finish in minutes on two cores (the default).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// The paper-scale settings.
    #[arg(long)]
    pub full: bool,
    /// Only these systems (comma-separated; `secnn` selects both of its datasets).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub only: Vec<String>,
    /// Output folder (default: runs/reproduce-<unix time>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub run: crate::common::RunArgs,
}

/// One reproducible experiment.
struct Entry {
    name: &'static str,
    system: &'static str,
    what: &'static str,
    run: fn(full: bool, common: &CommonArgs) -> anyhow::Result<Outcome>,
}

fn secnn_preset(preset: &str, full: bool, common: &CommonArgs) -> anyhow::Result<Outcome> {
    let mut cfg = if full {
        let mut c = ferrolab_text::SecnnConfig::default();
        c.data.preset = preset.into();
        c
    } else {
        ferrolab_text::SecnnConfig::quick(preset)
    };
    if full && preset == "mr" {
        cfg.data.folds = 10;
    }
    crate::secnn_cmd::train(&cfg, common)
}

fn cluster_gcn_cora(full: bool, common: &CommonArgs) -> anyhow::Result<Outcome> {
    let cfg = if full {
        ferrolab_graph::ClusterGcnConfig::default()
    } else {
        ferrolab_graph::ClusterGcnConfig::quick()
    };
    crate::cluster_gcn_cmd::train(&cfg, common)
}

fn apg_dataset(dataset: &str, full: bool, common: &CommonArgs) -> anyhow::Result<Outcome> {
    let mut cfg = if full {
        ferrolab_ctr::ApgExperimentConfig::default()
    } else {
        ferrolab_ctr::ApgExperimentConfig::quick()
    };
    cfg.data.dataset = dataset.into();
    crate::apg_cmd::train(&cfg, common)
}

fn entries() -> Vec<Entry> {
    vec![
        Entry {
            name: "secnn-mr",
            system: "secnn",
            what: "SECNN vs Kim-CNN-rand on MR (movie-review polarity)",
            run: |full, c| secnn_preset("mr", full, c),
        },
        Entry {
            name: "secnn-sst2",
            system: "secnn",
            what: "SECNN vs Kim-CNN-rand on SST-2",
            run: |full, c| secnn_preset("sst2", full, c),
        },
        Entry {
            name: "cluster-gcn-cora",
            system: "cluster-gcn",
            what: "Cluster-GCN (METIS) vs full-batch GCN and random partitions on Cora",
            run: cluster_gcn_cora,
        },
        Entry {
            name: "apg-movielens",
            system: "apg",
            what: "APG vs plain Wide&Deep / DeepFM / DCNv2 on MovieLens-100k CTR",
            run: |full, c| apg_dataset("movielens", full, c),
        },
        Entry {
            name: "apg-synthetic",
            system: "apg",
            what: "APG vs plain Wide&Deep / DeepFM / DCNv2 on synthetic group-dependent CTR data",
            run: |full, c| apg_dataset("synthetic", full, c),
        },
    ]
}

/// Runs the selected systems and writes `report.md`.
pub fn run(args: &ReproduceArgs) -> anyhow::Result<()> {
    let all = entries();
    for o in &args.only {
        if !all.iter().any(|e| e.name == o || e.system == o) {
            let names: Vec<&str> = all.iter().map(|e| e.name).collect();
            return Err(UsageError(format!(
                "--only: unknown system `{o}` (known: {})",
                names.join(", ")
            ))
            .into());
        }
    }
    let chosen: Vec<&Entry> = all
        .iter()
        .filter(|e| args.only.is_empty() || args.only.iter().any(|o| o == e.name || o == e.system))
        .collect();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::common::default_out("reproduce"));
    if out.join("report.md").exists() {
        return Err(UsageError(format!(
            "output folder {} already holds a reproduce report; choose another --out",
            out.display()
        ))
        .into());
    }
    std::fs::create_dir_all(&out).map_err(|e| ferrolab_core::CoreError::io(&out, e))?;
    ferrolab_core::backend::init_threads(args.run.threads);
    let mode = if args.full { "full" } else { "quick" };
    let mut md = format!(
        "# ferrolab reproduce ({mode})\n\nSeed {}, {} threads, backend {}. Each section: ours vs the baseline measured in the same run \
         (mean ± std over runs), and the paper's figure where one exists.\n\n",
        args.run.seed,
        rayon_threads(),
        ferrolab_core::backend::BACKEND_NAME
    );
    let mut failures = 0;
    for e in chosen {
        eprintln!("== {} ({mode}): {}", e.name, e.what);
        let common = CommonArgs {
            out: Some(out.join(e.name)),
            run: args.run.clone(),
            ..Default::default()
        };
        let sw = ferrolab_core::resources::Stopwatch::start();
        match (e.run)(args.full, &common) {
            Ok(o) => section(&mut md, e.name, e.what, &o, sw.seconds()),
            Err(err) => {
                failures += 1;
                eprintln!("{}: {err:#}", e.name);
                let _ = write!(md, "## {}\n\n{}\n\n**failed:** {err:#}\n\n", e.name, e.what);
            }
        }
        write_atomic(&out.join("report.md"), md.as_bytes())?;
    }
    eprintln!("wrote {}", out.join("report.md").display());
    if failures > 0 {
        anyhow::bail!(
            "{failures} system(s) failed; see {}",
            out.join("report.md").display()
        );
    }
    Ok(())
}

fn rayon_threads() -> usize {
    ferrolab_core::backend::init_threads(None)
}

fn fmt_pm(m: &std::collections::BTreeMap<String, f64>, key: &str) -> String {
    match (m.get(key), m.get(&format!("{key}_std"))) {
        (Some(v), Some(s)) => format!("{v:.4} ± {s:.4}"),
        (Some(v), None) => format!("{v:.4}"),
        _ => "–".into(),
    }
}

fn section(md: &mut String, name: &str, what: &str, o: &Outcome, seconds: f64) {
    let r = &o.report;
    let _ = write!(
        md,
        "## {name}\n\n{what}. Dataset `{}`; {seconds:.0} s.\n\n",
        r.dataset
    );
    let headline: Vec<&String> = r
        .metrics
        .keys()
        .filter(|k| !k.ends_with("_std") && r.metrics.contains_key(&format!("{k}_std")))
        .collect();
    let _ = writeln!(
        md,
        "| model | {} |",
        headline
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---|".repeat(headline.len()));
    let row = |m: &std::collections::BTreeMap<String, f64>| {
        headline
            .iter()
            .map(|k| fmt_pm(m, k))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let _ = writeln!(md, "| **{}** (ours) | {} |", r.system, row(&r.metrics));
    for (b, m) in &r.baselines {
        let _ = writeln!(md, "| {b} (baseline, same run) | {} |", row(m));
    }
    for p in &o.paper {
        let cells: Vec<String> = headline
            .iter()
            .map(|k| {
                if **k == p.metric {
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
    md.push('\n');
    for n in &r.notes {
        let _ = writeln!(md, "- {n}");
    }
    let _ = write!(
        md,
        "\n![training curves]({name}/curves.svg)\n\nFull figures: `{name}/report.json`.\n\n"
    );
}
