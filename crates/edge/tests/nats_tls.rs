//! AdaEvo's processes over TLS with a private CA: a throw-away CA signs a certificate for
//! 127.0.0.1, a nats-server that requires TLS starts on it, and
//!
//! * without the CA a process is refused before it builds anything (a usage error, exit 2 in
//!   the CLI), and a CA file or client certificate that is not there is named; so is a
//!   detection run's process on this server, which has no JetStream for its large uploads;
//! * with the CA (`NetOptions::tls_ca`, which `--tls-ca` and `$FERROLAB_NATS_CA` set) an edge
//!   and two live mobile ends run a short stream to its end: every task is installed or dropped
//!   with a reason and the ends install the versions the edge ships.
//!
//! Needs `nats-server` and `openssl` on the PATH (`.ci/run` installs both); `#[ignore]`d in a
//! plain `cargo test`.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

use ferrolab_edge::AdaEvoConfig;
use ferrolab_edge::experiment::{load_base, prepare};
use ferrolab_edge::net::{self, NetError, NetOptions};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

mod tls_server;

fn options(url: &str, prefix: &str, ca: Option<PathBuf>) -> NetOptions {
    let mut o = NetOptions::new(url, prefix);
    // Independent of the environment the test runs in.
    o.tls_ca = ca;
    o.tls_client = None;
    o
}

#[test]
#[ignore = "needs nats-server and openssl (.ci/run installs both)"]
fn processes_run_over_tls_with_a_private_ca_and_are_refused_without_it() {
    let dir = std::env::temp_dir().join(format!("fl-adaevo-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (server, url) = tls_server::start(&dir, false);
    let ca = dir.join("ca.pem");

    // Refusals, each a usage error naming its cause.
    let usage = |r: Result<(), NetError>| match r {
        Err(NetError::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    };
    let no_ca = usage(net::probe(&options(&url, "tlsnoca", None)));
    assert!(no_ca.contains("cannot connect"), "{no_ca}");
    let missing = usage(net::probe(&options(
        &url,
        "tlsmiss",
        Some(PathBuf::from("/nonexistent/ca.pem")),
    )));
    assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
    let mut half = options(&url, "tlshalf", Some(ca.clone()));
    half.tls_client = Some((dir.join("absent.pem"), dir.join("server.key")));
    let half = usage(net::probe(&half));
    assert!(half.contains("absent.pem"), "{half}");
    net::probe(&options(&url, "tlsok", Some(ca.clone()))).unwrap();
    // This server has no JetStream: a detection run, whose uploads need the object store, is
    // refused at the probe, naming why.
    let nojs = usage(net::probe_store(&options(
        &url,
        "tlsnojs",
        Some(ca.clone()),
    )));
    assert!(
        nojs.contains("object store") && nojs.contains("JetStream"),
        "{nojs}"
    );

    // A short run: an edge and two live mobile ends, all over TLS.
    let mut cfg = AdaEvoConfig::default();
    cfg.data.dataset = "synthetic".into();
    cfg.stream.ends = 2;
    cfg.stream.seconds = 240;
    cfg.stream.drifts = vec!["sudden:rotate@40".into(), "sudden:dark@140".into()];
    cfg.stream.jitter_s = 0.0;
    let (pre, pool) = load_base(&cfg, None, 3).unwrap();
    let prep = prepare(&cfg, &pre, &pool, 3);
    let prefix = format!(
        "tls{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut opts = options(&url, &prefix, Some(ca));
    opts.speed = 24.0;
    opts.seconds = cfg.stream.seconds as f64;
    opts.start = Some(SystemTime::now() + Duration::from_secs(2));
    opts.delivery_grace = Duration::from_secs(5);
    let (edge, mobiles) = std::thread::scope(|s| {
        let edge = s.spawn(|| net::run_edge(&cfg, &prep.edge(), 3, &opts));
        let mobiles: Vec<_> = (0..2)
            .map(|k| {
                let (cfg, prep, opts) = (&cfg, &prep, &opts);
                s.spawn(move || net::run_mobile_live(cfg, &prep.end(k).unwrap(), opts, 20.0))
            })
            .collect();
        let mobiles: Vec<_> = mobiles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        (edge.join().unwrap().unwrap(), mobiles)
    });
    drop(server);
    let installed: usize = mobiles.iter().map(|m| m.installed.len()).sum();
    assert!(
        installed > 0,
        "no model was installed over TLS: {mobiles:?}"
    );
    for m in &mobiles {
        assert_eq!(
            m.triggered - m.skipped_in_flight,
            m.installed.len() + m.dropped.len(),
            "end {}: every sent task ends installed or dropped: {m:?}",
            m.end
        );
        assert_eq!(m.unresolved, 0, "{m:?}");
        assert!(m.rejected.is_empty(), "{m:?}");
        let want: Vec<u64> = (1..=m.installed.len() as u64).collect();
        assert_eq!(m.installed, want, "end {}: versions without a gap", m.end);
    }
    assert!(edge.undelivered.is_empty(), "{edge:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
