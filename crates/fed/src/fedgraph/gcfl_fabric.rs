//! GCFL+ and its FedAvg baseline with each graph-classification client behind a
//! [`Fabric`](crate::fabric::Fabric): a client thread of the in-process fabric, or a
//! `ferrolab fed client --system fedgraph` process over NATS (`fed.runtime = "nats"`).
//!
//! The protocol is the one [`run_clustered`](super::gcfl::run_clustered) simulates, now with
//! real messages. The server holds only each client's shared layers (its cluster's model);
//! a [`FamilyClient`] holds the rest of its network, its Adam state, its batches and its
//! random stream, exactly as the in-process learner does, so a run through a fabric repeats
//! the in-process one bit for bit. Per round the server sends each client a fit task (the
//! shared layers, `lr`, `local_steps`) and gets back the trained shared layers with the
//! pass's loss and the message-passing gradient norm (GCFL+'s sequence); after clustering
//! and aggregation it sends an evaluate task (the new shared layers) and gets the client's
//! validation accuracy and loss and test accuracy on its own held-out graphs, which never
//! leave it.

use std::time::Duration;

use ferrolab_core::backend::train_device;
use ferrolab_core::burn::optim::ModuleOptimizer;
use ferrolab_graph::zoo::ZooConfig;
use ferrolab_graph::zoo::train::OptimKind;
use rand::rngs::StdRng;
use serde_json::json;

use super::FedGraphError;
use super::client::config_f64;
use super::families::ClientGraphs;
use super::gcfl::{
    ClientData, Eval, GcflSection, GraphNet, Learners, Trained, client_data_of, client_net,
    client_rng, diverged_loss, eval_pair, flat, load_flat, local_train,
};
use crate::client::{Client, ClientCtx, ClientError, EvaluateRes, FitIns, FitRes};
use crate::fabric::{ClientId, Fabric, Metrics, Reply, Task, TaskKind};
use crate::params::Params;

/// The name of the one tensor a GCFL task and its fit reply carry: the shared layers, flat.
pub const SHARED: &str = "shared";

/// One graph-classification client: its graphs, its whole network and its optimiser.
pub struct FamilyClient {
    data: ClientData,
    net: Option<GraphNet>,
    optim: ModuleOptimizer,
    rng: StdRng,
    dropout: f64,
}

impl std::fmt::Debug for FamilyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FamilyClient({} training graphs, {} batches)",
            self.data.n_train,
            self.data.train.len()
        )
    }
}

impl FamilyClient {
    /// Client `c` of a run of `seed` over `data` (every client's graphs, as the run draws
    /// them; only client `c`'s are kept), Adam with `weight_decay`.
    pub fn new(
        data: &[ClientGraphs],
        c: usize,
        zoo: &ZooConfig,
        g: &GcflSection,
        weight_decay: f64,
        seed: u64,
    ) -> Result<Self, FedGraphError> {
        if c >= data.len() {
            return Err(FedGraphError::Usage(format!(
                "client id {c}: the run has clients 0..{}",
                data.len()
            )));
        }
        Ok(FamilyClient {
            data: client_data_of(data, c, g, seed, &train_device())?,
            net: Some(client_net(data, c, zoo, g, seed)?),
            optim: OptimKind::Adam { weight_decay }.init(),
            rng: client_rng(seed, c),
            dropout: zoo.dropout,
        })
    }

    /// The network with the task's shared layers loaded over this client's other layers.
    fn load(&mut self, params: &Params) -> Result<GraphNet, ClientError> {
        let prefix = params
            .get(SHARED)
            .ok_or_else(|| ClientError(format!("task carries no `{SHARED}` tensor")))?;
        let net = self
            .net
            .take()
            .ok_or_else(|| ClientError("client model lost by an earlier failure".into()))?;
        let mut w = flat(&net);
        if prefix.data.len() > w.len() || prefix.shape != [prefix.data.len()] {
            let n = w.len();
            self.net = Some(net);
            return Err(ClientError(format!(
                "task's `{SHARED}` has shape {:?}: this client's network has {n} parameters",
                prefix.shape
            )));
        }
        w[..prefix.data.len()].copy_from_slice(&prefix.data);
        load_flat(net, &w).map_err(|e| ClientError(format!("shared layers: {e}")))
    }
}

