//! The conformance suite every [`Fabric`] passes: each function checks one guarantee stated on
//! the trait and panics (with the guarantee in the message) when it is broken. Call them from
//! a test with a factory that returns a fresh, isolated fabric each time:
//!
//! ```
//! use ferrolab_fed::{conformance, inproc::InProcFabric};
//! use std::sync::Arc;
//! conformance::run_all(&|| Arc::new(InProcFabric::new()));
//! ```
//!
//! The NATS fabric runs the same functions from `tests/nats_conformance.rs`.

// A conformance check's contract is to panic with the broken guarantee, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::fabric::{
    ClientId, Config, ExchangeKey, Fabric, FabricError, MsgId, Reply, Task, TaskKind, accept_all,
    layout_validator,
};
use crate::params::Params;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Makes a fresh fabric (its own namespace: nothing shared with earlier calls).
pub type Factory<'a> = &'a dyn Fn() -> Arc<dyn Fabric>;

fn params(seed: u32, n: usize) -> Params {
    let mut p = Params::new();
    let w: Vec<f32> = (0..n)
        .map(|i| ((i as u32 * 7 + seed) as f32).sin() * 1e3)
        .collect();
    p.insert("w", vec![n], w).unwrap_or_default();
    p.insert("b", vec![1, 2], vec![seed as f32, -0.0])
        .unwrap_or_default();
    p
}

fn reply(round: u64, client: ClientId, attempt: u32, p: Params) -> Reply {
    Reply {
        id: MsgId {
            round,
            client,
            kind: TaskKind::Fit,
            attempt,
        },
        kind: TaskKind::Fit,
        params: p,
        n_examples: 10 + client as u64,
        metrics: [("loss".to_string(), client as f64)].into_iter().collect(),
        error: None,
    }
}

/// Every check, in order.
pub fn run_all(make: Factory<'_>) {
    tasks_fifo_and_bit_identical(make);
    recv_times_out_empty(make);
    replies_deduplicated_and_sorted(make);
    silent_client_is_a_failure(make);
    bad_reply_is_rejected_round_goes_on(make);
    stale_rounds_discarded(make);
    fit_and_evaluate_are_distinct_messages(make);
    exchange_all_gather_across_clients(make);
    exchange_missing_member_times_out(make);
    state_put_get(make);
}

/// Tasks reach their client in send order, parameters bit-identical, once each.
pub fn tasks_fifo_and_bit_identical(make: Factory<'_>) {
    let f = make();
    let mut cfg = Config::new();
    cfg.insert("lr".into(), serde_json::json!(0.003));
    cfg.insert("sampled".into(), serde_json::json!([1, 3]));
    for round in 0..3u64 {
        let t = Task {
            round,
            kind: TaskKind::Fit,
            config: cfg.clone(),
            params: params(round as u32, 4096),
        };
        f.send_task(7, &t).unwrap();
    }
    f.send_task(
        8,
        &Task {
            round: 9,
            kind: TaskKind::Shutdown,
            config: Config::new(),
            params: Params::new(),
        },
    )
    .unwrap();
    for round in 0..3u64 {
        let t = f
            .recv_task(7, Duration::from_secs(5))
            .unwrap()
            .expect("task delivered");
        assert_eq!(
            t.round, round,
            "tasks to one client must arrive in send order"
        );
        assert_eq!(t.config, cfg, "control payload must arrive unchanged");
        let want = params(round as u32, 4096);
        let bits = |p: &Params| p.to_flat().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&t.params),
            bits(&want),
            "tensors must arrive bit-identical"
        );
        assert_eq!(t.params, want);
    }
    assert!(
        f.recv_task(7, Duration::from_millis(50)).unwrap().is_none(),
        "a task is received once"
    );
    let s = f
        .recv_task(8, Duration::from_secs(5))
        .unwrap()
        .expect("shutdown delivered");
    assert_eq!(s.kind, TaskKind::Shutdown);
}

