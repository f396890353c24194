//! The data readers as fuzz targets: seed files built here, structure-aware mutation, the
//! child-side call of each `ferrolab_data` entry point and what "parsed past the header" means
//! for each.
//!
//! Past the header = the reader returned `Ok`, or its error lies after the part of the file
//! that identifies the format and its layout:
//!
//! | reader | header (errors there do not count) |
//! | --- | --- |
//! | npy | magic, version, header length, the header dict, the dtype |
//! | npz, graph, acdc | the zip directory (`Npz::open`) |
//! | idx | magic, element type, dimension list |
//! | sentences | line 1 (the format has no header; the first record stands in for one) |
//! | prices | line 1 (`Date,<columns>`) |
//! | movielens | the schema files `u.genre`, `u.occupation` and the folder layout |
//! | png | the signature and IHDR (size, depth, colour type) |
//! | params | the header length and the JSON header (fed's safetensors wire format) |
//! | model-blob | the JSON envelope, the checksum and the `AEVO1` magic (AdaEvo's shipped models) |
//! | hcnn-model | the JSON envelope: format, version, checksum (HyPHEN's `hcnn` model checkpoints) |
//! | li-dataset | JSON: the document and its `version`; CSV: the header line (layer-importance `dataset.json`/`.csv`) |
//! | hcnn-keys | the outer frame: magic, version, checksum, section list (`hcnn` evaluation-key bundles) |
//! | hcnn-ct | the outer frame: magic, version, checksum, section list (`hcnn` input / output ciphertexts) |
//! | rl-checkpoint | `state.json` not a checkpoint of this format; the replay buffer's magic (TaskMet's CartPole agent state) |
//! | edge-state | `meta.json`: not this run's edge state (AdaEvo's `adaevo edge --state` folder) |
//! | sdgt-state | the server checkpoint's length prefix and JSON header (SD-GT's resume folder) |
//! | planetoid | a file missing, or a pickle's protocol opcode (Planetoid's `ind.<name>.*` pickles, `data convert-planetoid`) |

use crate::mutate;
use crate::rng::Rng;
use ferrolab_data::DataError;
use ferrolab_data::npy::npy_bytes;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The reader targets, in report order.
pub const READERS: &[&str] = &[
    "npy",
    "npz",
    "graph",
    "acdc",
    "idx",
    "sentences",
    "prices",
    "movielens",
    "png",
    "params",
    "model-blob",
    "hcnn-model",
    "li-dataset",
    "hcnn-keys",
    "hcnn-ct",
    "rl-checkpoint",
    "edge-state",
    "sdgt-state",
    "planetoid",
];

/// A seed: named members (one file, a zip's `.npy` members, or a folder's files) plus how the
/// mutant is written.
#[derive(Debug, Clone)]
pub struct Seed {
    /// File name of the mutant (its extension tells the child which entry point to call).
    pub name: String,
    pub kind: SeedKind,
    pub members: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedKind {
    /// One plain file: `members[0]`.
    File,
    /// One file, gzip-compressed when written.
    Gzip,
    /// An npz: members are `.npy` bytes, zipped (stored or deflated) when written.
    Npz { deflate: bool },
    /// A folder of files.
    Folder,
}

fn f32s(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}
fn i64s(v: impl IntoIterator<Item = i64>) -> Vec<u8> {
    v.into_iter().flat_map(i64::to_le_bytes).collect()
}
fn i32s(v: impl IntoIterator<Item = i32>) -> Vec<u8> {
    v.into_iter().flat_map(i32::to_le_bytes).collect()
}
fn ustr(items: &[&str], width: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        let mut cps: Vec<u32> = s.chars().map(u32::from).collect();
        cps.resize(width, 0);
        out.extend(cps.into_iter().flat_map(u32::to_le_bytes));
    }
    out
}

fn one(name: &str, kind: SeedKind, bytes: Vec<u8>) -> Seed {
    Seed {
        name: name.into(),
        kind,
        members: vec![(name.into(), bytes)],
    }
}

