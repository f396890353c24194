//! AdaEvo's edge state directory as a reader target (`edge-state`): the folder `ferrolab adaevo
//! edge --state DIR` persists and a restarted edge continues from (`meta.json`, `end_<k>.json`,
//! `task_<k>_<seq>.json`; `ferrolab_edge::net::state`).
//!
//! The seeds are state folders written through the store itself: one end with its models and
//! replay frames and an unsent model, and one accepted task; one folder with the MLP mobile
//! model, one (`edge-state-stem`) with the small CNN (`mobile.conv_channels`). A mutant edits one to three nodes
//! of an end or task file's JSON (models' widths and weights, replay frames, versions, the
//! task's frames), or bytes of any file. The child does what a restarted edge does before it
//! serves anyone: opens the folder for the run, reads it back, checks the ends against the
//! run's model widths and re-checks every task as an upload is checked; an accepted folder's
//! models must then survive what the edge does with them (retraining on the replay frames,
//! re-pruning, inference) without a panic.

use crate::mutate;
use crate::readers::{Seed, SeedKind};
use crate::rng::Rng;
use ferrolab_data::DataError;
use ferrolab_edge::edge::EndState;
use ferrolab_edge::model::Mlp;
use ferrolab_edge::net::state::{EndFile, Store, TaskFile, fingerprint};
use ferrolab_edge::protocol::{DriftType, Frame, ModelBlob, TaskRequest};
use ferrolab_edge::stream::{CLASSES, INPUT, INPUT_SIDE, SIDE};
use std::path::Path;

const SIZES: [usize; 3] = [INPUT, 4, CLASSES];
const ENDS: usize = 2;

fn run_fingerprint() -> String {
    fingerprint("{\"fuzz\":\"edge-state\"}", 1, ENDS)
}

/// The run's model: the MLP, or (a folder named `…-stem`) the small CNN of
/// `mobile.conv_channels`, whose conv block's shape and filters the state files carry too.
fn reference(stem: bool) -> Mlp {
    if stem {
        Mlp::with_stem(1, INPUT_SIDE, 2, 3, &SIZES[1..], 3)
    } else {
        Mlp::new(&SIZES, 3)
    }
}

fn is_stem(dir: &Path) -> bool {
    dir.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with("-stem"))
}

/// The folders, MLP and CNN, written by the store (a few milliseconds each).
pub fn seeds() -> Vec<Seed> {
    ["edge-state", "edge-state-stem"]
        .into_iter()
        .filter_map(|name| {
            let members = folder(is_stem(Path::new(name)))?;
            Some(Seed {
                name: name.into(),
                kind: SeedKind::Folder,
                members,
            })
        })
        .collect()
}

fn folder(stem: bool) -> Option<Vec<(String, Vec<u8>)>> {
    let dir =
        std::env::temp_dir().join(format!("ferrolab-fuzz-edge-{}-{stem}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let made = (|| -> Option<Vec<(String, Vec<u8>)>> {
        let store = Store::open(&dir, &run_fingerprint()).ok()?;
        let dense = reference(stem);
        let replay = (0..2)
            .map(|i| {
                (
                    (0..SIZES[0]).map(|j| ((i + j) % 7) as f32 * 0.1).collect(),
                    i as u8,
                )
            })
            .collect();
        store
            .put_end(&EndFile {
                state: EndState {
                    end: 0,
                    version: 2,
                    dense: dense.clone(),
                    deployed: dense.clone(),
                    replay,
                },
                finished_seq: Some(1),
                outbox: vec![ModelBlob::encode(0, 2, &dense)],
                next_id: 3,
            })
            .ok()?;
        let frames = (0..2)
            .map(|i| Frame {
                t: 40.0 + i as f64,
                pixels: (0..SIDE * SIDE)
                    .map(|j| ((i * 31 + j) % 256) as u8)
                    .collect(),
            })
            .collect();
        store
            .put_task(&TaskFile {
                arrival: 42.0,
                req: TaskRequest {
                    end: 1,
                    seq: 0,
                    model_version: 0,
                    trigger_t: 41.5,
                    drift: DriftType::Gradual,
                    estimate: 0.6,
                    threshold: 0.8,
                    remaining_s: 300.0,
                    frames,
                },
            })
            .ok()?;
        let mut members = Vec::new();
        for name in ["meta.json", "end_0.json", "task_1_0.json"] {
            members.push((name.to_string(), std::fs::read(dir.join(name)).ok()?));
        }
        Some(members)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    made
}

/// Mostly JSON edits of the end or task file; otherwise bytes of any file.
pub fn mutate(rng: &mut Rng, s: &mut Seed) {
    let k = if rng.chance(0.8) {
        1 + rng.below(2)
    } else {
        rng.below(s.members.len())
    };
    let Some((_, m)) = s.members.get_mut(k) else {
        return;
    };
    match serde_json::from_slice::<serde_json::Value>(m) {
        Ok(mut v) if rng.chance(0.85) => {
            for _ in 0..1 + rng.below(3) {
                crate::json::mutate(rng, &mut v);
            }
            *m = v.to_string().into_bytes();
        }
        _ => mutate::text(rng, m, &[]),
    }
}

/// Errors at the header: the folder is not this run's edge state (`meta.json`).
pub fn is_header(msg: &str, e: &DataError) -> bool {
    msg.contains("meta.json")
        || msg.contains("belongs to another run")
        || matches!(e, DataError::Io { .. })
}

/// What a restarted edge does with `dir` before serving: open, read back, check.
pub fn read(dir: &Path) -> ferrolab_data::Result<()> {
    let bad = |msg: String| DataError::Malformed {
        path: dir.to_path_buf(),
        at: "edge state".into(),
        msg,
    };
    let store = Store::open(dir, &run_fingerprint()).map_err(|e| bad(e.to_string()))?;
    let run_model = reference(is_stem(dir));
    let loaded = store
        .load_checked(|l| l.check(&run_model, ENDS))
        .map_err(|e| bad(e.to_string()))?;
    for t in &loaded.tasks {
        t.req.check(SIDE).map_err(|e| bad(e.to_string()))?;
    }
    // Accepted: what the edge will restore is shaped as the run's models.
    for (end, f) in &loaded.ends {
        assert!(*end < ENDS, "edge-state: end {end} accepted");
        assert!(
            f.state.dense.same_shape(&run_model) && f.state.deployed.same_shape(&run_model),
            "edge-state: a model of another shape accepted: {}",
            f.state.dense.describe()
        );
        // What the edge then does with them: retrain the dense copy (its masks included) on
        // the replay frames and re-compress it. Huge finite weights may give a non-finite
        // loss; that is the model's arithmetic, not a failure of the reader.
        let mut dense = f.state.dense.clone();
        let xs: Vec<Vec<f32>> = f.state.replay.iter().map(|r| r.0.clone()).collect();
        let ys: Vec<u8> = f.state.replay.iter().map(|r| r.1).collect();
        let opts = ferrolab_edge::model::TrainOpts {
            epochs: 1,
            lr: 0.01,
            momentum: 0.9,
            batch: 4,
            seed: 1,
        };
        dense.train(&xs, &ys, &opts);
        let _ = ferrolab_edge::protocol::prune(&dense, 0.5);
        let _ = f.state.deployed.forward(&vec![0.5f32; run_model.input()]);
    }
    Ok(())
}
