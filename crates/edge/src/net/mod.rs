//! AdaEvo across processes over NATS: one edge process and many mobile processes
//! (`ferrolab adaevo edge|mobile`), event-driven, each mobile end's tasks asynchronous to the
//! others'.
//!
//! Transport: the official `async-nats` client (as `crates/fed`'s NATS fabric uses it) on a
//! small current-thread tokio runtime. Subjects under a run prefix `P`:
//!
//! | subject | from → to | payload | delivery |
//! |---|---|---|---|
//! | `ae.P.req` | mobile → edge (request/reply) | JSON [`TaskRequest`] | the edge answers `accepted` or `dropped: <reason>`; no answer within the upload timeout counts as dropped on the mobile side |
//! | `ae.P.model.<end>` | edge → mobile (request/reply) | JSON [`ModelBlob`] | retried until the mobile acknowledges (`installed v` / `duplicate v` / `rejected: <reason>`): at-least-once, de-duplicated by version |
//! | `ae.P.drop.<end>` | edge → mobile (request/reply) | reason text | retried like blobs |
//!
//! A blob whose SHA-256 does not match is rejected by the mobile end ([`ModelBlob::decode`]
//! checks it first) and the running model stays. A body over the server's message cap (1 MiB
//! by default: a detection upload of 100 RGB 64×64 frames) goes through the run's JetStream
//! object store and the message names it ([`carry`]); classification requests (14×14 grey
//! frames) and model blobs (a few tens of KiB) go inline.
//!
//! Clock: each process maps wall time to simulated time as `elapsed × speed`; the edge's task
//! durations stay the core's cost model (counted FLOPs ÷ throughput), advanced by the same
//! simulated clock. A mobile process runs its end live ([`run_mobile_live`]: its model reads
//! its stream, and shipped models replace it); the mobile processes of the load test replay a
//! precomputed trace of the requests their end would send instead ([`make_traces`],
//! [`run_mobile`]): no model inference runs in them.

pub mod carry;
pub mod cli;
pub mod state;

use crate::config::AdaEvoConfig;
use crate::detect::edge::DetEdge;
use crate::detect::experiment::{DetEdgePrepared, DetEndPrepared};
use crate::edge::{EdgeParams, EdgeServer, EndState};
use crate::experiment::{EdgePrepared, EndPrepared, EvalSet, Prepared};
use crate::mobile::{FrameResult, MobileEnd, MobileParams};
use crate::model::Mlp;
use crate::protocol::{ModelBlob, TaskRequest};
use crate::sim::SimEdge;
use crate::stream::StreamFrame;
use carry::{Carrier, Packed, RequestFailure};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use state::{EndFile, Store, TaskFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where and how fast.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// `nats://host:port`.
    pub url: String,
    /// Run namespace: `[A-Za-z0-9_-]{1,40}`.
    pub prefix: String,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Simulated seconds the ends live (the run's length).
    pub seconds: f64,
    /// Wall limit on one request/reply (upload, blob delivery attempt).
    pub request_timeout: Duration,
    /// Simulated time 0 as wall time, shared by every process of a run so their clocks agree;
    /// `None`: when this process has connected.
    pub start: Option<std::time::SystemTime>,
    /// Edge only: where it persists its tasks and model versions ([`state`]), so that a
    /// restarted edge continues them; `None`: nothing survives the process.
    pub state_dir: Option<PathBuf>,
    /// Edge only: wall time after the ends' life during which unacknowledged models are still
    /// re-sent (an end that went away is then given up, logged as undelivered).
    pub delivery_grace: Duration,
    /// PEM file of the CA that signed the NATS server's certificate (a private CA); TLS is
    /// then required. Default: `$FERROLAB_NATS_CA`, as for `ferrolab fed`.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate and key this process presents when the server verifies clients.
    /// Default: `$FERROLAB_NATS_CERT` and `$FERROLAB_NATS_KEY`.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Bodies above this many bytes go through the object store; `None`: the server's
    /// message cap less room for headers (a lower value is for tests).
    pub inline_limit: Option<usize>,
}

/// `$name` as a path, when set and not empty.
pub(crate) fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl NetOptions {
    /// Defaults: speed 1 (real time), 300 simulated seconds, 10 s requests.
    pub fn new(url: &str, prefix: &str) -> NetOptions {
        NetOptions {
            url: url.to_string(),
            prefix: prefix.to_string(),
            speed: 1.0,
            seconds: 300.0,
            request_timeout: Duration::from_secs(10),
            start: None,
            state_dir: None,
            delivery_grace: Duration::from_secs(30),
            tls_ca: env_path("FERROLAB_NATS_CA"),
            tls_client: env_path("FERROLAB_NATS_CERT").zip(env_path("FERROLAB_NATS_KEY")),
            inline_limit: None,
        }
    }
}

/// What can stop a process.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The user's to fix (malformed URL or prefix, server refused): exit 2.
    #[error("{0}")]
    Usage(String),
    /// Lost connection or protocol failure while running: exit 1.
    #[error("{0}")]
    Runtime(String),
}

fn check_prefix(p: &str) -> Result<(), NetError> {
    if p.is_empty()
        || p.len() > 40
        || !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(NetError::Usage(format!(
            "run prefix `{p}` must be 1-40 characters of A-Z, a-z, 0-9, `_` or `-`"
        )));
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, NetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetError::Runtime(format!("tokio runtime: {e}")))
}