/// Waiting for a task with nothing sent returns `None` after about the timeout.
pub fn recv_times_out_empty(make: Factory<'_>) {
    let f = make();
    let t0 = Instant::now();
    assert!(
        f.recv_task(3, Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "recv returned early ({took:?})"
    );
    assert!(
        took < Duration::from_secs(3),
        "recv overran its timeout ({took:?})"
    );
}

/// Resent replies (same id) count once; later attempts are dropped; output sorted by client.
pub fn replies_deduplicated_and_sorted(make: Factory<'_>) {
    let f = make();
    for c in [5u32, 2, 9] {
        let r = reply(4, c, 0, params(c, 64));
        f.send_reply(&r).unwrap();
        f.send_reply(&r).unwrap();
    }
    f.send_reply(&reply(4, 2, 1, params(99, 64))).unwrap();
    let got = f
        .collect_replies(
            4,
            TaskKind::Fit,
            &[9, 2, 5],
            Duration::from_secs(5),
            &accept_all,
        )
        .unwrap();
    assert!(
        got.failures.is_empty(),
        "no failures expected: {:?}",
        got.failures
    );
    let ids: Vec<ClientId> = got.replies.iter().map(|r| r.id.client).collect();
    assert_eq!(
        ids,
        vec![2, 5, 9],
        "replies must be sorted by client id, one each"
    );
    assert_eq!(
        got.replies[0].params,
        params(2, 64),
        "the first attempt counts"
    );
    assert_eq!(got.replies[0].metrics.get("loss"), Some(&2.0));
    assert_eq!(got.replies[1].n_examples, 15);
    // A late duplicate of an already collected reply never shows up again.
    f.send_reply(&reply(4, 5, 0, params(5, 64))).unwrap();
    let again = f
        .collect_replies(
            4,
            TaskKind::Fit,
            &[5],
            Duration::from_millis(300),
            &accept_all,
        )
        .unwrap();
    assert!(again.replies.is_empty(), "a duplicate was delivered twice");
    assert_eq!(again.failures.len(), 1);
}

/// A client that never replies is a failure once the deadline passes; the call does not hang.
pub fn silent_client_is_a_failure(make: Factory<'_>) {
    let f = make();
    f.send_reply(&reply(1, 1, 0, params(1, 8))).unwrap();
    let t0 = Instant::now();
    let got = f
        .collect_replies(
            1,
            TaskKind::Fit,
            &[1, 2],
            Duration::from_millis(400),
            &accept_all,
        )
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "deadline cut short ({took:?})"
    );
    assert!(
        took < Duration::from_secs(5),
        "collection hung past its deadline ({took:?})"
    );
    assert_eq!(got.replies.len(), 1);
    assert_eq!(got.failures.len(), 1);
    assert_eq!(got.failures[0].client, 2);
    // A complete collection returns early.
    f.send_reply(&reply(2, 1, 0, params(1, 8))).unwrap();
    let t0 = Instant::now();
    f.collect_replies(2, TaskKind::Fit, &[1], Duration::from_secs(30), &accept_all)
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "complete collection waited for the deadline"
    );
}

