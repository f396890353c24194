//! Node-classification graphs in compressed-sparse-row form, read from the npz layout of
//! `shchur/gnn-benchmark` (`adj_*`, `attr_*`, `labels`, optional `idx_train/val/test`).

use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{DataError, Result};
use crate::npy::NpyArray;
use crate::npz::Npz;

/// A sparse `rows x cols` matrix of `f32` in CSR form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CsrMatrix {
    pub rows: usize,
    pub cols: usize,
    /// `rows + 1` non-decreasing offsets into `indices`/`data`.
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub data: Vec<f32>,
}

impl CsrMatrix {
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Column indices and values of row `r`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// Writes row `r` densely into `out` (length `cols`); repeated columns add up.
    pub fn row_dense(&self, r: usize, out: &mut [f32]) {
        out.fill(0.0);
        let (idx, val) = self.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            out[c as usize] += v;
        }
    }

    /// Row-major dense copy (`rows * cols`).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            self.row_dense(r, &mut out[r * self.cols..(r + 1) * self.cols]);
        }
        out
    }
}

/// Node features: sparse (the bag-of-words of citation graphs) or dense (synthetic graphs).
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    Sparse(CsrMatrix),
    /// Row-major `rows x cols`.
    Dense {
        rows: usize,
        cols: usize,
        values: Vec<f32>,
    },
}

impl Features {
    pub fn num_rows(&self) -> usize {
        match self {
            Features::Sparse(m) => m.rows,
            Features::Dense { rows, .. } => *rows,
        }
    }

    pub fn num_features(&self) -> usize {
        match self {
            Features::Sparse(m) => m.cols,
            Features::Dense { cols, .. } => *cols,
        }
    }

    /// Writes row `r` densely into `out` (length `num_features()`).
    pub fn row_dense(&self, r: usize, out: &mut [f32]) {
        match self {
            Features::Sparse(m) => m.row_dense(r, out),
            Features::Dense { cols, values, .. } => {
                out.copy_from_slice(&values[r * cols..(r + 1) * cols])
            }
        }
    }

    /// Row-major dense matrix `num_rows() x num_features()`.
    pub fn to_dense(&self) -> Vec<f32> {
        match self {
            Features::Sparse(m) => m.to_dense(),
            Features::Dense { values, .. } => values.clone(),
        }
    }
}

/// Node indices of a train/validation/test split, each ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// A graph for node classification. The adjacency is unweighted: stored values are not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrGraphData {
    pub num_nodes: usize,
    /// `num_nodes + 1` offsets into `indices`.
    pub indptr: Vec<usize>,
    /// Neighbour ids; row `i` is `indices[indptr[i]..indptr[i + 1]]`.
    pub indices: Vec<u32>,
    pub features: Features,
    /// Class id of each node, `< num_classes`.
    pub labels: Vec<u32>,
    pub num_classes: usize,
    /// Class names when the file has them (`class_names`).
    pub class_names: Option<Vec<String>>,
    /// The split stored in the file (`idx_train`, `idx_val`, `idx_test`), if any.
    pub split: Option<Split>,
}

