//! `ferrolab fedgraph` with its clients as separate processes over NATS
//! (`fed.runtime = "nats"`, `ferrolab fed server|client --system fedgraph`).
//!
//! One [`Job`] is one federated run of the node table: a regime (FedAvg, FedProx or FedOpt),
//! a grid cell (learning rate, local steps) and a seed index. The server and every client
//! process rebuild the same graph, node split, client split and initial model from the same
//! job file, so nothing but the model parameters crosses the wire, and the run is
//! bit-identical to the in-process one (the clients' dropout streams are seeded by client
//! id, not by thread). Local-only and global training are not federated and stay in the
//! server's process.
//!
//! A job of `task.mode = "hpo"` is one seed of a federated hyper-parameter search
//! (`ferrolab fedgraph hpo --set fed.runtime=nats`): the same client processes answer every
//! trial's rounds, each task carrying the trial's configuration ([`super::hpo::FabricTrainer`]).
//! A `task.mode = "privacy"` job is one seed of the privacy study: its tasks ask the clients
//! to clip and noise their own updates (`dp_clip`, `dp_sigma`).
//!
//! On `data.dataset = "graph-families"` a job is one GCFL+, plain GCFL or FedAvg run of the
//! graph-classification table ([`FamilyUnit`]): each client process draws the same graphs
//! and keeps its own, its unshared layers, Adam state and random stream
//! ([`FamilyClient`]); only the shared layers and the clients' figures cross the wire
//! ([`super::gcfl_fabric`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ferrolab_core::backend::train_device;
use ferrolab_graph::zoo::ZooConfig;
use serde::{Deserialize, Serialize};

use super::FedGraphError;
use super::client::GraphClient;
use super::config::FedGraphConfig;
use super::config::FedSageSection;
use super::data::{GraphSet, SeedSetup};
use super::experiment::{Regime, node_algo, schedule, seed_setup, zoo_config};
use super::families::ClientGraphs;
use super::fedsage_fabric::{FedSageClient, fedsage_cells_on, gen_seed};
use super::gcfl::{
    ClusterLog, GcflSection, GraphSchedule, Mode, graph_zoo, regime_run, run_clustered_on,
    seed_data,
};
use super::gcfl_fabric::{FabricLearners, FamilyClient};
use super::run::{self, NodeAlgo, RunResult, Schedule};
use crate::fabric::{ClientId, Fabric};

/// How long a client process waits for its next task before counting the server as gone
/// (a round of the slowest grid cell on a loaded machine takes seconds, not minutes).
const CLIENT_IDLE: Duration = Duration::from_secs(900);

/// One federated run, as the `[job]` table of a job file (the rest of the file is the
/// `FedGraphConfig`). Every field has a default so a plain `fedgraph` TOML is a job too:
/// `fed.algo`, the first learning rate and local-step count, seed index 0, master seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Job {
    /// `--seed` of the experiment.
    pub master_seed: u64,
    /// `--data-dir` of the experiment.
    pub data_dir: Option<PathBuf>,
    /// `fedavg`, `fedprox` or `fedopt` (empty: `fed.algo`).
    pub algo: String,
    /// SGD learning rate (0: the first of `fed.lrs`).
    pub lr: f64,
    /// Local steps per round (0: the first of `fed.local_steps`).
    pub local_steps: usize,
    /// Seed index `s` (the run's seed derives from the master seed and `seed<s>`).
    pub seed_index: usize,
}

impl Job {
    /// Fills the empty fields from `cfg`.
    pub fn resolved(mut self, cfg: &FedGraphConfig) -> Self {
        if self.algo.is_empty() {
            self.algo = cfg.fed.algo.clone();
        }
        if self.lr <= 0.0 {
            self.lr = cfg.fed.lrs.first().copied().unwrap_or(0.25);
        }
        if self.local_steps == 0 {
            self.local_steps = cfg.fed.local_steps.first().copied().unwrap_or(4);
        }
        self
    }
}

/// The text of a job file: `cfg` as TOML plus the `[job]` table.
pub fn job_file(cfg: &FedGraphConfig, job: &Job) -> Result<String, String> {
    crate::nats::multiprocess::job_text(cfg, job)
}

