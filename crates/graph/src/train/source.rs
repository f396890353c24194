//! Where Cluster-GCN's batches come from (PyG's `ClusterLoader` over a `ClusterData`): the
//! in-memory graph and its partition, or a [`ClusterStore`] on disk. They differ only in where
//! a batch's rows are read from and how the whole graph is streamed for evaluation; one
//! training step ([`super::cluster`]) runs on either.

use ferrolab_core::burn::prelude::*;
use rand::RngExt;
use rand::rngs::StdRng;

use super::eval::{Scores, evaluate_in_memory, evaluate_store};
use crate::csr::CsrGraph;
use crate::error::Result;
use crate::models::{Gcn, GcnInput};
use crate::node_data::{NodeData, feature_rows};
use crate::norm::Normalization;
use crate::partition::ClusterPartition;
use crate::store::ClusterStore;

/// One Cluster-GCN training batch: the subgraph induced by its clusters (local ids, edges
/// between the chosen clusters restored), its features, every node's label and the local ids
/// of its training nodes.
#[derive(Debug)]
pub struct ClusterBatch {
    pub graph: CsrGraph,
    pub features: GcnInput,
    pub labels: Vec<usize>,
    pub targets: Vec<usize>,
}

/// A graph split into clusters that batches are drawn from.
pub trait ClusterSource {
    fn num_clusters(&self) -> usize;
    fn num_features(&self) -> usize;
    fn num_classes(&self) -> usize;
    /// The batch made of `clusters` (distinct), with sparse input dropout `p` drawn from
    /// `rng`; `None` when it holds no training node (no loss to follow).
    fn batch(
        &self,
        clusters: &[usize],
        p: f64,
        rng: &mut StdRng,
        dev: &Device,
    ) -> Result<Option<ClusterBatch>>;
    /// Validation and test accuracy of `model` on the whole graph normalised by `norm`.
    fn evaluate(&self, model: &Gcn, norm: Normalization) -> Result<Scores>;
}

/// The in-memory graph and its partition.
#[derive(Debug)]
pub struct InMemoryClusters<'a> {
    data: &'a NodeData,
    partition: &'a ClusterPartition,
    is_train: Vec<bool>,
}

impl<'a> InMemoryClusters<'a> {
    pub fn new(data: &'a NodeData, partition: &'a ClusterPartition) -> Self {
        let mut is_train = vec![false; data.num_nodes()];
        for &i in &data.split.train {
            is_train[i] = true;
        }
        InMemoryClusters {
            data,
            partition,
            is_train,
        }
    }
}

impl ClusterSource for InMemoryClusters<'_> {
    fn num_clusters(&self) -> usize {
        self.partition.parts.len()
    }

    fn num_features(&self) -> usize {
        self.data.num_features()
    }

    fn num_classes(&self) -> usize {
        self.data.num_classes
    }

    fn batch(
        &self,
        clusters: &[usize],
        p: f64,
        rng: &mut StdRng,
        dev: &Device,
    ) -> Result<Option<ClusterBatch>> {
        let mut nodes: Vec<usize> = clusters
            .iter()
            .flat_map(|&c| self.partition.parts[c].iter().copied())
            .collect();
        nodes.sort_unstable();
        let (graph, global) = self.data.graph.induced_subgraph(&nodes)?;
        let targets: Vec<usize> = (0..global.len())
            .filter(|&i| self.is_train[global[i]])
            .collect();
        // Checked before the features are read, so that such a batch draws no dropout.
        if targets.is_empty() {
            return Ok(None);
        }
        let labels = global.iter().map(|&g| self.data.labels[g]).collect();
        let features = feature_rows(&self.data.features, &global, Some((p, rng)), dev)?;
        Ok(Some(ClusterBatch {
            graph,
            features,
            labels,
            targets,
        }))
    }

    fn evaluate(&self, model: &Gcn, norm: Normalization) -> Result<Scores> {
        Ok(evaluate_in_memory(model, self.data, norm))
    }
}

impl ClusterSource for ClusterStore {
    fn num_clusters(&self) -> usize {
        ClusterStore::num_clusters(self)
    }

    fn num_features(&self) -> usize {
        ClusterStore::num_features(self)
    }

    fn num_classes(&self) -> usize {
        ClusterStore::num_classes(self)
    }

    fn batch(
        &self,
        clusters: &[usize],
        p: f64,
        rng: &mut StdRng,
        dev: &Device,
    ) -> Result<Option<ClusterBatch>> {
        let scale = (1.0 / (1.0 - p)) as f32;
        let mut drop = || p > 0.0 && rng.random::<f64>() < p;
        let b = ClusterStore::batch(self, clusters, &mut drop, scale, dev)?;
        Ok((!b.targets.is_empty()).then_some(ClusterBatch {
            graph: b.graph,
            features: b.features,
            labels: b.labels,
            targets: b.targets,
        }))
    }

    fn evaluate(&self, model: &Gcn, norm: Normalization) -> Result<Scores> {
        evaluate_store(model, self, norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreKey;
    use ferrolab_core::backend::device;
    use ferrolab_data::{CsbmConfig, generate_csbm};
    use rand::SeedableRng;

    /// Labels, training flags and degrees of a batch's nodes, in an order-free form.
    fn summary(b: &ClusterBatch) -> Vec<(usize, bool, usize)> {
        let mut v: Vec<_> = (0..b.labels.len())
            .map(|i| {
                (
                    b.labels[i],
                    b.targets.contains(&i),
                    b.graph.neighbors(i).len(),
                )
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn memory_and_store_sources_give_the_same_batches() {
        let _serial = crate::serial_test();
        // Model initialisation draws from burn's global generator: hold it so that the
        // deterministic tests running beside this one see the same numbers.
        let _rng = ferrolab_core::backend::exclusive_rng();
        let g = generate_csbm(&CsbmConfig {
            nodes: 240,
            classes: 3,
            avg_degree: 6.0,
            features: 4,
            seed: 9,
            ..Default::default()
        })
        .unwrap()
        .to_graph_data();
        let split = g.seeded_per_class_split(5, 10, 2).unwrap();
        let data = NodeData::from_graph_data(&g, Some(split), false).unwrap();
        let p = ClusterPartition::metis(&data.graph, 6, 0).unwrap();
        let key = StoreKey {
            graph_hash: 7,
            method_tag: 1,
            partition_seed: 0,
        };
        let path =
            std::env::temp_dir().join(format!("ferrolab-source-{}.store", std::process::id()));
        ClusterStore::build(&data, &p, key, &path).unwrap();
        let store = ClusterStore::open(&path, key).unwrap();
        let memory = InMemoryClusters::new(&data, &p);
        let sources: [&dyn ClusterSource; 2] = [&memory, &store];
        for s in sources {
            assert_eq!(
                (s.num_clusters(), s.num_features(), s.num_classes()),
                (6, 4, 3)
            );
        }
        let mut rng = StdRng::seed_from_u64(0);
        for clusters in [vec![0, 3], vec![5], vec![1, 2, 4]] {
            // A batch without training nodes is `None` from both.
            let [a, b] = sources.map(|s| {
                s.batch(&clusters, 0.5, &mut rng, &device())
                    .unwrap()
                    .map(|b| (summary(&b), b.graph.num_edges()))
            });
            assert_eq!(a, b, "{clusters:?}");
            assert!(
                a.is_some_and(|(nodes, edges)| !nodes.is_empty() && edges > 0)
                    || clusters.len() == 1
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
}
