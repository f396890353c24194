//! SD-GT's round checkpoints as a reader target (`sdgt-state`): the state folder a stopped
//! `ferrolab sdgt` or `fed server --system sdgt` resumes from — `server.checkpoint.bin` (the
//! server's strategy state, round history and run spec as a JSON header, then x̄ as
//! safetensors) and `client.<k>.slot<s>.bin` (each client's devices' x, y, z, c and step counts),
//! read by `ferrolab_fed::sdgt::driver::run`.
//!
//! The seed is a 12-device softmax regression (4 clients in 3 subnets, SD-GT) stopped after
//! round 4 with a checkpoint every 2 rounds. A mutant edits one to three nodes of the server
//! checkpoint's JSON header (y_c, c, s, T, the reset devices, communication counts, the
//! history, the spec), or bytes of the server file, or bytes of a client file. The child
//! resumes the run to round 6 over an in-process fabric on the folder: a refused checkpoint is
//! a checkpoint error naming what is wrong; an accepted one must finish with a finite x̄.

use crate::mutate;
use crate::readers::{Seed, SeedKind};
use crate::rng::Rng;
use ferrolab_data::DataError;
use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::sdgt::algo::{Algo, Hyper};
use ferrolab_fed::sdgt::costmodel::CostModel;
use ferrolab_fed::sdgt::driver::{RunData, RunSpec, run};
use ferrolab_fed::sdgt::model::{Logistic, Samples};
use ferrolab_fed::topology::Topology;
use rand::SeedableRng;
use std::path::Path;
use std::sync::Arc;

const DEVICES: usize = 12;
const DIM: usize = 4;
const CLASSES: usize = 3;
const SERVER: &str = "server.checkpoint.bin";

