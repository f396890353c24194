//! Writes a generated graph, its split and a partition to one `.npz` for the PyTorch
//! Geometric comparison (bench/run_cluster_gcn_pyg.sh), so both sides train on the same
//! graph, split and clusters.
//!
//! `cargo run --release -p ferrolab-graph --example export_graph -- OUT.npz NODES PARTS`

use std::path::PathBuf;

use ferrolab_data::npy::npy_bytes;
use ferrolab_data::npz::write_npz;
use ferrolab_data::{CsbmConfig, Features, generate_csbm};
use ferrolab_graph::{ClusterPartition, NodeData};

fn i64s(v: impl IntoIterator<Item = usize>) -> Vec<u8> {
    v.into_iter()
        .flat_map(|x| (x as i64).to_le_bytes())
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, nodes, parts] = args.as_slice() else {
        return Err("usage: export_graph OUT.npz NODES PARTS".into());
    };
    let (out, nodes, parts) = (PathBuf::from(out), nodes.parse()?, parts.parse()?);
    // The scale preset's generator settings (configs/cluster-gcn/scale.toml).
    let cfg = CsbmConfig {
        nodes,
        classes: 10,
        avg_degree: 20.0,
        p_in_ratio: 0.8,
        features: 128,
        feature_signal: 0.05,
        feature_noise: 1.0,
        seed: 0,
    };
    let g = generate_csbm(&cfg)?.to_graph_data();
    let split = g.seeded_per_class_split(2000.min(nodes / 20), 500.min(nodes / 40), 0)?;
    let data = NodeData::from_graph_data(&g, Some(split.clone()), false)?;
    let p = ClusterPartition::metis(&data.graph, parts, 0)?;
    let Features::Dense { rows, cols, values } = &g.features else {
        return Err("the generator makes dense features".into());
    };
    let n = data.num_nodes();
    let (indptr, indices) = (data.graph.indptr(), data.graph.indices());
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let members = vec![
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
            "adj_data",
            npy_bytes(
                "<f4",
                &[indices.len()],
                false,
                &f32s(&vec![1.0; indices.len()]),
            ),
        ),
        ("adj_shape", npy_bytes("<i8", &[2], false, &i64s([n, n]))),
        (
            "attr_indptr",
            npy_bytes(
                "<i8",
                &[rows + 1],
                false,
                &i64s((0..=*rows).map(|r| r * cols)),
            ),
        ),
        (
            "attr_indices",
            npy_bytes(
                "<i8",
                &[rows * cols],
                false,
                &i64s((0..rows * cols).map(|k| k % cols)),
            ),
        ),
        (
            "attr_data",
            npy_bytes("<f4", &[rows * cols], false, &f32s(values)),
        ),
        (
            "attr_shape",
            npy_bytes("<i8", &[2], false, &i64s([*rows, *cols])),
        ),
        (
            "labels",
            npy_bytes("<i8", &[n], false, &i64s(data.labels.iter().copied())),
        ),
        (
            "idx_train",
            npy_bytes(
                "<i8",
                &[split.train.len()],
                false,
                &i64s(split.train.clone()),
            ),
        ),
        (
            "idx_val",
            npy_bytes("<i8", &[split.val.len()], false, &i64s(split.val.clone())),
        ),
        (
            "idx_test",
            npy_bytes("<i8", &[split.test.len()], false, &i64s(split.test.clone())),
        ),
        (
            "cluster_part",
            npy_bytes(
                "<i8",
                &[n],
                false,
                &i64s(p.assignment(n).iter().map(|&a| a as usize)),
            ),
        ),
    ];
    write_npz(&out, &members, false)?;
    eprintln!(
        "wrote {}: {n} nodes, {} adjacency entries, {parts} METIS clusters",
        out.display(),
        indices.len()
    );
    Ok(())
}
