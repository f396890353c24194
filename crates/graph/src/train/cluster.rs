//! Cluster-GCN (Chiang et al., Alg. 1): each step trains on the subgraph induced by `q`
//! clusters (edges between them restored), normalised on that subgraph; evaluation uses the
//! whole graph with the same normalisation. One step serves every [`ClusterSource`].

use std::collections::BTreeMap;
use std::time::Instant;

use ferrolab_core::backend::{exclusive_rng, train_device};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::train::{StepOutput, TrainStep};
use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::source::{ClusterSource, InMemoryClusters};
use super::{ClusterConfig, GcnState, PartitionInfo, TrainConfig, TrainOutcome, fit, grad};
use crate::error::{GraphError, Result};
use crate::node_data::NodeData;
use crate::norm::{Normalization, normalize};
use crate::partition::{CacheStatus, ClusterPartition, partition_cached};
use crate::spmm::Propagation;
use crate::store::ClusterStore;

/// Cluster-GCN as a [`TrainStep`] over any [`ClusterSource`].
struct ClusterStep<'a, S: ClusterSource + ?Sized> {
    state: GcnState,
    source: &'a S,
    norm: Normalization,
    parts_per_batch: usize,
    dropout: f64,
    batch_rng: StdRng,
    drop_rng: StdRng,
    dev: Device,
}

impl<S: ClusterSource + ?Sized> TrainStep for ClusterStep<'_, S> {
    /// The cluster ids of one batch.
    type Batch = Vec<usize>;

    fn batches(&mut self, _epoch: usize) -> ferrolab_core::Result<Vec<Vec<usize>>> {
        let mut order: Vec<usize> = (0..self.source.num_clusters()).collect();
        order.shuffle(&mut self.batch_rng);
        Ok(order
            .chunks(self.parts_per_batch.max(1))
            .map(<[usize]>::to_vec)
            .collect())
    }

    fn step(&mut self, clusters: Vec<usize>, lr: f64) -> ferrolab_core::Result<StepOutput> {
        let b = self
            .source
            .batch(&clusters, self.dropout, &mut self.drop_rng, &self.dev)
            .map_err(|e| self.state.fail(e))?;
        let Some(b) = b else {
            return Ok(StepOutput::default());
        };
        self.state.max_batch_nodes = self.state.max_batch_nodes.max(b.labels.len());
        let adj = Propagation::new(normalize(&b.graph, self.norm));
        let batch = grad::TrainBatch {
            adj: &adj,
            x: &b.features,
            targets: &b.targets,
            labels: &b.labels,
            mask_seed: self.drop_rng.random::<u64>(),
        };
        let model = self.state.take_model()?;
        let (loss, model) = grad::step_csr(model, &mut self.state.optim, lr, &batch);
        self.state.model = Some(model);
        Ok(StepOutput {
            loss: f64::from(loss),
            examples: b.targets.len(),
        })
    }

    fn validate(&mut self) -> ferrolab_core::Result<BTreeMap<String, f64>> {
        let (source, norm) = (self.source, self.norm);
        self.state.validate(|m| source.evaluate(m, norm))
    }
}

/// Trains Cluster-GCN on batches of `cluster.parts_per_batch` clusters of `source`.
fn train_on_source<S: ClusterSource + ?Sized>(
    source: &S,
    cfg: &TrainConfig,
    cluster: &ClusterConfig,
    seed: u64,
) -> Result<TrainOutcome> {
    let _rng = exclusive_rng();
    let batch_rng = ferrolab_core::seed::rng(seed, "batches");
    let state = GcnState::init(cfg, source.num_features(), source.num_classes(), seed);
    let mut step = ClusterStep {
        state,
        source,
        norm: cluster.norm,
        parts_per_batch: cluster.parts_per_batch,
        dropout: cfg.dropout,
        batch_rng,
        drop_rng: ferrolab_core::seed::rng(seed, "dropout"),
        dev: train_device(),
    };
    fit(&mut step, |s| &mut s.state, cfg, "Cluster-GCN")
}

/// Cluster-GCN (Alg. 1): each step trains on the subgraph induced by `q` clusters (edges
/// between them restored), normalised on that subgraph; evaluation uses the full graph with
/// the same normalisation.
pub fn train_cluster_gcn(
    data: &NodeData,
    cfg: &TrainConfig,
    cluster: &ClusterConfig,
    seed: u64,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let (partition, info) = partition_with_info(data, cluster)?;
    let mut out = train_on_partition(data, cfg, cluster, &partition, seed)?;
    out.partition = Some(info);
    Ok(out)
}

/// The partition `cluster` asks for (from the cache when valid), and how it was obtained.
pub fn partition_with_info(
    data: &NodeData,
    cluster: &ClusterConfig,
) -> Result<(ClusterPartition, PartitionInfo)> {
    cluster.validate(data.num_nodes())?;
    let t = Instant::now();
    let (partition, cache) = partition_cached(
        &data.graph,
        cluster.method,
        cluster.parts,
        cluster.partition_seed,
        cluster.cache_dir.as_deref(),
    )?;
    if let CacheStatus::Rebuilt(path, why) = &cache {
        eprintln!("partition cache {}: {why}; rebuilt", path.display());
    }
    let info = PartitionInfo {
        method: cluster.method,
        edge_cut: partition.edge_cut_fraction(&data.graph),
        seconds: t.elapsed().as_secs_f64(),
        cache,
    };
    Ok((partition, info))
}

/// Cluster-GCN on a given partition of the in-memory graph.
pub fn train_on_partition(
    data: &NodeData,
    cfg: &TrainConfig,
    cluster: &ClusterConfig,
    partition: &ClusterPartition,
    seed: u64,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    cluster.validate(data.num_nodes())?;
    train_on_source(&InMemoryClusters::new(data, partition), cfg, cluster, seed)
}

/// Cluster-GCN trained from a [`ClusterStore`] on disk: each step reads its `q` clusters,
/// so the process holds the model and one batch, never the graph. Evaluation streams the
/// store layer by layer ([`Gcn::infer_layerwise_blocks`](crate::Gcn::infer_layerwise_blocks))
/// and holds `n × d` activations.
pub fn train_from_store(
    store: &ClusterStore,
    cfg: &TrainConfig,
    cluster: &ClusterConfig,
    seed: u64,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    if cluster.parts_per_batch == 0 || cluster.parts_per_batch > store.num_clusters() {
        return Err(GraphError::config(
            "parts_per_batch",
            format!(
                "{} is not in 1..={}",
                cluster.parts_per_batch,
                store.num_clusters()
            ),
        ));
    }
    train_on_source(store, cfg, cluster, seed)
}
