//! fedgraph over NATS with its clients as separate processes (`fed.runtime = "nats"`), on a
//! synthetic community graph: with every client alive the run equals the in-process one bit
//! for bit; a client process that dies costs the rounds its update and the run goes on. The
//! same for a federated hyper-parameter search, whose trials share the client processes.
//!
//! Child processes are this test binary again, running [`fedgraph_child`] with `FG_CHILD` set.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

mod fedgraph_util;
mod nats_util;

use ferrolab_fed::fabric::ClientId;
use ferrolab_fed::fedgraph::config::{DataSection, FedGraphConfig};
use ferrolab_fed::fedgraph::data::SeedSetup;
use ferrolab_fed::fedgraph::experiment::{Regime, node_algo, zoo_config};
use ferrolab_fed::fedgraph::hpo::{self, HpoResult, HpoSection, InProcess, SeedCtx};
use ferrolab_fed::fedgraph::multiproc::{self, Unit};
use ferrolab_fed::fedgraph::run::{Schedule, fed_node};
use ferrolab_fed::nats::Party;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Every party builds this same unit (as they would from one job file).
fn unit() -> Unit {
    let graph = fedgraph_util::communities(400, 16, 11);
    let data = DataSection {
        train_per_class: 30,
        num_val: 80,
        delta: 10,
        ..Default::default()
    };
    let setup = SeedSetup::draw(&graph, &data, 4, 1, 2).unwrap();
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = 16;
    cfg.fed.reply_seconds = 3.0;
    let zoo = zoo_config(&cfg, graph.features.num_features(), graph.classes).unwrap();
    Unit {
        graph,
        setup,
        zoo,
        schedule: Schedule {
            lr: 0.5,
            local_steps: 3,
            rounds: 5,
            patience: 0,
            weight_decay: 5e-4,
            by_loss: false,
        },
        algo: node_algo(&cfg, Regime::FedAvg),
        regime: Regime::FedAvg,
        fedsage: cfg.fedsage.clone(),
        seed: 7,
    }
}

/// Entry point of the child processes; does nothing in a normal test run.
#[test]
fn fedgraph_child() {
    let Ok(spec) = std::env::var("FG_CHILD") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let id = v["id"].as_u64().unwrap() as ClientId;
    let url = std::env::var("FERROLAB_NATS_URL").unwrap();
    let f = nats_util::connect(&url, v["prefix"].as_str().unwrap(), Party::Client(id));
    let n = multiproc::run_client(&unit(), &f, id).unwrap();
    assert!(n > 0, "client {id} answered no task");
}

/// Runs the unit with client processes; `dead` clients exit at once instead.
fn over_nats(dead: &[ClientId]) -> ferrolab_fed::fedgraph::run::RunResult {
    over_nats_with(unit(), dead)
}

/// [`over_nats`] with the server's side of the unit given (its reply deadline, say).
fn over_nats_with(u: Unit, dead: &[ClientId]) -> ferrolab_fed::fedgraph::run::RunResult {
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("fg");
    let server = nats_util::connect(&url, &prefix, Party::Server);
    multiproc::run_server(&u, Arc::new(server), |id| child(&url, &prefix, dead, id)).unwrap()
}