async fn connect(opts: &NetOptions, name: &str) -> Result<async_nats::Client, NetError> {
    check_prefix(&opts.prefix)?;
    let addr: async_nats::ServerAddr = opts
        .url
        .parse()
        .map_err(|e| NetError::Usage(format!("NATS URL `{}`: {e}", opts.url)))?;
    let mut base = async_nats::ConnectOptions::new();
    // A missing PEM file would otherwise surface as a TLS handshake error naming nothing.
    let readable = |what: &str, p: &std::path::Path| {
        std::fs::File::open(p)
            .map(drop)
            .map_err(|e| NetError::Usage(format!("TLS {what} {}: {e}", p.display())))
    };
    if let Some(ca) = &opts.tls_ca {
        readable("CA file (FERROLAB_NATS_CA / --tls-ca)", ca)?;
        base = base.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &opts.tls_client {
        readable("client certificate (FERROLAB_NATS_CERT / --tls-cert)", cert)?;
        readable("client key (FERROLAB_NATS_KEY / --tls-key)", key)?;
        base = base.add_client_certificate(cert.clone(), key.clone());
    }
    let connect = base
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(opts.request_timeout))
        .name(name)
        .connect(addr);
    match tokio::time::timeout(Duration::from_secs(4), connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(NetError::Usage(format!(
            "cannot connect to NATS at {}: {e}",
            opts.url
        ))),
        Err(_) => Err(NetError::Usage(format!(
            "cannot connect to NATS at {}: no answer within 4 s",
            opts.url
        ))),
    }
}

/// Connects to the NATS server as `opts` says (URL, TLS files) and round-trips once, then
/// disconnects: the processes call it before they build their models, so that a wrong URL, an
/// unreachable server or a certificate the server does not accept is one line and exit 2
/// within seconds rather than after the preparation.
pub fn probe(opts: &NetOptions) -> Result<(), NetError> {
    runtime()?.block_on(async {
        let client = connect(opts, "adaevo probe").await?;
        client
            .flush()
            .await
            .map_err(|e| NetError::Usage(format!("NATS at {}: {e}", opts.url)))
    })
}

/// [`probe`] for a run whose bodies can exceed the server's message cap (the detection task's
/// uploads): also opens the run's object store, so that a server without JetStream is one
/// line and exit 2 at start rather than a dropped upload at every trigger.
pub fn probe_store(opts: &NetOptions) -> Result<(), NetError> {
    runtime()?.block_on(async {
        let client = connect(opts, "adaevo probe").await?;
        let carrier = Carrier::new(&client, &opts.prefix, opts.inline_limit, opts.request_timeout);
        carrier.ready().await.map_err(|e| {
            NetError::Usage(format!(
                "NATS at {}: the detection task's uploads are over the server's {} B message cap and go through JetStream's object store, which is not available: {e}",
                opts.url,
                client.server_info().max_payload
            ))
        })
    })
}

/// Waits for the run's shared start (if it is ahead) and returns it as an `Instant`.
async fn start_instant(opts: &NetOptions, who: &str) -> Instant {
    let Some(start) = opts.start else {
        return Instant::now();
    };
    match start.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => {
            tokio::time::sleep(ahead).await;
            Instant::now()
        }
        // Already past: this process joined late; its clock is the run's.
        Err(e) => {
            let late = e.duration().as_secs_f64();
            if late > 1.0 {
                // Said, not refused: a restarted process joins late on purpose. One that
                // missed the whole run (its models took longer to build than --start
                // allowed) would otherwise print an empty summary with no hint why.
                let sim = late * opts.speed;
                let over = if sim >= opts.seconds {
                    " — after the run's end, so it takes part in nothing (start the run later: --start)"
                } else {
                    ""
                };
                eprintln!(
                    "{who}: joined {late:.1} s after the run's start (simulated {sim:.0} of {:.0} s){over}",
                    opts.seconds
                );
            }
            Instant::now()
                .checked_sub(e.duration())
                .unwrap_or_else(Instant::now)
        }
    }
}

fn subject(prefix: &str, what: &str) -> String {
    format!("ae.{prefix}.{what}")
}

/// The mobile-end parameters of the `adaevo` method (as the in-process experiment builds them)
/// for a factory model of clean accuracy `clean`.
pub fn mobile_params(cfg: &AdaEvoConfig, clean: f64, life_s: f64) -> MobileParams {
    crate::experiment::mobile_params_at(cfg, "adaevo", clean, life_s)
}

/// The edge parameters of the `adaevo` method (knapsack scheduler, profiler).
pub fn edge_params(cfg: &AdaEvoConfig, prep: &EdgePrepared, seed: u64) -> EdgeParams {
    crate::experiment::method_edge_params(cfg, &prep.anchor, "adaevo", seed)
}

/// One end's precomputed requests: what its mobile end sends, in time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Mobile end id.
    pub end: usize,
    /// Requests with their trigger times (`trigger_t`).
    pub requests: Vec<TaskRequest>,
}

/// Runs each end's mobile logic (inference, estimate, trigger, drift type, sampling) over its
/// stream for `seconds` with the factory model and records the requests; after each request
/// the end is released as if its task had been dropped, so later drifts trigger too. This is
/// the inference the load test's mobile processes do not redo.
pub fn make_traces(cfg: &AdaEvoConfig, prep: &Prepared, seconds: usize) -> Vec<Trace> {
    (0..prep.frames.len())
        .map(|k| {
            class_trace(
                cfg,
                k,
                &prep.mobile,
                prep.clean_accuracy,
                &prep.frames[k],
                seconds,
            )
        })
        .collect()
}

/// One end's trace of [`make_traces`], from that end's share only.
pub fn make_trace(cfg: &AdaEvoConfig, prep: &EndPrepared, seconds: usize) -> Trace {
    class_trace(
        cfg,
        prep.end,
        &prep.mobile,
        prep.clean_accuracy,
        &prep.frames,
        seconds,
    )
}

