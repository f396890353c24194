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
        deadline_seconds: 30.0,
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
        crate::json::mutate(rng, &mut v);
    }
    let json = v.to_string().into_bytes();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&m[8 + n..]);
    *m = out;
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
