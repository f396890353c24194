//! The paper's comparison on one data set: Cluster-GCN (METIS clusters) against full-batch
//! GCN and against Cluster-GCN on random clusters of the same size, over several seeds, as
//! a [`Report`].
//!
//! Every method is scored two ways: the final model, and the model of the epoch with the best
//! validation accuracy (model selection on the validation split). Cluster-GCN's final model
//! carries the noise of its last small batch, so the selected figure is the one compared.

use std::collections::BTreeMap;
use std::path::Path;

use ferrolab_core::metrics::mean_std;
use ferrolab_core::resources::{peak_rss_mb, reset_peak_rss};
use ferrolab_core::run::{Curve, Outcome, PaperFigure};
use ferrolab_core::{Report, seed};

use crate::config::ClusterGcnConfig;
use crate::error::{GraphError, Result};
use crate::partition::{CacheStatus, PartitionMethod, graph_hash};
use crate::store::{StoreKey, store_cached};
use crate::train::{
    ClusterConfig, NodeData, TrainConfig, TrainOutcome, partition_with_info, train_cluster_gcn,
    train_from_store, train_full_batch,
};

/// What to compare, and on how many seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentConfig {
    pub train: TrainConfig,
    /// Cluster-GCN's setting (its `method` is normally METIS).
    pub cluster: ClusterConfig,
    pub seeds: Vec<u64>,
    /// Also train full-batch GCN (it needs the whole graph's activations in memory).
    pub full_batch: bool,
    /// Also train Cluster-GCN on random clusters (same number, same q).
    pub random_partition: bool,
    /// Skip Cluster-GCN itself (baselines only, for per-process memory benchmarks).
    pub baselines_only: bool,
    /// Train Cluster-GCN and the random-partition baseline from cluster stores on disk,
    /// with the in-memory graph dropped first ([`compare_out_of_core`]).
    pub out_of_core: bool,
    /// Depth study (Cluster-GCN §3.3, Table 5 / Fig. 5): these layer counts, each trained with
    /// and without diagonal enhancement; empty = no study.
    pub depth_layers: Vec<usize>,
    /// A run folder whose `units/` keeps each finished depth-study point, so that a run
    /// continued with `--resume` skips them (`None`: nothing is kept).
    pub units: Option<std::path::PathBuf>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            train: TrainConfig::default(),
            cluster: ClusterConfig::default(),
            seeds: (0..10).collect(),
            full_batch: true,
            random_partition: true,
            baselines_only: false,
            out_of_core: false,
            depth_layers: Vec::new(),
            units: None,
        }
    }
}

impl ExperimentConfig {
    pub fn validate(&self, num_nodes: usize) -> Result<()> {
        if self.seeds.is_empty() {
            return Err(GraphError::config("seeds", "at least one seed is needed"));
        }
        self.train.validate()?;
        self.cluster.validate(num_nodes)
    }
}

/// Per-seed outcomes of one method and their summary.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResult {
    pub runs: Vec<TrainOutcome>,
    /// Peak resident memory of the process while this method ran (MiB), data included.
    pub peak_rss_mb: Option<f64>,
}

impl MethodResult {
    /// Mean and standard deviation of the final models' test accuracy.
    pub fn test_accuracy(&self) -> (f64, f64) {
        mean_std(&self.collect(|o| o.test_accuracy))
    }

    /// Mean and standard deviation of the test accuracy at the best validation epoch.
    pub fn test_accuracy_selected(&self) -> (f64, f64) {
        mean_std(&self.collect(|o| o.test_accuracy_at_best_val))
    }

    /// Mean wall seconds per run (training and per-epoch evaluation).
    pub fn train_seconds(&self) -> f64 {
        mean_std(&self.collect(|o| o.train_seconds)).0
    }

    /// Mean seconds of one training epoch, evaluation excluded.
    pub fn epoch_seconds(&self) -> f64 {
        mean_std(&self.collect(|o| o.epoch_seconds)).0
    }

