//! # FederatedScope-GNN: federated graph learning (`ferrolab fedgraph`)
//!
//! Wang, Kuang, Xie, Yao, Li, Ding & Zhou, *FederatedScope-GNN: Towards a Unified,
//! Comprehensive and Efficient Package for Federated Graph Learning*, KDD 2022
//! (arXiv 2204.05562; `alibaba/FederatedScope`, `federatedscope/gfl`).
//!
//! One graph is divided among `K` clients by a splitter of
//! [`ferrolab_graph::split`] (Louvain communities as FS-G assigns them, random, or Dirichlet
//! label skew; cross-client edges dropped), each client trains a network of
//! [`ferrolab_graph::zoo`] on its subgraph, and the server averages them over this crate's
//! runtime ([`Client`](crate::client::Client), [`FedAvg`](crate::strategy::FedAvg), the
//! in-process [`Fabric`](crate::fabric::Fabric)). The experiment reproduces the paper's
//! node-classification table: local-only vs FedAvg vs centralised ("global") training, each
//! the best cell of a learning-rate × local-steps grid by validation accuracy, mean ± std over
//! seeds.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the TOML/`--set` configuration |
//! | [`data`] | the graph, per-seed node split and client split, client subgraph tasks |
//! | [`client`] | [`GraphClient`](client::GraphClient): `fit` = local SGD steps on a subgraph |
//! | [`run`] | FedAvg over a fabric, local only, global |
//! | [`fedsage`] | FedSage+: NeighGen trained federatedly, subgraphs mended before FedAvg |
//! | [`fedsage_fabric`] | FedSage+'s clients behind a fabric: [`FedSageClient`](fedsage_fabric::FedSageClient), the server's relay |
//! | [`experiment`] | the grid, cell selection, report blocks |
//! | [`hpo`] | `ferrolab fedgraph hpo`: successive halving, Hyperband, FedEx, grid over FedAvg |
//! | [`privacy`] | `ferrolab fedgraph privacy`: membership / property attacks, DP-FedAvg, RDP accountant |
//! | [`families`], [`gcfl`] | synthetic graph classification (`graph-families`) and GCFL+ |
//! | [`gcfl_fabric`] | GCFL+'s clients behind a fabric: [`FamilyClient`](gcfl_fabric::FamilyClient), [`FabricLearners`](gcfl_fabric::FabricLearners) |
//! | `multiproc` | `fed.runtime = "nats"`: the clients as `ferrolab fed client` processes (feature `nats`) |

pub mod client;
pub mod config;
pub mod data;
pub mod experiment;
pub mod families;
pub mod fedsage;
pub mod fedsage_fabric;
pub mod gcfl;
pub mod gcfl_fabric;
pub mod hpo;
#[cfg(feature = "nats")]
pub mod multiproc;
pub mod privacy;
pub mod run;

use std::collections::BTreeMap;

use ferrolab_core::run::{Curve, PaperFigure, Report};
use ferrolab_core::system::{Entry, Preset, SubCommand};
use ferrolab_core::{Checked, ErrorClass, Outcome, RunContext, SysResult, System};
use serde_json::json;

pub use config::FedGraphConfig;
use experiment::{Regime, grid_json, regime_metrics, run_table};

