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
