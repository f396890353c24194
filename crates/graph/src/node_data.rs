//! A node-classification data set in memory ([`NodeData`]) and reading its feature rows as
//! model input. Both the trainers and the out-of-core store build on it.

use std::path::Path;

use ferrolab_core::burn::prelude::*;
use ferrolab_core::sparse::SparseAdj;
use ferrolab_data::{CsrGraphData, Features, Split};
use rand::RngExt;
use rand::rngs::StdRng;

use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};
use crate::models::GcnInput;

/// A node-classification data set ready for training: symmetric adjacency without self loops,
/// features (sparse bag-of-words rows, or dense), labels and a split.
#[derive(Debug, Clone)]
pub struct NodeData {
    pub graph: CsrGraph,
    /// `num_nodes × num_features`; sparse rows are row-normalised when asked.
    pub features: Features,
    pub labels: Vec<usize>,
    pub num_classes: usize,
    pub split: Split,
}

impl NodeData {
    /// Symmetrises the adjacency and, with `row_normalize`, scales each feature row to sum 1
    /// (Kipf & Welling's preprocessing of non-negative bag-of-words; it makes no sense for
    /// signed features). `split` overrides the file's split; one of the two must exist.
    pub fn from_graph_data(
        g: &CsrGraphData,
        split: Option<Split>,
        row_normalize: bool,
    ) -> Result<Self> {
        let split = split.or_else(|| g.split.clone()).ok_or_else(|| {
            GraphError::Invalid("the graph has no train/val/test split and none was given".into())
        })?;
        let n = g.num_nodes;
        if let Some(bad) = [&split.train, &split.val, &split.test]
            .iter()
            .flat_map(|s| s.iter())
            .find(|&&i| i >= n)
        {
            return Err(GraphError::Invalid(format!(
                "split node {bad} out of range for {n} nodes"
            )));
        }
        if g.labels.len() != n || g.features.num_rows() != n {
            return Err(GraphError::Invalid(format!(
                "{n} nodes but {} labels and {} feature rows",
                g.labels.len(),
                g.features.num_rows()
            )));
        }
        let graph = CsrGraph::from_data(&g.symmetrize())?;
        // Bag-of-words features stay sparse (Cora: 1.3% non-zero); dense ones (the generator's)
        // stay dense, since CSR would double their memory.
        let mut features = g.features.clone();
        if let (Features::Sparse(m), true) = (&mut features, row_normalize) {
            for r in 0..m.rows {
                let (a, b) = (m.indptr[r], m.indptr[r + 1]);
                let row = &mut m.data[a..b];
                let s: f32 = row.iter().sum();
                // An all-zero row stays zero rather than becoming NaN.
                if s != 0.0 {
                    row.iter_mut().for_each(|v| *v /= s);
                }
            }
        }
        // Sparse storage of mostly non-zero features (an exported generated graph) costs twice
        // the memory and turns matrix products into gathers: densify.
        if let Features::Sparse(m) = &features
            && m.rows > 0
            && m.nnz() * 2 > m.rows * m.cols
        {
            let mut values = vec![0f32; m.rows * m.cols];
            for (r, row) in values.chunks_mut(m.cols.max(1)).enumerate() {
                m.row_dense(r, row);
            }
            features = Features::Dense {
                rows: m.rows,
                cols: m.cols,
                values,
            };
        }
        if let Features::Dense { values, .. } = &features
            && let Some(i) = values.iter().position(|v| !v.is_finite())
        {
            return Err(GraphError::Invalid(format!(
                "feature value {} of node {} is not finite",
                values[i],
                i / features.num_features().max(1)
            )));
        }
        if let Features::Sparse(m) = &features
            && let Some(i) = m.data.iter().position(|v| !v.is_finite())
        {
            return Err(GraphError::Invalid(format!(
                "stored feature value #{i} ({}) is not finite",
                m.data[i]
            )));
        }
        Ok(NodeData {
            graph,
            features,
            labels: g.labels.iter().map(|&l| l as usize).collect(),
            num_classes: g.num_classes,
            split,
        })
    }

    /// Cora in Planetoid order with its 140/500/1000 split (`graphs/cora_planetoid.npz` under
    /// the data root: `data_dir`, else `$FERROLAB_DATA`, else `../shared/data`).
    pub fn load_cora(data_dir: Option<&Path>) -> Result<Self> {
        let path = ferrolab_data::find_dataset(data_dir, "cora_planetoid")?;
        Self::from_graph_data(&ferrolab_data::load_npz_graph(&path)?, None, true)
    }

