//! Shared by the `fedgraph*` tests: the synthetic community graph they federate.

#![allow(clippy::unwrap_used)]

use ferrolab_data::{CsbmConfig, generate_csbm};
use ferrolab_fed::fedgraph::data::GraphSet;
use ferrolab_graph::NodeData;

/// A 4-class contextual stochastic block model (degree 6, 90 % of edges inside a class,
/// weak features), as a fedgraph graph set.
pub fn communities(nodes: usize, features: usize, seed: u64) -> GraphSet {
    let d = generate_csbm(&CsbmConfig {
        nodes,
        classes: 4,
        avg_degree: 6.0,
        p_in_ratio: 0.9,
        features,
        feature_signal: 0.25,
        feature_noise: 1.0,
        seed,
    })
    .unwrap()
    .to_graph_data();
    let n = NodeData::from_graph_data(&d, Some(Default::default()), false).unwrap();
    GraphSet {
        name: "csbm".into(),
        graph: n.graph,
        features: n.features,
        labels: n.labels,
        classes: n.num_classes,
    }
}

/// The node table's small resume-test grid: 4 clients, 2 seeds, 4 rounds without early stop,
/// lr 0.5 with 1 and 2 local steps, hidden 8.
#[allow(dead_code)]
pub fn small_grid(cfg: &mut ferrolab_fed::fedgraph::config::FedGraphConfig) {
    cfg.fed.clients = 4;
    cfg.fed.seeds = 2;
    cfg.fed.rounds = 4;
    cfg.fed.patience = 0;
    cfg.fed.lrs = vec![0.5];
    cfg.fed.local_steps = vec![1, 2];
    cfg.model.hidden = 8;
}

/// An empty run folder for test `tag` of this process (what a run's `units/` go into).
#[allow(dead_code)]
pub fn fresh_run_dir(tag: &str) -> (std::path::PathBuf, ferrolab_core::run::RunDir) {
    let dir = std::env::temp_dir().join(format!("ferrolab-{tag}-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rd = ferrolab_core::run::RunDir::create(&dir).unwrap();
    (dir, rd)
}
