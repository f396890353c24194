//! Planetoid's `ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}` (Yang et al., 2016) to the
//! `cora_planetoid.npz` layout of `../shared/data/README.md`.
//!
//! Node order follows Kipf's `load_data` and PyG's `read_planetoid_data`: node `i` below
//! `allx.rows` is row `i` of `allx`/`ally`; row `j` of `tx`/`ty` is node `test.index[j]`. Where
//! the test indices leave a gap (CiteSeer has 15 test nodes missing), the nodes in the gap keep
//! an all-zero feature row and a zero label row, whose arg-max is class 0, exactly as PyG does.
//! Splits: train = the rows of `y`, val = the next 500 nodes that are not test nodes, test =
//! the sorted test indices.
//! The adjacency is every link of `graph` in both directions, once, without self loops.

use std::path::Path;

use super::pickle::{self, Array, Csr, Pickle};
use crate::error::{DataError, Result};
use crate::npy::npy_bytes;

/// Converts the Planetoid files `dir/ind.<name>.*` into the npz at `out`.
pub fn convert_planetoid(dir: &Path, name: &str, out: &Path) -> Result<()> {
    let path_of = |ext: &str| dir.join(format!("ind.{name}.{ext}"));
    let load = |ext: &str| -> Result<(Pickle, std::path::PathBuf)> {
        let p = path_of(ext);
        let bytes = std::fs::read(&p).map_err(|e| DataError::io(&p, e))?;
        let pk = pickle::parse(&bytes).map_err(|m| DataError::malformed(&p, "pickle", m))?;
        Ok((pk, p))
    };
    let features = |ext: &str| -> Result<Csr> {
        let (pk, p) = load(ext)?;
        let class = pk.class_of(&pk.top).unwrap_or_default();
        if class.ends_with("_reconstruct") {
            let a = pk
                .ndarray(&pk.top)
                .map_err(|m| DataError::malformed(&p, "array", m))?;
            dense_to_csr(&a).map_err(|m| DataError::malformed(&p, "array", m))
        } else {
            pk.csr(&pk.top)
                .map_err(|m| DataError::malformed(&p, "CSR matrix", m))
        }
    };
    let labels = |ext: &str| -> Result<(Vec<i64>, std::path::PathBuf)> {
        let (pk, p) = load(ext)?;
        let a = pk
            .ndarray(&pk.top)
            .map_err(|m| DataError::malformed(&p, "array", m))?;
        let rows = one_hot_argmax(&a).map_err(|m| DataError::malformed(&p, "array", m))?;
        Ok((rows, p))
    };

    let x = features("x")?;
    let allx = features("allx")?;
    let tx = features("tx")?;
    let (y, _) = labels("y")?;
    let (ally, ally_p) = labels("ally")?;
    let (ty, ty_p) = labels("ty")?;
    let index_p = path_of("test.index");
    let (test_index, index_lines) = read_test_index(&index_p)?;
    // The file's line of entry j, for messages (blank lines are skipped when reading).
    let line_of = |j: usize| format!("line {}", index_lines.get(j).copied().unwrap_or(j + 1));

    if allx.cols != tx.cols {
        return Err(DataError::malformed(
            &path_of("tx"),
            "shape",
            format!("{} feature columns, allx has {}", tx.cols, allx.cols),
        ));
    }
    if ally.len() != allx.rows {
        return Err(DataError::malformed(
            &ally_p,
            "shape",
            format!("{} rows, allx has {}", ally.len(), allx.rows),
        ));
    }
    if ty.len() != tx.rows || test_index.len() != tx.rows {
        return Err(DataError::malformed(
            &ty_p,
            "shape",
            format!(
                "ty has {} rows, tx {}, test.index {}: they must agree",
                ty.len(),
                tx.rows,
                test_index.len()
            ),
        ));
    }
    if y.len() > allx.rows || x.rows != y.len() {
        return Err(DataError::malformed(
            &path_of("y"),
            "shape",
            format!("x has {} rows, y {}, allx {}", x.rows, y.len(), allx.rows),
        ));
    }
    let base = allx.rows;
    let n = test_index
        .iter()
        .map(|&i| i.saturating_add(1))
        .max()
        .unwrap_or(0)
        .max(base);
    // Nodes between the allx rows and the largest test index that no test row fills keep zero
    // rows (CiteSeer: 15 among 1,015). Far more missing nodes than test rows is a damaged
    // index, and sizing the node tables by it would allocate without bound.
    let missing = n.saturating_sub(base).saturating_sub(test_index.len());
    if missing > test_index.len().max(16) {
        let (j, far) = test_index
            .iter()
            .enumerate()
            .max_by_key(|(_, i)| **i)
            .map_or((0, 0), |(j, i)| (j, *i));
        return Err(DataError::malformed(
            &index_p,
            line_of(j),
            format!(
                "test node {far} would leave {missing} nodes without a feature row, more than the {} test rows (Planetoid's sets leave a few: CiteSeer 15)",
                test_index.len()
            ),
        ));
    }
    let mut row_of: Vec<Option<(bool, usize)>> =
        (0..n).map(|i| (i < base).then_some((false, i))).collect();
    for (j, &node) in test_index.iter().enumerate() {
        match row_of.get_mut(node) {
            Some(slot @ None) => *slot = Some((true, j)),
            _ => {
                return Err(DataError::malformed(
                    &index_p,
                    line_of(j),
                    format!("test node {node} repeats or lies among the allx nodes (< {base})"),
                ));
            }
        }
    }

    // Features and labels in node order; gap nodes stay empty (zero rows, label 0).
    let mut indptr = vec![0i32; n + 1];
    let mut indices: Vec<i32> = Vec::with_capacity(allx.indices.len() + tx.indices.len());
    let mut values: Vec<f32> = Vec::with_capacity(indices.capacity());
    let mut label = vec![0i64; n];
    for (node, src) in row_of.iter().enumerate() {
        if let Some((is_test, r)) = *src {
            let (m, lab) = if is_test {
                (&tx, ty[r])
            } else {
                (&allx, ally[r])
            };
            let span = m.indptr[r]..m.indptr[r + 1];
            let mut row: Vec<(usize, f64)> = m.indices[span.clone()]
                .iter()
                .copied()
                .zip(m.data[span].iter().copied())
                .collect();
            row.sort_by_key(|&(c, _)| c);
            for (c, v) in row {
                indices.push(to_i32(c)?);
                values.push(v as f32);
            }
            label[node] = lab;
        }
        indptr[node + 1] = to_i32(indices.len())?;
    }

    // Adjacency: both directions of every listed link, once, no self loops.
    let (gpk, gp) = load("graph")?;
    let lists = gpk
        .int_lists(&gpk.top)
        .map_err(|m| DataError::malformed(&gp, "graph", m))?;
    let mut nbrs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, vs) in &lists {
        for &v in vs {
            if *k >= n || v >= n {
                return Err(DataError::malformed(
                    &gp,
                    format!("node {k}"),
                    format!("link {k}-{v} names a node beyond the {n} nodes"),
                ));
            }
            if *k != v {
                nbrs[*k].push(v);
                nbrs[v].push(*k);
            }
        }
    }
    let mut a_ptr = vec![0i32; n + 1];
    let mut a_idx: Vec<i32> = Vec::new();
    for (i, l) in nbrs.iter_mut().enumerate() {
        l.sort_unstable();
        l.dedup();
        for &v in l.iter() {
            a_idx.push(to_i32(v)?);
        }
        a_ptr[i + 1] = to_i32(a_idx.len())?;
    }

    let train: Vec<i64> = (0..y.len() as i64).collect();
    let mut test: Vec<i64> = test_index.iter().map(|&i| i as i64).collect();
    test.sort_unstable();
    test.dedup();
    // PyG's val is the 500 nodes after the training rows; on the published sets none of them
    // is a test node, but a small set can make them overlap, and split parts must not (our
    // reader refuses overlapping parts), so test nodes are left out of val.
    let val: Vec<i64> = (y.len() as i64..(y.len() + 500).min(n) as i64)
        .filter(|i| test.binary_search(i).is_err())
        .collect();

    let le = |v: &[u8]| v.to_vec();
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i32s = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let nn = n as i64;
    let members = vec![
        (
            "adj_data",
            npy_bytes("<f4", &[a_idx.len()], false, &f32s(&vec![1.0; a_idx.len()])),
        ),
        (
            "adj_indices",
            npy_bytes("<i4", &[a_idx.len()], false, &i32s(&a_idx)),
        ),
        (
            "adj_indptr",
            npy_bytes("<i4", &[n + 1], false, &i32s(&a_ptr)),
        ),
        ("adj_shape", npy_bytes("<i8", &[2], false, &i64s(&[nn, nn]))),
        (
            "attr_data",
            npy_bytes("<f4", &[values.len()], false, &f32s(&values)),
        ),
        (
            "attr_indices",
            npy_bytes("<i4", &[indices.len()], false, &i32s(&indices)),
        ),
        (
            "attr_indptr",
            npy_bytes("<i4", &[n + 1], false, &i32s(&indptr)),
        ),
        (
            "attr_shape",
            npy_bytes("<i8", &[2], false, &i64s(&[nn, allx.cols as i64])),
        ),
        ("labels", npy_bytes("<i8", &[n], false, &le(&i64s(&label)))),
        (
            "idx_train",
            npy_bytes("<i8", &[train.len()], false, &i64s(&train)),
        ),
        (
            "idx_val",
            npy_bytes("<i8", &[val.len()], false, &i64s(&val)),
        ),
        (
            "idx_test",
            npy_bytes("<i8", &[test.len()], false, &i64s(&test)),
        ),
    ];
    crate::npz::write_npz(out, &members, false)
}