fn check_csr(
    path: &Path,
    key: &str,
    indptr: &[usize],
    indices: &[usize],
    rows: usize,
    cols: usize,
) -> Result<()> {
    let at = |k: &str| format!("member {k}.npy");
    if indptr.len() != rows + 1 {
        return Err(DataError::malformed(
            path,
            at(&format!("{key}_indptr")),
            format!(
                "expected {} row pointers (rows + 1), found {}",
                rows + 1,
                indptr.len()
            ),
        ));
    }
    if indptr[0] != 0 {
        return Err(DataError::malformed(
            path,
            at(&format!("{key}_indptr")),
            format!("first row pointer is {}, expected 0", indptr[0]),
        ));
    }
    if let Some(i) = indptr.windows(2).position(|w| w[1] < w[0]) {
        return Err(DataError::malformed(
            path,
            format!("{}, element {}", at(&format!("{key}_indptr")), i + 1),
            format!(
                "row pointers decrease ({} then {})",
                indptr[i],
                indptr[i + 1]
            ),
        ));
    }
    if indptr[rows] != indices.len() {
        return Err(DataError::malformed(
            path,
            at(&format!("{key}_indptr")),
            format!(
                "last row pointer is {}, but {key}_indices has {} entries",
                indptr[rows],
                indices.len()
            ),
        ));
    }
    if let Some(i) = indices.iter().position(|&c| c >= cols) {
        return Err(DataError::malformed(
            path,
            format!("{}, element {i}", at(&format!("{key}_indices"))),
            format!("column {} out of range for {cols} columns", indices[i]),
        ));
    }
    Ok(())
}

fn shape2(npz: &mut Npz, key: &str) -> Result<(usize, usize)> {
    let a = npz.get(key)?;
    match a.to_usize_vec()?[..] {
        [r, c] => Ok((r, c)),
        ref other => Err(a.error(
            "",
            format!("expected 2 values (rows, cols), found {other:?}"),
        )),
    }
}

fn to_u32(v: Vec<usize>) -> Vec<u32> {
    // Callers have checked every value against a u32-sized bound.
    v.into_iter().map(|x| x as u32).collect()
}

fn labels_from(arr: &NpyArray, n: usize) -> Result<Vec<u32>> {
    let vals = arr.to_usize_vec()?;
    let labels: Vec<usize> = match arr.shape[..] {
        [len] if len == n => vals,
        // One-hot rows (Planetoid's y arrays) reduce to class ids; anything else is multi-label.
        [len, c] if len == n && c > 0 => vals
            .chunks_exact(c)
            .enumerate()
            .map(|(i, row)| {
                let ones: Vec<usize> = row
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0)
                    .map(|(k, _)| k)
                    .collect();
                match ones[..] {
                    [k] if row[k] == 1 => Ok(k),
                    _ => Err(arr.error(
                        &format!("row {i}"),
                        "expected one-hot label rows; multi-label data is not supported",
                    )),
                }
            })
            .collect::<Result<_>>()?,
        _ => {
            return Err(arr.error(
                "shape",
                format!("expected {n} labels, found shape {:?}", arr.shape),
            ));
        }
    };
    if let Some(i) = labels.iter().position(|&l| l > u32::MAX as usize / 2) {
        return Err(arr.error(
            &format!("element {i}"),
            format!("label {} is not a plausible class id", labels[i]),
        ));
    }
    Ok(to_u32(labels))
}

