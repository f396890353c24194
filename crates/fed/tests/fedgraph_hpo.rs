//! fedgraph hpo and privacy on a synthetic community graph: the round-by-round federation is
//! the fabric's FedAvg exactly, and seeded FedAvg runs repeat themselves when run at once; successive halving and Hyperband find a good configuration
//! for fewer rounds than the grid; FedEx moves its distribution away from a useless learning
//! rate; the attacks beat chance without DP and DP's noise brings them down; bad keys are
//! configuration errors.

#![allow(clippy::unwrap_used)]

use ferrolab_core::config::Validate;
use ferrolab_fed::client::serve;
use ferrolab_fed::fedgraph::client::GraphClient;
use ferrolab_fed::fedgraph::config::{DataSection, FedGraphConfig};
use ferrolab_fed::fedgraph::data::{GraphSet, SeedSetup};
use ferrolab_fed::fedgraph::experiment::zoo_config;
use ferrolab_fed::fedgraph::hpo::{Ask, FabricTrainer, Trainer, fit_config};
use ferrolab_fed::fedgraph::hpo::{
    Federation, HpoSection, InProcess, LocalHp, SeedCtx, mode_argv, run_fedex, run_grid,
    run_hyperband, run_sh, search_space,
};
use ferrolab_fed::fedgraph::privacy::{PrivacySection, run_federation, run_one};
use ferrolab_fed::fedgraph::run::{Schedule, client_seed, fedavg, init_model};
use ferrolab_fed::inproc::InProcFabric;
use serde_json::json;

mod fedgraph_util;
use fedgraph_util::communities;

fn setup(g: &GraphSet) -> SeedSetup {
    let d = DataSection {
        train_per_class: 30,
        num_val: 100,
        delta: 10,
        ..Default::default()
    };
    SeedSetup::draw(g, &d, 4, 1, 2).unwrap()
}

fn zoo(g: &GraphSet) -> ferrolab_graph::zoo::ZooConfig {
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = 16;
    zoo_config(&cfg, g.features.num_features(), g.classes).unwrap()
}

fn schedule() -> Schedule {
    Schedule {
        lr: 0.5,
        local_steps: 4,
        rounds: 12,
        patience: 0,
        weight_decay: 5e-4,
        by_loss: false,
    }
}

#[test]
fn federation_is_the_fabric_fedavg_round_for_round() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let s = schedule();
    let reference = fedavg(&g, &st, &z, &s, 7).unwrap();
    let mut fed = Federation::new(&g, &st, &z, 5e-4, 7).unwrap();
    let hp = LocalHp {
        lr: 0.5,
        local_steps: 4,
        dropout: z.dropout,
    };
    // Resuming in two pieces changes nothing.
    assert_eq!(fed.train_to(&hp, 5).unwrap(), 5);
    assert_eq!(fed.train_to(&hp, 12).unwrap(), 7);
    assert_eq!(fed.curve, reference.curve);
    assert_eq!(fed.best.val_accuracy, reference.val_accuracy);
    assert_eq!(fed.best.test_accuracy, reference.test_accuracy);
    assert_eq!(fed.best_round, reference.best_round);
    assert!(fed.best.test_accuracy > 0.6, "{}", fed.best.test_accuracy);
}

/// Seeded runs stay seeded when several run at once in one process (parallel tests, a user's
/// threads, a pool of any size): burn draws a parameter's initial value at its first read, from
/// the process-global generator, so a model built under `exclusive_rng` but first read after
/// the guard was dropped took another run's stream (one of three concurrent FedAvg runs got
/// another curve from round 1 on, before `core::backend::init_seeded`).
#[test]
fn concurrent_seeded_fedavg_runs_repeat_the_serial_curve() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let s = schedule();
    let reference = fedavg(&g, &st, &z, &s, 7).unwrap().curve;
    for rep in 0..4 {
        let curves: Vec<_> = std::thread::scope(|sc| {
            let runs: Vec<_> = (0..3)
                .map(|i| {
                    let (g, st, z, s) = (&g, &st, &z, &s);
                    sc.spawn(move || {
                        // Odd repetitions run each in its own pool of 1-3 threads.
                        if rep % 2 == 1 {
                            let pool = rayon::ThreadPoolBuilder::new()
                                .num_threads(1 + i)
                                .build()
                                .unwrap();
                            pool.install(|| fedavg(g, st, z, s, 7).unwrap().curve)
                        } else {
                            fedavg(g, st, z, s, 7).unwrap().curve
                        }
                    })
                })
                .collect();
            runs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, c) in curves.iter().enumerate() {
            assert_eq!(c, &reference, "repetition {rep}, run {i}");
        }
    }
}