/// A six-node, four-feature, two-class Planetoid set named `name`, as the files
/// `ind.<name>.{x,y,allx,ally,tx,ty,graph,test.index}`: 3 labelled nodes (0–2, `x` holds node
/// 0), test nodes 5 and 3 in that order, node 4 the test-index gap; `allx` a CSR whose row 1
/// lists its columns unsorted; a graph with a repeated link and a self loop. The converter's
/// test and the fuzz harness's seed, built without Python by [`pickle::Writer`].
pub fn toy_planetoid_files(name: &str) -> Vec<(String, Vec<u8>)> {
    let one_hot = |rows: &[usize]| -> Vec<u8> {
        rows.iter()
            .flat_map(|&c| (0..2).map(move |j| i32::from(j == c)))
            .flat_map(i32::to_le_bytes)
            .collect()
    };
    let w = pickle::Writer::new;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("x", w().csr(1, 4, &[0, 1], &[2], &[1.0]).finish()),
        ("y", w().ndarray("i4", &[1, 2], &one_hot(&[1])).finish()),
        (
            "allx",
            w().csr(3, 4, &[0, 1, 3, 3], &[2, 3, 0], &[1.0, 0.5, 2.0])
                .finish(),
        ),
        (
            "ally",
            w().ndarray("i4", &[3, 2], &one_hot(&[1, 0, 1])).finish(),
        ),
        (
            "tx",
            w().csr(2, 4, &[0, 1, 2], &[1, 3], &[3.0, 4.0]).finish(),
        ),
        ("ty", w().ndarray("i4", &[2, 2], &one_hot(&[1, 1])).finish()),
        ("test.index", b"5\n3\n".to_vec()),
        (
            "graph",
            w().adjacency(&[(0, &[1]), (1, &[0, 2]), (3, &[5, 3])])
                .finish(),
        ),
    ];
    files
        .into_iter()
        .map(|(ext, b)| (format!("ind.{name}.{ext}"), b))
        .collect()
}