    pub fn collect(&self, f: impl Fn(&TrainOutcome) -> f64) -> Vec<f64> {
        self.runs.iter().map(f).collect()
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let (m, s) = self.test_accuracy();
        let (ms, ss) = self.test_accuracy_selected();
        let mut out: BTreeMap<String, f64> = [
            ("test_accuracy", ms),
            ("test_accuracy_std", ss),
            ("test_accuracy_final", m),
            ("test_accuracy_final_std", s),
            ("train_seconds", self.train_seconds()),
            ("epoch_seconds", self.epoch_seconds()),
            (
                "max_batch_nodes",
                self.runs
                    .iter()
                    .map(|o| o.max_batch_nodes)
                    .max()
                    .unwrap_or(0) as f64,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(p) = self.peak_rss_mb {
            out.insert("peak_rss_mb".into(), p);
        }
        let mem: Vec<_> = self.runs.iter().filter_map(|o| o.memory).collect();
        if !mem.is_empty() {
            let max = |f: fn(&crate::train::PhaseMemory) -> f64| {
                mem.iter().map(f).fold(f64::NEG_INFINITY, f64::max)
            };
            out.insert("train_peak_rss_mb".into(), max(|m| m.train_peak_mb));
            out.insert("eval_peak_rss_mb".into(), max(|m| m.eval_peak_mb));
            out.insert("rss_before_training_mb".into(), max(|m| m.before_mb));
            out.insert(
                "train_working_set_mb".into(),
                max(|m| m.train_peak_mb - m.before_mb),
            );
        }
        if let Some(p) = self.runs.first().and_then(|o| o.partition.as_ref()) {
            out.insert("edge_cut".into(), p.edge_cut);
            out.insert("partition_seconds".into(), p.seconds);
        }
        out
    }
}

/// All methods, same seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// `None` when only baselines ran.
    pub cluster_gcn: Option<MethodResult>,
    pub full_batch: Option<MethodResult>,
    pub random_partition: Option<MethodResult>,
}

/// Runs `f` for every seed, measuring the process's peak memory over the runs.
fn method(seeds: &[u64], f: impl Fn(u64) -> Result<TrainOutcome>) -> Result<MethodResult> {
    // Only now, so that the data loaded and dropped before training was served by mmap and
    // really left the process (see `tune_allocator`); training reuses its freed blocks.
    ferrolab_core::backend::tune_allocator();
    ferrolab_core::resources::release_free_memory();
    let measurable = reset_peak_rss();
    let runs = seeds.iter().map(|&s| f(s)).collect::<Result<Vec<_>>>()?;
    // Runs reset the high-water mark between their training and evaluation phases, so the
    // method's peak is the highest of what the mark shows now and what the phases saw.
    let phases = runs
        .iter()
        .filter_map(|o| o.memory)
        .map(|m| m.train_peak_mb.max(m.eval_peak_mb))
        .fold(f64::NEG_INFINITY, f64::max);
    let peak_rss_mb = measurable
        .then(peak_rss_mb)
        .flatten()
        .map(|p| p.max(phases));
    Ok(MethodResult { runs, peak_rss_mb })
}

/// Runs Cluster-GCN and the enabled baselines on `data` for every seed.
pub fn compare(data: &NodeData, cfg: &ExperimentConfig) -> Result<Comparison> {
    cfg.validate(data.num_nodes())?;
    let cluster_gcn = (!cfg.baselines_only)
        .then(|| {
            method(&cfg.seeds, |s| {
                train_cluster_gcn(data, &cfg.train, &cfg.cluster, s)
            })
        })
        .transpose()?;
    let random = ClusterConfig {
        method: PartitionMethod::Random,
        ..cfg.cluster.clone()
    };
    let random_partition = cfg
        .random_partition
        .then(|| {
            method(&cfg.seeds, |s| {
                train_cluster_gcn(data, &cfg.train, &random, s)
            })
        })
        .transpose()?;
    let full_batch = cfg
        .full_batch
        .then(|| method(&cfg.seeds, |s| train_full_batch(data, &cfg.train, s)))
        .transpose()?;
    Ok(Comparison {
        cluster_gcn,
        full_batch,
        random_partition,
    })
}

/// As [`compare`], but Cluster-GCN and its random-partition baseline train from cluster
/// stores on disk ([`crate::store::ClusterStore`]): partitions and stores are prepared (or found in the
/// cache), full-batch GCN runs while the graph is still in memory, then the graph is dropped
/// and the cluster methods run holding one batch at a time.
pub fn compare_out_of_core(data: NodeData, cfg: &ExperimentConfig) -> Result<Comparison> {
    cfg.validate(data.num_nodes())?;
    let keep = cfg.cluster.cache_dir.is_some();
    let dir = cfg
        .cluster
        .cache_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let hash = graph_hash(&data.graph);
    let mut plans = Vec::new();
    if !cfg.baselines_only {
        plans.push((true, cfg.cluster.clone()));
    }
    if cfg.random_partition {
        plans.push((
            false,
            ClusterConfig {
                method: PartitionMethod::Random,
                ..cfg.cluster.clone()
            },
        ));
    }
    let mut stores = Vec::new();
    for (main, cl) in plans {
        let (p, info) = partition_with_info(&data, &cl)?;
        let key = StoreKey {
            graph_hash: hash,
            method_tag: u64::from(cl.method.tag()),
            partition_seed: cl.partition_seed,
        };
        let path = dir.join(format!(
            "{hash:016x}-{}-{}-s{}.store",
            cl.method.name(),
            cl.parts,
            cl.partition_seed
        ));
        let (store, why) = store_cached(&data, &p, key, &path)?;
        if let Some(why) = why {
            eprintln!("cluster store {}: {why}; built", path.display());
        }
        stores.push((main, cl, store, info));
    }
    let full_batch = cfg
        .full_batch
        .then(|| method(&cfg.seeds, |s| train_full_batch(&data, &cfg.train, s)))
        .transpose()?;
    drop(data);
    let (mut cluster_gcn, mut random_partition) = (None, None);
    for (main, cl, store, info) in &stores {
        let m = method(&cfg.seeds, |s| {
            let mut o = train_from_store(store, &cfg.train, cl, s)?;
            o.partition = Some(info.clone());
            Ok(o)
        })?;
        if *main {
            cluster_gcn = Some(m);
        } else {
            random_partition = Some(m);
        }
    }
    if !keep {
        for (_, _, store, _) in &stores {
            let _ = std::fs::remove_file(store.path());
        }
    }
    Ok(Comparison {
        cluster_gcn,
        full_batch,
        random_partition,
    })
}

/// One point of the depth study: mean and spread of the selected test accuracy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DepthPoint {
    pub layers: usize,
    /// Diagonal enhancement on (`Â = A' + λ diag(A')`) or off (`Â = A'`, the row-normalised
    /// adjacency with self loops).
    pub diag_enhanced: bool,
    pub test_accuracy: (f64, f64),
    pub per_seed: Vec<f64>,
    pub epoch_seconds: f64,
}