/// End `end`'s trace over `frames`, read by the factory model `mobile` of clean accuracy
/// `clean` (borrowed, so the whole run's traces copy no stream).
fn class_trace(
    cfg: &AdaEvoConfig,
    end: usize,
    mobile: &Mlp,
    clean: f64,
    frames: &[StreamFrame],
    seconds: usize,
) -> Trace {
    let mut task = ClassTask {
        frames,
        fps: cfg.stream.fps,
        eval: &[],
    };
    let params = mobile_params(cfg, clean, seconds as f64);
    trace_of(end, mobile, params, seconds, &mut task)
}

/// [`make_trace`] for the detection task: end `k`'s factory detector reads its rendered
/// stream (estimate CLC, trigger, drift type, sampling of RGB frames).
pub fn make_det_trace(cfg: &AdaEvoConfig, prep: &DetEndPrepared, seconds: usize) -> Trace {
    let params = det_mobile_params(cfg, prep.clean_map, seconds as f64);
    let mut task = DetTask::new(cfg, prep);
    trace_of(prep.end, &prep.mobile, params, seconds, &mut task)
}

fn trace_of(
    k: usize,
    model: &Mlp,
    params: MobileParams,
    seconds: usize,
    task: &mut dyn LiveTask,
) -> Trace {
    let mut end = MobileEnd::new(k, model.clone(), params);
    let mut requests = Vec::new();
    for t in 0..seconds {
        if let Some(r) = task.second(&mut end, t).and_then(|f| f.request) {
            requests.push(r);
            end.task_dropped();
        }
    }
    Trace { end: k, requests }
}

/// The detection task's mobile parameters of the `adaevo` method (`clean_map`: the factory
/// detector's clear-water mAP@0.5, the QoE thresholds' base).
pub fn det_mobile_params(cfg: &AdaEvoConfig, clean_map: f64, life_s: f64) -> MobileParams {
    crate::experiment::mobile_params_at(cfg, "adaevo", clean_map, life_s)
}

/// What a live end reads each second and how its model is scored: the task's side of a
/// mobile process.
trait LiveTask {
    /// `end` processes second `sec` of its stream; `None` when the stream has no frame then.
    fn second(&mut self, end: &mut MobileEnd, sec: usize) -> Option<FrameResult>;
    /// `model`'s accuracy on evaluation set `tick`, when the stream has one.
    fn accuracy(&self, model: &Mlp, tick: usize) -> Option<f64>;
}

/// Classification: `fps` grey frames a second, top-1 accuracy.
struct ClassTask<'a> {
    frames: &'a [StreamFrame],
    fps: usize,
    eval: &'a [EvalSet],
}

impl LiveTask for ClassTask<'_> {
    fn second(&mut self, end: &mut MobileEnd, sec: usize) -> Option<FrameResult> {
        let frames = crate::experiment::second(self.frames, sec, self.fps);
        (!frames.is_empty()).then(|| end.on_second(sec, frames))
    }

    fn accuracy(&self, model: &Mlp, tick: usize) -> Option<f64> {
        self.eval.get(tick).map(|(xs, ys)| model.accuracy(xs, ys))
    }
}

/// Detection: one rendered RGB frame a second, read as the in-process experiment reads it
/// (detections above `detect.det_score`, CLC from the IoU regressor, the descriptor image for
/// drift typing); mAP@0.5 on the moment's evaluation frames.
struct DetTask<'a> {
    prep: &'a DetEndPrepared,
    floor: f32,
}

impl<'a> DetTask<'a> {
    fn new(cfg: &AdaEvoConfig, prep: &'a DetEndPrepared) -> DetTask<'a> {
        DetTask {
            prep,
            floor: cfg.detect.det_score as f32,
        }
    }
}

impl LiveTask for DetTask<'_> {
    fn second(&mut self, end: &mut MobileEnd, sec: usize) -> Option<FrameResult> {
        let p = self.prep;
        let f = p.frames.get(sec)?;
        let dets = p.grid.detect(&end.model, &f.rgb, self.floor);
        let (clc, _) = crate::detect::estimator::frame_clc(&p.iou, &f.rgb, &dets, self.floor);
        let desc = crate::detect::stream::descriptor_input(&f.rgb, p.grid.side);
        Some(end.on_estimate(sec as f64, &f.rgb, &desc, clc, 0))
    }

    fn accuracy(&self, model: &Mlp, tick: usize) -> Option<f64> {
        let set = self.prep.eval.get(tick)?;
        let pairs = crate::detect::experiment::pairs(set);
        Some(crate::detect::grid::model_map50(
            &self.prep.grid,
            model,
            &pairs,
        ))
    }
}

/// What a mobile process did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MobileSummary {
    /// End id.
    pub end: usize,
    /// Requests of the trace whose time came.
    pub triggered: usize,
    /// Of those, skipped because the previous task was still in flight.
    pub skipped_in_flight: usize,
    /// Sent and accepted by the edge.
    pub accepted: usize,
    /// Task outcomes: installed model versions, in arrival order.
    pub installed: Vec<u64>,
    /// Task outcomes: drop reasons (from the edge, or the upload's own failure).
    pub dropped: Vec<String>,
    /// Blobs refused (checksum, wrong end, malformed), with the reason.
    pub rejected: Vec<String>,
    /// Re-deliveries of an installed version (acknowledged, not installed twice).
    pub duplicates: usize,
    /// Upload bytes (frames).
    pub upload_bytes: usize,
    /// Tasks still in flight when the process stopped.
    pub unresolved: usize,
    /// Uploads that timed out (counted dropped) whose model the edge shipped after all: the
    /// request reached a slow edge after the end gave up on it. Moved from `dropped` to
    /// `installed` when the model came.
    #[serde(default)]
    pub late_installs: usize,
    /// A live end (not a trace replay): its model's accuracy on the stream's evaluation sets,
    /// `(simulated t, running model version, accuracy)` every `stream.eval_every_s`.
    #[serde(default)]
    pub accuracy: Vec<(f64, u64, f64)>,
    /// A live end: mean of `accuracy`, and its QoE (share of evaluations at or above 90% / 80%
    /// of the factory model's clean accuracy, as `ferrolab adaevo` reports it).
    #[serde(default)]
    pub avg_accuracy: Option<f64>,
    #[serde(default)]
    pub qoe_t90: Option<f64>,
    #[serde(default)]
    pub qoe_t80: Option<f64>,
    /// Uploads too large for one message, sent through the object store.
    #[serde(default)]
    pub stored_uploads: usize,
    /// Model blobs received through the object store.
    #[serde(default)]
    pub stored_blobs: usize,
}

