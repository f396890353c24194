//! The comparison `ferrolab sdgt` runs: every algorithm on every split, the step size of each
//! chosen on the first seed by validation accuracy, then all seeds at that step size, plus
//! SD-GT with (s, T) co-optimised by the cost model; report, curves and per-run records.

use super::algo::{Algo, Hyper};
use super::config::SdgtConfig;
use super::costmodel::CostModel;
use super::data as part;
use super::driver::{self, RunData, RunError, RunResult, RunSpec};
use super::model::{FlatModel, Logistic, Samples};
use crate::inproc::InProcFabric;
use crate::topology::{Topology, TopologyError};
use ferrolab_core::metrics::mean_std;
use ferrolab_core::run::{Curve, Report};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, SystemError};
use ferrolab_vision::data::{self as vdata, ImageSet, Normalization};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Train, validation and test images.
#[derive(Debug, Clone)]
pub struct Images {
    /// Training images (to be partitioned).
    pub train: ImageSet,
    /// Validation images (step-size choice).
    pub val: ImageSet,
    /// Test images.
    pub test: ImageSet,
}

/// Reads (or generates) the images `cfg` asks for.
pub fn load_images(cfg: &SdgtConfig, data_dir: Option<&Path>, seed: u64) -> SysResult<Images> {
    let (train, test) = if cfg.data.dataset == "synthetic" {
        let n = cfg.data.synthetic_train;
        (
            vdata::synthetic(n, 28, seed),
            vdata::synthetic((n / 5).max(10), 28, seed ^ 0x5eed),
        )
    } else {
        let dir = match &cfg.data.dir {
            Some(d) => std::path::PathBuf::from(d),
            None => ferrolab_data::lookup::find_dataset(data_dir, "fashion-mnist")?,
        };
        vdata::load_fashion_mnist(&dir)?
    };
    let (mut train, val) = vdata::validation_split(&train, cfg.data.val_size, seed);
    if cfg.data.train_limit > 0 {
        train = train.head(cfg.data.train_limit);
    }
    let test = if cfg.data.test_limit > 0 {
        test.head(cfg.data.test_limit)
    } else {
        test
    };
    if train.len() < cfg.topology.devices {
        return Err(SystemError::usage(format!(
            "data: {} training images for topology.devices = {}: every device needs one",
            train.len(),
            cfg.topology.devices
        )));
    }
    Ok(Images { train, val, test })
}

/// The model `model.arch` names.
pub fn build_model(cfg: &SdgtConfig, seed: u64) -> Arc<dyn FlatModel> {
    match cfg.model.arch.as_str() {
        "cnn" => Arc::new(super::cnn::Cnn::new(seed)),
        _ => Arc::new(Logistic {
            dim_in: 28 * 28,
            classes: 10,
            l2: cfg.model.l2,
        }),
    }
}

/// Topologies of run `k` (subnets, and GT's single graph), checked for connectivity.
pub fn topologies(
    cfg: &SdgtConfig,
    seed_k: u64,
    algos: &[Algo],
) -> Result<(Topology, Topology), TopologyError> {
    let radius = (cfg.topology.radius > 0.0).then_some(cfg.topology.radius);
    let mut rng = ferrolab_core::seed::rng(seed_k, "topology");
    let topo = Topology::build(cfg.topology.devices, cfg.topology.subnets, radius, &mut rng)?;
    let mut rng = ferrolab_core::seed::rng(seed_k, "gt-topology");
    let gt = Topology::build(cfg.topology.devices, 1, radius, &mut rng)?;
    topo.check_sample(cfg.s())?;
    for &a in algos {
        match a {
            Algo::SdGt | Algo::SdFedAvg => topo.require_connected(a.key())?,
            Algo::Gt => gt.require_connected(a.key())?,
            _ => {}
        }
    }
    Ok((topo, gt))
}

/// Rows of each device under `split` for run seed `seed_k`.
pub fn partition(cfg: &SdgtConfig, split: &str, labels: &[u8], seed_k: u64) -> Vec<Vec<usize>> {
    let n = cfg.topology.devices;
    let mut rng = ferrolab_core::seed::rng(seed_k, &format!("partition/{split}"));
    match split {
        "iid" => part::iid(labels, n, &mut rng),
        "dirichlet" => part::dirichlet(labels, 10, n, cfg.data.alpha, &mut rng),
        _ => part::sorted(labels, n),
    }
}

