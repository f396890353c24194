//! `ferrolab sdgt --set fed.runtime=nats`: the server and every client a separate process
//! (`ferrolab fed server`, which starts its `fed client` processes), every model through a NATS
//! server. The comparison (the step-size grid, the chosen runs, every metric but wall-clock
//! timings) must equal the in-process one bit for bit.
//! Needs Fashion-MNIST and a nats-server, so it is `#[ignore]`d; `.ci/run` runs it with both.

mod common;
use common::*;
#[path = "../../edge/tests/tls_server/mod.rs"]
mod tls_server;

#[test]
#[ignore = "needs Fashion-MNIST (FERROLAB_DATA) and nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn sdgt_with_server_and_clients_as_processes_equals_the_in_process_run_bit_for_bit() {
    require_nats_url();
    let root = tmp("sdgt-nats-run");
    let (a, b) = (root.join("in"), root.join("nats"));
    #[rustfmt::skip]
    let base = [
        "sdgt", "--preset", "quick",
        "--set", "fed.rounds=4", "--set", "fed.eval_every=2", "--set", "fed.coopt_every=0",
        "--set", "fed.algorithms=[\"sdgt\", \"sd_fedavg\"]",
        "--set", "fed.lr_grid=[0.03, 0.1]",
        "--set", "data.train_limit=2000", "--set", "data.test_limit=500",
        "--set", "data.val_size=500", "--threads", "1",
    ];
    for (out, nats) in [(&a, false), (&b, true)] {
        let mut v: Vec<&str> = base.to_vec();
        if nats {
            v.extend(["--set", "fed.runtime=\"nats\""]);
        }
        let o_s = out.to_string_lossy().into_owned();
        v.extend(["--out", &o_s]);
        let o = ferrolab(&v);
        assert_eq!(o.status.code(), Some(0), "{v:?}: {}", stderr(&o));
    }
    let (ra, rb) = (report(&a), report(&b));
    assert!(ra["metrics"].is_object(), "no in-process report");
    // Everything but wall-clock timings.
    let results = |m: &serde_json::Value| {
        m.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.contains("seconds") && !k.contains("overhead"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(results(&ra["metrics"]), results(&rb["metrics"]));
    let algos = ra["baselines"].as_object().unwrap();
    assert!(!algos.is_empty());
    for (name, m) in algos {
        assert_eq!(results(m), results(&rb["baselines"][name]), "{name}");
    }
    let runs = |r: &serde_json::Value| {
        r["details"]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["algo"].clone(),
                    x["lr"].clone(),
                    x["diverged"].clone(),
                    x["test_accuracy"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(runs(&ra), runs(&rb));
    assert_eq!(
        ra["details"]["lr_grid_val_accuracy"],
        rb["details"]["lr_grid_val_accuracy"]
    );
}

/// `fed server --external-clients`: the server starts no process and the clients are started
/// by hand (here after the server, as an operator on other machines would), each `fed client
/// --id K` with the same job file and prefix. The run ends with the same model, bit for bit, as
/// the server that starts its own clients.
#[test]
#[ignore = "needs Fashion-MNIST (FERROLAB_DATA) and nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn clients_started_by_hand_for_an_external_clients_server_give_the_same_run() {
    require_nats_url();
    let root = tmp("sdgt-nats-external");
    let job = root.join("job.toml");
    std::fs::write(
        &job,
        // deadline_seconds also bounds the external server's wait before removing its streams.
        "[fed]\nrounds = 3\neval_every = 3\ncheckpoint_every = 0\ncoopt_every = 0\nlr_grid = [0.03]\nseeds = 1\ndeadline_seconds = 10.0\n\n\
         [data]\nsplits = [\"sorted\"]\nval_size = 500\ntrain_limit = 2000\ntest_limit = 500\n",
    )
    .unwrap();
    let job_s = job.to_str().unwrap();
    let pid = std::process::id();
    let (p1, p2) = (format!("sdgtown{pid}"), format!("sdgtext{pid}"));
    let o = ferrolab(&[
        "fed", "server", "--system", "sdgt", "--config", job_s, "--prefix", &p1,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A plain config (no [job] table): the server says which one job of its grid it runs.
    assert!(stderr(&o).contains("has no [job] table"), "{}", stderr(&o));
    let own: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let n = own["clients"].as_u64().unwrap_or(0);
    assert!(n >= 2, "{own}");

    // Clients started after the server has sent its first tasks: they wait in each queue.
    let (so, err) = external_run(job_s, &p2, 0..n as u32, 2);
    assert!(so.status.success(), "{err}");
    assert!(err.contains(&format!("waiting for {n} clients")), "{err}");
    let ext: serde_json::Value = serde_json::from_slice(&so.stdout).unwrap();
    assert_eq!(
        ext["final_params_fnv1a"], own["final_params_fnv1a"],
        "{ext} vs {own}"
    );
    assert_eq!(ext["test_accuracy"], own["test_accuracy"]);
    assert_eq!(ext["lost_devices"], 0);
}

/// A client that never comes (an `--external-clients` server, one client not started): each
/// round its sampled devices are lost at `fed.deadline_seconds` and the round goes on with the
/// others; the run finishes and its summary counts the lost replies.
#[test]
#[ignore = "needs Fashion-MNIST (FERROLAB_DATA) and nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn a_client_that_never_comes_costs_its_replies_and_the_rounds_go_on() {
    require_nats_url();
    let root = tmp("sdgt-nats-missing");
    let job = root.join("job.toml");
    std::fs::write(
        &job,
        "[fed]\nrounds = 2\neval_every = 2\ncheckpoint_every = 0\ncoopt_every = 0\nlr_grid = [0.03]\nseeds = 1\n\
         deadline_seconds = 3.0\nalgorithms = [\"sd_fedavg\"]\n\n\
         [data]\nsplits = [\"sorted\"]\nval_size = 500\ntrain_limit = 2000\ntest_limit = 500\n",
    )
    .unwrap();
    let job_s = job.to_str().unwrap();
    let prefix = format!("sdgtmiss{}", std::process::id());
    // 40 devices, 4 per client: clients 1..=9 come, client 0 does not.
    let (so, err) = external_run(job_s, &prefix, 1..10, 0);
    assert!(so.status.success(), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&so.stdout).unwrap();
    assert_eq!(s["rounds"], 2, "{s}");
    // Client 0's sampled devices (2 of its subnet's 4) in each of the 2 rounds.
    assert!(s["lost_devices"].as_u64().unwrap_or(0) >= 2, "{s}");
    assert!(
        s["test_accuracy"].as_f64().is_some_and(f64::is_finite),
        "{s}"
    );
}

/// A client process killed mid-run (SIGKILL, so no goodbye): the server stops waiting for it
/// once its heartbeats have stopped for `--silence`, counts its devices' replies as lost and
/// finishes every round; its subnet peer (two clients per subnet) mixes around its devices'
/// D2D contributions instead of failing. Restarted, the client rejoins: it skips the tasks of
/// rounds already over and answers again, up to the last round. The same run as
/// `bench/sdgt_gone_client.sh`, shorter, plus the restart.
#[test]
#[ignore = "needs nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
#[allow(clippy::unwrap_used)] // a test: a panic is the failure report
fn a_client_killed_mid_run_is_given_up_on_and_its_peers_mix_around_it() {
    use std::process::{Command, Stdio};
    require_nats_url();
    let root = tmp("sdgt-nats-killed");
    let job = root.join("job.toml");
    let rounds = 60;
    std::fs::write(
        &job,
        format!(
            "[fed]\nrounds = {rounds}\neval_every = {rounds}\ncheckpoint_every = 0\ncoopt_every = 0\nlr_grid = [0.03]\nseeds = 1\n\
             devices_per_client = 2\ndeadline_seconds = 60.0\nalgorithms = [\"sdgt\"]\n\n\
             [topology]\ndevices = 12\nsubnets = 3\n\n\
             [data]\ndataset = \"synthetic\"\nsplits = [\"sorted\"]\nval_size = 500\n"
        ),
    )
    .unwrap();
    let job_s = job.to_str().unwrap();
    let prefix = format!("sdgtkill{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_ferrolab");
    let server = Command::new(bin)
        .args(["fed", "server", "--system", "sdgt", "--external-clients"])
        .args(["--silence", "3", "--config", job_s, "--prefix", &prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut clients: Vec<_> = (0..6)
        .map(|k| {
            Command::new(bin)
                .args(["fed", "client", "--system", "sdgt", "--id", &k.to_string()])
                .args(["--config", job_s, "--prefix", &prefix])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Killed once it has connected (so it has beaten: on a slow machine a fixed delay could
    // kill it before, making it a never-heard client) and run a few rounds (0.25 s a round
    // here, 10 s for the whole run).
    let connected = {
        use std::io::BufRead;
        let err = clients[1].stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("connected to NATS") {
                    let _ = tx.send(());
                }
            }
        });
        rx
    };
    connected
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("client 1 did not connect within 60 s");
    std::thread::sleep(std::time::Duration::from_secs(2));
    clients[1].kill().unwrap();
    // Past the 3 s silence: given up on, then back.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let back = Command::new(bin)
        .args(["fed", "client", "--system", "sdgt", "--id", "1"])
        .args(["--config", job_s, "--prefix", &prefix])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let so = server.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&so.stderr).into_owned();
    assert!(so.status.success(), "{err}");
    for (k, c) in clients.into_iter().enumerate() {
        let co = c.wait_with_output().unwrap();
        assert!(
            k == 1 || co.status.success(),
            "client {k}: {}",
            String::from_utf8_lossy(&co.stderr)
        );
    }
    let s: serde_json::Value = serde_json::from_slice(&so.stdout).unwrap();
    assert_eq!(s["rounds"], rounds, "{s}");
    let failed = |c: u32| err.matches(&format!("client {c} failed")).count();
    assert!(
        failed(1) >= 1,
        "the run ended before client 1 was killed, or it was never given up on: {err}"
    );
    assert!(
        err.contains("client 1 failed: no heartbeat for"),
        "not given up on for its silence: {err}"
    );
    assert_eq!(failed(0), 0, "its subnet peer failed: {err}");
    assert!(
        err.contains("client 0 mixed its devices around"),
        "client 0 did not mix around the gone devices: {err}"
    );
    assert!(s["lost_devices"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(s["gone_contributions"].as_u64().unwrap_or(0) >= 1, "{s}");
    // The restarted client rejoined: it answered the last round.
    let bo = back.wait_with_output().unwrap();
    let berr = String::from_utf8_lossy(&bo.stderr);
    assert!(bo.status.success(), "restarted client 1: {berr}");
    assert!(berr.contains("tasks answered"), "{berr}");
    assert!(
        !err.contains(&format!("round {}: client 1 failed", rounds - 1)),
        "the restarted client 1 did not answer the last round: {err}"
    );
    assert!(
        s["test_accuracy"].as_f64().is_some_and(f64::is_finite),
        "{s}"
    );
}

/// `fed server --external-clients` on `job` under `prefix`, with `fed client --id K` for each K
/// of `ids` started by hand `delay_s` seconds later; every client must exit cleanly. Returns
/// the server's output and its stderr.
#[allow(clippy::unwrap_used)] // a test helper: a panic is the failure report
fn external_run(
    job: &str,
    prefix: &str,
    ids: impl Iterator<Item = u32>,
    delay_s: u64,
) -> (std::process::Output, String) {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_ferrolab");
    let server = Command::new(bin)
        .args(["fed", "server", "--system", "sdgt", "--external-clients"])
        .args(["--config", job, "--prefix", prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(delay_s));
    let clients: Vec<_> = ids
        .map(|k| {
            Command::new(bin)
                .args(["fed", "client", "--system", "sdgt", "--id", &k.to_string()])
                .args(["--config", job, "--prefix", prefix])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let so = server.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&so.stderr).into_owned();
    for c in clients {
        let co = c.wait_with_output().unwrap();
        assert!(
            co.status.success(),
            "{}",
            String::from_utf8_lossy(&co.stderr)
        );
    }
    (so, err)
}

/// TLS with a private CA: a throw-away CA signs a certificate for 127.0.0.1, a nats-server that
/// requires TLS starts on it, and `fed server --tls-ca` runs a job whose spawned clients trust
/// the same CA (passed on in their environment). Without the CA the connection is refused with
/// exit 2 naming the unknown issuer; a CA file that is not there is named before connecting.
#[test]
#[ignore = "needs Fashion-MNIST (FERROLAB_DATA), nats-server and openssl (.ci/run installs both)"]
fn tls_with_a_private_ca_runs_a_job_and_refuses_without_it() {
    use std::process::Command;
    let root = tmp("sdgt-nats-tls");
    let d = root.to_path_buf();
    let (server, url) = tls_server::start(&d, true);
    let job = d.join("job.toml");
    std::fs::write(
        &job,
        "[fed]\nrounds = 2\neval_every = 2\ncheckpoint_every = 0\ncoopt_every = 0\nlr_grid = [0.03]\nseeds = 1\n\n\
         [data]\nsplits = [\"sorted\"]\nval_size = 500\ntrain_limit = 2000\ntest_limit = 500\n",
    )
    .unwrap();
    let job_s = job.to_str().unwrap();
    let ca = d.join("ca.pem");
    let run = |prefix: &str, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferrolab"));
        c.args(["fed", "server", "--system", "sdgt", "--config", job_s])
            .args(["--nats", &url, "--prefix", prefix])
            .args(extra)
            .env_remove("FERROLAB_NATS_CA")
            .env_remove("FERROLAB_NATS_CERT")
            .env_remove("FERROLAB_NATS_KEY");
        c.output().unwrap()
    };
    let no_ca = run("tlsnoca", &[]);
    let ok = run("tlsca", &["--tls-ca", ca.to_str().unwrap()]);
    let missing = run("tlsmiss", &["--tls-ca", "/nonexistent/ca.pem"]);
    drop(server);
    assert_eq!(no_ca.status.code(), Some(2), "{}", stderr(&no_ca));
    assert!(
        stderr(&no_ca).contains("UnknownIssuer"),
        "{}",
        stderr(&no_ca)
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let s: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(s["rounds"], 2, "{s}");
    assert_eq!(s["lost_devices"], 0, "{s}");
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("/nonexistent/ca.pem"),
        "{}",
        stderr(&missing)
    );
}
