//! `ferrolab cluster-gcn`: the [`System`] implementation.

use crate::config::ClusterGcnConfig;
use crate::experiment;
use ferrolab_core::system::{Entry, Preset};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System};

/// Cluster-GCN against full-batch GCN and random partitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterGcnSystem;

impl System for ClusterGcnSystem {
    type Config = ClusterGcnConfig;

    fn name(&self) -> &'static str {
        "cluster-gcn"
    }

    fn about(&self) -> &'static str {
        "Cluster-GCN vs full-batch GCN and random partitions (node classification)"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "Cora, 3 seeds (< 1 min)",
                toml: include_str!("../../../configs/cluster-gcn/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "Cora, 10 seeds, Kipf & Welling's hyper-parameters",
                toml: include_str!("../../../configs/cluster-gcn/paper.toml"),
            },
            Preset {
                name: "depth",
                about: "depth study, 2-5 layers with/without diagonal enhancement, 50k-node generated graph (~12 min)",
                toml: include_str!("../../../configs/cluster-gcn/depth.toml"),
            },
            Preset {
                name: "scale",
                about: "memory at scale: 1M-node generated graph, 3-layer Cluster-GCN",
                toml: include_str!("../../../configs/cluster-gcn/scale.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "cluster-gcn-cora",
            what: "Cluster-GCN (METIS) vs full-batch GCN and random partitions on Cora",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, cfg: &ClusterGcnConfig) -> Vec<&'static str> {
        if cfg.data.path.is_some() || cfg.data.synthetic.is_some() {
            Vec::new()
        } else {
            vec!["cora-planetoid"]
        }
    }

    fn run(&self, cfg: &Checked<ClusterGcnConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        let (data, name) = experiment::load_data(cfg, ctx.data_dir(), ctx.seed())?;
        let ecfg = experiment::experiment_config(cfg, ctx.seed());
        ecfg.validate(data.num_nodes())?;
        eprintln!(
            "{name}: {} nodes, {} edges, {} features, {} classes; {} seeds",
            data.num_nodes(),
            data.graph.num_edges(),
            data.num_features(),
            data.num_classes,
            ecfg.seeds.len()
        );
        let outcome = experiment::run(data, &name, &ecfg)?;
        // Per-epoch validation accuracy of the first run of each method, as metrics.jsonl
        // (the depth study's curves have layers, not epochs, on x: they stay in report.json).
        for c in outcome.curves.iter().filter(|c| !c.y_name.contains("_vs_")) {
            let method = c.label.trim_end_matches(" run 0");
            for (x, y) in &c.points {
                ctx.log_metrics(&serde_json::json!({
                    "method": method, "run": 0, "epoch": *x as u64, c.y_name.as_str(): y,
                }))?;
            }
        }
        Ok(outcome)
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let r = &o.report;
        let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| {
            m.get(k).copied().unwrap_or(f64::NAN)
        };
        let line = |name: &str, m: &std::collections::BTreeMap<String, f64>| {
            format!(
                "{name:>18}: test accuracy {:.4} ± {:.4}, {:.3} s/epoch, peak RSS {:.0} MiB",
                get(m, "test_accuracy"),
                get(m, "test_accuracy_std"),
                get(m, "epoch_seconds"),
                get(m, "peak_rss_mb"),
            )
        };
        let mut lines = vec![format!("{}:", r.dataset), line("cluster_gcn", &r.metrics)];
        for (k, m) in &r.baselines {
            lines.push(line(k, m));
        }
        lines.extend(r.notes.iter().cloned());
        lines
    }

    fn tune_allocator_at_start(&self) -> bool {
        // Tuned when training starts (experiment::method), after the loaded graph is dropped:
        // glibc keeps heap blocks served under the raised thresholds.
        false
    }
}