/// A model of the same size whose gradient is free (zeros): a round with it costs exactly what
/// the runtime costs — tasks, replies, D2D exchanges, aggregation, the algorithms' vector
/// updates — without local training, which is how the round overhead is measured.
#[derive(Debug, Clone)]
pub struct NullModel {
    /// Parameters.
    pub dim: usize,
}

impl FlatModel for NullModel {
    fn name(&self) -> &str {
        "null"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn template(&self) -> crate::params::Params {
        crate::params::Params::flat("x", vec![0.0; self.dim])
    }
    fn init(&self, _seed: u64) -> Vec<f32> {
        vec![0.0; self.dim]
    }
    fn loss_grad(&self, _w: &[f32], _d: &Samples, _idx: &[usize], grad: &mut [f32]) -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        0.0
    }
    fn evaluate(&self, _w: &[f32], _d: &Samples) -> (f64, f64) {
        (0.0, 0.0)
    }
}

/// Seconds per round of `algo` at `lr` with the null model, over `rounds` rounds.
pub fn overhead_round_seconds(
    data: &RunData,
    spec: &RunSpec,
    rounds: u64,
) -> Result<f64, RunError> {
    let null = RunData {
        model: Arc::new(NullModel {
            dim: data.model.dim(),
        }),
        ..data.clone()
    };
    let s = RunSpec {
        rounds,
        eval_every: rounds,
        checkpoint_every: 0,
        ..*spec
    };
    let r = driver::run(&s, &null, Arc::new(InProcFabric::new()), &mut |_| {})?;
    Ok(r.round_seconds / rounds as f64)
}

/// What one run leaves for the report (saved per unit, so `--resume` skips finished runs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Split.
    pub split: String,
    /// Algorithm key.
    pub algo: String,
    /// Step size.
    pub lr: f64,
    /// Seed index.
    pub seed: usize,
    /// Co-optimised run.
    pub coopt: bool,
    /// Diverged (no usable result).
    pub diverged: bool,
    /// The run, when it finished.
    pub result: Option<RunResult>,
    /// Wall seconds.
    pub wall_seconds: f64,
}

impl RunSummary {
    fn last(&self) -> Option<&driver::RoundRecord> {
        self.result.as_ref().and_then(|r| r.history.last())
    }
    fn val(&self) -> f64 {
        self.last().map_or(0.0, |h| h.val_accuracy)
    }
    /// First evaluated record at or above `target`.
    fn hit(&self, target: f64) -> Option<&driver::RoundRecord> {
        self.result
            .as_ref()?
            .history
            .iter()
            .find(|h| h.test_accuracy >= target)
    }
}

fn put(m: &mut BTreeMap<String, f64>, key: &str, v: &[f64]) {
    let (mean, std) = mean_std(v);
    m.insert(key.into(), mean);
    m.insert(format!("{key}_std"), std);
}

