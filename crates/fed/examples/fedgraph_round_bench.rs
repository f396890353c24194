//! One federated round of GCN on Cora with 5 in-process clients (issue 18's speed target),
//! timed on the code path `ferrolab fedgraph` runs, and the export that lets the PyTorch
//! Geometric twin (`bench/fedgraph_pyg.py`) train exactly the same client subgraphs.
//!
//! A round is what [`fedavg`] does between two evaluations: tasks out, each of the 5 clients
//! runs `steps` full-batch SGD steps (weight decay 5e-4) on its Louvain subgraph, replies,
//! FedAvg weighted by training nodes, and the server's evaluation of the new global model on
//! the whole graph (cross-client edges included). The run is `warmup + iters` rounds with
//! early stopping off; the figure is the median of the timed rounds' wall times (the
//! `round_seconds` that `server_loop` records).
//!
//! ```text
//! fedgraph_round_bench --export OUT.npz      # the graph, split, clients, hyper-parameters
//! fedgraph_round_bench [--threads 2] [--warmup 5] [--iters 20] [--lr 0.25] [--steps 4]
//! fedgraph_round_bench --params-only         # {"params": N}
//! ```
//!
//! The setup is seed 0 of `ferrolab fedgraph` with `--seed 0` and the default keys (Cora from
//! the usual data lookup, PyG's random split 232 per class / 542 val, Louvain δ = 20, GCN
//! hidden 64, dropout 0.5).

use std::path::PathBuf;

use ferrolab_core::metrics::median;
use ferrolab_data::npy::npy_bytes;
use ferrolab_data::npz::write_npz;
use ferrolab_fed::fedgraph::FedGraphConfig;
use ferrolab_fed::fedgraph::data::{GraphSet, SeedSetup};
use ferrolab_fed::fedgraph::experiment::zoo_config;
use ferrolab_fed::fedgraph::run::{Schedule, fedavg, init_model};
use ferrolab_graph::zoo::model_params;

const CLIENTS: usize = 5;