/// Reads a graph from an npz file in the `adj_*` / `attr_*` / `labels` layout and checks that
/// every part agrees with every other; see the data README for the two Cora files.
pub fn load_npz_graph(path: impl AsRef<Path>) -> Result<CsrGraphData> {
    let path = path.as_ref();
    let mut npz = Npz::open(path)?;
    let (rows, cols) = shape2(&mut npz, "adj_shape")?;
    if rows != cols {
        return Err(DataError::malformed(
            path,
            "member adj_shape.npy",
            format!("adjacency must be square, found {rows} x {cols}"),
        ));
    }
    if rows > u32::MAX as usize {
        return Err(DataError::malformed(
            path,
            "member adj_shape.npy",
            format!("{rows} nodes exceed the u32 node ids used here"),
        ));
    }
    let n = rows;
    let indptr = npz.get("adj_indptr")?.to_usize_vec()?;
    let indices = npz.get("adj_indices")?.to_usize_vec()?;
    check_csr(path, "adj", &indptr, &indices, n, n)?;
    if npz.contains("adj_data") {
        let d = npz.get("adj_data")?;
        if d.len() != indices.len() {
            return Err(d.error(
                "",
                format!(
                    "expected {} values (one per adj_indices entry), found {}",
                    indices.len(),
                    d.len()
                ),
            ));
        }
    }

    let (frows, fcols) = shape2(&mut npz, "attr_shape")?;
    if frows != n {
        return Err(DataError::malformed(
            path,
            "member attr_shape.npy",
            format!("{frows} feature rows for {n} nodes"),
        ));
    }
    if fcols > u32::MAX as usize {
        return Err(DataError::malformed(
            path,
            "member attr_shape.npy",
            format!("{fcols} feature columns exceed u32"),
        ));
    }
    let aindptr = npz.get("attr_indptr")?.to_usize_vec()?;
    let aindices = npz.get("attr_indices")?.to_usize_vec()?;
    check_csr(path, "attr", &aindptr, &aindices, n, fcols)?;
    let adata = npz.get("attr_data")?;
    if adata.len() != aindices.len() {
        return Err(adata.error(
            "",
            format!(
                "expected {} values (one per attr_indices entry), found {}",
                aindices.len(),
                adata.len()
            ),
        ));
    }
    let values = adata.to_f32_vec();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        // The row holding stored value i: the last indptr entry at or before it.
        let node = aindptr.partition_point(|&p| p <= i).saturating_sub(1);
        return Err(adata.error(
            &format!("element {i}"),
            format!("feature value {} of node {node} is not finite", values[i]),
        ));
    }
    let features = Features::Sparse(CsrMatrix {
        rows: n,
        cols: fcols,
        indptr: aindptr,
        indices: to_u32(aindices),
        data: values,
    });

    let mut labels = labels_from(&npz.get("labels")?, n)?;
    let mut num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let class_names = if npz.contains("class_names") {
        let names = npz.get_strings("class_names")?;
        if names.len() < num_classes {
            return Err(DataError::malformed(
                path,
                "member class_names.npy",
                format!(
                    "{} class names for labels up to {}",
                    names.len(),
                    num_classes.saturating_sub(1)
                ),
            ));
        }
        Some(names)
    } else {
        // A label is a class's name, not a table size: labels with gaps (a stray 2^31 among
        // 0..6) are remapped to the dense ids 0..k in increasing order, and the original label
        // of each class is kept as its name, so nothing downstream allocates by a label value.
        let distinct: std::collections::BTreeSet<u32> = labels.iter().copied().collect();
        if distinct.len() < num_classes {
            let map: Vec<u32> = distinct.into_iter().collect();
            for l in &mut labels {
                // Every label is in `map` by construction.
                *l = map.binary_search(l).unwrap_or(0) as u32;
            }
            num_classes = map.len();
            Some(map.iter().map(u32::to_string).collect())
        } else {
            None
        }
    };

    let split_keys = ["idx_train", "idx_val", "idx_test"];
    let present = split_keys.iter().filter(|k| npz.contains(k)).count();
    let split = match present {
        0 => None,
        3 => {
            let mut parts = Vec::with_capacity(3);
            // 0 = in no part yet, else 1 + the index of the part holding the node: a node in
            // two parts (or twice in one) would be trained on and scored.
            let mut owner = vec![0u8; n];
            for (k, key) in split_keys.iter().enumerate() {
                let a = npz.get(key)?;
                let v = a.to_usize_vec()?;
                if let Some(i) = v.iter().position(|&x| x >= n) {
                    return Err(a.error(
                        &format!("element {i}"),
                        format!("node {} out of range for {n} nodes", v[i]),
                    ));
                }
                for (i, &x) in v.iter().enumerate() {
                    if owner[x] != 0 {
                        let other = split_keys[usize::from(owner[x] - 1)];
                        return Err(a.error(
                            &format!("element {i}"),
                            format!("node {x} is already in {other}; split parts must not overlap"),
                        ));
                    }
                    owner[x] = k as u8 + 1;
                }
                parts.push(v);
            }
            let test = parts.pop().unwrap_or_default();
            let val = parts.pop().unwrap_or_default();
            let train = parts.pop().unwrap_or_default();
            Some(Split { train, val, test })
        }
        _ => {
            let absent: Vec<&str> = split_keys
                .iter()
                .copied()
                .filter(|k| !npz.contains(k))
                .collect();
            return Err(DataError::missing(
                path,
                format!(
                    "split arrays {} (the file has only part of a split)",
                    absent.join(", ")
                ),
            ));
        }
    };

    Ok(CsrGraphData {
        num_nodes: n,
        indptr,
        indices: to_u32(indices),
        features,
        labels,
        num_classes,
        class_names,
        split,
    })
}

