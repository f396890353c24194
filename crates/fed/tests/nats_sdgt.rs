//! SD-GT over NATS with its clients as separate processes (the `fed.runtime = "nats"` path):
//! 40 devices, 4 per client, so 10 client processes, logistic regression on a small synthetic
//! set. The final model and every evaluated record must be bit-identical to the in-process
//! run of the same job and seed, and the finished run leaves no stream or bucket behind.
//!
//! Child processes are this test binary again, running [`sdgt_child`] with `SDGT_CHILD` set.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

mod nats_util;

use ferrolab_fed::fabric::ClientId;
use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::nats::Party;
use ferrolab_fed::sdgt::config::SdgtConfig;
use ferrolab_fed::sdgt::driver;
use ferrolab_fed::sdgt::multiproc::{self, Job};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

fn small() -> (SdgtConfig, Job) {
    let mut cfg = SdgtConfig::default();
    cfg.data.dataset = "synthetic".into();
    cfg.data.synthetic_train = 1200;
    cfg.data.val_size = 200;
    cfg.data.splits = vec!["sorted".into()];
    cfg.fed.algorithms = vec!["sdgt".into()];
    cfg.fed.rounds = 6;
    cfg.fed.local_steps = 3;
    cfg.fed.batch = 16;
    cfg.fed.eval_every = 2;
    // Checkpoints go through the NATS key-value store too.
    cfg.fed.checkpoint_every = 3;
    cfg.fed.deadline_seconds = 60.0;
    cfg.fed.lr_grid = vec![0.05];
    let job = Job {
        master_seed: 7,
        ..Job::default()
    }
    .resolved(&cfg);
    (cfg, job)
}

/// This test binary again as client `id` of the run (see [`sdgt_child`]).
fn child(
    exe: &std::path::Path,
    url: &str,
    job_json: &serde_json::Value,
    prefix: &str,
    id: ClientId,
) -> Command {
    let mut c = Command::new(exe);
    c.args(["--exact", "sdgt_child", "--nocapture", "--test-threads=1"])
        .env("FERROLAB_NATS_URL", url)
        .env(
            "SDGT_CHILD",
            serde_json::json!({"job_file": job_json, "id": id, "prefix": prefix}).to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

/// Entry point of the child processes; does nothing in a normal test run.
#[test]
fn sdgt_child() {
    let Ok(spec) = std::env::var("SDGT_CHILD") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let (cfg, job) = multiproc::parse_job(v["job_file"].clone()).unwrap();
    let id = v["id"].as_u64().unwrap() as ClientId;
    let prefix = v["prefix"].as_str().unwrap();
    let url = std::env::var("FERROLAB_NATS_URL").unwrap();
    let (spec, data) = multiproc::build(&cfg, &job).unwrap();
    let f = nats_util::connect(&url, prefix, Party::Client(id));
    let n = multiproc::run_client(&spec, &data, &f, id).unwrap();
    assert!(n > 0, "client {id} answered no task");
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn sdgt_over_nats_with_client_processes_matches_in_process_bit_for_bit() {
    let url = nats_util::nats_url();
    let (cfg, job) = small();
    let (spec, data) = multiproc::build(&cfg, &job).unwrap();
    assert_eq!(data.parts.len(), 40);
    let ids = multiproc::client_ids(&spec, &data);
    assert_eq!(ids.len(), 10);

    let t0 = Instant::now();
    let local = driver::run(&spec, &data, Arc::new(InProcFabric::new()), &mut |_| {}).unwrap();
    let t_local = t0.elapsed();

    // The children parse the same job from its serialised form, as `fed client` does.
    let mut job_json = serde_json::to_value(&cfg).unwrap();
    job_json["job"] = serde_json::to_value(&job).unwrap();
    let prefix = nats_util::fresh_prefix("sdgt");
    let server = nats_util::connect(&url, &prefix, Party::Server);
    // Another run's view of the server: what run `prefix` holds there.
    let probe = nats_util::connect(&url, &nats_util::fresh_prefix("probe"), Party::Server);
    let before = probe.run_streams(&prefix).unwrap();
    assert_eq!(before.len(), 4, "{before:?}");
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let remote = multiproc::run_server(&spec, &data, Arc::new(server), |id| {
        child(&exe, &url, &job_json, &prefix, id)
    })
    .unwrap()
    .unwrap();
    let t_nats = t0.elapsed();
    eprintln!(
        "sdgt 40 devices / 10 client processes: in-process {:.2}s, NATS {:.2}s",
        t_local.as_secs_f64(),
        t_nats.as_secs_f64()
    );

    // The finished run removed its streams, KV and every party's object-store bucket.
    assert_eq!(probe.run_streams(&prefix).unwrap(), Vec::<String>::new());
    assert_eq!(probe.remove_run().unwrap(), 4);
    assert_eq!(remote.clients, 10);
    assert_eq!(remote.lost_devices, 0);
    assert_eq!(local.lost_devices, 0);
    let bits = |w: &[f32]| w.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_eq!(bits(&remote.final_params), bits(&local.final_params));
    // Debug formatting compares every f64 exactly (and NaN equal to NaN).
    assert_eq!(
        format!("{:?}", remote.history),
        format!("{:?}", local.history)
    );
    assert_eq!(local.history.len(), 3);
    // The run trained: x̄ moved off x₀ and beats chance on the test set.
    assert_ne!(bits(&local.final_params), bits(&data.x0));
    let last = local.history.last().unwrap();
    assert!(last.test_accuracy > 0.2, "{last:?}");
}

/// A client process that dies at once (here `false` in its place): the server notices within
/// 200 ms and later rounds stop waiting for it, so the run no longer costs a whole deadline per
/// round; the run finishes with that client's sampled devices counted as lost every round.
#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn a_dead_client_process_is_skipped_instead_of_waited_for_each_round() {
    let url = nats_util::nats_url();
    let (mut cfg, job) = small();
    cfg.fed.deadline_seconds = 20.0;
    cfg.fed.checkpoint_every = 0;
    let (spec, data) = multiproc::build(&cfg, &job).unwrap();
    let mut job_json = serde_json::to_value(&cfg).unwrap();
    job_json["job"] = serde_json::to_value(&job).unwrap();
    let prefix = nats_util::fresh_prefix("sdgtdead");
    let server = nats_util::connect(&url, &prefix, Party::Server);
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let out = multiproc::run_server(&spec, &data, Arc::new(server), |id| {
        if id == 0 {
            return Command::new("false");
        }
        child(&exe, &url, &job_json, &prefix, id)
    })
    .unwrap()
    .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    // 6 rounds: waiting out each deadline would take 120 s; at most the first round can
    // start before the death is noticed.
    assert!(secs < 60.0, "{secs:.1} s for 6 rounds with one dead client");
    assert!(out.lost_devices >= 6, "{}", out.lost_devices);
    assert!(
        out.history
            .last()
            .is_some_and(|h| h.test_accuracy.is_finite())
    );
    let _ = nats_util::connect(&url, &prefix, Party::Server).remove_run();
}