/// Parses a job file (or a plain `fedgraph` TOML), given as the JSON form of its table, into a
/// checked config and a resolved job.
pub fn parse_job(table: serde_json::Value) -> Result<(FedGraphConfig, Job), String> {
    let (cfg, job): (FedGraphConfig, Job) = crate::nats::multiprocess::read_job(table)?;
    let job = job.resolved(&cfg);
    if cfg.data.dataset == "graph-families" {
        if !FAMILY_ALGOS.contains(&job.algo.as_str()) {
            return Err(format!(
                "job.algo `{}`: on data.dataset = \"graph-families\" the multi-process runtime runs gcfl, gcfl_plain or fedavg (local only and global are not federated)",
                job.algo
            ));
        }
    } else if job.algo != "fedsage" && Regime::parse_node(&job.algo).is_none() {
        return Err(format!(
            "job.algo `{}`: the multi-process runtime runs fedavg, fedprox, fedopt or fedsage",
            job.algo
        ));
    }
    if !(job.lr > 0.0 && job.lr.is_finite()) {
        return Err(format!("job.lr = {}: must be > 0 and finite", job.lr));
    }
    if cfg.task.mode != "table" {
        // What `ferrolab fedgraph hpo|privacy` refuses, a job of that mode refuses too (a
        // search job with fed.algo = "fedprox" would otherwise run FedAvg silently).
        super::hpo::check_mode(&cfg).map_err(|e| e.to_string())?;
    }
    // A search (`task.mode = "hpo"`) or privacy job serves one of that mode's seeds.
    let (seeds, key) = match cfg.task.mode.as_str() {
        "hpo" => (cfg.hpo.seeds, "hpo.seeds"),
        "privacy" => (cfg.privacy.seeds, "privacy.seeds"),
        _ => (cfg.fed.seeds, "fed.seeds"),
    };
    if job.seed_index >= seeds {
        return Err(format!(
            "job.seed_index = {}: {key} is {seeds}",
            job.seed_index
        ));
    }
    Ok((cfg, job))
}

/// The federated regimes of the graph-families table a job can name.
const FAMILY_ALGOS: [&str; 3] = ["gcfl", "gcfl_plain", "fedavg"];

/// One GCFL+ / plain GCFL / FedAvg run of the graph-families table (a job on
/// `data.dataset = "graph-families"`), derived exactly as `ferrolab fedgraph` derives it.
pub struct FamilyUnit {
    /// Every client's graphs (a client process keeps only its own).
    pub data: Vec<ClientGraphs>,
    pub zoo: ZooConfig,
    pub section: GcflSection,
    pub schedule: GraphSchedule,
    pub mode: Mode,
    /// The run seed (graphs' batch order, initial model, client streams).
    pub seed: u64,
    /// How long the server waits for a reply (`fed.reply_seconds`).
    pub deadline: Duration,
}

/// The family unit of `job`.
pub fn build_families(cfg: &FedGraphConfig, job: &Job) -> Result<FamilyUnit, FedGraphError> {
    let (seed, data) = seed_data(cfg, job.master_seed, job.seed_index)?;
    family_unit(cfg, job, data, seed)
}

/// The family unit of `job` from its seed's graphs and run seed (as [`build_families`]
/// derives them; the server of `ferrolab fedgraph` has both already).
pub fn family_unit(
    cfg: &FedGraphConfig,
    job: &Job,
    data: Vec<ClientGraphs>,
    seed: u64,
) -> Result<FamilyUnit, FedGraphError> {
    let regime = match job.algo.as_str() {
        "gcfl" => Regime::Gcfl,
        "gcfl_plain" => Regime::GcflPlain,
        "fedavg" => Regime::FedAvg,
        other => {
            return Err(FedGraphError::Usage(format!(
                "job.algo `{other}`: not a federated regime of the graph-families table"
            )));
        }
    };
    let (section, schedule, mode) = regime_run(cfg, regime, job.lr, job.local_steps);
    Ok(FamilyUnit {
        data,
        zoo: graph_zoo(cfg)?,
        section,
        schedule,
        mode,
        seed,
        deadline: Duration::from_secs_f64(cfg.fed.reply_seconds),
    })
}

/// The client ids of a family unit: `0..K`.
pub fn family_ids(unit: &FamilyUnit) -> Vec<ClientId> {
    (0..unit.data.len() as ClientId).collect()
}

/// The client side of a family unit: serves client `id`'s graphs and model over `fabric`
/// until the server's `Shutdown`; returns the tasks answered.
pub fn run_family_client(
    unit: &FamilyUnit,
    fabric: &dyn Fabric,
    id: ClientId,
) -> Result<u64, FedGraphError> {
    let mut client = FamilyClient::new(
        &unit.data,
        id as usize,
        &unit.zoo,
        &unit.section,
        unit.schedule.weight_decay,
        unit.seed,
    )?;
    Ok(crate::client::serve(&mut client, id, fabric, CLIENT_IDLE)?)
}