/// A 12-node graph in the `adj_*`/`attr_*`/`labels` layout, with class names and a split.
fn graph_members() -> Vec<(String, Vec<u8>)> {
    let n = 12usize;
    let mut indptr = vec![0i64];
    let mut indices = Vec::new();
    for i in 0..n {
        for j in [(i + 1) % n, (i + n - 1) % n, (i + 5) % n] {
            indices.push(j as i64);
        }
        indptr.push(indices.len() as i64);
    }
    let nnz = indices.len();
    let mut aptr = vec![0i64];
    let mut aind = Vec::new();
    for i in 0..n {
        aind.push((i % 6) as i64);
        aind.push(((i + 2) % 6) as i64);
        aptr.push(aind.len() as i64);
    }
    let m = |k: &str, b: Vec<u8>| (k.to_string(), b);
    vec![
        m(
            "adj_shape",
            npy_bytes("<i8", &[2], false, &i64s([n as i64, n as i64])),
        ),
        m(
            "adj_indptr",
            npy_bytes("<i8", &[n + 1], false, &i64s(indptr)),
        ),
        m(
            "adj_indices",
            npy_bytes("<i8", &[nnz], false, &i64s(indices)),
        ),
        m(
            "adj_data",
            npy_bytes("<f4", &[nnz], false, &f32s(vec![1.0; nnz])),
        ),
        m(
            "attr_shape",
            npy_bytes("<i8", &[2], false, &i64s([n as i64, 6])),
        ),
        m(
            "attr_indptr",
            npy_bytes("<i8", &[n + 1], false, &i64s(aptr)),
        ),
        m(
            "attr_indices",
            npy_bytes("<i8", &[2 * n], false, &i64s(aind)),
        ),
        m(
            "attr_data",
            npy_bytes(
                "<f4",
                &[2 * n],
                false,
                &f32s((0..2 * n).map(|x| x as f32 * 0.5)),
            ),
        ),
        m(
            "labels",
            npy_bytes("<i8", &[n], false, &i64s((0..n).map(|i| (i % 3) as i64))),
        ),
        m(
            "class_names",
            npy_bytes("<U4", &[3], false, &ustr(&["a", "bb", "ccc"], 4)),
        ),
        m(
            "idx_train",
            npy_bytes("<i8", &[4], false, &i64s([0, 1, 2, 3])),
        ),
        m(
            "idx_val",
            npy_bytes("<i8", &[4], false, &i64s([4, 5, 6, 7])),
        ),
        m(
            "idx_test",
            npy_bytes("<i8", &[4], false, &i64s([8, 9, 10, 11])),
        ),
    ]
}

pub(crate) fn acdc_members(shape: &[usize]) -> Vec<(String, Vec<u8>)> {
    let n: usize = shape.iter().product();
    let img: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
    let lab: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
    let scr: Vec<u8> = (0..n)
        .map(|i| if i % 5 == 0 { 4 } else { (i % 4) as u8 })
        .collect();
    vec![
        ("image".into(), npy_bytes("|u1", shape, false, &img)),
        ("label".into(), npy_bytes("|u1", shape, false, &lab)),
        ("scribble".into(), npy_bytes("|u1", shape, false, &scr)),
    ]
}

fn idx_bytes(dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    out.extend((0..n).map(|i| (i * 13 % 251) as u8));
    out
}

fn sentences() -> Vec<u8> {
    let words = [
        "good",
        "bad",
        "film",
        "plot",
        "caf\u{e9}",
        "slow",
        "great",
        "dull",
    ];
    let mut s = String::new();
    for i in 0..40 {
        s.push_str(&format!(
            "{} the {} was {} and {}\n",
            i % 3,
            words[i % 8],
            words[(i * 3 + 1) % 8],
            words[(i * 5 + 2) % 8]
        ));
    }
    s.into_bytes()
}

fn prices() -> Vec<u8> {
    let mut s = String::from("Date,AAA,BBB,CCC\n");
    for d in 1..=28 {
        s.push_str(&format!(
            "2020-02-{d:02},{:.2},{:.3},{}\n",
            100.0 + d as f64 * 0.7,
            20.5 - d as f64 * 0.1,
            7 + d
        ));
    }
    s.into_bytes()
}

fn movielens() -> Vec<(String, Vec<u8>)> {
    let genres = "unknown|0\nAction|1\nComedy|2\nDrama|3\n";
    let occupations = "student\nwriter\nother\n";
    let mut users = String::new();
    for u in 1..=6 {
        users.push_str(&format!(
            "{u}|{}|{}|{}|{:05}\n",
            18 + u * 3,
            if u % 2 == 0 { "M" } else { "F" },
            ["student", "writer", "other"][u % 3],
            10000 + u
        ));
    }
    let mut items = String::new();
    for i in 1..=8 {
        let flags: Vec<&str> = (0..4)
            .map(|g| if (i + g) % 3 == 0 { "1" } else { "0" })
            .collect();
        items.push_str(&format!(
            "{i}|Movie {i} (199{})|01-Jan-199{}||http://x/{i}|{}\n",
            i % 10,
            i % 10,
            flags.join("|")
        ));
    }
    let mut data = String::new();
    for k in 0..24 {
        data.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            1 + k % 6,
            1 + (k * 3) % 8,
            1 + k % 5,
            874_965_758 + k * 17
        ));
    }
    vec![
        ("u.data".into(), data.into_bytes()),
        ("u.user".into(), users.into_bytes()),
        ("u.item".into(), items.into_bytes()),
        ("u.genre".into(), genres.as_bytes().to_vec()),
        ("u.occupation".into(), occupations.as_bytes().to_vec()),
    ]
}