/// Builds a CSR adjacency from `(row, col)` pairs: each row sorted, duplicates removed.
pub(crate) fn csr_from_pairs(n: usize, pairs: &[(u32, u32)]) -> (Vec<usize>, Vec<u32>) {
    let mut indptr = vec![0usize; n + 1];
    for &(r, _) in pairs {
        indptr[r as usize + 1] += 1;
    }
    for i in 0..n {
        indptr[i + 1] += indptr[i];
    }
    let mut cursor = indptr[..n].to_vec();
    let mut indices = vec![0u32; pairs.len()];
    for &(r, c) in pairs {
        indices[cursor[r as usize]] = c;
        cursor[r as usize] += 1;
    }
    sort_dedup_rows(&mut indptr, &mut indices, 1);
    (indptr, indices)
}

/// Sorts each row and removes repeated entries, compacting in place. Rows are sorted on up to
/// `threads` threads, in ranges of about equal size; the result does not depend on `threads`.
pub(crate) fn sort_dedup_rows(indptr: &mut [usize], indices: &mut Vec<u32>, threads: usize) {
    let n = indptr.len() - 1;
    let nnz = indptr[n] - indptr[0];
    let threads = threads.clamp(1, n.max(1));
    let mut bounds = vec![0usize];
    for t in 1..threads {
        let target = indptr[0] + nnz * t / threads;
        let r = indptr.partition_point(|&x| x < target).min(n);
        bounds.push(r.max(bounds[bounds.len() - 1]));
    }
    bounds.push(n);
    let mut new_len = vec![0usize; n];
    {
        let ptr: &[usize] = indptr;
        std::thread::scope(|s| {
            let mut rest_idx: &mut [u32] = &mut indices[ptr[0]..ptr[n]];
            let mut rest_len: &mut [usize] = &mut new_len;
            for w in bounds.windows(2) {
                let (r0, r1) = (w[0], w[1]);
                let (mine, tail) = std::mem::take(&mut rest_idx).split_at_mut(ptr[r1] - ptr[r0]);
                rest_idx = tail;
                let (lens, ltail) = std::mem::take(&mut rest_len).split_at_mut(r1 - r0);
                rest_len = ltail;
                let rows = &ptr[r0..=r1];
                let mut work = move || {
                    let base = rows[0];
                    for (k, len) in lens.iter_mut().enumerate() {
                        let row = &mut mine[rows[k] - base..rows[k + 1] - base];
                        row.sort_unstable();
                        let mut m = 0;
                        for q in 0..row.len() {
                            if m == 0 || row[q] != row[m - 1] {
                                row[m] = row[q];
                                m += 1;
                            }
                        }
                        *len = m;
                    }
                };
                if threads == 1 {
                    work();
                } else {
                    s.spawn(work);
                }
            }
        });
    }
    let mut write = 0;
    for (i, &len) in new_len.iter().enumerate() {
        let start = indptr[i];
        indices.copy_within(start..start + len, write);
        indptr[i] = write;
        write += len;
    }
    indptr[n] = write;
    indices.truncate(write);
}

impl CsrGraphData {
    /// Number of stored adjacency entries (directed; an undirected edge counts twice).
    pub fn num_edges(&self) -> usize {
        self.indices.len()
    }