fn space() -> HpoSection {
    HpoSection {
        lrs: vec![0.002, 0.1, 0.5],
        local_steps: vec![1, 4],
        dropouts: vec![0.0, 0.5],
        min_rounds: 3,
        max_rounds: 27,
        eta: 3,
        ..Default::default()
    }
}

#[test]
fn successive_halving_and_hyperband_cost_less_than_the_grid_and_find_a_good_config() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let cx = SeedCtx {
        g: &g,
        setup: &st,
        zoo: &z,
        weight_decay: 5e-4,
        seed: 3,
        workers: 2,
        trainer: &InProcess,
    };
    let h = space();
    assert_eq!(search_space(&h).len(), 12);
    let grid = run_grid(&cx, &h).unwrap();
    assert_eq!(grid.rounds_used, 12 * 27);
    let sh = run_sh(&cx, &h).unwrap();
    // Rungs: 12 configurations to 3 rounds, 4 to 9, 1 to 27 (resumed, so extra rounds only).
    assert_eq!(sh.rounds_used, 12 * 3 + 4 * 6 + 18);
    assert!(
        sh.val_accuracy >= grid.val_accuracy - 0.05,
        "{sh:?} vs {grid:?}"
    );
    assert!(sh.best.lr > 0.002, "{:?}", sh.best);
    let hb = run_hyperband(&cx, &h).unwrap();
    assert!(hb.rounds_used < grid.rounds_used, "{}", hb.rounds_used);
    assert!(hb.val_accuracy >= grid.val_accuracy - 0.05, "{hb:?}");
    // Same seed, same search.
    let again = run_sh(&cx, &h).unwrap();
    assert_eq!(again.best, sh.best);
    assert_eq!(again.test_accuracy, sh.test_accuracy);
}