/// The valid seeds of `target`.
pub fn seeds(target: &str) -> Vec<Seed> {
    match target {
        "npy" => vec![
            one(
                "a.f4.npy",
                SeedKind::File,
                npy_bytes(
                    "<f4",
                    &[8, 16],
                    false,
                    &f32s((0..128).map(|x| x as f32 / 3.0)),
                ),
            ),
            one(
                "b.i8.npy",
                SeedKind::File,
                npy_bytes("<i8", &[40], false, &i64s(0..40)),
            ),
            one(
                "c.u1.npy",
                SeedKind::File,
                npy_bytes("|u1", &[4, 4, 8], false, &(0..128).collect::<Vec<u8>>()),
            ),
            one(
                "d.f8.npy",
                SeedKind::File,
                npy_bytes(
                    "<f8",
                    &[32],
                    true,
                    &(0..32)
                        .flat_map(|x| (x as f64).to_le_bytes())
                        .collect::<Vec<u8>>(),
                ),
            ),
            one(
                "e.i4.npy",
                SeedKind::File,
                npy_bytes("<i4", &[2, 2, 16], false, &i32s(-32..32)),
            ),
            one(
                "f.str.npy",
                SeedKind::File,
                npy_bytes(
                    "<U6",
                    &[12],
                    false,
                    &ustr(
                        &[
                            "alpha",
                            "b",
                            "",
                            "gamma",
                            "d\u{e9}lta",
                            "z",
                            "q",
                            "rr",
                            "s",
                            "tt",
                            "uuu",
                            "v",
                        ],
                        6,
                    ),
                ),
            ),
            one(
                "g.str.npy",
                SeedKind::File,
                npy_bytes("<U0", &[3], false, &[]),
            ),
        ],
        "npz" => vec![
            Seed {
                name: "m.npz".into(),
                kind: SeedKind::Npz { deflate: false },
                members: vec![
                    (
                        "x".into(),
                        npy_bytes("<f4", &[6, 8], false, &f32s((0..48).map(|x| x as f32))),
                    ),
                    ("y".into(), npy_bytes("<i8", &[6], false, &i64s(0..6))),
                    (
                        "names_str".into(),
                        npy_bytes("<U3", &[4], false, &ustr(&["a", "bc", "def", ""], 3)),
                    ),
                ],
            },
            Seed {
                name: "d.npz".into(),
                kind: SeedKind::Npz { deflate: true },
                members: vec![
                    (
                        "w".into(),
                        npy_bytes(
                            "<f8",
                            &[5, 5],
                            false,
                            &(0..25)
                                .flat_map(|x| (x as f64).to_le_bytes())
                                .collect::<Vec<u8>>(),
                        ),
                    ),
                    (
                        "k".into(),
                        npy_bytes("|u1", &[64], false, &(0..64).collect::<Vec<u8>>()),
                    ),
                ],
            },
        ],
        "graph" => vec![
            Seed {
                name: "g.npz".into(),
                kind: SeedKind::Npz { deflate: false },
                members: graph_members(),
            },
            Seed {
                name: "gd.npz".into(),
                kind: SeedKind::Npz { deflate: true },
                members: graph_members(),
            },
        ],
        "acdc" => vec![
            Seed {
                name: "slice_1.npz".into(),
                kind: SeedKind::Npz { deflate: false },
                members: acdc_members(&[8, 10]),
            },
            Seed {
                name: "vol_1.npz".into(),
                kind: SeedKind::Npz { deflate: true },
                members: acdc_members(&[3, 6, 5]),
            },
        ],
        "idx" => vec![
            one("images.idx", SeedKind::File, idx_bytes(&[6, 5, 4])),
            one("labels.idx", SeedKind::File, idx_bytes(&[60])),
            one("images.idx.gz", SeedKind::Gzip, idx_bytes(&[3, 4, 4])),
        ],
        "sentences" => vec![one("s.txt", SeedKind::File, sentences())],
        "prices" => vec![
            one("p.csv", SeedKind::File, prices()),
            one("p.csv.gz", SeedKind::Gzip, prices()),
        ],
        "movielens" => vec![Seed {
            name: "ml-100k".into(),
            kind: SeedKind::Folder,
            members: movielens(),
        }],
        "params" => params_seeds(),
        "model-blob" => blob_seeds(),
        "hcnn-model" => hcnn_seeds(),
        "li-dataset" => crate::li_dataset::seeds(),
        "rl-checkpoint" => crate::rl_checkpoint::seeds(),
        "edge-state" => crate::edge_state::seeds(),
        "sdgt-state" => crate::sdgt_state::seeds(),
        "planetoid" => vec![Seed {
            name: "planetoid".into(),
            kind: SeedKind::Folder,
            members: ferrolab_data::fetch::toy_planetoid_files("toy"),
        }],
        "hcnn-keys" => crate::hcnn_file::key_seeds(),
        "hcnn-ct" => crate::hcnn_file::ct_seeds(),
        "png" => crate::png::seeds()
            .into_iter()
            .map(|(name, bytes)| one(&name, SeedKind::File, bytes))
            .collect(),
        _ => Vec::new(),
    }
}

