//! Centralised accuracy of every ModelZoo network on Cora's Planetoid split, the ferrolab side
//! of `bench/run_fedgraph_models.sh` (issue 18: GraphSAGE, GIN and GPR-GNN within 1.5 points
//! of a PyTorch Geometric script on the same split, `bench/fedgraph_models_pyg.py`).
//!
//! FS-G's ModelZoo defaults (2 layers, hidden 64, dropout 0.5 between layers then ReLU, no
//! input dropout; GAT 8 heads; GPR-GNN K = 10, α = 0.1), full-batch Adam (lr 0.01, weight
//! decay 5e-4), up to 200 epochs, stopped 100 epochs after the best validation accuracy; the
//! test accuracy is the one at that epoch. Prints one JSON object: per architecture the test
//! accuracy of each seed and the seconds taken.
//!
//! `cargo run --release -p ferrolab-graph --example zoo_cora -- [--archs sage,gin,gpr] [--seeds 5] [--data-dir DIR]`

use std::path::PathBuf;
use std::time::Instant;

use ferrolab_core::backend::train_device;
use ferrolab_graph::NodeData;
use ferrolab_graph::zoo::train::{NodeTask, OptimKind, train_centralised};
use ferrolab_graph::zoo::{Arch, ZooConfig};

const EPOCHS: usize = 200;
const PATIENCE: usize = 100;
const LR: f64 = 0.01;
const WEIGHT_DECAY: f64 = 5e-4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut archs = vec![Arch::Sage, Arch::Gin, Arch::Gpr];
    let mut seeds = 5u64;
    let mut data_dir: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--archs" => {
                archs = value()?
                    .split(',')
                    .map(Arch::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--seeds" => seeds = value()?.parse()?,
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: zoo_cora [--archs a,b] [--seeds N] [--data-dir DIR]"
                )
                .into());
            }
        }
    }
    let d = NodeData::load_cora(data_dir.as_deref())?;
    let dev = train_device();
    let rows: Vec<usize> = (0..d.num_nodes()).collect();
    let task = NodeTask::new(
        &d.graph,
        &d.features,
        &rows,
        d.labels.clone(),
        d.num_classes,
        d.split.clone(),
        &dev,
    )?;
    let mut out = serde_json::Map::new();
    for arch in archs {
        let cfg = ZooConfig::new(arch, d.features.num_features(), d.num_classes);
        let t0 = Instant::now();
        let mut accs = Vec::new();
        let mut epochs = Vec::new();
        for s in 0..seeds {
            let o = train_centralised(
                &task,
                &cfg,
                OptimKind::Adam {
                    weight_decay: WEIGHT_DECAY,
                },
                LR,
                EPOCHS,
                PATIENCE,
                s,
            )?;
            accs.push(o.best.test_accuracy);
            epochs.push(o.best_epoch);
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("{}: {accs:?} ({secs:.1} s)", arch.name());
        out.insert(
            arch.name().into(),
            serde_json::json!({"test_accuracy": accs, "best_epoch": epochs, "seconds": secs}),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
