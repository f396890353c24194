//! SD-GT with its clients as separate processes over NATS (`fed.runtime = "nats"`,
//! `ferrolab fed server|client`). One [`Job`] is one run of the comparison's grid (split,
//! algorithm, step size, seed); server and clients rebuild the same [`RunData`] from the same
//! job file, so every process derives identical data, partitions, topologies and x₀ without
//! shipping them, and the run is bit-identical to the in-process one.

use super::algo::{Algo, DeviceClient};
use super::config::SdgtConfig;
use super::driver::{self, RunData, RunError, RunResult, RunSpec};
use super::experiment;
use crate::client::serve;
use crate::fabric::{ClientId, DeviceId, Fabric};
use crate::mirror::MirroredState;
use crate::nats::multiprocess::{ClientProcesses, ServerOnly};
use ferrolab_core::{SysResult, SystemError};
use ferrolab_vision::data::Normalization;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// One run of the grid, as the `[job]` table of a job file (the rest of the file is the
/// `SdgtConfig`). Every field has a default so a plain `sdgt` TOML is a job too: the first
/// split, algorithm and step size, seed index 0, master seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Job {
    /// `--seed` of the experiment.
    pub master_seed: u64,
    /// `--data-dir` of the experiment.
    pub data_dir: Option<PathBuf>,
    /// Partition (empty: the config's first).
    pub split: String,
    /// Algorithm key (empty: the config's first).
    pub algo: String,
    /// Step size (0: the config's first).
    pub lr: f64,
    /// Seed index k (run k's seed derives from the master and `run<k>`).
    pub seed_index: usize,
    /// Co-optimise (s, T).
    pub coopt: bool,
    /// Local folder every party mirrors its round state into (see [`crate::mirror`]): a
    /// connection lost mid-run leaves the last checkpoint there, and a rerun of the same job
    /// resumes from it even against a NATS server that no longer holds it.
    pub state_dir: Option<PathBuf>,
}

impl Default for Job {
    fn default() -> Self {
        Self {
            master_seed: 0,
            data_dir: None,
            split: String::new(),
            algo: String::new(),
            lr: 0.0,
            seed_index: 0,
            coopt: false,
            state_dir: None,
        }
    }
}

impl Job {
    /// Fills the empty fields from `cfg`.
    pub fn resolved(mut self, cfg: &SdgtConfig) -> Self {
        if self.split.is_empty() {
            self.split = cfg.data.splits.first().cloned().unwrap_or_default();
        }
        if self.algo.is_empty() {
            self.algo = cfg.fed.algorithms.first().cloned().unwrap_or_default();
        }
        if self.lr <= 0.0 {
            self.lr = cfg.fed.lr_grid.first().copied().unwrap_or(0.01);
        }
        self
    }
}

/// The text of a job file: `cfg` as TOML plus the `[job]` table (every config key is in a
/// section and the job has only scalars, so appending the table keeps it valid TOML).
pub fn job_file(cfg: &SdgtConfig, job: &Job) -> Result<String, String> {
    crate::nats::multiprocess::job_text(cfg, job)
}

/// Parses a job file (or a plain `sdgt` TOML), given as the JSON form of its table, into a
/// checked config and a resolved job.
pub fn parse_job(table: serde_json::Value) -> Result<(SdgtConfig, Job), String> {
    let (cfg, job): (SdgtConfig, Job) = crate::nats::multiprocess::read_job(table)?;
    let job = job.resolved(&cfg);
    if !cfg.data.splits.contains(&job.split) {
        return Err(format!("job.split `{}` is not in data.splits", job.split));
    }
    if Algo::parse(&job.algo).is_none() {
        return Err(format!("job.algo `{}` is not an algorithm", job.algo));
    }
    if !(job.lr > 0.0 && job.lr.is_finite()) {
        return Err(format!("job.lr = {}: must be > 0 and finite", job.lr));
    }
    Ok((cfg, job))
}

/// The spec and data of `job`, derived exactly as `ferrolab sdgt` derives them in-process.
pub fn build(cfg: &SdgtConfig, job: &Job) -> SysResult<(RunSpec, RunData)> {
    let seed_for = |name: &str| ferrolab_core::seed::derive(job.master_seed, name);
    let algos: Vec<Algo> = cfg
        .fed
        .algorithms
        .iter()
        .filter_map(|a| Algo::parse(a))
        .collect();
    let algo = Algo::parse(&job.algo).ok_or_else(|| {
        SystemError::usage(format!("job.algo `{}` is not an algorithm", job.algo))
    })?;
    let images = experiment::load_images(cfg, job.data_dir.as_deref(), seed_for("split"))?;
    let norm = Normalization::of(&images.train);
    let train = Arc::new(super::data::to_samples(&images.train, norm, 10));
    let val = Arc::new(super::data::to_samples(&images.val, norm, 10));
    let test = Arc::new(super::data::to_samples(&images.test, norm, 10));
    ferrolab_core::backend::seed_backend(seed_for("init"));
    let model = experiment::build_model(cfg, seed_for("init"));
    let x0 = Arc::new(model.init(seed_for("init")));
    let seed_k = seed_for(&format!("run{}", job.seed_index));
    let (topo, gt) = experiment::topologies(cfg, seed_k, &algos)
        .map_err(|e| SystemError::usage(e.to_string()))?;
    let parts = experiment::partition(cfg, &job.split, &train.y, seed_k);
    let spec = experiment::unit_spec(cfg, algo, job.lr, seed_k, job.coopt);
    let data = RunData {
        model,
        train,
        parts: Arc::new(parts),
        val,
        test,
        topo: Arc::new(topo),
        gt_topo: Arc::new(gt),
        x0,
        state_dir: job.state_dir.clone(),
    };
    Ok((spec, data))
}