/// fed's model wire format: a few tensors (a scalar, a matrix, an empty one) and a single one.
fn params_seeds() -> Vec<Seed> {
    let mut p = ferrolab_fed::Params::new();
    let tensors: [(&str, Vec<usize>, usize); 4] = [
        ("conv.weight", vec![2, 1, 3, 3], 18),
        ("conv.bias", vec![2], 2),
        ("scale", vec![], 1),
        ("empty", vec![0, 4], 0),
    ];
    for (name, shape, n) in tensors {
        let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
        if p.insert(name, shape, data).is_err() {
            return Vec::new();
        }
    }
    vec![
        one("model.safetensors", SeedKind::File, p.to_safetensors()),
        one(
            "flat.safetensors",
            SeedKind::File,
            ferrolab_fed::Params::flat("w", (0..40).map(|i| i as f32).collect()).to_safetensors(),
        ),
    ]
}

/// AdaEvo's shipped model: JSON `ModelBlob`s of two small MLPs (AEVO1) and one with a conv
/// stem (AEVO2).
fn blob_seeds() -> Vec<Seed> {
    [(vec![16, 8, 4], 1), (vec![9, 5, 7, 3], 2), (vec![], 3)]
        .into_iter()
        .map(|(sizes, seed)| {
            let m = if sizes.is_empty() {
                ferrolab_edge::model::Mlp::with_stem(1, 6, 2, 3, &[5, 3], seed)
            } else {
                ferrolab_edge::model::Mlp::new(&sizes, seed)
            };
            let blob = ferrolab_edge::protocol::ModelBlob::encode(seed as usize, seed, &m);
            let name = format!("blob{seed}.json");
            one(
                &name,
                SeedKind::File,
                serde_json::to_vec(&blob).unwrap_or_default(),
            )
        })
        .collect()
}

/// HyPHEN's folded ResNet-8 checkpoints: HerPN (quadratic) and ReLU activations, two widths.
fn hcnn_seeds() -> Vec<Seed> {
    [(true, 2, 1), (false, 3, 2)]
        .into_iter()
        .map(|(quad, width, seed)| {
            let net = ferrolab_fhe::hyphen::net::Net::random_resnet(seed, quad, 3, 1, width);
            let text = ferrolab_fhe::hyphen::hcnn::model_to_json(&net);
            one(
                &format!("model{seed}.json"),
                SeedKind::File,
                text.into_bytes(),
            )
        })
        .collect()
}

/// Mostly the inner network text mutated with its checksum recomputed (so the shape checks
/// are reached); sometimes the envelope itself or a stale checksum.
fn mutate_hcnn(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let outer = serde_json::from_slice::<serde_json::Value>(bytes);
    match outer {
        Ok(mut v) if rng.chance(0.8) => {
            let mut inner = v["net"].as_str().unwrap_or_default().as_bytes().to_vec();
            mutate::text(rng, &mut inner, &[]);
            let inner = String::from_utf8_lossy(&inner).into_owned();
            if rng.chance(0.9) {
                v["checksum"] = ferrolab_fhe::hyphen::hcnn::model_checksum(&inner).into();
            }
            v["net"] = inner.into();
            *bytes = v.to_string().into_bytes();
        }
        _ => mutate::text(rng, bytes, &[]),
    }
}