/// Errors of the federated graph experiments.
#[derive(Debug, thiserror::Error)]
pub enum FedGraphError {
    /// Graph data, splitter or model problems (usage unless the graph crate says otherwise).
    #[error(transparent)]
    Graph(#[from] ferrolab_graph::GraphError),
    /// A data file problem.
    #[error(transparent)]
    Data(#[from] ferrolab_data::DataError),
    /// The transport failed.
    #[error(transparent)]
    Fabric(#[from] crate::fabric::FabricError),
    /// Aggregation failed.
    #[error(transparent)]
    Strategy(#[from] crate::strategy::StrategyError),
    /// A request that cannot work (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The run folder (saving or reading a `--resume` unit).
    #[error(transparent)]
    Run(#[from] ferrolab_core::CoreError),
}

impl ferrolab_core::Classify for FedGraphError {
    fn class(&self) -> ErrorClass {
        match self {
            FedGraphError::Graph(e) if e.is_usage() => ErrorClass::Usage,
            FedGraphError::Data(_) | FedGraphError::Usage(_) => ErrorClass::Usage,
            FedGraphError::Run(e) => ferrolab_core::Classify::class(e),
            _ => ErrorClass::Runtime,
        }
    }
}

/// The published table (FS-G, Table 3 of the KDD paper; Cora, 5 clients, GCN, Louvain).
const ANCHOR: [(&str, f64); 4] = [
    ("local", 0.6508),
    ("fedavg", 0.8732),
    ("global", 0.8689),
    ("fedsage", 0.8768),
];

#[cfg(feature = "nats")]
const NO_URL: &str =
    "fed.runtime = nats needs a NATS server: --set fed.nats_url=URL or set FERROLAB_NATS_URL";

/// An upper bound of a run's peak memory from the model's shape and the client count: every
/// client (and the server, twice: global model and running average) holds its model, gradient
/// and optimiser state, and every layer's activations and their gradients over a Cora-sized
/// graph (the hidden width squared is what explodes; the graph itself is checked by its
/// loader). Features and classes are Cora's (1,433 and 7), or a `data.synthetic` graph's own
/// (its nodes too); GIN's two-layer MLPs count double.
fn memory_estimate(cfg: &FedGraphConfig) -> ferrolab_core::guard::MemoryEstimate {
    // A generated graph's sizes are known before it exists; a file's are checked by its loader.
    let (features, classes, nodes) = match &cfg.data.synthetic {
        Some(s) => (s.features as u64, s.classes as u64, s.nodes as u64),
        None => (1433, 7, 2708),
    };
    let h = cfg.model.hidden as u64;
    let layers = cfg.model.layers as u64;
    let params = features
        .saturating_mul(h)
        .saturating_add(
            2u64.saturating_mul(layers)
                .saturating_mul(h)
                .saturating_mul(h),
        )
        .saturating_add(h.saturating_mul(classes));
    let copies = 3u64
        .saturating_mul(cfg.fed.clients as u64)
        .saturating_add(6);
    let activations = nodes
        .saturating_mul(h)
        .saturating_mul(layers)
        .saturating_mul(8);
    let bytes = params
        .saturating_mul(copies)
        // The clients' subgraphs split the nodes: together one graph's activations, and the
        // server's evaluation on the whole graph another.
        .saturating_add(activations.saturating_mul(2))
        .saturating_mul(4);
    ferrolab_core::guard::MemoryEstimate {
        setting: format!(
            "model.hidden={}, model.layers={}, fed.clients={}",
            cfg.model.hidden, cfg.model.layers, cfg.fed.clients
        ),
        bytes,
    }
}

/// `fed.runtime = "nats"` needs this build's NATS fabric and a server URL; both are the user's
/// to fix (exit 2) and are checked before the run folder exists.
fn check_runtime(cfg: &FedGraphConfig) -> Result<(), FedGraphError> {
    if cfg.fed.runtime != "nats" {
        return Ok(());
    }
    #[cfg(feature = "nats")]
    {
        if multiproc::nats_url(cfg).is_none() {
            return Err(FedGraphError::Usage(NO_URL.into()));
        }
        Ok(())
    }
    #[cfg(not(feature = "nats"))]
    Err(FedGraphError::Usage(
        "fed.runtime = nats: this build has no NATS fabric (rebuild with the `nats` feature)"
            .into(),
    ))
}

/// Federated node runs over NATS: (regime, grid cells, seed index, run seed, split), one run
/// per cell (see [`experiment::Remote`]).
type NatsRunner<'a> = dyn Fn(
        Regime,
        &[(f64, usize)],
        usize,
        u64,
        &data::SeedSetup,
    ) -> Result<experiment::RemoteOut, FedGraphError>
    + Sync
    + 'a;

/// The runner of `fed.runtime = "nats"`: each run writes its job file under the run folder's
/// `fabric/` and starts `fed.clients` client processes of this executable. The server's side
/// of a run reuses the graph `g` and the seed's split it already has.
#[cfg(feature = "nats")]
fn nats_runner<'a>(
    cfg: &FedGraphConfig,
    g: &'a data::GraphSet,
    ctx: &mut RunContext,
) -> Result<Box<NatsRunner<'a>>, FedGraphError> {
    let url = multiproc::nats_url(cfg).ok_or_else(|| FedGraphError::Usage(NO_URL.into()))?;
    let exe = std::env::current_exe()
        .map_err(|e| FedGraphError::Usage(format!("own executable: {e}")))?;
    let dir = ctx.run_dir().join("fabric");
    let master_seed = ctx.seed();
    let data_dir = ctx.data_dir().map(std::path::Path::to_path_buf);
    let cfg = cfg.clone();
    Ok(Box::new(
        move |regime, cells: &[(f64, usize)], seed_index, seed, setup| {
            let &(lr, local_steps) = cells
                .first()
                .ok_or_else(|| FedGraphError::Usage("a remote run with no grid cell".into()))?;
            let job = multiproc::Job {
                master_seed,
                data_dir: data_dir.clone(),
                algo: regime.name().into(),
                lr,
                local_steps,
                seed_index,
            };
            let unit = multiproc::unit_of(&cfg, &job, g.clone(), setup.clone(), seed)?;
            if regime == Regime::FedSage {
                // One generator stage in one set of client processes serves every cell.
                let schedules: Vec<run::Schedule> = cells
                    .iter()
                    .map(|&(lr, steps)| experiment::schedule(&cfg, lr, steps))
                    .collect();
                let (runs, stats, secs) = multiproc::run_fedsage_cells_job(
                    &cfg, &job, &unit, &schedules, &url, &dir, &exe,
                )?;
                return Ok((runs, Some((stats, secs))));
            }
            if cells.len() != 1 {
                return Err(FedGraphError::Usage(format!(
                    "a {} job runs one grid cell, not {}",
                    regime.name(),
                    cells.len()
                )));
            }
            let (r, stage) = multiproc::run_job(&cfg, &job, &unit, &url, &dir, &exe)?;
            Ok((vec![r], stage))
        },
    ))
}

#[cfg(not(feature = "nats"))]
fn nats_runner<'a>(
    _: &FedGraphConfig,
    _: &'a data::GraphSet,
    _: &mut RunContext,
) -> Result<Box<NatsRunner<'a>>, FedGraphError> {
    Err(FedGraphError::Usage(
        "fed.runtime = nats: this build has no NATS fabric (rebuild with the `nats` feature)"
            .into(),
    ))
}

