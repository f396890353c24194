//! Full-batch GCN (Kipf & Welling): every epoch one step on all training nodes with the
//! symmetric normalisation of the whole graph.

use std::collections::BTreeMap;

use ferrolab_core::backend::{exclusive_rng, train_device};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::sparse::SparseAdj;
use ferrolab_core::train::{StepOutput, TrainStep};
use rand::rngs::StdRng;

use super::eval::evaluate_in_memory;
use super::{GcnState, TrainConfig, TrainOutcome, fit, grad};
use crate::error::Result;
use crate::node_data::{NodeData, feature_rows};
use crate::norm::{Normalization, normalize};

/// Full-batch GCN as a [`TrainStep`]: one batch per epoch, the whole graph.
struct FullBatch<'a> {
    state: GcnState,
    data: &'a NodeData,
    adj: SparseAdj,
    all: Vec<usize>,
    dropout: f64,
    drop_rng: StdRng,
    dev: Device,
}

impl TrainStep for FullBatch<'_> {
    type Batch = ();

    fn batches(&mut self, _epoch: usize) -> ferrolab_core::Result<Vec<()>> {
        Ok(vec![()])
    }

    fn step(&mut self, _: (), lr: f64) -> ferrolab_core::Result<StepOutput> {
        let x = feature_rows(
            &self.data.features,
            &self.all,
            Some((self.dropout, &mut self.drop_rng)),
            &self.dev,
        )
        .map_err(|e| self.state.fail(e))?;
        let model = self.state.take_model()?;
        let (loss, model) = grad::step(
            model,
            &mut self.state.optim,
            lr,
            &self.adj,
            &x,
            &self.data.split.train,
            &self.data.labels,
        );
        self.state.model = Some(model);
        Ok(StepOutput {
            loss: f64::from(loss),
            examples: self.data.split.train.len(),
        })
    }

    fn validate(&mut self) -> ferrolab_core::Result<BTreeMap<String, f64>> {
        let data = self.data;
        self.state
            .validate(|m| Ok(evaluate_in_memory(m, data, Normalization::Symmetric)))
    }
}

/// Full-batch GCN: every epoch one step on all training nodes with the symmetric
/// normalisation of the whole graph (Kipf & Welling).
pub fn train_full_batch(data: &NodeData, cfg: &TrainConfig, seed: u64) -> Result<TrainOutcome> {
    cfg.validate()?;
    let _rng = exclusive_rng();
    let dev = train_device();
    let mut state = GcnState::init(cfg, data.num_features(), data.num_classes, seed);
    state.max_batch_nodes = data.num_nodes();
    let adj = normalize(&data.graph, Normalization::Symmetric).to_sparse_adj(&dev)?;
    let mut step = FullBatch {
        state,
        data,
        adj,
        all: (0..data.num_nodes()).collect(),
        dropout: cfg.dropout,
        drop_rng: ferrolab_core::seed::rng(seed, "dropout"),
        dev,
    };
    fit(&mut step, |s| &mut s.state, cfg, "full-batch GCN")
}