/// Mostly the encoded model's bytes with the checksum recomputed (so the decoder is reached);
/// sometimes the JSON envelope or a stale checksum.
fn mutate_blob(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let parsed = serde_json::from_slice::<ferrolab_edge::protocol::ModelBlob>(bytes);
    match parsed {
        Ok(mut blob) if rng.chance(0.8) => {
            if rng.chance(0.3) {
                // The header: magic, layer count, widths.
                let n = blob.bytes.len().min(5 + 4 * 5);
                let mut head = blob.bytes[..n].to_vec();
                mutate::bytes(rng, &mut head, &[]);
                blob.bytes.splice(..n, head);
            } else {
                mutate::bytes(rng, &mut blob.bytes, &[]);
            }
            if rng.chance(0.9) {
                blob.sha256 = ferrolab_edge::protocol::sha256_hex(&blob.bytes);
            }
            *bytes = serde_json::to_vec(&blob).unwrap_or_default();
        }
        _ => mutate::text(rng, bytes, &[]),
    }
}

/// One Planetoid file: the test index as text; a pickle by a new `BININT2` argument half the
/// time (shapes, lengths, node ids: the values the converter checks), by byte edits otherwise.
fn mutate_planetoid(rng: &mut Rng, s: &mut Seed) {
    let k = rng.below(s.members.len());
    let other = s.members[rng.below(s.members.len())].1.clone();
    let (name, m) = &mut s.members[k];
    if name.ends_with("test.index") {
        mutate::text(rng, m, &other);
        return;
    }
    let ints: Vec<usize> = (2..m.len().saturating_sub(2))
        .filter(|&i| m[i] == b'M')
        .collect();
    if !ints.is_empty() && rng.chance(0.5) {
        let i = *rng.pick(&ints);
        let v = match rng.below(3) {
            0 => *rng.pick(&[0u16, 1, 2, 3, 4, 5, 6, 7, 255, 65535]),
            1 => u16::from_le_bytes([m[i + 1], m[i + 2]]).wrapping_add(1),
            _ => rng.below(65536) as u16,
        };
        m[i + 1..i + 3].copy_from_slice(&v.to_le_bytes());
        return;
    }
    mutate::bytes(rng, m, &other);
}

fn is_text_target(target: &str) -> bool {
    matches!(target, "sentences" | "prices" | "movielens")
}

/// Mutates `seed`'s content: usually one member before packing (so the container stays valid
/// and the reader gets past it), sometimes the packed bytes themselves.
pub fn mutate(rng: &mut Rng, target: &str, seed: &Seed) -> (Seed, bool) {
    let mut s = seed.clone();
    let packed = matches!(s.kind, SeedKind::Npz { .. } | SeedKind::Gzip) && rng.chance(0.25);
    if packed {
        // Mutated after packing: the caller flips bytes of the container.
        return (s, true);
    }
    if target == "png" {
        crate::png::mutate(rng, &mut s.members[0].1);
        return (s, false);
    }
    if target == "model-blob" {
        mutate_blob(rng, &mut s.members[0].1);
        return (s, false);
    }
    if target == "hcnn-model" {
        mutate_hcnn(rng, &mut s.members[0].1);
        return (s, false);
    }
    if target == "hcnn-keys" || target == "hcnn-ct" {
        crate::hcnn_file::mutate(rng, target == "hcnn-keys", &mut s.members[0].1);
        return (s, false);
    }
    if target == "li-dataset" {
        crate::li_dataset::mutate(rng, &mut s.members[0].1);
        return (s, false);
    }
    if target == "rl-checkpoint" {
        crate::rl_checkpoint::mutate(rng, &mut s);
        return (s, false);
    }
    if target == "edge-state" {
        crate::edge_state::mutate(rng, &mut s);
        return (s, false);
    }
    if target == "sdgt-state" {
        crate::sdgt_state::mutate(rng, &mut s);
        return (s, false);
    }
    if target == "params" {
        crate::cli::mutate_safetensors(rng, &mut s.members[0].1);
        return (s, false);
    }
    if target == "planetoid" {
        mutate_planetoid(rng, &mut s);
        return (s, false);
    }
    let k = match target {
        "movielens" => *rng.pick(&[0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 4]),
        _ => rng.below(s.members.len()),
    };
    let other = s.members[rng.below(s.members.len())].1.clone();
    let m = &mut s.members[k].1;
    if is_text_target(target) {
        mutate::text(rng, m, &other);
    } else if rng.chance(0.35) {
        // The npy header dict is text: shape, descr and version tweaks.
        let end = m
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(m.len())
            .min(m.len());
        let mut head = m[..end].to_vec();
        if rng.chance(0.7) {
            if !mutate::numbers(rng, &mut head) {
                mutate::bytes(rng, &mut head, &[]);
            }
        } else {
            mutate::bytes(rng, &mut head, &[]);
        }
        m.splice(..end, head);
    } else {
        // The data region mostly, so mutants reach the element checks.
        let start = if target == "idx" {
            4
        } else {
            m.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1)
        };
        if start < m.len() && rng.chance(0.8) {
            let mut tail = m[start..].to_vec();
            mutate::bytes(rng, &mut tail, &other);
            m.truncate(start);
            m.extend(tail);
        } else {
            mutate::bytes(rng, m, &other);
        }
    }
    (s, false)
}

