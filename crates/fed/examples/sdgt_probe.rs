//! One SD-GT (or baseline) run with its accuracy and training loss printed at every evaluated
//! round: the quick look used to tell a defect from a step-size matter without the whole
//! `ferrolab sdgt` grid.
//!
//! ```text
//! cargo run --release -p ferrolab-fed --example sdgt_probe -- [--arch cnn|logreg] \
//!     [--split sorted|iid|dirichlet] [--algo sdgt] [--lr 0.01] [--rounds 10] [--eval-every 1] \
//!     [--t 5] [--s 2] [--batch 32] [--per 4] [--seed 0] [--test-limit 2000] [--threads 1]
//! ```
//!
//! Data, topology, partition and initial model are built as `ferrolab sdgt --seed N` builds
//! them for its run 0 (same derived seeds; Fashion-MNIST from the usual lookup, 1000 training
//! images held out, the first 2000 test images), so a probe can replay one unit of a
//! comparison with one setting changed (`--s 4`: every device sampled, no stale y).

use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::sdgt::algo::Algo;
use ferrolab_fed::sdgt::config::SdgtConfig;
use ferrolab_fed::sdgt::data as part;
use ferrolab_fed::sdgt::driver::{self, RunData};
use ferrolab_fed::sdgt::experiment;
use ferrolab_vision::data::Normalization;
use std::sync::Arc;
use std::time::Instant;

fn usage(msg: &str) -> ! {
    eprintln!("error: {msg}");
    eprintln!(
        "usage: sdgt_probe [--arch cnn|logreg] [--split sorted|iid|dirichlet] [--algo A] \
         [--lr X] [--rounds N] [--eval-every N] [--t N] [--s N] [--batch N] [--per N] \
         [--seed N] [--test-limit N] [--threads N]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = SdgtConfig::default();
    cfg.model.arch = "cnn".into();
    cfg.data.test_limit = 2000;
    cfg.data.val_size = 1000;
    let (mut split, mut algo, mut lr, mut threads, mut seed) = (
        "sorted".to_string(),
        "sdgt".to_string(),
        0.01f64,
        1usize,
        0u64,
    );
    cfg.fed.rounds = 10;
    cfg.fed.eval_every = 1;
    let mut i = 0;
    while i < args.len() {
        let val = args
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| usage(&format!("{} needs a value", args[i])));
        let num = || -> u64 {
            val.parse()
                .unwrap_or_else(|_| usage(&format!("{} takes an integer", args[i])))
        };
        match args[i].as_str() {
            "--arch" => cfg.model.arch = val.clone(),
            "--split" => split = val.clone(),
            "--algo" => algo = val.clone(),
            "--lr" => {
                lr = val
                    .parse()
                    .ok()
                    .filter(|x: &f64| *x > 0.0)
                    .unwrap_or_else(|| usage("--lr takes a positive number"))
            }
            "--rounds" => cfg.fed.rounds = num().max(1),
            "--eval-every" => cfg.fed.eval_every = num().max(1),
            "--t" => cfg.fed.local_steps = num().max(1) as usize,
            "--s" => cfg.fed.s = num() as usize,
            "--batch" => cfg.fed.batch = num().max(1) as usize,
            "--per" => cfg.fed.devices_per_client = num().max(1) as usize,
            "--seed" => seed = num(),
            "--test-limit" => cfg.data.test_limit = num() as usize,
            "--threads" => threads = num().max(1) as usize,
            other => usage(&format!("unknown argument `{other}`")),
        }
        i += 2;
    }
    let algo = Algo::parse(&algo).unwrap_or_else(|| usage(&format!("unknown algorithm `{algo}`")));
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        usage(&format!("threads: {e}"));
    }
    ferrolab_core::backend::tune_allocator();
    let images = experiment::load_images(&cfg, None, ferrolab_core::seed::derive(seed, "split"))
        .unwrap_or_else(|e| usage(&e.to_string()));
    let norm = Normalization::of(&images.train);
    let train = Arc::new(part::to_samples(&images.train, norm, 10));
    let val = Arc::new(part::to_samples(&images.val, norm, 10));
    let test = Arc::new(part::to_samples(&images.test, norm, 10));
    let init = ferrolab_core::seed::derive(seed, "init");
    ferrolab_core::backend::seed_backend(init);
    let model = experiment::build_model(&cfg, init);
    let x0 = Arc::new(model.init(init));
    let run0 = ferrolab_core::seed::derive(seed, "run0");
    let (topo, gt) =
        experiment::topologies(&cfg, run0, &[algo]).unwrap_or_else(|e| usage(&e.to_string()));
    let data = RunData {
        model: Arc::clone(&model),
        parts: Arc::new(experiment::partition(&cfg, &split, &train.y, run0)),
        train,
        val,
        test,
        topo: Arc::new(topo),
        gt_topo: Arc::new(gt),
        x0,
        state_dir: None,
    };
    let spec = driver::RunSpec {
        checkpoint_every: 0,
        ..experiment::unit_spec(&cfg, algo, lr, run0, false)
    };
    let t0 = Instant::now();
    let out = driver::run(&spec, &data, Arc::new(InProcFabric::new()), &mut |r| {
        println!(
            "{}",
            serde_json::json!({"algo": algo.key(), "split": split, "lr": lr, "round": r.round,
                "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
                "train_loss": r.train_loss, "d2d_mb": r.d2d_mb, "server_mb": r.server_mb,
                "seconds": t0.elapsed().as_secs_f64()})
        );
    });
    if let Err(e) = out {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