/// Cluster-GCN at each depth in `cfg.depth_layers`, with and without diagonal enhancement
/// (same partition, seeds and hyper-parameters otherwise). The enhanced variant uses the
/// configured λ (1 when the configured normalisation has none).
pub fn depth_study(data: &NodeData, cfg: &ExperimentConfig) -> Result<Vec<DepthPoint>> {
    let lambda = match cfg.cluster.norm {
        crate::norm::Normalization::DiagEnhanced { lambda } => lambda,
        _ => 1.0,
    };
    let mut out = Vec::new();
    for &layers in &cfg.depth_layers {
        for diag_enhanced in [false, true] {
            let train = TrainConfig {
                layers,
                ..cfg.train.clone()
            };
            let cluster = ClusterConfig {
                norm: if diag_enhanced {
                    crate::norm::Normalization::DiagEnhanced { lambda }
                } else {
                    crate::norm::Normalization::Row
                },
                ..cfg.cluster.clone()
            };
            let point = || -> Result<DepthPoint> {
                let m = method(&cfg.seeds, |s| train_cluster_gcn(data, &train, &cluster, s))?;
                Ok(DepthPoint {
                    layers,
                    diag_enhanced,
                    test_accuracy: m.test_accuracy_selected(),
                    per_seed: m.collect(|o| o.test_accuracy_at_best_val),
                    epoch_seconds: m.epoch_seconds(),
                })
            };
            // Each point is a unit of the run folder: a resumed study skips finished points
            // (each takes minutes; the whole study more than ten).
            let p = match &cfg.units {
                Some(dir) => ferrolab_core::RunDir::reopen(dir)?.unit(
                    &format!(
                        "depth{layers}-{}",
                        if diag_enhanced { "diag" } else { "row" }
                    ),
                    |_| point(),
                )?,
                None => point()?,
            };
            eprintln!(
                "depth {layers}, diagonal enhancement {}: test accuracy {:.4} ± {:.4}",
                if diag_enhanced { "on" } else { "off" },
                p.test_accuracy.0,
                p.test_accuracy.1
            );
            out.push(p);
        }
    }
    Ok(out)
}