/// The runner of the graph-families table's federated runs over NATS: each writes its job
/// file under the run folder's `fabric/` and starts `fed.clients` client processes of this
/// executable, each holding one client's graphs and model.
#[cfg(feature = "nats")]
fn families_runner(
    cfg: &FedGraphConfig,
    ctx: &mut RunContext,
) -> Result<Box<gcfl::RemoteRunFn>, FedGraphError> {
    let url = multiproc::nats_url(cfg).ok_or_else(|| FedGraphError::Usage(NO_URL.into()))?;
    let exe = std::env::current_exe()
        .map_err(|e| FedGraphError::Usage(format!("own executable: {e}")))?;
    let dir = ctx.run_dir().join("fabric");
    let master_seed = ctx.seed();
    let cfg = cfg.clone();
    Ok(Box::new(
        move |regime, lr, local_steps, seed_index, seed, data| {
            let job = multiproc::Job {
                master_seed,
                data_dir: None,
                algo: regime.name().into(),
                lr,
                local_steps,
                seed_index,
            };
            let unit = multiproc::family_unit(&cfg, &job, data.to_vec(), seed)?;
            multiproc::run_family_job(&cfg, &job, &unit, &url, &dir, &exe)
        },
    ))
}

#[cfg(not(feature = "nats"))]
fn families_runner(
    _: &FedGraphConfig,
    _: &mut RunContext,
) -> Result<Box<gcfl::RemoteRunFn>, FedGraphError> {
    Err(FedGraphError::Usage(
        "fed.runtime = nats: this build has no NATS fabric (rebuild with the `nats` feature)"
            .into(),
    ))
}

/// `ferrolab fedgraph`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FedGraphSystem;

impl System for FedGraphSystem {
    type Config = FedGraphConfig;

