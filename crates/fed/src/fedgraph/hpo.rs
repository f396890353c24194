//! Federated hyper-parameter optimisation (`ferrolab fedgraph hpo`, FS-G's `autotune`) over
//! FedAvg on the node task: the search space is the clients' learning rate × local steps ×
//! dropout, and the budget unit is one federated round (every client trains once).
//!
//! - **grid**: every configuration for `hpo.max_rounds` rounds (the reference cost).
//! - **sh**: successive halving (Jamieson & Talwalkar 2016) over the whole grid: every
//!   configuration for `min_rounds`, the best `1/eta` continue (their federations resume, so a
//!   rung costs only its extra rounds) to `eta ×` as many rounds, up to `max_rounds`.
//! - **hyperband** (Li et al., JMLR 2018): successive-halving brackets from many configurations
//!   on few rounds to few configurations on `max_rounds`; configurations drawn at random.
//! - **fedex** (Khodak et al., NeurIPS 2021): one federation; every round each client draws its
//!   local configuration from a categorical distribution θ over the space, and θ takes an
//!   exponentiated-gradient step on the clients' validation-loss change (loss of the locally
//!   trained model − loss of the global model it started from, on the client's own validation
//!   nodes), with a running baseline.
//!
//! Configurations are ranked by their best validation accuracy so far (the round selection of
//! the main experiment); the test accuracy reported is the one at that round.
//!
//! [`Federation`] is FedAvg stepped round by round in one thread: the same client training
//! ([`NodeTask::train_steps`], a fresh SGD per round, dropout seeded by client and round as
//! [`GraphClient`](super::client::GraphClient) does) and the same example-weighted average as
//! [`super::run::fedavg`], which a test checks round for round. Where the clients' training
//! runs is a [`Trainer`]: [`InProcess`] (the federation's own client tasks, trials in threads)
//! or [`FabricTrainer`] (`fed.runtime = "nats"`: client processes answer fit tasks carrying
//! each trial's configuration, all trials' tasks of a step sent before the first collection),
//! with the same search on the server and the same figures bit for bit.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ferrolab_core::backend::train_device;
use ferrolab_core::run::{Curve, Report};
use ferrolab_core::system::SubCommand;
use ferrolab_core::{Checked, Outcome, RunContext, SysResult};
use ferrolab_graph::zoo::train::{EvalResult, NodeTask, OptimKind};
use ferrolab_graph::zoo::{GnnModel, ZooConfig, load_params, model_params};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use super::FedGraphError;
use super::client::{from_params, to_params};
use super::config::FedGraphConfig;
use super::data::{GraphSet, SeedSetup};
use super::experiment::mean_std;
use super::run::init_model;
use crate::params::Params;
use crate::strategy::{StrategyError, weighted_average};

ferrolab_core::config_section! {
    /// `task.mode`: what `ferrolab fedgraph` runs.
    pub struct TaskSection {
        /// `table` (the FS-G node-classification table), `hpo` (`ferrolab fedgraph hpo`) or
        /// `privacy` (`ferrolab fedgraph privacy`).
        pub mode: String = "table".into(), "`table`, `hpo` or `privacy`" => |v| ["table", "hpo", "privacy"].contains(&v.as_str());
    }
}

ferrolab_core::config_section! {
    /// Federated HPO keys (`ferrolab fedgraph hpo`, or `task.mode = "hpo"`).
    pub struct HpoSection {
        /// Methods to run, the first reported as `metrics`, the others as `baselines.<name>`:
        /// `sh`, `hyperband`, `fedex`, `grid`.
        pub methods: Vec<String> = vec!["sh".into(), "hyperband".into(), "fedex".into(), "grid".into()], "non-empty list of `sh`, `hyperband`, `fedex`, `grid`, no repeats" => |v: &Vec<String>| !v.is_empty() && v.iter().all(|m| ["sh", "hyperband", "fedex", "grid"].contains(&m.as_str())) && (1..v.len()).all(|i| !v[..i].contains(&v[i]));
        /// Client learning rates of the search space.
        pub lrs: Vec<f64> = vec![0.01, 0.05, 0.25], "non-empty, without repeats, each in [1e-9, 100]" => |v: &Vec<f64>| !v.is_empty() && v.iter().all(|x| (1e-9..=100.0).contains(x)) && ferrolab_core::config::distinct(v);
        /// Local steps per round of the search space.
        pub local_steps: Vec<usize> = vec![1, 4, 16], "non-empty, without repeats, each in 1..=10000" => |v: &Vec<usize>| !v.is_empty() && v.iter().all(|x| (1..=10_000).contains(x)) && ferrolab_core::config::distinct(v);
        /// Dropout rates of the search space.
        pub dropouts: Vec<f64> = vec![0.0, 0.25, 0.5], "non-empty, without repeats, each in [0, 1)" => |v: &Vec<f64>| !v.is_empty() && v.iter().all(|x| (0.0..1.0).contains(x)) && ferrolab_core::config::distinct(v);
        /// Rounds of the first rung (successive halving, Hyperband's most aggressive bracket).
        pub min_rounds: usize = 5, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Rounds of the last rung, of a grid run and of the FedEx run.
        pub max_rounds: usize = 45, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Keep 1/eta of the configurations at every rung.
        pub eta: usize = 3, "2..=100" => |v| (2..=100).contains(v);
        /// FedEx step size scale η₀ (step at round t: η₀ √(2 ln k / t) / ‖∇̃‖∞).
        pub fedex_eta0: f64 = 1.0, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Weight of the newest round in FedEx's running baseline of the loss change.
        pub fedex_baseline_decay: f64 = 0.1, "in (0, 1]" => |v| *v > 0.0 && *v <= 1.0;
        /// Seeds (each draws its own node split, client split, initialisation and samples).
        pub seeds: usize = 2, "1..=100" => |v| (1..=100).contains(v);
    }
}

/// One point of the search space: what a client trains with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalHp {
    pub lr: f64,
    pub local_steps: usize,
    pub dropout: f64,
}

impl LocalHp {
    pub fn json(&self) -> serde_json::Value {
        json!({"lr": self.lr, "local_steps": self.local_steps, "dropout": self.dropout})
    }
}

/// The product space in a fixed order (lr outermost, dropout innermost).
pub fn search_space(h: &HpoSection) -> Vec<LocalHp> {
    let mut v = Vec::new();
    for &lr in &h.lrs {
        for &local_steps in &h.local_steps {
            for &dropout in &h.dropouts {
                v.push(LocalHp {
                    lr,
                    local_steps,
                    dropout,
                });
            }
        }
    }
    v
}

/// FedAvg stepped one round at a time in the calling thread (see the module page).
pub struct Federation {
    tasks: Vec<NodeTask>,
    whole: NodeTask,
    zoo: ZooConfig,
    template: GnnModel,
    params: Params,
    client_seeds: Vec<u64>,
    weight_decay: f64,
    /// Rounds trained so far.
    pub round: usize,
    /// The evaluation at the best validation accuracy so far, and its round.
    pub best: EvalResult,
    pub best_round: usize,
    /// The global model's evaluation after the last round.
    pub last: EvalResult,
    /// `(round, val_accuracy, test_accuracy)` after each round.
    pub curve: Vec<(usize, f64, f64)>,
    /// The global parameters became non-finite; no further rounds run.
    pub diverged: bool,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Federation({} clients, round {})",
            self.tasks.len(),
            self.round
        )
    }
}

