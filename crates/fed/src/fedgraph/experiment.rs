//! The FS-G node-classification table for one configuration: for each regime (the selected
//! algorithm, local only, global) and each cell of the learning-rate × local-steps grid, runs
//! every seed; the cell of best mean validation accuracy is selected and its mean ± std test
//! accuracy reported.

use std::collections::BTreeMap;
use std::time::Instant;

use ferrolab_core::metrics::mean_pop_std;
use ferrolab_core::run::RunDir;
use ferrolab_graph::zoo::{Arch, WeightInit, ZooConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::FedGraphError;
use super::config::FedGraphConfig;
use super::data::{GraphSet, SeedSetup};
use super::run::{
    NodeAlgo, RunResult, Schedule, ServerAdam, fed_node, fedsage, global, local_only,
};

/// The regimes of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Regime {
    FedSage,
    FedProx,
    FedOpt,
    Gcfl,
    /// Plain GCFL beside GCFL+ (`baselines.gcfl_plain`).
    GcflPlain,
    FedAvg,
    Local,
    Global,
}

impl Regime {
    /// The federated node regimes by their `fed.algo` key.
    pub fn parse_node(key: &str) -> Option<Regime> {
        match key {
            "fedavg" => Some(Regime::FedAvg),
            "fedprox" => Some(Regime::FedProx),
            "fedopt" => Some(Regime::FedOpt),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Regime::FedSage => "fedsage",
            Regime::FedProx => "fedprox",
            Regime::FedOpt => "fedopt",
            Regime::Gcfl => "gcfl",
            Regime::GcflPlain => "gcfl_plain",
            Regime::FedAvg => "fedavg",
            Regime::Local => "local",
            Regime::Global => "global",
        }
    }
}

/// One grid cell's runs.
#[derive(Debug, Clone)]
pub struct CellResult {
    pub lr: f64,
    pub local_steps: usize,
    pub runs: Vec<RunResult>,
}

/// Mean and population std over runs ([`mean_pop_std`]); `(0, 0)` for no runs.
pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    mean_pop_std(v)
}

impl CellResult {
    pub fn val(&self) -> (f64, f64) {
        mean_std(&self.runs.iter().map(|r| r.val_accuracy).collect::<Vec<_>>())
    }
    pub fn val_loss(&self) -> (f64, f64) {
        mean_std(&self.runs.iter().map(|r| r.val_loss).collect::<Vec<_>>())
    }
    pub fn test(&self) -> (f64, f64) {
        mean_std(
            &self
                .runs
                .iter()
                .map(|r| r.test_accuracy)
                .collect::<Vec<_>>(),
        )
    }
}

/// A regime's whole grid and the selected cell.
#[derive(Debug, Clone)]
pub struct RegimeResult {
    pub regime: Regime,
    pub cells: Vec<CellResult>,
    pub selected: usize,
    /// Compute seconds of its runs summed (wall time when runs are parallel is less).
    pub seconds: f64,
}

impl RegimeResult {
    pub fn best(&self) -> &CellResult {
        &self.cells[self.selected]
    }
}

/// The zoo network the configuration asks for.
pub fn zoo_config(
    cfg: &FedGraphConfig,
    d_in: usize,
    classes: usize,
) -> Result<ZooConfig, FedGraphError> {
    let m = &cfg.model;
    let z = ZooConfig {
        hidden: m.hidden,
        layers: m.layers,
        dropout: m.dropout,
        heads: m.heads,
        init: WeightInit::parse(&m.init)?,
        ..ZooConfig::new(Arch::parse(&m.arch)?, d_in, classes)
    };
    z.check()?;
    Ok(z)
}

/// Everything one experiment measured.
#[derive(Debug, Clone)]
pub struct Table {
    pub dataset: String,
    pub regimes: Vec<RegimeResult>,
    /// Per seed: cross-client edges, client sizes, modularity of the client partition.
    pub setups: Vec<serde_json::Value>,
    /// FedSage+ only: per seed, the generator stage (losses, nodes added, bytes, seconds).
    pub fedsage: Vec<serde_json::Value>,
    /// GCFL+ only: per seed of the selected cell, the splits and the final clusters.
    pub gcfl: Vec<serde_json::Value>,
    /// graph-families only: each regime's figure as the GCFL reference code computes it.
    pub reference_eval: Option<serde_json::Value>,
}