/// Wrong-shape, NaN and client-error replies are rejected with a reason; others still count.
pub fn bad_reply_is_rejected_round_goes_on(make: Factory<'_>) {
    let f = make();
    let template = params(0, 16);
    let validate = layout_validator(&template);
    f.send_reply(&reply(3, 1, 0, params(1, 16))).unwrap();
    f.send_reply(&reply(3, 2, 0, params(2, 15))).unwrap();
    let mut nan = params(3, 16);
    let mut w = nan
        .get("w")
        .cloned()
        .unwrap_or_else(|| crate::params::Tensor {
            shape: vec![],
            data: vec![],
        });
    w.data[3] = f32::NAN;
    nan.insert("w", w.shape, w.data).unwrap();
    f.send_reply(&reply(3, 3, 0, nan)).unwrap();
    let mut err = reply(3, 4, 0, Params::new());
    err.error = Some("out of memory".into());
    f.send_reply(&err).unwrap();
    let t0 = Instant::now();
    let got = f
        .collect_replies(
            3,
            TaskKind::Fit,
            &[1, 2, 3, 4],
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
    let why: Vec<(ClientId, &str)> = got
        .failures
        .iter()
        .map(|x| (x.client, x.reason.as_str()))
        .collect();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(
        why[0].1.contains("shape"),
        "wrong shape must be named: {why:?}"
    );
    assert!(
        why[1].1.contains("non-finite"),
        "NaN must be named: {why:?}"
    );
    assert!(
        why[2].1.contains("out of memory"),
        "client error must be passed on: {why:?}"
    );
}

/// Replies to an earlier round never count for a later one; other kinds wait for their own.
pub fn stale_rounds_discarded(make: Factory<'_>) {
    let f = make();
    f.send_reply(&reply(1, 1, 0, params(1, 8))).unwrap();
    let mut ev = reply(2, 1, 0, Params::new());
    ev.kind = TaskKind::Evaluate;
    ev.id.kind = TaskKind::Evaluate;
    f.send_reply(&ev).unwrap();
    f.send_reply(&reply(2, 2, 0, params(2, 8))).unwrap();
    let got = f
        .collect_replies(
            2,
            TaskKind::Fit,
            &[1, 2],
            Duration::from_millis(400),
            &accept_all,
        )
        .unwrap();
    assert_eq!(
        got.replies.len(),
        1,
        "a round-1 reply was taken for round 2"
    );
    assert_eq!(got.replies[0].id.client, 2);
    let ev = f
        .collect_replies(
            2,
            TaskKind::Evaluate,
            &[1],
            Duration::from_secs(5),
            &accept_all,
        )
        .unwrap();
    assert_eq!(
        ev.replies.len(),
        1,
        "an evaluate reply was lost during a fit collection"
    );
}

/// A fit and an evaluation answered by one client in one round with the same attempt are two
/// messages (the kind is part of the [`MsgId`]), not a reply and its duplicate.
pub fn fit_and_evaluate_are_distinct_messages(make: Factory<'_>) {
    let f = make();
    f.send_reply(&reply(3, 1, 0, params(3, 8))).unwrap();
    let fit = f
        .collect_replies(3, TaskKind::Fit, &[1], Duration::from_secs(5), &accept_all)
        .unwrap();
    assert_eq!(fit.replies.len(), 1);
    let mut ev = reply(3, 1, 0, Params::new());
    ev.kind = TaskKind::Evaluate;
    ev.id.kind = TaskKind::Evaluate;
    assert_ne!(ev.id, fit.replies[0].id);
    f.send_reply(&ev).unwrap();
    let got = f
        .collect_replies(
            3,
            TaskKind::Evaluate,
            &[1],
            Duration::from_secs(5),
            &accept_all,
        )
        .unwrap();
    assert_eq!(
        got.replies.len(),
        1,
        "the evaluation was dropped as a duplicate of the fit: {:?}",
        got.failures
    );
    assert_eq!(got.replies[0].id.kind, TaskKind::Evaluate);
}

/// Devices on three different clients (threads) all receive every member's tensors, sorted.
pub fn exchange_all_gather_across_clients(make: Factory<'_>) {
    let f = make();
    let members = [4u32, 1, 7, 2, 9];
    // Client A owns 4 and 1, client B owns 7, client C owns 2 and 9.
    let owned: Vec<Vec<u32>> = vec![vec![4, 1], vec![7], vec![2, 9]];
    for step in 0..3u32 {
        let key = ExchangeKey {
            round: 5,
            step,
            group: 1,
        };
        let results: Vec<Vec<(u32, Params)>> = std::thread::scope(|s| {
            let hs: Vec<_> = owned
                .iter()
                .map(|devs| {
                    let f = f.clone();
                    s.spawn(move || {
                        let out = devs.iter().map(|&d| (d, params(d + step, 32))).collect();
                        f.exchange(key, &members, out, Duration::from_secs(10))
                            .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            let ids: Vec<u32> = r.iter().map(|(d, _)| *d).collect();
            assert_eq!(
                ids,
                vec![1, 2, 4, 7, 9],
                "exchange must return all members in id order"
            );
            for (d, p) in &r {
                assert_eq!(p, &params(d + step, 32), "exchanged tensors changed");
            }
        }
    }
}

/// An exchange whose member never shows up errors with a timeout naming it.
pub fn exchange_missing_member_times_out(make: Factory<'_>) {
    let f = make();
    let key = ExchangeKey {
        round: 0,
        step: 0,
        group: 0,
    };
    let t0 = Instant::now();
    let e = f
        .exchange(
            key,
            &[0, 1],
            vec![(0, params(0, 4))],
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "exchange hung");
    match e {
        FabricError::Timeout { what, .. } => assert!(what.contains('1'), "{what}"),
        other => panic!("expected a timeout, got {other}"),
    }
    let e = f
        .exchange(
            ExchangeKey {
                round: 0,
                step: 1,
                group: 0,
            },
            &[0, 1],
            vec![(5, params(0, 4))],
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert!(
        matches!(e, FabricError::Protocol(_)),
        "a non-member contribution must be refused"
    );
}

/// State values are replaced whole; missing keys read as `None`.
pub fn state_put_get(make: Factory<'_>) {
    let f = make();
    assert_eq!(f.get_state("round").unwrap(), None);
    f.put_state("round", b"3").unwrap();
    let big = params(1, 300_000).to_safetensors();
    f.put_state("checkpoint", &big).unwrap();
    f.put_state("round", b"4").unwrap();
    assert_eq!(f.get_state("round").unwrap().as_deref(), Some(&b"4"[..]));
    assert_eq!(f.get_state("checkpoint").unwrap(), Some(big));
}