/// The server side of a family unit over `fabric` while `command(k)` processes serve the
/// clients `spawn` (none: started by hand, `ferrolab fed client --system fedgraph`). A
/// client that dies or misses `fed.reply_seconds` is left out of the round (its cluster
/// is not cut that round) and named on stderr; its evaluation counts with its last figures.
pub fn run_family_server(
    unit: &FamilyUnit,
    fabric: Arc<dyn Fabric>,
    spawn: &[ClientId],
    command: impl FnMut(ClientId) -> Command,
) -> Result<(RunResult, ClusterLog), FedGraphError> {
    let ids = family_ids(unit);
    let grace = unit.deadline.min(Duration::from_secs(30));
    serve_with(fabric, spawn, &ids, grace, command, |server| {
        let s = &unit.schedule;
        let mut learners =
            FabricLearners::new(server, unit.deadline, ids.len(), s.lr, s.local_steps);
        let mut out = run_clustered_on(
            &unit.data,
            &unit.zoo,
            &unit.section,
            s,
            unit.mode,
            unit.seed,
            &mut learners,
        );
        if let Ok((r, _)) = &mut out {
            r.rejected = learners.left_out();
        }
        if learners.left_out() > 0 {
            eprintln!(
                "fedgraph gcfl: {} replies left out over {} rounds",
                learners.left_out(),
                out.as_ref().map_or(0, |o| o.0.rounds_run)
            );
        }
        shutdown(server, &ids);
        out
    })
}

/// [`run_family_job`]'s counterpart of [`run_job`]: the job file in `dir`, a fresh run
/// prefix, `fed.clients` client processes of `exe`.
pub fn run_family_job(
    cfg: &FedGraphConfig,
    job: &Job,
    unit: &FamilyUnit,
    url: &str,
    dir: &Path,
    exe: &Path,
) -> Result<(RunResult, ClusterLog), FedGraphError> {
    run_job_with(cfg, job, url, dir, exe, |fabric, command| {
        run_family_server(unit, fabric, &family_ids(unit), command)
    })
}

/// Everything one party needs for a job, derived exactly as `ferrolab fedgraph` derives it
/// in-process.
pub struct Unit {
    pub graph: GraphSet,
    pub setup: SeedSetup,
    pub zoo: ZooConfig,
    pub schedule: Schedule,
    pub algo: NodeAlgo,
    /// FedAvg, FedProx, FedOpt or FedSage+ (generator stage first).
    pub regime: Regime,
    /// FedSage+'s generator keys.
    pub fedsage: FedSageSection,
    /// The run seed (initial model, client streams).
    pub seed: u64,
}

/// What a node job's server returns: the run and, for FedSage+, its generator stage (what
/// it did, its seconds).
pub type NodeOut = (RunResult, Option<(super::fedsage::GenStats, f64)>);

/// The unit of `job`.
pub fn build(cfg: &FedGraphConfig, job: &Job) -> Result<Unit, FedGraphError> {
    let graph = GraphSet::load_seeded(&cfg.data, job.data_dir.as_deref(), job.master_seed)?;
    let (seed, setup) = seed_setup(&graph, cfg, job.master_seed, job.seed_index)?;
    unit_of(cfg, job, graph, setup, seed)
}

/// The unit of `job` from its graph and the seed's split (as [`build`] derives them; the
/// server of `ferrolab fedgraph` has both already and passes copies).
pub fn unit_of(
    cfg: &FedGraphConfig,
    job: &Job,
    graph: GraphSet,
    setup: SeedSetup,
    seed: u64,
) -> Result<Unit, FedGraphError> {
    let zoo = zoo_config(cfg, graph.features.num_features(), graph.classes)?;
    let regime = match job.algo.as_str() {
        "fedsage" => Regime::FedSage,
        other => Regime::parse_node(other).ok_or_else(|| {
            FedGraphError::Usage(format!("job.algo `{other}` is not a node algorithm"))
        })?,
    };
    Ok(Unit {
        graph,
        setup,
        zoo,
        schedule: schedule(cfg, job.lr, job.local_steps),
        algo: node_algo(cfg, regime),
        regime,
        fedsage: cfg.fedsage.clone(),
        seed,
    })
}