/// What one client sends back in a round.
#[derive(Debug, Clone)]
pub struct LocalResult {
    pub params: Params,
    pub train_loss: f64,
}

impl Federation {
    /// The federation `run::fedavg(g, setup, zoo, …, seed)` would build: the same initial
    /// model and the same client seeds.
    pub fn new(
        g: &GraphSet,
        setup: &SeedSetup,
        zoo: &ZooConfig,
        weight_decay: f64,
        seed: u64,
    ) -> Result<Self, FedGraphError> {
        let dev = train_device();
        let k = setup.clients.num_clients();
        let tasks = (0..k)
            .map(|c| setup.client_task(g, c, &dev))
            .collect::<Result<Vec<_>, _>>()?;
        let whole = g.whole_task(&setup.split, &dev)?;
        let template = init_model(zoo, ferrolab_core::seed::derive(seed, "init"))?;
        let first = whole.evaluate(&template);
        Ok(Federation {
            params: to_params(&model_params(&template)),
            client_seeds: (0..k)
                .map(|c| ferrolab_core::seed::derive(seed, &format!("client{c}")))
                .collect(),
            tasks,
            whole,
            zoo: zoo.clone(),
            template,
            weight_decay,
            round: 0,
            best: first,
            best_round: 0,
            last: first,
            curve: Vec::new(),
            diverged: false,
        })
    }

    pub fn num_clients(&self) -> usize {
        self.tasks.len()
    }

    /// Client `c`'s task (its subgraph, local split).
    pub fn task(&self, c: usize) -> &NodeTask {
        &self.tasks[c]
    }

    /// The whole graph with the seed's split (the server's evaluation task).
    pub fn whole(&self) -> &NodeTask {
        &self.whole
    }

    /// The seed of client `c`'s own random streams (dropout, DP noise).
    pub fn client_seed(&self, c: usize) -> u64 {
        self.client_seeds[c]
    }

    /// The current global parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The current global model.
    pub fn model(&self) -> Result<GnnModel, FedGraphError> {
        Ok(load_params(
            self.template.clone(),
            &from_params(&self.params),
        )?)
    }

    /// `model` evaluated on client `c`'s own subgraph.
    pub fn evaluate_client(&self, c: usize, model: &GnnModel) -> EvalResult {
        self.tasks[c].evaluate(model)
    }

    /// Client `c`'s local training in round `self.round + 1` from the global model, as
    /// [`GraphClient::fit`](super::client::GraphClient) does with `hp`.
    pub fn local_fit(
        &self,
        c: usize,
        hp: &LocalHp,
    ) -> Result<(LocalResult, GnnModel), FedGraphError> {
        let round = self.round + 1;
        let model = self.model()?;
        let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(
            self.client_seeds[c],
            &format!("round{round}"),
        ));
        let mut optim = OptimKind::Sgd {
            weight_decay: self.weight_decay,
        }
        .init();
        let zoo = ZooConfig {
            dropout: hp.dropout,
            ..self.zoo.clone()
        };
        let (model, loss) =
            self.tasks[c].train_steps(model, &zoo, &mut optim, hp.lr, hp.local_steps, &mut rng);
        Ok((
            LocalResult {
                params: to_params(&model_params(&model)),
                train_loss: loss,
            },
            model,
        ))
    }

    /// Ends the round: the training-node-weighted average of the clients' parameters becomes
    /// the global model, which the server evaluates on the whole graph.
    pub fn aggregate(&mut self, updates: &[(usize, Params)]) -> Result<(), FedGraphError> {
        let items = updates
            .iter()
            .map(|(c, p)| {
                (
                    *c as crate::fabric::ClientId,
                    p,
                    self.tasks[*c].num_train() as f64,
                )
            })
            .collect();
        let params = weighted_average(items).map_err(StrategyError::from)?;
        self.round += 1;
        if !params.to_flat().iter().all(|v| v.is_finite()) {
            // Diverged (a too-large learning rate): the best round so far stands.
            self.diverged = true;
            return Ok(());
        }
        self.params = params;
        let e = self.whole.evaluate(&self.model()?);
        self.last = e;
        self.curve
            .push((self.round, e.val_accuracy, e.test_accuracy));
        if e.val_accuracy > self.best.val_accuracy {
            self.best = e;
            self.best_round = self.round;
        }
        Ok(())
    }

    /// One FedAvg round with every client training with `hp`, in this thread.
    pub fn round_with(&mut self, hp: &LocalHp) -> Result<(), FedGraphError> {
        self.round_on(&InProcess, hp)
    }

    /// One FedAvg round with every client training with `hp` where `trainer` runs them.
    pub fn round_on(&mut self, trainer: &dyn Trainer, hp: &LocalHp) -> Result<(), FedGraphError> {
        if self.diverged {
            return Ok(());
        }
        let hps = vec![*hp; self.tasks.len()];
        let fits = trainer.fit_round(self, &hps, Ask::default())?;
        self.apply(fits)
    }

    /// Ends a round with the clients' fits (FedAvg over those that came back).
    pub fn apply(&mut self, fits: Vec<ClientFit>) -> Result<(), FedGraphError> {
        let ups: Vec<(usize, Params)> = fits.into_iter().map(|f| (f.client, f.params)).collect();
        self.aggregate(&ups)
    }

    /// Rounds with `hp` until `rounds` have been trained (or the run diverged); returns the
    /// rounds trained now.
    pub fn train_to(&mut self, hp: &LocalHp, rounds: usize) -> Result<usize, FedGraphError> {
        self.train_to_on(&InProcess, hp, rounds)
    }

    /// [`Federation::train_to`] with the clients' training where `trainer` runs it.
    pub fn train_to_on(
        &mut self,
        trainer: &dyn Trainer,
        hp: &LocalHp,
        rounds: usize,
    ) -> Result<usize, FedGraphError> {
        let before = self.round;
        while self.round < rounds && !self.diverged {
            self.round_on(trainer, hp)?;
        }
        Ok(self.round - before)
    }
}

/// One client's part of a round: its trained parameters and, when asked for, the validation
/// loss on its own nodes of the global model it started from and of the model it trained
/// (FedEx's signal; NaN when not asked for or not finite).
#[derive(Debug, Clone)]
pub struct ClientFit {
    pub client: usize,
    pub params: Params,
    pub val_loss_before: f64,
    pub val_loss_after: f64,
    /// The update's L2 norm before clipping (NaN when not asked for).
    pub update_norm: f64,
    /// Whether the DP clip shortened the update.
    pub clipped: bool,
}

