//! FedSage+: the hidden-node targets are what the hiding removed, the federated generator
//! lowers its losses, the mended graph keeps every real edge and attaches at most `num_pred`
//! generated leaves per node, the whole stage is deterministic by seed, FedAvg on mended
//! graphs learns, and selection by validation loss works; config errors for bad keys.

#![allow(clippy::unwrap_used)]

use ferrolab_core::backend::train_device;
use ferrolab_fed::fedgraph::config::{DataSection, FedGraphConfig, FedSageSection};
use ferrolab_fed::fedgraph::data::{GraphSet, SeedSetup};
use ferrolab_fed::fedgraph::experiment::zoo_config;
use ferrolab_fed::fedgraph::fedsage::{HideFrom, gen_data, mend_clients};
use ferrolab_fed::fedgraph::run::{Schedule, fedavg, fedsage};

mod fedgraph_util;
use fedgraph_util::{communities, fresh_run_dir, small_grid};

fn setup(g: &GraphSet) -> SeedSetup {
    let d = DataSection {
        train_per_class: 20,
        num_val: 80,
        delta: 10,
        ..Default::default()
    };
    SeedSetup::draw(g, &d, 4, 1, 2).unwrap()
}

fn small(rounds: usize) -> FedSageSection {
    FedSageSection {
        num_pred: 3,
        gen_hidden: 16,
        enc_dim: 8,
        gen_rounds: rounds,
        gen_lr: 0.01,
        ..Default::default()
    }
}

#[test]
fn hidden_targets_count_exactly_the_edges_to_hidden_nodes() {
    let g = communities(400, 12, 5);
    let st = setup(&g);
    let d = gen_data(&g, &st, 0, (0.5, HideFrom::All), 9, &train_device()).unwrap();
    let (sub, _) = st.clients.subgraph(&g.graph, 0).unwrap();
    let n = sub.num_nodes();
    let kept = d.impaired.graph.num_nodes;
    assert_eq!(kept, n - (n as f64 * 0.5).round() as usize);
    // Edges of the subgraph = edges inside the impaired graph + kept–hidden edges + edges
    // inside the hidden part; the first two are what the targets see.
    let imp_edges = d.impaired.graph.sum.nnz();
    let lost: usize = d.missing_count.iter().sum();
    assert!(imp_edges + lost <= sub.num_edges());
    assert!(lost > 0);
    let f = g.features.num_features();
    for (m, x) in d.missing_count.iter().zip(&d.missing_feats) {
        assert_eq!(x.len(), m * f);
    }
}

#[test]
fn fs_hiding_takes_a_share_of_the_validation_nodes_and_mending_skips_them() {
    let g = communities(400, 12, 5);
    let st = setup(&g);
    let val: std::collections::HashSet<usize> = st.split.val.iter().copied().collect();
    let d = gen_data(&g, &st, 1, (0.5, HideFrom::Val), 9, &train_device()).unwrap();
    let n = d.nodes.len();
    let in_val = d.nodes.iter().filter(|v| val.contains(v)).count();
    assert!(in_val >= 4, "{in_val}");
    let hidden: Vec<usize> = (0..n).filter(|v| !d.kept.contains(v)).collect();
    // FS's HideGraph: ⌊share · |val|⌋ nodes, all of them validation nodes.
    assert_eq!(hidden.len(), in_val / 2);
    assert!(hidden.iter().all(|&v| val.contains(&d.nodes[v])));
    assert_eq!(d.impaired.graph.num_nodes, n - hidden.len());

    // Mending reads the impaired graph (FS's GraphMender): no hidden node gets a generated
    // neighbour; `whole` mends from the whole subgraph instead.
    let fs = FedSageSection {
        hide_portion: 0.9,
        ..small(30)
    };
    let (m, _) = mend_clients(&g, &st, &fs, 0.5, 3).unwrap();
    let (_, nodes) = st.clients.subgraph(&g.graph, 1).unwrap();
    let d = gen_data(
        &g,
        &st,
        1,
        (0.9, HideFrom::Val),
        ferrolab_core::seed::derive(3, "hide1"),
        &train_device(),
    )
    .unwrap();
    let n = nodes.len();
    for v in (0..n).filter(|v| !d.kept.contains(v)) {
        let generated = m[1].graph.neighbors(v).iter().filter(|&&u| u as usize >= n);
        assert_eq!(generated.count(), 0, "hidden node {v}");
    }
    let whole = FedSageSection {
        mend_on: "whole".into(),
        ..fs.clone()
    };
    let (mw, _) = mend_clients(&g, &st, &whole, 0.5, 3).unwrap();
    assert_ne!(mw[1].graph, m[1].graph);
}

