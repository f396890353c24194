//! Shared by the `nats_*` tests: where the server is, fresh run prefixes, and the rule that a
//! missing server fails (the tests are `#[ignore]`d; `.ci/run` starts one and includes them).

#![allow(dead_code)]

use ferrolab_fed::nats::{NatsFabric, NatsOptions, Party};
use std::time::Duration;

/// `$FERROLAB_NATS_URL`. The NATS tests are `#[ignore]`d in a plain `cargo test`; run with
/// `--include-ignored` (as `.ci/run` does, after starting nats-server) they fail without it.
pub fn nats_url() -> String {
    match std::env::var("FERROLAB_NATS_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ => panic!(
            "FERROLAB_NATS_URL is not set: start `nats-server -js` and export its URL (.ci/run does)"
        ),
    }
}

/// A run prefix no other test (or earlier run against the same server) uses.
pub fn fresh_prefix(tag: &str) -> String {
    ferrolab_fed::nats::multiprocess::fresh_prefix(tag)
}

/// Fast-failing options for tests.
pub fn opts(url: &str, prefix: &str, party: Party) -> NatsOptions {
    let mut o = NatsOptions::new(url, prefix, party);
    o.request_timeout = Duration::from_secs(5);
    o.disconnect_grace = Duration::from_secs(3);
    o
}

/// Connects or panics with the reason.
pub fn connect(url: &str, prefix: &str, party: Party) -> NatsFabric {
    match NatsFabric::connect(opts(url, prefix, party)) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    }
}
