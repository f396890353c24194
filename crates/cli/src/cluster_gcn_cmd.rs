//! `ferrolab cluster-gcn`: Cluster-GCN against full-batch GCN and random partitions.

use crate::common::CommonArgs;
use anyhow::Context;
use clap::Args;
use ferrolab_core::run::Outcome;
use ferrolab_graph::ClusterGcnConfig;

/// Arguments of `ferrolab cluster-gcn`.
#[derive(Args, Debug)]
pub struct ClusterGcnArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs the subcommand.
pub fn run(args: ClusterGcnArgs) -> anyhow::Result<()> {
    let cfg: ClusterGcnConfig =
        ferrolab_core::config::load(args.common.config.as_deref(), &args.common.sets)?;
    let outcome = train(&cfg, &args.common)?;
    let r = &outcome.report;
    let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| {
        m.get(k).copied().unwrap_or(f64::NAN)
    };
    let line = |name: &str, m: &std::collections::BTreeMap<String, f64>| {
        println!(
            "{name:>18}: test accuracy {:.4} ± {:.4}, {:.3} s/epoch, peak RSS {:.0} MiB",
            get(m, "test_accuracy"),
            get(m, "test_accuracy_std"),
            get(m, "epoch_seconds"),
            get(m, "peak_rss_mb"),
        );
    };
    println!("{}:", r.dataset);
    line("cluster_gcn", &r.metrics);
    for (k, m) in &r.baselines {
        line(k, m);
    }
    for n in &r.notes {
        println!("{n}");
    }
    Ok(())
}

/// Loads the data, trains every method and writes the run folder; shared with `reproduce`.
pub fn train(cfg: &ClusterGcnConfig, common: &CommonArgs) -> anyhow::Result<Outcome> {
    ferrolab_core::backend::init_threads(common.run.threads);
    // Data first, so a data error leaves no output folder behind.
    let (data, name) =
        ferrolab_graph::load_data(cfg, common.run.data_dir.as_deref(), common.run.seed)?;
    let ecfg = ferrolab_graph::experiment::experiment_config(cfg, common.run.seed);
    ecfg.validate(data.num_nodes())?;
    let run = common.run_dir("cluster-gcn")?;
    run.write_config(&ferrolab_core::config::to_toml(cfg)?)?;
    eprintln!(
        "{name}: {} nodes, {} edges, {} features, {} classes; {} seeds",
        data.num_nodes(),
        data.graph.num_edges(),
        data.num_features(),
        data.num_classes,
        ecfg.seeds.len()
    );
    let mut outcome = ferrolab_graph::experiment::run(data, &name, &ecfg)?;
    outcome.report.config = serde_json::to_value(cfg).context("recording the config")?;
    run.write_report(&outcome.report)?;
    let (depth, epochs): (Vec<_>, Vec<_>) = outcome
        .curves
        .iter()
        .cloned()
        .partition(|c| c.y_name == "test_accuracy_vs_layers");
    crate::plot::write_curves(
        &run.join("curves.svg"),
        &epochs,
        &format!("cluster-gcn on {name}"),
    )
    .context("writing curves.svg")?;
    if !depth.is_empty() {
        crate::plot::write_curves_x(
            &run.join("depth.svg"),
            &depth,
            &format!("cluster-gcn depth study on {name}"),
            "layers",
        )
        .context("writing depth.svg")?;
    }
    eprintln!("wrote {}", run.path().display());
    Ok(outcome)
}