/// Loads the configured graph: a file, the Cora preset, or a generated graph; with the
/// file's split, or a seeded per-class split when it has none. Returns the data and a name.
pub fn load_data(
    cfg: &ClusterGcnConfig,
    data_dir: Option<&Path>,
    master_seed: u64,
) -> Result<(NodeData, String)> {
    let d = &cfg.data;
    let (g, name) = if let Some(s) = &d.synthetic {
        let g = ferrolab_data::generate_csbm(&s.csbm(master_seed))?.to_graph_data();
        (g, format!("csbm-{}", s.nodes))
    } else {
        let path = match &d.path {
            Some(p) => std::path::PathBuf::from(p),
            None => ferrolab_data::find_dataset(data_dir, "cora_planetoid")?,
        };
        let name = path
            .file_stem()
            .map_or_else(|| "graph".into(), |s| s.to_string_lossy().into_owned());
        (ferrolab_data::load_npz_graph(&path)?, name)
    };
    let split = match &g.split {
        Some(_) => None,
        None => Some(g.seeded_per_class_split(
            d.train_per_class,
            d.val_per_class,
            seed::derive(master_seed, "split"),
        )?),
    };
    let sparse = matches!(g.features, ferrolab_data::Features::Sparse(_));
    let data = NodeData::from_graph_data(&g, split, d.row_normalize && sparse)?;
    Ok((data, name))
}

/// The experiment configuration a [`ClusterGcnConfig`] describes, seeds from `master_seed`.
pub fn experiment_config(cfg: &ClusterGcnConfig, master_seed: u64) -> ExperimentConfig {
    ExperimentConfig {
        train: cfg.train_config(),
        cluster: cfg.cluster_config(),
        // The one seed rule of every system: run i's seed is derived from the master seed.
        seeds: (0..cfg.train.seeds)
            .map(|i| seed::derive(master_seed, &format!("run{i}")))
            .collect(),
        full_batch: cfg.baselines.full_batch,
        random_partition: cfg.baselines.random_partition,
        baselines_only: cfg.baselines.only,
        out_of_core: cfg.cluster.out_of_core,
        depth_layers: cfg.depth.layers.clone(),
        units: None,
    }
}

