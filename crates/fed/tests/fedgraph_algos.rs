//! fedgraph's other algorithms: FedProx with μ = 0 is FedAvg bit for bit, FedProx and FedOpt
//! learn a community graph; GCFL+ on the synthetic graph families learns, splits when told
//! to and never under FedAvg; algorithm / data-set mismatches are configuration errors.

#![allow(clippy::unwrap_used)]

use ferrolab_core::config::load;
use ferrolab_fed::fedgraph::config::{DataSection, FedGraphConfig};
use ferrolab_fed::fedgraph::data::{GraphSet, SeedSetup};
use ferrolab_fed::fedgraph::experiment::zoo_config;
use ferrolab_fed::fedgraph::families::{FamiliesSection, generate};
use ferrolab_fed::fedgraph::gcfl::{GcflSection, GraphSchedule, Mode, graph_zoo, run_clustered};
use ferrolab_fed::fedgraph::run::{NodeAlgo, RunResult, Schedule, ServerAdam, fed_node, fedavg};

mod fedgraph_util;
use fedgraph_util::{communities, fresh_run_dir};

fn setup(g: &GraphSet) -> SeedSetup {
    let d = DataSection {
        train_per_class: 20,
        num_val: 80,
        delta: 10,
        ..Default::default()
    };
    SeedSetup::draw(g, &d, 4, 1, 2).unwrap()
}

fn sched(rounds: usize) -> Schedule {
    Schedule {
        lr: 0.5,
        local_steps: 3,
        rounds,
        patience: 0,
        weight_decay: 5e-4,
        by_loss: false,
    }
}

/// Without the wall-clock round times and the NaN of the local-only-only field (NaN ≠ NaN).
fn strip(mut r: RunResult) -> RunResult {
    r.round_seconds.clear();
    assert!(r.whole_graph_test_accuracy.is_nan());
    r.whole_graph_test_accuracy = 0.0;
    r
}

#[test]
fn fedprox_with_mu_zero_is_fedavg_and_both_variants_learn() {
    let g = communities(400, 16, 11);
    let st = setup(&g);
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = 16;
    let z = zoo_config(&cfg, g.features.num_features(), g.classes).unwrap();
    let avg = strip(fedavg(&g, &st, &z, &sched(15), 3).unwrap());
    let prox0 = NodeAlgo {
        prox_mu: Some(0.0),
        server_adam: None,
        reply_timeout: None,
        round_offset: 0,
    };
    let p0 = strip(fed_node(&g, &st, &z, &sched(15), 3, &prox0).unwrap());
    assert_eq!(p0, avg, "FedProx with mu = 0 must equal FedAvg exactly");
    // A strong pull towards the global model changes the trajectory.
    let prox = NodeAlgo {
        prox_mu: Some(1.0),
        server_adam: None,
        reply_timeout: None,
        round_offset: 0,
    };
    let p1 = strip(fed_node(&g, &st, &z, &sched(15), 3, &prox).unwrap());
    assert_ne!(p1.curve, avg.curve);
    let opt = NodeAlgo {
        prox_mu: None,
        server_adam: Some(ServerAdam {
            lr: 0.03,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        }),
        reply_timeout: None,
        round_offset: 0,
    };
    let o = strip(fed_node(&g, &st, &z, &sched(15), 3, &opt).unwrap());
    assert_ne!(o.curve, avg.curve);
    for (name, r) in [("fedavg", &avg), ("fedprox", &p1), ("fedopt", &o)] {
        assert!(
            r.test_accuracy > 0.6,
            "{name} did not learn: {}",
            r.test_accuracy
        );
    }
}

fn tiny_families() -> FamiliesSection {
    FamiliesSection {
        graphs_per_client: 60,
        ..Default::default()
    }
}

