//! The 1M-node scale run, moved out of the test suite (it timed and printed; its two checks
//! of the generator's output are cheap and belong to the generator's unit tests at small
//! size). Generates the contextual-SBM graph Cluster-GCN's scale figures use, reports its time
//! and peak memory, and reads 1% of the feature rows.
//!
//! ```text
//! cargo bench -p ferrolab-graph --bench csbm_scale            # 1,000,000 nodes
//! NODES=200000 cargo bench -p ferrolab-graph --bench csbm_scale
//! ```
//!
//! Run it alone: the peak resident memory is the whole process's.

use ferrolab_data::{CsbmConfig, generate_csbm};
use std::error::Error;
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn Error>> {
    let nodes = std::env::var("NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cfg = CsbmConfig {
        nodes,
        classes: 10,
        avg_degree: 20.0,
        p_in_ratio: 0.8,
        features: 128,
        seed: 3,
        ..Default::default()
    };
    let t = Instant::now();
    let g = generate_csbm(&cfg)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "csbm {nodes} nodes: {} adjacency entries (homophily {:.3}) in {secs:.2} s, peak RSS {:.0} MB",
        g.num_edges(),
        g.edge_homophily(),
        peak_rss_mb()
    );
    let t = Instant::now();
    let mut row = vec![0.0f32; cfg.features];
    let mut acc = 0.0f64;
    for i in (0..g.num_nodes()).step_by(97) {
        g.feature_row(i, &mut row);
        acc += f64::from(row[0]);
    }
    println!(
        "feature rows for 1% of nodes in {:.3} s (checksum {acc:.3})",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
