//! The NATS fabric: the [`Fabric`] trait over a NATS server with JetStream (Debian's
//! `nats-server` 2.9 is enough: no API newer than 2.9 is used), through the official
//! `async-nats` client on a small tokio runtime that the synchronous trait methods block on.
//!
//! Layout under a run prefix `P` (a name shared by the server and its clients; see
//! `crates/fed/NATS.md` for the full table and the permissions that go with it):
//!
//! | traffic | where | guarantee |
//! |---|---|---|
//! | tasks | stream `FL_P_TASKS`, subject `fl.P.task.<client>`, one durable pull consumer per client | FIFO per client, received once (acked on receipt), kept while the client is away |
//! | replies | stream `FL_P_REPLIES`, subject `fl.P.reply.<round>.<kind>.<client>`, `Nats-Msg-Id` | at-least-once (a send returns after the server stored it), de-duplicated by id inside the stream's window and by the collector |
//! | D2D exchange | stream `FL_P_X`, subject `fl.P.x.<round>.<step>.<group>.<sender>.<device>` | all-gather, read back in device order |
//! | tensors | object store bucket `fl_P_<party>` (one per writer), safetensors | SHA-256 checked by the object store, layout and finiteness checked on decode |
//! | state | KV bucket `fl_P_state` (values over 512 KiB redirect to the object store) | last write wins, replaced whole |
//!
//! Messages on subjects carry only a small JSON envelope; tensors always travel as safetensors
//! objects, because core NATS messages are capped at 1 MiB. Every network wait is bounded: a
//! connection that stays down longer than `disconnect_grace` turns into
//! [`FabricError::Disconnected`], a silent client into a [`Failure`] at the collection's
//! deadline.

pub mod multiprocess;
pub mod perm;

use crate::fabric::{
    ClientId, Collected, Config, DeviceId, ExchangeKey, Fabric, FabricError, Failure, Metrics,
    MsgId, Reply, Task, TaskKind, Validator,
};
use crate::params::Params;
use async_nats::jetstream::{
    self, consumer, kv, message::PublishMessage, object_store, stream, stream::StorageType,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Values up to this size are stored in the KV bucket itself; larger ones go to the object store
/// (a KV value is one message, and messages are capped at 1 MiB).
const KV_INLINE_MAX: usize = 512 << 10;
/// Object store chunk: 512 KiB keeps each chunk message well below the 1 MiB cap while making a
/// 100 MiB model 200 acknowledged publishes instead of 800 at the default 128 KiB.
const CHUNK: usize = 512 << 10;
/// How long JetStream remembers message ids for de-duplication.
const DUP_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Poll step of the waiting loops (they re-check the connection this often).
const TICK: Duration = Duration::from_millis(250);
/// A client's heartbeat period.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The client id that ends a subject (`…alive.<k>`, `…reply.<r>.<kind>.<k>`).
fn last_client(subject: &str) -> Option<ClientId> {
    subject.rsplit('.').next()?.parse().ok()
}

/// The heartbeat silence after which a client is gone: the configured one, but never under
/// three heartbeat periods (a smaller one would give up on clients that are beating).
fn silence(opts: &NatsOptions) -> Duration {
    opts.silence.max(HEARTBEAT * 3)
}

/// Whether heartbeats reach the server now: some client beat within `silence`. Only then does
/// a client's silence say something about it (a server that hears nobody, e.g. every client on
/// credentials that predate the subject, waits for everyone as before heartbeats). Clients that
/// beat once and died long ago do not count.
fn beats_arrive(beats: &HashMap<ClientId, Instant>, silence: Duration) -> bool {
    beats.values().any(|t| t.elapsed() < silence)
}

/// KV key of the clients the server has found gone (a JSON list of ids): silent past the
/// heartbeat silence, or never heard from and past a whole deadline while others beat. It holds a `.`,
/// which [`kv_key`] never produces, so no state key can collide with it.
const GONE_KEY: &str = "gone.clients";

/// Who this fabric speaks for: its tensor objects go to that party's own bucket, and its
/// exchange messages carry that party's name in their subject, so per-user permissions can
/// confine each client to what it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The federated server (sends tasks, collects replies, owns the round state).
    Server,
    /// Client `k`.
    Client(ClientId),
}

impl Party {
    /// `s` or `c<k>`: the suffix of the party's bucket and user name.
    pub fn tag(self) -> String {
        match self {
            Party::Server => "s".to_string(),
            Party::Client(k) => format!("c{k}"),
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://[user:password@]host:port` (several comma-separated URLs are allowed).
    pub url: String,
    /// Run namespace shared by the server and its clients: `[A-Za-z0-9_-]{1,40}`.
    pub prefix: String,
    /// Identity of this process.
    pub party: Party,
    /// Limit on establishing the first connection (a refused or black-holed address fails
    /// within about this long instead of hanging).
    pub connect_timeout: Duration,
    /// Limit on one JetStream API call or acknowledged publish.
    pub request_timeout: Duration,
    /// How long a lost connection may stay lost before calls fail with `Disconnected`.
    pub disconnect_grace: Duration,
    /// Keep streams in memory instead of on the server's disk (benchmarks, throw-away runs).
    pub memory_storage: bool,
    /// PEM file of the CA that signed the NATS server's certificate (a private CA); TLS is
    /// then required. Default: `$FERROLAB_NATS_CA`.
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM certificate and key this party presents when the server verifies clients
    /// (`verify: true` in its `tls { }` block). Default: `$FERROLAB_NATS_CERT` and
    /// `$FERROLAB_NATS_KEY`.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// A client whose heartbeats (one a second on `fl.P.alive.<k>`, from its connection's own
    /// thread) stop for this long is gone: the server's collections stop waiting for it until
    /// it beats again. A client never heard from is waited for one whole deadline; after that,
    /// until it beats, only for three heartbeat periods per collection.
    pub silence: Duration,
}

/// `$name` as a path, when set and not empty.
fn env_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

impl NatsOptions {
    /// Defaults: 3 s connect timeout, 10 s requests, 10 s grace, 15 s heartbeat silence, file
    /// storage.
    pub fn new(url: &str, prefix: &str, party: Party) -> Self {
        Self {
            url: url.to_string(),
            prefix: prefix.to_string(),
            party,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            disconnect_grace: Duration::from_secs(10),
            memory_storage: false,
            // From the environment, as the URL is in the CLI: spawned servers and clients
            // inherit them, so every party of a run trusts the same CA.
            tls_ca: env_path("FERROLAB_NATS_CA"),
            tls_client: env_path("FERROLAB_NATS_CERT").zip(env_path("FERROLAB_NATS_KEY")),
            // Longer than `disconnect_grace`: a client riding out a short outage on its own
            // reconnects is not given up on.
            silence: Duration::from_secs(15),
        }
    }
}

/// Why a NATS fabric could not be set up. All of these are found before any work starts and
/// are the user's to fix (a wrong URL, a server that is not running, a server without
/// JetStream, a wrong password), so callers map them to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The URL or prefix is malformed.
    #[error("invalid NATS setting: {0}")]
    Invalid(String),
    /// The server refused or did not answer.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// URL without its password.
        url: String,
        /// What the client reported.
        reason: String,
    },
    /// Connected, but the streams, buckets or consumers could not be created.
    #[error("NATS server at {url} refused the JetStream setup ({what}): {reason}")]
    Setup {
        /// URL without its password.
        url: String,
        /// Which resource.
        what: String,
        /// What the server said.
        reason: String,
    },
}