/// Writes `seed` under `dir`, returning the path the reader is given. `packed_mutation`:
/// mutate the container's bytes after packing.
pub fn write(
    rng: &mut Rng,
    dir: &Path,
    seed: &Seed,
    packed_mutation: bool,
) -> std::io::Result<PathBuf> {
    let path = dir.join(&seed.name);
    match seed.kind {
        SeedKind::File => std::fs::write(&path, &seed.members[0].1)?,
        SeedKind::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&seed.members[0].1)?;
            let mut bytes = e.finish()?;
            if packed_mutation {
                mutate::bytes(rng, &mut bytes, &[]);
            }
            std::fs::write(&path, bytes)?;
        }
        SeedKind::Npz { deflate } => {
            let members: Vec<(&str, Vec<u8>)> = seed
                .members
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            ferrolab_data::npz::write_npz(&path, &members, deflate)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if packed_mutation {
                let mut bytes = std::fs::read(&path)?;
                mutate::bytes(rng, &mut bytes, &[]);
                std::fs::write(&path, bytes)?;
            }
        }
        SeedKind::Folder => {
            std::fs::create_dir_all(&path)?;
            for (name, bytes) in &seed.members {
                std::fs::write(path.join(name), bytes)?;
            }
        }
    }
    Ok(path)
}

/// What one reader call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Rejected after the header.
    PastHeader,
    /// Rejected at the header (magic, layout).
    Header,
}

