//! Evaluation on the whole graph, layer by layer ([`Gcn::infer_layerwise`] in memory,
//! [`Gcn::infer_layerwise_blocks`] from a store) so that it stays within the memory budget of
//! training.

use ferrolab_core::backend::device;
use ferrolab_core::burn::prelude::*;

use crate::error::Result;
use crate::models::{Gcn, GcnInput};
use crate::node_data::{NodeData, feature_rows};
use crate::norm::{Normalization, WeightedCsr, normalize};
use crate::store::ClusterStore;

/// Validation and test accuracy of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Accuracy on the validation nodes.
    pub val: f64,
    /// Accuracy on the test nodes.
    pub test: f64,
}

/// Rows per block of layer-wise evaluation: large enough for efficient matrix products,
/// small next to the `n × d` activations a layer must hold anyway.
const EVAL_CHUNK: usize = 16_384;

/// What evaluation on the full graph needs: the normalised adjacency as CSR arrays (not as
/// device tensors, see [`Gcn::infer_layerwise`]).
struct FullGraph {
    adj: WeightedCsr,
}

impl FullGraph {
    fn new(data: &NodeData, norm: Normalization) -> Self {
        FullGraph {
            adj: normalize(&data.graph, norm),
        }
    }
}

/// Class predictions for every node, computed layer by layer in bounded memory.
fn predict(model: &Gcn, g: &FullGraph, data: &NodeData) -> Vec<usize> {
    let dev = device();
    let model = model.valid();
    let x_times = |rows: std::ops::Range<usize>, w: Tensor<2>| -> Tensor<2> {
        let nodes: Vec<usize> = rows.collect();
        match feature_rows(&data.features, &nodes, None, &dev) {
            Ok(GcnInput::Sparse(x)) => x.propagate(w),
            Ok(GcnInput::Dense(x)) => x.matmul(w),
            // The same rows were read for training; failure here is a bug, not bad input.
            Err(e) => panic!("feature rows of checked data: {e}"),
        }
    };
    let logits = model.infer_layerwise(&g.adj, EVAL_CHUNK, &x_times);
    let c = data.num_classes.max(1);
    logits
        .chunks(c)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

fn accuracy_on(pred: &[usize], data: &NodeData, nodes: &[usize]) -> f64 {
    let p: Vec<usize> = nodes.iter().map(|&i| pred[i]).collect();
    let l: Vec<usize> = nodes.iter().map(|&i| data.labels[i]).collect();
    ferrolab_core::metrics::accuracy(&p, &l)
}

/// Scores `model` on the whole in-memory graph normalised by `norm`.
pub(super) fn evaluate_in_memory(model: &Gcn, data: &NodeData, norm: Normalization) -> Scores {
    // The normalised whole graph is rebuilt for each evaluation (O(edges), small next to the
    // layer products) rather than held through training, where it would count against the
    // bounded training memory.
    let pred = predict(model, &FullGraph::new(data, norm), data);
    Scores {
        val: accuracy_on(&pred, data, &data.split.val),
        test: accuracy_on(&pred, data, &data.split.test),
    }
}

/// Scores `model` on the graph in `store`, streamed cluster by cluster; the process holds
/// `n × d` activations, never the graph.
pub(super) fn evaluate_store(
    model: &Gcn,
    store: &ClusterStore,
    norm: Normalization,
) -> Result<Scores> {
    let logits = model
        .valid()
        .infer_layerwise_blocks(&store.layer_source(norm)?)?;
    let (labels, roles) = store.labels_and_roles()?;
    let c = store.num_classes().max(1);
    let (mut hit, mut count) = ([0usize; 4], [0usize; 4]);
    for ((row, &l), &r) in logits.chunks(c).zip(&labels).zip(&roles) {
        let pred = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0;
        let r = usize::from(r.min(3));
        count[r] += 1;
        hit[r] += usize::from(pred == usize::from(l));
    }
    let acc = |r: usize| hit[r] as f64 / count[r].max(1) as f64;
    Ok(Scores {
        val: acc(2),
        test: acc(3),
    })
}
