//! The three training regimes of FS-G's node-classification table, for one seed and one
//! hyper-parameter cell:
//!
//! - [`fedavg`]: a server and `K` [`GraphClient`]s on a [`Fabric`] (the in-process one by
//!   default), FedAvg weighted by training nodes; after every round the server evaluates the
//!   global model on the *whole* graph (cross-client edges included) on the union of the
//!   clients' validation / test nodes.
//! - [`local_only`]: every client trains alone on its subgraph and is evaluated on its own
//!   test nodes; the figure is the test-node-weighted mean.
//! - [`global`]: one model trained on the whole graph with the same masks.
//!
//! [`fed_node`] runs the other server-client algorithms of the table on the same path as
//! FedAvg ([`NodeAlgo`]): FedProx (a proximal term in the clients' training) and FedOpt
//! (the server's Adam step on the averaged update).
//!
//! All three train `local_steps` full-batch SGD steps per round and stop early when the
//! validation accuracy has not improved for `patience` rounds; the test accuracy reported is
//! the one at the best validation round.

use std::sync::Arc;
use std::time::Duration;

use ferrolab_core::backend::train_device;
use ferrolab_graph::zoo::train::{EvalResult, NodeTask, OptimKind};
use ferrolab_graph::zoo::{GnnModel, ZooConfig, load_params, model_params};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::FedGraphError;
use super::client::{GraphClient, from_params, to_params};
use super::data::{GraphSet, SeedSetup};
use crate::client::serve;
use crate::fabric::{ClientId, Config, Fabric, Task, TaskKind, layout_validator};
use crate::inproc::InProcFabric;
use crate::strategy::{FedAvg, Strategy};

/// How long the server waits for a round's replies, and a client for its next task, before
/// counting the other side as gone.
const PATIENCE_WALL: Duration = Duration::from_secs(900);

/// One cell of the grid plus the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub local_steps: usize,
    pub rounds: usize,
    /// 0 = never stop early.
    pub patience: usize,
    pub weight_decay: f64,
    /// Pick the best round by lowest validation loss (FS's default) instead of highest
    /// validation accuracy.
    pub by_loss: bool,
}

/// FedOpt's server optimiser (FedAdam, Reddi et al., ICLR 2021, Algorithm 2): with the
/// pseudo-gradient `Δ = mean(w_client) − w`, `m ← β₁m + (1−β₁)Δ`, `v ← β₂v + (1−β₂)Δ²`,
/// `w ← w + η m / (√v + τ)` (no bias correction, `v₀ = τ²`, as in the paper).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerAdam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub tau: f64,
}

/// Which server–client algorithm a node-classification run uses; the default is FedAvg.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeAlgo {
    /// FedProx's μ (sent to the clients in the task config): `Some(0.0)` runs FedProx's
    /// training path with no proximal pull, which must equal FedAvg.
    pub prox_mu: Option<f64>,
    /// FedOpt: the server's Adam on the averaged update instead of taking the average.
    pub server_adam: Option<ServerAdam>,
    /// How long the server waits for a round's replies before counting the silent clients
    /// as failed for that round (the round goes on with the others); `None`: 15 minutes.
    pub reply_timeout: Option<Duration>,
    /// Fabric rounds already used by an earlier stage of the same run (FedSage+'s generator
    /// stage over NATS): round `r` goes out as fabric round `round_offset + r`, with `r` as
    /// the task's `seed_round`, so the clients' dropout streams stay those of round `r`.
    pub round_offset: u64,
}

struct AdamState {
    opt: ServerAdam,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl AdamState {
    fn new(opt: ServerAdam, n: usize) -> Self {
        AdamState {
            opt,
            m: vec![0.0; n],
            v: vec![opt.tau * opt.tau; n],
        }
    }

    /// The new global weights from the old ones and the clients' average.
    fn step(&mut self, old: &[f32], avg: &[f32]) -> Vec<f32> {
        let o = self.opt;
        old.iter()
            .zip(avg)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            .map(|((&w, &a), (m, v))| {
                let d = f64::from(a) - f64::from(w);
                *m = o.beta1 * *m + (1.0 - o.beta1) * d;
                *v = o.beta2 * *v + (1.0 - o.beta2) * d * d;
                (f64::from(w) + o.lr * *m / (v.sqrt() + o.tau)) as f32
            })
            .collect()
    }
}

/// Outcome of one run.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    /// Validation loss at the best round.
    #[serde(with = "ferrolab_core::run::f64_or_null")]
    pub val_loss: f64,
    /// Round of the best validation accuracy (0 = the initial model).
    pub best_round: usize,
    pub rounds_run: usize,
    /// Bytes the server sent and received (float32 parameters).
    pub server_bytes: u64,
    /// `(round, val_accuracy, test_accuracy)` after each round.
    pub curve: Vec<(usize, f64, f64)>,
    /// Updates the server rejected (wrong layout, non-finite values, client errors).
    pub rejected: usize,
    /// Local only: each client's best model evaluated on the whole graph's test nodes, mean
    /// over clients (a second reading of FS-G's "local" column); NaN otherwise.
    #[serde(with = "ferrolab_core::run::f64_or_null")]
    pub whole_graph_test_accuracy: f64,
    /// FedAvg: wall seconds of each round, from the tasks going out to the server's
    /// evaluation of the new global model (the round-time benchmark reads it); empty otherwise.
    pub round_seconds: Vec<f64>,
}