/// Report keys of one (split, algorithm) over its seeds; `prefix` is "" for the headline split.
fn keys(runs: &[&RunSummary], target: f64, prefix: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let ok: Vec<&RunSummary> = runs
        .iter()
        .copied()
        .filter(|r| r.result.is_some())
        .collect();
    let col = |f: &dyn Fn(&RunSummary) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|r| f(r)).collect()
    };
    put(
        &mut m,
        &format!("{prefix}test_accuracy"),
        &col(&|r| r.last().map(|h| h.test_accuracy)),
    );
    put(
        &mut m,
        &format!("{prefix}d2d_mb"),
        &col(&|r| r.last().map(|h| h.d2d_mb)),
    );
    put(
        &mut m,
        &format!("{prefix}server_mb"),
        &col(&|r| r.last().map(|h| h.server_mb)),
    );
    let hits: Vec<Option<&driver::RoundRecord>> = ok.iter().map(|r| r.hit(target)).collect();
    let all = !hits.is_empty() && hits.iter().all(Option::is_some);
    let reached = hits.iter().filter(|h| h.is_some()).count() as f64 / runs.len().max(1) as f64;
    m.insert(format!("{prefix}target_reached_fraction"), reached);
    let hit_col = |f: &dyn Fn(&driver::RoundRecord) -> f64| -> Vec<f64> {
        hits.iter().flatten().map(|h| f(h)).collect()
    };
    for (k, v) in [
        ("rounds_to_target", hit_col(&|h| h.round as f64)),
        ("comm_to_target_mb", hit_col(&|h| h.d2d_mb + h.server_mb)),
        ("server_mb_to_target", hit_col(&|h| h.server_mb)),
    ] {
        // Never reached on some seed: null (serde writes NaN as null), not a partial mean.
        let (mean, std) = if all {
            mean_std(&v)
        } else {
            (f64::NAN, f64::NAN)
        };
        m.insert(format!("{prefix}{k}"), mean);
        m.insert(format!("{prefix}{k}_std"), std);
    }
    put(
        &mut m,
        &format!("{prefix}wall_seconds"),
        &col(&|r| Some(r.wall_seconds)),
    );
    put(
        &mut m,
        &format!("{prefix}round_seconds"),
        &col(&|r| {
            let x = r.result.as_ref()?;
            let rounds = x.history.last().map_or(1, |h| h.round).max(1);
            Some(x.round_seconds / rounds as f64)
        }),
    );
    if let Some(r) = runs.first() {
        m.insert(format!("{prefix}lr"), r.lr);
    }
    m.insert(
        format!("{prefix}diverged_runs"),
        runs.iter().filter(|r| r.diverged).count() as f64,
    );
    m
}

/// A run's unit name in the run folder (and in notes that name runs).
fn unit_name(split: &str, algo: &str, lr: f64, seed: usize, coopt: bool) -> String {
    format!(
        "{split}-{algo}-lr{lr}-seed{seed}{}",
        if coopt { "-coopt" } else { "" }
    )
}

/// Runs one (split, algorithm, lr, seed) unit.
#[allow(clippy::too_many_arguments)]
fn one(
    ctx: &mut RunContext,
    cfg: &SdgtConfig,
    data: &RunData,
    split: &str,
    algo: Algo,
    lr: f64,
    k: usize,
    coopt: bool,
) -> SysResult<RunSummary> {
    let name = unit_name(split, algo.key(), lr, k, coopt);
    let seed_k = ctx.seed_for(&format!("run{k}"));
    let fabric_dir = ctx.run_dir().join("fabric").join(&name);
    let checkpoint_every = cfg.fed.checkpoint_every;
    ctx.unit(&name, |ctx| {
        let spec = unit_spec(cfg, algo, lr, seed_k, coopt);
        let t0 = Instant::now();
        let out = if cfg.fed.runtime == "nats" {
            // The server process rebuilds the run's spec and data from the job file.
            run_nats(cfg, ctx, split, algo, lr, k, coopt, &fabric_dir)?
        } else {
            let fabric: Arc<dyn crate::Fabric> = if checkpoint_every > 0 {
                Arc::new(InProcFabric::with_dir(&fabric_dir))
            } else {
                Arc::new(InProcFabric::new())
            };
            // Progress of slow runs (the CNN's rounds take minutes): an evaluated round is
            // logged and printed once 10 s have passed since the last such line. Every round
            // would rewrite metrics.jsonl thousands of times in the fast logistic runs.
            let mut last_line = Instant::now();
            let mut log_error = None;
            let out = driver::run(&spec, data, fabric, &mut |h| {
                if last_line.elapsed().as_secs_f64() < 10.0 || log_error.is_some() {
                    return;
                }
                last_line = Instant::now();
                eprintln!(
                    "sdgt: {name}: round {} test {:.4} val {:.4} ({:.0}s)",
                    h.round,
                    h.test_accuracy,
                    h.val_accuracy,
                    t0.elapsed().as_secs_f64()
                );
                log_error = ctx
                    .log_metrics(&serde_json::json!({
                        "split": split, "algo": algo.key(), "lr": lr, "seed": k, "coopt": coopt,
                        "round": h.round, "test_accuracy": h.test_accuracy,
                        "val_accuracy": h.val_accuracy, "train_loss": h.train_loss,
                        "d2d_mb": h.d2d_mb, "server_mb": h.server_mb,
                        "seconds": t0.elapsed().as_secs_f64(),
                    }))
                    .err();
            });
            if let Some(e) = log_error {
                return Err(e);
            }
            out
        };
        let wall_seconds = t0.elapsed().as_secs_f64();
        let (result, diverged) = match out {
            Ok(r) => (Some(r), false),
            Err(RunError::Diverged { .. }) => (None, true),
            Err(RunError::Fabric(e @ crate::fabric::FabricError::Disconnected(_)))
                if cfg.fed.runtime == "nats" =>
            {
                // The mirrored state folder keeps the last checkpoint (see crate::mirror).
                return Err(SystemError::runtime(format!(
                    "{name}: {e}; the last checkpoint is saved in {}: rerun with --resume to continue from it",
                    fabric_dir.display()
                )));
            }
            Err(e) => return Err(SystemError::runtime(format!("{name}: {e}"))),
        };
        let _ = std::fs::remove_dir_all(&fabric_dir);
        let summary = RunSummary { split: split.into(), algo: algo.key().into(), lr, seed: k, coopt, diverged, result, wall_seconds };
        let last = summary.last();
        ctx.log_metrics(&serde_json::json!({
            "split": split, "algo": algo.key(), "lr": lr, "seed": k, "coopt": coopt,
            "diverged": diverged, "wall_seconds": wall_seconds,
            "test_accuracy": last.map(|h| h.test_accuracy), "val_accuracy": last.map(|h| h.val_accuracy),
            "d2d_mb": last.map(|h| h.d2d_mb), "server_mb": last.map(|h| h.server_mb),
            "rounds": summary.result.as_ref().map(|r| r.history.iter().map(|h| h.round).collect::<Vec<_>>()),
            "test_accuracy_curve": summary.result.as_ref().map(|r| r.history.iter().map(|h| h.test_accuracy).collect::<Vec<_>>()),
        }))?;
        eprintln!(
            "sdgt: {name}: test {:.4} val {:.4} ({wall_seconds:.1}s){}",
            last.map_or(f64::NAN, |h| h.test_accuracy),
            last.map_or(f64::NAN, |h| h.val_accuracy),
            if diverged { " diverged" } else { "" }
        );
        Ok(summary)
    })
}