    pub fn num_nodes(&self) -> usize {
        self.graph.num_nodes()
    }

    pub fn num_features(&self) -> usize {
        self.features.num_features()
    }

    /// Resident bytes of the adjacency, features and labels (what any method must hold).
    pub fn resident_bytes(&self) -> usize {
        let f = match &self.features {
            Features::Sparse(m) => m.indptr.len() * 8 + m.indices.len() * 8,
            Features::Dense { values, .. } => values.len() * 4,
        };
        self.graph.indptr().len() * 8 + self.graph.num_edges() * 4 + f + self.labels.len() * 8
    }
}

/// The feature rows `nodes` on `dev`: a sparse matrix for bag-of-words features, a dense
/// tensor otherwise. With `dropout` on sparse rows, each stored value is zeroed with
/// probability `p` and the rest scaled by `1 / (1 - p)` (Kipf & Welling's sparse dropout of
/// the input); dense rows get the model's own dropout instead.
pub(crate) fn feature_rows(
    f: &Features,
    nodes: &[usize],
    dropout: Option<(f64, &mut StdRng)>,
    dev: &Device,
) -> Result<GcnInput> {
    let f = match f {
        Features::Sparse(m) => m,
        Features::Dense { cols, values, .. } => {
            let mut block = Vec::with_capacity(nodes.len() * cols);
            for &r in nodes {
                block.extend_from_slice(&values[r * cols..(r + 1) * cols]);
            }
            return Ok(GcnInput::Dense(Box::new(Tensor::from_data(
                TensorData::new(block, [nodes.len(), *cols]),
                dev,
            ))));
        }
    };
    let mut indptr = Vec::with_capacity(nodes.len() + 1);
    indptr.push(0);
    let mut indices = Vec::new();
    let mut values = Vec::new();
    let (p, mut rng) = match dropout {
        Some((p, rng)) if p > 0.0 => (p, Some(rng)),
        _ => (0.0, None),
    };
    let scale = (1.0 / (1.0 - p)) as f32;
    for &r in nodes {
        let (idx, val) = f.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            if let Some(rng) = rng.as_mut() {
                if rng.random::<f64>() < p {
                    continue;
                }
                indices.push(c);
                values.push(v * scale);
            } else {
                indices.push(c);
                values.push(v);
            }
        }
        indptr.push(indices.len());
    }
    let m = SparseAdj::from_csr(nodes.len(), f.cols, &indptr, &indices, Some(&values), dev)
        .map_err(GraphError::Invalid)?;
    Ok(GcnInput::Sparse(Box::new(m)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_data::{CsbmConfig, generate_csbm};

    #[test]
    fn mostly_nonzero_sparse_features_are_densified_and_nan_is_refused() {
        let _serial = crate::serial_test();
        let mut g = generate_csbm(&CsbmConfig {
            nodes: 40,
            features: 3,
            avg_degree: 4.0,
            ..Default::default()
        })
        .unwrap()
        .to_graph_data();
        let Features::Dense { rows, cols, values } = g.features.clone() else {
            panic!("the generator makes dense features")
        };
        g.features = Features::Sparse(ferrolab_data::CsrMatrix {
            rows,
            cols,
            indptr: (0..=rows).map(|r| r * cols).collect(),
            indices: (0..rows * cols).map(|k| (k % cols) as u32).collect(),
            data: values.clone(),
        });
        let split = g.seeded_per_class_split(2, 2, 0).unwrap();
        let d = NodeData::from_graph_data(&g, Some(split.clone()), false).unwrap();
        assert!(matches!(&d.features, Features::Dense { values: v, .. } if *v == values));
        if let Features::Sparse(m) = &mut g.features {
            m.data[5] = f32::NAN;
        }
        let e = NodeData::from_graph_data(&g, Some(split), false).unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
    }

    #[test]
    fn graphs_without_a_usable_split_are_refused() {
        let _serial = crate::serial_test();
        let mut g = generate_csbm(&CsbmConfig {
            nodes: 50,
            avg_degree: 4.0,
            ..Default::default()
        })
        .unwrap()
        .to_graph_data();
        assert!(NodeData::from_graph_data(&g, None, false).is_err());
        g.split = Some(Split {
            train: vec![60],
            ..Default::default()
        });
        assert!(NodeData::from_graph_data(&g, None, false).is_err());
    }
}
