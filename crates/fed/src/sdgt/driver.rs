//! One federated run: a server loop (the [`DeviceStrategy`]) and client threads
//! ([`DeviceClient`]s answering over the fabric), centralised evaluation of x̄, per-round
//! records, and checkpoints through [`Fabric::put_state`] so a killed run resumes from its
//! last checkpointed round with the same numbers it would have produced.

use super::algo::{Algo, Comm, DeviceClient, DeviceStrategy, Hyper, StrategyState};
use super::costmodel::CostModel;
use super::model::{FlatModel, Samples};
use crate::client::serve;
use crate::fabric::{ClientId, Fabric, FabricError, Reply, Task, TaskKind};
use crate::params::Params;
use crate::strategy::{Strategy, StrategyError};
use crate::topology::Topology;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A run that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Transport failure.
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// Aggregation failure (every client failed).
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// The model diverged.
    #[error("{algo} with lr {lr}: x̄ became non-finite at round {round}")]
    Diverged {
        /// Algorithm.
        algo: &'static str,
        /// Step size.
        lr: f64,
        /// Round.
        round: u64,
    },
    /// A checkpoint could not be read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// What one run needs besides data, model and topology.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Algorithm, step size, T, batch.
    pub hyper: Hyper,
    /// Devices sampled per subnet.
    pub s: usize,
    /// Global rounds.
    pub rounds: u64,
    /// Seed of sampling and batches.
    pub seed: u64,
    /// Evaluate x̄ every this many rounds (and at the last).
    pub eval_every: u64,
    /// Checkpoint every this many rounds (0: never).
    pub checkpoint_every: u64,
    /// Devices per client thread.
    pub devices_per_client: usize,
    /// Seconds a round's collection waits before counting silent clients as failed.
    pub deadline_seconds: f64,
    /// The cost model the running cost is counted with.
    pub cost: CostModel,
    /// Re-choose (s, T) by the cost model every this many rounds (0: keep them fixed).
    pub coopt_every: u64,
}

/// One evaluated round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Rounds completed.
    pub round: u64,
    /// Test accuracy of x̄.
    pub test_accuracy: f64,
    /// Test loss of x̄.
    pub test_loss: f64,
    /// Validation accuracy of x̄.
    pub val_accuracy: f64,
    /// Cumulative D2D megabytes.
    pub d2d_mb: f64,
    /// Cumulative device↔server megabytes.
    pub server_mb: f64,
    /// Mean training loss the devices saw this round.
    pub train_loss: f64,
    /// Cumulative cost-model cost.
    pub cost: f64,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Evaluated rounds.
    pub history: Vec<RoundRecord>,
    /// Wall seconds of the rounds (training + runtime, no evaluation).
    pub round_seconds: f64,
    /// Client seconds spent computing (gradients and local vector updates), summed.
    pub compute_seconds: f64,
    /// Client threads.
    pub clients: usize,
    /// Sampled devices whose reply never arrived.
    pub lost_devices: u64,
    /// D2D contributions of gone clients' devices that live devices mixed around (over NATS,
    /// a client process that died or was cut off; 0 in process). Absent in older units.
    #[serde(default)]
    pub gone_contributions: u64,
    /// Final x̄.
    pub final_params: Vec<f32>,
    /// (round, s, T) chosen by the co-optimisation.
    pub choices: Vec<(u64, usize, usize)>,
}

#[derive(Serialize, Deserialize)]
struct ServerCheckpoint {
    round: u64,
    strategy: StrategyState,
    history: Vec<RoundRecord>,
    round_seconds: f64,
    compute_seconds: f64,
    spec: RunSpec,
}

const SERVER_KEY: &str = "server/checkpoint";

/// Shared inputs of a run.
#[derive(Clone)]
pub struct RunData {
    /// Model.
    pub model: Arc<dyn FlatModel>,
    /// Training rows (all devices').
    pub train: Arc<Samples>,
    /// Rows of each device.
    pub parts: Arc<Vec<Vec<usize>>>,
    /// Validation rows.
    pub val: Arc<Samples>,
    /// Test rows.
    pub test: Arc<Samples>,
    /// Subnets and their graphs.
    pub topo: Arc<Topology>,
    /// The one-graph topology GT runs on.
    pub gt_topo: Arc<Topology>,
    /// Initial model.
    pub x0: Arc<Vec<f32>>,
    /// Where a multi-process run mirrors its round state on local disk (see
    /// [`crate::mirror`]), so a lost NATS connection leaves the last checkpoint saved and
    /// `--resume` continues from it; `None` keeps the state in the fabric only.
    pub state_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RunData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RunData({}, {} devices)",
            self.model.name(),
            self.parts.len()
        )
    }
}

