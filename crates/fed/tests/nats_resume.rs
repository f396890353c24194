//! A NATS connection lost while SD-GT runs with its clients as processes: the server process
//! exits 1 with the last checkpoint saved in its local state folder (crate::mirror), and a
//! rerun of the same job — against a *different*, empty nats-server, so nothing can come from
//! the old server's store — resumes from that checkpoint and ends with the model an
//! uninterrupted in-process run gives, bit for bit.
//!
//! The test starts and kills its own nats-server (the binary must be installed; `.ci/run`
//! installs it). Child processes are this test binary again, with `RESUME_CHILD` set.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

mod nats_util;

use ferrolab_fed::fabric::{ClientId, FabricError};
use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::nats::Party;
use ferrolab_fed::sdgt::config::SdgtConfig;
use ferrolab_fed::sdgt::driver::{self, RunError};
use ferrolab_fed::sdgt::multiproc::{self, Job};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn job(state_dir: &Path) -> (SdgtConfig, Job) {
    let mut cfg = SdgtConfig::default();
    cfg.data.dataset = "synthetic".into();
    cfg.data.synthetic_train = 1200;
    cfg.data.val_size = 200;
    cfg.data.splits = vec!["sorted".into()];
    cfg.fed.algorithms = vec!["sdgt".into()];
    // Long enough that the connection is cut well before the end.
    cfg.fed.rounds = 40;
    cfg.fed.local_steps = 3;
    cfg.fed.batch = 16;
    cfg.fed.eval_every = 10;
    cfg.fed.checkpoint_every = 2;
    cfg.fed.devices_per_client = 10;
    cfg.fed.deadline_seconds = 60.0;
    cfg.fed.lr_grid = vec![0.05];
    let job = Job {
        master_seed: 11,
        state_dir: Some(state_dir.to_path_buf()),
        ..Job::default()
    }
    .resolved(&cfg);
    (cfg, job)
}

fn job_json(cfg: &SdgtConfig, job: &Job) -> serde_json::Value {
    let mut v = serde_json::to_value(cfg).unwrap();
    v["job"] = serde_json::to_value(job).unwrap();
    v
}