/// The cell of best mean validation accuracy (or lowest mean validation loss); ties keep
/// the earlier cell.
pub fn select_cell(cells: &[CellResult], by_loss: bool) -> usize {
    let mut selected = 0;
    for (i, c) in cells.iter().enumerate() {
        let better = if by_loss {
            c.val_loss().0 < cells[selected].val_loss().0
        } else {
            c.val().0 > cells[selected].val().0
        };
        if better {
            selected = i;
        }
    }
    selected
}

/// Seed index `s` of the experiment seeded `master_seed`: the run seed and its node and
/// client split (every party of a multi-process run derives them alike).
pub fn seed_setup(
    g: &GraphSet,
    cfg: &FedGraphConfig,
    master_seed: u64,
    s: usize,
) -> Result<(u64, SeedSetup), FedGraphError> {
    let seed = ferrolab_core::seed::derive(master_seed, &format!("seed{s}"));
    let st = SeedSetup::draw(
        g,
        &cfg.data,
        cfg.fed.clients,
        ferrolab_core::seed::derive(seed, "node_split"),
        ferrolab_core::seed::derive(seed, "client_split"),
    )?;
    Ok((seed, st))
}

/// The schedule of the grid cell (`lr`, `steps`).
pub fn schedule(cfg: &FedGraphConfig, lr: f64, steps: usize) -> Schedule {
    let f = &cfg.fed;
    Schedule {
        lr,
        local_steps: steps,
        rounds: f.rounds,
        patience: f.patience,
        weight_decay: f.weight_decay,
        by_loss: f.select_by == "val_loss",
    }
}

/// The server–client algorithm of a node regime (FedAvg's for the others).
pub fn node_algo(cfg: &FedGraphConfig, regime: Regime) -> NodeAlgo {
    let f = &cfg.fed;
    let reply_timeout = Some(std::time::Duration::from_secs_f64(f.reply_seconds));
    match regime {
        Regime::FedProx => NodeAlgo {
            prox_mu: Some(f.prox_mu),
            server_adam: None,
            reply_timeout,
            round_offset: 0,
        },
        Regime::FedOpt => NodeAlgo {
            prox_mu: None,
            server_adam: Some(ServerAdam {
                lr: f.server_lr,
                beta1: f.server_beta1,
                beta2: f.server_beta2,
                tau: f.server_tau,
            }),
            reply_timeout,
            round_offset: 0,
        },
        _ => NodeAlgo {
            reply_timeout,
            ..NodeAlgo::default()
        },
    }
}

/// Runs federated node runs somewhere else than in this process's threads:
/// `fed.runtime = "nats"` (see `super::multiproc`). Given (regime, its grid cells
/// `(lr, local steps)`, seed index, run seed, split), one run per cell, in order. FedSage+ is asked for every cell of a seed at once (one generator stage
/// serves them all); the others one cell at a time.
pub type Remote<'a> = &'a (
        dyn Fn(Regime, &[(f64, usize)], usize, u64, &SeedSetup) -> Result<RemoteOut, FedGraphError>
            + Sync
    );

/// What a [`Remote`] call returns: one run per cell asked for and, for FedSage+, its
/// generator stage (what it did, its seconds).
pub type RemoteOut = (Vec<RunResult>, Option<(super::fedsage::GenStats, f64)>);

/// The report's record of seed `k`'s generator stage.
fn gen_info(k: usize, stats: &super::fedsage::GenStats, secs: f64) -> serde_json::Value {
    json!({
        "seed": k, "added": stats.added, "count_loss": stats.count_loss,
        "feat_loss": stats.feat_loss, "server_bytes": stats.server_bytes,
        "seconds": secs,
    })
}