/// Where the clients' local training of a [`Federation`] round runs: in this thread
/// ([`InProcess`]) or in client processes over a fabric ([`FabricTrainer`]). The server's
/// side (aggregation, evaluation on the whole graph, the search) is the same either way.
pub trait Trainer: Sync {
    /// Every client's fit from `fed`'s global model for round `fed.round + 1`, client `c`
    /// training with `hps[c]`, in client order. A client whose update did not come back is
    /// left out (its round goes on with the others); an error when none came back.
    fn fit_round(
        &self,
        fed: &Federation,
        hps: &[LocalHp],
        ask: Ask,
    ) -> Result<Vec<ClientFit>, FedGraphError>;

    /// One round of each federation of `batch`, each with its clients' configurations:
    /// [`Trainer::fit_round`] for each in turn, unless the trainer can overlap them.
    fn fit_rounds(
        &self,
        batch: &[(&Federation, Vec<LocalHp>)],
        ask: Ask,
    ) -> Result<Vec<Vec<ClientFit>>, FedGraphError> {
        batch
            .iter()
            .map(|(fed, hps)| self.fit_round(fed, hps, ask))
            .collect()
    }

    /// Whether trials may run in threads of their own. A fabric's collections go one round
    /// at a time, so a remote trainer's trials advance together through
    /// [`Trainer::fit_rounds`] instead.
    fn concurrent(&self) -> bool;
}

/// The clients' training in the calling thread, from the federation's own client tasks.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcess;

impl Trainer for InProcess {
    fn fit_round(
        &self,
        fed: &Federation,
        hps: &[LocalHp],
        ask: Ask,
    ) -> Result<Vec<ClientFit>, FedGraphError> {
        let global = if ask.val_losses {
            Some(fed.model()?)
        } else {
            None
        };
        let mut fits = Vec::with_capacity(hps.len());
        for (c, hp) in hps.iter().enumerate() {
            let (res, local) = fed.local_fit(c, hp)?;
            let (before, after) = match &global {
                Some(g) => (
                    fed.evaluate_client(c, g).val_loss,
                    fed.evaluate_client(c, &local).val_loss,
                ),
                None => (f64::NAN, f64::NAN),
            };
            let (params, update_norm, clipped) = if ask.update_norms || ask.dp.is_some() {
                let noise = match ask.dp {
                    Some(d) if d.secret => super::privacy::noise_seed_secret(),
                    _ => super::privacy::noise_seed(fed.client_seed(c), ask.dp, fed.round + 1),
                };
                super::privacy::dp_update(fed.params(), res.params, ask.dp, noise)
                    .map_err(StrategyError::from)?
            } else {
                (res.params, f64::NAN, false)
            };
            // A diverged update is NaN throughout, as it reaches a server over any fabric
            // (which carries the client's `diverged` flag, not its values).
            let params = if params.check_finite().is_err() {
                params
                    .with_flat_vec(vec![f32::NAN; params.numel()])
                    .map_err(StrategyError::from)?
            } else {
                params
            };
            fits.push(ClientFit {
                client: c,
                params,
                val_loss_before: before,
                val_loss_after: after,
                update_norm,
                clipped,
            });
        }
        Ok(fits)
    }

    fn concurrent(&self) -> bool {
        true
    }
}

/// The task config of a fit that [`super::client::GraphClient`] answers as
/// [`Federation::local_fit`] trains: `hp`, and the trial's round (`seed_round`) for the
/// dropout stream, since the fabric's own round counts every trial's rounds.
pub fn fit_config(hp: &LocalHp, trial_round: usize, ask: Ask) -> crate::fabric::Config {
    let mut c = crate::fabric::Config::new();
    c.insert("lr".into(), json!(hp.lr));
    c.insert("local_steps".into(), json!(hp.local_steps));
    c.insert("dropout".into(), json!(hp.dropout));
    c.insert("seed_round".into(), json!(trial_round as u64));
    if ask.val_losses {
        c.insert("val_losses".into(), json!(true));
    }
    if ask.update_norms {
        c.insert("update_norm".into(), json!(true));
    }
    if let Some(dp) = ask.dp {
        c.insert("dp_clip".into(), json!(dp.clip));
        c.insert("dp_sigma".into(), json!(dp.sigma));
        if dp.secret {
            c.insert("dp_secret".into(), json!(true));
        }
    }
    c
}

/// What a round asks of the clients besides their trained parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ask {
    /// The validation loss of the global and of the trained model (FedEx).
    pub val_losses: bool,
    /// The L2 norm of the update before any clipping (the privacy study).
    pub update_norms: bool,
    /// Local differential privacy: the client clips its update and adds Gaussian noise
    /// before sending ([`super::privacy::dp_update`]).
    pub dp: Option<Dp>,
}

/// The client-side Gaussian mechanism's parameters: clip norm and noise multiplier, and
/// where the noise comes from (`privacy.noise`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dp {
    pub clip: f64,
    pub sigma: f64,
    /// `false` (`privacy.noise = "seeded"`): each client's noise stream derives from its
    /// client seed, σ and the round, so a study repeats bit for bit, and whoever holds the
    /// job's master seed (the server) can regenerate and remove it. `true` (`"secret"`): from
    /// the client process's own entropy, which the server cannot know; no two runs repeat.
    pub secret: bool,
}

/// The clients' training in `ferrolab fed client --system fedgraph` processes over a fabric
/// (`fed.runtime = "nats"`): each round is one fit task per client carrying the global model
/// and that client's configuration ([`fit_config`]); the fabric's rounds count up across
/// trials. The clients build the same subgraphs and dropout streams from the same job, so a
/// search gives what it gives in-process, bit for bit. A diverged update (non-finite) is
/// accepted, as in-process, and makes its trial diverge; an update of the wrong layout, or a
/// client that does not answer within `deadline`, is left out of its round and named.
pub struct FabricTrainer<'a> {
    pub fabric: &'a dyn crate::fabric::Fabric,
    pub deadline: std::time::Duration,
    next_round: std::sync::atomic::AtomicU64,
    left_out: AtomicUsize,
}

impl<'a> FabricTrainer<'a> {
    pub fn new(fabric: &'a dyn crate::fabric::Fabric, deadline: std::time::Duration) -> Self {
        FabricTrainer {
            fabric,
            deadline,
            next_round: std::sync::atomic::AtomicU64::new(1),
            left_out: AtomicUsize::new(0),
        }
    }

    /// Fabric rounds used so far (one per federated round of any trial).
    pub fn rounds(&self) -> u64 {
        self.next_round.load(Ordering::SeqCst) - 1
    }

    /// Client updates left out of their rounds so far (no reply in time, a dead process, a
    /// wrong layout).
    pub fn left_out(&self) -> usize {
        self.left_out.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for FabricTrainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FabricTrainer({}, round {})",
            self.fabric.name(),
            self.rounds()
        )
    }
}