/// Where a mobile process's requests come from.
enum Source<'a> {
    /// A precomputed trace (the load test: no inference in the process).
    Trace { trace: &'a Trace, next: usize },
    /// The end itself: its running model reads its stream second by second, and models the
    /// edge ships replace it.
    Live(Box<Live<'a>>),
}

struct Live<'a> {
    end: MobileEnd,
    task: Box<dyn LiveTask + 'a>,
    every: usize,
    /// The next simulated second to process.
    next_t: usize,
    thresholds: (f64, f64),
}

impl Source<'_> {
    /// The requests due by simulated time `t` (at most `seconds`), in order; a live end
    /// processes every second up to `t` first (and evaluates its model on the way).
    fn due(&mut self, t: f64, seconds: f64, s: &mut MobileSummary) -> Vec<TaskRequest> {
        let mut out = Vec::new();
        match self {
            Source::Trace { trace, next } => {
                while *next < trace.requests.len() && trace.requests[*next].trigger_t <= t {
                    out.push(trace.requests[*next].clone());
                    *next += 1;
                }
            }
            Source::Live(l) => {
                let last = (t.min(seconds - 1.0)).floor();
                while last >= 0.0 && (l.next_t as f64) <= last {
                    let sec = l.next_t;
                    l.next_t += 1;
                    let Some(f) = l.task.second(&mut l.end, sec) else {
                        continue;
                    };
                    if let Some(r) = f.request {
                        out.push(r);
                    }
                    if sec % l.every == 0
                        && let Some(acc) = l.task.accuracy(&l.end.model, sec / l.every)
                    {
                        s.accuracy.push((sec as f64, l.end.version, acc));
                    }
                }
            }
        }
        out
    }

    /// The end's task ended without a model (dropped, or the upload failed).
    fn task_dropped(&mut self) {
        if let Source::Live(l) = self {
            l.end.task_dropped();
        }
    }

    /// Installs `blob` (already known to be for this end and newer than the running
    /// version): a live end verifies and runs it; a trace only checks that it decodes.
    fn install(&mut self, blob: &ModelBlob) -> Result<(), crate::protocol::ProtocolError> {
        match self {
            Source::Trace { .. } => blob.decode().map(|_| ()),
            Source::Live(l) => l.end.install(blob),
        }
    }

    fn finish(&self, s: &mut MobileSummary) {
        if let Source::Live(l) = self {
            let accs: Vec<f64> = s.accuracy.iter().map(|a| a.2).collect();
            if !accs.is_empty() {
                s.avg_accuracy = Some(crate::estimator::mean(&accs));
                s.qoe_t90 = Some(crate::sim::qoe(&accs, l.thresholds.0));
                s.qoe_t80 = Some(crate::sim::qoe(&accs, l.thresholds.1));
            }
        }
    }
}

/// Mobile end `trace.end`: replays its trace on the simulated clock, uploads requests, installs
/// the model versions the edge ships (checksum-verified), and stops `tail_s` simulated seconds
/// after its life ends (or once nothing is in flight).
pub fn run_mobile(
    trace: &Trace,
    opts: &NetOptions,
    tail_s: f64,
) -> Result<MobileSummary, NetError> {
    let rt = runtime()?;
    let source = Source::Trace { trace, next: 0 };
    rt.block_on(mobile_loop(trace.end, source, opts, tail_s))
}

/// Mobile end `end` of `prep`, live: the `adaevo` method's mobile logic runs its compressed
/// model on its stream on the simulated clock (estimate, trigger, drift type, sampling),
/// uploads the requests it makes, and runs each model the edge ships from then on (verified:
/// checksum, end, layer widths, newer version). Its accuracy on the stream's evaluation sets
/// is reported every `stream.eval_every_s` with the model version that produced it.
pub fn run_mobile_live(
    cfg: &AdaEvoConfig,
    prep: &EndPrepared,
    opts: &NetOptions,
    tail_s: f64,
) -> Result<MobileSummary, NetError> {
    let end = prep.end;
    let params = mobile_params(cfg, prep.clean_accuracy, opts.seconds);
    let live = Live {
        end: MobileEnd::new(end, prep.mobile.clone(), params),
        task: Box::new(ClassTask {
            frames: &prep.frames,
            fps: cfg.stream.fps,
            eval: &prep.eval,
        }),
        every: cfg.stream.eval_every_s,
        next_t: 0,
        thresholds: (0.9 * prep.clean_accuracy, 0.8 * prep.clean_accuracy),
    };
    let rt = runtime()?;
    rt.block_on(mobile_loop(end, Source::Live(Box::new(live)), opts, tail_s))
}

/// [`run_mobile_live`] for the detection task: end `end`'s pruned int8 detector reads its
/// rendered camera path (CLC estimate, trigger, drift type, sampling), uploads its RGB frames
/// (through the object store when over the message cap) and runs each detector the edge
/// ships; its mAP@0.5 on the moment's evaluation frames is reported every
/// `stream.eval_every_s`, QoE against 90% / 80% of the factory detector's clean-water mAP.
pub fn run_det_mobile_live(
    cfg: &AdaEvoConfig,
    prep: &DetEndPrepared,
    opts: &NetOptions,
    tail_s: f64,
) -> Result<MobileSummary, NetError> {
    let end = prep.end;
    let live = Live {
        end: MobileEnd::new(
            end,
            prep.mobile.clone(),
            det_mobile_params(cfg, prep.clean_map, opts.seconds),
        ),
        task: Box::new(DetTask::new(cfg, prep)),
        every: cfg.stream.eval_every_s,
        next_t: 0,
        thresholds: (0.9 * prep.clean_map, 0.8 * prep.clean_map),
    };
    let rt = runtime()?;
    rt.block_on(mobile_loop(end, Source::Live(Box::new(live)), opts, tail_s))
}

