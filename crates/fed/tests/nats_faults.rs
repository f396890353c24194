//! Fault tests against a real `nats-server` (`$FERROLAB_NATS_URL`, started by `.ci/run`):
//! a client process killed mid-round (a failure, the round completes), the same client
//! rejoining, the server process killed and restarted (resumes from its checkpoint, same final
//! model), corrupted / NaN / wrong-shape updates (rejected, logged, the round goes on), and a
//! connection that cannot be made (fails within seconds, no hang), a client whose heartbeats
//! stop (given up on before the deadline).
//!
//! Child processes are this test binary again, running [`child_role`] with `FL_ROLE` set.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

mod nats_util;

use ferrolab_fed::client::{Client, ClientCtx, ClientError, EvaluateRes, FitIns, FitRes, serve};
use ferrolab_fed::fabric::{
    ClientId, Collected, Config, ExchangeKey, Fabric, MsgId, Reply, Task, TaskKind,
    layout_validator,
};
use ferrolab_fed::nats::{NatsFabric, NatsOptions, Party};
use ferrolab_fed::params::Params;
use ferrolab_fed::strategy::mean_flat;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DIM: usize = 1000;
const CKPT: &str = "test/checkpoint";

/// Update of client `c`: every weight moves by `c²` (so means over different client sets
/// differ).
struct TestClient {
    id: ClientId,
    slow_round: Option<u64>,
}

impl Client for TestClient {
    fn fit(&mut self, ins: &FitIns, _ctx: &ClientCtx<'_>) -> Result<FitRes, ClientError> {
        if Some(ins.round) == self.slow_round {
            // The parent kills this process while it sleeps here.
            std::thread::sleep(Duration::from_secs(120));
        }
        let step = (self.id * self.id) as f32;
        let flat: Vec<f32> = ins.params.to_flat().iter().map(|v| v + step).collect();
        let params = ins
            .params
            .with_flat(&flat)
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(FitRes {
            params,
            n_examples: 1,
            metrics: Default::default(),
        })
    }
    fn evaluate(&mut self, _: &FitIns, _: &ClientCtx<'_>) -> Result<EvaluateRes, ClientError> {
        Ok(EvaluateRes {
            loss: 0.0,
            n_examples: 1,
            metrics: Default::default(),
        })
    }
}

fn x0() -> Params {
    Params::flat("w", (0..DIM).map(|i| i as f32 * 0.25).collect())
}

fn pack(round: u64, p: &Params) -> Vec<u8> {
    let mut v = round.to_le_bytes().to_vec();
    v.extend(p.to_safetensors());
    v
}

fn unpack(b: &[u8]) -> (u64, Params) {
    let round = u64::from_le_bytes(b[..8].try_into().unwrap());
    (round, Params::from_safetensors(&b[8..]).unwrap())
}

/// A FedAvg server loop with a checkpoint after every round; resumes from the checkpoint.
/// Returns the per-round collections.
fn server_loop(
    f: &dyn Fabric,
    clients: &[ClientId],
    rounds: u64,
    deadline: Duration,
    pause: Duration,
    log: &Mutex<Vec<(u64, Collected)>>,
) -> Params {
    let (start, mut x) = match f.get_state(CKPT).unwrap() {
        Some(b) => unpack(&b),
        None => (0, x0()),
    };
    println!("server: starting at round {start}");
    for round in start..rounds {
        for &c in clients {
            f.send_task(
                c,
                &Task {
                    round,
                    kind: TaskKind::Fit,
                    config: Config::new(),
                    params: x.clone(),
                },
            )
            .unwrap();
        }
        let got = {
            let validate = layout_validator(&x);
            f.collect_replies(round, TaskKind::Fit, clients, deadline, &validate)
                .unwrap()
        };
        let flats: Vec<(ClientId, Vec<f32>)> = got
            .replies
            .iter()
            .map(|r| (r.id.client, r.params.to_flat()))
            .collect();
        let mean = mean_flat(flats.iter().map(|(c, v)| (*c, v.as_slice())).collect());
        x = x.with_flat(&mean).unwrap();
        f.put_state(CKPT, &pack(round + 1, &x)).unwrap();
        println!("server: round {round} done, failures {:?}", got.failures);
        log.lock().unwrap().push((round, got));
        std::thread::sleep(pause);
    }
    for &c in clients {
        f.send_task(
            c,
            &Task {
                round: rounds,
                kind: TaskKind::Shutdown,
                config: Config::new(),
                params: Params::new(),
            },
        )
        .unwrap();
    }
    x
}