/// Client id → devices, `per` consecutive devices per client.
pub fn assign(devices: usize, per: usize) -> BTreeMap<ClientId, Vec<u32>> {
    let per = per.max(1);
    let mut out = BTreeMap::new();
    for d in 0..devices {
        out.entry((d / per) as ClientId)
            .or_insert_with(Vec::new)
            .push(d as u32);
    }
    out
}

fn pack(meta: &impl Serialize, params: &Params) -> Vec<u8> {
    let json = serde_json::to_vec(meta).unwrap_or_default();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&params.to_safetensors());
    out
}

fn unpack<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<(T, Params), RunError> {
    let bad = |m: String| RunError::Checkpoint(m);
    if bytes.len() < 8 {
        return Err(bad("truncated".into()));
    }
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(n8) as usize;
    if n > bytes.len() - 8 {
        return Err(bad("header length past the end".into()));
    }
    let meta = serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(e.to_string()))?;
    let p = Params::from_safetensors(&bytes[8 + n..]).map_err(|e| bad(e.to_string()))?;
    Ok((meta, p))
}

/// Runs `spec` over `fabric` with client threads in this process; resumes from the fabric's
/// checkpoint when one of the same spec exists. `on_round` sees each evaluated record.
pub fn run(
    spec: &RunSpec,
    data: &RunData,
    fabric: Arc<dyn Fabric>,
    on_round: &mut dyn FnMut(&RoundRecord),
) -> Result<RunResult, RunError> {
    let dim = data.model.dim();
    let template = Params::flat("x_bar", vec![0.0; dim]);
    let clients = assign(data.parts.len(), spec.devices_per_client);
    let mut strategy = DeviceStrategy::new(
        spec.hyper,
        spec.s,
        Arc::clone(&data.topo),
        Arc::clone(&data.gt_topo),
        clients.clone(),
        spec.seed,
        dim,
    );
    strategy.cost_model = Some((
        spec.cost,
        (spec.coopt_every > 0).then_some(spec.coopt_every),
    ));
    let mut xbar = template
        .with_flat(&data.x0)
        .map_err(|e| RunError::Checkpoint(e.to_string()))?;
    let mut start = 0u64;
    let mut history = Vec::new();
    let mut round_seconds = 0.0;
    let mut compute_seconds = 0.0;
    if let Some(bytes) = fabric.get_state(SERVER_KEY)? {
        let (cp, p): (ServerCheckpoint, Params) = unpack(&bytes)?;
        // The round count may differ: a finished run can be extended, a killed one resumed.
        if (RunSpec {
            rounds: spec.rounds,
            ..cp.spec
        }) == *spec
            && cp.round <= spec.rounds
        {
            template
                .check_same_layout(&p)
                .map_err(|e| RunError::Checkpoint(e.to_string()))?;
            // A damaged x̄ would otherwise be broadcast to every sampled device.
            p.check_finite()
                .map_err(|e| RunError::Checkpoint(format!("x̄ of round {}: {e}", cp.round)))?;
            strategy.restore(cp.strategy).map_err(|e| {
                RunError::Checkpoint(format!("server state of round {}: {e}", cp.round))
            })?;
            xbar = p;
            start = cp.round;
            history = cp.history;
            round_seconds = cp.round_seconds;
            compute_seconds = cp.compute_seconds;
            eprintln!("fed: resuming from the checkpoint of round {start}");
        }
    }
    let ids: Vec<ClientId> = clients.keys().copied().collect();
    let mut dclients: Vec<DeviceClient> = clients
        .iter()
        .map(|(&c, devs)| {
            DeviceClient::new(
                c,
                devs,
                &data.parts,
                &data.x0,
                spec.seed,
                Arc::clone(&data.model),
                Arc::clone(&data.train),
                Arc::clone(&data.topo),
                Arc::clone(&data.gt_topo),
            )
        })
        .collect();
    let deadline = Duration::from_secs_f64(spec.deadline_seconds.max(0.001));
    for c in &mut dclients {
        c.exchange_timeout = deadline;
    }
    let result = std::thread::scope(|scope| -> Result<RunResult, RunError> {
        let mut handles = Vec::new();
        for mut c in dclients.drain(..) {
            let f = Arc::clone(&fabric);
            let idle = deadline + Duration::from_secs(600);
            let id = c.id;
            handles.push(scope.spawn(move || serve(&mut c, id, &*f, idle)));
        }
        let out = server_loop(
            spec,
            data,
            &*fabric,
            &mut strategy,
            &ids,
            xbar,
            start,
            history,
            round_seconds,
            compute_seconds,
            on_round,
        );
        // Over a lost connection each send would only wait out its own timeout.
        let lost = matches!(out, Err(RunError::Fabric(FabricError::Disconnected(_))));
        if !lost {
            crate::client::shutdown(fabric.as_ref(), &ids);
        }
        for h in handles {
            let _ = h.join();
        }
        out
    });
    result.map(|mut r| {
        r.lost_devices = strategy.lost_devices;
        r.gone_contributions = strategy.gone_contributions;
        r.choices = strategy.choices.clone();
        r
    })
}