impl Client for FamilyClient {
    fn fit(&mut self, ins: &FitIns, _ctx: &ClientCtx<'_>) -> Result<FitRes, ClientError> {
        let lr = config_f64(&ins.config, "lr")?;
        let steps = config_f64(&ins.config, "local_steps")?;
        if !(lr > 0.0 && lr.is_finite() && steps >= 1.0 && steps.fract() == 0.0) {
            return Err(ClientError(format!(
                "task config lr = {lr}, local_steps = {steps}: need lr > 0 and a whole number of steps >= 1"
            )));
        }
        let held = ins.params.get(SHARED).map_or(0, |t| t.data.len());
        let net = self.load(&ins.params)?;
        let batches: Vec<_> = self.data.train.iter().collect();
        let (net, loss, grad_norm) = local_train(
            net,
            &batches,
            &mut self.optim,
            lr,
            steps as usize,
            self.dropout,
            &mut self.rng,
        );
        let w = flat(&net);
        self.net = Some(net);
        let loss = diverged_loss(loss, &w);
        let mut metrics = Metrics::new();
        metrics.insert("train_loss".into(), loss);
        metrics.insert("grad_norm".into(), grad_norm);
        // A diverged pass ends the run at the server; its parameters, which no fabric can
        // carry, are not sent.
        let params = if loss.is_finite() {
            Params::flat(SHARED, w[..held].to_vec())
        } else {
            Params::new()
        };
        Ok(FitRes {
            params,
            n_examples: self.data.n_train as u64,
            metrics,
        })
    }

    fn evaluate(&mut self, ins: &FitIns, _ctx: &ClientCtx<'_>) -> Result<EvaluateRes, ClientError> {
        let net = self.load(&ins.params)?;
        let ((a, loss), (t, _)) = eval_pair(&net, &self.data);
        self.net = Some(net);
        let mut metrics = Metrics::new();
        metrics.insert("val_accuracy".into(), a);
        metrics.insert("test_accuracy".into(), t);
        Ok(EvaluateRes {
            loss,
            n_examples: self.data.val.len() as u64,
            metrics,
        })
    }
}

/// The learners of a GCFL+ / FedAvg run as `clients` clients behind `fabric`: round `r`'s
/// fit and evaluate tasks go out as fabric round `r` (the initial evaluation as round 0); a
/// reply not back within `deadline`, of the wrong layout or lacking its figures is left out
/// (named on stderr and counted).
pub struct FabricLearners<'a> {
    pub fabric: &'a dyn Fabric,
    pub deadline: Duration,
    clients: usize,
    lr: f64,
    local_steps: usize,
    left_out: usize,
}

impl std::fmt::Debug for FabricLearners<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FabricLearners({}, {} clients)",
            self.fabric.name(),
            self.clients
        )
    }
}

impl<'a> FabricLearners<'a> {
    pub fn new(
        fabric: &'a dyn Fabric,
        deadline: Duration,
        clients: usize,
        lr: f64,
        local_steps: usize,
    ) -> Self {
        FabricLearners {
            fabric,
            deadline,
            clients,
            lr,
            local_steps,
            left_out: 0,
        }
    }

    /// Replies (fits and evaluations) left out so far.
    pub fn left_out(&self) -> usize {
        self.left_out
    }

    fn ids(&self) -> Vec<ClientId> {
        (0..self.clients as ClientId).collect()
    }