/// Clients of a run of `spec` over `data`.
pub fn client_ids(spec: &RunSpec, data: &RunData) -> Vec<ClientId> {
    driver::assign(data.parts.len(), spec.devices_per_client)
        .keys()
        .copied()
        .collect()
}

/// `fabric` with its state mirrored into `data.state_dir` when the run has one.
fn with_state_dir(fabric: Arc<dyn Fabric>, data: &RunData) -> Arc<dyn Fabric> {
    match &data.state_dir {
        Some(dir) => Arc::new(MirroredState::new(fabric, dir)),
        None => fabric,
    }
}

/// The server side: runs the driver over `fabric` (a NATS fabric connected as the server)
/// while `command(k)` processes serve the clients. A client process that did not exit cleanly
/// is reported on stderr; a run whose rounds finished without it stands, its lost replies
/// counted in [`RunResult::lost_devices`].
///
/// With `data.state_dir` the round state is mirrored there, so when the connection is lost
/// (the inner result is [`RunError::Fabric`] with `Disconnected`) the last checkpoint is
/// already on local disk and a rerun of the same job resumes from it.
pub fn run_server(
    spec: &RunSpec,
    data: &RunData,
    fabric: Arc<dyn Fabric>,
    mut command: impl FnMut(ClientId) -> Command,
) -> SysResult<Result<RunResult, RunError>> {
    serve_run(spec, data, fabric, Some(&mut command))
}

/// [`run_server`] for clients its operator starts (`ferrolab fed client --id K` with the same
/// job file and prefix, on any machine that reaches the NATS server, each with its own
/// credentials): no process is spawned; tasks wait in each client's durable queue until it
/// connects, and a client that never comes is a lost reply at each round's deadline.
pub fn run_server_external(
    spec: &RunSpec,
    data: &RunData,
    fabric: Arc<dyn Fabric>,
) -> SysResult<Result<RunResult, RunError>> {
    serve_run(spec, data, fabric, None)
}

fn serve_run(
    spec: &RunSpec,
    data: &RunData,
    fabric: Arc<dyn Fabric>,
    command: Option<&mut dyn FnMut(ClientId) -> Command>,
) -> SysResult<Result<RunResult, RunError>> {
    let fabric = with_state_dir(fabric, data);
    let ids = client_ids(spec, data);
    let external = command.is_none();
    let procs = match command {
        Some(command) => ClientProcesses::spawn(&ids, command)
            .map_err(|e| SystemError::runtime(format!("starting client processes: {e}")))?,
        None => ClientProcesses::default(),
    };
    // A client process that dies is noticed within 200 ms, and later collections stop
    // waiting for it (each round would otherwise wait its whole deadline).
    let dead = crate::nats::multiprocess::Dead::default();
    let watch = crate::nats::multiprocess::DeathWatch::start(procs, Arc::clone(&dead));
    let out = driver::run(
        spec,
        data,
        Arc::new(ServerOnly(Arc::clone(&fabric), dead)),
        &mut |_| {},
    );
    let procs = watch.finish();
    // After a finished run the clients exit on their `Shutdown`; after a failed one they have
    // nothing left to do and may sit out their own timeouts, so they get little time.
    let bad = procs.wait(if out.is_ok() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(2)
    });
    if external && out.is_ok() {
        crate::nats::multiprocess::external_grace(
            fabric.as_ref(),
            &ids,
            Duration::from_secs_f64(spec.deadline_seconds).min(Duration::from_secs(30)),
        );
    }
    // A finished run's streams and buckets go; a failed one keeps them (its KV state is what
    // a resume without a local state folder reads).
    if out.is_ok()
        && bad.is_empty()
        && let Err(e) = fabric.end_run()
    {
        eprintln!("fed: the run finished, but removing its streams failed: {e}");
    }
    // A client process that died lost its devices' replies from then on; the rounds went on
    // without them (each a lost device at the round's deadline), so a finished run stands,
    // counts them in `lost_devices`, and says so here (and in the experiment's notes).
    for (k, why) in &bad {
        match &out {
            Ok(r) => eprintln!(
                "fed: client process {k} {why}; the rounds after it stopped went on without its devices ({} sampled device replies lost in the run)",
                r.lost_devices
            ),
            Err(_) => eprintln!("fed: client process {k}: {why}"),
        }
    }
    Ok(out)
}