struct Args {
    export: Option<PathBuf>,
    params_only: bool,
    threads: usize,
    warmup: usize,
    iters: usize,
    lr: f64,
    steps: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!("error: {msg}");
    eprintln!(
        "usage: fedgraph_round_bench [--export OUT.npz | --params-only] [--threads N] \
         [--warmup N] [--iters N] [--lr X] [--steps N]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        export: None,
        params_only: false,
        threads: 2,
        warmup: 5,
        iters: 20,
        lr: 0.25,
        steps: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        let count = |name: &str, v: String, min: usize| -> usize {
            match v.parse::<usize>() {
                Ok(n) if n >= min => n,
                _ => usage(&format!("{name}: expected an integer >= {min}, got {v:?}")),
            }
        };
        match flag.as_str() {
            "--export" => a.export = Some(PathBuf::from(value("--export"))),
            "--params-only" => a.params_only = true,
            "--threads" => a.threads = count("--threads", value("--threads"), 1),
            "--warmup" => a.warmup = count("--warmup", value("--warmup"), 0),
            "--iters" => a.iters = count("--iters", value("--iters"), 1),
            "--steps" => a.steps = count("--steps", value("--steps"), 1),
            "--lr" => {
                let v = value("--lr");
                a.lr = match v.parse::<f64>() {
                    Ok(x) if x > 0.0 && x.is_finite() => x,
                    _ => usage(&format!("--lr: expected a positive number, got {v:?}")),
                }
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    a
}

fn i64s(v: impl IntoIterator<Item = usize>) -> Vec<u8> {
    v.into_iter()
        .flat_map(|x| (x as i64).to_le_bytes())
        .collect()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64_scalar(x: f64) -> Vec<u8> {
    npy_bytes("<f8", &[1], false, &x.to_le_bytes())
}

/// Seconds of CPU (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux configuration this runs on.
    Some(ticks / 100.0)
}

fn main() {
    if let Err(e) = run(parse_args()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let threads = ferrolab_core::backend::init_threads(Some(a.threads));
    let cfg = FedGraphConfig::default();
    let g = GraphSet::load(&cfg.data, None)?;
    let zoo = zoo_config(&cfg, g.features.num_features(), g.classes)?;
    // Seed 0 of `ferrolab fedgraph --seed 0` (run_table's derivation).
    let seed = ferrolab_core::seed::derive(0, "seed0");
    let setup = SeedSetup::draw(
        &g,
        &cfg.data,
        CLIENTS,
        ferrolab_core::seed::derive(seed, "node_split"),
        ferrolab_core::seed::derive(seed, "client_split"),
    )?;
    if a.params_only {
        let m = init_model(&zoo, 0)?;
        let n: usize = model_params(&m).iter().map(|p| p.data.len()).sum();
        println!("{}", serde_json::json!({ "params": n }));
        return Ok(());
    }
    if let Some(out) = &a.export {
        return export(out, &g, &setup, &cfg, &a);
    }
    let sched = |rounds: usize| Schedule {
        lr: a.lr,
        local_steps: a.steps,
        rounds,
        patience: 0,
        weight_decay: cfg.fed.weight_decay,
        by_loss: false,
    };
    // CPU time of the timed rounds: a run of the warm-up rounds alone, subtracted from the
    // full run (same set-up, same first rounds), so set-up and warm-up cancel out.
    let c0 = cpu_seconds();
    fedavg(&g, &setup, &zoo, &sched(a.warmup.max(1)), seed)?;
    let c1 = cpu_seconds();
    let r = fedavg(&g, &setup, &zoo, &sched(a.warmup + a.iters), seed)?;
    let c2 = cpu_seconds();
    if r.round_seconds.len() != a.warmup + a.iters {
        return Err(format!(
            "the run stopped after {} of {} rounds (diverged?)",
            r.round_seconds.len(),
            a.warmup + a.iters
        )
        .into());
    }
    let timed: Vec<f64> = r.round_seconds[a.warmup..]
        .iter()
        .map(|s| s * 1e3)
        .collect();
    let cpu_ms = match (c0, c1, c2) {
        (Some(c0), Some(c1), Some(c2)) => {
            let warm_rounds = a.warmup.max(1) as f64;
            let per_warm = (c1 - c0) / warm_rounds;
            // Full run minus the warm-up run, spread over the rounds the warm-up run lacks.
            let extra_rounds = (a.warmup + a.iters) as f64 - warm_rounds;
            if extra_rounds > 0.0 {
                Some(((c2 - c1) - (c1 - c0)) / extra_rounds * 1e3)
            } else {
                Some(per_warm * 1e3)
            }
        }
        _ => None,
    };
    let last = r.curve.last().copied().unwrap_or((0, f64::NAN, f64::NAN));
    println!(
        "{}",
        serde_json::json!({
            "round_ms": median(&timed),
            "round_ms_min": timed.iter().copied().fold(f64::INFINITY, f64::min),
            "round_ms_max": timed.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "round_ms_all": timed,
            "cpu_ms_per_round": cpu_ms,
            "threads": threads,
            "client_threads": CLIENTS,
            "warmup": a.warmup,
            "iters": a.iters,
            "lr": a.lr,
            "local_steps": a.steps,
            "val_accuracy_last": last.1,
            "test_accuracy_last": last.2,
            "peak_rss_mb": ferrolab_core::resources::peak_rss_mb(),
        })
    );
    Ok(())
}

/// Everything the PyG twin needs to train the same clients: dense features, labels, the whole
/// graph's CSR adjacency (both directions), the node split, each client's nodes (ascending
/// global ids, as `ClientSplit` keeps them) and intra-client edge count, and the
/// hyper-parameters.
fn export(
    out: &std::path::Path,
    g: &GraphSet,
    setup: &SeedSetup,
    cfg: &FedGraphConfig,
    a: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = g.num_nodes();
    let d = g.features.num_features();
    let (indptr, indices) = (g.graph.indptr(), g.graph.indices());
    let cs = &setup.clients;
    let mut client_nodes = Vec::with_capacity(n);
    let mut client_ptr = vec![0usize];
    let mut client_edges = Vec::with_capacity(cs.clients.len());
    for c in 0..cs.clients.len() {
        let (sub, nodes) = cs.subgraph(&g.graph, c)?;
        client_nodes.extend_from_slice(&nodes);
        client_ptr.push(client_nodes.len());
        client_edges.push(sub.num_edges());
    }
    let sp = &setup.split;
    let m = &cfg.model;
    let members = vec![
        (
            "x",
            npy_bytes("<f4", &[n, d], false, &f32s(&g.features.to_dense())),
        ),
        (
            "labels",
            npy_bytes("<i8", &[n], false, &i64s(g.labels.iter().copied())),
        ),
        (
            "adj_indptr",
            npy_bytes("<i8", &[n + 1], false, &i64s(indptr.iter().copied())),
        ),
        (
            "adj_indices",
            npy_bytes(
                "<i8",
                &[indices.len()],
                false,
                &i64s(indices.iter().map(|&i| i as usize)),
            ),
        ),
        (
            "idx_train",
            npy_bytes("<i8", &[sp.train.len()], false, &i64s(sp.train.clone())),
        ),
        (
            "idx_val",
            npy_bytes("<i8", &[sp.val.len()], false, &i64s(sp.val.clone())),
        ),
        (
            "idx_test",
            npy_bytes("<i8", &[sp.test.len()], false, &i64s(sp.test.clone())),
        ),
        (
            "client_nodes",
            npy_bytes("<i8", &[n], false, &i64s(client_nodes.iter().copied())),
        ),
        (
            "client_ptr",
            npy_bytes(
                "<i8",
                &[client_ptr.len()],
                false,
                &i64s(client_ptr.iter().copied()),
            ),
        ),
        (
            "client_edges",
            npy_bytes(
                "<i8",
                &[client_edges.len()],
                false,
                &i64s(client_edges.iter().copied()),
            ),
        ),
        ("classes", npy_bytes("<i8", &[1], false, &i64s([g.classes]))),
        ("hidden", npy_bytes("<i8", &[1], false, &i64s([m.hidden]))),
        ("layers", npy_bytes("<i8", &[1], false, &i64s([m.layers]))),
        ("dropout", f64_scalar(m.dropout)),
        ("lr", f64_scalar(a.lr)),
        ("weight_decay", f64_scalar(cfg.fed.weight_decay)),
        (
            "local_steps",
            npy_bytes("<i8", &[1], false, &i64s([a.steps])),
        ),
    ];
    write_npz(out, &members, false)?;
    eprintln!(
        "wrote {}: {n} nodes, {} adjacency entries, {} clients of {:?} nodes ({} cross-client edges dropped), split {}/{}/{}",
        out.display(),
        indices.len(),
        cs.clients.len(),
        cs.clients.iter().map(Vec::len).collect::<Vec<_>>(),
        cs.cross_edges,
        sp.train.len(),
        sp.val.len(),
        sp.test.len()
    );
    Ok(())
}
