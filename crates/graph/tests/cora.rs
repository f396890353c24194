//! Cora (Planetoid split): full-batch GCN reaches Kipf & Welling's accuracy, and Cluster-GCN
//! with random clusters stays within 3 points of it. Needs `graphs/cora_planetoid.npz` in the
//! data folder; fails, not passes, when it is missing.

#![allow(clippy::unwrap_used)]

use ferrolab_graph::{ExperimentConfig, NodeData, compare};

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn gcn_and_cluster_gcn_on_cora() {
    let data = NodeData::load_cora(None)
        .unwrap_or_else(|e| panic!("Cora is needed for this test and could not be loaded: {e}"));
    assert_eq!((data.num_nodes(), data.num_classes), (2708, 7));
    assert_eq!(
        (
            data.split.train.len(),
            data.split.val.len(),
            data.split.test.len()
        ),
        (140, 500, 1000)
    );
    let cfg = ExperimentConfig {
        seeds: vec![0, 1, 2],
        ..Default::default()
    };
    let c = compare(&data, &cfg).unwrap();
    let pct = |(m, s): (f64, f64)| format!("{:.2} ± {:.2} %", 100.0 * m, 100.0 * s);
    let fb = c.full_batch.as_ref().unwrap();
    let cg_res = c.cluster_gcn.as_ref().unwrap();
    let rp = c.random_partition.as_ref().unwrap();
    let (full, full_sel) = (fb.test_accuracy(), fb.test_accuracy_selected());
    let (cg, cg_sel) = (cg_res.test_accuracy(), cg_res.test_accuracy_selected());
    println!(
        "Cora, seeds {:?}: full-batch GCN final {} / at best val {} ({:.2} s a run; published \
         81.5); Cluster-GCN ({}, c = {}, q = {}, {:?}) final {} / at best val {} ({:.2} s a run)",
        cfg.seeds,
        pct(full),
        pct(full_sel),
        fb.train_seconds(),
        cfg.cluster.method,
        cfg.cluster.parts,
        cfg.cluster.parts_per_batch,
        cfg.cluster.norm,
        pct(cg),
        pct(cg_sel),
        cg_res.train_seconds(),
    );
    println!(
        "random partition at best val {}",
        pct(rp.test_accuracy_selected())
    );
    assert!(
        full.0 >= 0.795,
        "full-batch GCN final test accuracy {full:?}"
    );
    assert!(
        full_sel.0 >= 0.795,
        "full-batch GCN selected test accuracy {full_sel:?}"
    );
    assert!(
        cg_sel.0 >= full_sel.0 - 0.03,
        "Cluster-GCN {cg_sel:?} more than 3 points below full-batch {full_sel:?}"
    );
    // METIS clusters keep most edges inside batches; random clusters of the same size do not.
    let cut = |m: &ferrolab_graph::MethodResult| m.runs[0].partition.as_ref().unwrap().edge_cut;
    assert!(
        cut(cg_res) < 0.5 * cut(rp),
        "{} vs {}",
        cut(cg_res),
        cut(rp)
    );
}
