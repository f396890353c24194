//! Flower-style clients: `fit(params, config) -> (update, n_examples, metrics)` and `evaluate`,
//! plus [`serve`], the loop that answers a server's tasks over any [`Fabric`].
//!
//! A client owns one or more devices. Semi-decentralised algorithms need D2D mixing inside
//! `fit`, so a client receives a [`ClientCtx`] through which it reaches the fabric's
//! [`Fabric::exchange`]; clients of purely server-based algorithms simply ignore it.

use crate::fabric::{ClientId, Config, Fabric, FabricError, Metrics, MsgId, Reply, TaskKind};
use crate::params::Params;
use std::time::Duration;

/// What the server sends to `fit` and `evaluate`.
#[derive(Debug, Clone, PartialEq)]
pub struct FitIns {
    /// Global round.
    pub round: u64,
    /// Model (or model-shaped state) to start from.
    pub params: Params,
    /// Hyper-parameters and per-round instructions.
    pub config: Config,
}

/// What `fit` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct FitRes {
    /// The update: new parameters, a delta, or several named groups, as the strategy expects.
    pub params: Params,
    /// Examples trained on (aggregation weight for weighted strategies).
    pub n_examples: u64,
    /// Loss, timings, …
    pub metrics: Metrics,
}

/// What `evaluate` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateRes {
    /// Mean loss over the examples.
    pub loss: f64,
    /// Examples evaluated.
    pub n_examples: u64,
    /// Accuracy and others.
    pub metrics: Metrics,
}

/// A client's failure to complete a task (reported to the server, which counts it in `failures`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

impl From<FabricError> for ClientError {
    fn from(e: FabricError) -> Self {
        ClientError(e.to_string())
    }
}

/// What a client sees of the runtime while it works: its id, the round, the fabric for D2D.
pub struct ClientCtx<'a> {
    /// This client.
    pub client: ClientId,
    /// Global round of the task.
    pub round: u64,
    /// The transport, for [`Fabric::exchange`].
    pub fabric: &'a dyn Fabric,
}

impl std::fmt::Debug for ClientCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientCtx(client {}, round {}, {})",
            self.client,
            self.round,
            self.fabric.name()
        )
    }
}

/// A federated client.
pub trait Client: Send {
    /// Trains from `ins.params` under `ins.config`.
    fn fit(&mut self, ins: &FitIns, ctx: &ClientCtx<'_>) -> Result<FitRes, ClientError>;
    /// Evaluates `ins.params` on the client's local data.
    fn evaluate(&mut self, ins: &FitIns, ctx: &ClientCtx<'_>) -> Result<EvaluateRes, ClientError>;
}

/// Answers tasks for `id` until a `Shutdown` task arrives, or until no task came for `idle`
/// (the server is gone). A task that fails is answered with `error` set, so the server sees a
/// failure at once instead of waiting for its deadline. Returns the number of tasks served.
pub fn serve(
    client: &mut dyn Client,
    id: ClientId,
    fabric: &dyn Fabric,
    idle: Duration,
) -> Result<u64, FabricError> {
    let mut served = 0u64;
    loop {
        let Some(task) = fabric.recv_task(id, idle)? else {
            return Err(FabricError::Timeout {
                what: format!("a task for client {id}"),
                after: idle,
            });
        };
        let ins = FitIns {
            round: task.round,
            params: task.params,
            config: task.config,
        };
        let ctx = ClientCtx {
            client: id,
            round: task.round,
            fabric,
        };
        let msg = MsgId {
            round: task.round,
            client: id,
            kind: task.kind,
            attempt: 0,
        };
        let reply = match task.kind {
            TaskKind::Shutdown => return Ok(served),
            TaskKind::Fit => match client.fit(&ins, &ctx) {
                Ok(r) => Reply {
                    id: msg,
                    kind: TaskKind::Fit,
                    params: r.params,
                    n_examples: r.n_examples,
                    metrics: r.metrics,
                    error: None,
                },
                Err(e) => error_reply(msg, TaskKind::Fit, e),
            },
            TaskKind::Evaluate => match client.evaluate(&ins, &ctx) {
                Ok(r) => {
                    let mut metrics = r.metrics;
                    metrics.insert("loss".into(), r.loss);
                    Reply {
                        id: msg,
                        kind: TaskKind::Evaluate,
                        params: Params::new(),
                        n_examples: r.n_examples,
                        metrics,
                        error: None,
                    }
                }
                Err(e) => error_reply(msg, TaskKind::Evaluate, e),
            },
        };
        fabric.send_reply_owned(reply)?;
        served += 1;
    }
}

/// Tells each of `clients` that the run is over: [`serve`] returns on it. A client already
/// gone cannot be told; its loop ends on its own after its idle time.
pub fn shutdown(fabric: &dyn Fabric, clients: &[ClientId]) {
    for &id in clients {
        let _ = fabric.send_task(
            id,
            &crate::fabric::Task {
                round: u64::MAX,
                kind: TaskKind::Shutdown,
                config: Config::new(),
                params: Params::new(),
            },
        );
    }
}

fn error_reply(id: MsgId, kind: TaskKind, e: ClientError) -> Reply {
    Reply {
        id,
        kind,
        params: Params::new(),
        n_examples: 0,
        metrics: Metrics::new(),
        error: Some(e.0),
    }
}