/// A fresh model drawn from the backend's generator seeded with `seed`.
pub fn init_model(zoo: &ZooConfig, seed: u64) -> Result<GnnModel, FedGraphError> {
    ferrolab_core::backend::init_seeded(seed, |dev| Ok(zoo.init(dev)?))
}

/// Early stopping on validation accuracy: `true` when training should stop.
struct Stopper {
    best: EvalResult,
    best_round: usize,
    since: usize,
    patience: usize,
    by_loss: bool,
}

impl Stopper {
    fn new(first: EvalResult, s: &Schedule) -> Self {
        Stopper {
            best: first,
            best_round: 0,
            since: 0,
            patience: s.patience,
            by_loss: s.by_loss,
        }
    }

    fn update(&mut self, round: usize, e: EvalResult) -> bool {
        let better = if self.by_loss {
            e.val_loss < self.best.val_loss
        } else {
            e.val_accuracy > self.best.val_accuracy
        };
        if better {
            self.best = e;
            self.best_round = round;
            self.since = 0;
        } else {
            self.since += 1;
        }
        self.patience > 0 && self.since >= self.patience
    }
}

/// Trains one model alone on `task` (a client's subgraph or the whole graph).
pub fn train_alone(
    task: &NodeTask,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<RunResult, FedGraphError> {
    train_alone_keep(task, zoo, s, seed).map(|(r, _)| r)
}

/// [`train_alone`], also returning the model of the best validation round.
pub fn train_alone_keep(
    task: &NodeTask,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<(RunResult, GnnModel), FedGraphError> {
    let mut model = init_model(zoo, ferrolab_core::seed::derive(seed, "init"))?;
    let mut optim = OptimKind::Sgd {
        weight_decay: s.weight_decay,
    }
    .init();
    let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "dropout"));
    let mut stop = Stopper::new(task.evaluate(&model), s);
    let mut best_model = model.clone();
    let mut curve = Vec::new();
    let mut run = 0;
    for round in 1..=s.rounds {
        let (m, loss) = task.train_steps(model, zoo, &mut optim, s.lr, s.local_steps, &mut rng);
        model = m;
        run = round;
        if !loss.is_finite() {
            // Diverged (a too-large learning rate): the best round so far stands.
            break;
        }
        let e = task.evaluate(&model);
        curve.push((round, e.val_accuracy, e.test_accuracy));
        let before = stop.best_round;
        let done = stop.update(round, e);
        if stop.best_round != before {
            best_model = model.clone();
        }
        if done {
            break;
        }
    }
    Ok((
        RunResult {
            val_accuracy: stop.best.val_accuracy,
            test_accuracy: stop.best.test_accuracy,
            val_loss: stop.best.val_loss,
            best_round: stop.best_round,
            rounds_run: run,
            server_bytes: 0,
            curve,
            rejected: 0,
            whole_graph_test_accuracy: f64::NAN,
            round_seconds: Vec::new(),
        },
        best_model,
    ))
}

