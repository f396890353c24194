//! `ferrolab cluster-gcn`: the [`System`] implementation.

use crate::config::ClusterGcnConfig;
use crate::experiment;
use ferrolab_core::guard::MemoryEstimate;
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

    fn memory_estimate(
        &self,
        cfg: &ClusterGcnConfig,
        data_dir: Option<&std::path::Path>,
    ) -> Option<MemoryEstimate> {
        let h = cfg.model.hidden as u64;
        let layers = cfg.model.layers as u64;
        let (n, f, deg, setting) = match &cfg.data.synthetic {
            Some(s) => (
                s.nodes as u64,
                s.features as u64,
                s.avg_degree.ceil().max(1.0) as u64,
                format!("data.synthetic.nodes={}", s.nodes),
            ),
            None => {
                // A file: its size bounds the graph; npz members are deflated, so allow 8x.
                let path = match &cfg.data.path {
                    Some(p) => std::path::PathBuf::from(p),
                    None => ferrolab_data::lookup::find_dataset(data_dir, "cora-planetoid").ok()?,
                };
                let bytes = std::fs::metadata(&path).ok()?.len().saturating_mul(8);
                // Without the node count, size activations by a generous 16 bytes per stored byte.
                let act = bytes
                    .saturating_mul(2)
                    .saturating_mul(h)
                    .saturating_mul(layers)
                    / 64;
                return Some(MemoryEstimate {
                    setting: format!("model.hidden={}", cfg.model.hidden),
                    bytes: bytes.saturating_add(act),
                });
            }
        };
        // Features (f32), adjacency and its normalised copy (u32 index + f32 value), labels.
        let graph = n
            .saturating_mul(f)
            .saturating_mul(4)
            .saturating_add(n.saturating_mul(deg).saturating_mul(16))
            .saturating_add(n.saturating_mul(16));
        // Whole-graph activations: layer-wise evaluation holds up to layers + 2 blocks of
        // n x max(h, f) f32 (2.3 GiB measured at 1M nodes x 128, 3 layers, in memory);
        // full-batch training keeps forward + gradient per layer and gathers edges x h.
        let width = h.max(f);
        let eval = n
            .saturating_mul(width)
            .saturating_mul(4)
            .saturating_mul(layers + 2);
        // (the gathered edges x h block and its gradient: 3.7 GiB measured at 200k nodes).
        let full = if cfg.baselines.full_batch {
            n.saturating_mul(h)
                .saturating_mul(layers)
                .saturating_mul(12)
                .saturating_add(n.saturating_mul(deg).saturating_mul(h).saturating_mul(8))
        } else {
            0
        };
        let bytes = graph.saturating_add(eval.max(full));
        let setting = if n.saturating_mul(h).saturating_mul(layers) > n.saturating_mul(f) {
            format!("model.hidden={}", cfg.model.hidden)
        } else {
            setting
        };
        Some(MemoryEstimate { setting, bytes })
    }

    fn run(&self, cfg: &Checked<ClusterGcnConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        let (data, name) = experiment::load_data(cfg, ctx.data_dir(), ctx.seed())?;
        let mut ecfg = experiment::experiment_config(cfg, ctx.seed());
        ecfg.units = Some(ctx.run_dir().path().to_path_buf());
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