/// Twelve devices of five rows each, labels sorted by device (the extreme skew SD-GT is for).
fn data() -> RunData {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..DEVICES * 5 {
        let label = (i * CLASSES / (DEVICES * 5)) as u8;
        y.push(label);
        for k in 0..DIM {
            x.push(
                ((i * 7 + k * 3) % 11) as f32 / 5.5 - 1.0
                    + if k == label as usize { 1.0 } else { 0.0 },
            );
        }
    }
    let samples = Arc::new(Samples {
        x,
        y,
        dim: DIM,
        classes: CLASSES,
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let topo = Topology::build(DEVICES, 3, None, &mut rng);
    let gt = Topology::build(DEVICES, 1, None, &mut rng);
    let (topo, gt) = match (topo, gt) {
        (Ok(a), Ok(b)) => (a, b),
        _ => panic!("sdgt-state: the seed topology cannot be built"),
    };
    let dim = CLASSES * (DIM + 1);
    RunData {
        model: Arc::new(Logistic {
            dim_in: DIM,
            classes: CLASSES,
            l2: 0.01,
        }),
        train: Arc::clone(&samples),
        parts: Arc::new((0..DEVICES).map(|d| (d * 5..d * 5 + 5).collect()).collect()),
        val: Arc::clone(&samples),
        test: samples,
        topo: Arc::new(topo),
        gt_topo: Arc::new(gt),
        x0: Arc::new(vec![0.0; dim]),
        state_dir: None,
    }
}

fn spec(rounds: u64) -> RunSpec {
    RunSpec {
        hyper: Hyper {
            algo: Algo::SdGt,
            lr: 0.1,
            t: 3,
            batch: 2,
        },
        s: 2,
        rounds,
        seed: 5,
        eval_every: 2,
        checkpoint_every: 2,
        devices_per_client: 3,
        // A client refused by its damaged checkpoint leaves its subnet's D2D exchanges waiting
        // this long (the runtime's known limit); short, so a case stays inside its timeout.
        deadline_seconds: 1.0,
        cost: CostModel {
            lambda: [1.0, 1.0, 0.05],
            energy: 1.0,
            delta: 0.02,
            max_t: 49,
        },
        coopt_every: 0,
    }
}

/// The folder of the run stopped after round 4, made in-process (milliseconds).
pub fn seeds() -> Vec<Seed> {
    let dir = std::env::temp_dir().join(format!("ferrolab-fuzz-sdgt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let made = run(
        &spec(4),
        &data(),
        Arc::new(InProcFabric::with_dir(&dir)),
        &mut |_| {},
    );
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    if made.is_ok()
        && let Ok(rd) = std::fs::read_dir(&dir)
    {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(bytes) = std::fs::read(e.path()) {
                members.push((name, bytes));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The server file first, so that the mutator finds it at index 0.
    members.sort_by_key(|(n, _)| (n != SERVER, n.clone()));
    if members.first().map(|(n, _)| n.as_str()) != Some(SERVER) {
        return Vec::new();
    }
    vec![Seed {
        name: "state".into(),
        kind: SeedKind::Folder,
        members,
    }]
}

/// Mostly JSON edits of the server checkpoint's header; otherwise bytes of the server file or
/// of a client file.
pub fn mutate(rng: &mut Rng, s: &mut Seed) {
    if s.members.is_empty() {
        return;
    }
    let roll = rng.below(10);
    if roll >= 8 && s.members.len() > 1 {
        let k = 1 + rng.below(s.members.len() - 1);
        mutate::bytes(rng, &mut s.members[k].1, &[]);
        return;
    }
    let m = &mut s.members[0].1;
    if roll >= 6 || m.len() < 8 {
        mutate::bytes(rng, m, &[]);
        return;
    }
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&m[..8]);
    let n = (u64::from_le_bytes(n8) as usize).min(m.len() - 8);
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&m[8..8 + n]) else {
        mutate::bytes(rng, m, &[]);
        return;
    };
    for _ in 0..1 + rng.below(3) {
        if rng.chance(0.8) {
            typed_edit(rng, &mut v);
        } else {
            crate::json::mutate(rng, &mut v);
        }
    }
    let json = v.to_string().into_bytes();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&m[8 + n..]);
    *m = out;
}

/// An edit that keeps the header a server checkpoint (so that it reaches the state checks
/// rather than the JSON parser): a number replaced by another (zero, negative, huge, scaled,
/// fractional), an array shortened, lengthened or emptied. The run spec is left alone most of
/// the time: a checkpoint of another spec is ignored, not read.
fn typed_edit(rng: &mut Rng, v: &mut serde_json::Value) {
    use serde_json::Value;
    fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    path.push(k.clone());
                    leaves(c, path, out);
                    path.pop();
                }
            }
            Value::Array(a) => {
                out.push(path.clone());
                for (i, c) in a.iter().enumerate().take(6) {
                    path.push(i.to_string());
                    leaves(c, path, out);
                    path.pop();
                }
            }
            Value::Number(_) | Value::Bool(_) => out.push(path.clone()),
            _ => {}
        }
    }
    let mut all = Vec::new();
    leaves(v, &mut Vec::new(), &mut all);
    all.retain(|p| p.first().map(String::as_str) != Some("spec") || rng.chance(0.1));
    if all.is_empty() {
        return;
    }
    let path = all[rng.below(all.len())].clone();
    let mut node = &mut *v;
    for k in &path {
        node = match node {
            Value::Object(m) => match m.get_mut(k) {
                Some(c) => c,
                None => return,
            },
            Value::Array(a) => match k.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(c) => c,
                None => return,
            },
            _ => return,
        };
    }
    match node {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let y = match rng.below(7) {
                0 => 0.0,
                1 => -1.0,
                2 => 1e30,
                3 => x * 2.0 + 1.0,
                4 => -x,
                5 => x + 0.5,
                _ => rng.below(100) as f64,
            };
            *node = serde_json::Number::from_f64(y).map_or(Value::Null, Value::Number);
            // Integers stay integers where the field is one (serde refuses 2.0 for a u64).
            if x.fract() == 0.0 && y.fract() == 0.0 && (0.0..9e15).contains(&y) {
                *node = Value::from(y as u64);
            }
        }
        Value::Bool(b) => *b = !*b,
        Value::Array(a) => match rng.below(3) {
            0 => {
                a.pop();
            }
            1 => {
                if let Some(last) = a.last().cloned() {
                    a.push(last);
                }
            }
            _ => a.clear(),
        },
        _ => {}
    }
}

/// Errors at the header: the length prefix, or a JSON header that is not a server checkpoint.
pub fn is_header(msg: &str, e: &DataError) -> bool {
    msg.contains("truncated")
        || msg.contains("header length past the end")
        || (msg.contains("at line") && msg.contains("column"))
        || matches!(e, DataError::Io { .. })
}

/// Resumes the seed's run to round 6 from the folder.
pub fn read(dir: &Path) -> ferrolab_data::Result<()> {
    let out = run(
        &spec(6),
        &data(),
        Arc::new(InProcFabric::with_dir(dir)),
        &mut |_| {},
    )
    .map_err(|e| DataError::Malformed {
        path: dir.to_path_buf(),
        at: "sdgt checkpoint".into(),
        msg: e.to_string(),
    })?;
    assert!(
        out.final_params.iter().all(|v| v.is_finite()),
        "sdgt-state: a resumed run ended with a non-finite x̄"
    );
    Ok(())
}
