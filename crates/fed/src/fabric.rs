//! The transport between a federated server, its clients and their devices: one trait, two
//! implementations (the in-process [`InProcFabric`](crate::inproc::InProcFabric) and the NATS
//! fabric behind the `nats` feature), one conformance suite ([`crate::conformance`]) both pass.
//!
//! The API is synchronous; the NATS implementation blocks on its own runtime inside each call,
//! so algorithms and clients are plain threads or processes and never see an executor.
//!
//! Four kinds of traffic, each with its own guarantee:
//! - **tasks** (server → one client): model tensors plus a small control payload, FIFO per client;
//! - **replies** (client → server): at-least-once, de-duplicated by [`MsgId`]; a collection has a
//!   deadline after which silent clients are reported as [`Failure`]s instead of blocking;
//! - **exchanges** (device ↔ device, D2D): an all-gather among a group of devices that may live
//!   on different clients, returned in device-id order;
//! - **state** (server's round state and checkpoints): a key-value store, last write wins,
//!   values replaced whole.

use crate::params::{Params, ParamsError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A client (one process or one thread that owns some devices).
pub type ClientId = u32;
/// A device (one local model); D2D exchange is between devices.
pub type DeviceId = u32;
/// The control payload of a task: a small JSON map (sorted keys, so it encodes deterministically).
pub type Config = BTreeMap<String, serde_json::Value>;
/// Named scalar metrics of a reply.
pub type Metrics = BTreeMap<String, f64>;

/// Identity of a reply: a client's `attempt`-th send for `round`'s task of `kind`. Equal ids
/// are duplicates; a fit and an evaluation answered in the same round are two messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MsgId {
    /// Global round.
    pub round: u64,
    /// Sender.
    pub client: ClientId,
    /// Kind of the task answered (always the reply's own [`Reply::kind`]).
    pub kind: TaskKind,
    /// Resend counter of the client; a retry of the same result keeps the same attempt.
    pub attempt: u32,
}

/// What a task asks a client to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskKind {
    /// Train from the given parameters (Flower's `fit`).
    Fit,
    /// Evaluate the given parameters.
    Evaluate,
    /// Stop: the run is over.
    Shutdown,
}

/// Server → client message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Global round this task belongs to.
    pub round: u64,
    /// Fit, evaluate or shut down.
    pub kind: TaskKind,
    /// Control payload (hyper-parameters, which devices are sampled, …).
    pub config: Config,
    /// Model tensors (possibly several named groups, e.g. `x_bar.*` and `y_c.*`).
    pub params: Params,
}

/// Client → server message: the outcome of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// De-duplication key.
    pub id: MsgId,
    /// Kind of the task answered.
    pub kind: TaskKind,
    /// The update (parameters, deltas, …); empty for evaluations.
    pub params: Params,
    /// Examples the result was computed on (aggregation weights).
    pub n_examples: u64,
    /// Loss, accuracy, timings, …
    pub metrics: Metrics,
    /// Set when the client failed the task; the server counts it as a failure.
    pub error: Option<String>,
}

/// A client that gave no usable reply to a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Who.
    pub client: ClientId,
    /// Why: deadline passed, reply rejected (and by what), client reported an error.
    pub reason: String,
}

/// Result of [`Fabric::collect_replies`]: both lists sorted by client id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// One accepted reply per client.
    pub replies: Vec<Reply>,
    /// Expected clients without an accepted reply.
    pub failures: Vec<Failure>,
}

/// Identifies one D2D exchange: the `step`-th mixing of `group` (a subnet) in `round`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExchangeKey {
    /// Global round.
    pub round: u64,
    /// Step within the round (several exchanges per local step are keyed by distinct steps).
    pub step: u32,
    /// Subnet (or any group of devices that mix together).
    pub group: u32,
}

/// Validation applied to each reply before it is accepted (shape, finiteness, …).
pub type Validator<'a> = &'a (dyn Fn(&Reply) -> Result<(), String> + Sync);

/// What can go wrong in the transport itself.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// Nothing arrived in time where the caller needed it (an exchange partner was silent).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The connection to the fabric is gone (server down, fabric closed).
    #[error("fabric disconnected: {0}")]
    Disconnected(String),
    /// A message broke the protocol (wrong group, duplicate device in an exchange, …).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Tensors could not be decoded.
    #[error(transparent)]
    Params(#[from] ParamsError),
}

/// The transport trait. Every method is safe to call from many threads at once.
///
/// Implementations must pass every function of [`crate::conformance`]; the guarantees below
/// are what those functions check.
pub trait Fabric: Send + Sync {
    /// Short name for logs and reports (`inproc`, `nats`).
    fn name(&self) -> &str;

    /// Queues `task` for `client`. Tasks to one client are received in the order they were
    /// sent; a task sent before the client first listens is still delivered. Parameters arrive
    /// bit-identical.
    fn send_task(&self, client: ClientId, task: &Task) -> Result<(), FabricError>;

    /// [`Fabric::send_task`] for a task the caller has no further use for, with the same
    /// guarantees: a fabric that keeps tasks in memory moves it instead of copying its
    /// tensors (the default sends a reference, as a serialising fabric needs nothing more).
    fn send_task_owned(&self, client: ClientId, task: Task) -> Result<(), FabricError> {
        self.send_task(client, &task)
    }