/// One run of a grid (regime, cell, seed `k`) and its compute seconds: read back from the run
/// folder's units when a resumed run already finished it, else computed, timed and saved there
/// (`<regime>-lr<lr>-steps<steps>-seed<k>`), so a resumed table reports the grid's whole cost.
/// `prepare` (run only when the run is computed, outside its timing) makes what `compute`
/// needs and other runs share: FedSage+'s generator stage, reported apart.
pub(crate) fn grid_unit<T: Serialize + DeserializeOwned, P>(
    units: Option<&RunDir>,
    (regime, lr, steps, k): (Regime, f64, usize, usize),
    prepare: impl FnOnce() -> Result<P, FedGraphError>,
    compute: impl FnOnce(P) -> Result<T, FedGraphError>,
) -> Result<(T, f64), FedGraphError> {
    let name = format!("{}-lr{lr}-steps{steps}-seed{k}", regime.name());
    if let Some(d) = units {
        // A damaged folder is found before the run's work, not when saving it.
        d.check_unit_place(&name)?;
    }
    if let Some(saved) = units.and_then(|d| d.saved_unit::<(T, f64)>(&name)) {
        eprintln!("resume: {name} already done");
        return Ok(saved);
    }
    let input = prepare()?;
    let t0 = Instant::now();
    let done = (compute(input)?, t0.elapsed().as_secs_f64());
    if let Some(d) = units {
        d.save_unit(&name, &done)?;
    }
    Ok(done)
}

/// The unit holding FedSage+'s generator-stage details of seed `k`.
fn gen_unit_name(k: usize) -> String {
    format!("fedsage-gen-seed{k}")
}