impl FabricTrainer<'_> {
    /// Sends `fed`'s next round's fit tasks (client `c` training with `hps[c]`) under a fresh
    /// fabric round, which it returns.
    fn send(&self, fed: &Federation, hps: &[LocalHp], ask: Ask) -> Result<u64, FedGraphError> {
        use crate::fabric::{ClientId, Task, TaskKind};
        let r = self.next_round.fetch_add(1, Ordering::SeqCst);
        for (c, hp) in hps.iter().enumerate() {
            self.fabric.send_task(
                c as ClientId,
                &Task {
                    round: r,
                    kind: TaskKind::Fit,
                    config: fit_config(hp, fed.round + 1, ask),
                    params: fed.params().clone(),
                },
            )?;
        }
        Ok(r)
    }

    /// The fits of fabric round `r`, sent for `fed` to `clients` clients with `ask`.
    fn collect(
        &self,
        fed: &Federation,
        r: u64,
        clients: usize,
        ask: Ask,
    ) -> Result<Vec<ClientFit>, FedGraphError> {
        use crate::fabric::{ClientId, Reply, TaskKind};
        let ids: Vec<ClientId> = (0..clients as ClientId).collect();
        let mut wanted: Vec<&str> = Vec::new();
        if ask.val_losses {
            wanted.extend(["val_loss_before", "val_loss_after"]);
        }
        if ask.update_norms || ask.dp.is_some() {
            // A client that ignored `dp_clip` would send its raw update: refused.
            wanted.extend(["update_norm", "clipped"]);
        }
        // Layout only: a non-finite update is the trial's divergence, which the federation
        // records as the in-process search does (a NaN average ends the trial).
        let template = fed.params();
        let diverged =
            |rep: &Reply| rep.metrics.get("diverged") == Some(&1.0) && rep.params.is_empty();
        let validate = |rep: &Reply| {
            if let Some(k) = wanted.iter().find(|k| !rep.metrics.contains_key(**k)) {
                return Err(format!(
                    "reply lacks `{k}`, which the task asked for (a client of another build?)"
                ));
            }
            if diverged(rep) {
                return Ok(());
            }
            template
                .check_same_layout(&rep.params)
                .map_err(|e| e.to_string())
        };
        let got = self
            .fabric
            .collect_replies(r, TaskKind::Fit, &ids, self.deadline, &validate)?;
        self.left_out
            .fetch_add(got.failures.len(), Ordering::SeqCst);
        for f in &got.failures {
            eprintln!(
                "fedgraph hpo: trial round {}: client {} left out: {}",
                fed.round + 1,
                f.client,
                f.reason
            );
        }
        if got.replies.is_empty() {
            return Err(FedGraphError::Fabric(
                crate::fabric::FabricError::Disconnected(format!(
                    "trial round {}: no client's update came back ({})",
                    fed.round + 1,
                    got.failures
                        .iter()
                        .map(|f| format!("client {}: {}", f.client, f.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            ));
        }
        let metric = |rep: &Reply, k: &str| rep.metrics.get(k).copied().unwrap_or(f64::NAN);
        let mut fits = Vec::with_capacity(got.replies.len());
        for rep in got.replies {
            // A diverged client's update stands for what it is in-process: NaN everywhere,
            // which ends the trial when averaged.
            let fit = ClientFit {
                client: rep.id.client as usize,
                val_loss_before: metric(&rep, "val_loss_before"),
                val_loss_after: metric(&rep, "val_loss_after"),
                update_norm: metric(&rep, "update_norm"),
                clipped: metric(&rep, "clipped") == 1.0,
                params: Params::new(),
            };
            let params = if diverged(&rep) {
                template
                    .with_flat_vec(vec![f32::NAN; template.numel()])
                    .map_err(|e| FedGraphError::Usage(e.to_string()))?
            } else {
                rep.params
            };
            fits.push(ClientFit { params, ..fit });
        }
        Ok(fits)
    }
}

impl Trainer for FabricTrainer<'_> {
    fn fit_round(
        &self,
        fed: &Federation,
        hps: &[LocalHp],
        ask: Ask,
    ) -> Result<Vec<ClientFit>, FedGraphError> {
        let r = self.send(fed, hps, ask)?;
        self.collect(fed, r, hps.len(), ask)
    }

    /// Every trial's tasks go out before the first collection: each client process works
    /// through its queue while the server gathers round after round, so the processes never
    /// sit idle waiting for the server between trials.
    fn fit_rounds(
        &self,
        batch: &[(&Federation, Vec<LocalHp>)],
        ask: Ask,
    ) -> Result<Vec<Vec<ClientFit>>, FedGraphError> {
        let rounds = batch
            .iter()
            .map(|(fed, hps)| self.send(fed, hps, ask))
            .collect::<Result<Vec<_>, _>>()?;
        // In sending order: a collection ignores replies of rounds below its own.
        batch
            .iter()
            .zip(rounds)
            .map(|((fed, hps), r)| self.collect(fed, r, hps.len(), ask))
            .collect()
    }

    fn concurrent(&self) -> bool {
        false
    }
}

/// One trial: a configuration and its federation.
struct Trial {
    hp: LocalHp,
    index: usize,
    fed: Federation,
}

/// Orders trials best first: higher best validation accuracy, then lower validation loss at
/// that round, then the earlier configuration.
fn rank(a: &Trial, b: &Trial) -> std::cmp::Ordering {
    b.fed
        .best
        .val_accuracy
        .total_cmp(&a.fed.best.val_accuracy)
        .then(a.fed.best.val_loss.total_cmp(&b.fed.best.val_loss))
        .then(a.index.cmp(&b.index))
}

/// Trains every trial to `rounds` rounds, `workers` trials at a time (one when `trainer` runs
/// one round at a time); returns the rounds spent.
fn advance(
    trials: &mut [Trial],
    rounds: usize,
    workers: usize,
    trainer: &dyn Trainer,
) -> Result<usize, FedGraphError> {
    if !trainer.concurrent() {
        return advance_together(trials, rounds, trainer);
    }
    let cells: Vec<Mutex<&mut Trial>> = trials.iter_mut().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let spent = AtomicUsize::new(0);
    let error: Mutex<Option<FedGraphError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, cells.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(cell) = cells.get(i) else { break };
                    let Ok(mut t) = cell.lock() else { break };
                    let hp = t.hp;
                    match t.fed.train_to_on(trainer, &hp, rounds) {
                        Ok(n) => {
                            spent.fetch_add(n, Ordering::SeqCst);
                        }
                        Err(e) => {
                            if let Ok(mut slot) = error.lock() {
                                slot.get_or_insert(e);
                            }
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(spent.into_inner())
}

/// [`advance`] for a trainer whose trials cannot have threads of their own: every trial still
/// short of `rounds` trains one round per step, all in one [`Trainer::fit_rounds`] batch.
fn advance_together(
    trials: &mut [Trial],
    rounds: usize,
    trainer: &dyn Trainer,
) -> Result<usize, FedGraphError> {
    let mut spent = 0;
    loop {
        let mut active: Vec<&mut Trial> = trials
            .iter_mut()
            .filter(|t| t.fed.round < rounds && !t.fed.diverged)
            .collect();
        if active.is_empty() {
            return Ok(spent);
        }
        let fits = {
            let batch: Vec<(&Federation, Vec<LocalHp>)> = active
                .iter()
                .map(|t| (&t.fed, vec![t.hp; t.fed.num_clients()]))
                .collect();
            trainer.fit_rounds(&batch, Ask::default())?
        };
        for (t, f) in active.iter_mut().zip(fits) {
            t.fed.apply(f)?;
            spent += 1;
        }
    }
}

/// What one method found on one seed.
#[derive(Debug, Clone)]
pub struct HpoResult {
    pub best: LocalHp,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    /// Federated rounds trained, summed over every configuration tried.
    pub rounds_used: usize,
    /// Client-side SGD steps per client, summed over every round trained.
    pub local_steps_used: usize,
    /// `(configuration index, rounds trained)` of every trial, in the order tried.
    pub trials: Vec<(usize, usize)>,
    /// FedEx: θ after the last round; empty otherwise.
    pub theta: Vec<f64>,
    /// FedEx: (val, test) accuracy of the FedEx run's own global model (trained with
    /// configurations mixed by θ), before the refit of θ's mode; `None` otherwise.
    pub mixed_accuracy: Option<(f64, f64)>,
    /// Validation accuracy of the best trial per round (the search's own model).
    pub curve: Vec<(usize, f64, f64)>,
    pub seconds: f64,
}

/// Everything the methods need for one seed.
pub struct SeedCtx<'a> {
    pub g: &'a GraphSet,
    pub setup: &'a SeedSetup,
    pub zoo: &'a ZooConfig,
    pub weight_decay: f64,
    pub seed: u64,
    pub workers: usize,
    /// Where the clients train.
    pub trainer: &'a dyn Trainer,
}

impl SeedCtx<'_> {
    fn trial(&self, space: &[LocalHp], index: usize) -> Result<Trial, FedGraphError> {
        Ok(Trial {
            hp: space[index],
            index,
            fed: Federation::new(self.g, self.setup, self.zoo, self.weight_decay, self.seed)?,
        })
    }
}

fn finish(
    space: &[LocalHp],
    trials: &[Trial],
    spent: usize,
    log: Vec<(usize, usize)>,
    t0: Instant,
) -> Result<HpoResult, FedGraphError> {
    let best = trials
        .iter()
        .min_by(|a, b| rank(a, b))
        .ok_or_else(|| FedGraphError::Usage("hpo: no configuration was tried".into()))?;
    let local_steps_used = log.iter().map(|&(i, r)| r * space[i].local_steps).sum();
    Ok(HpoResult {
        best: best.hp,
        val_accuracy: best.fed.best.val_accuracy,
        test_accuracy: best.fed.best.test_accuracy,
        rounds_used: spent,
        local_steps_used,
        trials: log,
        theta: Vec::new(),
        mixed_accuracy: None,
        curve: best.fed.curve.clone(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Survivors (best first), rounds spent, `(configuration, rounds reached)` per trial.
type Halving = (Vec<Trial>, usize, Vec<(usize, usize)>);

/// Successive halving over `indices` of `space`: rung budgets `r0, r0·eta, …` capped at
/// `rmax`, keeping the best `⌊n/eta⌋` (at least one) after each rung; the survivors always
/// reach `rmax`.
fn successive_halving(
    cx: &SeedCtx<'_>,
    space: &[LocalHp],
    indices: &[usize],
    r0: usize,
    eta: usize,
    rmax: usize,
) -> Result<Halving, FedGraphError> {
    let mut alive = indices
        .iter()
        .map(|&i| cx.trial(space, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut reached: BTreeMap<usize, usize> = BTreeMap::new();
    let mut spent = 0;
    let mut r = r0.min(rmax);
    loop {
        spent += advance(&mut alive, r, cx.workers, cx.trainer)?;
        for t in &alive {
            reached.insert(t.index, t.fed.round);
        }
        alive.sort_by(rank);
        if r >= rmax {
            break;
        }
        // A lone survivor still trains on to rmax: it is compared with configurations (the
        // grid's, other brackets') that had the full budget.
        if alive.len() > 1 {
            alive.truncate((alive.len() / eta).max(1));
        }
        r = if alive.len() == 1 {
            rmax
        } else {
            (r * eta).min(rmax)
        };
    }
    // The order of `indices` is the order tried.
    let log = indices.iter().map(|i| (*i, reached[i])).collect();
    Ok((alive, spent, log))
}

/// `sh`: successive halving from the whole space.
pub fn run_sh(cx: &SeedCtx<'_>, h: &HpoSection) -> Result<HpoResult, FedGraphError> {
    let t0 = Instant::now();
    let space = search_space(h);
    let all: Vec<usize> = (0..space.len()).collect();
    let (alive, spent, log) =
        successive_halving(cx, &space, &all, h.min_rounds, h.eta, h.max_rounds)?;
    finish(&space, &alive, spent, log, t0)
}

/// `grid`: every configuration for `max_rounds`.
pub fn run_grid(cx: &SeedCtx<'_>, h: &HpoSection) -> Result<HpoResult, FedGraphError> {
    let t0 = Instant::now();
    let space = search_space(h);
    let mut trials = (0..space.len())
        .map(|i| cx.trial(&space, i))
        .collect::<Result<Vec<_>, _>>()?;
    let spent = advance(&mut trials, h.max_rounds, cx.workers, cx.trainer)?;
    let log = trials.iter().map(|t| (t.index, t.fed.round)).collect();
    finish(&space, &trials, spent, log, t0)
}

/// `hyperband`: brackets `s = s_max … 0` with `⌈(s_max+1)/(s+1) · eta^s⌉` configurations
/// drawn at random without replacement (at most the whole space), starting at `max_rounds ·
/// eta^-s` rounds; the best survivor over all brackets wins.
pub fn run_hyperband(cx: &SeedCtx<'_>, h: &HpoSection) -> Result<HpoResult, FedGraphError> {
    let t0 = Instant::now();
    let space = search_space(h);
    let ratio = (h.max_rounds / h.min_rounds).max(1);
    let mut s_max = 0;
    while h.eta.pow(s_max + 1) <= ratio {
        s_max += 1;
    }
    let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(cx.seed, "hyperband"));
    let mut winners = Vec::new();
    let mut spent = 0;
    let mut log = Vec::new();
    for s in (0..=s_max).rev() {
        let n =
            ((s_max + 1) as f64 / (s + 1) as f64 * (h.eta as f64).powi(s as i32)).ceil() as usize;
        let r = (h.max_rounds / h.eta.pow(s)).max(1);
        let mut pool: Vec<usize> = (0..space.len()).collect();
        pool.shuffle(&mut rng);
        // Without replacement: the same configuration on the same seed is the same run.
        let picked: Vec<usize> = pool.into_iter().take(n).collect();
        let (mut alive, sp, lg) = successive_halving(cx, &space, &picked, r, h.eta, h.max_rounds)?;
        spent += sp;
        log.extend(lg);
        if !alive.is_empty() {
            winners.push(alive.swap_remove(0));
        }
    }
    finish(&space, &winners, spent, log, t0)
}

/// `fedex`: one federation of `max_rounds` rounds with per-client, per-round configurations
/// drawn from θ (see the module page). The best configuration reported is θ's mode, and so
/// that the accuracies describe that configuration, it is then trained alone for
/// `max_rounds` (a fresh federation, the same budget as a grid trial) and its val/test are
/// reported; its rounds count in `rounds_used`. The mixed FedEx model's own accuracies are
/// kept as `mixed_accuracy`.
pub fn run_fedex(cx: &SeedCtx<'_>, h: &HpoSection) -> Result<HpoResult, FedGraphError> {
    let t0 = Instant::now();
    let space = search_space(h);
    let k = space.len();
    let mut theta = vec![1.0 / k as f64; k];
    let mut fed = Federation::new(cx.g, cx.setup, cx.zoo, cx.weight_decay, cx.seed)?;
    let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(cx.seed, "fedex"));
    let nval: Vec<f64> = (0..fed.num_clients())
        .map(|c| fed.task(c).split.val.len() as f64)
        .collect();
    let total_val = nval.iter().sum::<f64>().max(1.0);
    let mut baseline: Option<f64> = None;
    let mut steps_used = 0;
    let mut log = Vec::new();
    for t in 1..=h.max_rounds {
        if fed.diverged {
            break;
        }
        let arms: Vec<usize> = nval.iter().map(|_| sample(&theta, &mut rng)).collect();
        let hps: Vec<LocalHp> = arms.iter().map(|&a| space[a]).collect();
        let ask = Ask {
            val_losses: true,
            ..Ask::default()
        };
        let fits = cx.trainer.fit_round(&fed, &hps, ask)?;
        // Weighted over the clients that answered (all of them in-process), so a client left
        // out of a round does not shrink the loss change the baseline tracks.
        let answered = fits.iter().map(|f| nval[f.client]).sum::<f64>();
        let total_val = if fits.len() == nval.len() {
            total_val
        } else {
            answered.max(1.0)
        };
        let mut ups = Vec::with_capacity(fits.len());
        let mut draws = Vec::with_capacity(fits.len());
        for f in fits {
            // Only the clients that answered count as having trained their arm (over NATS a
            // client left out of the round may never have).
            let a = arms[f.client];
            steps_used += space[a].local_steps;
            log.push((a, 1));
            // A diverged local model gives an infinite change: the arm is pushed down hard.
            let d = f.val_loss_after - f.val_loss_before;
            let change = if d.is_finite() { d } else { 1e3 };
            draws.push((arms[f.client], change, nval[f.client] / total_val));
            ups.push((f.client, f.params));
        }
        fed.aggregate(&ups)?;
        let mean_change: f64 = draws.iter().map(|&(_, d, w)| d * w).sum();
        let lambda = baseline.unwrap_or(mean_change);
        let mut grad = vec![0f64; k];
        for &(a, d, w) in &draws {
            grad[a] += w * (d - lambda) / theta[a];
        }
        let gmax = grad.iter().fold(0f64, |m, g| m.max(g.abs()));
        if gmax > 0.0 {
            let step = h.fedex_eta0 * (2.0 * (k as f64).ln() / t as f64).sqrt() / gmax;
            for (th, g) in theta.iter_mut().zip(&grad) {
                *th *= (-step * g).exp();
            }
            let z: f64 = theta.iter().sum();
            for th in &mut theta {
                // A floor keeps every arm reachable (and the importance weights bounded).
                *th = (*th / z).max(1e-6);
            }
            let z: f64 = theta.iter().sum();
            theta.iter_mut().for_each(|th| *th /= z);
        }
        baseline = Some(match baseline {
            None => mean_change,
            Some(b) => (1.0 - h.fedex_baseline_decay) * b + h.fedex_baseline_decay * mean_change,
        });
    }
    let mode = theta
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(i, _)| i);
    let clients = fed.num_clients().max(1);
    let mut refit = [cx.trial(&space, mode)?];
    let refit_rounds = advance(&mut refit, h.max_rounds, 1, cx.trainer)?;
    let [refit] = refit;
    log.push((mode, refit_rounds));
    Ok(HpoResult {
        best: space[mode],
        val_accuracy: refit.fed.best.val_accuracy,
        test_accuracy: refit.fed.best.test_accuracy,
        rounds_used: fed.round + refit_rounds,
        local_steps_used: steps_used / clients + refit_rounds * space[mode].local_steps,
        trials: log,
        theta,
        mixed_accuracy: Some((fed.best.val_accuracy, fed.best.test_accuracy)),
        curve: refit.fed.curve.clone(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A draw from the categorical distribution `p` (sums to 1).
fn sample(p: &[f64], rng: &mut StdRng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, &x) in p.iter().enumerate() {
        acc += x;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

/// Runs `method` on one seed.
pub fn run_method(
    method: &str,
    cx: &SeedCtx<'_>,
    h: &HpoSection,
) -> Result<HpoResult, FedGraphError> {
    match method {
        "sh" => run_sh(cx, h),
        "hyperband" => run_hyperband(cx, h),
        "fedex" => run_fedex(cx, h),
        "grid" => run_grid(cx, h),
        other => Err(FedGraphError::Usage(format!(
            "hpo.methods: unknown method {other:?} (sh, hyperband, fedex, grid)"
        ))),
    }
}

/// Refuses, before any work, a `task.mode` that cannot run with the rest of the
/// configuration: `hpo` and `privacy` tune / attack FedAvg on a node task.
pub fn check_mode(cfg: &FedGraphConfig) -> Result<(), FedGraphError> {
    let mode = cfg.task.mode.as_str();
    if mode == "table" {
        return Ok(());
    }
    if cfg.fed.algo != "fedavg" {
        return Err(FedGraphError::Usage(format!(
            "task.mode = {mode:?} runs FedAvg; fed.algo = {:?} is not supported there (leave it at \"fedavg\")",
            cfg.fed.algo
        )));
    }
    if cfg.data.dataset == "graph-families" {
        return Err(FedGraphError::Usage(format!(
            "task.mode = {mode:?} needs a node-classification graph; data.dataset = \"graph-families\" is a graph-classification task"
        )));
    }
    if mode == "hpo" {
        check(&cfg.hpo)?;
    }
    Ok(())
}

/// The summary lines of an hpo report (`None` for other reports).
pub fn summary(o: &Outcome) -> Option<Vec<String>> {
    let r = &o.report;
    r.metrics.get("rounds_used")?;
    let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    let line = |name: &str, m: &BTreeMap<String, f64>, cfg: Option<&serde_json::Value>| {
        format!(
            "{name:>9}: test {:.4} ± {:.4} (val {:.4}); {:.0} rounds = {:.0}% of the grid's {:.0}{}",
            get(m, "best_test_accuracy"),
            get(m, "best_test_accuracy_std"),
            get(m, "best_val_accuracy"),
            get(m, "rounds_used"),
            100.0 * get(m, "rounds_fraction_of_grid"),
            get(m, "grid_rounds"),
            cfg.map_or(String::new(), |c| format!("; best {c}")),
        )
    };
    let method = r
        .details
        .get("method")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("hpo");
    let mut lines = vec![
        format!("{}: federated HPO", r.dataset),
        line(
            method,
            &r.metrics,
            r.details.get(format!("{method}_best_config")),
        ),
    ];
    for (k, m) in &r.baselines {
        lines.push(line(k, m, r.details.get(format!("{k}_best_config"))));
    }
    Some(lines)
}

/// Checks that need the configuration as a whole (before any work).
pub fn check(h: &HpoSection) -> Result<(), FedGraphError> {
    if h.min_rounds > h.max_rounds {
        return Err(FedGraphError::Usage(format!(
            "hpo.min_rounds = {} is more than hpo.max_rounds = {}",
            h.min_rounds, h.max_rounds
        )));
    }
    Ok(())
}

/// `ferrolab fedgraph hpo`: every method of `hpo.methods` on every seed.
pub fn run(
    g: &GraphSet,
    cfg: &Checked<FedGraphConfig>,
    ctx: &mut RunContext,
) -> SysResult<Outcome> {
    let t0 = Instant::now();
    let h = &cfg.hpo;
    check(h)?;
    let zoo = super::experiment::zoo_config(cfg, g.features.num_features(), g.classes)?;
    let space = search_space(h);
    let grid_rounds = space.len() * h.max_rounds;
    eprintln!(
        "{}: hpo over {} configurations (lr {:?} x steps {:?} x dropout {:?}), rounds {}..{} (eta {}), {} seeds; methods {:?}",
        g.name,
        space.len(),
        h.lrs,
        h.local_steps,
        h.dropouts,
        h.min_rounds,
        h.max_rounds,
        h.eta,
        h.seeds,
        h.methods
    );
    let mut per: BTreeMap<String, Vec<HpoResult>> = BTreeMap::new();
    for s in 0..h.seeds {
        let seed = ferrolab_core::seed::derive(ctx.seed(), &format!("seed{s}"));
        let setup = SeedSetup::draw(
            g,
            &cfg.data,
            cfg.fed.clients,
            ferrolab_core::seed::derive(seed, "node_split"),
            ferrolab_core::seed::derive(seed, "client_split"),
        )?;
        let results = if cfg.fed.runtime == "nats" {
            search_over_nats(cfg, g, &setup, &zoo, seed, s, ctx)?
        } else {
            let cx = SeedCtx {
                g,
                setup: &setup,
                zoo: &zoo,
                weight_decay: cfg.fed.weight_decay,
                seed,
                workers: ctx.threads(),
                trainer: &InProcess,
            };
            methods_on(&cx, h, s, grid_rounds)?
        };
        for (m, r) in h.methods.iter().zip(results) {
            ctx.log_metrics(&json!({
                "method": m, "seed": s, "best_config": r.best.json(),
                "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                "rounds_used": r.rounds_used, "seconds": r.seconds,
            }))?;
            per.entry(m.clone()).or_default().push(r);
        }
    }
    // Each seed's job file went with its run; the folder goes too once empty.
    let _ = std::fs::remove_dir(ctx.run_dir().join("fabric"));
    let mut report = Report::new("fedgraph", &g.name, ctx.seed());
    let mut details = serde_json::Map::new();
    let mut curves = Vec::new();
    for (i, m) in h.methods.iter().enumerate() {
        let rs = per.get(m).map(Vec::as_slice).unwrap_or_default();
        let block = method_metrics(rs, grid_rounds);
        let best = mode_config(rs);
        if i == 0 {
            report.metrics = block;
            details.insert("best_config".into(), best.map_or(json!(null), |b| b.json()));
            details.insert("method".into(), json!(m));
        } else {
            report.baselines.insert(m.clone(), block);
        }
        details.insert(
            format!("{m}_per_seed"),
            json!(
                rs.iter()
                    .map(|r| json!({
                        "best_config": r.best.json(), "val_accuracy": r.val_accuracy,
                        "test_accuracy": r.test_accuracy, "rounds_used": r.rounds_used,
                        "local_steps_used": r.local_steps_used,
                        "trials": if m == "fedex" { json!(null) } else { json!(r.trials) },
                        "theta": if r.theta.is_empty() { json!(null) } else { json!(r.theta) },
                        "mixed_accuracy": r.mixed_accuracy.map(|(v, t)| json!({"val_accuracy": v, "test_accuracy": t})),
                    }))
                    .collect::<Vec<_>>()
            ),
        );
        details.insert(
            format!("{m}_best_config"),
            best.map_or(json!(null), |b| b.json()),
        );
        report
            .timings
            .insert(format!("{m}_seconds"), rs.iter().map(|r| r.seconds).sum());
        if let Some(r0) = rs.first() {
            curves.push(Curve {
                label: format!("{m} seed 0 (best trial)"),
                y_name: "val_accuracy".into(),
                points: r0.curve.iter().map(|&(x, v, _)| (x as f64, v)).collect(),
            });
        }
    }
    details.insert(
        "space".into(),
        json!(space.iter().map(LocalHp::json).collect::<Vec<_>>()),
    );
    details.insert("grid_rounds".into(), json!(grid_rounds));
    details.insert("runtime".into(), json!(cfg.fed.runtime));
    details.insert(
        "selection".into(),
        json!("configurations ranked by best validation accuracy so far; test accuracy at that round; best_config = the configuration most seeds chose (FedEx: the mode of its final θ, retrained alone for max_rounds; its accuracies are that refit's, its rounds_used includes the refit, and mixed_val/test_accuracy are the mixed-configuration FedEx model's)"),
    );
    report.details = serde_json::Value::Object(details);
    report
        .timings
        .insert("total_seconds".into(), t0.elapsed().as_secs_f64());
    report.notes.push(format!(
        "budget unit: one federated round of all {} clients; the full grid costs {grid_rounds} rounds ({} configurations x {} rounds)",
        cfg.fed.clients,
        space.len(),
        h.max_rounds
    ));
    Ok(Outcome {
        report,
        curves,
        paper: Vec::new(),
    })
}

/// Every method of `h.methods` on one seed, in order, each reported on stderr as it ends.
fn methods_on(
    cx: &SeedCtx<'_>,
    h: &HpoSection,
    s: usize,
    grid_rounds: usize,
) -> Result<Vec<HpoResult>, FedGraphError> {
    let mut out = Vec::with_capacity(h.methods.len());
    for m in &h.methods {
        let r = run_method(m, cx, h)?;
        eprintln!(
            "  {m:>9} seed {s}: best {:?}; val {:.4} test {:.4}; {} rounds ({:.0}% of the grid's {grid_rounds}); {:.1} s",
            r.best,
            r.val_accuracy,
            r.test_accuracy,
            r.rounds_used,
            100.0 * r.rounds_used as f64 / grid_rounds.max(1) as f64,
            r.seconds
        );
        out.push(r);
    }
    Ok(out)
}

/// One seed's search with its clients as `ferrolab fed client --system fedgraph` processes over
/// NATS (`fed.runtime = "nats"`): one job per seed, whose clients answer every trial's rounds.
#[cfg(feature = "nats")]
#[allow(clippy::too_many_arguments)]
fn search_over_nats(
    cfg: &FedGraphConfig,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ZooConfig,
    seed: u64,
    s: usize,
    ctx: &mut RunContext,
) -> Result<Vec<HpoResult>, FedGraphError> {
    use super::multiproc;
    use crate::fabric::ClientId;
    let (url, exe, dir, job) = multiproc::seed_job(cfg, ctx, s)?;
    let clients: Vec<ClientId> = (0..setup.clients.num_clients() as ClientId).collect();
    multiproc::run_job_with(cfg, &job, &url, &dir, &exe, |fabric, command| {
        let cx = SeedCtx {
            g,
            setup,
            zoo,
            weight_decay: cfg.fed.weight_decay,
            seed,
            workers: 1,
            trainer: &InProcess,
        };
        search_on(cfg, &cx, s, fabric, &clients, command)
    })
}

/// The server of one seed's search over `fabric` (a NATS fabric connected as the server):
/// every method of `hpo.methods` on `cx`'s seed `s`, its clients' training done by the
/// client processes `command(k)` starts for `spawn` (none: started by hand, `ferrolab fed
/// client --system fedgraph` on the same job file and prefix). `cx.trainer` is replaced by
/// the fabric's. Used by `ferrolab fedgraph hpo --set fed.runtime=nats` and by `ferrolab fed
/// server --system fedgraph` on a job of `task.mode = "hpo"`.
#[cfg(feature = "nats")]
pub fn search_on(
    cfg: &FedGraphConfig,
    cx: &SeedCtx<'_>,
    s: usize,
    fabric: std::sync::Arc<dyn crate::fabric::Fabric>,
    spawn: &[crate::fabric::ClientId],
    command: impl FnMut(crate::fabric::ClientId) -> std::process::Command,
) -> Result<Vec<HpoResult>, FedGraphError> {
    let grid_rounds = search_space(&cfg.hpo).len() * cfg.hpo.max_rounds;
    let clients = cx.setup.clients.num_clients();
    super::multiproc::serve_search(cfg, fabric, spawn, clients, s, command, |trainer| {
        let cx = SeedCtx {
            trainer,
            workers: 1,
            ..*cx
        };
        methods_on(&cx, &cfg.hpo, s, grid_rounds)
    })
}

#[cfg(not(feature = "nats"))]
#[allow(clippy::too_many_arguments)]
fn search_over_nats(
    _: &FedGraphConfig,
    _: &GraphSet,
    _: &SeedSetup,
    _: &ZooConfig,
    _: u64,
    _: usize,
    _: &mut RunContext,
) -> Result<Vec<HpoResult>, FedGraphError> {
    Err(FedGraphError::Usage(
        "fed.runtime = nats: this build has no NATS fabric (rebuild with the `nats` feature)"
            .into(),
    ))
}

/// The report block of one method (shared keys for every method).
fn method_metrics(rs: &[HpoResult], grid_rounds: usize) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let (v, vs) = mean_std(&rs.iter().map(|r| r.val_accuracy).collect::<Vec<_>>());
    let (t, ts) = mean_std(&rs.iter().map(|r| r.test_accuracy).collect::<Vec<_>>());
    let (ru, rus) = mean_std(&rs.iter().map(|r| r.rounds_used as f64).collect::<Vec<_>>());
    let (su, sus) = mean_std(
        &rs.iter()
            .map(|r| r.local_steps_used as f64)
            .collect::<Vec<_>>(),
    );
    m.insert("best_val_accuracy".into(), v);
    m.insert("best_val_accuracy_std".into(), vs);
    m.insert("best_test_accuracy".into(), t);
    m.insert("best_test_accuracy_std".into(), ts);
    m.insert("rounds_used".into(), ru);
    m.insert("rounds_used_std".into(), rus);
    m.insert("local_steps_used".into(), su);
    m.insert("local_steps_used_std".into(), sus);
    let mixed: Vec<(f64, f64)> = rs.iter().filter_map(|r| r.mixed_accuracy).collect();
    if !mixed.is_empty() {
        let (v, vs) = mean_std(&mixed.iter().map(|x| x.0).collect::<Vec<_>>());
        let (t, ts) = mean_std(&mixed.iter().map(|x| x.1).collect::<Vec<_>>());
        m.insert("mixed_val_accuracy".into(), v);
        m.insert("mixed_val_accuracy_std".into(), vs);
        m.insert("mixed_test_accuracy".into(), t);
        m.insert("mixed_test_accuracy_std".into(), ts);
    }
    m.insert("grid_rounds".into(), grid_rounds as f64);
    m.insert(
        "rounds_fraction_of_grid".into(),
        ru / grid_rounds.max(1) as f64,
    );
    m
}

/// The configuration most seeds chose (ties: the earliest seed's).
fn mode_config(rs: &[HpoResult]) -> Option<LocalHp> {
    let mut best: Option<(usize, LocalHp)> = None;
    for r in rs {
        let n = rs.iter().filter(|x| x.best == r.best).count();
        if best.is_none_or(|(bn, _)| n > bn) {
            best = Some((n, r.best));
        }
    }
    best.map(|(_, b)| b)
}

/// The `hpo` and `privacy` sub-commands: `ferrolab fedgraph <mode> [RUN OPTIONS]` runs this
/// program again as `ferrolab fedgraph [RUN OPTIONS] --set task.mode=<mode>`, so that a
/// sub-command has every option of a run (presets, `--out`, `--resume`, the resource guard)
/// without a second runner (as `ferrolab layer-importance dataset` does).
pub fn subcommands() -> Vec<SubCommand> {
    vec![
        SubCommand {
            command: hpo_command,
            run: run_hpo_cmd,
        },
        SubCommand {
            command: privacy_command,
            run: run_privacy_cmd,
        },
    ]
}

fn mode_command(name: &'static str, about: &'static str) -> clap::Command {
    ferrolab_core::system::setting_command(name, about, "fedgraph")
}

fn hpo_command() -> clap::Command {
    mode_command(
        "hpo",
        "Federated hyper-parameter optimisation (successive halving, Hyperband, FedEx, grid) over FedAvg; same as --set task.mode=hpo (preset `hpo`: quick)",
    )
}

fn privacy_command() -> clap::Command {
    mode_command(
        "privacy",
        "Membership-inference and property attacks on FedAvg, and DP on client updates with an RDP accountant; same as --set task.mode=privacy (preset `privacy`: quick)",
    )
}

fn run_hpo_cmd(m: &clap::ArgMatches) -> SysResult<()> {
    run_mode("hpo", m)
}

fn run_privacy_cmd(m: &clap::ArgMatches) -> SysResult<()> {
    run_mode("privacy", m)
}

/// The command line of the re-run: the process's arguments without the sub-command's name,
/// plus `--set task.mode=<mode>`. `argv` is the process's arguments, `rest` what followed the
/// sub-command.
pub fn mode_argv(
    argv: &[std::ffi::OsString],
    rest: &[String],
    mode: &str,
) -> Option<Vec<std::ffi::OsString>> {
    ferrolab_core::system::setting_argv(argv, rest, mode, "task.mode")
}

fn run_mode(mode: &str, m: &clap::ArgMatches) -> SysResult<()> {
    ferrolab_core::system::run_setting_command("fedgraph", mode, "task.mode", m)
}
