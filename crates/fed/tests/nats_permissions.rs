//! Per-user permissions: a `nats-server` started from `nats::perm::server_config` (users `s`,
//! `c1`, `c2`) lets each client do a whole round (task, D2D exchange, reply) under its own
//! name, refuses a wrong password, and refuses a client publishing on another client's subject.
//! Needs the `nats-server` binary (installed by `.ci/run`); `#[ignore]`d; fails without it.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

mod nats_util;

use ferrolab_fed::fabric::{Config, ExchangeKey, Fabric, MsgId, Reply, Task, TaskKind, accept_all};
use ferrolab_fed::nats::perm::{User, server_config};
use ferrolab_fed::nats::{NatsFabric, Party};
use ferrolab_fed::params::Params;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server binary; a missing one fails the test (it would otherwise check nothing).
fn nats_server_binary() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server is not installed (.ci/run installs it; Debian package nats-server)")
}

fn start(prefix: &str) -> (Server, u16) {
    let bin = nats_server_binary();
    let dir = std::env::temp_dir().join(nats_util::fresh_prefix("perm"));
    std::fs::create_dir_all(&dir).unwrap();
    let users = vec![
        User {
            client: None,
            password: "server-pw".into(),
        },
        User {
            client: Some(1),
            password: "pw-1".into(),
        },
        User {
            client: Some(2),
            password: "pw-2".into(),
        },
    ];
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        server_config(prefix, -1, None, &dir.join("js"), &users),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .arg("--ports_file_dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        dir: dir.clone(),
    };
    let t0 = Instant::now();
    loop {
        let ports = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".ports"));
        if let Some(p) = ports {
            let text = std::fs::read_to_string(p.path()).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(url) = v["nats"][0].as_str() {
                let port = url.rsplit(':').next().unwrap().parse().unwrap();
                return (server, port);
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn url(user: &str, pw: &str, port: u16) -> String {
    format!("nats://{user}:{pw}@127.0.0.1:{port}")
}

#[test]
#[ignore = "needs the nats-server binary (.ci/run installs it)"]
fn nats_permissions_confine_each_client_to_its_own_subjects() {
    let prefix = nats_util::fresh_prefix("acl");
    let (_server, port) = start(&prefix);

    let e = NatsFabric::connect(nats_util::opts(
        &url("c1", "wrong", port),
        &prefix,
        Party::Client(1),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.to_lowercase().contains("authorization"),
        "wrong password must be refused: {e}"
    );
    assert!(
        !e.contains("wrong"),
        "the password must not be printed: {e}"
    );

    let server = nats_util::connect(&url("s", "server-pw", port), &prefix, Party::Server);
    let c1 = nats_util::connect(&url("c1", "pw-1", port), &prefix, Party::Client(1));
    let c2 = nats_util::connect(&url("c2", "pw-2", port), &prefix, Party::Client(2));
    let x = Params::flat("w", vec![1.5; 300]);

    // A whole round under the restricted users: tasks, a D2D exchange between the two
    // clients, replies.
    for c in [1, 2] {
        server
            .send_task(
                c,
                &Task {
                    round: 0,
                    kind: TaskKind::Fit,
                    config: Config::new(),
                    params: x.clone(),
                },
            )
            .unwrap();
    }
    let key = ExchangeKey {
        round: 0,
        step: 0,
        group: 0,
    };
    let results: Vec<Vec<(u32, Params)>> = std::thread::scope(|s| {
        let hs: Vec<_> = [(&c1, 1u32), (&c2, 2u32)]
            .into_iter()
            .map(|(f, id)| {
                s.spawn(move || {
                    let t = f.recv_task(id, Duration::from_secs(10)).unwrap().unwrap();
                    assert_eq!(t.params, Params::flat("w", vec![1.5; 300]));
                    let mine = Params::flat("w", vec![id as f32; 300]);
                    let all = f
                        .exchange(
                            key,
                            &[1, 2],
                            vec![(id, mine.clone())],
                            Duration::from_secs(10),
                        )
                        .unwrap();
                    f.send_reply(&Reply {
                        id: MsgId {
                            round: 0,
                            client: id,
                            kind: TaskKind::Fit,
                            attempt: 0,
                        },
                        kind: TaskKind::Fit,
                        params: mine,
                        n_examples: 1,
                        metrics: Default::default(),
                        error: None,
                    })
                    .unwrap();
                    all
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r.iter().map(|(d, _)| *d).collect::<Vec<_>>(), vec![1, 2]);
    }
    let got = server
        .collect_replies(
            0,
            TaskKind::Fit,
            &[1, 2],
            Duration::from_secs(10),
            &accept_all,
        )
        .unwrap();
    assert_eq!(got.replies.len(), 2, "{:?}", got.failures);

    // Client 1 posing as client 2: its publish on client 2's subject and bucket is refused.
    let mut o = nats_util::opts(&url("c1", "pw-1", port), &prefix, Party::Client(1));
    o.request_timeout = Duration::from_secs(2);
    let c1_fast = NatsFabric::connect(o).unwrap();
    let forged = Reply {
        id: MsgId {
            round: 1,
            client: 2,
            kind: TaskKind::Fit,
            attempt: 0,
        },
        kind: TaskKind::Fit,
        params: Params::flat("w", vec![9.0; 300]),
        n_examples: 1,
        metrics: Default::default(),
        error: None,
    };
    assert!(
        c1_fast.send_reply(&forged).is_err(),
        "publishing as another client must fail"
    );
    let mut no_params = forged.clone();
    no_params.params = Params::new();
    assert!(
        c1_fast.send_reply(&no_params).is_err(),
        "another client's reply subject must be refused"
    );
    let got = server
        .collect_replies(
            1,
            TaskKind::Fit,
            &[2],
            Duration::from_millis(800),
            &accept_all,
        )
        .unwrap();
    assert!(got.replies.is_empty(), "a forged reply reached the server");
    assert_eq!(got.failures[0].client, 2);
}