/// The client ids of a unit: `0..K`.
pub fn client_ids(unit: &Unit) -> Vec<ClientId> {
    (0..unit.setup.clients.num_clients() as ClientId).collect()
}

/// The client side: serves client `id`'s subgraph over `fabric` until the server's
/// `Shutdown`; returns the tasks answered.
pub fn run_client(unit: &Unit, fabric: &dyn Fabric, id: ClientId) -> Result<u64, FedGraphError> {
    let k = unit.setup.clients.num_clients();
    if id as usize >= k {
        return Err(FedGraphError::Usage(format!(
            "client id {id}: the run has clients 0..{k}"
        )));
    }
    let model = run::init_model(&unit.zoo, ferrolab_core::seed::derive(unit.seed, "init"))?;
    if unit.regime == Regime::FedSage {
        let mut client = FedSageClient::new(
            &unit.graph,
            &unit.setup,
            id as usize,
            &unit.fedsage,
            gen_seed(unit.seed),
            unit.zoo.clone(),
            model,
            unit.schedule.weight_decay,
            run::client_seed(unit.seed, id as usize),
        )?;
        return Ok(crate::client::serve(&mut client, id, fabric, CLIENT_IDLE)?);
    }
    let dev = train_device();
    let task = unit.setup.client_task(&unit.graph, id as usize, &dev)?;
    let mut client = GraphClient::new(
        task,
        unit.zoo.clone(),
        model,
        unit.schedule.weight_decay,
        run::client_seed(unit.seed, id as usize),
    );
    Ok(crate::client::serve(&mut client, id, fabric, CLIENT_IDLE)?)
}

/// The server side: the in-process round loop over `fabric` (a NATS fabric connected as the
/// server) while `command(k)` processes serve the clients. A client process that dies costs
/// the rounds after it its update (the server waits `fed.reply_seconds` for it, then goes on
/// with the others and counts it as rejected) and is named on stderr; a finished run removes
/// its streams.
pub fn run_server(
    unit: &Unit,
    fabric: Arc<dyn Fabric>,
    command: impl FnMut(ClientId) -> Command,
) -> Result<RunResult, FedGraphError> {
    Ok(serve(unit, fabric, &client_ids(unit), command)?.0)
}

/// [`run_server`] (clients `spawn` spawned by `command`; none: started by hand, `ferrolab fed
/// client --system fedgraph --id K` on any machine that reaches the NATS server) with
/// FedSage+'s generator stage when the job is FedSage+'s.
pub fn run_node_server(
    unit: &Unit,
    fabric: Arc<dyn Fabric>,
    spawn: &[ClientId],
    command: impl FnMut(ClientId) -> Command,
) -> Result<NodeOut, FedGraphError> {
    serve(unit, fabric, spawn, command)
}

fn serve(
    unit: &Unit,
    fabric: Arc<dyn Fabric>,
    ids: &[ClientId],
    command: impl FnMut(ClientId) -> Command,
) -> Result<NodeOut, FedGraphError> {
    // Hand-started clients read their `Shutdown` from the run's streams: give a late one up
    // to the time a spawned client gets before they go (less once all have read it).
    let grace = unit
        .algo
        .reply_timeout
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(30));
    let all = client_ids(unit);
    serve_with(fabric, ids, &all, grace, command, |server| {
        if unit.regime != Regime::FedSage {
            let out = run::fed_node_on(
                server,
                &unit.graph,
                &unit.setup,
                &unit.zoo,
                &unit.schedule,
                unit.seed,
                &unit.algo,
            )?;
            return Ok((out, None));
        }
        let (mut runs, stats, gen_secs) =
            fedsage_body(unit, server, std::slice::from_ref(&unit.schedule))?;
        let r = runs
            .pop()
            .ok_or_else(|| FedGraphError::Usage("no classifier run".into()))?;
        Ok((r, Some((stats, gen_secs))))
    })
}

