//! The graph on disk, cluster by cluster: what lets Cluster-GCN's training memory depend on
//! the batch and not on the graph.
//!
//! Chiang et al.'s memory claim is about the accelerator: the graph stays in host memory and
//! only a batch's subgraph is on the GPU. On a CPU the analogue is a graph that stays on
//! disk (or in the kernel's page cache, which is reclaimable and not the process's memory)
//! while the process holds one batch. [`ClusterStore::build`] writes the nodes of each cluster
//! contiguously (PyG's `ClusterData` permutes nodes the same way), relabelled in that order,
//! with their adjacency rows, features, labels and split roles; a batch is then `q`
//! positioned reads ([`ClusterStore::batch`]). Every block carries a checksum, and the header
//! records the graph's content hash and the partition parameters, so a stale or damaged
//! store is detected and rebuilt, never trusted.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferrolab_core::burn::prelude::*;
use ferrolab_core::sparse::SparseAdj;
use ferrolab_data::Features;

use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};
use crate::models::GcnInput;
use crate::models::gcn::{BlockFn, LayerSource};
use crate::node_data::NodeData;
use crate::norm::{AdjRows, Normalization, normalize_row};
use crate::partition::ClusterPartition;

const MAGIC: &[u8; 8] = b"FLCSTOR\x01";
/// magic + 9 little-endian u64 words.
const HEADER: usize = 8 + 9 * 8;
/// Per cluster in the table: first node, node count, offset, length, checksum.
const ENTRY: usize = 5 * 8;

/// Role of a node in the split, stored per node.
const ROLE_TRAIN: u8 = 1;
const ROLE_VAL: u8 = 2;
const ROLE_TEST: u8 = 3;

/// Where one cluster lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    first: u64,
    nodes: u64,
    offset: u64,
    len: u64,
    checksum: u64,
}

/// One cluster read back: `nodes` rows starting at store id `first`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterBlock {
    pub first: usize,
    pub labels: Vec<u16>,
    pub roles: Vec<u8>,
    /// Adjacency rows: local offsets, neighbour ids in store order.
    pub adj_ptr: Vec<u32>,
    pub adj_idx: Vec<u32>,
    /// Dense features (`nodes × cols`), or sparse rows (`feat_ptr`, `feat_idx`, values).
    pub feat_ptr: Vec<u32>,
    pub feat_idx: Vec<u32>,
    pub feat_val: Vec<f32>,
}

impl ClusterBlock {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn neighbors(&self, i: usize) -> &[u32] {
        &self.adj_idx[self.adj_ptr[i] as usize..self.adj_ptr[i + 1] as usize]
    }
}

/// A training batch assembled from clusters: the induced subgraph (local ids), its features,
/// labels, and which local nodes are training targets.
#[derive(Debug)]
pub struct StoreBatch {
    pub graph: CsrGraph,
    pub features: GcnInput,
    pub labels: Vec<usize>,
    pub targets: Vec<usize>,
}

/// A node-classification graph stored cluster by cluster on disk.
#[derive(Debug)]
pub struct ClusterStore {
    file: File,
    path: PathBuf,
    num_nodes: usize,
    num_features: usize,
    num_classes: usize,
    dense: bool,
    entries: Vec<Entry>,
}

/// Content of the header, checked on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreKey {
    pub graph_hash: u64,
    pub method_tag: u64,
    pub partition_seed: u64,
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = ferrolab_core::kernels::hash::WordHasher::new();
    h.bytes(bytes);
    h.state() ^ bytes.len() as u64
}

fn put_u32s(out: &mut Vec<u8>, v: impl IntoIterator<Item = u32>) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