    pub fn neighbors(&self, node: usize) -> &[u32] {
        &self.indices[self.indptr[node]..self.indptr[node + 1]]
    }

    pub fn degree(&self, node: usize) -> usize {
        self.indptr[node + 1] - self.indptr[node]
    }

    pub fn num_features(&self) -> usize {
        self.features.num_features()
    }

    /// Number of nodes of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// The undirected version: an entry wherever `A + Aᵀ > 0`, rows sorted, no repeats and no
    /// self loops (GCN-style models add self loops themselves).
    pub fn symmetrize(&self) -> CsrGraphData {
        let mut pairs = Vec::with_capacity(2 * self.indices.len());
        for i in 0..self.num_nodes {
            for &j in self.neighbors(i) {
                if j as usize != i {
                    pairs.push((i as u32, j));
                    pairs.push((j, i as u32));
                }
            }
        }
        let (indptr, indices) = csr_from_pairs(self.num_nodes, &pairs);
        CsrGraphData {
            indptr,
            indices,
            ..self.clone()
        }
    }

    /// Whether `A == Aᵀ` entry for entry (repeated entries must repeat in both directions).
    pub fn is_symmetric(&self) -> bool {
        let n = self.num_nodes;
        let mut t_indptr = vec![0usize; n + 1];
        for &j in &self.indices {
            t_indptr[j as usize + 1] += 1;
        }
        for i in 0..n {
            t_indptr[i + 1] += t_indptr[i];
        }
        if t_indptr != self.indptr {
            return false;
        }
        // Filling the transpose row by row leaves each of its rows sorted.
        let mut cursor = t_indptr[..n].to_vec();
        let mut t = vec![0u32; self.indices.len()];
        for i in 0..n {
            for &j in self.neighbors(i) {
                t[cursor[j as usize]] = i as u32;
                cursor[j as usize] += 1;
            }
        }
        let mut row = Vec::new();
        (0..n).all(|i| {
            row.clear();
            row.extend_from_slice(self.neighbors(i));
            row.sort_unstable();
            row[..] == t[t_indptr[i]..t_indptr[i + 1]]
        })
    }