#[test]
fn fedex_moves_mass_away_from_a_useless_learning_rate() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let cx = SeedCtx {
        g: &g,
        setup: &st,
        zoo: &z,
        weight_decay: 5e-4,
        seed: 5,
        workers: 1,
        trainer: &InProcess,
    };
    let h = HpoSection {
        lrs: vec![1e-4, 0.5],
        local_steps: vec![4],
        dropouts: vec![0.0],
        max_rounds: 30,
        ..Default::default()
    };
    let r = run_fedex(&cx, &h).unwrap();
    // 30 FedEx rounds, then θ's mode alone for 30.
    assert_eq!(r.rounds_used, 60);
    assert!((r.theta.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    // Arm 0 (lr 1e-4) barely changes the validation loss; arm 1 lowers it.
    assert!(r.theta[1] > 0.8, "theta {:?}", r.theta);
    assert_eq!(r.best.lr, 0.5);
    assert!(r.test_accuracy > 0.6, "{}", r.test_accuracy);
    // The accuracies reported are those of best_config trained alone for max_rounds (the
    // same run as a grid trial of it), not of the mixed-configuration FedEx model.
    let alone = run_grid(
        &cx,
        &HpoSection {
            lrs: vec![r.best.lr],
            local_steps: vec![r.best.local_steps],
            dropouts: vec![r.best.dropout],
            ..h.clone()
        },
    )
    .unwrap();
    assert_eq!(alone.best, r.best);
    assert_eq!(
        (r.val_accuracy, r.test_accuracy),
        (alone.val_accuracy, alone.test_accuracy)
    );
    assert_eq!(r.curve, alone.curve);
    assert!(r.mixed_accuracy.is_some());
}

/// Client `c` of `st` as [`GraphClient`] builds it in a client process.
fn graph_client(
    g: &GraphSet,
    st: &SeedSetup,
    z: &ferrolab_graph::zoo::ZooConfig,
    seed: u64,
    c: usize,
) -> GraphClient {
    let task = st
        .client_task(g, c, &ferrolab_core::backend::train_device())
        .unwrap();
    let model = init_model(z, ferrolab_core::seed::derive(seed, "init")).unwrap();
    GraphClient::new(task, z.clone(), model, 5e-4, client_seed(seed, c))
}

#[test]
fn a_search_through_a_fabric_to_client_threads_repeats_the_in_process_search() {
    use ferrolab_fed::fabric::ClientId;
    use std::time::Duration;
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let seed = 3;
    let k = st.clients.num_clients();
    let h = HpoSection {
        lrs: vec![0.002, 0.5, 100.0],
        local_steps: vec![1, 4],
        dropouts: vec![0.0, 0.5],
        min_rounds: 2,
        max_rounds: 6,
        eta: 3,
        ..Default::default()
    };
    let local = SeedCtx {
        g: &g,
        setup: &st,
        zoo: &z,
        weight_decay: 5e-4,
        seed,
        workers: 2,
        trainer: &InProcess,
    };
    let fabric = InProcFabric::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..k)
            .map(|c| {
                let mut cl = graph_client(&g, &st, &z, seed, c);
                let f = &fabric;
                s.spawn(move || serve(&mut cl, c as ClientId, f, Duration::from_secs(120)))
            })
            .collect();
        let trainer = FabricTrainer::new(&fabric, Duration::from_secs(120));
        let remote = SeedCtx {
            trainer: &trainer,
            ..local
        };
        let (a, b) = (run_sh(&local, &h).unwrap(), run_sh(&remote, &h).unwrap());
        assert_eq!(
            (a.best, a.val_accuracy, a.test_accuracy),
            (b.best, b.val_accuracy, b.test_accuracy)
        );
        assert_eq!(
            (a.rounds_used, &a.trials, &a.curve),
            (b.rounds_used, &b.trials, &b.curve)
        );
        let (c, d) = (
            run_fedex(&local, &h).unwrap(),
            run_fedex(&remote, &h).unwrap(),
        );
        assert_eq!(c.theta, d.theta);
        assert_eq!(c.mixed_accuracy, d.mixed_accuracy);
        assert_eq!(
            (c.best, c.test_accuracy, &c.curve),
            (d.best, d.test_accuracy, &d.curve)
        );
        // The privacy study's DP arm: the clients clip and noise their own updates.
        let p = PrivacySection {
            rounds: 5,
            lr: 0.5,
            clip: 1.0,
            ..Default::default()
        };
        let dp = |t: &dyn Trainer| {
            let fed = Federation::new(&g, &st, &z, 5e-4, seed).unwrap();
            run_federation(fed, g.classes, z.dropout, &p, Some(0.5), t).unwrap()
        };
        let (here, there) = (dp(&InProcess), dp(&trainer));
        assert_eq!(here, there);
        assert!(
            here.clipped_fraction > 0.0 && here.epsilon.is_finite(),
            "{here:?}"
        );
        // Every round went through the fabric, one task per client each.
        let rounds = trainer.rounds();
        assert_eq!(rounds as usize, b.rounds_used + d.rounds_used + 5);
        let ids: Vec<ClientId> = (0..k as ClientId).collect();
        ferrolab_fed::client::shutdown(&fabric, &ids);
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), rounds);
        }
    });
}

/// A client of another build: trains nothing, answers every fit with the global model and
/// no metrics.
struct Ignorant;

impl ferrolab_fed::client::Client for Ignorant {
    fn fit(
        &mut self,
        ins: &ferrolab_fed::client::FitIns,
        _: &ferrolab_fed::client::ClientCtx<'_>,
    ) -> Result<ferrolab_fed::client::FitRes, ferrolab_fed::client::ClientError> {
        Ok(ferrolab_fed::client::FitRes {
            params: ins.params.clone(),
            n_examples: 1,
            metrics: Default::default(),
        })
    }
    fn evaluate(
        &mut self,
        _: &ferrolab_fed::client::FitIns,
        _: &ferrolab_fed::client::ClientCtx<'_>,
    ) -> Result<ferrolab_fed::client::EvaluateRes, ferrolab_fed::client::ClientError> {
        Err(ferrolab_fed::client::ClientError("not asked".into()))
    }
}

#[test]
fn a_reply_without_what_its_task_asked_for_is_refused() {
    use ferrolab_fed::fabric::ClientId;
    use ferrolab_fed::fedgraph::hpo::Dp;
    use std::time::Duration;
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let fed = Federation::new(&g, &st, &z, 5e-4, 3).unwrap();
    let k = fed.num_clients();
    let fabric = InProcFabric::new();
    let hp = LocalHp {
        lr: 0.5,
        local_steps: 1,
        dropout: 0.0,
    };
    std::thread::scope(|s| {
        for c in 0..k {
            let f = &fabric;
            s.spawn(move || serve(&mut Ignorant, c as ClientId, f, Duration::from_secs(60)));
        }
        let trainer = FabricTrainer::new(&fabric, Duration::from_secs(60));
        // Nothing asked for: the (untrained) updates are taken.
        assert_eq!(
            trainer
                .fit_round(&fed, &vec![hp; k], Ask::default())
                .unwrap()
                .len(),
            k
        );
        // Asked to clip and noise, a client that sends its raw update is refused.
        let dp = Ask {
            dp: Some(Dp {
                clip: 1.0,
                sigma: 1.0,
                secret: false,
            }),
            ..Ask::default()
        };
        let e = trainer
            .fit_round(&fed, &vec![hp; k], dp)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks `update_norm`"), "{e}");
        assert_eq!(trainer.left_out(), k);
        let ids: Vec<ClientId> = (0..k as ClientId).collect();
        ferrolab_fed::client::shutdown(&fabric, &ids);
    });
}