/// Entry point of the child processes (server and clients); does nothing in a normal run.
#[test]
fn resume_child() {
    let Ok(arg) = std::env::var("RESUME_CHILD") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&arg).unwrap();
    let (cfg, job) = multiproc::parse_job(v["job_file"].clone()).unwrap();
    let prefix = v["prefix"].as_str().unwrap().to_string();
    let url = v["url"].as_str().unwrap().to_string();
    let (spec, data) = multiproc::build(&cfg, &job).unwrap();
    if let Some(id) = v["id"].as_u64() {
        let f = nats_util::connect(&url, &prefix, Party::Client(id as ClientId));
        // A client that loses the connection fails; the server reports it.
        if let Err(e) = multiproc::run_client(&spec, &data, &f, id as ClientId) {
            eprintln!("client {id}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let server = nats_util::connect(&url, &prefix, Party::Server);
    let exe = std::env::current_exe().unwrap();
    let out = multiproc::run_server(&spec, &data, Arc::new(server), |id| {
        let mut c = Command::new(&exe);
        c.args(["--exact", "resume_child", "--nocapture", "--test-threads=1"])
            .env(
                "RESUME_CHILD",
                serde_json::json!({"job_file": v["job_file"], "id": id, "prefix": prefix, "url": url})
                    .to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    });
    // The same mapping as `ferrolab sdgt` / `fed server`: a run error is exit 1.
    match out {
        Ok(Ok(r)) => {
            let bits: Vec<u32> = r.final_params.iter().map(|x| x.to_bits()).collect();
            std::fs::write(
                v["result"].as_str().unwrap(),
                serde_json::to_vec(&bits).unwrap(),
            )
            .unwrap();
        }
        Ok(Err(RunError::Fabric(e @ FabricError::Disconnected(_)))) => {
            eprintln!("SERVER-DISCONNECTED: {e}");
            std::process::exit(1);
        }
        Ok(Err(e)) => {
            eprintln!("SERVER-ERROR: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("SERVER-ERROR: {e}");
            std::process::exit(1);
        }
    }
}

/// A nats-server of our own (this test kills it), on a free port, with JetStream in `dir`.
struct OwnServer {
    child: Child,
    url: String,
}

impl OwnServer {
    fn start(dir: &Path) -> OwnServer {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-sd"])
            .arg(dir.join("js"))
            .arg("--ports_file_dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server must be installed (apt-get install nats-server): {e}")
            });
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let t0 = Instant::now();
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(u) = v["nats"][0].as_str()
            {
                break u.to_string();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Wait until JetStream answers.
        let t0 = Instant::now();
        loop {
            if ferrolab_fed::nats::NatsFabric::connect(nats_util::opts(
                &url,
                &nats_util::fresh_prefix("probe"),
                Party::Server,
            ))
            .is_ok()
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nats-server JetStream not ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnServer { child, url }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_child(exe: &Path, cfg: &SdgtConfig, job: &Job, url: &str, result: &Path) -> Child {
    Command::new(exe)
        .args(["--exact", "resume_child", "--nocapture", "--test-threads=1"])
        .env(
            "RESUME_CHILD",
            serde_json::json!({
                "job_file": job_json(cfg, job), "prefix": nats_util::fresh_prefix("resume"),
                "url": url, "result": result,
            })
            .to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The round of a server checkpoint file (8-byte header length, JSON header, tensors).
fn checkpoint_round(path: &Path) -> Option<u64> {
    let b = std::fs::read(path).ok()?;
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let meta: serde_json::Value = serde_json::from_slice(b.get(8..8 + n)?).ok()?;
    meta["round"].as_u64()
}

fn wait_output(child: Child, limit: Duration) -> (i32, String) {
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(t0.elapsed() < limit, "took {:?}: {log}", t0.elapsed());
    (out.status.code().unwrap_or(-1), log)
}

#[test]
#[ignore = "needs nats-server installed (starts its own); .ci/run installs it"]
fn lost_connection_exits_1_with_state_saved_and_resume_continues() {
    let root: PathBuf = std::env::temp_dir().join(nats_util::fresh_prefix("fed-resume"));
    let state = root.join("state");
    let (cfg, job) = job(&state);
    let exe = std::env::current_exe().unwrap();
    let result = root.join("result.json");

    // The reference: the same job uninterrupted, in-process.
    let (spec, data) = multiproc::build(
        &cfg,
        &Job {
            state_dir: None,
            ..job.clone()
        },
    )
    .unwrap();
    let local = driver::run(&spec, &data, Arc::new(InProcFabric::new()), &mut |_| {}).unwrap();

    let first = OwnServer::start(&root.join("nats1"));
    let t0 = Instant::now();
    let child = server_child(&exe, &cfg, &job, &first.url, &result);
    let ckpt = state.join("server.checkpoint.bin");
    while checkpoint_round(&ckpt).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The connection is lost mid-run: the server goes away.
    drop(first);
    let t_kill = Instant::now();
    let (code, log) = wait_output(child, Duration::from_secs(60));
    let saved = checkpoint_round(&ckpt).unwrap();
    eprintln!(
        "exit {code} with round {saved} saved, {:.1}s after the kill\n{log}",
        t_kill.elapsed().as_secs_f64()
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("SERVER-DISCONNECTED"), "{log}");
    assert!(saved >= 2 && saved < cfg.fed.rounds, "saved round {saved}");
    assert!(!result.exists());

    // A new, empty server: only the local state folder can make this a resume.
    let second = OwnServer::start(&root.join("nats2"));
    let child = server_child(&exe, &cfg, &job, &second.url, &result);
    let (code, log) = wait_output(child, Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(&format!("resuming from the checkpoint of round {saved}")),
        "{log}"
    );
    let bits: Vec<u32> = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    let want: Vec<u32> = local.final_params.iter().map(|x| x.to_bits()).collect();
    assert_eq!(bits, want, "resumed run differs from the uninterrupted one");
    drop(second);
    let _ = std::fs::remove_dir_all(&root);
}