/// Centralised training on the whole graph with the seed's masks.
pub fn global(
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<RunResult, FedGraphError> {
    let task = g.whole_task(&setup.split, &train_device())?;
    train_alone(&task, zoo, s, seed)
}

/// Every client alone; accuracies are means weighted by each client's validation / test
/// node counts (equal to pooling the clients' predictions).
pub fn local_only(
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<RunResult, FedGraphError> {
    let dev = train_device();
    let whole = g.whole_task(&setup.split, &dev)?;
    let (mut val, mut test, mut nval, mut ntest) = (0f64, 0f64, 0usize, 0usize);
    let mut vloss = 0f64;
    let mut whole_acc = 0f64;
    let mut out = RunResult::default();
    let k = setup.clients.num_clients();
    for c in 0..k {
        let task = setup.client_task(g, c, &dev)?;
        let (r, best) = train_alone_keep(&task, zoo, s, client_seed(seed, c))?;
        whole_acc += whole.evaluate(&best).test_accuracy / k as f64;
        let (v, t) = (task.split.val.len(), task.split.test.len());
        val += r.val_accuracy * v as f64;
        vloss += r.val_loss * v as f64;
        test += r.test_accuracy * t as f64;
        nval += v;
        ntest += t;
        out.rounds_run = out.rounds_run.max(r.rounds_run);
        out.best_round = out.best_round.max(r.best_round);
    }
    out.val_accuracy = val / nval.max(1) as f64;
    out.val_loss = vloss / nval.max(1) as f64;
    out.test_accuracy = test / ntest.max(1) as f64;
    out.whole_graph_test_accuracy = whole_acc;
    Ok(out)
}

/// FedAvg over the in-process fabric: one thread per client.
pub fn fedavg(
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<RunResult, FedGraphError> {
    fed_node(g, setup, zoo, s, seed, &NodeAlgo::default())
}

/// FedAvg, FedProx or FedOpt (as `algo` says) over the in-process fabric.
pub fn fed_node(
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
    algo: &NodeAlgo,
) -> Result<RunResult, FedGraphError> {
    fed_node_on(&InProcFabric::new(), g, setup, zoo, s, seed, algo)
}

/// The seed of client `c`'s own random stream (dropout) in the run seeded `seed`.
pub fn client_seed(seed: u64, c: usize) -> u64 {
    ferrolab_core::seed::derive(seed, &format!("client{c}"))
}

/// [`fed_node`] over `fabric`: the server's side of a run whose clients may be threads of
/// this process (an in-process fabric) or other processes (a fabric that stands client
/// threads down, [`crate::nats::multiprocess::ServerOnly`]).
pub fn fed_node_on(
    fabric: &dyn Fabric,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
    algo: &NodeAlgo,
) -> Result<RunResult, FedGraphError> {
    let dev = train_device();
    let tasks = (0..setup.clients.num_clients())
        .map(|c| setup.client_task(g, c, &dev))
        .collect::<Result<Vec<_>, _>>()?;
    fed_tasks(fabric, tasks, g, setup, zoo, s, seed, algo)
}

/// FedAvg with the clients served over `fabric` by threads of this process.
pub fn fedavg_on(
    fabric: &dyn Fabric,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<RunResult, FedGraphError> {
    fed_node_on(fabric, g, setup, zoo, s, seed, &NodeAlgo::default())
}

/// FedSage+'s classifier stage: FedAvg over the in-process fabric on the clients' mended
/// subgraphs (see [`super::fedsage`]); the server evaluates on the whole real graph.
pub fn fedsage(
    g: &GraphSet,
    setup: &SeedSetup,
    mended: &[super::fedsage::Mended],
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<RunResult, FedGraphError> {
    let dev = train_device();
    let tasks = mended
        .iter()
        .map(|m| m.task(g.classes, &dev))
        .collect::<Result<Vec<_>, _>>()?;
    let fabric = Arc::new(InProcFabric::new());
    fedavg_tasks(fabric.as_ref(), tasks, g, setup, zoo, s, seed)
}

/// The server's round loop alone over `fabric`, whose `k` clients are served elsewhere
/// (client processes, or threads the caller started): the model initialised as
/// [`fed_tasks`] does, evaluated on the whole real graph. The clients are not shut down.
#[allow(clippy::too_many_arguments)]
pub fn server_on(
    fabric: &dyn Fabric,
    k: usize,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
    algo: &NodeAlgo,
) -> Result<RunResult, FedGraphError> {
    let model = init_model(zoo, ferrolab_core::seed::derive(seed, "init"))?;
    let whole = g.whole_task(&setup.split, &train_device())?;
    let ids: Vec<ClientId> = (0..k as ClientId).collect();
    server_loop(fabric, &ids, model, &whole, s, algo)
}

/// FedAvg of one client per task (task `c` is client `c`), served over `fabric`.
pub fn fedavg_tasks(
    fabric: &dyn Fabric,
    tasks: Vec<NodeTask>,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
) -> Result<RunResult, FedGraphError> {
    fed_tasks(fabric, tasks, g, setup, zoo, s, seed, &NodeAlgo::default())
}

/// [`fedavg_tasks`] for any [`NodeAlgo`].
#[allow(clippy::too_many_arguments)]
pub fn fed_tasks(
    fabric: &dyn Fabric,
    tasks: Vec<NodeTask>,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    s: &Schedule,
    seed: u64,
    algo: &NodeAlgo,
) -> Result<RunResult, FedGraphError> {
    let dev = train_device();
    let k = tasks.len();
    let model = init_model(zoo, ferrolab_core::seed::derive(seed, "init"))?;
    let mut clients = Vec::with_capacity(k);
    for (c, task) in tasks.into_iter().enumerate() {
        clients.push(GraphClient::new(
            task,
            zoo.clone(),
            model.clone(),
            s.weight_decay,
            client_seed(seed, c),
        ));
    }
    let whole = g.whole_task(&setup.split, &dev)?;
    let ids: Vec<ClientId> = (0..k as ClientId).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .zip(&ids)
            .map(|(mut cl, &id)| scope.spawn(move || serve(&mut cl, id, fabric, PATIENCE_WALL)))
            .collect();
        let result = server_loop(fabric, &ids, model, &whole, s, algo);
        crate::client::shutdown(fabric, &ids);
        for h in handles {
            match h.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("fedgraph: a client stopped with: {e}"),
                Err(_) => eprintln!("fedgraph: a client thread panicked"),
            }
        }
        result
    })
}

fn server_loop(
    fabric: &dyn Fabric,
    ids: &[ClientId],
    model: GnnModel,
    whole: &NodeTask,
    s: &Schedule,
    algo: &NodeAlgo,
) -> Result<RunResult, FedGraphError> {
    let mut params = to_params(&model_params(&model));
    let mut adam = algo.server_adam.map(|o| AdamState::new(o, params.numel()));
    let mut server_model = model;
    let mut config = Config::new();
    config.insert("lr".into(), serde_json::json!(s.lr));
    config.insert("local_steps".into(), serde_json::json!(s.local_steps));
    if let Some(mu) = algo.prox_mu {
        config.insert("prox_mu".into(), serde_json::json!(mu));
    }
    let mut strategy = FedAvg {
        config,
        min_results: 1,
    };
    let mut stop = Stopper::new(whole.evaluate(&server_model), s);
    let mut out = RunResult {
        whole_graph_test_accuracy: f64::NAN,
        ..Default::default()
    };
    for round in 1..=s.rounds {
        let t0 = std::time::Instant::now();
        let r = algo.round_offset + round as u64;
        let tasks = strategy.configure_fit(r, &params, ids);
        for (c, ins) in &tasks {
            let mut config = ins.config.clone();
            if algo.round_offset > 0 {
                config.insert("seed_round".into(), serde_json::json!(round as u64));
            }
            fabric.send_task(
                *c,
                &Task {
                    round: r,
                    kind: TaskKind::Fit,
                    config,
                    params: ins.params.clone(),
                },
            )?;
        }
        let got = {
            let validate = layout_validator(&params);
            let deadline = algo.reply_timeout.unwrap_or(PATIENCE_WALL);
            fabric.collect_replies(r, TaskKind::Fit, ids, deadline, &validate)?
        };
        for f in &got.failures {
            eprintln!(
                "fedgraph: round {round}: update of client {} rejected: {}",
                f.client, f.reason
            );
        }
        out.rejected += got.failures.len();
        out.server_bytes += (params.payload_bytes() * (tasks.len() + got.replies.len())) as u64;
        if got.replies.is_empty() {
            // Every update rejected (all clients diverged or failed): the best round stands.
            eprintln!("fedgraph: round {round}: no usable update, stopping");
            break;
        }
        let results = got
            .replies
            .into_iter()
            .map(|rep| {
                (
                    rep.id.client,
                    crate::client::FitRes {
                        params: rep.params,
                        n_examples: rep.n_examples,
                        metrics: rep.metrics,
                    },
                )
            })
            .collect();
        let avg = strategy.aggregate_fit(r, &params, results, &got.failures)?;
        params = match adam.as_mut() {
            Some(a) => {
                let next = a.step(&params.to_flat(), &avg.to_flat());
                avg.with_flat(&next)
                    .map_err(crate::strategy::StrategyError::from)?
            }
            None => avg,
        };
        server_model = load_params(server_model, &from_params(&params))?;
        out.rounds_run = round;
        let e = whole.evaluate(&server_model);
        out.round_seconds.push(t0.elapsed().as_secs_f64());
        out.curve.push((round, e.val_accuracy, e.test_accuracy));
        if !params.to_flat().iter().all(|v| v.is_finite()) {
            // Diverged (a too-large learning rate): the best round so far stands.
            break;
        }
        if stop.update(round, e) {
            break;
        }
    }
    out.val_accuracy = stop.best.val_accuracy;
    out.test_accuracy = stop.best.test_accuracy;
    out.val_loss = stop.best.val_loss;
    out.best_round = stop.best_round;
    Ok(out)
}