fn at_byte(at: &str) -> Option<usize> {
    let rest = at.rsplit("byte ").next()?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn at_line(at: &str) -> Option<usize> {
    let rest = at.strip_prefix("line ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn classify(target: &str, e: &DataError) -> Verdict {
    let (at, msg, path) = match e {
        DataError::Malformed { at, msg, path } => (at.as_str(), msg.as_str(), path.as_path()),
        DataError::Missing { path, what } => ("", what.as_str(), path.as_path()),
        DataError::Io { path, .. } => ("", "", path.as_path()),
        _ => ("", "", Path::new("")),
    };
    let header = match target {
        "npy" => {
            const HEADER: &[&str] = &[
                "not a .npy file",
                "preamble",
                "format version",
                "header length",
                "truncated header",
                "header is not valid text",
                " in header ",
                "unsupported dtype",
                "Unicode dtype",
            ];
            HEADER.iter().any(|h| msg.contains(h))
        }
        "npz" | "graph" | "acdc" => at == "zip directory" || matches!(e, DataError::Io { .. }),
        "idx" => {
            msg.contains("truncated header")
                || msg.contains("too large")
                || at_byte(at).is_some_and(|b| b < 4)
                || matches!(e, DataError::Io { .. })
        }
        "sentences" | "prices" => at_line(at).is_none_or(|l| l <= 1),
        "movielens" => {
            matches!(e, DataError::Missing { .. })
                || path
                    .file_name()
                    .is_some_and(|f| f == "u.genre" || f == "u.occupation")
        }
        "model-blob" => {
            msg.contains("envelope")
                || msg.contains("checksum")
                || msg.contains("AEVO1")
                || matches!(e, DataError::Io { .. })
        }
        "hcnn-model" => {
            msg.contains("not an hcnn model checkpoint")
                || msg.contains("checkpoint version")
                || msg.contains("checksum")
                || matches!(e, DataError::Io { .. })
        }
        "hcnn-keys" => {
            msg.contains("not a valid evaluation-key bundle")
                || msg.contains("an eval.keys has 3")
                || matches!(e, DataError::Io { .. })
        }
        "hcnn-ct" => {
            msg.contains("not a valid hcnn ciphertext file") || matches!(e, DataError::Io { .. })
        }
        "li-dataset" => crate::li_dataset::is_header(msg, e),
        "rl-checkpoint" => crate::rl_checkpoint::is_header(msg, e),
        "edge-state" => crate::edge_state::is_header(msg, e),
        "sdgt-state" => crate::sdgt_state::is_header(msg, e),
        "planetoid" => {
            matches!(e, DataError::Io { .. } | DataError::Missing { .. })
                || msg.contains("pickle protocol")
                || (at == "pickle" && (msg.starts_with("byte 0:") || msg.starts_with("byte 1:")))
        }
        "params" => {
            msg.contains("header length")
                || msg.contains("8-byte header")
                || msg.contains("not a JSON object")
                || matches!(e, DataError::Io { .. })
        }
        "png" => {
            let m = msg.to_ascii_lowercase();
            at == "png header"
                || m.contains("signature")
                || m.contains("ihdr")
                || matches!(e, DataError::Io { .. })
        }
        _ => true,
    };
    if header {
        Verdict::Header
    } else {
        Verdict::PastHeader
    }
}

fn call(target: &str, path: &Path) -> ferrolab_data::Result<()> {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match target {
        "npy" => {
            if name.contains(".str.") {
                ferrolab_data::read_npy_strings(path).map(drop)
            } else {
                let a = ferrolab_data::read_npy(path)?;
                // The checked conversions are part of what callers do with an array.
                let _ = a.to_i64_vec();
                let _ = a.to_usize_vec();
                let _ = a.to_f32_vec();
                a.into_u8_vec().map(drop).or(Ok(()))
            }
        }
        "npz" => {
            let mut z = ferrolab_data::Npz::open(path)?;
            let keys = z.keys().to_vec();
            for k in keys {
                if k.ends_with("_str") {
                    z.get_strings(&k)?;
                } else {
                    z.get(&k)?;
                }
            }
            // A key that is absent must be an error, not a panic.
            let _ = z.get("absent");
            Ok(())
        }
        "graph" => {
            let g = ferrolab_data::load_npz_graph(path)?;
            let _ = g.is_symmetric();
            let _ = g.class_counts();
            Ok(())
        }
        "acdc" => {
            if name.starts_with("vol") {
                let v = ferrolab_data::load_acdc_volume(path)?;
                if v.d > 0 {
                    let _ = v.slice(v.d - 1);
                }
                Ok(())
            } else {
                ferrolab_data::load_acdc_slice(path).map(drop)
            }
        }
        "idx" => {
            let a = ferrolab_data::read_idx(path)?;
            let _ = (a.len(), a.item_size());
            Ok(())
        }
        "sentences" => {
            let s = ferrolab_data::read_labeled_sentences(path)?;
            // label_counts() once sized a table by the largest label (tests::label_counts_is_bounded).
            let _ = (s.num_classes(), s.label_counts());
            Ok(())
        }
        "prices" => {
            let t = ferrolab_data::load_price_csv_gz(path)?;
            let _ = t.returns();
            Ok(())
        }
        "movielens" => ferrolab_data::load_movielens_100k(path).map(drop),
        "model-blob" => {
            let bytes = std::fs::read(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let bad = |msg: String| DataError::Malformed {
                path: path.to_path_buf(),
                at: "model blob".into(),
                msg,
            };
            // What a mobile end does with a delivery: parse the envelope, verify, decode.
            let blob: ferrolab_edge::protocol::ModelBlob =
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("envelope: {e}")))?;
            let m = blob.decode().map_err(|e| bad(e.to_string()))?;
            let again = ferrolab_edge::protocol::ModelBlob::encode(blob.end, blob.version, &m);
            // int8 codes and scales re-encode to the same bytes (a decoded model is a fixpoint).
            let m2 = again.decode().map_err(|e| bad(e.to_string()))?;
            assert!(
                m2.same_shape(&m),
                "model-blob: shape changed on re-encoding"
            );
            // An accepted model runs: the end feeds it frames of its input width.
            let out = m.forward(&vec![0.5; m.input()]).probs;
            assert_eq!(out.len(), m.classes(), "model-blob: output width");
            Ok(())
        }
        "hcnn-model" => {
            // What `hcnn infer --model` does first. The loader's errors are SystemErrors;
            // their text keeps the verdict's keywords.
            let net =
                ferrolab_fhe::hyphen::hcnn::load_model(path).map_err(|e| DataError::Malformed {
                    path: path.to_path_buf(),
                    at: "hcnn model".into(),
                    msg: e.to_string(),
                })?;
            // A checkpoint that loads is a fixpoint of save/load.
            let text = ferrolab_fhe::hyphen::hcnn::model_to_json(&net);
            let again = ferrolab_fhe::hyphen::hcnn::model_from_json(&text, path)
                .map(|n| ferrolab_fhe::hyphen::hcnn::model_to_json(&n));
            assert!(
                again.as_deref().ok() == Some(text.as_str()),
                "hcnn-model: a loaded checkpoint does not survive save/load"
            );
            Ok(())
        }
        "hcnn-keys" => crate::hcnn_file::read_keys(path),
        "hcnn-ct" => crate::hcnn_file::read_ct(path),
        "li-dataset" => crate::li_dataset::read(path),
        "rl-checkpoint" => crate::rl_checkpoint::read(path),
        "edge-state" => crate::edge_state::read(path),
        "sdgt-state" => crate::sdgt_state::read(path),
        "planetoid" => {
            // What `ferrolab data convert-planetoid` does, then what every graph system does
            // with its output: a converted set must load.
            let out = path.join("converted.npz");
            ferrolab_data::fetch::convert_planetoid(path, "toy", &out)?;
            match ferrolab_data::load_npz_graph(&out) {
                Ok(g) => {
                    let _ = (g.is_symmetric(), g.class_counts());
                    Ok(())
                }
                Err(e) => panic!("planetoid: the converter wrote a graph its loader refuses: {e}"),
            }
        }
        "params" => {
            let bytes = std::fs::read(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let bad = |e: ferrolab_fed::params::ParamsError| DataError::Malformed {
                path: path.to_path_buf(),
                at: "safetensors".into(),
                msg: e.to_string(),
            };
            let p = ferrolab_fed::Params::from_safetensors(&bytes).map_err(bad)?;
            // What the fabric does with a received model: flatten, rebuild, check, re-encode.
            let flat = p.to_flat();
            let q = p.with_flat(&flat).map_err(bad)?;
            q.check_same_layout(&p).map_err(bad)?;
            q.check_finite().map_err(bad)?;
            let again = ferrolab_fed::Params::from_safetensors(&q.to_safetensors()).map_err(bad)?;
            assert_eq!(again, p, "params: decode(encode(p)) differs from p");
            Ok(())
        }
        "png" => {
            if name.contains(".mask.") {
                ferrolab_data::image::read_png_mask(path).map(drop)
            } else {
                let img = ferrolab_data::image::read_png(path)?;
                let _ = img.to_gray();
                Ok(())
            }
        }
        other => Err(DataError::Invalid {
            what: "fuzz target".into(),
            msg: format!("{other} is not a reader target"),
        }),
    }
}

/// `--one TARGET PATH`: runs one reader and prints its verdict (`ok`, `past-header`, `header`)
/// and the error on stdout. A panic ends the process with status 101, which the parent records.
pub fn run_one(target: &str, path: &Path) -> Verdict {
    let v = match call(target, path) {
        Ok(()) => Verdict::Ok,
        Err(e) => {
            let v = classify(target, &e);
            println!("{e}");
            v
        }
    };
    println!(
        "{}",
        match v {
            Verdict::Ok => "verdict: ok",
            Verdict::PastHeader => "verdict: past-header",
            Verdict::Header => "verdict: header",
        }
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // A huge label once sized a class table (32 GiB for label 4294967295).
    fn label_counts_is_bounded() {
        let dir = std::env::temp_dir().join(format!("ferrolab-fuzz-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.txt");
        std::fs::write(&p, "0 a film\n4294967295 a plot\n").unwrap();
        let r = ferrolab_data::read_labeled_sentences(&p);
        std::fs::remove_dir_all(&dir).ok();
        // The label is kept as written (labels are ids, not counts): two classes, no table
        // sized by the largest label.
        let s = r.unwrap();
        assert_eq!(s.class_labels(), [0, u32::MAX]);
        assert_eq!(s.num_classes(), 2);
        assert_eq!(s.label_counts(), [1, 1]);
    }

    #[test]
    fn every_seed_reads_back() {
        let dir = std::env::temp_dir().join(format!("ferrolab-fuzz-s-{}", std::process::id()));
        for t in READERS {
            for (k, seed) in seeds(t).iter().enumerate() {
                let d = dir.join(format!("{t}-{k}"));
                std::fs::create_dir_all(&d).unwrap();
                let p = write(&mut Rng::new(0), &d, seed, false).unwrap();
                assert!(
                    call(t, &p).is_ok(),
                    "{t} seed {}: {:?}",
                    seed.name,
                    call(t, &p)
                );
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