#[test]
fn gcfl_splits_when_told_fedavg_never_and_both_learn() {
    let data = generate(&tiny_families(), 6, 4).unwrap();
    let mut cfg = FedGraphConfig::default();
    cfg.model.arch = "gin".into();
    cfg.model.hidden = 16;
    cfg.model.dropout = 0.0;
    let z = graph_zoo(&cfg).unwrap();
    let s = GraphSchedule {
        lr: 0.01,
        local_steps: 2,
        rounds: 12,
        patience: 0,
        weight_decay: 5e-4,
    };
    // Thresholds every round meets: GCFL+ splits as soon as the sequences are long enough.
    let eager = GcflSection {
        eps1: f64::MAX,
        eps2: 0.0,
        warmup: 2,
        seq_length: 3,
        batch_size: 16,
        ..Default::default()
    };
    let (r, log) = run_clustered(&data, &z, &eager, &s, Mode::Gcfl, 9).unwrap();
    assert!(!log.splits.is_empty());
    assert_eq!(
        log.splits[0].0, 3,
        "first split: after warm-up with 3 norms"
    );
    let mut all: Vec<usize> = log.clusters.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..6).collect::<Vec<_>>(),
        "clusters partition the clients"
    );
    assert!(log.clusters.iter().all(|c| !c.is_empty()));
    assert_eq!(r.rounds_run, 12);
    let (a, alog) = run_clustered(&data, &z, &eager, &s, Mode::FedAvg, 9).unwrap();
    assert!(alog.splits.is_empty());
    assert_eq!(alog.clusters, vec![(0..6).collect::<Vec<_>>()]);
    // Same seed, same run.
    let (a2, _) = run_clustered(&data, &z, &eager, &s, Mode::FedAvg, 9).unwrap();
    assert_eq!(strip(a), strip(a2));
    // Thresholds never met: GCFL+ is FedAvg.
    let never = GcflSection {
        eps1: 0.0,
        batch_size: 16,
        ..Default::default()
    };
    let (n, nlog) = run_clustered(&data, &z, &never, &s, Mode::Gcfl, 9).unwrap();
    assert!(nlog.splits.is_empty());
    let (a16, _) = run_clustered(&data, &z, &never, &s, Mode::FedAvg, 9).unwrap();
    assert_eq!(strip(n), strip(a16.clone()));
    // Better than chance on balanced classes: cycles and grids only, trained longer.
    let easy = generate(
        &FamiliesSection {
            k: 2,
            graphs_per_client: 100,
            ..Default::default()
        },
        4,
        4,
    )
    .unwrap();
    let long = GraphSchedule { rounds: 60, ..s };
    let (l, _) = run_clustered(&easy, &z, &never, &long, Mode::FedAvg, 9).unwrap();
    assert!(l.val_accuracy > 0.6, "val {}", l.val_accuracy);
    assert!(l.server_bytes > 0);
    let (loc, _) = run_clustered(&data, &z, &never, &s, Mode::Local, 9).unwrap();
    assert_eq!(loc.server_bytes, 0);
    // Sharing every parameter moves more bytes than sharing the message-passing layers
    // (the default, as the reference's server model) and trains another trajectory.
    let all = GcflSection {
        share: "all".into(),
        ..never.clone()
    };
    let (fa, _) = run_clustered(&data, &z, &all, &s, Mode::FedAvg, 9).unwrap();
    assert!(fa.server_bytes > a16.server_bytes);
    assert_ne!(fa.curve, a16.curve);
    // The oracle start: one cluster per family group (client c is in group c mod 2 here).
    let oracle = GcflSection {
        initial: "groups".into(),
        ..never.clone()
    };
    let (_, olog) = run_clustered(&data, &z, &oracle, &s, Mode::Gcfl, 9).unwrap();
    assert_eq!(olog.clusters, vec![vec![0, 2, 4], vec![1, 3, 5]]);
    assert!(olog.splits.is_empty());
}