/// Runs the grid for every regime the configuration enables, `workers` runs at a time (each
/// run is seeded by itself, so the figures do not depend on the number of workers).
/// `progress` receives every finished run. With `remote`, the FedAvg, FedProx and FedOpt runs
/// go through it; local only and global (no federation) stay in this process. With `units`
/// (the run folder), every finished run is saved as a unit (`<regime>-lr<lr>-steps<k>-seed<i>`)
/// and a run already saved there — a killed run continued with `--resume` — is read back
/// instead of run again.
pub fn run_table(
    g: &GraphSet,
    cfg: &FedGraphConfig,
    master_seed: u64,
    workers: usize,
    progress: &(dyn Fn(Regime, f64, usize, usize, &RunResult) + Sync),
    remote: Option<Remote<'_>>,
    units: Option<&RunDir>,
) -> Result<Table, FedGraphError> {
    let zoo = zoo_config(cfg, g.features.num_features(), g.classes)?;
    let f = &cfg.fed;
    let mut setups = Vec::with_capacity(f.seeds);
    let mut info = Vec::new();
    for s in 0..f.seeds {
        let (seed, st) = seed_setup(g, cfg, master_seed, s)?;
        info.push(json!({
            "seed": s,
            "cross_client_edges": st.clients.cross_edges,
            "client_nodes": st.clients.clients.iter().map(Vec::len).collect::<Vec<_>>(),
            "modularity": st.modularity,
            "train": st.split.train.len(), "val": st.split.val.len(), "test": st.split.test.len(),
        }));
        setups.push((seed, st));
    }
    // FedSage+: one generator stage per seed, shared by every grid cell (it does not depend
    // on the classifier's learning rate or local steps). Run when a FedSage+ run of that seed
    // first needs it, so a resumed table whose seed's runs are all saved skips it; its report
    // details are a unit of their own (`fedsage-gen-seed<i>`), saved before any run that
    // used the stage can be.
    let fedsage_on = f.algo == "fedsage";
    let gens: Vec<std::sync::OnceLock<Option<Vec<super::fedsage::Mended>>>> = (0..setups.len())
        .map(|_| std::sync::OnceLock::new())
        .collect();
    let gen_infos: std::sync::Mutex<BTreeMap<usize, serde_json::Value>> =
        std::sync::Mutex::new(BTreeMap::new());
    let first_error: std::sync::Mutex<Option<FedGraphError>> = std::sync::Mutex::new(None);
    let fail = |e: FedGraphError| {
        if let Ok(mut fe) = first_error.lock() {
            fe.get_or_insert(e);
        }
    };
    type Stage = (serde_json::Value, Vec<super::fedsage::Mended>);
    let gen_stage = |k: usize| -> Result<Stage, FedGraphError> {
        if let Some(d) = units {
            // A damaged folder is found before minutes of generator training.
            d.check_unit_place(&gen_unit_name(k))?;
        }
        let (seed, st) = &setups[k];
        let t0 = Instant::now();
        let (m, stats) = super::fedsage::mend_clients(
            g,
            st,
            &cfg.fedsage,
            cfg.model.dropout,
            super::fedsage_fabric::gen_seed(*seed),
        )?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "  fedsage seed {k}: generator trained in {secs:.1} s; nodes added per client {:?}; feature loss {:?}",
            stats.added, stats.feat_loss
        );
        let info = gen_info(k, &stats, secs);
        if let Some(d) = units {
            d.save_unit(&gen_unit_name(k), &info)?;
        }
        Ok((info, m))
    };
    // A remote FedSage+ job's generator stage: the first of seed `k` is its record (every job
    // of a seed trains the same generators).
    let record_gen = |k: usize,
                      stats: &super::fedsage::GenStats,
                      secs: f64|
     -> Result<(), FedGraphError> {
        let mut gi = gen_infos
            .lock()
            .map_err(|_| FedGraphError::Usage("generator records poisoned".into()))?;
        if let std::collections::btree_map::Entry::Vacant(e) = gi.entry(k) {
            let info = gen_info(k, stats, secs);
            eprintln!(
                "  fedsage seed {k}: generator trained in {secs:.1} s (client processes); nodes added per client {:?}; feature loss {:?}",
                stats.added, stats.feat_loss
            );
            if let Some(d) = units {
                d.save_unit(&gen_unit_name(k), &info)?;
            }
            e.insert(info);
        }
        Ok(())
    };
    let times: std::sync::Mutex<BTreeMap<usize, f64>> = std::sync::Mutex::new(BTreeMap::new());
    // Over NATS: every cell of seed `k`'s FedSage+ runs, from one set of client processes
    // (one generator stage), computed when the first of them is needed.
    let cells: Vec<(f64, usize)> = f
        .lrs
        .iter()
        .flat_map(|&lr| f.local_steps.iter().map(move |&st| (lr, st)))
        .collect();
    let seed_runs: Vec<std::sync::OnceLock<Option<Vec<RunResult>>>> = (0..setups.len())
        .map(|_| std::sync::OnceLock::new())
        .collect();
    // Its time (generator stage and every cell's run) counts once, in the regime's total;
    // the cells' own timings (taken around a look-up) are about zero.
    let remote_fedsage = |k: usize, ri: usize| -> Result<&Vec<RunResult>, FedGraphError> {
        let runs = seed_runs[k].get_or_init(|| {
            let (seed, st) = &setups[k];
            let run_remote = remote?;
            let t0 = Instant::now();
            let out = run_remote(Regime::FedSage, &cells, k, *seed, st);
            if let Ok(mut t) = times.lock() {
                *t.entry(ri).or_default() += t0.elapsed().as_secs_f64();
            }
            match out {
                Ok((runs, stage)) => {
                    if let Some((stats, secs)) = stage
                        && let Err(e) = record_gen(k, &stats, secs)
                    {
                        fail(e);
                        return None;
                    }
                    Some(runs)
                }
                Err(e) => {
                    fail(e);
                    None
                }
            }
        });
        runs.as_ref().ok_or_else(|| {
            FedGraphError::Run(ferrolab_core::CoreError::Runtime(format!(
                "fedsage seed {k}: the remote FedSage+ runs failed"
            )))
        })
    };
    let mended_of = |k: usize| -> Result<&Vec<super::fedsage::Mended>, FedGraphError> {
        // Other workers needing seed `k` wait here until the one stage of it is done.
        let m = gens[k].get_or_init(|| match gen_stage(k) {
            Ok((info, m)) => {
                if let Ok(mut gi) = gen_infos.lock() {
                    gi.insert(k, info);
                }
                Some(m)
            }
            Err(e) => {
                fail(e);
                None
            }
        });
        m.as_ref().ok_or_else(|| {
            FedGraphError::Run(ferrolab_core::CoreError::Runtime(format!(
                "fedsage seed {k}: the generator stage failed"
            )))
        })
    };
    let mut regimes = match f.algo.as_str() {
        "fedsage" => vec![Regime::FedSage, Regime::FedAvg],
        "fedprox" => vec![Regime::FedProx, Regime::FedAvg],
        "fedopt" => vec![Regime::FedOpt, Regime::FedAvg],
        _ => vec![Regime::FedAvg],
    };
    let avg = node_algo(cfg, Regime::FedAvg);
    let prox = node_algo(cfg, Regime::FedProx);
    let opt = node_algo(cfg, Regime::FedOpt);
    if cfg.baselines.local {
        regimes.push(Regime::Local);
    }
    if cfg.baselines.global {
        regimes.push(Regime::Global);
    }
    // Every (regime, cell, seed) is one job; the slowest (many local steps) go first so the
    // pool is not left waiting on one long job at the end.
    let mut jobs = Vec::new();
    for (ri, &regime) in regimes.iter().enumerate() {
        for (li, &lr) in f.lrs.iter().enumerate() {
            for (si, &steps) in f.local_steps.iter().enumerate() {
                for k in 0..setups.len() {
                    jobs.push((ri, li, si, k, regime, lr, steps));
                }
            }
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.6));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<BTreeMap<(usize, usize, usize, usize), RunResult>> =
        std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&(ri, li, si, k, regime, lr, steps)) = jobs.get(i) else {
                        break;
                    };
                    if first_error.lock().map_or(true, |e| e.is_some()) {
                        break;
                    }
                    let sched = schedule(cfg, lr, steps);
                    let (seed, st) = &setups[k];
                    // Over NATS FedSage+'s generator stage runs in each of its jobs' client
                    // processes, which keep the mended subgraphs for the classifier.
                    let federated =
                        matches!(regime, Regime::FedAvg | Regime::FedProx | Regime::FedOpt)
                            || (regime == Regime::FedSage && remote.is_some());
                    let prepare = || match regime {
                        Regime::FedSage if remote.is_none() => mended_of(k).map(Some),
                        Regime::FedSage => {
                            // The remote job saves the stage's record: a damaged folder is
                            // found before its minutes of work. The seed's runs are made here,
                            // outside the cell's timing (a worker waiting for another's
                            // would count its wait).
                            if let Some(d) = units {
                                d.check_unit_place(&gen_unit_name(k))?;
                            }
                            remote_fedsage(k, ri)?;
                            Ok(None)
                        }
                        _ => Ok(None),
                    };
                    let compute =
                        |mended: Option<&Vec<super::fedsage::Mended>>| match (regime, remote) {
                            (Regime::FedSage, Some(_)) => remote_fedsage(k, ri)?
                                .get(li * f.local_steps.len() + si)
                                .cloned()
                                .ok_or_else(|| {
                                    FedGraphError::Usage(format!(
                                        "fedsage seed {k}: no run of cell lr {lr}, {steps} steps"
                                    ))
                                }),
                            (_, Some(run_remote)) if federated => {
                                let (mut runs, _) =
                                    run_remote(regime, &[(lr, steps)], k, *seed, st)?;
                                runs.pop().ok_or_else(|| {
                                    FedGraphError::Usage(format!(
                                        "{} seed {k}: the remote run returned nothing",
                                        regime.name()
                                    ))
                                })
                            }
                            (Regime::FedSage, _) => match mended {
                                Some(m) => fedsage(g, st, m, &zoo, &sched, *seed),
                                None => Err(FedGraphError::Run(ferrolab_core::CoreError::Runtime(
                                    format!("fedsage seed {k}: no mended graphs"),
                                ))),
                            },
                            (Regime::FedAvg, _) => fed_node(g, st, &zoo, &sched, *seed, &avg),
                            (Regime::FedProx, _) => fed_node(g, st, &zoo, &sched, *seed, &prox),
                            (Regime::FedOpt, _) => fed_node(g, st, &zoo, &sched, *seed, &opt),
                            (Regime::Gcfl | Regime::GcflPlain, _) => Err(FedGraphError::Usage(
                                "fed.algo = \"gcfl\" needs data.dataset = \"graph-families\""
                                    .into(),
                            )),
                            (Regime::Local, _) => local_only(g, st, &zoo, &sched, *seed),
                            (Regime::Global, _) => global(g, st, &zoo, &sched, *seed),
                        };
                    match grid_unit(units, (regime, lr, steps, k), prepare, compute) {
                        Ok((r, seconds)) => {
                            progress(regime, lr, steps, k, &r);
                            if let Ok(mut t) = times.lock() {
                                *t.entry(ri).or_default() += seconds;
                            }
                            if let Ok(mut m) = results.lock() {
                                m.insert((ri, li, si, k), r);
                            }
                        }
                        Err(e) => fail(e),
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut results = results.into_inner().unwrap_or_default();
    let times = times.into_inner().unwrap_or_default();
    // The generator stage's details: this run's, else the saved unit's, else (a folder whose
    // seed's runs were all saved before these units existed) the stage is run for them.
    let mut gen_info = Vec::new();
    if fedsage_on {
        let mut made = gen_infos.into_inner().unwrap_or_default();
        for k in 0..setups.len() {
            let info = match made.remove(&k) {
                Some(i) => i,
                None => {
                    let saved = units
                        .and_then(|d| d.saved_unit::<serde_json::Value>(&gen_unit_name(k)))
                        .filter(|i| i["seed"].as_u64() == Some(k as u64));
                    match saved {
                        Some(i) => {
                            eprintln!("resume: {} already done", gen_unit_name(k));
                            i
                        }
                        None => {
                            eprintln!(
                                "fedsage seed {k}: no record of its generator stage in the run folder; training it here for the report"
                            );
                            gen_stage(k)?.0
                        }
                    }
                }
            };
            gen_info.push(info);
        }
    }
    let mut out = Vec::new();
    for (ri, &regime) in regimes.iter().enumerate() {
        let mut cells = Vec::new();
        for (li, &lr) in f.lrs.iter().enumerate() {
            for (si, &steps) in f.local_steps.iter().enumerate() {
                let runs = (0..setups.len())
                    .filter_map(|k| results.remove(&(ri, li, si, k)))
                    .collect();
                cells.push(CellResult {
                    lr,
                    local_steps: steps,
                    runs,
                });
            }
        }
        // Selection by validation only (the same figure that picks the round).
        let selected = select_cell(&cells, f.select_by == "val_loss");
        out.push(RegimeResult {
            regime,
            cells,
            selected,
            seconds: times.get(&ri).copied().unwrap_or(0.0),
        });
    }
    Ok(Table {
        dataset: g.name.clone(),
        regimes: out,
        setups: info,
        fedsage: gen_info,
        gcfl: Vec::new(),
        reference_eval: None,
    })
}