fn to_i32(v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| DataError::invalid("Planetoid graph", format!("{v} exceeds int32")))
}

/// The test node indices and the (1-based) file line each came from.
fn read_test_index(p: &Path) -> Result<(Vec<usize>, Vec<usize>)> {
    let text = std::fs::read_to_string(p).map_err(|e| DataError::io(p, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let node = l.trim().parse().map_err(|_| {
                DataError::malformed(
                    p,
                    format!("line {}", i + 1),
                    format!("expected a node index, found {}", crate::error::quote(l)),
                )
            })?;
            Ok((node, i + 1))
        })
        .collect::<Result<Vec<(usize, usize)>>>()
        .map(|v| v.into_iter().unzip())
}

fn dense_to_csr(a: &Array) -> std::result::Result<Csr, String> {
    let [rows, cols] = a.shape[..] else {
        return Err(format!("feature array of shape {:?} is not 2-D", a.shape));
    };
    let v = a.data.as_f64();
    let mut out = Csr {
        rows,
        cols,
        indptr: vec![0],
        indices: Vec::new(),
        data: Vec::new(),
    };
    for r in 0..rows {
        for c in 0..cols {
            let x = v[r * cols + c];
            if x != 0.0 {
                out.indices.push(c);
                out.data.push(x);
            }
        }
        out.indptr.push(out.indices.len());
    }
    Ok(out)
}

/// Class ids of a one-hot label matrix: the first largest entry per row (0 for all-zero rows).
fn one_hot_argmax(a: &Array) -> std::result::Result<Vec<i64>, String> {
    let [rows, cols] = a.shape[..] else {
        return Err(format!("label array of shape {:?} is not 2-D", a.shape));
    };
    let v = a.data.as_f64();
    Ok((0..rows)
        .map(|r| {
            let row = &v[r * cols..(r + 1) * cols];
            let mut best = 0;
            for (c, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = c;
                }
            }
            best as i64
        })
        .collect())
}