    /// A random class-stratified split (Shchur et al., 2018): `per_class_train` and
    /// `per_class_val` nodes of every class, all remaining nodes for testing. Deterministic in
    /// `seed`; fails if a class is too small.
    pub fn seeded_per_class_split(
        &self,
        per_class_train: usize,
        per_class_val: usize,
        seed: u64,
    ) -> Result<Split> {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut split = Split::default();
        for (c, nodes) in by_class.iter_mut().enumerate() {
            if nodes.len() < per_class_train + per_class_val {
                return Err(DataError::invalid(
                    "split",
                    format!(
                        "class {c} has {} nodes, fewer than {per_class_train} train + {per_class_val} validation",
                        nodes.len()
                    ),
                ));
            }
            nodes.shuffle(&mut rng);
            split.train.extend_from_slice(&nodes[..per_class_train]);
            split
                .val
                .extend_from_slice(&nodes[per_class_train..per_class_train + per_class_val]);
            split
                .test
                .extend_from_slice(&nodes[per_class_train + per_class_val..]);
        }
        split.train.sort_unstable();
        split.val.sort_unstable();
        split.test.sort_unstable();
        Ok(split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::npy_bytes;
    use crate::npz::write_npz;
    use crate::testutil::TempDir;

    fn i4(v: &[i32]) -> Vec<u8> {
        npy_bytes(
            "<i4",
            &[v.len()],
            false,
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )
    }
    fn i8_(v: &[i64]) -> Vec<u8> {
        npy_bytes(
            "<i8",
            &[v.len()],
            false,
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )
    }
    fn f4(v: &[f32]) -> Vec<u8> {
        npy_bytes(
            "<f4",
            &[v.len()],
            false,
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )
    }

    /// 4 nodes, directed edges 0->1, 1->2, 2->0 (twice: 0 listed in row 2 once and a repeat),
    /// 3->3 self loop; 3 features.
    type Members = Vec<(&'static str, Vec<u8>)>;

    fn members(with_split: bool) -> Members {
        let mut m = vec![
            ("adj_data", f4(&[1.0; 5])),
            ("adj_indices", i4(&[1, 2, 0, 0, 3])),
            ("adj_indptr", i4(&[0, 1, 2, 4, 5])),
            ("adj_shape", i8_(&[4, 4])),
            ("attr_data", f4(&[1.0, 1.0, 1.0])),
            ("attr_indices", i4(&[0, 2, 1])),
            ("attr_indptr", i4(&[0, 2, 2, 3, 3])),
            ("attr_shape", i8_(&[4, 3])),
            ("labels", npy_bytes("|i1", &[4], false, &[0, 1, 1, 0])),
        ];
        if with_split {
            m.push(("idx_train", i8_(&[0, 1])));
            m.push(("idx_val", i8_(&[2])));
            m.push(("idx_test", i8_(&[3])));
        }
        m
    }

    fn replace(
        mut m: Vec<(&'static str, Vec<u8>)>,
        key: &str,
        v: Vec<u8>,
    ) -> Vec<(&'static str, Vec<u8>)> {
        for (k, b) in &mut m {
            if *k == key {
                *b = v.clone();
            }
        }
        m
    }

    #[test]
    fn loads_validates_and_symmetrizes() {
        let dir = TempDir::new("graph_ok");
        let p = dir.path().join("g.npz");
        write_npz(&p, &members(true), false).unwrap();
        let g = load_npz_graph(&p).unwrap();
        assert_eq!(
            (g.num_nodes, g.num_edges(), g.num_classes, g.num_features()),
            (4, 5, 2, 3)
        );
        assert_eq!(g.labels, vec![0, 1, 1, 0]);
        assert_eq!(
            g.split,
            Some(Split {
                train: vec![0, 1],
                val: vec![2],
                test: vec![3]
            })
        );
        assert_eq!(
            g.features.to_dense(),
            vec![1., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0.]
        );
        assert!(!g.is_symmetric());
        let s = g.symmetrize();
        assert!(s.is_symmetric());
        assert_eq!(s.indptr, vec![0, 2, 4, 6, 6]);
        assert_eq!(s.indices, vec![1, 2, 0, 2, 0, 1]);
        assert_eq!(s.class_counts(), vec![2, 2]);

        let p2 = dir.path().join("nosplit.npz");
        write_npz(&p2, &members(false), true).unwrap();
        assert_eq!(load_npz_graph(&p2).unwrap().split, None);
    }

    #[test]
    fn malformed_graphs_name_file_and_member() {
        let dir = TempDir::new("graph_bad");
        let cases: Vec<(Members, &str)> = vec![
            (
                replace(members(true), "adj_indptr", i4(&[0, 2, 1, 4, 5])),
                "adj_indptr.npy, element 2",
            ),
            (
                replace(members(true), "adj_indptr", i4(&[0, 1, 2, 5])),
                "expected 5 row pointers",
            ),
            (
                replace(members(true), "adj_indices", i4(&[1, 2, 0, 0, 4])),
                "adj_indices.npy, element 4",
            ),
            (
                replace(members(true), "adj_indices", i4(&[1, 2, 0, -1, 3])),
                "non-negative",
            ),
            (replace(members(true), "adj_shape", i8_(&[4, 5])), "square"),
            (
                replace(members(true), "attr_shape", i8_(&[3, 3])),
                "3 feature rows for 4 nodes",
            ),
            (
                replace(members(true), "attr_data", f4(&[1.0])),
                "attr_data.npy",
            ),
            // Stored value 2 is node 2's only feature (attr_indptr 0, 2, 2, 3, 3).
            (
                replace(members(true), "attr_data", f4(&[1.0, 1.0, f32::NAN])),
                "attr_data.npy, element 2: feature value NaN of node 2 is not finite",
            ),
            (
                replace(
                    members(true),
                    "labels",
                    npy_bytes("|i1", &[3], false, &[0, 1, 1]),
                ),
                "expected 4 labels",
            ),
            (
                replace(members(true), "idx_val", i8_(&[9])),
                "idx_val.npy, element 0",
            ),
            (
                members(true)
                    .into_iter()
                    .filter(|(k, _)| *k != "idx_test")
                    .collect(),
                "idx_test",
            ),
            (
                members(true)
                    .into_iter()
                    .filter(|(k, _)| *k != "attr_indptr")
                    .collect(),
                "\"attr_indptr\"",
            ),
        ];
        for (i, (m, want)) in cases.into_iter().enumerate() {
            let p = dir.path().join(format!("bad{i}.npz"));
            write_npz(&p, &m, false).unwrap();
            let e = load_npz_graph(&p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("bad{i}.npz")) && e.contains(want),
                "case {i}: {e}"
            );
        }
    }

    #[test]
    fn overlapping_split_parts_are_refused() {
        let dir = TempDir::new("graph_overlap");
        let p = dir.path().join("g.npz");
        let m = replace(members(true), "idx_test", i8_(&[3, 1]));
        write_npz(&p, &m, false).unwrap();
        let e = load_npz_graph(&p).unwrap_err().to_string();
        assert!(
            e.contains("g.npz")
                && e.contains("idx_test")
                && e.contains("node 1 is already in idx_train"),
            "{e}"
        );
        let m = replace(members(true), "idx_val", i8_(&[2, 2]));
        write_npz(&p, &m, false).unwrap();
        let e = load_npz_graph(&p).unwrap_err().to_string();
        assert!(e.contains("node 2 is already in idx_val"), "{e}");
    }

    #[test]
    fn labels_with_gaps_are_remapped_not_used_as_sizes() {
        let dir = TempDir::new("graph_labels");
        let p = dir.path().join("g.npz");
        let labels = i8_(&[7, 2_147_483_647, 7, 0]);
        write_npz(&p, &replace(members(false), "labels", labels), false).unwrap();
        let g = load_npz_graph(&p).unwrap();
        assert_eq!(g.num_classes, 3);
        assert_eq!(g.labels, vec![1, 2, 1, 0]);
        assert_eq!(
            g.class_names,
            Some(vec!["0".into(), "7".into(), "2147483647".into()])
        );
        // Dense labels are kept as they are.
        write_npz(&p, &members(false), false).unwrap();
        let g = load_npz_graph(&p).unwrap();
        assert_eq!((g.num_classes, g.class_names), (2, None));
    }

    #[test]
    fn one_hot_labels_and_per_class_split() {
        let dir = TempDir::new("graph_onehot");
        let onehot = npy_bytes("|u1", &[4, 2], false, &[1, 0, 0, 1, 0, 1, 1, 0]);
        let p = dir.path().join("g.npz");
        write_npz(&p, &replace(members(false), "labels", onehot), false).unwrap();
        let g = load_npz_graph(&p).unwrap();
        assert_eq!(g.labels, vec![0, 1, 1, 0]);
        let s = g.seeded_per_class_split(1, 0, 7).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (2, 0, 2));
        assert_eq!(s, g.seeded_per_class_split(1, 0, 7).unwrap());
        assert!(g.seeded_per_class_split(2, 1, 7).is_err());
        let multi = npy_bytes("|u1", &[4, 2], false, &[1, 1, 0, 1, 0, 1, 1, 0]);
        write_npz(&p, &replace(members(false), "labels", multi), false).unwrap();
        assert!(
            load_npz_graph(&p)
                .unwrap_err()
                .to_string()
                .contains("row 0")
        );
    }
}