    /// Sends every client its task of `kind` for `round` and collects the replies that pass
    /// `validate`, by client.
    fn exchange(
        &mut self,
        round: usize,
        kind: TaskKind,
        prefixes: &[Vec<f32>],
        validate: &(dyn Fn(&Reply) -> Result<(), String> + Sync),
    ) -> Result<Vec<Option<Reply>>, FedGraphError> {
        if prefixes.len() != self.clients {
            return Err(FedGraphError::Usage(format!(
                "{} models for {} client processes (the global baseline is not federated)",
                prefixes.len(),
                self.clients
            )));
        }
        let mut config = crate::fabric::Config::new();
        if kind == TaskKind::Fit {
            config.insert("lr".into(), json!(self.lr));
            config.insert("local_steps".into(), json!(self.local_steps));
        }
        for (c, p) in prefixes.iter().enumerate() {
            self.fabric.send_task_owned(
                c as ClientId,
                Task {
                    round: round as u64,
                    kind,
                    config: config.clone(),
                    params: Params::flat(SHARED, p.clone()),
                },
            )?;
        }
        let got = self.fabric.collect_replies(
            round as u64,
            kind,
            &self.ids(),
            self.deadline,
            validate,
        )?;
        self.left_out += got.failures.len();
        let what = if kind == TaskKind::Fit {
            "update"
        } else {
            "evaluation"
        };
        for f in &got.failures {
            eprintln!(
                "fedgraph gcfl: round {round}: client {}'s {what} left out: {}",
                f.client, f.reason
            );
        }
        let mut out: Vec<Option<Reply>> = vec![None; self.clients];
        for r in got.replies {
            let c = r.id.client as usize;
            if c < out.len() {
                out[c] = Some(r);
            }
        }
        Ok(out)
    }
}

/// A reply's metric `key`, or why it is refused.
fn lacks(rep: &Reply, keys: &[&str]) -> Result<(), String> {
    match keys.iter().find(|k| !rep.metrics.contains_key(**k)) {
        Some(k) => Err(format!(
            "reply lacks `{k}` (a client of another build or system?)"
        )),
        None => Ok(()),
    }
}

impl Learners for FabricLearners<'_> {
    fn train(
        &mut self,
        round: usize,
        prefixes: &[Vec<f32>],
    ) -> Result<Vec<Option<Trained>>, FedGraphError> {
        let held = prefixes.first().map_or(0, Vec::len);
        // Layout and figures only: a diverged pass (non-finite loss, no parameters) is the
        // run's divergence, which the server records as the in-process run does (it stops
        // there).
        let validate = |rep: &Reply| {
            lacks(rep, &["train_loss", "grad_norm"])?;
            let diverged = rep
                .metrics
                .get("train_loss")
                .is_some_and(|l| !l.is_finite());
            if diverged && rep.params.is_empty() {
                return Ok(());
            }
            match rep.params.get(SHARED) {
                Some(t) if t.data.len() == held && rep.params.len() == 1 => Ok(()),
                Some(t) => Err(format!(
                    "update has {} values, the shared layers {held}",
                    t.data.len()
                )),
                None => Err(format!("update carries no `{SHARED}` tensor")),
            }
        };
        let got = self.exchange(round, TaskKind::Fit, prefixes, &validate)?;
        Ok(got
            .into_iter()
            .map(|r| {
                r.map(|mut r| Trained {
                    prefix: r.params.remove(SHARED).map(|t| t.data).unwrap_or_default(),
                    loss: r.metrics.get("train_loss").copied().unwrap_or(f64::NAN),
                    grad_norm: r.metrics.get("grad_norm").copied().unwrap_or(f64::NAN),
                })
            })
            .collect())
    }

    fn evaluate(
        &mut self,
        round: usize,
        prefixes: &[Vec<f32>],
    ) -> Result<Vec<Option<Eval>>, FedGraphError> {
        let validate = |rep: &Reply| lacks(rep, &["val_accuracy", "test_accuracy", "loss"]);
        let got = self.exchange(round, TaskKind::Evaluate, prefixes, &validate)?;
        let m = |r: &Reply, k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
        Ok(got
            .into_iter()
            .map(|r| r.map(|r| (m(&r, "val_accuracy"), m(&r, "loss"), m(&r, "test_accuracy"))))
            .collect())
    }
}