/// What an uninterrupted run with every client answering every round ends with.
fn expected(rounds: u64, clients: &[ClientId]) -> Params {
    let mut x = x0();
    for _ in 0..rounds {
        let ups: Vec<(ClientId, Vec<f32>)> = clients
            .iter()
            .map(|&c| (c, x.to_flat().iter().map(|v| v + (c * c) as f32).collect()))
            .collect();
        x = x
            .with_flat(&mean_flat(
                ups.iter().map(|(c, v)| (*c, v.as_slice())).collect(),
            ))
            .unwrap();
    }
    x
}

fn spawn(role: &str, url: &str, prefix: &str, extra: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env("FL_ROLE", role)
        .env("FERROLAB_NATS_URL", url)
        .env("FL_PREFIX", prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Entry point of the child processes; does nothing in a normal test run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var("FL_ROLE") else {
        return;
    };
    let url = std::env::var("FERROLAB_NATS_URL").unwrap();
    let prefix = std::env::var("FL_PREFIX").unwrap();
    let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    match role.as_str() {
        "client" => {
            let id = num("FL_ID").unwrap() as ClientId;
            let f = nats_util::connect(&url, &prefix, Party::Client(id));
            let mut c = TestClient {
                id,
                slow_round: num("FL_SLOW_ROUND"),
            };
            serve(&mut c, id, &f, Duration::from_secs(60)).unwrap();
        }
        "server" => {
            let f = nats_util::connect(&url, &prefix, Party::Server);
            let rounds = num("FL_ROUNDS").unwrap();
            let log = Mutex::new(Vec::new());
            let x = server_loop(
                &f,
                &[1, 2],
                rounds,
                Duration::from_secs(20),
                Duration::from_millis(300),
                &log,
            );
            println!("server: finished, w[1] = {}", x.to_flat()[1]);
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn nats_client_killed_mid_round_is_a_failure_then_rejoins() {
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("kill");
    let server = Arc::new(nats_util::connect(&url, &prefix, Party::Server));
    let clients: Vec<ClientId> = vec![1, 2, 3];
    let mut kids: Vec<Child> = clients
        .iter()
        .map(|&c| {
            let mut extra = vec![("FL_ID", c.to_string())];
            if c == 2 {
                extra.push(("FL_SLOW_ROUND", "1".to_string()));
            }
            spawn("client", &url, &prefix, &extra)
        })
        .collect();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (s2, l2, cl) = (Arc::clone(&server), Arc::clone(&log), clients.clone());
    let srv = std::thread::spawn(move || {
        server_loop(&*s2, &cl, 4, Duration::from_secs(4), Duration::ZERO, &l2)
    });
    // Round 0 done: client 2 is now sleeping inside round 1's fit. Kill it there.
    wait_until("round 0", Duration::from_secs(30), || {
        !log.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    kids[1].kill().unwrap();
    kids[1].wait().unwrap();
    // Round 1 closes on its deadline without client 2; then client 2 rejoins under its id.
    wait_until("round 1", Duration::from_secs(30), || {
        log.lock().unwrap().len() >= 2
    });
    kids[1] = spawn("client", &url, &prefix, &[("FL_ID", "2".to_string())]);
    let x = srv.join().unwrap();
    for k in &mut kids {
        assert!(
            k.wait().unwrap().success(),
            "a client did not shut down cleanly"
        );
    }
    let log = log.lock().unwrap();
    let ids = |c: &Collected| c.replies.iter().map(|r| r.id.client).collect::<Vec<_>>();
    assert_eq!(ids(&log[0].1), vec![1, 2, 3]);
    assert_eq!(
        ids(&log[1].1),
        vec![1, 3],
        "the round must complete with the others"
    );
    assert_eq!(log[1].1.failures.len(), 1);
    assert_eq!(
        log[1].1.failures[0].client, 2,
        "the killed client must be a failure"
    );
    assert!(
        log[1].1.failures[0].reason.contains("no reply"),
        "{:?}",
        log[1].1.failures
    );
    assert_eq!(
        ids(&log[2].1),
        vec![1, 2, 3],
        "the rejoined client must count again"
    );
    assert_eq!(ids(&log[3].1), vec![1, 2, 3]);
    // The model is what FedAvg over exactly those replies gives.
    let mut want = expected(1, &[1, 2, 3]);
    let ups: Vec<(ClientId, Vec<f32>)> = [1u32, 3]
        .iter()
        .map(|&c| {
            (
                c,
                want.to_flat().iter().map(|v| v + (c * c) as f32).collect(),
            )
        })
        .collect();
    want = want
        .with_flat(&mean_flat(
            ups.iter().map(|(c, v)| (*c, v.as_slice())).collect(),
        ))
        .unwrap();
    for _ in 2..4 {
        let ups: Vec<(ClientId, Vec<f32>)> = [1u32, 2, 3]
            .iter()
            .map(|&c| {
                (
                    c,
                    want.to_flat().iter().map(|v| v + (c * c) as f32).collect(),
                )
            })
            .collect();
        want = want
            .with_flat(&mean_flat(
                ups.iter().map(|(c, v)| (*c, v.as_slice())).collect(),
            ))
            .unwrap();
    }
    assert_eq!(x, want);
}

/// Client `c`'s reply to round 0's fit task, carrying `params`.
fn fit_reply(c: ClientId, params: Params) -> Reply {
    Reply {
        id: MsgId {
            round: 0,
            client: c,
            kind: TaskKind::Fit,
            attempt: 0,
        },
        kind: TaskKind::Fit,
        params,
        n_examples: 1,
        metrics: Default::default(),
        error: None,
    }
}

/// A server that gives up on a client after 5 s without a heartbeat: five heartbeat periods,
/// so a live client on a loaded machine is not taken for gone.
fn server_with_silence(url: &str, prefix: &str) -> NatsFabric {
    let mut so = nats_util::opts(url, prefix, Party::Server);
    so.silence = Duration::from_secs(5);
    NatsFabric::connect(so).unwrap()
}

/// A client that beat and then fell silent (its fabric gone, and with it the connection's
/// thread: what a killed hand-started process or a lost machine looks like) is given up on
/// once its heartbeats have stopped for `silence`, not waited for until the deadline; a reply
/// it sent before is still collected; a client that keeps beating is waited for.
#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn nats_a_client_whose_heartbeats_stop_is_not_waited_for() {
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("beat");
    let server = server_with_silence(&url, &prefix);
    let reply = |c: ClientId| fit_reply(c, x0());
    let gone = nats_util::connect(&url, &prefix, Party::Client(1));
    let answered = nats_util::connect(&url, &prefix, Party::Client(2));
    let live = nats_util::connect(&url, &prefix, Party::Client(3));
    answered.send_reply(&reply(2)).unwrap();
    // Every client has beaten at least once; then clients 1 and 2 go.
    std::thread::sleep(Duration::from_millis(1500));
    drop(gone);
    drop(answered);
    std::thread::sleep(Duration::from_secs(6));
    let ok = |_: &Reply| Ok(());
    let t = Instant::now();
    let c = server
        .collect_replies(0, TaskKind::Fit, &[1, 2], Duration::from_secs(60), &ok)
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "waited {:?} for a silent client",
        t.elapsed()
    );
    assert_eq!(
        c.replies.iter().map(|r| r.id.client).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(c.failures.len(), 1);
    assert_eq!(c.failures[0].client, 1);
    assert!(
        c.failures[0].reason.contains("no heartbeat"),
        "{:?}",
        c.failures
    );
    // The live client beats on: it is waited for until the deadline.
    let t = Instant::now();
    let c = server
        .collect_replies(1, TaskKind::Fit, &[3], Duration::from_secs(4), &ok)
        .unwrap();
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(
        c.failures[0].reason.contains("no reply within"),
        "{:?}",
        c.failures
    );
    drop(live);
}

/// A client the server never hears from is waited for one whole deadline (it may not have
/// started yet); in later rounds, until it beats, only for three heartbeat periods. That is what
/// a resumed server sees of a client that died while it was down. Once it beats it is waited
/// for again. (Only where some client beats: a server that hears no heartbeat at all waits
/// for every client until each deadline.)
#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn nats_a_client_never_heard_from_costs_one_deadline() {
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("never");
    // A 10 s silence: a never-heard client is given up on after three heartbeat periods, not
    // after the silence (which a client never heard from has no stall to wait out).
    let mut so = nats_util::opts(&url, &prefix, Party::Server);
    so.silence = Duration::from_secs(10);
    let server = NatsFabric::connect(so).unwrap();
    // Another client beats, so heartbeats reach this server: silence means something.
    let other = nats_util::connect(&url, &prefix, Party::Client(5));
    let ok = |_: &Reply| Ok(());
    let t = Instant::now();
    let c = server
        .collect_replies(0, TaskKind::Fit, &[4], Duration::from_secs(6), &ok)
        .unwrap();
    assert!(t.elapsed() >= Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(
        c.failures[0].reason.contains("no reply within"),
        "{:?}",
        c.failures
    );
    // Having missed a whole deadline unheard, it is on the gone list: a live client's exchange
    // with one of its devices (the run's assignment known, as `fed client` knows it) does not
    // wait for it, where before it waited its timeout in every exchange.
    other.set_owners(&[(4, 4), (5, 5)]);
    let key = |step| ExchangeKey {
        round: 0,
        step,
        group: 0,
    };
    let t = Instant::now();
    let got = other
        .exchange_skipping_gone(key(0), &[4, 5], vec![(5, x0())], Duration::from_secs(60))
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![5]);
    let t = Instant::now();
    let c = server
        .collect_replies(1, TaskKind::Fit, &[4], Duration::from_secs(60), &ok)
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "waited {:?} for a client never heard from",
        t.elapsed()
    );
    assert!(
        c.failures[0].reason.contains("never heard from")
            && c.failures[0].reason.contains("round 0"),
        "{:?}",
        c.failures
    );
    // It starts and beats: waited for until the deadline again, by the server and by the
    // exchanges (it is off the gone list).
    let late = nats_util::connect(&url, &prefix, Party::Client(4));
    std::thread::sleep(Duration::from_millis(2500));
    let t = Instant::now();
    let e = other
        .exchange_skipping_gone(key(1), &[4, 5], vec![(5, x0())], Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(e.contains("devices [4]"), "{e}");
    let t = Instant::now();
    let c = server
        .collect_replies(2, TaskKind::Fit, &[4], Duration::from_secs(7), &ok)
        .unwrap();
    assert!(t.elapsed() >= Duration::from_secs(7), "{:?}", t.elapsed());
    assert!(
        c.failures[0].reason.contains("no reply within"),
        "{:?}",
        c.failures
    );
    drop(late);
    drop(other);
}

/// A D2D exchange stops waiting for a member whose client the server has found silent (the
/// server keeps that list in the run's KV, which clients may read): it fails at once, naming
/// the device and its client, instead of at its timeout. A device never seen in an exchange
/// has no known client and is waited for until the timeout, unless the fabric was told the
/// run's device assignment ([`Fabric::set_owners`], which `fed client` does).
#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn nats_an_exchange_does_not_wait_for_a_gone_client() {
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("xgone");
    let _server = server_with_silence(&url, &prefix);
    let c1 = nats_util::connect(&url, &prefix, Party::Client(1));
    let c2 = nats_util::connect(&url, &prefix, Party::Client(2));
    let key = |round| ExchangeKey {
        round,
        step: 0,
        group: 0,
    };
    // Round 0: both contribute (device k belongs to client k), so each learns the other's.
    std::thread::scope(|s| {
        for (f, d) in [(&c1, 1u32), (&c2, 2u32)] {
            s.spawn(move || {
                let got = f
                    .exchange(key(0), &[1, 2], vec![(d, x0())], Duration::from_secs(20))
                    .unwrap();
                assert_eq!(got.len(), 2);
            });
        }
    });
    drop(c2);
    std::thread::sleep(Duration::from_secs(7));
    let t = Instant::now();
    let e = c1
        .exchange(key(1), &[1, 2], vec![(1, x0())], Duration::from_secs(60))
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(e.contains("device 2 (client 2) gone"), "{e}");
    // Device 3 was never seen: no known client, waited for until the timeout.
    let t = Instant::now();
    let e = c1
        .exchange(key(2), &[1, 3], vec![(1, x0())], Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(e.contains("devices [3]"), "{e}");
    // Told the run's assignment (as `fed client` is, from its config), the same exchange
    // knows device 3's client is the gone one and fails at once.
    c1.set_owners(&[(1, 1), (2, 2), (3, 2)]);
    let t = Instant::now();
    let e = c1
        .exchange(key(3), &[1, 3], vec![(1, x0())], Duration::from_secs(60))
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(e.contains("device 3 (client 2) gone"), "{e}");
    // Skipping gone clients (what SD-GT's mixing asks for), the exchange ends with the live
    // members' contributions instead of failing: here only the caller's own.
    let t = Instant::now();
    let got = c1
        .exchange_skipping_gone(key(4), &[1, 2, 3], vec![(1, x0())], Duration::from_secs(60))
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1]);
    // A member whose client is not known to be gone is still waited for, to the timeout.
    let t = Instant::now();
    let e = c1
        .exchange_skipping_gone(key(5), &[1, 2, 7], vec![(1, x0())], Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(e.contains("devices [2, 7]"), "{e}");
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn nats_server_killed_and_restarted_resumes_from_its_checkpoint() {
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("srv");
    let rounds = 6u64;
    let threads: Vec<_> = [1u32, 2]
        .into_iter()
        .map(|id| {
            let f = nats_util::connect(&url, &prefix, Party::Client(id));
            std::thread::spawn(move || {
                let mut c = TestClient {
                    id,
                    slow_round: None,
                };
                serve(&mut c, id, &f, Duration::from_secs(60)).unwrap()
            })
        })
        .collect();
    let probe = nats_util::connect(&url, &prefix, Party::Server);
    let mut srv = spawn(
        "server",
        &url,
        &prefix,
        &[("FL_ROUNDS", rounds.to_string())],
    );
    wait_until("the checkpoint of round 2", Duration::from_secs(60), || {
        probe
            .get_state(CKPT)
            .unwrap()
            .is_some_and(|b| unpack(&b).0 >= 2)
    });
    srv.kill().unwrap();
    srv.wait().unwrap();
    let at_kill = unpack(&probe.get_state(CKPT).unwrap().unwrap()).0;
    assert!(at_kill < rounds, "the server finished before it was killed");
    let srv = spawn(
        "server",
        &url,
        &prefix,
        &[("FL_ROUNDS", rounds.to_string())],
    );
    let out = srv.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "restarted server failed:\n{text}");
    let resumed: u64 = text
        .lines()
        .find_map(|l| l.split("server: starting at round ").nth(1))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no start line in:\n{text}"));
    assert!(
        resumed >= at_kill && resumed > 0,
        "resumed at {resumed}, checkpoint was {at_kill}:\n{text}"
    );
    for t in threads {
        t.join().unwrap();
    }
    let (round, x) = unpack(&probe.get_state(CKPT).unwrap().unwrap());
    assert_eq!(round, rounds);
    // Nothing lost, nothing counted twice: the same model as an uninterrupted run.
    assert_eq!(x, expected(rounds, &[1, 2]));
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn nats_corrupt_nan_and_wrong_shape_updates_are_rejected_and_the_round_goes_on() {
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("bad");
    let server = nats_util::connect(&url, &prefix, Party::Server);
    let template = x0();
    let reply = fit_reply;
    let c1 = nats_util::connect(&url, &prefix, Party::Client(1));
    c1.send_reply(&reply(1, template.clone())).unwrap();
    let c2 = nats_util::connect(&url, &prefix, Party::Client(2));
    let mut nan = template.to_flat();
    nan[7] = f32::NAN;
    c2.send_reply(&reply(2, template.with_flat(&nan).unwrap()))
        .unwrap();
    let c3 = nats_util::connect(&url, &prefix, Party::Client(3));
    c3.send_reply(&reply(3, Params::flat("w", vec![0.0; DIM + 1])))
        .unwrap();
    // Client 4's object is not safetensors at all, written with the raw client as a broken or
    // malicious peer would.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nc = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(nc);
        let bucket = format!("fl_{prefix}_c4");
        let store = match js.get_object_store(&bucket).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(async_nats::jetstream::object_store::Config {
                    bucket: bucket.clone(),
                    ..Default::default()
                })
                .await
                .unwrap(),
        };
        let junk = b"this is not a safetensors file".to_vec();
        store.put("r.0.fit.0", &mut junk.as_slice()).await.unwrap();
        let env = serde_json::json!({
            "id": {"round": 0, "client": 4, "kind": "Fit", "attempt": 0}, "kind": "Fit", "n_examples": 1,
            "metrics": {}, "error": null,
            "params": {"bucket": bucket, "name": "r.0.fit.0", "size": junk.len()}
        });
        js.publish(
            format!("fl.{prefix}.reply.0.fit.4"),
            serde_json::to_vec(&env).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        // Client 5's envelope itself is garbage.
        js.publish(format!("fl.{prefix}.reply.0.fit.5"), "{not json".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let t0 = Instant::now();
    let validate = layout_validator(&template);
    let got = server
        .collect_replies(
            0,
            TaskKind::Fit,
            &[1, 2, 3, 4, 5],
            Duration::from_secs(20),
            &validate,
        )
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "rejections must not wait for the deadline"
    );
    assert_eq!(
        got.replies.iter().map(|r| r.id.client).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(got.replies[0].params, template);
    let why: Vec<(ClientId, String)> = got
        .failures
        .iter()
        .map(|f| (f.client, f.reason.clone()))
        .collect();
    assert_eq!(
        why.iter().map(|w| w.0).collect::<Vec<_>>(),
        vec![2, 3, 4, 5],
        "{why:?}"
    );
    assert!(why[0].1.contains("non-finite"), "{why:?}");
    assert!(why[1].1.contains("shape"), "{why:?}");
    assert!(why[2].1.contains("malformed safetensors"), "{why:?}");
    assert!(why[3].1.contains("malformed reply envelope"), "{why:?}");
}

#[test]
fn nats_unreachable_or_malformed_url_fails_within_seconds() {
    // No server needed: these must fail fast wherever they run.
    for url in [
        "nats://127.0.0.1:1",
        "nats://host:notaport",
        "http://127.0.0.1:4222",
    ] {
        let t0 = Instant::now();
        let e = NatsFabric::connect(NatsOptions::new(url, "x", Party::Server)).unwrap_err();
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "{url}: took {:?}",
            t0.elapsed()
        );
        let text = e.to_string();
        assert!(
            text.contains("127.0.0.1:1") || text.contains("nats://host") || text.contains("http"),
            "{text}"
        );
    }
}