/// The client side: serves client `id`'s devices over `fabric` until the server's `Shutdown`;
/// returns the tasks answered.
pub fn run_client(
    spec: &RunSpec,
    data: &RunData,
    fabric: &dyn Fabric,
    id: ClientId,
) -> SysResult<u64> {
    let clients = driver::assign(data.parts.len(), spec.devices_per_client);
    let devs = clients.get(&id).ok_or_else(|| {
        SystemError::usage(format!(
            "client id {id}: the run has clients 0..{} ({} devices, {} per client)",
            clients.len(),
            data.parts.len(),
            spec.devices_per_client
        ))
    })?;
    let owners: Vec<(DeviceId, ClientId)> = clients
        .iter()
        .flat_map(|(c, ds)| ds.iter().map(move |d| (*d, *c)))
        .collect();
    fabric.set_owners(&owners);
    let mut c = DeviceClient::new(
        id,
        devs,
        &data.parts,
        &data.x0,
        spec.seed,
        Arc::clone(&data.model),
        Arc::clone(&data.train),
        Arc::clone(&data.topo),
        Arc::clone(&data.gt_topo),
    );
    let deadline = Duration::from_secs_f64(spec.deadline_seconds.max(0.001));
    c.exchange_timeout = deadline;
    let mirrored;
    let fabric: &dyn Fabric = match &data.state_dir {
        Some(dir) => {
            mirrored = MirroredState::borrowed(fabric, dir);
            &mirrored
        }
        None => fabric,
    };
    serve(&mut c, id, fabric, deadline + Duration::from_secs(600))
        .map_err(|e| SystemError::runtime(format!("client {id}: {e}")))
}

/// `ferrolab fed client --system sdgt --id K --config FILE --prefix P` (see
/// [`crate::nats::multiprocess::client_command`]).
pub fn client_command(
    exe: &Path,
    url: &str,
    job_file: &Path,
    prefix: &str,
    id: ClientId,
) -> Command {
    crate::nats::multiprocess::client_command(exe, "sdgt", url, job_file, prefix, id)
}

/// What a `fed server --system sdgt` process hands back to the `ferrolab sdgt` that started it
/// (`--outcome FILE`): the run, or where it diverged (a step size too large is a result of the
/// grid, not a failure).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerOutcome {
    /// The run finished.
    Finished(RunResult),
    /// x̄ became non-finite at this round.
    Diverged { round: u64 },
    /// The NATS connection was lost (the mirrored state keeps the last checkpoint).
    Disconnected(String),
}

/// The outcome of a server process for `algo` at step size `lr`, as the in-process server
/// would have returned it.
pub fn outcome_result(o: ServerOutcome, algo: Algo, lr: f64) -> Result<RunResult, RunError> {
    match o {
        ServerOutcome::Finished(r) => Ok(r),
        ServerOutcome::Diverged { round } => Err(RunError::Diverged {
            algo: algo.key(),
            lr,
            round,
        }),
        ServerOutcome::Disconnected(why) => Err(RunError::Fabric(
            crate::fabric::FabricError::Disconnected(why),
        )),
    }
}

/// The NATS URL of `cfg`: `fed.nats_url`, else `$FERROLAB_NATS_URL`.
pub fn nats_url(cfg: &SdgtConfig) -> Option<String> {
    crate::nats::multiprocess::url_or_env(&cfg.fed.nats_url)
}

/// A run prefix (`[A-Za-z0-9_-]{1,40}`) unique to this process and call.
pub fn fresh_prefix() -> String {
    crate::nats::multiprocess::fresh_prefix("sdgt")
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the server process writes is what the in-process server would have returned: a
    // finished run unchanged through JSON, a divergence as the grid's `Diverged` (a result
    // of the step size, recorded, not a failure of the comparison).
    #[test]
    fn a_server_outcome_reads_back_as_the_in_process_result() {
        let r = RunResult {
            history: Vec::new(),
            round_seconds: 1.25,
            compute_seconds: 0.5,
            clients: 10,
            lost_devices: 0,
            gone_contributions: 3,
            final_params: vec![0.1, -3.5e-8, f32::MAX],
            choices: vec![(20, 2, 5)],
        };
        let text = serde_json::to_string(&ServerOutcome::Finished(r.clone())).unwrap_or_default();
        let back: ServerOutcome =
            serde_json::from_str(&text).unwrap_or(ServerOutcome::Diverged { round: 0 });
        assert_eq!(outcome_result(back, Algo::SdGt, 0.03).ok(), Some(r));
        let text = serde_json::to_string(&ServerOutcome::Diverged { round: 7 }).unwrap_or_default();
        let back: ServerOutcome =
            serde_json::from_str(&text).unwrap_or(ServerOutcome::Diverged { round: 0 });
        match outcome_result(back, Algo::SdFedAvg, 10.0) {
            Err(RunError::Diverged { algo, lr, round }) => {
                assert_eq!((algo, lr, round), ("sd_fedavg", 10.0, 7));
            }
            other => panic!("{other:?}"),
        }
    }
}
