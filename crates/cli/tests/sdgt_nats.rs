//! `ferrolab sdgt --set fed.runtime=nats`: the server and every client a separate process
//! (`ferrolab fed server`, which starts its `fed client` processes), every model through a NATS
//! server. The comparison (the step-size grid, the chosen runs, every metric but wall-clock
//! timings) must equal the in-process one bit for bit.
//! Needs Fashion-MNIST and a nats-server, so it is `#[ignore]`d; `.ci/run` runs it with both.

mod common;
use common::*;

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