/// A reference to a safetensors object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlobRef {
    bucket: String,
    name: String,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct TaskEnv {
    round: u64,
    kind: TaskKind,
    config: Config,
    params: Option<BlobRef>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReplyEnv {
    id: MsgId,
    kind: TaskKind,
    n_examples: u64,
    #[serde(with = "wire_metrics")]
    metrics: Metrics,
    error: Option<String>,
    params: Option<BlobRef>,
}

/// Metrics in JSON, where a non-finite value (the loss of a client that diverged) has no
/// number: it goes as the string `NaN`, `inf` or `-inf`. Plain JSON turned it into `null`,
/// which failed the whole envelope, so the server read a diverged client's reply as malformed.
mod wire_metrics {
    use super::Metrics;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Value {
        Num(f64),
        Tag(String),
    }

    pub fn serialize<S: Serializer>(m: &Metrics, s: S) -> Result<S::Ok, S::Error> {
        let v: std::collections::BTreeMap<&String, Value> = m
            .iter()
            .map(|(k, &x)| {
                let v = if x.is_finite() {
                    Value::Num(x)
                } else if x.is_nan() {
                    Value::Tag("NaN".into())
                } else if x > 0.0 {
                    Value::Tag("inf".into())
                } else {
                    Value::Tag("-inf".into())
                };
                (k, v)
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Metrics, D::Error> {
        let v = std::collections::BTreeMap::<String, Value>::deserialize(d)?;
        v.into_iter()
            .map(|(k, v)| {
                let x = match v {
                    Value::Num(x) => x,
                    Value::Tag(t) => match t.as_str() {
                        "NaN" => f64::NAN,
                        "inf" => f64::INFINITY,
                        "-inf" => f64::NEG_INFINITY,
                        _ => {
                            return Err(serde::de::Error::custom(format!(
                                "metric `{k}` = {t:?}: not a number"
                            )));
                        }
                    },
                };
                Ok((k, x))
            })
            .collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct XEnv {
    key: ExchangeKey,
    device: DeviceId,
    params: BlobRef,
}

/// Stored in place of a large KV value.
#[derive(Debug, Serialize, Deserialize)]
struct StatePtr {
    blob: BlobRef,
}

fn kind_tag(k: TaskKind) -> &'static str {
    match k {
        TaskKind::Fit => "fit",
        TaskKind::Evaluate => "evaluate",
        TaskKind::Shutdown => "shutdown",
    }
}

/// `user:password@` removed, for messages.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(a)) if a > s => format!("{}{}", &u[..s + 3], &u[a + 1..]),
            (None, Some(a)) => u[a + 1..].to_string(),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether stream `name` is one of run `prefix`'s (see [`Names`] and the object-store and KV
/// layers' `OBJ_` / `KV_` stream prefixes).
fn belongs_to_run(name: &str, prefix: &str) -> bool {
    let n = Names::new(prefix);
    if [n.tasks(), n.replies(), n.xs(), format!("KV_{}", n.kv())].contains(&name.to_string()) {
        return true;
    }
    match name.strip_prefix(&format!("OBJ_{}_", n.low)) {
        Some("s") => true,
        Some(rest) => {
            rest.len() > 1 && rest.starts_with('c') && rest[1..].bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Checks the shape of a URL list before the client sees it, so typos get one clear line.
fn check_url(url: &str) -> Result<(), NatsError> {
    if url.trim().is_empty() {
        return Err(NatsError::Invalid("empty NATS URL".into()));
    }
    for u in url.split(',') {
        let u = u.trim();
        let rest = match u.find("://") {
            Some(i) => {
                let scheme = &u[..i];
                if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                    return Err(NatsError::Invalid(format!(
                        "NATS URL `{}` has scheme `{scheme}`, expected nats:// or tls://",
                        redact_url(u)
                    )));
                }
                &u[i + 3..]
            }
            None => u,
        };
        let host_port = rest.rsplit('@').next().unwrap_or(rest);
        let bad = host_port.is_empty()
            || host_port.contains('/') && !host_port.ends_with('/')
            || host_port.chars().any(|c| c.is_whitespace());
        let port_ok = match host_port.trim_end_matches('/').rsplit_once(':') {
            Some((h, p)) => !h.is_empty() && p.parse::<u16>().is_ok(),
            None => !host_port.is_empty(),
        };
        if bad || !port_ok {
            return Err(NatsError::Invalid(format!(
                "NATS URL `{}` is not of the form nats://host:port",
                redact_url(u)
            )));
        }
    }
    Ok(())
}

fn check_prefix(p: &str) -> Result<(), NatsError> {
    if p.is_empty()
        || p.len() > 40
        || !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(NatsError::Invalid(format!(
            "NATS run prefix `{p}` must be 1-40 characters of A-Z, a-z, 0-9, `_` or `-`"
        )));
    }
    Ok(())
}

/// KV keys allow a restricted alphabet; anything else is escaped as `=XX`.
fn kv_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() { "=".to_string() } else { out }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Names of the streams and buckets of one run.
#[derive(Debug, Clone)]
struct Names {
    subj: String,
    up: String,
    low: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self {
            subj: format!("fl.{prefix}"),
            up: format!("FL_{prefix}"),
            low: format!("fl_{prefix}"),
        }
    }
    fn tasks(&self) -> String {
        format!("{}_TASKS", self.up)
    }
    fn replies(&self) -> String {
        format!("{}_REPLIES", self.up)
    }
    fn xs(&self) -> String {
        format!("{}_X", self.up)
    }
    fn kv(&self) -> String {
        format!("{}_state", self.low)
    }
    fn bucket(&self, party: Party) -> String {
        format!("{}_{}", self.low, party.tag())
    }
    fn task_subject(&self, c: ClientId) -> String {
        format!("{}.task.{c}", self.subj)
    }
    fn reply_subject(&self, round: u64, kind: TaskKind, c: ClientId) -> String {
        format!("{}.reply.{round}.{}.{c}", self.subj, kind_tag(kind))
    }
    fn alive_subject(&self, c: ClientId) -> String {
        format!("{}.alive.{c}", self.subj)
    }
    fn alive_filter(&self) -> String {
        format!("{}.alive.*", self.subj)
    }
    fn x_filter(&self, k: ExchangeKey) -> String {
        format!("{}.x.{}.{}.{}.>", self.subj, k.round, k.step, k.group)
    }
    fn x_subject(&self, k: ExchangeKey, party: Party, d: DeviceId) -> String {
        format!(
            "{}.x.{}.{}.{}.{}.{d}",
            self.subj,
            k.round,
            k.step,
            k.group,
            party.tag()
        )
    }
}

#[derive(Default)]
struct Local {
    /// Buckets opened so far, by name.
    buckets: HashMap<String, object_store::ObjectStore>,
    /// Durable task consumers opened so far.
    consumers: HashMap<ClientId, consumer::PullConsumer>,
    /// (round, kind, client) already handed out by a collection: never handed out again.
    collected: HashSet<(u64, &'static str, ClientId)>,
    /// Objects this fabric wrote, by round, deleted two rounds later.
    written: BTreeMap<u64, Vec<(String, String)>>,
    /// Reply objects read by collections, by round, deleted two rounds later.
    read: BTreeMap<u64, Vec<(String, String)>>,
    /// Task objects already uploaded (content-addressed names).
    uploaded: HashSet<String>,
    /// Rounds below this have had their reply and exchange messages purged.
    purged_below: u64,
    /// Which client each device seen in an exchange belongs to (from the sender part of its
    /// subject): what lets an exchange tell that a missing member's client is gone.
    owners: HashMap<DeviceId, ClientId>,
    /// The server's gone list as this process last read it in an exchange.
    gone_seen: HashSet<ClientId>,
}

/// When each client's last heartbeat came (server side).
type Beats = std::sync::Arc<Mutex<HashMap<ClientId, Instant>>>;
/// Clients never heard from that missed a whole deadline, with the round they first missed.
type WaitedOut = std::sync::Arc<Mutex<BTreeMap<ClientId, u64>>>;

/// The NATS implementation of [`Fabric`]. One per process; share it with `Arc`.
pub struct NatsFabric {
    opts: NatsOptions,
    names: Names,
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    driver: Mutex<Option<std::thread::JoinHandle<()>>>,
    client: async_nats::Client,
    js: jetstream::Context,
    tasks: stream::Stream,
    replies: stream::Stream,
    xs: stream::Stream,
    kv: kv::Store,
    local: Mutex<Local>,
    /// Server side: when each client's last heartbeat came.
    beats: Beats,
    /// Server side: clients that this process never heard a heartbeat from and that missed a
    /// whole collection's deadline (the round they first failed): from then on they are not
    /// waited for longer than three heartbeat periods, until they beat, and (while some client
    /// beats) the gone list carries them, so live clients' exchanges skip them too. Shared
    /// with the gone-list writer.
    waited_out: WaitedOut,
    /// Set once the run's streams and buckets are removed: the gone-list writer stops.
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for NatsFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NatsFabric({}, prefix {}, {:?})",
            redact_url(&self.opts.url),
            self.opts.prefix,
            self.opts.party
        )
    }
}

fn proto<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> FabricError + '_ {
    move |e| FabricError::Protocol(format!("{what}: {e}"))
}

/// `get_or_create_stream`, tried again when the server's answer may be a lost race rather than
/// a refusal. Every party of a run sets up the same streams at about the same moment, and a
/// 2.9 server (Debian's 2.9.10) does not serialise concurrent creates of one stream: the loser
/// gets "subjects overlap" (10065); a store the server failed to make for a passing reason
/// (out of file descriptors) comes back as a 500. A second look then finds the winner's stream,
/// or the store made. Everything else — permissions, configuration, 503s such as JetStream not
/// enabled or insufficient resources — is final at once, so a wrong setting still fails fast.
async fn ensure_stream(
    js: &jetstream::Context,
    cfg: stream::Config,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    const TRIES: u32 = 5;
    let mut attempt = 0;
    loop {
        match js.get_or_create_stream(cfg.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                let racy = match e.kind() {
                    jetstream::context::CreateStreamErrorKind::JetStream(j) => {
                        j.code() == 500
                            || j.error_code() == jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP
                    }
                    _ => false,
                };
                attempt += 1;
                if !racy || attempt >= TRIES {
                    return Err(e);
                }
                // 50, 100, 200, 400 ms: well inside one request timeout in all.
                tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
            }
        }
    }
}

impl NatsFabric {
    /// Connects, then creates (or binds to) the run's streams and buckets. Fails within about
    /// `connect_timeout` (+ one request timeout for the setup) when the server is unreachable.
    pub fn connect(opts: NatsOptions) -> Result<Self, NatsError> {
        check_url(&opts.url)?;
        check_prefix(&opts.prefix)?;
        let url_shown = redact_url(&opts.url);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NatsError::Connect {
                url: url_shown.clone(),
                reason: e.to_string(),
            })?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The IO and timer drivers of a current-thread runtime only run inside its own
        // `block_on`; this thread keeps them running so that the connection is serviced
        // (pings, buffered deliveries) even while no trait method is executing.
        let driver = std::thread::Builder::new()
            .name("nats-fabric".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| NatsError::Connect {
                url: url_shown.clone(),
                reason: e.to_string(),
            })?;
        let setup = handle.block_on(Self::setup(&opts));
        let (client, js, tasks, replies, xs, kv) = match setup {
            Ok(v) => v,
            Err(e) => {
                let _ = stop_tx.send(());
                let _ = driver.join();
                return Err(e);
            }
        };
        let names = Names::new(&opts.prefix);
        let beats = std::sync::Arc::new(Mutex::new(HashMap::new()));
        let waited_out = std::sync::Arc::new(Mutex::new(BTreeMap::new()));
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = match opts.party {
            Party::Client(k) => {
                Self::start_heartbeat(&handle, client.clone(), names.alive_subject(k));
                Ok(())
            }
            Party::Server => handle.block_on(Self::start_listener(
                &handle,
                &client,
                names.alive_filter(),
                (
                    std::sync::Arc::clone(&beats),
                    std::sync::Arc::clone(&waited_out),
                ),
                (kv.clone(), silence(&opts), std::sync::Arc::clone(&ended)),
            )),
        };
        if let Err(reason) = started {
            let _ = stop_tx.send(());
            let _ = driver.join();
            return Err(NatsError::Setup {
                url: redact_url(&opts.url),
                what: "heartbeat subscription".into(),
                reason,
            });
        }
        Ok(Self {
            names,
            opts,
            handle,
            stop: Mutex::new(Some(stop_tx)),
            driver: Mutex::new(Some(driver)),
            client,
            js,
            tasks,
            replies,
            xs,
            kv,
            local: Mutex::new(Local::default()),
            beats,
            waited_out,
            ended,
        })
    }

    /// A client's heartbeat: an empty core-NATS message on its `alive` subject every second,
    /// sent by the connection's own thread, so it keeps beating while the client computes and
    /// stops with the process (or the fabric). A publish that fails (no permission for the
    /// subject on an older deployment, a connection down) is skipped: the server then never
    /// hears the client. Where no client beats, it waits for it as it did before heartbeats;
    /// where others beat, it treats it as never heard from (`never_heard`), which once it has
    /// missed a whole deadline also puts it on the gone list (peers' exchanges skip it).
    fn start_heartbeat(
        handle: &tokio::runtime::Handle,
        client: async_nats::Client,
        subject: String,
    ) {
        handle.spawn(async move {
            loop {
                let _ = client.publish(subject.clone(), Default::default()).await;
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
    }

    /// The server's side: records when each client last beat, and keeps the list of clients
    /// silent for `silence` (and, while heartbeats arrive, of clients never heard from that
    /// missed a whole deadline) in the KV bucket under [`GONE_KEY`] (rewritten when it changes),
    /// where clients waiting in an exchange read it: they may subscribe to nothing but their
    /// inboxes, but they may read the run's KV.
    async fn start_listener(
        handle: &tokio::runtime::Handle,
        client: &async_nats::Client,
        filter: String,
        (beats, waited_out): (Beats, WaitedOut),
        (kv, silence, ended): (
            kv::Store,
            Duration,
            std::sync::Arc<std::sync::atomic::AtomicBool>,
        ),
    ) -> Result<(), String> {
        let mut sub = client.subscribe(filter).await.map_err(|e| e.to_string())?;
        let seen = std::sync::Arc::clone(&beats);
        handle.spawn(async move {
            let mut last: Option<Vec<ClientId>> = None;
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if ended.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut gone: Vec<ClientId> = {
                    let beaten = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let mut gone: Vec<ClientId> = beaten
                        .iter()
                        .filter(|(_, t)| t.elapsed() >= silence)
                        .map(|(c, _)| *c)
                        .collect();
                    // A client that let a whole deadline pass without one heartbeat while
                    // others beat is as gone to the exchanges as a silent one (without it, a
                    // client that never came cost its peers' every exchange its timeout).
                    // Where nobody beats, silence says nothing: the list leaves it out, as
                    // the collections do.
                    if beats_arrive(&beaten, silence) {
                        let unheard = waited_out.lock().unwrap_or_else(|p| p.into_inner());
                        gone.extend(unheard.keys().filter(|c| !beaten.contains_key(c)));
                    }
                    gone
                };
                gone.sort_unstable();
                gone.dedup();
                // The first write goes out even when nobody is gone, so that a list left by a
                // previous server process of the same run is replaced.
                if last.as_ref() != Some(&gone) {
                    let body = serde_json::to_vec(&gone).unwrap_or_default();
                    if kv.put(GONE_KEY, body.into()).await.is_ok() {
                        last = Some(gone);
                    }
                }
            }
        });
        handle.spawn(async move {
            while let Some(m) = sub.next().await {
                let Some(c) = last_client(&m.subject) else {
                    continue;
                };
                beats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(c, Instant::now());
            }
            // The subscription is over (the connection was closed): no heartbeat can arrive,
            // so silence no longer says anything; forget them all rather than declare every
            // client gone.
            beats.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(())
    }

    /// The members still missing from an exchange whose client the server lists as gone
    /// ([`GONE_KEY`]), with their clients; empty when there is none (or the list cannot be
    /// read now).
    async fn gone_members<T>(
        &self,
        members: &[DeviceId],
        got: &BTreeMap<DeviceId, T>,
        left: Duration,
    ) -> Vec<(DeviceId, ClientId)> {
        let missing: Vec<(DeviceId, ClientId)> = {
            let l = self.lock();
            members
                .iter()
                .filter(|d| !got.contains_key(d))
                .filter_map(|d| l.owners.get(d).map(|c| (*d, *c)))
                .collect()
        };
        if missing.is_empty() {
            return missing;
        }
        let limit = self.opts.request_timeout.min(left);
        let gone: Vec<ClientId> = match tokio::time::timeout(limit, self.kv.get(GONE_KEY)).await {
            Ok(Ok(Some(raw))) => serde_json::from_slice(&raw).unwrap_or_default(),
            Ok(Ok(None)) => Vec::new(),
            // Unreadable now: keep what was last read.
            _ => return Vec::new(),
        };
        self.lock().gone_seen = gone.iter().copied().collect();
        missing
            .into_iter()
            .filter(|(_, c)| gone.contains(c))
            .collect()
    }

    fn waited(&self) -> std::sync::MutexGuard<'_, BTreeMap<ClientId, u64>> {
        self.waited_out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long client `c` has been silent, when it has beaten before and has been silent for
    /// at least the configured [`NatsOptions::silence`].
    fn gone(&self, c: ClientId) -> Option<Duration> {
        let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        let quiet = beats.get(&c)?.elapsed();
        (quiet >= silence(&self.opts)).then_some(quiet)
    }

    /// Why client `c` is not waited for any longer in a collection that has run for
    /// `waited`: it was never heard from by this process, missed a whole deadline before (the
    /// round named), and three heartbeat periods have passed in this collection too. A client
    /// that has not started yet is waited for one full deadline, not less; one that died while
    /// the server was down (a resumed server never heard it) costs one deadline, not one per
    /// round. Three periods, not the silence: a client that starts during the collection beats
    /// within one, and the longer silence is there for a known client's connection stall,
    /// which a client never heard from has not had (it cost each later round 15 s).
    fn never_heard(&self, c: ClientId, waited: Duration) -> Option<String> {
        if waited < HEARTBEAT * 3 {
            return None;
        }
        {
            let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
            // Nobody beats: heartbeats do not reach this server (credentials that predate the
            // subject), so silence says nothing about anyone.
            if !beats_arrive(&beats, silence(&self.opts)) {
                return None;
            }
            if beats.contains_key(&c) {
                self.waited().remove(&c);
                return None;
            }
        }
        let first = *self.waited().get(&c)?;
        Some(format!(
            "never heard from (no heartbeat since this server started; it missed round {first}'s deadline too), not waited for"
        ))
    }

    #[allow(clippy::type_complexity)]
    async fn setup(
        opts: &NatsOptions,
    ) -> Result<
        (
            async_nats::Client,
            jetstream::Context,
            stream::Stream,
            stream::Stream,
            stream::Stream,
            kv::Store,
        ),
        NatsError,
    > {
        let url = redact_url(&opts.url);
        // async-nats does not take credentials from the URL itself; lift them into the options.
        let creds = opts.url.split(',').find_map(|u| {
            let a = u.trim().parse::<async_nats::ServerAddr>().ok()?;
            Some((a.username()?.to_string(), a.password()?.to_string()))
        });
        let mut base = async_nats::ConnectOptions::new();
        if let Some((user, pass)) = creds {
            base = base.user_and_password(user, pass);
        }
        // A missing PEM file would otherwise surface as a TLS handshake error naming nothing.
        let readable = |what: &str, p: &std::path::Path| {
            std::fs::File::open(p)
                .map(drop)
                .map_err(|e| NatsError::Invalid(format!("TLS {what} {}: {e}", p.display())))
        };
        if let Some(ca) = &opts.tls_ca {
            readable("CA file (FERROLAB_NATS_CA / --tls-ca)", ca)?;
            base = base.add_root_certificates(ca.clone()).require_tls(true);
        }
        if opts.tls_client.is_none()
            && env_path("FERROLAB_NATS_CERT").is_some() != env_path("FERROLAB_NATS_KEY").is_some()
        {
            return Err(NatsError::Invalid(
                "TLS client certificate: FERROLAB_NATS_CERT and FERROLAB_NATS_KEY go together; only one is set".into(),
            ));
        }
        if let Some((cert, key)) = &opts.tls_client {
            readable("client certificate (FERROLAB_NATS_CERT / --tls-cert)", cert)?;
            readable("client key (FERROLAB_NATS_KEY / --tls-key)", key)?;
            base = base.add_client_certificate(cert.clone(), key.clone());
        }
        let connect = base
            .connection_timeout(opts.connect_timeout)
            .request_timeout(Some(opts.request_timeout))
            .name(format!("ferrolab-fed {}", opts.party.tag()))
            .connect(opts.url.as_str());
        let client = match tokio::time::timeout(
            opts.connect_timeout + Duration::from_secs(1),
            connect,
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(NatsError::Connect {
                    url,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(NatsError::Connect {
                    url,
                    reason: format!("no answer within {:?}", opts.connect_timeout),
                });
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(opts.request_timeout)
            .build(client.clone());
        let names = Names::new(&opts.prefix);
        let storage = if opts.memory_storage {
            StorageType::Memory
        } else {
            StorageType::File
        };
        let setup_err = |what: &str, e: &dyn std::fmt::Display| NatsError::Setup {
            url: url.clone(),
            what: what.to_string(),
            reason: e.to_string(),
        };
        let mk = |name: String, subjects: Vec<String>, retention| stream::Config {
            name,
            subjects,
            retention,
            storage,
            duplicate_window: DUP_WINDOW,
            ..Default::default()
        };
        let tasks = ensure_stream(
            &js,
            mk(
                names.tasks(),
                vec![format!("{}.task.*", names.subj)],
                stream::RetentionPolicy::WorkQueue,
            ),
        )
        .await
        .map_err(|e| setup_err(&names.tasks(), &e))?;
        let replies = ensure_stream(
            &js,
            mk(
                names.replies(),
                vec![format!("{}.reply.>", names.subj)],
                stream::RetentionPolicy::Limits,
            ),
        )
        .await
        .map_err(|e| setup_err(&names.replies(), &e))?;
        let xs = ensure_stream(
            &js,
            mk(
                names.xs(),
                vec![format!("{}.x.>", names.subj)],
                stream::RetentionPolicy::Limits,
            ),
        )
        .await
        .map_err(|e| setup_err(&names.xs(), &e))?;
        // The bucket's stream is made here rather than by `create_key_value`, which first asks
        // for the account's info and cannot parse what a 2.9 server answers (no
        // `reserved_memory`); the config is the one the KV layer itself would send.
        ensure_stream(
            &js,
            stream::Config {
                name: format!("KV_{}", names.kv()),
                subjects: vec![format!("$KV.{}.>", names.kv())],
                max_messages_per_subject: 1,
                storage,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                num_replicas: 1,
                discard: stream::DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| setup_err(&names.kv(), &e))?;
        let kv = js
            .get_key_value(names.kv())
            .await
            .map_err(|e| setup_err(&names.kv(), &e))?;
        Ok((client, js, tasks, replies, xs, kv))
    }

    /// Options this fabric was opened with.
    pub fn options(&self) -> &NatsOptions {
        &self.opts
    }

    /// Names of the JetStream streams on the server that belong to run `prefix`: its task,
    /// reply and exchange streams, its KV bucket's stream and every party's object-store
    /// bucket stream. Exact names only, so run `a` never claims run `a_c1`'s streams.
    pub fn run_streams(&self, prefix: &str) -> Result<Vec<String>, FabricError> {
        self.run(async {
            let mut names = self.js.stream_names();
            let mut out = Vec::new();
            let until = Instant::now() + self.opts.request_timeout;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, names.next()).await {
                    Err(_) => {
                        return Err(self.net_err("list streams", "no answer in time"));
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Err(self.net_err("list streams", e)),
                    Ok(Some(Ok(n))) => {
                        if belongs_to_run(&n, prefix) {
                            out.push(n);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
    }

    /// Deletes everything this run left on the NATS server (see [`NatsFabric::run_streams`]);
    /// returns how many streams went. Only for the server party once its clients have stopped:
    /// the fabric is unusable afterwards.
    pub fn remove_run(&self) -> Result<usize, FabricError> {
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        let names = self.run_streams(&self.opts.prefix)?;
        self.run(async {
            for n in &names {
                self.bounded(
                    &format!("delete stream {n}"),
                    self.opts.request_timeout,
                    self.js.delete_stream(n),
                )
                .await?;
            }
            Ok(names.len())
        })
    }

    /// Runs `f` on the fabric's runtime from a plain thread.
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// An error from a network call: `Disconnected` when the connection is down, else `what`.
    fn net_err(&self, what: &str, e: impl std::fmt::Display) -> FabricError {
        if self.connected() {
            FabricError::Protocol(format!("{what}: {e}"))
        } else {
            FabricError::Disconnected(format!(
                "{what}: {e} (connection to {} lost)",
                redact_url(&self.opts.url)
            ))
        }
    }

    /// Bounds one request; a timeout while disconnected is reported as `Disconnected`.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, FabricError> {
        match tokio::time::timeout(limit, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.net_err(what, e)),
            Err(_) => Err(self.net_err(what, format!("no answer within {limit:?}"))),
        }
    }

    /// Tracks how long the connection has been down; errors once past the grace period.
    fn check_link(&self, down_since: &mut Option<Instant>) -> Result<(), FabricError> {
        if self.connected() {
            *down_since = None;
            return Ok(());
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        if since.elapsed() > self.opts.disconnect_grace {
            return Err(FabricError::Disconnected(format!(
                "connection to {} lost for more than {:?}",
                redact_url(&self.opts.url),
                self.opts.disconnect_grace
            )));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // A panic while holding this lock leaves plain bookkeeping behind; keep going with it.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn bucket(&self, name: &str) -> Result<object_store::ObjectStore, FabricError> {
        if let Some(b) = self.lock().buckets.get(name) {
            return Ok(b.clone());
        }
        let limit = self.opts.request_timeout;
        let b = match self
            .bounded("open bucket", limit, self.js.get_object_store(name))
            .await
        {
            Ok(b) => b,
            Err(_) => {
                let cfg = object_store::Config {
                    bucket: name.to_string(),
                    storage: if self.opts.memory_storage {
                        StorageType::Memory
                    } else {
                        StorageType::File
                    },
                    ..Default::default()
                };
                self.bounded(
                    &format!("create bucket {name}"),
                    limit,
                    self.js.create_object_store(cfg),
                )
                .await?
            }
        };
        self.lock().buckets.insert(name.to_string(), b.clone());
        Ok(b)
    }

    /// Uploads `bytes` as object `name` of `bucket`.
    async fn put_blob(
        &self,
        bucket: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<BlobRef, FabricError> {
        let store = self.bucket(bucket).await?;
        let meta = object_store::ObjectMetadata {
            name: name.to_string(),
            chunk_size: Some(CHUNK),
            ..Default::default()
        };
        let mut reader = bytes;
        // Generous: at 100 MB/s even a 1 GiB model finishes well inside this.
        let limit =
            self.opts.request_timeout + Duration::from_secs(10 + (bytes.len() >> 27) as u64 * 10);
        self.bounded(
            &format!("upload {bucket}/{name}"),
            limit,
            store.put(meta, &mut reader),
        )
        .await?;
        Ok(BlobRef {
            bucket: bucket.to_string(),
            name: name.to_string(),
            size: bytes.len() as u64,
        })
    }

    /// The object's bytes, or `None` when it no longer exists (collected after its round).
    async fn get_blob(&self, r: &BlobRef) -> Result<Option<Vec<u8>>, FabricError> {
        let store = self.bucket(&r.bucket).await?;
        let limit = self.opts.request_timeout + Duration::from_secs(10 + (r.size >> 27) * 10);
        let what = format!("download {}/{}", r.bucket, r.name);
        let fut = async {
            let mut obj = match store.get(&r.name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let size = obj.info().size;
            if size as u64 != r.size {
                return Err(format!(
                    "object has {size} bytes, the message announced {}",
                    r.size
                ));
            }
            let mut buf = Vec::with_capacity(size);
            obj.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(Some(buf))
        };
        self.bounded(&what, limit, fut).await
    }

    async fn delete_blobs(&self, list: Vec<(String, String)>) {
        for (bucket, name) in list {
            if let Ok(store) = self.bucket(&bucket).await {
                // Best effort: a blob that is already gone is what we wanted.
                let _ = tokio::time::timeout(self.opts.request_timeout, store.delete(&name)).await;
            }
        }
    }

    async fn publish(
        &self,
        subject: String,
        msg_id: String,
        payload: Vec<u8>,
    ) -> Result<(), FabricError> {
        let limit = self.opts.request_timeout;
        let what = format!("publish on {subject}");
        let fut = async {
            let ack = self
                .js
                .send_publish(
                    subject.clone(),
                    PublishMessage::build()
                        .payload(payload.into())
                        .message_id(msg_id),
                )
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        self.bounded(&what, limit, fut).await.map(|_| ())
    }

    async fn task_consumer(&self, c: ClientId) -> Result<consumer::PullConsumer, FabricError> {
        if let Some(cons) = self.lock().consumers.get(&c) {
            return Ok(cons.clone());
        }
        let name = format!("task_{c}");
        let cfg = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: self.names.task_subject(c),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        };
        let cons: consumer::PullConsumer = self
            .bounded(
                "open task consumer",
                self.opts.request_timeout,
                self.tasks.get_or_create_consumer(&name, cfg),
            )
            .await?;
        self.lock().consumers.insert(c, cons.clone());
        Ok(cons)
    }

    /// An ordered (gap-checked, ack-free) reader of every message on `filter` from the start.
    async fn reader(
        &self,
        stream: &stream::Stream,
        filter: String,
    ) -> Result<consumer::push::Ordered, FabricError> {
        let fut = async {
            stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
                    filter_subject: filter.clone(),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        self.bounded(&format!("read {filter}"), self.opts.request_timeout, fut)
            .await
    }

    /// Deletes what earlier rounds left behind: messages and objects of rounds below
    /// `round - 1` (the previous round is kept, so a server restarted from its checkpoint can
    /// collect it again).
    async fn gc(&self, round: u64) {
        let keep_from = round.saturating_sub(1);
        let (from, blobs) = {
            let mut l = self.lock();
            let from = l.purged_below;
            if keep_from <= from {
                return;
            }
            l.purged_below = keep_from;
            let mut blobs = Vec::new();
            let rounds: Vec<u64> = l.written.range(..keep_from).map(|(r, _)| *r).collect();
            for r in rounds {
                blobs.extend(l.written.remove(&r).unwrap_or_default());
            }
            let rounds: Vec<u64> = l.read.range(..keep_from).map(|(r, _)| *r).collect();
            for r in rounds {
                blobs.extend(l.read.remove(&r).unwrap_or_default());
            }
            (from, blobs)
        };
        self.delete_blobs(blobs).await;
        if self.opts.party != Party::Server {
            return;
        }
        // Rounds never purged before (a fresh process) start from `keep_from - 2` at most: a
        // resumed server does not walk the whole history.
        let start = from.max(keep_from.saturating_sub(2));
        for r in start..keep_from {
            for filter in [
                format!("{}.reply.{r}.>", self.names.subj),
                format!("{}.x.{r}.>", self.names.subj),
            ] {
                let s = if filter.contains(".reply.") {
                    &self.replies
                } else {
                    &self.xs
                };
                let _ =
                    tokio::time::timeout(self.opts.request_timeout, s.purge().filter(filter)).await;
            }
        }
    }

    async fn decode_reply(&self, subject_client: ClientId, env: ReplyEnv) -> Result<Reply, String> {
        let params = match &env.params {
            None => Params::new(),
            Some(b) => {
                // A client may only point at its own bucket: anything else would let it pass off
                // another party's tensors as its update.
                let own = self.names.bucket(Party::Client(subject_client));
                if b.bucket != own {
                    return Err(format!(
                        "update refers to bucket {}, not the client's own {own}",
                        b.bucket
                    ));
                }
                self.lock()
                    .read
                    .entry(env.id.round)
                    .or_default()
                    .push((b.bucket.clone(), b.name.clone()));
                let bytes = self
                    .get_blob(b)
                    .await
                    .map_err(|e| format!("update unreadable: {e}"))?
                    .ok_or_else(|| {
                        format!("update object {}/{} does not exist", b.bucket, b.name)
                    })?;
                Params::from_safetensors(&bytes).map_err(|e| format!("update rejected: {e}"))?
            }
        };
        Ok(Reply {
            id: env.id,
            kind: env.kind,
            params,
            n_examples: env.n_examples,
            metrics: env.metrics,
            error: env.error,
        })
    }
}

impl Drop for NatsFabric {
    fn drop(&mut self) {
        // Pending publishes were all awaited; flushing only speeds up the goodbye.
        let client = self.client.clone();
        let _ = self.handle.block_on(async move {
            tokio::time::timeout(Duration::from_secs(2), client.flush()).await
        });
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.driver.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl NatsFabric {
    /// [`Fabric::exchange`] (`skip_gone` false) and [`Fabric::exchange_skipping_gone`].
    fn exchange_with(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
        skip_gone: bool,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        let member_set: HashSet<DeviceId> = members.iter().copied().collect();
        let mut mine = BTreeMap::new();
        for (d, p) in outgoing {
            if !member_set.contains(&d) {
                return Err(FabricError::Protocol(format!(
                    "device {d} is not a member of exchange {key:?} ({members:?})"
                )));
            }
            if mine.insert(d, p).is_some() {
                return Err(FabricError::Protocol(format!(
                    "device {d} contributes twice to {key:?}"
                )));
            }
        }
        let until = Instant::now() + timeout;
        self.run(async {
            self.gc(key.round).await;
            let bucket = self.names.bucket(self.opts.party);
            for (d, p) in &mine {
                let name = format!("x.{}.{}.{}.{d}", key.round, key.step, key.group);
                let blob = self.put_blob(&bucket, &name, &p.to_safetensors()).await?;
                self.lock()
                    .written
                    .entry(key.round)
                    .or_default()
                    .push((bucket.clone(), name));
                let env = XEnv {
                    key,
                    device: *d,
                    params: blob,
                };
                let payload = serde_json::to_vec(&env).map_err(proto("encode exchange"))?;
                let id = format!("x-{}-{}-{}-{d}", key.round, key.step, key.group);
                self.publish(self.names.x_subject(key, self.opts.party, *d), id, payload)
                    .await?;
            }
            let mut got: BTreeMap<DeviceId, Option<BlobRef>> = BTreeMap::new();
            for d in mine.keys() {
                got.insert(*d, None);
            }
            let mut msgs = self.reader(&self.xs, self.names.x_filter(key)).await?;
            let mut down = None;
            while got.len() < member_set.len() {
                self.check_link(&mut down)?;
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let missing: Vec<DeviceId> = members
                        .iter()
                        .copied()
                        .filter(|d| !got.contains_key(d))
                        .collect();
                    return Err(FabricError::Timeout {
                        what: format!("exchange {key:?}: devices {missing:?}"),
                        after: timeout,
                    });
                }
                // Once every missing member's client was on the gone list at the last look,
                // the list is read again after a short lull: a quiet second per exchange made
                // each SD-GT round with a gone peer cost seconds (one per mixing step), and
                // 50 ms still tripled it (0.13 -> 0.39 s a round, 12 devices). The lull only
                // lets a contribution already in flight in; the list itself lags a return by
                // up to a second either way.
                let lull = {
                    let l = self.lock();
                    let known = members.iter().filter(|d| !got.contains_key(d)).all(|d| {
                        l.owners.get(d).is_some_and(|c| l.gone_seen.contains(c))
                    });
                    if known { TICK / 25 } else { TICK * 4 }
                };
                let m = match tokio::time::timeout(left.min(lull), msgs.next()).await {
                    Err(_) => {
                        // Nothing more for now: a missing member whose client the server has
                        // found silent (gone) cannot come, so the exchange fails now rather
                        // than at its timeout (or, skipping, ends without it). Devices whose
                        // client is unknown are waited for.
                        let left = until.saturating_duration_since(Instant::now());
                        let dead = self.gone_members(members, &got, left).await;
                        if dead.is_empty() {
                            continue;
                        }
                        // Skipping: done once every member still missing is a gone one.
                        if skip_gone {
                            if got.len() + dead.len() >= member_set.len() {
                                break;
                            }
                            continue;
                        }
                        let dead: Vec<String> = dead
                            .iter()
                            .map(|(d, c)| format!("device {d} (client {c})"))
                            .collect();
                        return Err(FabricError::Timeout {
                            what: format!(
                                "exchange {key:?}: {} gone (the server hears no heartbeat from it), not waited for",
                                dead.join(", ")
                            ),
                            after: timeout
                                .saturating_sub(until.saturating_duration_since(Instant::now())),
                        });
                    }
                    Ok(None) => {
                        return Err(FabricError::Disconnected("exchange stream closed".into()));
                    }
                    Ok(Some(Err(e))) => {
                        if self.connected() {
                            return Err(FabricError::Protocol(format!("exchange stream: {e}")));
                        }
                        tokio::time::sleep(TICK).await;
                        continue;
                    }
                    Ok(Some(Ok(m))) => m,
                };
                let env: XEnv =
                    serde_json::from_slice(&m.payload).map_err(proto("exchange envelope"))?;
                let sender = m.subject.split('.').rev().nth(1).unwrap_or("").to_string();
                if env.key != key || !member_set.contains(&env.device) {
                    return Err(FabricError::Protocol(format!(
                        "device {} is not a member of exchange {key:?}",
                        env.device
                    )));
                }
                if env.params.bucket != format!("{}_{sender}", self.names.low) {
                    return Err(FabricError::Protocol(format!(
                        "exchange message from {sender} points at bucket {}",
                        env.params.bucket
                    )));
                }
                if let Some(c) = sender
                    .strip_prefix('c')
                    .and_then(|k| k.parse::<ClientId>().ok())
                {
                    self.lock().owners.insert(env.device, c);
                }
                match got.get(&env.device) {
                    Some(_) if mine.contains_key(&env.device) => {}
                    Some(_) => {
                        return Err(FabricError::Protocol(format!(
                            "device {} contributes twice to {key:?}",
                            env.device
                        )));
                    }
                    None => {
                        got.insert(env.device, Some(env.params));
                    }
                }
            }
            let fetches = got
                .iter()
                .filter_map(|(d, b)| b.as_ref().map(|b| (*d, b.clone())));
            let fetched = futures_util::future::join_all(fetches.map(|(d, b)| async move {
                let bytes = self.get_blob(&b).await?.ok_or_else(|| {
                    FabricError::Protocol(format!(
                        "exchange object {}/{} does not exist",
                        b.bucket, b.name
                    ))
                })?;
                Ok::<_, FabricError>((d, Params::from_safetensors(&bytes)?))
            }))
            .await;
            let mut out: BTreeMap<DeviceId, Params> = mine;
            for r in fetched {
                let (d, p) = r?;
                out.insert(d, p);
            }
            Ok(out.into_iter().collect())
        })
    }
}

impl Fabric for NatsFabric {
    fn name(&self) -> &str {
        "nats"
    }

    fn send_task(&self, client: ClientId, task: &Task) -> Result<(), FabricError> {
        self.run(async {
            let params = if task.params.is_empty() {
                None
            } else {
                let bytes = task.params.to_safetensors();
                // Content-addressed within the round: the same model sent to every client is
                // uploaded once.
                let name = format!("t.{}.{}", task.round, &sha256_hex(&bytes)[..32]);
                let bucket = self.names.bucket(self.opts.party);
                let known = self.lock().uploaded.contains(&name);
                if !known {
                    self.put_blob(&bucket, &name, &bytes).await?;
                    let mut l = self.lock();
                    l.uploaded.insert(name.clone());
                    l.written
                        .entry(task.round)
                        .or_default()
                        .push((bucket.clone(), name.clone()));
                }
                Some(BlobRef {
                    bucket,
                    name,
                    size: bytes.len() as u64,
                })
            };
            let env = TaskEnv {
                round: task.round,
                kind: task.kind,
                config: task.config.clone(),
                params,
            };
            let payload = serde_json::to_vec(&env).map_err(proto("encode task"))?;
            self.publish_task(client, payload).await
        })
    }

    fn recv_task(&self, client: ClientId, timeout: Duration) -> Result<Option<Task>, FabricError> {
        self.run(async {
            let cons = self.task_consumer(client).await?;
            let until = Instant::now() + timeout;
            let mut down = None;
            loop {
                self.check_link(&mut down)?;
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                let wait = left.min(Duration::from_secs(5));
                let mut batch = match self
                    .bounded(
                        "request a task",
                        self.opts.request_timeout,
                        cons.batch().max_messages(1).expires(wait.max(Duration::from_millis(10))).messages(),
                    )
                    .await
                {
                    Ok(b) => b,
                    Err(e @ FabricError::Disconnected(_)) => return Err(e),
                    Err(_) if !self.connected() => {
                        tokio::time::sleep(TICK).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let next = tokio::time::timeout(wait + Duration::from_secs(2), batch.next()).await;
                let msg = match next {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => {
                        if self.connected() {
                            return Err(FabricError::Protocol(format!("task delivery: {e}")));
                        }
                        continue;
                    }
                    Ok(None) | Err(_) => continue,
                };
                // Acked (and confirmed) before it is used: a task is received once.
                self.bounded("acknowledge a task", self.opts.request_timeout, msg.double_ack())
                    .await?;
                let env: TaskEnv = serde_json::from_slice(&msg.payload).map_err(proto("task envelope"))?;
                let params = match &env.params {
                    None => Params::new(),
                    Some(b) => match self.get_blob(b).await? {
                        Some(bytes) => Params::from_safetensors(&bytes)?,
                        None => {
                            // Its object was collected: the round is over (this client was away).
                            eprintln!(
                                "fed/nats: client {client}: skipping the round-{} task, its round is over",
                                env.round
                            );
                            continue;
                        }
                    },
                };
                return Ok(Some(Task { round: env.round, kind: env.kind, config: env.config, params }));
            }
        })
    }

    fn send_reply(&self, reply: &Reply) -> Result<(), FabricError> {
        self.run(async {
            let c = reply.id.client;
            let tag = kind_tag(reply.kind);
            let params = if reply.params.is_empty() {
                None
            } else {
                let bucket = self.names.bucket(Party::Client(c));
                let name = format!("r.{}.{tag}.{}", reply.id.round, reply.id.attempt);
                let r = self
                    .put_blob(&bucket, &name, &reply.params.to_safetensors())
                    .await?;
                Some(r)
            };
            let env = ReplyEnv {
                id: reply.id,
                kind: reply.kind,
                n_examples: reply.n_examples,
                metrics: reply.metrics.clone(),
                error: reply.error.clone(),
                params,
            };
            let payload = serde_json::to_vec(&env).map_err(proto("encode reply"))?;
            let id = format!("r-{}-{tag}-{c}-{}", reply.id.round, reply.id.attempt);
            self.publish(
                self.names.reply_subject(reply.id.round, reply.kind, c),
                id,
                payload,
            )
            .await
        })
    }

    fn collect_replies(
        &self,
        round: u64,
        kind: TaskKind,
        expected: &[ClientId],
        deadline: Duration,
        validate: Validator<'_>,
    ) -> Result<Collected, FabricError> {
        let began = Instant::now();
        let until = began + deadline;
        let tag = kind_tag(kind);
        self.run(async {
            self.gc(round).await;
            let expected: HashSet<ClientId> = expected.iter().copied().collect();
            let mut replies: BTreeMap<ClientId, Reply> = BTreeMap::new();
            let mut failures: BTreeMap<ClientId, String> = BTreeMap::new();
            {
                let l = self.lock();
                for &c in &expected {
                    if l.collected.contains(&(round, tag, c)) {
                        failures.insert(
                            c,
                            format!(
                                "no new reply within {deadline:?} (round {round} already collected)"
                            ),
                        );
                    }
                }
            }
            let filter = format!("{}.reply.{round}.{tag}.*", self.names.subj);
            let mut msgs = self.reader(&self.replies, filter).await?;
            let mut down = None;
            while replies.len() + failures.len() < expected.len() {
                self.check_link(&mut down)?;
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // When every client still outstanding is already silent past the limit, the
                // lull that lets it be called gone is short: a quiet second cost each round
                // with a gone client that second.
                let all_gone = expected
                    .iter()
                    .filter(|c| !replies.contains_key(c) && !failures.contains_key(c))
                    .all(|c| {
                        self.gone(*c).is_some() || self.never_heard(*c, began.elapsed()).is_some()
                    });
                let lull = if all_gone { TICK / 25 } else { TICK * 4 };
                let m = match tokio::time::timeout(left.min(lull), msgs.next()).await {
                    Err(_) => {
                        // Nothing more in the stream for now. A client that beat and then
                        // fell silent is gone (killed, its machine lost): its reply cannot
                        // come, so the round stops waiting for it. (Checked only here, once
                        // what it sent before has been read.)
                        for &c in &expected {
                            if replies.contains_key(&c) || failures.contains_key(&c) {
                                continue;
                            }
                            if let Some(quiet) = self.gone(c) {
                                let why = format!(
                                    "no heartbeat for {:.0} s: its process or machine is gone",
                                    quiet.as_secs_f64()
                                );
                                eprintln!("fed/nats: round {round}: client {c}: {why}");
                                failures.insert(c, why);
                            } else if let Some(why) = self.never_heard(c, began.elapsed()) {
                                eprintln!("fed/nats: round {round}: client {c}: {why}");
                                failures.insert(c, why);
                            }
                        }
                        continue;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        if self.connected() {
                            // The ordered consumer resets itself after gaps; a hard error here
                            // means the stream is gone.
                            return Err(FabricError::Protocol(format!("reply stream: {e}")));
                        }
                        msgs = match self
                            .reader(
                                &self.replies,
                                format!("{}.reply.{round}.{tag}.*", self.names.subj),
                            )
                            .await
                        {
                            Ok(m) => m,
                            Err(_) => {
                                tokio::time::sleep(TICK).await;
                                continue;
                            }
                        };
                        continue;
                    }
                    Ok(Some(Ok(m))) => m,
                };
                let Some(c) = last_client(&m.subject) else {
                    continue;
                };
                // Any message from it, late or rejected, shows it alive.
                self.waited().remove(&c);
                if !expected.contains(&c) || replies.contains_key(&c) || failures.contains_key(&c) {
                    continue;
                }
                let env: ReplyEnv = match serde_json::from_slice(&m.payload) {
                    Ok(e) => e,
                    Err(e) => {
                        let why = format!("malformed reply envelope: {e}");
                        eprintln!("fed/nats: round {round}: client {c}: {why}");
                        failures.insert(c, why);
                        continue;
                    }
                };
                if env.id.client != c || env.id.round != round || env.kind != kind {
                    let why = format!(
                        "reply on client {c}'s subject claims client {} round {} ({:?})",
                        env.id.client, env.id.round, env.kind
                    );
                    eprintln!("fed/nats: round {round}: {why}");
                    failures.insert(c, why);
                    continue;
                }
                let verdict = match self.decode_reply(c, env).await {
                    Err(why) => Err(why),
                    Ok(r) => match &r.error {
                        Some(e) => Err(format!("client reported an error: {e}")),
                        None => validate(&r).map(|_| r),
                    },
                };
                match verdict {
                    Ok(r) => {
                        replies.insert(c, r);
                    }
                    Err(why) => {
                        eprintln!("fed/nats: round {round}: client {c}: reply rejected: {why}");
                        failures.insert(c, why);
                    }
                }
            }
            // Clients that let the whole deadline pass without a single heartbeat.
            let unheard: Vec<ClientId> = {
                let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
                expected
                    .iter()
                    .filter(|c| !replies.contains_key(c) && !failures.contains_key(c))
                    .filter(|c| !beats.contains_key(c))
                    .copied()
                    .collect()
            };
            let mut l = self.lock();
            for &c in replies.keys().chain(failures.keys()) {
                l.collected.insert((round, tag, c));
            }
            drop(l);
            if Instant::now() >= until {
                let mut w = self.waited();
                for c in unheard {
                    w.entry(c).or_insert(round);
                }
            }
            let mut out = Collected::default();
            let mut ids: Vec<ClientId> = expected.into_iter().collect();
            ids.sort_unstable();
            for c in ids {
                if let Some(r) = replies.remove(&c) {
                    out.replies.push(r);
                } else {
                    let reason = failures
                        .remove(&c)
                        .unwrap_or_else(|| format!("no reply within {deadline:?}"));
                    out.failures.push(Failure { client: c, reason });
                }
            }
            Ok(out)
        })
    }

    fn exchange(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        self.exchange_with(key, members, outgoing, timeout, false)
    }

    fn exchange_skipping_gone(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        self.exchange_with(key, members, outgoing, timeout, true)
    }

    fn put_state(&self, key: &str, value: &[u8]) -> Result<(), FabricError> {
        self.run(async {
            let k = kv_key(key);
            let old = self.state_ptr(&k).await?;
            let stored = if value.len() <= KV_INLINE_MAX {
                let mut v = Vec::with_capacity(value.len() + 1);
                v.push(0u8);
                v.extend_from_slice(value);
                v
            } else {
                let bucket = self.names.bucket(self.opts.party);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let name = format!("s.{k}.{nanos}");
                let blob = self.put_blob(&bucket, &name, value).await?;
                let mut v = vec![1u8];
                v.extend(serde_json::to_vec(&StatePtr { blob }).map_err(proto("encode state"))?);
                v
            };
            self.bounded(
                &format!("store state {key}"),
                self.opts.request_timeout,
                self.kv.put(&k, stored.into()),
            )
            .await?;
            // Swapping the pointer first means a reader sees the old value or the new, whole.
            if let Some(old) = old {
                self.delete_blobs(vec![(old.bucket, old.name)]).await;
            }
            Ok(())
        })
    }

    fn end_run(&self) -> Result<(), FabricError> {
        if self.opts.party != Party::Server {
            return Ok(());
        }
        self.remove_run().map(|_| ())
    }

    fn set_owners(&self, owners: &[(DeviceId, ClientId)]) {
        self.lock().owners.extend(owners.iter().copied());
    }

    fn tasks_taken(&self, clients: &[ClientId]) -> bool {
        if self.opts.party != Party::Server {
            return false;
        }
        self.run(async {
            for &c in clients {
                // A gone client cannot take its tasks; waiting for it is what the grace is
                // not for. (Unheard ones count only where others beat, as in collections.)
                if self.gone(c).is_some() || self.never_heard(c, Duration::MAX).is_some() {
                    continue;
                }
                let name = format!("task_{c}");
                // Short: the caller polls within its grace, which one slow answer must not
                // outlast by the whole request timeout.
                let info = tokio::time::timeout(
                    self.opts.request_timeout.min(Duration::from_secs(2)),
                    self.tasks.consumer_info(&name),
                );
                match info.await {
                    Ok(Ok(i)) if i.num_pending == 0 && i.num_ack_pending == 0 => {}
                    // Pending tasks, no consumer yet (never connected), or no answer now.
                    _ => return false,
                }
            }
            true
        })
    }

    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, FabricError> {
        self.run(async {
            let k = kv_key(key);
            // A reader that loses the race with a writer deleting the previous object retries.
            for _ in 0..3 {
                let Some(v) = self
                    .bounded(
                        &format!("read state {key}"),
                        self.opts.request_timeout,
                        self.kv.get(&k),
                    )
                    .await?
                else {
                    return Ok(None);
                };
                match v.first() {
                    Some(0) => return Ok(Some(v[1..].to_vec())),
                    Some(1) => {
                        let ptr: StatePtr =
                            serde_json::from_slice(&v[1..]).map_err(proto("state pointer"))?;
                        match self.get_blob(&ptr.blob).await? {
                            Some(b) => return Ok(Some(b)),
                            None => continue,
                        }
                    }
                    _ => {
                        return Err(FabricError::Protocol(format!(
                            "state {key}: unknown value tag"
                        )));
                    }
                }
            }
            Err(FabricError::Protocol(format!(
                "state {key}: its object kept disappearing"
            )))
        })
    }
}

impl NatsFabric {
    async fn publish_task(&self, client: ClientId, payload: Vec<u8>) -> Result<(), FabricError> {
        let limit = self.opts.request_timeout;
        let subject = self.names.task_subject(client);
        // No message id: tasks are never resent by the fabric, and two sends of the same task
        // (a restarted server) must both arrive.
        self.bounded(&format!("publish on {subject}"), limit, async {
            let ack = self
                .js
                .publish(subject.clone(), payload.into())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        })
        .await
        .map(|_| ())
    }

    async fn state_ptr(&self, k: &str) -> Result<Option<BlobRef>, FabricError> {
        let v = self
            .bounded("read state", self.opts.request_timeout, self.kv.get(k))
            .await?;
        Ok(match v {
            Some(v) if v.first() == Some(&1) => serde_json::from_slice::<StatePtr>(&v[1..])
                .ok()
                .map(|p| p.blob),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diverged_client_s_metrics_survive_the_envelope() {
        let mut metrics = Metrics::new();
        metrics.insert("train_loss".into(), f64::NAN);
        metrics.insert("val_loss_after".into(), f64::INFINITY);
        metrics.insert("low".into(), f64::NEG_INFINITY);
        metrics.insert("acc".into(), 0.25);
        let env = ReplyEnv {
            id: MsgId {
                round: 3,
                client: 1,
                kind: TaskKind::Fit,
                attempt: 0,
            },
            kind: TaskKind::Fit,
            n_examples: 7,
            metrics,
            error: None,
            params: None,
        };
        let text = serde_json::to_string(&env).unwrap_or_default();
        let back: ReplyEnv = match serde_json::from_str(&text) {
            Ok(b) => b,
            Err(e) => panic!("{text}: {e}"),
        };
        assert!(back.metrics["train_loss"].is_nan());
        assert_eq!(back.metrics["val_loss_after"], f64::INFINITY);
        assert_eq!(back.metrics["low"], f64::NEG_INFINITY);
        assert_eq!(back.metrics["acc"], 0.25);
        // Anything else in a string is not a number.
        let bad = text.replace("\"NaN\"", "\"many\"");
        let e = serde_json::from_str::<ReplyEnv>(&bad)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("train_loss")), "{bad}");
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        assert!(check_url("nats://127.0.0.1:4222").is_ok());
        assert!(check_url("nats://u:p@127.0.0.1:4222,nats://h:1").is_ok());
        assert!(check_url("localhost:4222").is_ok());
        assert!(check_url("http://x:1").is_err());
        assert!(check_url("nats://host:notaport").is_err());
        assert!(check_url("nats://:4222").is_err());
        assert!(check_url("").is_err());
        assert_eq!(redact_url("nats://u:secret@h:1"), "nats://h:1");
        assert!(check_prefix("run_1-a").is_ok());
        assert!(check_prefix("a.b").is_err());
        assert_eq!(kv_key("ckpt/round.3"), "ckpt=2Fround=2E3");
        for n in [
            "FL_a_TASKS",
            "FL_a_REPLIES",
            "FL_a_X",
            "KV_fl_a_state",
            "OBJ_fl_a_s",
            "OBJ_fl_a_c12",
        ] {
            assert!(belongs_to_run(n, "a"), "{n}");
        }
        for n in [
            "FL_a_c1_TASKS",
            "OBJ_fl_a_c1_s",
            "OBJ_fl_a_c",
            "OBJ_fl_ab_s",
            "KV_fl_a_c1_state",
            "FL_b_X",
        ] {
            assert!(!belongs_to_run(n, "a"), "{n}");
        }
    }
}