/// Client `id`'s process: [`fedgraph_child`], or one that exits at once when `dead` holds it.
fn child(url: &str, prefix: &str, dead: &[ClientId], id: ClientId) -> Command {
    if dead.contains(&id) {
        let mut c = Command::new("sh");
        c.args(["-c", "exit 3"]);
        return c;
    }
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "fedgraph_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FERROLAB_NATS_URL", url)
    .env(
        "FG_CHILD",
        serde_json::json!({"id": id, "prefix": prefix}).to_string(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    c
}

/// The unit's seed searched by successive halving and FedEx with client processes over NATS
/// (`dead` clients exit at once), next to the configuration it ran with.
fn search_over_nats(dead: &[ClientId], cfg: &FedGraphConfig) -> Vec<HpoResult> {
    let u = unit();
    let url = nats_util::nats_url();
    let prefix = nats_util::fresh_prefix("fgh");
    let server = nats_util::connect(&url, &prefix, Party::Server);
    let ids = multiproc::client_ids(&u);
    hpo::search_on(cfg, &search_ctx(&u), 0, Arc::new(server), &ids, |id| {
        child(&url, &prefix, dead, id)
    })
    .unwrap()
}

fn search_config(lrs: &[f64]) -> FedGraphConfig {
    let mut cfg = FedGraphConfig::default();
    // Long enough for a loaded machine, short enough that a round whose collection began
    // before the dead client's exit was seen costs little.
    cfg.fed.reply_seconds = 10.0;
    cfg.hpo = HpoSection {
        methods: vec!["sh".into(), "fedex".into()],
        lrs: lrs.to_vec(),
        local_steps: vec![2],
        dropouts: vec![0.0, 0.5],
        min_rounds: 2,
        max_rounds: 4,
        eta: 2,
        seeds: 1,
        ..Default::default()
    };
    cfg
}

fn search_ctx(u: &Unit) -> SeedCtx<'_> {
    SeedCtx {
        g: &u.graph,
        setup: &u.setup,
        zoo: &u.zoo,
        weight_decay: u.schedule.weight_decay,
        seed: u.seed,
        workers: 2,
        trainer: &InProcess,
    }
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn a_search_over_nats_repeats_the_in_process_one_and_goes_on_without_a_dead_client() {
    let u = unit();
    let in_process = |cfg: &FedGraphConfig| -> Vec<HpoResult> {
        cfg.hpo
            .methods
            .iter()
            .map(|m| hpo::run_method(m, &search_ctx(&u), &cfg.hpo).unwrap())
            .collect()
    };
    // A learning rate of 100 diverges: its clients' non-finite updates, which NATS cannot
    // carry, go as their `diverged` flag and end the trial as in-process.
    let wild = search_config(&[0.05, 0.5, 100.0]);
    let local = in_process(&wild);
    let remote = search_over_nats(&[], &wild);
    assert_eq!(remote.len(), 2);
    for (a, b) in local.iter().zip(&remote) {
        assert_eq!(
            (a.best, a.val_accuracy, a.test_accuracy, a.rounds_used),
            (b.best, b.val_accuracy, b.test_accuracy, b.rounds_used)
        );
        assert_eq!(
            (&a.curve, &a.theta, a.mixed_accuracy),
            (&b.curve, &b.theta, b.mixed_accuracy)
        );
    }
    // Client 0's process exits at once: every round goes on with the other three.
    let tame = search_config(&[0.05, 0.5]);
    let local = in_process(&tame);
    let t0 = std::time::Instant::now();
    let gone = search_over_nats(&[0], &tame);
    let took = t0.elapsed().as_secs_f64();
    assert!(
        took < 60.0,
        "{took:.0} s: the dead client was waited for round after round"
    );
    assert_eq!(gone.len(), 2);
    for (a, b) in local.iter().zip(&gone) {
        assert_eq!(a.rounds_used, b.rounds_used);
        assert!(
            b.test_accuracy.is_finite() && b.test_accuracy > 0.3,
            "{b:?}"
        );
    }
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn fedgraph_over_nats_with_client_processes_matches_in_process_bit_for_bit() {
    let u = unit();
    let mut local = fed_node(&u.graph, &u.setup, &u.zoo, &u.schedule, u.seed, &u.algo).unwrap();
    let mut remote = over_nats(&[]);
    // Wall-clock round times are the one part that differs.
    local.round_seconds.clear();
    remote.round_seconds.clear();
    // Debug text compares every f64 exactly (the unused whole-graph field is NaN in both).
    assert_eq!(format!("{remote:?}"), format!("{local:?}"));
    assert_eq!(local.rounds_run, 5);
    assert_eq!(local.rejected, 0);
    assert!(local.test_accuracy > 0.5, "{local:?}");
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn a_client_process_that_dies_misses_its_updates_and_the_rounds_go_on() {
    // A reply deadline of 60 s: a server that waited it out for the dead client each round
    // would take 5 minutes; the death watch skips the client once its exit is seen (at worst
    // the first round, started before the first poll, waits one deadline).
    let mut u = unit();
    u.algo.reply_timeout = Some(std::time::Duration::from_secs(60));
    let t0 = std::time::Instant::now();
    let r = over_nats_with(u, &[0]);
    let took = t0.elapsed().as_secs_f64();
    assert!(
        took < 150.0,
        "{took:.0} s: the dead client was waited for in more than two rounds"
    );
    assert_eq!(r.rounds_run, 5, "{r:?}");
    // Client 0's update is missing in each of the 5 rounds (after fed.reply_seconds each).
    assert_eq!(r.rejected, 5, "{r:?}");
    assert!(
        r.curve
            .iter()
            .all(|&(_, v, t)| v.is_finite() && t.is_finite()),
        "{r:?}"
    );
    assert!(r.test_accuracy > 0.4, "{r:?}");
}