#[test]
fn federated_generator_learns_and_mends_deterministically() {
    let g = communities(400, 12, 5);
    let st = setup(&g);
    let (_, before) = mend_clients(&g, &st, &small(1), 0.5, 3).unwrap();
    let (m, after) = mend_clients(&g, &st, &small(60), 0.5, 3).unwrap();
    let (m2, again) = mend_clients(&g, &st, &small(60), 0.5, 3).unwrap();
    assert_eq!(after, again, "same seed, same generator");
    for c in 0..4 {
        assert!(
            after.feat_loss[c] < before.feat_loss[c],
            "client {c}: feature loss {} -> {}",
            before.feat_loss[c],
            after.feat_loss[c]
        );
        assert!(after.count_loss[c] < before.count_loss[c], "{after:?}");
    }
    assert!(after.server_bytes > 0);
    for (c, (a, b)) in m.iter().zip(&m2).enumerate() {
        assert_eq!(a.graph, b.graph);
        let (sub, _) = st.clients.subgraph(&g.graph, c).unwrap();
        let n = sub.num_nodes();
        assert_eq!(a.graph.num_nodes(), n + a.added);
        assert!(a.added <= 3 * n);
        // Every real edge kept, each generated node a leaf of one real node, symmetric.
        for v in 0..n {
            for &u in sub.neighbors(v) {
                assert!(a.graph.neighbors(v).contains(&u));
            }
            let gen_nb = a.graph.neighbors(v).iter().filter(|&&u| u as usize >= n);
            assert!(gen_nb.count() <= 3);
        }
        for w in n..n + a.added {
            let nb = a.graph.neighbors(w);
            assert_eq!(nb.len(), 1);
            assert!(a.graph.neighbors(nb[0] as usize).contains(&(w as u32)));
        }
        // The split is the client's own, over real nodes only.
        assert!(a.split.train.iter().all(|&v| v < n));
    }
}

/// FS's schedule: after the pre-training steps only the feature generator trains, so the
/// count regressor (and with it how many neighbours are generated) is the same after 1 and
/// after 40 federated rounds, while the feature loss still falls; without `freeze` the
/// same rounds move the counts.
#[test]
fn freezing_keeps_the_encoder_and_count_regressor_of_the_pre_training() {
    let g = communities(400, 12, 5);
    let st = setup(&g);
    let fs = |rounds: usize, freeze: bool| FedSageSection {
        pretrain_steps: 5,
        freeze,
        ..small(rounds)
    };
    let (_, one) = mend_clients(&g, &st, &fs(1, true), 0.5, 3).unwrap();
    let (_, many) = mend_clients(&g, &st, &fs(40, true), 0.5, 3).unwrap();
    assert_eq!(one.count_loss, many.count_loss);
    assert_eq!(one.added, many.added);
    for c in 0..4 {
        assert!(many.feat_loss[c] < one.feat_loss[c], "{one:?} {many:?}");
    }
    let (_, free) = mend_clients(&g, &st, &fs(40, false), 0.5, 3).unwrap();
    assert_ne!(free.count_loss, one.count_loss);
}

#[test]
fn fedavg_on_mended_graphs_learns() {
    let g = communities(400, 12, 5);
    let st = setup(&g);
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = 16;
    let z = zoo_config(&cfg, g.features.num_features(), g.classes).unwrap();
    let (m, _) = mend_clients(&g, &st, &small(30), 0.5, 3).unwrap();
    let s = Schedule {
        lr: 0.5,
        local_steps: 4,
        rounds: 40,
        patience: 0,
        weight_decay: 5e-4,
        by_loss: true,
    };
    let fs = fedsage(&g, &st, &m, &z, &s, 7).unwrap();
    let fa = fedavg(&g, &st, &z, &s, 7).unwrap();
    eprintln!(
        "fedsage {:.3} fedavg {:.3}",
        fs.test_accuracy, fa.test_accuracy
    );
    assert!(fs.test_accuracy > 0.7, "{fs:?}");
    assert!(fa.test_accuracy > 0.7, "{fa:?}");
    assert_eq!(fs.rounds_run, 40);
    // Selection only picks the reported round (no early stop here): the same training chosen
    // by validation accuracy reports the highest accuracy, by loss the lowest loss, and the
    // two disagree on neither order.
    let by_acc = fedsage(
        &g,
        &st,
        &m,
        &z,
        &Schedule {
            by_loss: false,
            ..s
        },
        7,
    )
    .unwrap();
    assert_eq!(by_acc.curve, fs.curve);
    let best_acc = fs.curve.iter().map(|c| c.1).fold(f64::MIN, f64::max);
    assert!(by_acc.val_accuracy >= best_acc, "{by_acc:?}");
    assert!(by_acc.val_accuracy >= fs.val_accuracy);
    assert!(
        fs.val_loss.is_finite() && fs.val_loss <= by_acc.val_loss,
        "by loss {} vs by accuracy {}",
        fs.val_loss,
        by_acc.val_loss
    );
}