/// The reference's setting in small: client groups whose graphs differ in size, whose
/// features differ in width (each client's own input layer reads them) and whose label rules
/// contradict; GCFL+ runs with FedAvg, plain GCFL and local only beside it in one table.
#[test]
fn gcfl_table_runs_plain_gcfl_beside_on_groups_of_different_widths() {
    use ferrolab_fed::fedgraph::experiment::Regime;
    let sets: Vec<String> = [
        "data.dataset=graph-families",
        "fed.algo=gcfl",
        "fed.clients=4",
        "fed.rounds=6",
        "fed.patience=0",
        "fed.lrs=[0.01]",
        "fed.local_steps=[2]",
        "fed.seeds=1",
        "model.arch=gin",
        "model.hidden=8",
        "model.dropout=0",
        "families.graphs_per_client=30",
        "families.labels=by-group",
        "families.features=width-by-group",
        "families.sizes=by-group",
        "families.size_ratio=2",
        "baselines.global=false",
        "baselines.gcfl_plain=true",
        // Splits as soon as allowed, so both variants cut.
        "gcfl.eps1=1e300",
        "gcfl.eps2=0",
        "gcfl.warmup=1",
        "gcfl.seq_length=2",
        "gcfl.batch_size=8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = load::<FedGraphConfig>(None, &sets).unwrap();
    let t = ferrolab_fed::fedgraph::gcfl::run_table(&cfg, 3, 1, &|_, _, _, _, _| {}, None, None)
        .unwrap();
    let names: Vec<Regime> = t.regimes.iter().map(|r| r.regime).collect();
    assert_eq!(
        names,
        vec![
            Regime::Gcfl,
            Regime::FedAvg,
            Regime::GcflPlain,
            Regime::Local
        ]
    );
    for r in &t.regimes {
        let run = &r.best().runs[0];
        assert_eq!(run.rounds_run, 6, "{:?}", r.regime);
        assert!(run.test_accuracy.is_finite());
    }
    // Both clustered regimes logged their splits; GCFL+ splits at round 2 (2 norms), plain
    // GCFL needs no sequence and splits at round 2 too (after the 1-round warm-up).
    for name in ["gcfl", "gcfl_plain"] {
        let info: Vec<&serde_json::Value> = t.gcfl.iter().filter(|v| v["regime"] == name).collect();
        assert_eq!(info.len(), 1, "{name}");
        assert_eq!(info[0]["splits"][0]["round"], 2, "{name}: {}", info[0]);
    }
    // The reference code's figure: the last round's for FedAvg and local, at least that for
    // the clustered regimes (best over the cached models and the last one).
    let re = t.reference_eval.as_ref().unwrap();
    for (i, r) in t.regimes.iter().enumerate() {
        let last = r.best().runs[0].curve.last().unwrap().2;
        let x = re[r.regime.name()]["test_accuracy"].as_f64().unwrap();
        if i == 0 || r.regime == Regime::GcflPlain {
            assert!(x >= last - 1e-12, "{:?}: {x} < {last}", r.regime);
        } else {
            assert!((x - last).abs() < 1e-12, "{:?}: {x} vs {last}", r.regime);
        }
    }
    // --resume: the same table saved as units of a run folder, then read back from them
    // (clusters, splits and the reference figure included) without running again.
    let (dir, rd) = fresh_run_dir("gcfl");
    let quiet = |_: _, _: f64, _: usize, _: usize, _: &_| {};
    let saved =
        ferrolab_fed::fedgraph::gcfl::run_table(&cfg, 3, 1, &quiet, None, Some(&rd)).unwrap();
    assert_eq!(std::fs::read_dir(dir.join("units")).unwrap().count(), 4);
    let unit = dir.join("units/gcfl-lr0_01-steps2-seed0.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&unit).unwrap()).unwrap();
    v[0][0]["test_accuracy"] = serde_json::json!(0.123);
    std::fs::write(&unit, v.to_string()).unwrap();
    let back =
        ferrolab_fed::fedgraph::gcfl::run_table(&cfg, 3, 1, &quiet, None, Some(&rd)).unwrap();
    assert_eq!(back.regimes[0].best().runs[0].test_accuracy, 0.123);
    for (a, b) in saved.regimes.iter().zip(&back.regimes).skip(1) {
        // Debug text: NaN (not measured) compares equal there, as it should.
        let (x, y) = (
            format!("{:?}", a.best().runs),
            format!("{:?}", b.best().runs),
        );
        assert_eq!(x, y, "{:?}", a.regime);
    }
    assert_eq!(saved.gcfl, back.gcfl);
    assert_eq!(saved.reference_eval, back.reference_eval);
    assert_eq!(t.gcfl, saved.gcfl);
    std::fs::remove_dir_all(&dir).ok();
}

fn config_error(sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    match load::<FedGraphConfig>(None, &sets) {
        Ok(_) => panic!("{sets:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn algorithm_and_dataset_mismatches_are_config_errors() {
    let e = config_error(&["fed.algo=gcfl"]);
    assert!(
        e.contains("fed.algo") && e.contains("graph-families"),
        "{e}"
    );
    for algo in ["fedsage", "fedprox", "fedopt"] {
        let e = config_error(&["data.dataset=graph-families", &format!("fed.algo={algo}")]);
        assert!(e.contains("fed.algo") && e.contains("node"), "{e}");
    }
    let e = config_error(&[
        "data.dataset=graph-families",
        "fed.algo=gcfl",
        "data.path=/tmp/x.npz",
    ]);
    assert!(e.contains("data.path"), "{e}");
    let e = config_error(&["fed.algo=fedbuff"]);
    assert!(e.contains("fed.algo"), "{e}");
    let e = config_error(&["fed.prox_mu=-1"]);
    assert!(e.contains("fed.prox_mu"), "{e}");
    let e = config_error(&["gcfl.variant=ifca"]);
    assert!(e.contains("gcfl.variant"), "{e}");
    for bad in [
        "gcfl.share=head",
        "gcfl.sequence=loss",
        "gcfl.min_side=0",
        "gcfl.initial=random",
        "families.labels=mixed",
        "families.features=raw",
    ] {
        let key = bad.split('=').next().unwrap_or_default();
        let e = config_error(&["data.dataset=graph-families", "fed.algo=gcfl", bad]);
        assert!(e.contains(key), "{bad}: {e}");
    }
    // Groups of different feature widths need each client's own input layer, no global
    // network and only the message-passing layers shared; plain GCFL beside only GCFL+.
    let wide = [
        "data.dataset=graph-families",
        "fed.algo=gcfl",
        "families.features=width-by-group",
    ];
    let e = config_error(&[
        wide[0],
        wide[1],
        wide[2],
        "baselines.global=false",
        "gcfl.pre=false",
    ]);
    assert!(
        e.contains("families.features") && e.contains("gcfl.pre"),
        "{e}"
    );
    let e = config_error(&wide);
    assert!(e.contains("baselines.global"), "{e}");
    let e = config_error(&[
        wide[0],
        wide[1],
        wide[2],
        "baselines.global=false",
        "gcfl.share=all",
    ]);
    assert!(e.contains("gcfl.share"), "{e}");
    let e = config_error(&["baselines.gcfl_plain=true"]);
    assert!(e.contains("baselines.gcfl_plain"), "{e}");
    let e = config_error(&[
        wide[0],
        wide[1],
        "gcfl.variant=gcfl",
        "baselines.gcfl_plain=true",
    ]);
    assert!(e.contains("baselines.gcfl_plain"), "{e}");
    for bad in ["families.sizes=big", "families.size_ratio=0.5"] {
        let key = bad.split('=').next().unwrap_or_default();
        let e = config_error(&["data.dataset=graph-families", "fed.algo=gcfl", bad]);
        assert!(e.contains(key), "{bad}: {e}");
    }
    // The accepted combinations load.
    for sets in [
        vec!["data.dataset=graph-families", "fed.algo=gcfl"],
        vec!["data.dataset=graph-families", "fed.algo=fedavg"],
        vec!["fed.algo=fedprox"],
        vec!["fed.algo=fedopt"],
        vec!["fed.algo=fedsage"],
    ] {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load::<FedGraphConfig>(None, &sets).unwrap();
    }
    // Cross-field generator settings are refused when the configuration loads (so
    // `--print-config` and the run refuse them before any work) ...
    for (sets, key) in [
        (
            &["families.min_nodes=20", "families.max_nodes=10"][..],
            "families.min_nodes",
        ),
        (
            &[
                "families.graphs_per_client=10",
                "families.val_share=0.45",
                "families.test_share=0.45",
            ][..],
            "families.graphs_per_client",
        ),
        (&["fed.clients=25", "gcfl.min_side=2"][..], "gcfl.min_side"),
    ] {
        let mut all = vec!["data.dataset=graph-families", "fed.algo=gcfl"];
        all.extend_from_slice(sets);
        let e = config_error(&all);
        assert!(e.contains(key), "{sets:?}: {e}");
    }
    // ... and by the generator itself, a library entry point.
    let bad = FamiliesSection {
        graphs_per_client: 10,
        val_share: 0.45,
        test_share: 0.45,
        ..Default::default()
    };
    assert!(generate(&bad, 2, 0).is_err());
}

#[test]
fn prox_steps_with_mu_zero_match_plain_steps() {
    use ferrolab_core::backend::train_device;
    use ferrolab_fed::fedgraph::client::prox_steps;
    use ferrolab_fed::fedgraph::run::init_model;
    use ferrolab_graph::zoo::model_params;
    use ferrolab_graph::zoo::train::OptimKind;
    use rand::SeedableRng;
    let g = communities(400, 16, 11);
    let st = setup(&g);
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = 16;
    let z = zoo_config(&cfg, g.features.num_features(), g.classes).unwrap();
    let task = st.client_task(&g, 0, &train_device()).unwrap();
    let m = init_model(&z, 5).unwrap();
    let global = model_params(&m);
    for steps in [1, 3] {
        let mut o1 = OptimKind::Sgd { weight_decay: 5e-4 }.init();
        let mut r1 = rand::rngs::StdRng::seed_from_u64(1);
        let (a, _) = task.train_steps(m.clone(), &z, &mut o1, 0.5, steps, &mut r1);
        let mut o2 = OptimKind::Sgd { weight_decay: 5e-4 }.init();
        let mut r2 = rand::rngs::StdRng::seed_from_u64(1);
        let (b, _) = prox_steps(
            &task,
            m.clone(),
            &z,
            &mut o2,
            0.5,
            steps,
            0.0,
            &global,
            &mut r2,
        )
        .unwrap();
        assert_eq!(model_params(&a), model_params(&b), "{steps} steps");
    }
}

/// A client that fails every fit task from round `from` on (its process stays up, so the
/// server hears of each failure at once).
struct FailsFrom<C> {
    inner: C,
    from: u64,
}

impl<C: ferrolab_fed::client::Client> ferrolab_fed::client::Client for FailsFrom<C> {
    fn fit(
        &mut self,
        ins: &ferrolab_fed::client::FitIns,
        ctx: &ferrolab_fed::client::ClientCtx<'_>,
    ) -> Result<ferrolab_fed::client::FitRes, ferrolab_fed::client::ClientError> {
        if ins.round >= self.from {
            return Err(ferrolab_fed::client::ClientError("out of battery".into()));
        }
        self.inner.fit(ins, ctx)
    }

    fn evaluate(
        &mut self,
        ins: &ferrolab_fed::client::FitIns,
        ctx: &ferrolab_fed::client::ClientCtx<'_>,
    ) -> Result<ferrolab_fed::client::EvaluateRes, ferrolab_fed::client::ClientError> {
        self.inner.evaluate(ins, ctx)
    }
}

#[test]
fn gcfl_through_a_fabric_to_client_threads_repeats_the_in_process_run() {
    use ferrolab_fed::client::serve;
    use ferrolab_fed::fabric::ClientId;
    use ferrolab_fed::fedgraph::gcfl::run_clustered_on;
    use ferrolab_fed::fedgraph::gcfl_fabric::{FabricLearners, FamilyClient};
    use ferrolab_fed::inproc::InProcFabric;
    use std::time::Duration;
    // Two feature widths (each client reads its own through its input layer), dropout on
    // (each client's own stream), thresholds every round meets (the split path).
    let fam = FamiliesSection {
        features: "width-by-group".into(),
        ..tiny_families()
    };
    let k = 6;
    let data = generate(&fam, k, 4).unwrap();
    let mut cfg = FedGraphConfig::default();
    cfg.model.arch = "gin".into();
    cfg.model.hidden = 16;
    cfg.model.dropout = 0.3;
    let z = graph_zoo(&cfg).unwrap();
    let s = GraphSchedule {
        lr: 0.01,
        local_steps: 3,
        rounds: 8,
        patience: 0,
        weight_decay: 5e-4,
    };
    let plus = GcflSection {
        eps1: f64::MAX,
        eps2: 0.0,
        warmup: 2,
        seq_length: 3,
        batch_size: 16,
        ..Default::default()
    };
    let plain = GcflSection {
        variant: "gcfl".into(),
        ..plus.clone()
    };
    let seed = 9;
    let run_remote = |g: &GcflSection, mode: Mode, fails: Option<(usize, u64)>| {
        let fabric = InProcFabric::new();
        std::thread::scope(|sc| {
            for c in 0..k {
                let f = &fabric;
                let cl = FamilyClient::new(&data, c, &z, g, s.weight_decay, seed).unwrap();
                let from = match fails {
                    Some((who, r)) if who == c => r,
                    _ => u64::MAX,
                };
                sc.spawn(move || {
                    let mut cl = FailsFrom { inner: cl, from };
                    serve(&mut cl, c as ClientId, f, Duration::from_secs(120))
                });
            }
            let mut l =
                FabricLearners::new(&fabric, Duration::from_secs(120), k, s.lr, s.local_steps);
            let out = run_clustered_on(&data, &z, g, &s, mode, seed, &mut l);
            let ids: Vec<ClientId> = (0..k as ClientId).collect();
            ferrolab_fed::client::shutdown(&fabric, &ids);
            (out.unwrap(), l.left_out())
        })
    };
    for (g, mode) in [
        (&plus, Mode::Gcfl),
        (&plain, Mode::Gcfl),
        (&plus, Mode::FedAvg),
    ] {
        let (a, alog) = run_clustered(&data, &z, g, &s, mode, seed).unwrap();
        let ((b, blog), left_out) = run_remote(g, mode, None);
        assert_eq!(left_out, 0);
        assert_eq!(strip(a), strip(b), "{} {mode:?}", g.variant);
        assert_eq!(alog, blog, "{} {mode:?}", g.variant);
        if mode == Mode::Gcfl {
            assert!(!alog.splits.is_empty(), "the split path is exercised");
        }
    }
    // A step size no network survives: the clients' passes diverge, which they report without
    // parameters (no fabric carries non-finite values), and the run stops where the
    // in-process one does.
    let wild = GraphSchedule { lr: 1e30, ..s };
    let (a, _) = run_clustered(&data, &z, &plus, &wild, Mode::FedAvg, seed).unwrap();
    assert!(a.rounds_run < s.rounds, "{a:?}");
    let fabric = InProcFabric::new();
    let b = std::thread::scope(|sc| {
        for c in 0..k {
            let f = &fabric;
            let mut cl = FamilyClient::new(&data, c, &z, &plus, s.weight_decay, seed).unwrap();
            sc.spawn(move || serve(&mut cl, c as ClientId, f, Duration::from_secs(120)));
        }
        let mut l =
            FabricLearners::new(&fabric, Duration::from_secs(120), k, wild.lr, s.local_steps);
        let out = run_clustered_on(&data, &z, &plus, &wild, Mode::FedAvg, seed, &mut l);
        let ids: Vec<ClientId> = (0..k as ClientId).collect();
        ferrolab_fed::client::shutdown(&fabric, &ids);
        out.unwrap().0
    });
    assert_eq!(strip(a), strip(b));
    // Client 2 fails every fit from round 2 on: the run goes on without its updates, its
    // cluster is never cut (a cut needs every member's signal), its evaluations still come.
    let ((r, log), left_out) = run_remote(&plus, Mode::Gcfl, Some((2, 2)));
    assert_eq!(r.rounds_run, s.rounds);
    assert_eq!(left_out, s.rounds - 1);
    assert!(log.splits.is_empty(), "{:?}", log.splits);
    assert_eq!(log.clusters, vec![(0..k).collect::<Vec<_>>()]);
    assert!(r.val_accuracy.is_finite() && r.test_accuracy > 0.0);
}