#[allow(clippy::too_many_arguments)]
fn server_loop(
    spec: &RunSpec,
    data: &RunData,
    fabric: &dyn Fabric,
    strategy: &mut DeviceStrategy,
    ids: &[ClientId],
    mut xbar: Params,
    start: u64,
    mut history: Vec<RoundRecord>,
    mut round_seconds: f64,
    mut compute_seconds: f64,
    on_round: &mut dyn FnMut(&RoundRecord),
) -> Result<RunResult, RunError> {
    let deadline = Duration::from_secs_f64(spec.deadline_seconds.max(0.001));
    let dim = data.model.dim();
    for round in start..spec.rounds {
        let t0 = Instant::now();
        let tasks = strategy.configure_fit(round, &xbar, ids);
        let checkpoint = spec.checkpoint_every > 0
            && ((round + 1) % spec.checkpoint_every == 0 || round + 1 == spec.rounds);
        let mut expected: Vec<ClientId> = Vec::new();
        let mut names: BTreeMap<ClientId, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (c, mut ins) in tasks {
            if round == start && start > 0 {
                ins.config
                    .insert("resume_round".into(), serde_json::json!(start));
            }
            if checkpoint {
                ins.config
                    .insert("checkpoint".into(), serde_json::json!(true));
            }
            names.insert(c, strategy.expected_names(c));
            fabric.send_task_owned(
                c,
                Task {
                    round,
                    kind: TaskKind::Fit,
                    config: ins.config,
                    params: ins.params,
                },
            )?;
            expected.push(c);
        }
        // Checkpointing and resuming rounds must reach every client, even those without work.
        if checkpoint || (round == start && start > 0) {
            for &c in ids {
                if !expected.contains(&c) {
                    let mut config = crate::fabric::Config::new();
                    config.insert(
                        "hyper".into(),
                        serde_json::to_value(spec.hyper).unwrap_or_default(),
                    );
                    config.insert("checkpoint".into(), serde_json::json!(true));
                    if round == start && start > 0 {
                        config.insert("resume_round".into(), serde_json::json!(start));
                    }
                    names.insert(c, Default::default());
                    fabric.send_task(
                        c,
                        &Task {
                            round,
                            kind: TaskKind::Fit,
                            config,
                            params: Params::new(),
                        },
                    )?;
                    expected.push(c);
                }
            }
        }
        let non_finite = std::sync::atomic::AtomicUsize::new(0);
        let validate = |r: &Reply| -> Result<(), String> {
            let want = names.get(&r.id.client).ok_or("unexpected client")?;
            let have: std::collections::BTreeSet<String> =
                r.params.iter().map(|(n, _)| n.clone()).collect();
            if &have != want {
                return Err(format!("tensors {have:?}, expected {want:?}"));
            }
            for (n, t) in r.params.iter() {
                if t.shape != [dim] {
                    return Err(format!(
                        "tensor `{n}` has shape {:?}, expected [{dim}]",
                        t.shape
                    ));
                }
            }
            r.params.check_finite().map_err(|e| {
                non_finite.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                e.to_string()
            })
        };
        let got = fabric.collect_replies(round, TaskKind::Fit, &expected, deadline, &validate)?;
        for f in &got.failures {
            eprintln!(
                "fed: round {round}: client {} failed: {}",
                f.client, f.reason
            );
        }
        let mut train_loss = 0.0;
        let mut nl = 0usize;
        let results: Vec<(ClientId, crate::client::FitRes)> = got
            .replies
            .into_iter()
            .map(|r| {
                compute_seconds += r.metrics.get("compute_seconds").copied().unwrap_or(0.0);
                if let Some(n) = r.metrics.get("gone_contributions").filter(|n| **n > 0.0) {
                    eprintln!(
                        "fed: round {round}: client {} mixed its devices around {n} D2D contributions of gone clients' devices (their weight kept by each device itself)",
                        r.id.client
                    );
                }
                if let Some(l) = r.metrics.get("train_loss").filter(|l| l.is_finite()) {
                    train_loss += l;
                    nl += 1;
                }
                (
                    r.id.client,
                    crate::client::FitRes {
                        params: r.params,
                        n_examples: r.n_examples,
                        metrics: r.metrics,
                    },
                )
            })
            .collect();
        // A non-finite reply among finite ones is a faulty client, dropped by the aggregation;
        // when nothing is left to aggregate and every failure was a non-finite reply, the step
        // size (or l2) made the local iterates overflow: this run diverged, which the grid
        // search records and moves past, rather than a federation whose clients all failed.
        let all_non_finite = !got.failures.is_empty()
            && non_finite.load(std::sync::atomic::Ordering::Relaxed) == got.failures.len();
        xbar = match strategy.aggregate_fit(round, &xbar, results, &got.failures) {
            Ok(x) => x,
            Err(crate::strategy::StrategyError::NoResults { .. }) if all_non_finite => {
                return Err(RunError::Diverged {
                    algo: spec.hyper.algo.key(),
                    lr: spec.hyper.lr,
                    round,
                });
            }
            Err(e) => return Err(e.into()),
        };
        round_seconds += t0.elapsed().as_secs_f64();
        if xbar.check_finite().is_err() {
            return Err(RunError::Diverged {
                algo: spec.hyper.algo.key(),
                lr: spec.hyper.lr,
                round,
            });
        }
        let done = round + 1;
        if done % spec.eval_every.max(1) == 0 || done == spec.rounds {
            let w = xbar.to_flat();
            let (test_loss, test_accuracy) = data.model.evaluate(&w, &data.test);
            let (_, val_accuracy) = data.model.evaluate(&w, &data.val);
            let rec = RoundRecord {
                round: done,
                test_accuracy,
                test_loss,
                val_accuracy,
                d2d_mb: strategy.comm.d2d_bytes / 1e6,
                server_mb: strategy.comm.server_bytes / 1e6,
                train_loss: if nl > 0 {
                    train_loss / nl as f64
                } else {
                    f64::NAN
                },
                cost: strategy.comm.cost,
            };
            on_round(&rec);
            history.push(rec);
        }
        if checkpoint {
            let cp = ServerCheckpoint {
                round: done,
                strategy: strategy.state(),
                history: history.clone(),
                round_seconds,
                compute_seconds,
                spec: *spec,
            };
            fabric.put_state(SERVER_KEY, &pack(&cp, &xbar))?;
        }
    }
    Ok(RunResult {
        history,
        round_seconds,
        compute_seconds,
        clients: ids.len(),
        lost_devices: 0,
        gone_contributions: 0,
        final_params: xbar.to_flat(),
        choices: Vec::new(),
    })
}

/// Communication of a finished run's last record.
pub fn final_comm(r: &RunResult) -> Comm {
    r.history
        .last()
        .map(|h| Comm {
            d2d_bytes: h.d2d_mb * 1e6,
            server_bytes: h.server_mb * 1e6,
            cost: h.cost,
        })
        .unwrap_or_default()
}

/// Whether `algo` needs connected D2D graphs.
pub fn needs_connectivity(algo: Algo) -> bool {
    algo.uses_d2d()
}