    /// The next task for `client`, or `None` when none arrived within `timeout`. Each task is
    /// received once.
    fn recv_task(&self, client: ClientId, timeout: Duration) -> Result<Option<Task>, FabricError>;

    /// Sends a reply with at-least-once delivery: once this returns `Ok`, the reply survives
    /// until a matching collection sees it. Sending the same [`MsgId`] again (a retry after a
    /// lost acknowledgement) is allowed and never yields a second reply.
    fn send_reply(&self, reply: &Reply) -> Result<(), FabricError>;

    /// [`Fabric::send_reply`] for a reply the caller has no further use for (moved, not
    /// copied, by a fabric that keeps replies in memory), with the same guarantees.
    fn send_reply_owned(&self, reply: Reply) -> Result<(), FabricError> {
        self.send_reply(&reply)
    }

    /// Gathers replies of kind `kind` for `round` from `expected` clients.
    ///
    /// Returns as soon as every expected client has an accepted reply, and at the latest after
    /// `deadline`; clients still silent then are failures ("no reply within …"), never a hang.
    /// A reply is accepted when `validate` passes and it carries no `error`; a rejected reply
    /// makes its client a failure at once, with the reason, unless that client already had one
    /// accepted. Per client the first accepted reply counts, duplicates (same id) and later
    /// attempts are dropped. Replies for earlier rounds are discarded, replies from clients not
    /// in `expected` ignored. Both output lists are sorted by client id, so the result does not
    /// depend on arrival order.
    fn collect_replies(
        &self,
        round: u64,
        kind: TaskKind,
        expected: &[ClientId],
        deadline: Duration,
        validate: Validator<'_>,
    ) -> Result<Collected, FabricError>;

    /// D2D all-gather: the caller contributes `outgoing` (its own devices' tensors, each device
    /// a member of `members`) to the exchange `key`, and receives every member's tensors, sorted
    /// by device id, once all members have contributed (possibly from other clients). Errors
    /// with [`FabricError::Timeout`] when some member is still missing after `timeout`, and with
    /// [`FabricError::Protocol`] when a device is not a member or contributes twice.
    fn exchange(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError>;

    /// [`Fabric::exchange`], except that a missing member whose client is known to be gone
    /// (over NATS: on the server's list of clients it hears no heartbeat from) is left out of
    /// the result instead of failing the exchange. Members not known gone are waited for as
    /// `exchange` waits. The result, sorted by device id, holds the caller's own contributions
    /// and every other member's that arrived, so a caller that mixes can re-weight around the
    /// absent ones. A fabric that cannot lose a client returns what `exchange` returns.
    fn exchange_skipping_gone(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        self.exchange(key, members, outgoing, timeout)
    }

    /// Stores `value` under `key`, replacing any previous value whole (a reader never sees a
    /// mix of two writes). Durable for as long as the fabric is (process lifetime in-process,
    /// the JetStream KV bucket over NATS). Values may exceed 1 MiB (a model checkpoint); an
    /// implementation whose store caps value sizes splits or redirects them itself.
    fn put_state(&self, key: &str, value: &[u8]) -> Result<(), FabricError>;

    /// The last value stored under `key`, or `None`.
    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, FabricError>;

    /// The run is over: remove what it left in the transport (over NATS, the server party
    /// deletes the run's streams, KV and object-store buckets). Called once by the server
    /// after every client has stopped; nothing may use the fabric afterwards. The in-process
    /// fabric has nothing outside the process to remove.
    fn end_run(&self) -> Result<(), FabricError> {
        Ok(())
    }

    /// Which client serves each device. Every process of a run derives the same assignment
    /// from its configuration; told it, an exchange knows a missing member's client before
    /// that device was ever heard from (so a device whose client died before its first
    /// exchange is not waited for once the client is known to be gone). A fabric that cannot
    /// lose a client (in-process) ignores it.
    fn set_owners(&self, owners: &[(DeviceId, ClientId)]) {
        let _ = owners;
    }

    /// Server side, once a run has ended: whether each of `clients` has taken every task sent
    /// to it (its `Shutdown` included) or is gone, so the run's streams can go without cutting
    /// off a client still reading. `false` when it cannot tell (the default): the caller then
    /// waits its whole grace.
    fn tasks_taken(&self, clients: &[ClientId]) -> bool {
        let _ = clients;
        false
    }
}

/// A validator that checks an update has the template's layout and finite values.
pub fn layout_validator(template: &Params) -> impl Fn(&Reply) -> Result<(), String> + Sync + '_ {
    move |r: &Reply| {
        if r.kind != TaskKind::Fit {
            return Ok(());
        }
        // A client whose update diverged sends this flag instead of values no wire carries.
        if r.params.is_empty() && r.metrics.get("diverged") == Some(&1.0) {
            return Err("the client's update diverged (non-finite values)".into());
        }
        template
            .check_same_layout(&r.params)
            .map_err(|e| e.to_string())?;
        r.params.check_finite().map_err(|e| e.to_string())
    }
}

/// Accepts every reply.
pub fn accept_all(_: &Reply) -> Result<(), String> {
    Ok(())
}