    fn name(&self) -> &'static str {
        "fedgraph"
    }

    fn about(&self) -> &'static str {
        "FederatedScope-GNN: federated GNN training on a graph split among clients (FedAvg, FedProx, FedOpt, FedSage+; GCFL+ on graph families) vs local-only and global training; `hpo`, `privacy`"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "Cora, Louvain, 5 clients, GCN, one grid cell, 2 seeds, 50 rounds (< 1 min)",
                toml: include_str!("../../../../configs/fedgraph/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "Cora, Louvain, 5 clients, GCN, lr x steps grid, 400 rounds, patience 100, 5 seeds",
                toml: include_str!("../../../../configs/fedgraph/paper.toml"),
            },
            Preset {
                name: "cora-louvain",
                about: "the paper preset (Louvain split), named for the table row",
                toml: include_str!("../../../../configs/fedgraph/cora-louvain.toml"),
            },
            Preset {
                name: "cora-random",
                about: "the paper preset on FS-G's random split (published FedAvg 86.63)",
                toml: include_str!("../../../../configs/fedgraph/cora-random.toml"),
            },
            Preset {
                name: "hpo",
                about: "`fedgraph hpo`: successive halving, Hyperband, FedEx and the grid on Cora, 12 configurations, 1 seed (< 1 min)",
                toml: include_str!("../../../../configs/fedgraph/hpo.toml"),
            },
            Preset {
                name: "privacy",
                about: "`fedgraph privacy`: MIA and property attacks, DP-FedAvg at sigma 0.4/0.8/1.6 on Cora, 1 seed (< 1 min)",
                toml: include_str!("../../../../configs/fedgraph/privacy.toml"),
            },
            Preset {
                name: "gcfl",
                about: "GCFL+ vs FedAvg on synthetic graph families (8 non-IID clients, GIN), 3 seeds",
                toml: include_str!("../../../../configs/fedgraph/gcfl.toml"),
            },
            Preset {
                name: "gcfl-mixed",
                about: "GCFL+ vs FedAvg on synthetic graph families whose client groups differ in structure, features and label rule, 5 seeds",
                toml: include_str!("../../../../configs/fedgraph/gcfl-mixed.toml"),
            },
            Preset {
                name: "gcfl-domains",
                about: "GCFL+ vs FedAvg and plain GCFL on synthetic graph families whose client groups differ in graph size, feature width, structure and label rule (GCFL's multi-data-set setting), 3 seeds",
                toml: include_str!("../../../../configs/fedgraph/gcfl-domains.toml"),
            },
        ]
    }

    fn subcommands(&self) -> Vec<SubCommand> {
        hpo::subcommands()
    }

    fn memory_estimate(
        &self,
        cfg: &FedGraphConfig,
        _data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        Some(memory_estimate(cfg))
    }

    fn entries(&self) -> Vec<Entry> {
        vec![Entry {
            name: "fedgraph-cora",
            what: "FS-G node classification on Cora (5 clients, Louvain): local only vs FedAvg vs global",
            quick: "quick",
            full: "paper",
        }]
    }

    fn datasets(&self, cfg: &FedGraphConfig) -> Vec<&'static str> {
        if cfg.data.path.is_some()
            || cfg.data.synthetic.is_some()
            || cfg.data.dataset == "graph-families"
        {
            Vec::new()
        } else {
            vec!["cora-planetoid"]
        }
    }

    fn prepare(&self, cfg: &Checked<FedGraphConfig>, ctx: &RunContext) -> SysResult<()> {
        hpo::check_mode(cfg)?;
        check_runtime(cfg)?;
        if cfg.data.dataset == "graph-families" {
            return Ok(gcfl::prepare(cfg)?);
        }
        let g = data::GraphSet::load_seeded(&cfg.data, ctx.data_dir(), ctx.seed())?;
        experiment::zoo_config(cfg, g.features.num_features(), g.classes)?;
        // Draw the first seed's splits now, so an impossible split (more clients than
        // communities or nodes, too few nodes for the validation set) fails before the run.
        data::SeedSetup::draw(&g, &cfg.data, cfg.fed.clients, 0, 0)?;
        Ok(())
    }

    fn run(&self, cfg: &Checked<FedGraphConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        if cfg.task.mode != "table" {
            hpo::check_mode(cfg)?;
            let g = data::GraphSet::load_seeded(&cfg.data, ctx.data_dir(), ctx.seed())?;
            return if cfg.task.mode == "hpo" {
                hpo::run(&g, cfg, ctx)
            } else {
                privacy::run(&g, cfg, ctx)
            };
        }
        let t0 = std::time::Instant::now();
        let families = cfg.data.dataset == "graph-families";
        let g = if families {
            None
        } else {
            Some(data::GraphSet::load_seeded(
                &cfg.data,
                ctx.data_dir(),
                ctx.seed(),
            )?)
        };
        if let Some(g) = &g {
            eprintln!(
                "{}: {} nodes, {} undirected edges, {} features, {} classes; {} clients ({} split), {} seeds, grid {:?} x {:?}",
                g.name,
                g.num_nodes(),
                g.graph.num_edges() / 2,
                g.features.num_features(),
                g.classes,
                cfg.fed.clients,
                cfg.data.split,
                cfg.fed.seeds,
                cfg.fed.lrs,
                cfg.fed.local_steps
            );
        }
        let log: std::sync::Mutex<Vec<serde_json::Value>> = std::sync::Mutex::new(Vec::new());
        let progress = |regime: Regime, lr: f64, steps: usize, seed: usize, r: &run::RunResult| {
            eprintln!(
                "  {:>6} lr {:<5} steps {:<3} seed {seed}: val {:.4} test {:.4} (best round {}, {} rounds)",
                regime.name(),
                lr,
                steps,
                r.val_accuracy,
                r.test_accuracy,
                r.best_round,
                r.rounds_run
            );
            if let Ok(mut l) = log.lock() {
                l.push(json!({
                    "regime": regime.name(), "lr": lr, "local_steps": steps,
                    "seed": seed, "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                    "best_round": r.best_round, "rounds": r.rounds_run,
                    "server_mb": r.server_bytes as f64 / 1e6, "rejected": r.rejected,
                    // The run's rounds, one entry each (DESIGN: a record per round; kept in
                    // the run's line so the file is written once per run, not per round).
                    "curve_rounds": r.curve.iter().map(|c| c.0).collect::<Vec<_>>(),
                    "val_accuracy_curve": r.curve.iter().map(|c| c.1).collect::<Vec<_>>(),
                    "test_accuracy_curve": r.curve.iter().map(|c| c.2).collect::<Vec<_>>(),
                }));
            }
        };
        let (seed, threads) = (ctx.seed(), ctx.threads());
        let table = match &g {
            Some(g) if cfg.fed.runtime == "nats" => {
                let remote = nats_runner(cfg, g, ctx)?;
                let units = Some(&*ctx.run_dir());
                let t = run_table(g, cfg, seed, threads, &progress, Some(&*remote), units)?;
                // Each run removed its job file; the folder goes too once empty.
                let _ = std::fs::remove_dir(ctx.run_dir().join("fabric"));
                t
            }
            Some(g) => {
                let units = Some(&*ctx.run_dir());
                run_table(g, cfg, seed, threads, &progress, None, units)?
            }
            None if cfg.fed.runtime == "nats" => {
                let remote = families_runner(cfg, ctx)?;
                let units = Some(&*ctx.run_dir());
                let t = gcfl::run_table(cfg, seed, threads, &progress, Some(&*remote), units)?;
                let _ = std::fs::remove_dir(ctx.run_dir().join("fabric"));
                t
            }
            None => gcfl::run_table(cfg, seed, threads, &progress, None, Some(&*ctx.run_dir()))?,
        };
        for rec in log.into_inner().unwrap_or_default() {
            ctx.log_metrics(&rec)?;
        }
        let mut report = Report::new("fedgraph", &table.dataset, ctx.seed());
        let mut details = serde_json::Map::new();
        let mut curves = Vec::new();
        for (i, r) in table.regimes.iter().enumerate() {
            let mut m = regime_metrics(r);
            if r.regime == Regime::FedSage && !table.fedsage.is_empty() {
                // FedSage+'s generator stage goes through the server too (generators out,
                // gradients back): `server_mb` is the whole cost, its two parts beside it.
                let per_seed: Vec<f64> = table
                    .fedsage
                    .iter()
                    .filter_map(|v| v["server_bytes"].as_f64())
                    .collect();
                let gen_mb = per_seed.iter().sum::<f64>() / per_seed.len().max(1) as f64 / 1e6;
                let classifier = m.get("server_mb").copied().unwrap_or(0.0);
                m.insert("classifier_server_mb".into(), classifier);
                m.insert("generator_server_mb".into(), gen_mb);
                m.insert("server_mb".into(), classifier + gen_mb);
                if let Some(mib) = m.get_mut("server_mib") {
                    *mib += gen_mb * 1e6 / f64::from(1u32 << 20);
                }
            }
            // The first regime is the selected algorithm; the rest are its baselines.
            if i == 0 {
                report.metrics = m;
            } else {
                report.baselines.insert(r.regime.name().into(), m);
            }
            details.insert(format!("grid_{}", r.regime.name()), grid_json(r));
            report
                .timings
                .insert(format!("{}_grid_seconds", r.regime.name()), r.seconds);
            if let Some(run0) = r.best().runs.first() {
                curves.push(Curve {
                    label: format!("{} seed 0", r.regime.name()),
                    y_name: "val_accuracy".into(),
                    points: run0.curve.iter().map(|&(x, v, _)| (x as f64, v)).collect(),
                });
            }
        }
        details.insert("seeds".into(), json!(table.setups));
        details.insert("algo".into(), json!(cfg.fed.algo));
        details.insert("runtime".into(), json!(cfg.fed.runtime));
        details.insert("select_by".into(), json!(cfg.fed.select_by));
        if !table.gcfl.is_empty() {
            details.insert("gcfl_clusters".into(), json!(table.gcfl));
        }
        if let Some(r) = &table.reference_eval {
            details.insert("reference_eval".into(), r.clone());
        }
        if !table.fedsage.is_empty() {
            details.insert("fedsage_generator".into(), json!(table.fedsage));
        }
        details.insert(
            "selection".into(),
            json!(if cfg.fed.select_by == "val_loss" {
                "grid cell of lowest mean validation loss; test accuracy at each run's round of lowest validation loss"
            } else {
                "grid cell of best mean validation accuracy; test accuracy at each run's best validation round"
            }),
        );
        report.details = serde_json::Value::Object(details);
        report
            .timings
            .insert("total_seconds".into(), t0.elapsed().as_secs_f64());
        report.notes.push(if families {
            "graph-families is SYNTHETIC (label = contains a triangle, the opposite for odd family groups under families.labels = by-group; each client draws from 2 of k graph families); every client's (cluster's) model is tested on the client's own test graphs, mean over clients; local = each client alone; global = one model on all clients' training graphs".into()
        } else {
            "local = each client alone on its subgraph, accuracy weighted by test nodes; global = one model on the whole graph; FedAvg evaluated by the server on the whole graph".into()
        });
        let paper = if table.dataset == "cora"
            && cfg.data.split == "louvain"
            && cfg.fed.clients == 5
        {
            ANCHOR
                .iter()
                .filter(|&&(m, _)| m != "fedsage" || cfg.fed.algo == "fedsage")
                .map(|&(m, v)| PaperFigure {
                    model: m.into(),
                    metric: "test_accuracy".into(),
                    value: v,
                    source: "Wang et al., KDD 2022 (FederatedScope-GNN), node classification table, Cora, 5 clients, GCN".into(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Outcome {
            report,
            curves,
            paper,
        })
    }

    fn summary(&self, o: &Outcome) -> Vec<String> {
        let r = &o.report;
        if let Some(lines) = hpo::summary(o).or_else(|| privacy::summary(o)) {
            return lines;
        }
        let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        let line = |name: &str, m: &BTreeMap<String, f64>| {
            format!(
                "{name:>7}: test accuracy {:.4} ± {:.4} (val {:.4}; lr {}, {} local steps, {:.0} rounds)",
                get(m, "test_accuracy"),
                get(m, "test_accuracy_std"),
                get(m, "val_accuracy"),
                get(m, "lr"),
                get(m, "local_steps"),
                get(m, "rounds"),
            )
        };
        let algo = r
            .details
            .get("algo")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("fedavg");
        let mut lines = vec![format!("{}:", r.dataset), line(algo, &r.metrics)];
        for (k, m) in &r.baselines {
            lines.push(line(k, m));
        }
        for p in &o.paper {
            lines.push(format!("  paper {}: {:.4}", p.model, p.value));
        }
        lines
    }
}
