//! Shared by the `nats_*` tests: where the server is, fresh run prefixes, and the rule that a
//! missing server fails in CI (where `.ci/run` starts one) and only skips on a developer machine.

#![allow(dead_code)]

use ferrolab_fed::nats::{NatsFabric, NatsOptions, Party};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// `$FERROLAB_NATS_URL`; `None` (with a note) when unset outside CI; panics when unset in CI.
pub fn nats_url() -> Option<String> {
    match std::env::var("FERROLAB_NATS_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "FERROLAB_NATS_URL is not set but CI is: .ci/run must start nats-server and export it"
            );
            eprintln!(
                "note: FERROLAB_NATS_URL is not set; skipping this NATS test (run nats-server -js and export it)"
            );
            None
        }
    }
}

/// A run prefix no other test (or earlier run against the same server) uses.
pub fn fresh_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
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