#[test]
fn secret_noise_does_not_repeat_and_seeded_noise_does() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let mut p = PrivacySection {
        rounds: 3,
        lr: 0.5,
        clip: 1.0,
        ..Default::default()
    };
    let run = |p: &PrivacySection| run_one(&g, &st, &z, 5e-4, p, Some(0.5), 9).unwrap();
    assert_eq!(run(&p), run(&p));
    p.noise = "secret".into();
    let (a, b) = (run(&p), run(&p));
    // The final models differ: every node's membership score moves with them.
    assert_ne!((a.mia_auc, &a.test_curve), (b.mia_auc, &b.test_curve));
    // The same mechanism otherwise: same ε, same clipping of the same first-round updates.
    assert_eq!(a.epsilon, b.epsilon);
}

#[test]
fn a_graph_client_refuses_a_bad_trial_configuration_and_keeps_its_model() {
    use ferrolab_fed::client::{Client, ClientCtx, FitIns};
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let mut cl = graph_client(&g, &st, &z, 3, 0);
    let fed = Federation::new(&g, &st, &z, 5e-4, 3).unwrap();
    let fabric = InProcFabric::new();
    let ctx = ClientCtx {
        client: 0,
        round: 1,
        fabric: &fabric,
    };
    let hp = LocalHp {
        lr: 0.5,
        local_steps: 2,
        dropout: 0.5,
    };
    let ins = |config| FitIns {
        round: 40,
        params: fed.params().clone(),
        config,
    };
    for (key, v) in [
        ("dropout", json!(1.0)),
        ("dropout", json!("half")),
        ("seed_round", json!(-1)),
        ("dp_sigma", json!(0.5)),
        ("dp_clip", json!(1.0)),
    ] {
        let mut c = fit_config(&hp, 1, Ask::default());
        c.insert(key.into(), v.clone());
        let e = cl.fit(&ins(c), &ctx).err().map(|e| e.0).unwrap_or_default();
        assert!(e.contains(key), "{key} = {v}: {e}");
    }
    // The refusals lost nothing: the next task trains as the federation's own client 0 does
    // in its round 1 (the fabric's round 40 is not the trial's).
    let got = cl
        .fit(
            &ins(fit_config(
                &hp,
                1,
                Ask {
                    val_losses: true,
                    ..Ask::default()
                },
            )),
            &ctx,
        )
        .unwrap();
    let (want, local) = fed.local_fit(0, &hp).unwrap();
    assert_eq!(got.params, want.params);
    assert_eq!(
        got.metrics["val_loss_after"],
        fed.evaluate_client(0, &local).val_loss
    );
    assert_eq!(
        got.metrics["val_loss_before"],
        fed.evaluate_client(0, &fed.model().unwrap()).val_loss
    );
}

#[test]
fn successive_halving_trains_a_lone_survivor_to_max_rounds() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let cx = SeedCtx {
        g: &g,
        setup: &st,
        zoo: &z,
        weight_decay: 5e-4,
        seed: 3,
        workers: 2,
        trainer: &InProcess,
    };
    // 4 configurations, eta 3: 4 to 3 rounds, then one survivor, which must reach 27
    // (stopping at the 9-round rung would compare a 9-round model with 27-round ones).
    let h = HpoSection {
        lrs: vec![0.002, 0.5],
        local_steps: vec![1, 4],
        dropouts: vec![0.0],
        min_rounds: 3,
        max_rounds: 27,
        eta: 3,
        ..Default::default()
    };
    let sh = run_sh(&cx, &h).unwrap();
    assert_eq!(sh.rounds_used, 4 * 3 + 24, "{:?}", sh.trials);
    assert_eq!(sh.trials.iter().map(|t| t.1).max(), Some(27));
    assert_eq!(sh.trials.iter().filter(|t| t.1 == 27).count(), 1);
    assert_eq!(sh.curve.last().map(|c| c.0), Some(27));
}