async fn mobile_loop(
    end: usize,
    mut source: Source<'_>,
    opts: &NetOptions,
    tail_s: f64,
) -> Result<MobileSummary, NetError> {
    let client = connect(opts, &format!("adaevo mobile {end}")).await?;
    let carrier = Carrier::new(
        &client,
        &opts.prefix,
        opts.inline_limit,
        opts.request_timeout,
    );
    let mut models = client
        .subscribe(subject(&opts.prefix, &format!("model.{end}")))
        .await
        .map_err(|e| NetError::Runtime(format!("subscribe: {e}")))?;
    let mut drops = client
        .subscribe(subject(&opts.prefix, &format!("drop.{end}")))
        .await
        .map_err(|e| NetError::Runtime(format!("subscribe: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| NetError::Runtime(format!("flush: {e}")))?;
    let mut s = MobileSummary {
        end,
        ..Default::default()
    };
    let t0 = start_instant(opts, &format!("adaevo mobile {end}")).await;
    let now = |t0: Instant| t0.elapsed().as_secs_f64() * opts.speed;
    let mut in_flight: Option<u64> = None;
    // Drop reasons of uploads whose outcome is unknown (timed out: the edge may have received
    // them and accepted late). A model arriving with nothing in flight answers the oldest; what
    // is left when the process stops goes to `dropped`.
    let mut uncertain: Vec<String> = Vec::new();
    let mut version = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        let t = now(t0);
        if t > opts.seconds + tail_s || (t > opts.seconds && in_flight.is_none()) {
            break;
        }
        for mut req in source.due(t.min(opts.seconds), opts.seconds, &mut s) {
            s.triggered += 1;
            if in_flight.is_some() {
                s.skipped_in_flight += 1;
                continue;
            }
            req.model_version = version;
            req.remaining_s = (opts.seconds - req.trigger_t).max(0.0);
            let payload = serde_json::to_vec(&req)
                .map_err(|e| NetError::Runtime(format!("encode request: {e}")))?;
            let packed = match carrier
                .pack(
                    &carry::object_name(&format!("req-{end}-{}", req.seq)),
                    payload,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    s.dropped.push(format!("upload failed: {e}"));
                    source.task_dropped();
                    continue;
                }
            };
            s.upload_bytes += req.upload_bytes();
            s.stored_uploads += usize::from(packed.object.is_some());
            let answer = carrier
                .request(subject(&opts.prefix, "req"), &packed, opts.request_timeout)
                .await;
            // Answered: the edge has read the body and deleted it. Timed out: it may still be
            // queued at the edge, which would accept it late and delete it then. Not sent at
            // all: nobody will read it. (What is left goes with the bucket at the run's end.)
            if let (Err(RequestFailure::Failed(_)), Some(name)) = (&answer, &packed.object) {
                carrier.delete(name).await;
            }
            match answer {
                Ok(m) if &m.payload[..] == b"accepted" => {
                    s.accepted += 1;
                    in_flight = Some(req.seq);
                }
                Ok(m) => {
                    s.dropped
                        .push(String::from_utf8_lossy(&m.payload).into_owned());
                    source.task_dropped();
                }
                Err(RequestFailure::TimedOut(e)) => {
                    uncertain.push(format!("upload failed: {e}"));
                    source.task_dropped();
                }
                Err(RequestFailure::Failed(e)) => {
                    s.dropped.push(format!("upload failed: {e}"));
                    source.task_dropped();
                }
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            Some(m) = models.next() => {
                let body = match carrier.unpack(&m).await {
                    Ok(b) => b,
                    Err(e) => {
                        // Not answered: the edge sends the blob again (an answer, even a
                        // refusal, would end its delivery and lose the version).
                        eprintln!("adaevo mobile {end}: model blob unreadable for now: {e}");
                        continue;
                    }
                };
                s.stored_blobs += usize::from(body.1.is_some());
                let decoded = serde_json::from_slice::<ModelBlob>(&body.0);
                let ack = match decoded {
                    Err(e) => {
                        let why = format!("malformed blob: {e}");
                        s.rejected.push(why.clone());
                        format!("rejected: {why}")
                    }
                    Ok(blob) if blob.end != end => {
                        let why = format!("blob for end {} sent to end {end}", blob.end);
                        s.rejected.push(why.clone());
                        format!("rejected: {why}")
                    }
                    Ok(blob) if blob.version <= version => {
                        s.duplicates += 1;
                        format!("duplicate {}", blob.version)
                    }
                    Ok(blob) => match source.install(&blob) {
                        Ok(()) => {
                            version = blob.version;
                            s.installed.push(version);
                            if in_flight.is_none() && !uncertain.is_empty() {
                                uncertain.remove(0);
                                s.accepted += 1;
                                s.late_installs += 1;
                            }
                            in_flight = None;
                            format!("installed {version}")
                        }
                        Err(e) => {
                            s.rejected.push(e.to_string());
                            format!("rejected: {e}")
                        }
                    },
                };
                if let Some(r) = m.reply {
                    let _ = client.publish(r, ack.into()).await;
                }
            }
            Some(m) = drops.next() => {
                let why = String::from_utf8_lossy(&m.payload).into_owned();
                if in_flight.is_some() {
                    s.dropped.push(why);
                    in_flight = None;
                    source.task_dropped();
                }
                if let Some(r) = m.reply {
                    let _ = client.publish(r, "ok".into()).await;
                }
            }
        }
    }
    s.unresolved = usize::from(in_flight.is_some());
    s.dropped.append(&mut uncertain);
    source.finish(&mut s);
    let _ = client.flush().await;
    Ok(s)
}

/// What the edge process did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeSummary {
    /// Requests received.
    pub received: usize,
    /// Accepted into the queue.
    pub accepted: usize,
    /// Finished and acknowledged by their end.
    pub completed: usize,
    /// Dropped, with the reason, by (end, seq).
    pub dropped: Vec<(usize, u64, String)>,
    /// Model versions shipped per end (each acknowledged).
    pub versions: BTreeMap<usize, Vec<u64>>,
    /// Deliveries that were never acknowledged.
    pub undelivered: Vec<(usize, u64)>,
    /// Highest task memory in use at once (the core's measured peak), bytes.
    pub peak_memory: u64,
    /// The configured budget, bytes.
    pub memory_budget: u64,
    /// Peak resident set of the process (Linux `VmHWM`), bytes, when readable.
    pub peak_rss: Option<u64>,
    /// Simulated seconds the edge was busy.
    pub busy_s: f64,
    /// Wall seconds.
    pub wall_s: f64,
    /// With a state directory: accepted tasks found unfinished at start, re-queued.
    pub restored_tasks: usize,
    /// With a state directory: each end's last shipped version found at start.
    pub restored_versions: BTreeMap<usize, u64>,
    /// With a state directory: unacknowledged models found at start, sent again.
    pub redelivered: usize,
    /// Uploads received through the object store (too large for one message).
    #[serde(default)]
    pub stored_uploads: usize,
}

/// The edge as the net layer drives it: the simulation's calls plus what the state directory
/// persists (the classification [`EdgeServer`] and the detection [`DetEdge`]).
pub trait NetEdge: SimEdge {
    /// End `end`'s state as of its last finished task.
    fn end_state(&self, end: usize) -> Option<EndState>;
    /// Puts back a persisted end state.
    fn restore_end(&mut self, state: EndState);
    /// Task ids continue from at least `next`.
    fn reserve_ids(&mut self, next: usize);
    /// The next task's id.
    fn next_id(&self) -> usize;
    /// Registers end `end` with its factory models.
    fn register(&mut self, end: usize, dense: Mlp, deployed: Mlp);
}

macro_rules! net_edge {
    ($t:ty) => {
        impl NetEdge for $t {
            fn end_state(&self, end: usize) -> Option<EndState> {
                <$t>::end_state(self, end)
            }
            fn restore_end(&mut self, state: EndState) {
                <$t>::restore_end(self, state)
            }
            fn reserve_ids(&mut self, next: usize) {
                <$t>::reserve_ids(self, next)
            }
            fn next_id(&self) -> usize {
                <$t>::next_id(self)
            }
            fn register(&mut self, end: usize, dense: Mlp, deployed: Mlp) {
                <$t>::register(self, end, dense, deployed)
            }
        }
    };
}

net_edge!(EdgeServer);
net_edge!(DetEdge);

/// What [`edge_loop`] serves: an edge, its ends and their factory models.
struct Served<'a, E> {
    edge: E,
    ends: usize,
    /// The factory model before int8, the edge's copy of every end's (a restored state is
    /// checked against its shape).
    dense: &'a Mlp,
    /// The factory compressed model every end starts with.
    mobile: &'a Mlp,
    memory_budget: u64,
}

fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Sends `payload` to `subj` as a request until it is acknowledged or `until` passes.
async fn deliver(
    carrier: &Carrier,
    subj: String,
    payload: &Packed,
    per_try: Duration,
    until: Instant,
) -> Option<String> {
    while Instant::now() < until {
        if let Ok(m) = carrier.request(subj.clone(), payload, per_try).await {
            return Some(String::from_utf8_lossy(&m.payload).into_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The edge process: serves `ends` ends with the models of `prep`, event-driven: requests are
/// submitted as they arrive, scheduled (knapsack DP over the memory budget) and advanced on
/// the simulated clock, finished models shipped to their end. At the end of the ends' life,
/// tasks still queued or running are dropped with that reason.
pub fn run_edge(
    cfg: &AdaEvoConfig,
    prep: &EdgePrepared,
    seed: u64,
    opts: &NetOptions,
) -> Result<EdgeSummary, NetError> {
    let params = edge_params(cfg, prep, seed);
    let served = Served {
        memory_budget: params.memory,
        edge: EdgeServer::new(params, prep.teacher.clone()),
        ends: prep.ends,
        dense: &prep.dense,
        mobile: &prep.mobile,
    };
    runtime()?.block_on(edge_loop(cfg, seed, opts, served))
}

/// [`run_edge`] for the detection task: the detection edge labels each upload's RGB frames
/// with the teacher detector, profiles, schedules, retrains, re-prunes and ships the detector
/// (the `adaevo` method's components, as `ferrolab adaevo --preset detection` runs them).
pub fn run_det_edge(
    cfg: &AdaEvoConfig,
    prep: &DetEdgePrepared,
    seed: u64,
    opts: &NetOptions,
) -> Result<EdgeSummary, NetError> {
    let params =
        crate::detect::experiment::edge_params_with(cfg, prep.grid, &prep.anchor, "adaevo", seed);
    let served = Served {
        memory_budget: params.memory,
        edge: DetEdge::new(params, prep.teacher.clone()),
        ends: prep.ends,
        dense: &prep.dense,
        mobile: &prep.mobile,
    };
    runtime()?.block_on(edge_loop(cfg, seed, opts, served))
}

async fn edge_loop<E: NetEdge>(
    cfg: &AdaEvoConfig,
    seed: u64,
    opts: &NetOptions,
    served: Served<'_, E>,
) -> Result<EdgeSummary, NetError> {
    let Served {
        mut edge,
        ends: n,
        dense: reference,
        mobile,
        memory_budget,
    } = served;
    for k in 0..n {
        edge.register(k, reference.clone(), mobile.clone());
    }
    // The state directory is checked before connecting: another run's directory is the user's
    // mistake (exit 2), found before any work.
    let store = match &opts.state_dir {
        Some(dir) => {
            let cfg_json = serde_json::to_string(cfg)
                .map_err(|e| NetError::Runtime(format!("config as JSON: {e}")))?;
            let fp = state::fingerprint(&cfg_json, seed, n);
            Some(Store::open(dir, &fp).map_err(|e| match e {
                state::StateError::OtherRun { .. } | state::StateError::NotState { .. } => {
                    NetError::Usage(e.to_string())
                }
                state::StateError::Io { .. } => NetError::Runtime(e.to_string()),
            })?)
        }
        None => None,
    };
    let persist = |r: Result<(), state::StateError>| {
        r.map_err(|e| NetError::Runtime(format!("cannot persist the edge's state: {e}")))
    };
    // Read and checked before connecting: a damaged or foreign state file is the user's to
    // fix (exit 2), found before the edge serves anyone.
    let loaded = match &store {
        Some(st) => st
            .load_checked(|l| l.check(reference, n))
            .map_err(|e| NetError::Usage(format!("cannot read the edge's state: {e}")))?,
        None => state::Loaded::default(),
    };
    let client = connect(opts, "adaevo edge").await?;
    let mut reqs = client
        .subscribe(subject(&opts.prefix, "req"))
        .await
        .map_err(|e| NetError::Runtime(format!("subscribe: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| NetError::Runtime(format!("flush: {e}")))?;
    let carrier = Carrier::new(
        &client,
        &opts.prefix,
        opts.inline_limit,
        opts.request_timeout,
    );
    let mut s = EdgeSummary {
        memory_budget,
        ..Default::default()
    };
    // Per end: the last finished task and the models not yet acknowledged (persisted with the
    // end's state).
    let mut finished_seq: BTreeMap<usize, u64> = BTreeMap::new();
    let mut outbox: BTreeMap<usize, Vec<ModelBlob>> = BTreeMap::new();
    for (end, f) in loaded.ends {
        s.restored_versions.insert(end, f.state.version);
        edge.reserve_ids(f.next_id);
        edge.restore_end(f.state);
        if let Some(q) = f.finished_seq {
            finished_seq.insert(end, q);
        }
        s.redelivered += f.outbox.len();
        outbox.insert(end, f.outbox);
    }
    let t0 = start_instant(opts, "adaevo edge").await;
    let now = |t0: Instant| t0.elapsed().as_secs_f64() * opts.speed;
    // A restarted edge joins the run's clock where it is now (not at 0: the time it was down
    // is not training time).
    let mut clock = now(t0).min(opts.seconds);
    let mut open: BTreeSet<(usize, u64)> = BTreeSet::new();
    // Accepted tasks of the previous process: re-queued with their original arrival (tasks
    // that were running start again from the end's last finished model).
    for t in loaded.tasks {
        let key = (t.req.end, t.req.seq);
        if key.0 >= n {
            continue;
        }
        match edge.submit(t.req, t.arrival.min(clock)) {
            Ok(()) => {
                open.insert(key);
                s.restored_tasks += 1;
            }
            Err(e) => {
                if let Some(st) = &store {
                    persist(st.remove_task(key.0, key.1))?;
                }
                s.dropped
                    .push((key.0, key.1, format!("restored task: {e}")));
            }
        }
    }
    edge.schedule(clock);
    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_try = opts.request_timeout.min(Duration::from_secs(2));
    let give_up =
        |t0: Instant| t0 + Duration::from_secs_f64(opts.seconds / opts.speed) + opts.delivery_grace;
    let ship = |sends: &mut tokio::task::JoinSet<(usize, u64, Option<String>)>,
                blob: &ModelBlob|
     -> Result<(), NetError> {
        let payload =
            serde_json::to_vec(blob).map_err(|e| NetError::Runtime(format!("encode blob: {e}")))?;
        let subj = subject(&opts.prefix, &format!("model.{}", blob.end));
        let (end, version) = (blob.end, blob.version);
        let cr = carrier.clone();
        let until = give_up(t0);
        sends.spawn(async move {
            let name = carry::object_name(&format!("model-{end}-{version}"));
            let packed = match cr.pack(&name, payload).await {
                Ok(p) => p,
                Err(e) => {
                    // Left in the outbox: a restarted edge sends it again.
                    eprintln!("adaevo edge: model {version} of end {end}: {e}");
                    return (end, version, None);
                }
            };
            let ack = deliver(&cr, subj, &packed, per_try, until).await;
            if let Some(name) = &packed.object {
                cr.delete(name).await;
            }
            (end, version, ack)
        });
        Ok(())
    };
    for blobs in outbox.values() {
        for b in blobs {
            ship(&mut sends, b)?;
        }
    }
    // Writes end `end`'s state file (after a finished task or an acknowledgement).
    let save_end = |edge: &E,
                    end: usize,
                    finished_seq: &BTreeMap<usize, u64>,
                    outbox: &BTreeMap<usize, Vec<ModelBlob>>|
     -> Result<(), NetError> {
        let (Some(st), Some(state)) = (&store, edge.end_state(end)) else {
            return Ok(());
        };
        persist(st.put_end(&EndFile {
            state,
            finished_seq: finished_seq.get(&end).copied(),
            outbox: outbox.get(&end).cloned().unwrap_or_default(),
            next_id: edge.next_id(),
        }))
    };
    while clock < opts.seconds {
        tokio::select! {
            _ = tick.tick() => {}
            Some(m) = reqs.next() => {
                s.received += 1;
                let t = now(t0).min(opts.seconds);
                let body = carrier.unpack(&m).await;
                let stored = body.as_ref().ok().and_then(|b| b.1.clone());
                s.stored_uploads += usize::from(stored.is_some());
                let decoded = body
                    .map_err(|e| format!("upload unreadable: {e}"))
                    .and_then(|(b, _)| {
                        serde_json::from_slice::<TaskRequest>(&b)
                            .map_err(|e| format!("malformed request: {e}"))
                    });
                let answer = match decoded {
                    Err(e) => format!("dropped: {e}"),
                    Ok(req) if req.end >= n => format!("dropped: unknown end {}", req.end),
                    Ok(req) if open.contains(&(req.end, req.seq))
                        || finished_seq.get(&req.end).is_some_and(|q| req.seq <= *q) => {
                        // A re-sent upload of a task this edge (or its previous process)
                        // already holds: not a second task.
                        format!("dropped: task {} of end {} already accepted", req.seq, req.end)
                    }
                    Ok(req) => {
                        let key = (req.end, req.seq);
                        // Persisted before the answer: an `accepted` task survives a crash.
                        let saved = match &store {
                            Some(st) => st.put_task(&TaskFile { arrival: t, req: req.clone() }),
                            None => Ok(()),
                        };
                        match saved {
                            Err(e) => {
                                let why = format!("edge cannot persist the task: {e}");
                                eprintln!("adaevo edge: {why}");
                                s.dropped.push((key.0, key.1, why.clone()));
                                format!("dropped: {why}")
                            }
                            Ok(()) => match edge.submit(req, t) {
                                Ok(()) => {
                                    s.accepted += 1;
                                    open.insert(key);
                                    "accepted".to_string()
                                }
                                Err(e) => {
                                    if let Some(st) = &store {
                                        persist(st.remove_task(key.0, key.1))?;
                                    }
                                    s.dropped.push((key.0, key.1, e.to_string()));
                                    format!("dropped: {e}")
                                }
                            },
                        }
                    }
                };
                if let Some(r) = &m.reply {
                    let _ = client.publish(r.clone(), answer.into()).await;
                }
                if let Some(name) = stored {
                    // Read once, deleted after the answer (not before: the sender is waiting).
                    carrier.delete(&name).await;
                }
                edge.schedule(t);
            }
        }
        let t = now(t0).min(opts.seconds);
        if t > clock {
            for c in edge.advance(clock, t - clock) {
                open.remove(&(c.end, c.seq));
                finished_seq.insert(c.end, c.seq);
                outbox.entry(c.end).or_default().push(c.blob.clone());
                // The end's new version and its blob are durable before the task is forgotten.
                save_end(&edge, c.end, &finished_seq, &outbox)?;
                if let Some(st) = &store {
                    persist(st.remove_task(c.end, c.seq))?;
                }
                ship(&mut sends, &c.blob)?;
            }
            clock = t;
            edge.schedule(clock);
        }
        while let Some(Ok((end, version, ack))) = sends.try_join_next() {
            settle(&mut s, &mut outbox, end, version, ack);
            save_end(&edge, end, &finished_seq, &outbox)?;
        }
    }
    // The ends' life is over: what is still open will never be useful to them.
    for (end, seq) in std::mem::take(&mut open) {
        let why = format!(
            "run ended at {:.0} s before the task finished",
            opts.seconds
        );
        if let Some(st) = &store {
            persist(st.remove_task(end, seq))?;
        }
        s.dropped.push((end, seq, why.clone()));
        let cr = carrier.clone();
        let subj = subject(&opts.prefix, &format!("drop.{end}"));
        let until = Instant::now() + Duration::from_secs(10);
        sends.spawn(async move {
            let _ = deliver(&cr, subj, &Packed::inline(why.into_bytes()), per_try, until).await;
            (end, u64::MAX, None)
        });
    }
    while let Some(r) = sends.join_next().await {
        if let Ok((end, version, ack)) = r
            && version != u64::MAX
        {
            settle(&mut s, &mut outbox, end, version, ack);
            save_end(&edge, end, &finished_seq, &outbox)?;
        }
    }
    // The run is over: bodies left behind (timed-out uploads, objects of killed processes)
    // go with the bucket.
    carrier.remove_bucket().await;
    s.peak_memory = edge.peak_memory();
    s.busy_s = edge.busy_s();
    s.peak_rss = peak_rss();
    s.wall_s = t0.elapsed().as_secs_f64();
    let _ = client.flush().await;
    Ok(s)
}

/// Records a delivery's outcome; an answered blob (installed, duplicate or refused) leaves the
/// outbox, one never answered stays there for a restarted edge to send again.
fn settle(
    s: &mut EdgeSummary,
    outbox: &mut BTreeMap<usize, Vec<ModelBlob>>,
    end: usize,
    version: u64,
    ack: Option<String>,
) {
    if ack.is_some()
        && let Some(o) = outbox.get_mut(&end)
    {
        o.retain(|b| b.version != version);
    }
    record_delivery(s, end, version, ack);
}

fn record_delivery(s: &mut EdgeSummary, end: usize, version: u64, ack: Option<String>) {
    match ack {
        Some(a) if a.starts_with("installed") || a.starts_with("duplicate") => {
            s.completed += 1;
            s.versions.entry(end).or_default().push(version);
        }
        Some(a) => {
            eprintln!("adaevo edge: end {end} refused version {version}: {a}");
            s.undelivered.push((end, version));
        }
        None => {
            eprintln!("adaevo edge: end {end} never acknowledged version {version}");
            s.undelivered.push((end, version));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("run_1-a").is_ok());
        assert!(check_prefix("a.b").is_err());
        assert!(check_prefix("").is_err());
    }
}