#[test]
fn bad_fedsage_keys_are_config_errors() {
    use ferrolab_core::config::load;
    let bad = |k: &str| load::<FedGraphConfig>(None, &[k.to_string()]).is_err();
    assert!(bad("fed.algo=fedsag"));
    assert!(bad("fedsage.hide_portion=1.0"));
    assert!(bad("fedsage.hide_from=test"));
    assert!(bad("fedsage.mend_on=all"));
    assert!(bad("fedsage.num_pred=0"));
    assert!(bad("fedsage.freeze=yes"));
    assert!(bad("fedsage.pretrain_steps=-1"));
    assert!(bad("fed.select_by=test_accuracy"));
    assert!(!bad("fed.algo=fedsage"));
    assert!(!bad("fed.select_by=val_loss"));
}

/// `--resume` with FedSage+: the generator stage's details are a unit of their own, and a
/// seed whose FedSage+ runs are all saved skips the stage (its details read back: a tampered
/// figure shows it was not recomputed); a lost run brings its seed's stage back, recomputed
/// to the same mended graphs (the run's figures equal the first run's), and the stage run
/// lazily by two workers gives what one worker gives.
#[test]
fn generator_stage_is_skipped_on_resume_when_its_seeds_runs_are_saved() {
    use ferrolab_fed::fedgraph::experiment::run_table;
    let g = communities(400, 12, 5);
    let mut cfg = FedGraphConfig {
        data: DataSection {
            train_per_class: 20,
            num_val: 80,
            delta: 10,
            ..Default::default()
        },
        fedsage: small(10),
        ..Default::default()
    };
    cfg.fed.algo = "fedsage".into();
    small_grid(&mut cfg);
    cfg.baselines.local = false;
    cfg.baselines.global = false;
    let quiet = |_: _, _: f64, _: usize, _: usize, _: &_| {};
    let (dir, rd) = fresh_run_dir("fs");
    let first = run_table(&g, &cfg, 4, 2, &quiet, None, Some(&rd)).unwrap();
    let alone = run_table(&g, &cfg, 4, 1, &quiet, None, None).unwrap();
    let units = dir.join("units");
    for k in 0..2 {
        assert!(units.join(format!("fedsage-gen-seed{k}.json")).is_file());
    }
    let figures = |t: &ferrolab_fed::fedgraph::experiment::Table| -> Vec<(String, Vec<f64>)> {
        t.regimes
            .iter()
            .flat_map(|r| {
                r.cells.iter().map(move |c| {
                    (
                        format!("{:?}-{}", r.regime, c.local_steps),
                        c.runs.iter().map(|x| x.test_accuracy).collect(),
                    )
                })
            })
            .collect()
    };
    assert_eq!(figures(&first), figures(&alone));
    assert_eq!(first.fedsage.len(), 2);
    for (a, b) in first.fedsage.iter().zip(&alone.fedsage) {
        assert_eq!(a["added"], b["added"]);
        assert_eq!(a["feat_loss"], b["feat_loss"]);
    }

    // Every run saved: no stage is run, the saved details come back as they are.
    let gen0 = units.join("fedsage-gen-seed0.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&gen0).unwrap()).unwrap();
    v["server_bytes"] = serde_json::json!(12345);
    std::fs::write(&gen0, v.to_string()).unwrap();
    let second = run_table(&g, &cfg, 4, 1, &quiet, None, Some(&rd)).unwrap();
    assert_eq!(second.fedsage[0]["server_bytes"], 12345);
    assert_eq!(figures(&second), figures(&first));

    // A lost FedSage+ run of seed 0: its stage runs again (fresh details, saved again) and
    // the run is recomputed to the same figures.
    std::fs::remove_file(units.join("fedsage-lr0_5-steps2-seed0.json")).unwrap();
    let third = run_table(&g, &cfg, 4, 2, &quiet, None, Some(&rd)).unwrap();
    assert_eq!(
        third.fedsage[0]["server_bytes"],
        first.fedsage[0]["server_bytes"]
    );
    assert_eq!(third.fedsage[0]["added"], first.fedsage[0]["added"]);
    assert_eq!(figures(&third), figures(&first));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&gen0).unwrap()).unwrap();
    assert_eq!(saved["server_bytes"], first.fedsage[0]["server_bytes"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A client whose generator steps fail (its process stays up).
struct NoSteps<C>(C);

impl<C: ferrolab_fed::client::Client> ferrolab_fed::client::Client for NoSteps<C> {
    fn fit(
        &mut self,
        ins: &ferrolab_fed::client::FitIns,
        ctx: &ferrolab_fed::client::ClientCtx<'_>,
    ) -> Result<ferrolab_fed::client::FitRes, ferrolab_fed::client::ClientError> {
        if ins.config.get("stage").and_then(|v| v.as_str()) == Some("gen_step") {
            return Err(ferrolab_fed::client::ClientError("disk full".into()));
        }
        self.0.fit(ins, ctx)
    }

    fn evaluate(
        &mut self,
        ins: &ferrolab_fed::client::FitIns,
        ctx: &ferrolab_fed::client::ClientCtx<'_>,
    ) -> Result<ferrolab_fed::client::EvaluateRes, ferrolab_fed::client::ClientError> {
        self.0.evaluate(ins, ctx)
    }
}

#[test]
fn fedsage_through_a_fabric_to_client_threads_repeats_the_in_process_run() {
    use ferrolab_fed::client::{serve, shutdown};
    use ferrolab_fed::fabric::ClientId;
    use ferrolab_fed::fedgraph::fedsage_fabric::{FedSageClient, fedsage_cells_on, gen_seed};
    use ferrolab_fed::fedgraph::run::{NodeAlgo, client_seed, init_model};
    use ferrolab_fed::inproc::InProcFabric;
    use std::time::Duration;
    let g = communities(400, 12, 5);
    let st = setup(&g);
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = 16;
    let z = zoo_config(&cfg, g.features.num_features(), g.classes).unwrap();
    assert!(
        z.dropout > 0.0,
        "the generators' and classifiers' streams are exercised"
    );
    // Local pre-training (its fresh optimiser after it), then the federated rounds.
    let fs = FedSageSection {
        pretrain_steps: 2,
        ..small(30)
    };
    let seed = 7;
    let s = Schedule {
        lr: 0.5,
        local_steps: 2,
        rounds: 6,
        patience: 0,
        weight_decay: 5e-4,
        by_loss: false,
    };
    // A second grid cell: served by the same clients after the first, from one generator stage.
    let s2 = Schedule { lr: 0.1, ..s };
    let (m, stats) = mend_clients(&g, &st, &fs, z.dropout, gen_seed(seed)).unwrap();
    let mut a = vec![
        fedsage(&g, &st, &m, &z, &s, seed).unwrap(),
        fedsage(&g, &st, &m, &z, &s2, seed).unwrap(),
    ];
    let k = st.clients.num_clients();
    let ids: Vec<ClientId> = (0..k as ClientId).collect();
    let model = init_model(&z, ferrolab_core::seed::derive(seed, "init")).unwrap();
    let remote = |failing: Option<usize>| {
        let fabric = InProcFabric::new();
        std::thread::scope(|sc| {
            for c in 0..k {
                let cl = FedSageClient::new(
                    &g,
                    &st,
                    c,
                    &fs,
                    gen_seed(seed),
                    z.clone(),
                    model.clone(),
                    s.weight_decay,
                    client_seed(seed, c),
                )
                .unwrap();
                let f = &fabric;
                let fails = failing == Some(c);
                sc.spawn(move || {
                    let id = c as ClientId;
                    if fails {
                        serve(&mut NoSteps(cl), id, f, Duration::from_secs(60))
                    } else {
                        let mut cl = cl;
                        serve(&mut cl, id, f, Duration::from_secs(60))
                    }
                });
            }
            let algo = NodeAlgo {
                reply_timeout: Some(Duration::from_secs(60)),
                ..NodeAlgo::default()
            };
            let out = fedsage_cells_on(&fabric, &g, &st, &fs, &z, &[s, s2], seed, &algo);
            shutdown(&fabric, &ids);
            out
        })
    };
    let (mut b, bstats, _) = remote(None).unwrap();
    assert_eq!(b.len(), 2);
    for r in a.iter_mut().chain(b.iter_mut()) {
        r.round_seconds.clear();
        // Not measured by this path (NaN, which equals nothing).
        assert!(r.whole_graph_test_accuracy.is_nan());
        r.whole_graph_test_accuracy = 0.0;
    }
    assert_eq!(stats, bstats, "generator stage");
    assert_eq!(a, b, "classifier stage on the mended subgraphs");
    assert!(bstats.added.iter().sum::<usize>() > 0);
    assert_ne!(a[0].curve, a[1].curve, "the two cells train differently");
    // A generator round needs every client's gradients: a client whose step fails ends the
    // stage with an error naming it.
    let e = remote(Some(2)).unwrap_err().to_string();
    assert!(
        e.contains("client 2") && e.contains("disk full") && e.contains("gen_step"),
        "{e}"
    );
}