#[test]
fn attacks_beat_chance_without_dp_and_heavy_noise_stops_them() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    let z = zoo(&g);
    let p = PrivacySection {
        rounds: 20,
        lr: 0.5,
        clip: 1.0,
        ..Default::default()
    };
    let plain = run_one(&g, &st, &z, 5e-4, &p, None, 9).unwrap();
    assert!(plain.epsilon.is_infinite());
    assert!(plain.test_accuracy > 0.6, "{plain:?}");
    assert!(
        plain.property_attack_accuracy > plain.property_attack_chance + 0.2,
        "{plain:?}"
    );
    // Measured 0.562 here (0.541 under the heavy noise below): a weak but real signal, so
    // "beats chance" is a margin above 0.5 that a change of CPU's rounding cannot cross.
    assert!(plain.mia_auc > 0.54, "{plain:?}");
    let noisy = run_one(&g, &st, &z, 5e-4, &p, Some(50.0), 9).unwrap();
    assert!(noisy.epsilon.is_finite() && noisy.epsilon > 0.0);
    assert!(
        noisy.property_attack_accuracy < plain.property_attack_accuracy,
        "{noisy:?}"
    );
    assert!((noisy.mia_auc - 0.5).abs() < 0.1, "{noisy:?}");
    assert!(noisy.test_accuracy < plain.test_accuracy, "{noisy:?}");
    // One point per round; the last is the model attacked.
    assert_eq!(plain.test_curve.len(), plain.rounds);
    assert_eq!(
        plain.test_curve.last().map(|c| c.1),
        Some(plain.test_accuracy)
    );
    // Same seed, same noise.
    assert_eq!(
        run_one(&g, &st, &z, 5e-4, &p, Some(50.0), 9).unwrap(),
        noisy
    );
}

#[test]
fn bad_keys_are_config_errors() {
    let mut c = FedGraphConfig::default();
    c.task.mode = "hpo".into();
    c.hpo.min_rounds = 50;
    c.hpo.max_rounds = 10;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("hpo.min_rounds")
    );
    let mut c = FedGraphConfig::default();
    c.task.mode = "privacy".into();
    c.fed.algo = "fedsage".into();
    assert!(c.validate().unwrap_err().to_string().contains("task.mode"));
    // The table's keys that hpo and privacy do not read are refused, naming what to set.
    let mut c = FedGraphConfig::default();
    c.task.mode = "hpo".into();
    c.fed.rounds = 10;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("fed.rounds") && e.contains("hpo.max_rounds"),
        "{e}"
    );
    let mut c = FedGraphConfig::default();
    c.task.mode = "privacy".into();
    c.fed.lrs = vec![0.1];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("fed.lrs") && e.contains("privacy.lr"), "{e}");
    let mut c = FedGraphConfig::default();
    c.task.mode = "hpo".into();
    c.fed.server_lr = 0.5;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("fed.server_lr")
    );
    // What they do read stays free.
    let mut c = FedGraphConfig::default();
    c.task.mode = "privacy".into();
    c.fed.clients = 3;
    c.fed.weight_decay = 0.0;
    assert!(c.validate().is_ok());
}

#[test]
fn the_subcommand_reruns_with_the_mode_set() {
    let argv: Vec<std::ffi::OsString> = ["ferrolab", "fedgraph", "hpo", "--preset", "hpo"]
        .iter()
        .map(Into::into)
        .collect();
    let rest = vec!["--preset".to_string(), "hpo".to_string()];
    let got = mode_argv(&argv, &rest, "hpo").unwrap();
    let want: Vec<std::ffi::OsString> = ["fedgraph", "--preset", "hpo", "--set", "task.mode=hpo"]
        .iter()
        .map(Into::into)
        .collect();
    assert_eq!(got, want);
    assert!(mode_argv(&argv, &rest, "privacy").is_none());
}

#[test]
fn the_property_attack_refuses_an_ambiguous_output_bias() {
    let g = communities(600, 16, 11);
    let st = setup(&g);
    // Hidden size = classes: the hidden layer's bias has the output bias's shape.
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = g.classes;
    let z = zoo_config(&cfg, g.features.num_features(), g.classes).unwrap();
    let p = PrivacySection {
        rounds: 1,
        ..Default::default()
    };
    let e = run_one(&g, &st, &z, 5e-4, &p, None, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameters of shape [4]"), "{e}");
}
