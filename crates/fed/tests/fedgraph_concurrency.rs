//! Seeded runs stay seeded when several run at once in one process (parallel tests, a user's
//! threads, a pool of any size): burn draws a parameter's initial value at its first read,
//! from the process-global generator, so a model built under `exclusive_rng` but first read
//! after the guard is dropped took another run's stream (one of three concurrent FedAvg runs
//! got another curve from round 1 on).

#![allow(clippy::unwrap_used)]

use ferrolab_fed::fedgraph::config::{DataSection, FedGraphConfig};
use ferrolab_fed::fedgraph::data::SeedSetup;
use ferrolab_fed::fedgraph::experiment::zoo_config;
use ferrolab_fed::fedgraph::run::{Schedule, fedavg};

mod fedgraph_util;
use fedgraph_util::communities;

#[test]
fn concurrent_seeded_fedavg_runs_repeat_the_serial_curve() {
    let g = communities(600, 16, 11);
    let d = DataSection {
        train_per_class: 30,
        num_val: 100,
        delta: 10,
        ..Default::default()
    };
    let st = SeedSetup::draw(&g, &d, 4, 1, 2).unwrap();
    let mut cfg = FedGraphConfig::default();
    cfg.model.hidden = 16;
    let z = zoo_config(&cfg, g.features.num_features(), g.classes).unwrap();
    let s = Schedule {
        lr: 0.5,
        local_steps: 4,
        rounds: 12,
        patience: 0,
        weight_decay: 5e-4,
        by_loss: false,
    };
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