/// The spec of one unit of the grid (shared by the in-process and multi-process runtimes).
pub fn unit_spec(cfg: &SdgtConfig, algo: Algo, lr: f64, seed_k: u64, coopt: bool) -> RunSpec {
    RunSpec {
        hyper: Hyper {
            algo,
            lr,
            t: cfg.fed.local_steps,
            batch: cfg.fed.batch,
        },
        s: cfg.s(),
        rounds: cfg.fed.rounds,
        seed: seed_k,
        eval_every: cfg.fed.eval_every,
        checkpoint_every: cfg.fed.checkpoint_every,
        devices_per_client: cfg.fed.devices_per_client,
        deadline_seconds: cfg.fed.deadline_seconds,
        cost: cost_model(cfg),
        coopt_every: if coopt { cfg.fed.coopt_every } else { 0 },
    }
}

/// One unit with the clients as `ferrolab fed client` processes over NATS: the job file
/// goes to the run folder, the run to a fresh prefix. The outer error is the user's (no URL,
/// server unreachable) or a crashed client; the inner one the run's.
#[cfg(feature = "nats")]
#[allow(clippy::too_many_arguments)]
fn run_nats(
    cfg: &SdgtConfig,
    ctx: &mut RunContext,
    split: &str,
    algo: Algo,
    lr: f64,
    k: usize,
    coopt: bool,
    state_dir: &Path,
) -> SysResult<Result<RunResult, RunError>> {
    use super::multiproc::{self, Job};
    let url = multiproc::nats_url(cfg).ok_or_else(no_url)?;
    let job = Job {
        master_seed: ctx.seed(),
        data_dir: ctx.data_dir().map(Path::to_path_buf),
        split: split.into(),
        algo: algo.key().into(),
        lr,
        seed_index: k,
        coopt,
        state_dir: Some(state_dir.to_path_buf()),
    };
    let text = multiproc::job_file(cfg, &job).map_err(SystemError::runtime)?;
    let dir = ctx.run_dir().join("fabric");
    std::fs::create_dir_all(&dir)
        .map_err(|e| SystemError::runtime(format!("{}: {e}", dir.display())))?;
    let file = dir.join(format!("job-{}.toml", multiproc::fresh_prefix()));
    std::fs::write(&file, text)
        .map_err(|e| SystemError::runtime(format!("{}: {e}", file.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| SystemError::runtime(format!("own executable: {e}")))?;
    let prefix = multiproc::fresh_prefix();
    // The server is a child process too (`ferrolab fed server`, which starts the clients as
    // its own children); it hands the run back through an outcome file.
    let outcome = dir.join(format!("outcome-{prefix}.json"));
    let status = std::process::Command::new(&exe)
        .args(["fed", "server", "--system", "sdgt", "--config"])
        .arg(&file)
        .args(["--prefix", &prefix, "--outcome"])
        .arg(&outcome)
        // As for the clients: the URL (it may hold a password) goes in the environment, never
        // on a command line other users can read.
        .env("FERROLAB_NATS_URL", &url)
        // The server and the clients it starts compute with this run's thread count (their
        // parallel sums must group as the in-process run's do).
        .env("RAYON_NUM_THREADS", ctx.threads().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .status();
    let _ = std::fs::remove_file(&file);
    let read = std::fs::read(&outcome);
    let _ = std::fs::remove_file(&outcome);
    let status = status.map_err(|e| {
        SystemError::runtime(format!("starting `{} fed server`: {e}", exe.display()))
    })?;
    match read {
        Ok(bytes) => {
            let o: multiproc::ServerOutcome = serde_json::from_slice(&bytes)
                .map_err(|e| SystemError::runtime(format!("the server process's outcome: {e}")))?;
            Ok(multiproc::outcome_result(o, algo, lr))
        }
        // No outcome: the server process stopped before the run ended (its error is on stderr).
        Err(_) if status.code() == Some(2) => Err(SystemError::usage(format!(
            "{} {} lr {lr}: the NATS server process refused the run (its error is above)",
            split,
            algo.key()
        ))),
        Err(_) => Err(SystemError::runtime(format!(
            "{} {} lr {lr}: the NATS server process failed ({status}; its error is above)",
            split,
            algo.key()
        ))),
    }
}

#[cfg(not(feature = "nats"))]
#[allow(clippy::too_many_arguments)]
fn run_nats(
    _: &SdgtConfig,
    _: &mut RunContext,
    _: &str,
    _: Algo,
    _: f64,
    _: usize,
    _: bool,
    _: &Path,
) -> SysResult<Result<RunResult, RunError>> {
    Err(SystemError::usage(
        "fed.runtime = nats: this build has no NATS fabric (rebuild with the `nats` feature)",
    ))
}

#[cfg(feature = "nats")]
fn no_url() -> SystemError {
    SystemError::usage(
        "fed.runtime = nats needs a NATS server: --set fed.nats_url=URL or set FERROLAB_NATS_URL",
    )
}

/// The cost model of `cfg`.
pub fn cost_model(cfg: &SdgtConfig) -> CostModel {
    let l = &cfg.cost.lambda;
    CostModel {
        lambda: [
            l.first().copied().unwrap_or(1.0),
            l.get(1).copied().unwrap_or(1.0),
            l.get(2).copied().unwrap_or(0.0),
        ],
        energy: cfg.cost.energy,
        delta: cfg.cost.delta,
        max_t: cfg.cost.max_t,
    }
}

/// Checks what can be checked before the run folder exists: the runtime, the topologies of
/// every seed (connectivity, s), and that the data parses.
pub fn prepare(cfg: &SdgtConfig, data_dir: Option<&Path>, master: u64) -> SysResult<()> {
    check_runtime(cfg)?;
    let algos: Vec<Algo> = cfg
        .fed
        .algorithms
        .iter()
        .filter_map(|a| Algo::parse(a))
        .collect();
    for k in 0..cfg.fed.seeds {
        let seed_k = ferrolab_core::seed::derive(master, &format!("run{k}"));
        topologies(cfg, seed_k, &algos).map_err(|e| SystemError::usage(e.to_string()))?;
    }
    load_images(cfg, data_dir, ferrolab_core::seed::derive(master, "split"))?;
    Ok(())
}

fn check_runtime(cfg: &SdgtConfig) -> SysResult<()> {
    if cfg.fed.runtime == "nats" {
        #[cfg(not(feature = "nats"))]
        return Err(SystemError::usage(
            "fed.runtime = nats: this build has no NATS fabric (rebuild with the `nats` feature); use fed.runtime = inproc",
        ));
        #[cfg(feature = "nats")]
        {
            let url = super::multiproc::nats_url(cfg).ok_or_else(no_url)?;
            // Refused, unreachable or JetStream-less servers are the user's to fix: find them
            // before the run folder and the data exist.
            let probe = super::multiproc::fresh_prefix();
            let f = crate::nats::NatsFabric::connect(crate::nats::NatsOptions::new(
                &url,
                &probe,
                crate::nats::Party::Server,
            ))
            .map_err(|e| SystemError::usage(e.to_string()))?;
            // The probe's streams are of no use once the server answered.
            let _ = f.remove_run();
        }
    }
    Ok(())
}

/// The whole comparison.
pub fn run(cfg: &Checked<SdgtConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    let cfg: &SdgtConfig = cfg.get();
    check_runtime(cfg)?;
    let t_all = Instant::now();
    let algos: Vec<Algo> = cfg
        .fed
        .algorithms
        .iter()
        .filter_map(|a| Algo::parse(a))
        .collect();
    let images = load_images(cfg, ctx.data_dir(), ctx.seed_for("split"))?;
    let norm = Normalization::of(&images.train);
    let train = Arc::new(part::to_samples(&images.train, norm, 10));
    let val = Arc::new(part::to_samples(&images.val, norm, 10));
    let test = Arc::new(part::to_samples(&images.test, norm, 10));
    ferrolab_core::backend::seed_backend(ctx.seed_for("init"));
    let model = build_model(cfg, ctx.seed_for("init"));
    let x0 = Arc::new(model.init(ctx.seed_for("init")));
    let target = cfg.model.target();
    let mut all: Vec<RunSummary> = Vec::new();
    let mut chosen: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut grid_val: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut overhead: BTreeMap<String, f64> = BTreeMap::new();
    for split in &cfg.data.splits {
        let data_for = |k: usize, ctx: &RunContext| -> SysResult<RunData> {
            let seed_k = ctx.seed_for(&format!("run{k}"));
            let (topo, gt) =
                topologies(cfg, seed_k, &algos).map_err(|e| SystemError::usage(e.to_string()))?;
            Ok(RunData {
                model: Arc::clone(&model),
                train: Arc::clone(&train),
                parts: Arc::new(partition(cfg, split, &train.y, seed_k)),
                val: Arc::clone(&val),
                test: Arc::clone(&test),
                topo: Arc::new(topo),
                gt_topo: Arc::new(gt),
                x0: Arc::clone(&x0),
                state_dir: None,
            })
        };
        let data0 = data_for(0, ctx)?;
        if let Some((dev, rows)) = data0
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.len()))
            .min_by_key(|&(_, n)| n)
            && rows < cfg.fed.batch
        {
            // Allowed (a Dirichlet split can leave a device a handful of rows), but its
            // minibatches then hold the same rows more than once: say so.
            eprintln!(
                "sdgt: fed.batch = {} exceeds the {rows} training rows of device {dev} under split `{split}` (run 0): its minibatches repeat rows",
                cfg.fed.batch
            );
        }
        for &algo in &algos {
            let mut best: Option<RunSummary> = None;
            let mut vals = Vec::new();
            for &lr in &cfg.fed.lr_grid {
                let r = one(ctx, cfg, &data0, split, algo, lr, 0, false)?;
                vals.push((lr, r.val()));
                if best.as_ref().is_none_or(|b| r.val() > b.val()) {
                    best = Some(r);
                }
            }
            grid_val.insert(format!("{split}/{}", algo.key()), vals);
            let Some(best) = best else { continue };
            let lr = best.lr;
            chosen.insert((split.clone(), algo.key().into()), lr);
            all.push(best);
            for k in 1..cfg.fed.seeds {
                let d = data_for(k, ctx)?;
                all.push(one(ctx, cfg, &d, split, algo, lr, k, false)?);
            }
            if Some(split) == cfg.data.splits.first() {
                // No checkpoints: the overhead is the round's own cost.
                let spec = RunSpec {
                    checkpoint_every: 0,
                    ..unit_spec(cfg, algo, lr, ctx.seed_for("run0"), false)
                };
                let n = cfg.fed.rounds.min(20);
                let o = overhead_round_seconds(&data0, &spec, n).map_err(|e| {
                    SystemError::runtime(format!("overhead of {}: {e}", algo.key()))
                })?;
                overhead.insert(algo.key().to_string(), o);
            }
            if algo == Algo::SdGt && cfg.fed.coopt_every > 0 {
                for k in 0..cfg.fed.seeds {
                    let d = if k == 0 {
                        data0.clone()
                    } else {
                        data_for(k, ctx)?
                    };
                    all.push(one(ctx, cfg, &d, split, algo, lr, k, true)?);
                }
            }
        }
    }
    let mut out = report(
        cfg,
        ctx,
        &all,
        &chosen,
        &grid_val,
        &train,
        target,
        t_all.elapsed().as_secs_f64(),
    );
    for (algo, secs) in overhead {
        let m = if algo == "sdgt" {
            &mut out.report.metrics
        } else {
            out.report.baselines.entry(algo).or_default()
        };
        let round = m.get("round_seconds").copied().unwrap_or(f64::NAN);
        m.insert("overhead_round_seconds".into(), secs);
        m.insert("round_overhead_fraction".into(), secs / round);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &SdgtConfig,
    ctx: &RunContext,
    all: &[RunSummary],
    chosen: &BTreeMap<(String, String), f64>,
    grid_val: &BTreeMap<String, Vec<(f64, f64)>>,
    train: &Samples,
    target: f64,
    wall: f64,
) -> Outcome {
    let mut rep = Report::new("sdgt", &cfg.data.dataset, ctx.seed());
    let headline = cfg.data.splits.first().cloned().unwrap_or_default();
    let pick = |split: &str, algo: &str, coopt: bool| -> Vec<&RunSummary> {
        let lr = chosen.get(&(split.to_string(), algo.to_string())).copied();
        all.iter()
            .filter(|r| r.split == split && r.algo == algo && r.coopt == coopt && Some(r.lr) == lr)
            .collect()
    };
    for split in &cfg.data.splits {
        let prefix = if *split == headline {
            String::new()
        } else {
            format!("{split}_")
        };
        for algo in &cfg.fed.algorithms {
            let m = keys(&pick(split, algo, false), target, &prefix);
            let dest = if algo == "sdgt" {
                &mut rep.metrics
            } else {
                rep.baselines.entry(algo.clone()).or_default()
            };
            dest.extend(m);
        }
        // Cost to target: SD-GT at the reference's fixed (s, T) vs co-optimised.
        let fixed = pick(split, "sdgt", false);
        let co = pick(split, "sdgt", true);
        if !co.is_empty() {
            let cost_hit = |rs: &[&RunSummary]| -> Option<Vec<f64>> {
                rs.iter().map(|r| r.hit(target).map(|h| h.cost)).collect()
            };
            let m = &mut rep.metrics;
            let cm = keys(&co, target, &format!("{prefix}coopt_"));
            m.extend(cm);
            match (cost_hit(&fixed), cost_hit(&co)) {
                (Some(f), Some(c)) => {
                    put(m, &format!("{prefix}fixed_cost_to_target"), &f);
                    put(m, &format!("{prefix}coopt_cost_to_target"), &c);
                    let (fm, cm) = (mean_std(&f).0, mean_std(&c).0);
                    m.insert(format!("{prefix}coopt_cost_saved_fraction"), 1.0 - cm / fm);
                }
                _ => {
                    m.insert(format!("{prefix}coopt_cost_saved_fraction"), f64::NAN);
                }
            }
            let last: Vec<(f64, f64)> = co
                .iter()
                .filter_map(|r| {
                    r.result
                        .as_ref()?
                        .choices
                        .last()
                        .map(|&(_, s, t)| (s as f64, t as f64))
                })
                .collect();
            put(
                m,
                &format!("{prefix}coopt_s"),
                &last.iter().map(|x| x.0).collect::<Vec<_>>(),
            );
            put(
                m,
                &format!("{prefix}coopt_t"),
                &last.iter().map(|x| x.1).collect::<Vec<_>>(),
            );
        }
    }
    rep.metrics.insert("target_accuracy".into(), target);
    rep.timings.insert("total_seconds".into(), wall);
    rep.timings.insert(
        "runs_seconds".into(),
        all.iter().map(|r| r.wall_seconds).sum(),
    );
    // Curves: mean test accuracy over seeds, per round and per megabyte, headline split.
    let mut curves = Vec::new();
    let mut algos: Vec<(String, bool)> = cfg
        .fed
        .algorithms
        .iter()
        .map(|a| (a.clone(), false))
        .collect();
    if cfg.fed.coopt_every > 0 && cfg.fed.algorithms.iter().any(|a| a == "sdgt") {
        algos.push(("sdgt".into(), true));
    }
    for (algo, coopt) in algos {
        let rs: Vec<&RunSummary> = pick(&headline, &algo, coopt)
            .into_iter()
            .filter(|r| r.result.is_some())
            .collect();
        let Some(first) = rs.first().and_then(|r| r.result.as_ref()) else {
            continue;
        };
        let n = first.history.len();
        let mean_at = |i: usize, f: &dyn Fn(&driver::RoundRecord) -> f64| -> f64 {
            let v: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.result.as_ref()?.history.get(i).map(f))
                .collect();
            mean_std(&v).0
        };
        let label = if coopt {
            "sdgt (co-optimised s, T)".to_string()
        } else {
            algo.clone()
        };
        curves.push(Curve {
            label: label.clone(),
            y_name: "test_accuracy_vs_round".into(),
            points: (0..n)
                .map(|i| {
                    (
                        first.history[i].round as f64,
                        mean_at(i, &|h| h.test_accuracy),
                    )
                })
                .collect(),
        });
        curves.push(Curve {
            label,
            y_name: "test_accuracy_vs_comm_mb".into(),
            points: (0..n)
                .map(|i| {
                    (
                        mean_at(i, &|h| h.d2d_mb + h.server_mb),
                        mean_at(i, &|h| h.test_accuracy),
                    )
                })
                .collect(),
        });
    }
    rep.details = serde_json::json!({
        "chosen_lr": chosen.iter().map(|((s, a), lr)| (format!("{s}/{a}"), *lr)).collect::<BTreeMap<_, _>>(),
        "lr_grid_val_accuracy": grid_val,
        "s": cfg.s(),
        "local_steps": cfg.fed.local_steps,
        "train_images": train.len(),
        "runs": all.iter().map(|r| serde_json::json!({
            "split": r.split, "algo": r.algo, "lr": r.lr, "seed": r.seed, "coopt": r.coopt,
            "diverged": r.diverged, "wall_seconds": r.wall_seconds,
            "test_accuracy": r.last().map(|h| h.test_accuracy),
            "rounds_to_target": r.hit(target).map(|h| h.round),
            "choices": r.result.as_ref().map(|x| x.choices.clone()),
            "lost_devices": r.result.as_ref().map(|x| x.lost_devices),
            "gone_contributions": r.result.as_ref().map(|x| x.gone_contributions),
        })).collect::<Vec<_>>(),
    });
    // Over NATS a client process can die mid-run: its devices' replies are lost and the rounds
    // go on without them. Such a run differs from the in-process one, and the report says so.
    let lossy: Vec<String> = all
        .iter()
        .filter_map(|r| {
            let n = r.result.as_ref()?.lost_devices;
            (n > 0).then(|| {
                format!(
                    "{} ({n})",
                    unit_name(&r.split, &r.algo, r.lr, r.seed, r.coopt)
                )
            })
        })
        .collect();
    if !lossy.is_empty() {
        rep.notes.push(format!(
            "{} run(s) lost sampled devices' replies (a client process that died or missed a deadline; the rounds went on without them): {}",
            lossy.len(),
            lossy.join(", ")
        ));
    }
    rep.notes.push(format!(
        "headline split `{headline}`; target accuracy {target} fixed before running; rounds_to_target is null when some seed never reached it"
    ));
    Outcome {
        report: rep,
        curves,
        paper: Vec::new(),
    }
}
