//! The edge process's durable state (`ferrolab adaevo edge --state DIR`), so that an edge
//! killed mid-training and started again continues: accepted tasks are re-queued, each end's
//! model version continues above the last one shipped, and finished models not yet
//! acknowledged are delivered again.
//!
//! Layout of `DIR` (every file written to a temporary name, synced, then renamed over the old
//! one, so a crash leaves either the old or the new file, never a torn one):
//!
//! * `meta.json`: the run's fingerprint (SHA-256 of the resolved config, the seed and the number
//!   of ends); a directory of another run is refused.
//! * `task_<end>_<seq>.json`: one per accepted task ([`TaskFile`]), written *before* the edge
//!   answers `accepted`, removed once the task has finished or was dropped.
//! * `end_<end>.json`: per end, written when one of its tasks finishes ([`EndFile`]): its
//!   [`EndState`] (version, models, replay), the last finished task's `seq` and the blobs not
//!   yet acknowledged. A task file whose `seq` is at or below the end's finished `seq` is stale
//!   (the edge died between the two writes) and is removed on load.
//!
//! A finished task is thus never both lost and counted: its end file (new version + blob to
//! deliver) is written before its task file goes.

use crate::edge::EndState;
use crate::model::Mlp;
use crate::protocol::{ModelBlob, TaskRequest, sha256_hex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An accepted task as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFile {
    /// Simulated arrival time (kept: the scheduler's waiting time counts from it).
    pub arrival: f64,
    /// The request as the end sent it.
    pub req: TaskRequest,
}

/// One end's persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndFile {
    /// Version, models, replay after its last finished task.
    pub state: EndState,
    /// `seq` of its last finished task.
    pub finished_seq: Option<u64>,
    /// Finished models not yet acknowledged by the end, oldest first.
    pub outbox: Vec<ModelBlob>,
    /// Task ids handed out so far (training seeds continue after them).
    pub next_id: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meta {
    fingerprint: String,
}

/// What a restarted edge finds.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Per end, its last persisted state.
    pub ends: BTreeMap<usize, EndFile>,
    /// Accepted, unfinished tasks, by arrival.
    pub tasks: Vec<TaskFile>,
    /// Stale task files removed (their task had finished).
    pub stale: usize,
}

impl Loaded {
    /// Whether what was found can continue a run of `ends` ends whose models are shaped as
    /// `reference` (see [`EndState::check_model`](crate::edge::EndState::check_model)); the error names the
    /// file. Task files are checked when the edge re-submits them, as any upload is.
    pub fn check(&self, reference: &Mlp, ends: usize) -> Result<(), String> {
        for (end, f) in &self.ends {
            let file = format!("end_{end}.json");
            if *end >= ends {
                return Err(format!(
                    "{file}: end {end} is not in this run of {ends} ends"
                ));
            }
            f.state
                .check_model(reference)
                .map_err(|e| format!("{file}: {e}"))?;
            if let Some(b) = f.outbox.iter().find(|b| b.end != *end) {
                return Err(format!("{file}: an unsent model of end {}", b.end));
            }
        }
        Ok(())
    }
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory belongs to another run (different config, seed or ends): the user's to fix.
    #[error(
        "state directory {dir}: it holds another run's state (config, seed or ends differ); use a fresh directory"
    )]
    OtherRun { dir: String },
    /// The path cannot be a state directory (a file, or a folder of other files): also the
    /// user's to fix, before any work.
    #[error("state directory {dir}: {why}; use a fresh directory")]
    NotState { dir: String, why: String },
    /// Reading, writing or parsing failed.
    #[error("state directory {path}: {why}")]
    Io { path: String, why: String },
}

fn io_err(path: &Path, why: impl std::fmt::Display) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The edge's state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The fingerprint of a run: what must match for a state directory to be continued.
pub fn fingerprint(config_json: &str, seed: u64, ends: usize) -> String {
    sha256_hex(format!("{config_json}\nseed={seed}\nends={ends}").as_bytes())
}