/// A FedSage+ job's whole server over `server`: the generator stage and one classifier run
/// per schedule of `cells`, then every client shut down.
fn fedsage_body(
    unit: &Unit,
    server: &dyn Fabric,
    cells: &[Schedule],
) -> Result<(Vec<RunResult>, super::fedsage::GenStats, f64), FedGraphError> {
    let t0 = std::time::Instant::now();
    let out = fedsage_cells_on(
        server,
        &unit.graph,
        &unit.setup,
        &unit.fedsage,
        &unit.zoo,
        cells,
        unit.seed,
        &unit.algo,
    );
    shutdown(server, &client_ids(unit));
    let (runs, stats, gen_secs) = out?;
    eprintln!(
        "  fedsage: generator stage through {} in {gen_secs:.1} s ({:.1} s with {} classifier run(s)); nodes added per client {:?}",
        server.name(),
        t0.elapsed().as_secs_f64(),
        runs.len(),
        stats.added
    );
    Ok((runs, stats, gen_secs))
}

/// A FedSage+ job run for every cell of its seed (`cells`: each cell's schedule) with one set
/// of client processes of `exe` over the NATS server at `url`: one generator stage, then each
/// cell's classifier run through the same processes (they keep their mended subgraphs). The
/// runs, the stage's record and its seconds.
pub fn run_fedsage_cells_job(
    cfg: &FedGraphConfig,
    job: &Job,
    unit: &Unit,
    cells: &[Schedule],
    url: &str,
    dir: &Path,
    exe: &Path,
) -> Result<(Vec<RunResult>, super::fedsage::GenStats, f64), FedGraphError> {
    let all = client_ids(unit);
    let grace = unit
        .algo
        .reply_timeout
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(30));
    run_job_with(cfg, job, url, dir, exe, |fabric, command| {
        serve_with(fabric, &all, &all, grace, command, |server| {
            fedsage_body(unit, server, cells)
        })
    })
}

/// Runs `body` (a server's whole round loop, which ends by sending every client its
/// `Shutdown`) over `fabric` while `command(k)` processes serve the clients `spawn`; with none
/// to spawn, `clients` are started by hand and get up to `grace` to read their shutdown.
fn serve_with<R>(
    fabric: Arc<dyn Fabric>,
    spawn: &[ClientId],
    clients: &[ClientId],
    grace: Duration,
    command: impl FnMut(ClientId) -> Command,
    body: impl FnOnce(&dyn Fabric) -> Result<R, FedGraphError>,
) -> Result<R, FedGraphError> {
    let (out, bad) = crate::nats::multiprocess::run_multiprocess(
        Arc::clone(&fabric),
        spawn,
        command,
        |server| body(server.as_ref()),
    )
    .map_err(|e| {
        FedGraphError::Fabric(crate::fabric::FabricError::Disconnected(format!(
            "starting client processes: {e}"
        )))
    })?;
    if spawn.is_empty() && out.is_ok() {
        crate::nats::multiprocess::external_grace(fabric.as_ref(), clients, grace);
    }
    // A failed run keeps its streams (what was sent can be inspected with `nats stream`).
    if out.is_ok()
        && bad.is_empty()
        && let Err(e) = fabric.end_run()
    {
        eprintln!("fedgraph: the run finished, but removing its streams failed: {e}");
    }
    // A client process that died lost its updates; the rounds went on without them (each
    // counted as rejected after `fed.reply_seconds`), so the run stands, and says so.
    for (k, why) in &bad {
        if out.is_ok() {
            eprintln!(
                "fedgraph: client process {k} {why}; the rounds after it stopped went on without it"
            );
        } else {
            eprintln!("fedgraph: client process {k} {why}");
        }
    }
    out
}

/// Tells each of `clients` the run is over (a client already gone cannot be told; its
/// process ends on its own).
pub fn shutdown(fabric: &dyn Fabric, clients: &[ClientId]) {
    crate::client::shutdown(fabric, clients);
}

/// `ferrolab fed client --system fedgraph --id K --config FILE --prefix P` (see
/// [`crate::nats::multiprocess::client_command`]).
pub fn client_command(
    exe: &Path,
    url: &str,
    job_file: &Path,
    prefix: &str,
    id: ClientId,
) -> Command {
    crate::nats::multiprocess::client_command(exe, "fedgraph", url, job_file, prefix, id)
}

/// The NATS URL of `cfg`: `fed.nats_url`, else `$FERROLAB_NATS_URL`.
pub fn nats_url(cfg: &FedGraphConfig) -> Option<String> {
    crate::nats::multiprocess::url_or_env(&cfg.fed.nats_url)
}

/// A run prefix (`[A-Za-z0-9_-]{1,40}`) unique to this process and call.
pub fn fresh_prefix() -> String {
    crate::nats::multiprocess::fresh_prefix("fg")
}