/// [`compare`] as a report: Cluster-GCN's metrics, full-batch GCN and random-partition
/// Cluster-GCN as baselines (`full_batch_gcn`, `random_partition`), and validation curves of
/// the first seed. Chiang et al. report no Cora figures; Kipf & Welling's 81.5 is the
/// published full-batch reference.
pub fn run(data: NodeData, dataset: &str, cfg: &ExperimentConfig) -> Result<Outcome> {
    let depth = depth_study(&data, cfg)?;
    let stats = serde_json::json!({
        "nodes": data.num_nodes(),
        "edges": data.graph.num_edges(),
        "features": data.num_features(),
        "classes": data.num_classes,
        "data_resident_mb": data.resident_bytes() as f64 / (1024.0 * 1024.0),
    });
    let c = if cfg.out_of_core {
        compare_out_of_core(data, cfg)?
    } else {
        compare(&data, cfg)?
    };
    let mut report = Report::new(
        "cluster_gcn",
        dataset,
        cfg.seeds.first().copied().unwrap_or(0),
    );
    if let Some(m) = &c.cluster_gcn {
        report.metrics = m.metrics();
    }
    let mut per_seed = serde_json::Map::new();
    let mut curves = Vec::new();
    let mut add = |key: &str, m: &MethodResult| {
        per_seed.insert(
            format!("{key}_test_accuracy"),
            m.collect(|o| o.test_accuracy_at_best_val).into(),
        );
        if let Some(o) = m.runs.first() {
            curves.push(Curve {
                label: format!("{key} run 0"),
                y_name: "val_accuracy".into(),
                points: o
                    .curve
                    .iter()
                    .enumerate()
                    .map(|(e, (v, _))| (e as f64 + 1.0, *v))
                    .collect(),
            });
        }
    };
    if let Some(m) = &c.cluster_gcn {
        add("cluster_gcn", m);
    }
    for (key, m) in [
        ("full_batch_gcn", &c.full_batch),
        ("random_partition", &c.random_partition),
    ] {
        if let Some(m) = m {
            add(key, m);
            report.baselines.insert(key.into(), m.metrics());
        }
    }
    let mut depth_json = Vec::new();
    for diag in [false, true] {
        let name = if diag {
            "diag_enhanced"
        } else {
            "no_enhancement"
        };
        let pts: Vec<&DepthPoint> = depth.iter().filter(|p| p.diag_enhanced == diag).collect();
        if pts.is_empty() {
            continue;
        }
        for p in &pts {
            report.metrics.insert(
                format!("depth{}_{name}_test_accuracy", p.layers),
                p.test_accuracy.0,
            );
            report.metrics.insert(
                format!("depth{}_{name}_test_accuracy_std", p.layers),
                p.test_accuracy.1,
            );
            depth_json.push(serde_json::json!({
                "layers": p.layers,
                "diag_enhanced": diag,
                "test_accuracy": p.test_accuracy.0,
                "test_accuracy_std": p.test_accuracy.1,
                "test_accuracy_per_seed": p.per_seed,
                "epoch_seconds": p.epoch_seconds,
            }));
        }
        curves.push(Curve {
            label: format!("depth study, {name}"),
            y_name: "test_accuracy_vs_layers".into(),
            points: pts
                .iter()
                .map(|p| (p.layers as f64, p.test_accuracy.0))
                .collect(),
        });
    }
    if let Some(m) = &c.cluster_gcn {
        report
            .timings
            .insert("cluster_gcn_train_seconds".into(), m.train_seconds());
    }
    let cache = c
        .cluster_gcn
        .as_ref()
        .and_then(|m| m.runs.first())
        .and_then(|o| o.partition.as_ref())
        .map(|p| match &p.cache {
            CacheStatus::Disabled => "disabled".to_string(),
            CacheStatus::Hit(f) => format!("hit {}", f.display()),
            CacheStatus::Miss(f) => format!("stored {}", f.display()),
            CacheStatus::Rebuilt(f, why) => format!("rebuilt {} ({why})", f.display()),
        });
    let mut details = serde_json::json!({
        "seeds": cfg.seeds,
        "out_of_core": cfg.out_of_core,
        "partition": cfg.cluster.method.name(),
        "parts": cfg.cluster.parts,
        "parts_per_batch": cfg.cluster.parts_per_batch,
        "normalization": format!("{:?}", cfg.cluster.norm),
        "layers": cfg.train.layers,
        "hidden": cfg.train.hidden,
        "partition_cache": cache,
    });
    if let (Some(obj), Some(st)) = (details.as_object_mut(), stats.as_object()) {
        obj.extend(st.clone());
        obj.extend(per_seed);
        if !depth_json.is_empty() {
            obj.insert("depth_study".into(), depth_json.into());
        }
    }
    report.details = details;
    report.notes.push(
        "test_accuracy is taken at the epoch of best validation accuracy; \
         test_accuracy_final is the last epoch's model"
            .into(),
    );
    report.notes.push(
        "peak_rss_mb is the process's peak while that method ran, evaluation and the loaded \
         graph included (details.data_resident_mb); train_peak_rss_mb covers the training \
         phases alone and train_working_set_mb what training added to the memory it started \
         with"
            .into(),
    );
    if let (Some(f), Some(m)) = (&c.full_batch, &c.cluster_gcn) {
        let (cg, fb) = (m.test_accuracy_selected().0, f.test_accuracy_selected().0);
        report.notes.push(format!(
            "Cluster-GCN {} full-batch GCN by {:.2} points",
            if cg >= fb { "leads" } else { "trails" },
            100.0 * (cg - fb).abs()
        ));
    }
    let paper = vec![PaperFigure {
        model: "full_batch_gcn".into(),
        metric: "test_accuracy".into(),
        value: 0.815,
        source: "Kipf & Welling, ICLR 2017, Table 2 (Cora)".into(),
    }];
    Ok(Outcome {
        report,
        curves,
        paper,
    })
}