impl Store {
    /// Opens (creating if needed) `dir` for the run with `fingerprint`; refuses a directory
    /// holding another run's state.
    pub fn open(dir: &Path, fingerprint: &str) -> Result<Store, StateError> {
        let not_state = |why: String| StateError::NotState {
            dir: dir.display().to_string(),
            why,
        };
        if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
            return Err(not_state(format!("{} is a file", file.display())));
        }
        let meta = dir.join("meta.json");
        // A folder of the user's own files is not taken over: only an empty folder or one
        // with an edge's meta.json.
        if !meta.exists()
            && std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
        {
            return Err(not_state(
                "the folder is not empty and has no meta.json (not an edge's state)".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let store = Store {
            dir: dir.to_path_buf(),
        };
        match std::fs::read(&meta) {
            Ok(bytes) => {
                let m: Meta = serde_json::from_slice(&bytes).map_err(|e| {
                    not_state(format!("{}: not an edge's meta.json ({e})", meta.display()))
                })?;
                if m.fingerprint != fingerprint {
                    return Err(StateError::OtherRun {
                        dir: dir.display().to_string(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                store.write_json(
                    "meta.json",
                    &Meta {
                        fingerprint: fingerprint.to_string(),
                    },
                )?;
            }
            Err(e) => return Err(io_err(&meta, e)),
        }
        Ok(store)
    }

    /// Writes `value` as JSON to `name` atomically (temporary file, fsync, rename, fsync of the
    /// directory).
    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp{}", std::process::id()));
        let bytes = serde_json::to_vec(value).map_err(|e| io_err(&path, e))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename itself must reach the disk before the edge answers anyone.
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(&path, e)
        })
    }

    fn task_name(end: usize, seq: u64) -> String {
        format!("task_{end}_{seq}.json")
    }

    /// Persists an accepted task (before it is acknowledged).
    pub fn put_task(&self, task: &TaskFile) -> Result<(), StateError> {
        self.write_json(&Self::task_name(task.req.end, task.req.seq), task)
    }

    /// Forgets a task (finished, after its end file, or dropped).
    pub fn remove_task(&self, end: usize, seq: u64) -> Result<(), StateError> {
        let path = self.dir.join(Self::task_name(end, seq));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Persists an end's state.
    pub fn put_end(&self, end: &EndFile) -> Result<(), StateError> {
        self.write_json(&format!("end_{}.json", end.state.end), end)
    }

    /// Reads everything back; removes stale task files and left-over temporaries.
    pub fn load(&self) -> Result<Loaded, StateError> {
        self.load_checked(|_| Ok(()))
    }

    /// [`Store::load`], with `check` run on what was read before any stale task file is
    /// removed: a folder that cannot continue the run (see [`Loaded::check`]) is refused with
    /// its task files untouched.
    pub fn load_checked(
        &self,
        check: impl FnOnce(&Loaded) -> Result<(), String>,
    ) -> Result<Loaded, StateError> {
        let mut out = Loaded::default();
        let mut tasks = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') && name.contains(".tmp") {
                // A write the previous process did not finish: the old file (if any) stands.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let is_end = name.starts_with("end_") && name.ends_with(".json");
            let is_task = name.starts_with("task_") && name.ends_with(".json");
            if !is_end && !is_task {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
            // A file must hold what its name says: another end's state under this name would
            // be restored twice or in place of the right one.
            if is_end {
                let f: EndFile = serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e))?;
                if name != format!("end_{}.json", f.state.end) {
                    return Err(io_err(
                        &path,
                        format!("holds the state of end {}", f.state.end),
                    ));
                }
                out.ends.insert(f.state.end, f);
            } else {
                let t: TaskFile = serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e))?;
                if name != Self::task_name(t.req.end, t.req.seq) {
                    return Err(io_err(
                        &path,
                        format!("holds task {} of end {}", t.req.seq, t.req.end),
                    ));
                }
                tasks.push(t);
            }
        }
        check(&out).map_err(|why| StateError::Io {
            path: self.dir.display().to_string(),
            why,
        })?;
        for t in tasks {
            let finished = out
                .ends
                .get(&t.req.end)
                .and_then(|e| e.finished_seq)
                .is_some_and(|s| t.req.seq <= s);
            if finished {
                self.remove_task(t.req.end, t.req.seq)?;
                out.stale += 1;
            } else {
                out.tasks.push(t);
            }
        }
        out.tasks.sort_by(|a, b| {
            a.arrival
                .total_cmp(&b.arrival)
                .then(a.req.end.cmp(&b.req.end))
                .then(a.req.seq.cmp(&b.req.seq))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mlp;
    use crate::protocol::{DriftType, Frame};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("adaevo-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn req(end: usize, seq: u64) -> TaskRequest {
        TaskRequest {
            end,
            seq,
            model_version: 0,
            trigger_t: 3.0,
            drift: DriftType::Sudden,
            estimate: 0.5,
            threshold: 0.8,
            remaining_s: 100.0,
            frames: vec![Frame {
                t: 1.0,
                pixels: vec![7; 4],
            }],
        }
    }

    fn end_file(end: usize, version: u64, finished: Option<u64>) -> EndFile {
        let m = Mlp::new(&[4, 3, 2], 1);
        EndFile {
            state: EndState {
                end,
                version,
                dense: m.clone(),
                deployed: m,
                replay: vec![(vec![0.5; 4], 1)],
            },
            finished_seq: finished,
            outbox: Vec::new(),
            next_id: 3,
        }
    }

    #[test]
    fn tasks_and_ends_survive_a_reopen_and_stale_tasks_go() {
        let d = dir("reopen");
        let s = Store::open(&d, "fp").unwrap();
        for (end, seq, arrival) in [(0, 0, 5.0), (0, 1, 9.0), (1, 0, 2.0)] {
            s.put_task(&TaskFile {
                arrival,
                req: req(end, seq),
            })
            .unwrap();
        }
        // End 0's task 0 finished, but the edge died before removing its task file.
        s.put_end(&end_file(0, 1, Some(0))).unwrap();
        // A torn temporary from a crash mid-write is ignored.
        std::fs::write(d.join(".end_1.json.tmp99"), b"{\"trunc").unwrap();
        let s = Store::open(&d, "fp").unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.stale, 1);
        let keys: Vec<(usize, u64)> = l.tasks.iter().map(|t| (t.req.end, t.req.seq)).collect();
        assert_eq!(keys, vec![(1, 0), (0, 1)], "by arrival, stale one gone");
        assert_eq!(l.ends[&0].state.version, 1);
        assert!(!d.join("task_0_0.json").exists());
        assert!(!d.join(".end_1.json.tmp99").exists());
        s.remove_task(0, 1).unwrap();
        s.remove_task(0, 1).unwrap();
        assert_eq!(s.load().unwrap().tasks.len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn another_runs_directory_is_refused() {
        let d = dir("other");
        Store::open(&d, "a").unwrap();
        assert!(matches!(
            Store::open(&d, "b"),
            Err(StateError::OtherRun { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_or_a_folder_of_other_files_is_refused_and_left_as_it_was() {
        let d = dir("notstate");
        std::fs::create_dir_all(&d).unwrap();
        let file = d.join("notes.txt");
        std::fs::write(&file, b"mine").unwrap();
        // A folder holding the user's files: refused, nothing added.
        let e = Store::open(&d, "a").unwrap_err();
        assert!(matches!(e, StateError::NotState { .. }), "{e}");
        assert!(e.to_string().contains("no meta.json"), "{e}");
        assert!(!d.join("meta.json").exists());
        // A file, and a path under a file.
        assert!(matches!(
            Store::open(&file, "a"),
            Err(StateError::NotState { .. })
        ));
        assert!(matches!(
            Store::open(&file.join("sub"), "a"),
            Err(StateError::NotState { .. })
        ));
        // A meta.json that is not an edge's.
        let m = dir("notmeta");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("meta.json"), b"{}").unwrap();
        let e = Store::open(&m, "a").unwrap_err();
        assert!(e.to_string().contains("not an edge's meta.json"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"mine");
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&m);
    }
}