impl ClusterStore {
    /// Writes `data` partitioned by `partition` to `path` (through a temporary file and a
    /// rename, so a crash never leaves a half-written store under the final name).
    pub fn build(
        data: &NodeData,
        partition: &ClusterPartition,
        key: StoreKey,
        path: &Path,
    ) -> Result<()> {
        let n = data.num_nodes();
        if data.num_classes > usize::from(u16::MAX) {
            return Err(GraphError::Invalid(format!(
                "{} classes do not fit the store's 16-bit labels",
                data.num_classes
            )));
        }
        // Store order: cluster 0's nodes, then cluster 1's, …
        let mut new_id = vec![u32::MAX; n];
        let mut next = 0u32;
        for part in &partition.parts {
            for &v in part {
                new_id[v] = next;
                next += 1;
            }
        }
        if next as usize != n || new_id.contains(&u32::MAX) {
            return Err(GraphError::Invalid(
                "the partition does not cover every node exactly once".into(),
            ));
        }
        let mut role = vec![0u8; n];
        for (nodes, r) in [
            (&data.split.train, ROLE_TRAIN),
            (&data.split.val, ROLE_VAL),
            (&data.split.test, ROLE_TEST),
        ] {
            for &v in nodes {
                role[v] = r;
            }
        }
        let io = |e: std::io::Error| GraphError::Core(ferrolab_core::CoreError::io(path, e));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
        w.write_all(&[0u8; HEADER]).map_err(io)?;
        let dense = matches!(data.features, Features::Dense { .. });
        let mut entries = Vec::with_capacity(partition.parts.len());
        let (mut offset, mut first) = (HEADER as u64, 0u64);
        let mut block = Vec::new();
        for part in &partition.parts {
            block.clear();
            put_u32s(&mut block, part.iter().map(|&v| data.labels[v] as u32));
            block.extend(part.iter().map(|&v| role[v]));
            let mut acc = 0u32;
            put_u32s(
                &mut block,
                std::iter::once(0).chain(part.iter().map(|&v| {
                    acc += data.graph.degree(v) as u32;
                    acc
                })),
            );
            for &v in part {
                put_u32s(
                    &mut block,
                    data.graph.neighbors(v).iter().map(|&u| new_id[u as usize]),
                );
            }
            match &data.features {
                Features::Dense { cols, values, .. } => {
                    for &v in part {
                        for x in &values[v * cols..(v + 1) * cols] {
                            block.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
                Features::Sparse(m) => {
                    let mut acc = 0u32;
                    put_u32s(
                        &mut block,
                        std::iter::once(0).chain(part.iter().map(|&v| {
                            acc += m.row(v).0.len() as u32;
                            acc
                        })),
                    );
                    for &v in part {
                        put_u32s(&mut block, m.row(v).0.iter().copied());
                    }
                    for &v in part {
                        for x in m.row(v).1 {
                            block.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
            }
            w.write_all(&block).map_err(io)?;
            entries.push(Entry {
                first,
                nodes: part.len() as u64,
                offset,
                len: block.len() as u64,
                checksum: hash_bytes(&block),
            });
            offset += block.len() as u64;
            first += part.len() as u64;
        }
        let table_offset = offset;
        for e in &entries {
            for x in [e.first, e.nodes, e.offset, e.len, e.checksum] {
                w.write_all(&x.to_le_bytes()).map_err(io)?;
            }
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        let header = Self::header(
            n,
            data.num_features(),
            data.num_classes,
            dense,
            entries.len(),
            table_offset,
            key,
        );
        file.write_all_at(&header, 0).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn header(
        n: usize,
        cols: usize,
        classes: usize,
        dense: bool,
        parts: usize,
        table_offset: u64,
        key: StoreKey,
    ) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        for x in [
            n as u64,
            cols as u64,
            classes as u64,
            u64::from(dense),
            parts as u64,
            table_offset,
            key.graph_hash,
            key.method_tag,
            key.partition_seed,
        ] {
            h.extend_from_slice(&x.to_le_bytes());
        }
        h
    }

    /// Opens a store and checks that it is complete and was built for `key`; the error says
    /// why not (the caller rebuilds).
    pub fn open(path: &Path, key: StoreKey) -> std::result::Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let size = file
            .metadata()
            .map_err(|e| format!("cannot stat: {e}"))?
            .len();
        let mut h = [0u8; HEADER];
        file.read_exact_at(&mut h, 0)
            .map_err(|_| "truncated header".to_string())?;
        if &h[..8] != MAGIC {
            return Err("not a ferrolab cluster store (bad header)".into());
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[8 + 8 * i..16 + 8 * i]);
            u64::from_le_bytes(b)
        };
        for (i, what, want) in [
            (6, "graph hash", key.graph_hash),
            (7, "partition method", key.method_tag),
            (8, "partition seed", key.partition_seed),
        ] {
            if word(i) != want {
                return Err(format!("stale: {what} is {} but {want} was asked", word(i)));
            }
        }
        let (n, cols, classes, dense, parts, table) = (
            word(0) as usize,
            word(1) as usize,
            word(2) as usize,
            word(3) == 1,
            word(4) as usize,
            word(5),
        );
        if table.checked_add((parts * ENTRY) as u64) != Some(size) {
            return Err(format!(
                "truncated or padded: {size} bytes, the table says {}",
                table + (parts * ENTRY) as u64
            ));
        }
        let mut t = vec![0u8; parts * ENTRY];
        file.read_exact_at(&mut t, table)
            .map_err(|e| format!("cannot read the cluster table: {e}"))?;
        let mut entries = Vec::with_capacity(parts);
        let (mut first, mut offset) = (0u64, HEADER as u64);
        for c in t.chunks_exact(ENTRY) {
            let f = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&c[8 * i..8 * i + 8]);
                u64::from_le_bytes(b)
            };
            let e = Entry {
                first: f(0),
                nodes: f(1),
                offset: f(2),
                len: f(3),
                checksum: f(4),
            };
            if e.first != first || e.offset != offset {
                return Err(format!(
                    "corrupt cluster table at cluster {}",
                    entries.len()
                ));
            }
            first += e.nodes;
            offset += e.len;
            entries.push(e);
        }
        if first != n as u64 || offset != table {
            return Err("corrupt cluster table: sizes do not add up".into());
        }
        Ok(ClusterStore {
            file,
            path: path.to_path_buf(),
            num_nodes: n,
            num_features: cols,
            num_classes: classes,
            dense,
            entries,
        })
    }

    pub fn num_nodes(&self) -> usize {
        self.num_nodes
    }

    pub fn num_clusters(&self) -> usize {
        self.entries.len()
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn num_features(&self) -> usize {
        self.num_features
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Store ids of cluster `c`.
    pub fn cluster_range(&self, c: usize) -> Range<usize> {
        let e = &self.entries[c];
        e.first as usize..(e.first + e.nodes) as usize
    }

    fn corrupt(&self, c: usize, what: &str) -> GraphError {
        GraphError::Invalid(format!(
            "cluster store {}: cluster {c}: {what}; delete the file to rebuild it",
            self.path.display()
        ))
    }

    /// Reads and verifies cluster `c`.
    pub fn read_cluster(&self, c: usize) -> Result<ClusterBlock> {
        let e = self.entries[c];
        let mut bytes = vec![0u8; e.len as usize];
        self.file
            .read_exact_at(&mut bytes, e.offset)
            .map_err(|err| self.corrupt(c, &format!("unreadable ({err})")))?;
        if hash_bytes(&bytes) != e.checksum {
            return Err(self.corrupt(c, "checksum mismatch"));
        }
        let m = e.nodes as usize;
        let mut pos = 0usize;
        let mut take = |k: usize| -> Result<&[u8]> {
            let s = bytes
                .get(pos..pos + k)
                .ok_or_else(|| self.corrupt(c, "block shorter than its contents"))?;
            pos += k;
            Ok(s)
        };
        let u32s = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect()
        };
        let labels: Vec<u16> = u32s(take(4 * m)?).iter().map(|&l| l as u16).collect();
        let roles = take(m)?.to_vec();
        let adj_ptr = u32s(take(4 * (m + 1))?);
        let edges = adj_ptr.last().copied().unwrap_or(0) as usize;
        let adj_idx = u32s(take(4 * edges)?);
        let (feat_ptr, feat_idx, feat_val) = if self.dense {
            let vals = take(4 * m * self.num_features)?;
            (Vec::new(), Vec::new(), f32s(vals))
        } else {
            let ptr = u32s(take(4 * (m + 1))?);
            let nnz = ptr.last().copied().unwrap_or(0) as usize;
            let idx = u32s(take(4 * nnz)?);
            let val = f32s(take(4 * nnz)?);
            (ptr, idx, val)
        };
        if pos != bytes.len()
            || adj_ptr.windows(2).any(|w| w[1] < w[0])
            || adj_idx.iter().any(|&u| u as usize >= self.num_nodes)
            || labels.iter().any(|&l| usize::from(l) >= self.num_classes)
        {
            return Err(self.corrupt(c, "inconsistent contents"));
        }
        Ok(ClusterBlock {
            first: e.first as usize,
            labels,
            roles,
            adj_ptr,
            adj_idx,
            feat_ptr,
            feat_idx,
            feat_val,
        })
    }

    /// The batch made of `clusters` (distinct): their nodes, the edges among them (including
    /// those between different chosen clusters), features with sparse `dropout` applied by
    /// the caller's `drop` (returns true to drop a stored value), labels and training targets.
    pub fn batch(
        &self,
        clusters: &[usize],
        drop: &mut dyn FnMut() -> bool,
        dropout_scale: f32,
        dev: &Device,
    ) -> Result<StoreBatch> {
        let mut blocks: Vec<ClusterBlock> = clusters
            .iter()
            .map(|&c| self.read_cluster(c))
            .collect::<Result<_>>()?;
        blocks.sort_by_key(|b| b.first);
        // Store id → local id by binary search over the chosen clusters' ranges.
        let mut bases = Vec::with_capacity(blocks.len());
        let mut total = 0usize;
        for b in &blocks {
            bases.push((b.first, b.len(), total));
            total += b.len();
        }
        let local = |u: u32| -> Option<u32> {
            let u = u as usize;
            let k = bases.partition_point(|&(f, _, _)| f <= u).checked_sub(1)?;
            let (f, len, base) = bases[k];
            (u < f + len).then(|| (base + u - f) as u32)
        };
        let mut indptr = Vec::with_capacity(total + 1);
        indptr.push(0usize);
        let mut indices = Vec::new();
        let mut labels = Vec::with_capacity(total);
        let mut targets = Vec::new();
        for b in &blocks {
            for i in 0..b.len() {
                indices.extend(b.neighbors(i).iter().filter_map(|&u| local(u)));
                indptr.push(indices.len());
                if b.roles[i] == ROLE_TRAIN {
                    targets.push(labels.len());
                }
                labels.push(usize::from(b.labels[i]));
            }
        }
        let graph = CsrGraph::new(indptr, indices)?;
        let features = if self.dense {
            let cols = self.num_features;
            let mut v = Vec::with_capacity(total * cols);
            for b in &blocks {
                v.extend_from_slice(&b.feat_val);
            }
            GcnInput::Dense(Box::new(Tensor::from_data(
                TensorData::new(v, [total, cols]),
                dev,
            )))
        } else {
            let (mut ptr, mut idx, mut val) = (vec![0usize], Vec::new(), Vec::new());
            for b in &blocks {
                for i in 0..b.len() {
                    let (s, e) = (b.feat_ptr[i] as usize, b.feat_ptr[i + 1] as usize);
                    for (&c, &x) in b.feat_idx[s..e].iter().zip(&b.feat_val[s..e]) {
                        if !drop() {
                            idx.push(c);
                            val.push(x * dropout_scale);
                        }
                    }
                    ptr.push(idx.len());
                }
            }
            let m = SparseAdj::from_csr(total, self.num_features, &ptr, &idx, Some(&val), dev)
                .map_err(GraphError::Invalid)?;
            GcnInput::Sparse(Box::new(m))
        };
        Ok(StoreBatch {
            graph,
            features,
            labels,
            targets,
        })
    }

    /// Labels and roles of every node, in store order (for scoring predictions).
    pub fn labels_and_roles(&self) -> Result<(Vec<u16>, Vec<u8>)> {
        let mut labels = Vec::with_capacity(self.num_nodes);
        let mut roles = Vec::with_capacity(self.num_nodes);
        for c in 0..self.num_clusters() {
            let b = self.read_cluster(c)?;
            labels.extend_from_slice(&b.labels);
            roles.extend_from_slice(&b.roles);
        }
        Ok((labels, roles))
    }

    /// Degree plus one of every node (the symmetric normalisation's neighbour term).
    fn degrees(&self) -> Result<Vec<u32>> {
        let mut d = Vec::with_capacity(self.num_nodes);
        for c in 0..self.num_clusters() {
            let b = self.read_cluster(c)?;
            d.extend(b.adj_ptr.windows(2).map(|w| w[1] - w[0] + 1));
        }
        Ok(d)
    }

    /// The store as a source for layer-wise inference under `norm`
    /// ([`Gcn::infer_layerwise_blocks`](crate::Gcn::infer_layerwise_blocks)), one cluster
    /// per block. Node ids are store ids.
    pub fn layer_source(&self, norm: Normalization) -> Result<StoreSource<'_>> {
        let deg = match norm {
            Normalization::Symmetric => Some(self.degrees()?),
            _ => None,
        };
        Ok(StoreSource {
            store: self,
            norm,
            deg,
        })
    }

    /// The features of one cluster as a model input (no dropout).
    fn block_input(&self, b: &ClusterBlock, dev: &Device) -> Result<GcnInput> {
        if self.dense {
            return Ok(GcnInput::Dense(Box::new(Tensor::from_data(
                TensorData::new(b.feat_val.clone(), [b.len(), self.num_features]),
                dev,
            ))));
        }
        let ptr: Vec<usize> = b.feat_ptr.iter().map(|&p| p as usize).collect();
        let m = SparseAdj::from_csr(
            b.len(),
            self.num_features,
            &ptr,
            &b.feat_idx,
            Some(&b.feat_val),
            dev,
        )
        .map_err(GraphError::Invalid)?;
        Ok(GcnInput::Sparse(Box::new(m)))
    }
}

/// See [`ClusterStore::layer_source`].
#[derive(Debug)]
pub struct StoreSource<'a> {
    store: &'a ClusterStore,
    norm: Normalization,
    deg: Option<Vec<u32>>,
}

impl LayerSource for StoreSource<'_> {
    fn num_nodes(&self) -> usize {
        self.store.num_nodes
    }

    fn for_each_block(&self, f: &mut BlockFn<'_>) -> Result<()> {
        let deg_of = |j: u32| self.deg.as_ref().map_or(1.0, |d| d[j as usize] as f32);
        let dev = ferrolab_core::backend::device();
        let (mut ptr, mut idx, mut val, mut scratch) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in 0..self.store.num_clusters() {
            let b = self.store.read_cluster(c)?;
            ptr.clear();
            idx.clear();
            val.clear();
            ptr.push(0usize);
            for i in 0..b.len() {
                normalize_row(
                    (b.first + i) as u32,
                    b.neighbors(i),
                    self.norm,
                    &deg_of,
                    &mut scratch,
                    &mut idx,
                    &mut val,
                );
                ptr.push(idx.len());
            }
            let x = self.store.block_input(&b, &dev)?;
            let adj = AdjRows {
                indptr: &ptr,
                indices: &idx,
                values: &val,
            };
            f(b.first..b.first + b.len(), adj, &|w| match &x {
                GcnInput::Sparse(x) => x.propagate(w),
                GcnInput::Dense(x) => (**x).clone().matmul(w),
            });
        }
        Ok(())
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect()
}

/// Opens the store for `key` at `path`, building it from `data` and `partition` when it is
/// missing, stale or damaged (the reason is returned for the log).
pub fn store_cached(
    data: &NodeData,
    partition: &ClusterPartition,
    key: StoreKey,
    path: &Path,
) -> Result<(ClusterStore, Option<String>)> {
    let why = match ClusterStore::open(path, key) {
        Ok(s) => return Ok((s, None)),
        Err(why) => why,
    };
    ClusterStore::build(data, partition, key, path)?;
    let store = ClusterStore::open(path, key).map_err(|e| {
        GraphError::Invalid(format!(
            "cluster store {} unreadable right after writing it: {e}",
            path.display()
        ))
    })?;
    Ok((store, Some(why)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::normalize;
    use crate::train::{ClusterConfig, TrainConfig, train_from_store};
    use ferrolab_core::backend::{device, exclusive_rng};
    use ferrolab_data::{CsbmConfig, generate_csbm};

    fn data(dense: bool) -> NodeData {
        let g = generate_csbm(&CsbmConfig {
            nodes: 300,
            classes: 3,
            avg_degree: 6.0,
            p_in_ratio: 0.85,
            features: 8,
            feature_signal: 0.5,
            seed: 5,
            ..Default::default()
        })
        .unwrap()
        .to_graph_data();
        let split = g.seeded_per_class_split(10, 20, 1).unwrap();
        let mut d = NodeData::from_graph_data(&g, Some(split), false).unwrap();
        if !dense {
            // Same values, sparse layout (zeros dropped where the generator made none).
            if let Features::Dense { rows, cols, values } = &d.features {
                let mut m = ferrolab_data::CsrMatrix {
                    rows: *rows,
                    cols: *cols,
                    indptr: vec![0],
                    ..Default::default()
                };
                for r in 0..*rows {
                    for c in 0..*cols {
                        let v = values[r * cols + c];
                        if v.abs() > 0.5 {
                            m.indices.push(c as u32);
                            m.data.push(v);
                        }
                    }
                    m.indptr.push(m.indices.len());
                }
                d.features = Features::Sparse(m);
            }
        }
        d
    }

    fn key() -> StoreKey {
        StoreKey {
            graph_hash: 42,
            method_tag: 1,
            partition_seed: 0,
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ferrolab-store-{tag}-{}.store", std::process::id()))
    }

    #[test]
    fn a_batch_is_the_induced_subgraph_relabelled() {
        let _serial = crate::serial_test();
        for dense in [true, false] {
            let d = data(dense);
            let p = ClusterPartition::metis(&d.graph, 6, 0).unwrap();
            let path = tmp(if dense { "dense" } else { "sparse" });
            ClusterStore::build(&d, &p, key(), &path).unwrap();
            let s = ClusterStore::open(&path, key()).unwrap();
            assert_eq!((s.num_nodes(), s.num_clusters()), (300, 6));
            let chosen = [4, 1];
            let b = s.batch(&chosen, &mut || false, 1.0, &device()).unwrap();
            // The same nodes in memory: clusters 1 then 4 (store order), original ids.
            let nodes: Vec<usize> = [1, 4].iter().flat_map(|&c| p.parts[c].clone()).collect();
            let (sub, _) = d.graph.induced_subgraph(&nodes).unwrap();
            assert_eq!(b.graph, sub);
            let labels: Vec<usize> = nodes.iter().map(|&v| d.labels[v]).collect();
            assert_eq!(b.labels, labels);
            let targets: Vec<usize> = (0..nodes.len())
                .filter(|&i| d.split.train.contains(&nodes[i]))
                .collect();
            assert_eq!(b.targets, targets);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn layerwise_inference_from_disk_matches_memory() {
        let _serial = crate::serial_test();
        let _rng = exclusive_rng();
        let dev = device();
        dev.seed(3);
        for dense in [true, false] {
            let d = data(dense);
            let p = ClusterPartition::metis(&d.graph, 5, 0).unwrap();
            let path = tmp(if dense { "infer-d" } else { "infer-s" });
            ClusterStore::build(&d, &p, key(), &path).unwrap();
            let s = ClusterStore::open(&path, key()).unwrap();
            let model = crate::GcnConfig::new(8, 3)
                .with_hidden(6)
                .with_layers(3)
                .with_cluster_gcn_layer(true)
                .init(&dev);
            for norm in [
                Normalization::Symmetric,
                Normalization::DiagEnhanced { lambda: 1.0 },
            ] {
                let got = model
                    .infer_layerwise_blocks(&s.layer_source(norm).unwrap())
                    .unwrap();
                let w = normalize(&d.graph, norm);
                let feats = d.features.clone();
                let want = model.infer_layerwise(&w, 64, &|rows, wt| {
                    let nodes: Vec<usize> = rows.collect();
                    let x = match &feats {
                        Features::Dense { cols, values, .. } => {
                            let v: Vec<f32> = nodes
                                .iter()
                                .flat_map(|&r| values[r * cols..(r + 1) * cols].to_vec())
                                .collect();
                            Tensor::<2>::from_data(TensorData::new(v, [nodes.len(), *cols]), &dev)
                        }
                        Features::Sparse(m) => {
                            let mut v = vec![0f32; nodes.len() * m.cols];
                            for (i, &r) in nodes.iter().enumerate() {
                                m.row_dense(r, &mut v[i * m.cols..(i + 1) * m.cols]);
                            }
                            Tensor::<2>::from_data(TensorData::new(v, [nodes.len(), m.cols]), &dev)
                        }
                    };
                    x.matmul(wt)
                });
                // Store row k is original node order[k].
                let order: Vec<usize> = p.parts.concat();
                let mut worst = 0f32;
                for (k, &v) in order.iter().enumerate() {
                    for c in 0..3 {
                        worst = worst.max((got[k * 3 + c] - want[v * 3 + c]).abs());
                    }
                }
                assert!(worst < 1e-4, "{norm:?} dense={dense}: {worst}");
            }
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn damaged_or_stale_stores_are_detected_and_rebuilt() {
        let _serial = crate::serial_test();
        let d = data(true);
        let p = ClusterPartition::metis(&d.graph, 4, 0).unwrap();
        let path = tmp("damage");
        let (_, why) = store_cached(&d, &p, key(), &path).unwrap();
        assert!(why.unwrap().contains("cannot open"));
        let (_, why) = store_cached(&d, &p, key(), &path).unwrap();
        assert_eq!(why, None);
        // A flipped byte inside a cluster: opening succeeds, reading that cluster fails.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 10] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let s = ClusterStore::open(&path, key()).unwrap();
        let e = s.read_cluster(0).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("cluster 0"), "{e}");
        // Another graph's store, or a truncated one: refused with the reason.
        let other = StoreKey {
            graph_hash: 7,
            ..key()
        };
        assert!(
            ClusterStore::open(&path, other)
                .unwrap_err()
                .contains("graph hash")
        );
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(
            ClusterStore::open(&path, key())
                .unwrap_err()
                .contains("truncated")
        );
        let (s, why) = store_cached(&d, &p, key(), &path).unwrap();
        assert!(why.unwrap().contains("truncated"));
        assert!(s.read_cluster(0).is_ok());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn training_from_disk_learns() {
        let _serial = crate::serial_test();
        let d = data(true);
        let p = ClusterPartition::metis(&d.graph, 6, 0).unwrap();
        let path = tmp("train");
        ClusterStore::build(&d, &p, key(), &path).unwrap();
        let s = ClusterStore::open(&path, key()).unwrap();
        let cfg = TrainConfig {
            epochs: 40,
            ..Default::default()
        };
        let cluster = ClusterConfig {
            parts: 6,
            parts_per_batch: 2,
            ..Default::default()
        };
        let o = train_from_store(&s, &cfg, &cluster, 1).unwrap();
        // Three classes: chance is 1/3.
        assert!(o.test_accuracy_at_best_val > 0.7, "{o:?}");
        assert!(o.max_batch_nodes <= 110, "{o:?}");
        std::fs::remove_file(&path).unwrap();
    }
}