/// Runs `job` with its clients as processes of `exe` over the NATS server at `url`; the job
/// file goes to `dir` and is removed afterwards.
pub fn run_job(
    cfg: &FedGraphConfig,
    job: &Job,
    unit: &Unit,
    url: &str,
    dir: &Path,
    exe: &Path,
) -> Result<NodeOut, FedGraphError> {
    run_job_with(cfg, job, url, dir, exe, |fabric, command| {
        serve(unit, fabric, &client_ids(unit), command)
    })
}

/// The job file of `job` in `dir`, a fresh run prefix on the NATS server at `url`, and
/// `server(fabric, command)` as that run's server, where `command(k)` is client `k`'s process
/// (`exe fed client --system fedgraph` on the job file); the file is removed afterwards.
pub fn run_job_with<R>(
    cfg: &FedGraphConfig,
    job: &Job,
    url: &str,
    dir: &Path,
    exe: &Path,
    server: impl FnOnce(Arc<dyn Fabric>, &dyn Fn(ClientId) -> Command) -> Result<R, FedGraphError>,
) -> Result<R, FedGraphError> {
    use crate::nats::{NatsFabric, NatsOptions, Party};
    let text = job_file(cfg, job).map_err(FedGraphError::Usage)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| FedGraphError::Usage(format!("{}: {e}", dir.display())))?;
    let prefix = fresh_prefix();
    let file = dir.join(format!("job-{prefix}.toml"));
    std::fs::write(&file, text)
        .map_err(|e| FedGraphError::Usage(format!("{}: {e}", file.display())))?;
    let out = match NatsFabric::connect(NatsOptions::new(url, &prefix, Party::Server)) {
        Ok(fabric) => server(Arc::new(fabric), &|id| {
            client_command(exe, url, &file, &prefix, id)
        }),
        Err(e) => Err(FedGraphError::Usage(e.to_string())),
    };
    let _ = std::fs::remove_file(&file);
    out
}

/// The server of one seed of a search or privacy job (`fedgraph hpo|privacy` over NATS):
/// `body` runs on a [`FabricTrainer`](super::hpo::FabricTrainer) over `fabric` (replies
/// awaited `fed.reply_seconds`) while the seed's `clients` clients are processes from
/// `command` for `spawn` (none: started by hand); then every client is shut down and the
/// rounds and left-out updates of seed `s` are said on stderr.
pub fn serve_search<R>(
    cfg: &FedGraphConfig,
    fabric: Arc<dyn Fabric>,
    spawn: &[ClientId],
    clients: usize,
    s: usize,
    command: impl FnMut(ClientId) -> Command,
    body: impl FnOnce(&super::hpo::FabricTrainer<'_>) -> Result<R, FedGraphError>,
) -> Result<R, FedGraphError> {
    let ids: Vec<ClientId> = (0..clients as ClientId).collect();
    let deadline = Duration::from_secs_f64(cfg.fed.reply_seconds);
    let grace = deadline.min(Duration::from_secs(30));
    serve_with(fabric, spawn, &ids, grace, command, |server| {
        let trainer = super::hpo::FabricTrainer::new(server, deadline);
        let out = body(&trainer);
        eprintln!(
            "  seed {s}: {} federated rounds through {} ({clients} clients, {} updates left out)",
            trainer.rounds(),
            server.name(),
            trainer.left_out()
        );
        shutdown(server, &ids);
        out
    })
}

/// Where one seed's job of `ferrolab fedgraph hpo|privacy --set fed.runtime=nats` goes: the
/// NATS URL, this executable (the clients' program), the run folder's `fabric/` for the job
/// file, and the job (seed index `s` of the run's master seed and data folder).
pub fn seed_job(
    cfg: &FedGraphConfig,
    ctx: &mut ferrolab_core::RunContext,
    s: usize,
) -> Result<(String, PathBuf, PathBuf, Job), FedGraphError> {
    let url = nats_url(cfg).ok_or_else(|| FedGraphError::Usage(super::NO_URL.into()))?;
    let exe = std::env::current_exe()
        .map_err(|e| FedGraphError::Usage(format!("own executable: {e}")))?;
    let dir = ctx.run_dir().join("fabric");
    let job = Job {
        master_seed: ctx.seed(),
        data_dir: ctx.data_dir().map(Path::to_path_buf),
        algo: "fedavg".into(),
        lr: 0.0,
        local_steps: 0,
        seed_index: s,
    }
    .resolved(cfg);
    Ok((url, exe, dir, job))
}