/// The report's metric block of one regime (shared keys for ours and the baselines).
pub fn regime_metrics(r: &RegimeResult) -> BTreeMap<String, f64> {
    let best = r.best();
    let (t, ts) = best.test();
    let (v, vs) = best.val();
    let n = best.runs.len().max(1) as f64;
    let mut m = BTreeMap::new();
    m.insert("test_accuracy".into(), t);
    m.insert("test_accuracy_std".into(), ts);
    m.insert("val_accuracy".into(), v);
    m.insert("val_accuracy_std".into(), vs);
    let (l, ls) = best.val_loss();
    m.insert("val_loss".into(), l);
    m.insert("val_loss_std".into(), ls);
    m.insert("lr".into(), best.lr);
    m.insert("local_steps".into(), best.local_steps as f64);
    m.insert(
        "rounds".into(),
        best.runs.iter().map(|x| x.rounds_run as f64).sum::<f64>() / n,
    );
    m.insert(
        "best_round".into(),
        best.runs.iter().map(|x| x.best_round as f64).sum::<f64>() / n,
    );
    // MB of 10^6 bytes, as `sdgt`'s key of the same name; the MiB figure first published under
    // `server_mb` stays available as `server_mib`.
    let bytes = best.runs.iter().map(|x| x.server_bytes as f64).sum::<f64>() / n;
    m.insert("server_mb".into(), bytes / 1e6);
    m.insert("server_mib".into(), bytes / (1u64 << 20) as f64);
    m.insert("grid_seconds".into(), r.seconds);
    if r.regime == Regime::Local {
        let w: Vec<f64> = best
            .runs
            .iter()
            .map(|x| x.whole_graph_test_accuracy)
            .collect();
        let (a, s) = mean_std(&w);
        m.insert("whole_graph_test_accuracy".into(), a);
        m.insert("whole_graph_test_accuracy_std".into(), s);
    }
    m
}

/// The grid as JSON rows for `details`.
pub fn grid_json(r: &RegimeResult) -> serde_json::Value {
    serde_json::Value::Array(
        r.cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (v, vs) = c.val();
                let (t, ts) = c.test();
                json!({
                    "lr": c.lr, "local_steps": c.local_steps,
                    "val_accuracy": v, "val_accuracy_std": vs, "val_loss": c.val_loss().0,
                    "test_accuracy": t, "test_accuracy_std": ts,
                    "per_seed_test_accuracy": c.runs.iter().map(|x| x.test_accuracy).collect::<Vec<_>>(),
                    "rounds": c.runs.iter().map(|x| x.rounds_run).collect::<Vec<_>>(),
                    "selected": i == r.selected,
                })
            })
            .collect(),
    )
}
