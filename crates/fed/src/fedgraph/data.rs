//! The graph of a `fedgraph` run, its per-seed node split and client split, and each
//! client's subgraph as a training task.

use std::path::Path;

use ferrolab_core::burn::prelude::Device;
use ferrolab_data::{Features, Split};
use ferrolab_graph::split::{
    ClientSplit, dirichlet_split, louvain_split, modularity, planetoid_random_split, random_split,
};
use ferrolab_graph::zoo::train::NodeTask;
use ferrolab_graph::{CsrGraph, NodeData};

use super::FedGraphError;
use super::config::DataSection;

/// A node-classification graph: symmetric adjacency, features, labels.
#[derive(Debug, Clone)]
pub struct GraphSet {
    pub name: String,
    pub graph: CsrGraph,
    pub features: Features,
    pub labels: Vec<usize>,
    pub classes: usize,
}

impl GraphSet {
    /// `data.path` when set, else Cora in Planetoid order from the data folder (a
    /// `data.synthetic` graph is generated with master seed 0: see [`GraphSet::load_seeded`]).
    pub fn load(cfg: &DataSection, data_dir: Option<&Path>) -> Result<Self, FedGraphError> {
        Self::load_seeded(cfg, data_dir, 0)
    }

    /// [`GraphSet::load`], with `data.synthetic`'s graph drawn from the run's master seed.
    pub fn load_seeded(
        cfg: &DataSection,
        data_dir: Option<&Path>,
        master_seed: u64,
    ) -> Result<Self, FedGraphError> {
        if let Some(s) = &cfg.synthetic {
            let g = ferrolab_data::generate_csbm(&s.csbm(master_seed))?.to_graph_data();
            let d = NodeData::from_graph_data(&g, Some(Split::default()), cfg.row_normalize)?;
            return Ok(GraphSet {
                name: "csbm".into(),
                graph: d.graph,
                features: d.features,
                labels: d.labels,
                classes: d.num_classes,
            });
        }
        let (path, name) = match &cfg.path {
            Some(p) => {
                let p = std::path::PathBuf::from(p);
                let stem = p
                    .file_stem()
                    .map_or_else(|| "graph".to_string(), |s| s.to_string_lossy().into_owned());
                (p, stem)
            }
            None => (
                ferrolab_data::lookup::find_dataset(data_dir, "cora-planetoid")?,
                "cora".to_string(),
            ),
        };
        let g = ferrolab_data::load_npz_graph(&path)?;
        // The file's own split is replaced per seed; an empty one satisfies NodeData.
        let d = NodeData::from_graph_data(&g, Some(Split::default()), cfg.row_normalize)?;
        Ok(GraphSet {
            name,
            graph: d.graph,
            features: d.features,
            labels: d.labels,
            classes: d.num_classes,
        })
    }

    pub fn num_nodes(&self) -> usize {
        self.graph.num_nodes()
    }

    /// The whole graph as one task with `split`.
    pub fn whole_task(&self, split: &Split, dev: &Device) -> Result<NodeTask, FedGraphError> {
        let rows: Vec<usize> = (0..self.num_nodes()).collect();
        Ok(NodeTask::new(
            &self.graph,
            &self.features,
            &rows,
            self.labels.clone(),
            self.classes,
            split.clone(),
            dev,
        )?)
    }
}

/// One seed's node split and client split.
#[derive(Debug, Clone)]
pub struct SeedSetup {
    /// Global node ids.
    pub split: Split,
    pub clients: ClientSplit,
    /// Modularity of the client partition on the whole graph.
    pub modularity: f64,
}

impl SeedSetup {
    /// Draws the node split (seed `split_seed`) and divides the nodes (seed `client_seed`).
    pub fn draw(
        g: &GraphSet,
        cfg: &DataSection,
        clients: usize,
        split_seed: u64,
        client_seed: u64,
    ) -> Result<Self, FedGraphError> {
        let split =
            planetoid_random_split(&g.labels, cfg.train_per_class, cfg.num_val, split_seed)?;
        let cs = match cfg.split.as_str() {
            "louvain" => louvain_split(&g.graph, clients, cfg.delta, client_seed)?,
            "random" => random_split(&g.graph, clients, client_seed)?,
            "dirichlet" => dirichlet_split(&g.graph, &g.labels, clients, cfg.alpha, client_seed)?,
            other => {
                return Err(FedGraphError::Usage(format!(
                    "data.split: unknown splitter {other:?} (louvain, random, dirichlet)"
                )));
            }
        };
        let modularity = modularity(&g.graph, &cs.owner);
        Ok(SeedSetup {
            split,
            clients: cs,
            modularity,
        })
    }

    /// Client `c`'s subgraph task: its nodes, the edges among them, the global split
    /// restricted to them (local ids).
    pub fn client_task(
        &self,
        g: &GraphSet,
        c: usize,
        dev: &Device,
    ) -> Result<NodeTask, FedGraphError> {
        let (sub, nodes) = self.clients.subgraph(&g.graph, c)?;
        let mut local = vec![usize::MAX; g.num_nodes()];
        for (i, &v) in nodes.iter().enumerate() {
            local[v] = i;
        }
        let restrict = |s: &[usize]| -> Vec<usize> {
            s.iter()
                .filter(|&&v| local[v] != usize::MAX)
                .map(|&v| local[v])
                .collect()
        };
        let split = Split {
            train: restrict(&self.split.train),
            val: restrict(&self.split.val),
            test: restrict(&self.split.test),
        };
        let labels = nodes.iter().map(|&v| g.labels[v]).collect();
        Ok(NodeTask::new(
            &sub,
            &g.features,
            &nodes,
            labels,
            g.classes,
            split,
            dev,
        )?)
    }
}
