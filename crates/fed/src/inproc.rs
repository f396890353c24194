//! The embedded fabric: every party is a thread of one process, messages are moved through a
//! mutex-guarded state and a condition variable. Delivery order is deterministic where it is
//! observable: tasks are FIFO per client, collections and exchanges return sorted lists, so a
//! run's result never depends on thread scheduling. Tensors are moved where the sender gives
//! them up (tasks and replies sent with the `_owned` methods, an exchange's contributions to its
//! last taker) and cloned otherwise, never serialised: the bytes a NATS run would move are
//! counted by the algorithms, not by the fabric.

use crate::fabric::{
    ClientId, Collected, DeviceId, ExchangeKey, Fabric, FabricError, Failure, MsgId, Reply, Task,
    TaskKind, Validator,
};
use crate::params::Params;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Slot {
    members: Vec<DeviceId>,
    got: BTreeMap<DeviceId, Params>,
    /// Devices whose contributor has already taken the result; the slot is freed at the last.
    taken: usize,
}

#[derive(Default)]
struct State {
    tasks: HashMap<ClientId, VecDeque<Task>>,
    replies: VecDeque<Reply>,
    /// Ids already handed to a collection: a resend of one of them is dropped on arrival.
    delivered: HashSet<MsgId>,
    exchanges: HashMap<ExchangeKey, Slot>,
    kv: HashMap<String, Vec<u8>>,
}

/// In-process fabric; share it between threads with `Arc`.
#[derive(Default)]
pub struct InProcFabric {
    state: Mutex<State>,
    cv: Condvar,
    /// Where state values persist (one file per key, written atomically); memory only if None.
    dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for InProcFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcFabric")
    }
}

impl InProcFabric {
    /// An empty fabric.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fabric whose state store ([`Fabric::put_state`]) lives in files under `dir`, so a
    /// process killed mid-run resumes from the last value written (each write is a temporary
    /// file renamed over the old one).
    pub fn with_dir(dir: impl Into<std::path::PathBuf>) -> Self {
        InProcFabric {
            dir: Some(dir.into()),
            ..Self::default()
        }
    }

    fn key_path(&self, key: &str) -> Option<std::path::PathBuf> {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '.'
                }
            })
            .collect();
        self.dir.as_ref().map(|d| d.join(format!("{safe}.bin")))
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, FabricError> {
        // A poisoned lock means a party panicked mid-update: report it, do not propagate the panic.
        self.state
            .lock()
            .map_err(|_| FabricError::Disconnected("in-process fabric lock poisoned".into()))
    }

    fn wait<'a>(
        &self,
        g: MutexGuard<'a, State>,
        until: Instant,
    ) -> Result<(MutexGuard<'a, State>, bool), FabricError> {
        let now = Instant::now();
        if now >= until {
            return Ok((g, false));
        }
        let (g, _) = self
            .cv
            .wait_timeout(g, until - now)
            .map_err(|_| FabricError::Disconnected("in-process fabric lock poisoned".into()))?;
        Ok((g, true))
    }
}

impl Fabric for InProcFabric {
    fn name(&self) -> &str {
        "inproc"
    }

    fn send_task(&self, client: ClientId, task: &Task) -> Result<(), FabricError> {
        self.send_task_owned(client, task.clone())
    }

    fn send_task_owned(&self, client: ClientId, task: Task) -> Result<(), FabricError> {
        self.lock()?
            .tasks
            .entry(client)
            .or_default()
            .push_back(task);
        self.cv.notify_all();
        Ok(())
    }

    fn recv_task(&self, client: ClientId, timeout: Duration) -> Result<Option<Task>, FabricError> {
        let until = Instant::now() + timeout;
        let mut g = self.lock()?;
        loop {
            if let Some(t) = g.tasks.get_mut(&client).and_then(|q| q.pop_front()) {
                return Ok(Some(t));
            }
            let (g2, more) = self.wait(g, until)?;
            g = g2;
            if !more {
                return Ok(g.tasks.get_mut(&client).and_then(|q| q.pop_front()));
            }
        }
    }

    fn send_reply(&self, reply: &Reply) -> Result<(), FabricError> {
        self.send_reply_owned(reply.clone())
    }

    fn send_reply_owned(&self, reply: Reply) -> Result<(), FabricError> {
        let mut g = self.lock()?;
        if g.delivered.contains(&reply.id) || g.replies.iter().any(|r| r.id == reply.id) {
            return Ok(());
        }
        g.replies.push_back(reply);
        drop(g);
        self.cv.notify_all();
        Ok(())
    }

    fn collect_replies(
        &self,
        round: u64,
        kind: TaskKind,
        expected: &[ClientId],
        deadline: Duration,
        validate: Validator<'_>,
    ) -> Result<Collected, FabricError> {
        let until = Instant::now() + deadline;
        let want: HashSet<ClientId> = expected.iter().copied().collect();
        let mut accepted: BTreeMap<ClientId, Reply> = BTreeMap::new();
        let mut rejected: BTreeMap<ClientId, String> = BTreeMap::new();
        let mut g = self.lock()?;
        loop {
            let queue = std::mem::take(&mut g.replies);
            for r in queue {
                if r.id.round < round {
                    continue;
                }
                if r.id.round != round || r.kind != kind {
                    g.replies.push_back(r);
                    continue;
                }
                g.delivered.insert(r.id);
                let c = r.id.client;
                if !want.contains(&c) || accepted.contains_key(&c) || rejected.contains_key(&c) {
                    continue;
                }
                let verdict = match &r.error {
                    Some(e) => Err(format!("client reported: {e}")),
                    None => validate(&r).map_err(|e| format!("reply rejected: {e}")),
                };
                match verdict {
                    Ok(()) => {
                        accepted.insert(c, r);
                    }
                    Err(e) => {
                        rejected.insert(c, e);
                    }
                }
            }
            if accepted.len() + rejected.len() >= want.len() {
                break;
            }
            let (g2, more) = self.wait(g, until)?;
            g = g2;
            if !more {
                break;
            }
        }
        drop(g);
        let mut failures: Vec<Failure> = Vec::new();
        let mut ids: Vec<ClientId> = want.into_iter().collect();
        ids.sort_unstable();
        for c in ids {
            if accepted.contains_key(&c) {
                continue;
            }
            let reason = rejected
                .remove(&c)
                .unwrap_or_else(|| format!("no reply within {deadline:?}"));
            failures.push(Failure { client: c, reason });
        }
        Ok(Collected {
            replies: accepted.into_values().collect(),
            failures,
        })
    }

    fn exchange(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        let until = Instant::now() + timeout;
        let mut sorted: Vec<DeviceId> = members.to_vec();
        sorted.sort_unstable();
        let mine = outgoing.len();
        {
            let mut g = self.lock()?;
            let slot = g.exchanges.entry(key).or_insert_with(|| Slot {
                members: sorted.clone(),
                ..Slot::default()
            });
            if slot.members != sorted {
                return Err(FabricError::Protocol(format!(
                    "exchange {key:?}: member list {sorted:?} differs from {:?}",
                    slot.members
                )));
            }
            for (d, p) in outgoing {
                if sorted.binary_search(&d).is_err() {
                    return Err(FabricError::Protocol(format!(
                        "exchange {key:?}: device {d} is not a member"
                    )));
                }
                if slot.got.insert(d, p).is_some() {
                    return Err(FabricError::Protocol(format!(
                        "exchange {key:?}: device {d} contributed twice"
                    )));
                }
            }
            // Only a completed exchange lets anyone else proceed (tasks and replies do not
            // depend on it), and a caller that brought every contribution itself has nobody to
            // wake: waking all parties on every D2D step was most of a round's overhead.
            if slot.got.len() == slot.members.len() && mine < slot.members.len() {
                self.cv.notify_all();
            }
        }
        let mut g = self.lock()?;
        loop {
            let done = g
                .exchanges
                .get(&key)
                .is_some_and(|s| s.got.len() == s.members.len());
            if done {
                let slot = g
                    .exchanges
                    .get_mut(&key)
                    .ok_or_else(|| FabricError::Protocol(format!("exchange {key:?} vanished")))?;
                slot.taken += mine;
                if slot.taken >= slot.members.len() {
                    // The last taker gets the contributions themselves, not copies.
                    let slot = g.exchanges.remove(&key).unwrap_or_default();
                    return Ok(slot.got.into_iter().collect());
                }
                return Ok(slot.got.iter().map(|(d, p)| (*d, p.clone())).collect());
            }
            let (g2, more) = self.wait(g, until)?;
            g = g2;
            if !more {
                let missing: Vec<DeviceId> = g
                    .exchanges
                    .get(&key)
                    .map(|s| {
                        s.members
                            .iter()
                            .filter(|d| !s.got.contains_key(d))
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(FabricError::Timeout {
                    what: format!("exchange {key:?}: devices {missing:?}"),
                    after: timeout,
                });
            }
        }
    }

    fn put_state(&self, key: &str, value: &[u8]) -> Result<(), FabricError> {
        if let Some(path) = self.key_path(key) {
            let io =
                |e: std::io::Error| FabricError::Disconnected(format!("{}: {e}", path.display()));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            // Core's atomic writer: a unique temporary name (two savers of one key cannot
            // clash), synced before the rename.
            ferrolab_core::run::write_atomic(&path, value)
                .map_err(|e| FabricError::Disconnected(e.to_string()))?;
            return Ok(());
        }
        self.lock()?.kv.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, FabricError> {
        if let Some(path) = self.key_path(key) {
            return match std::fs::read(&path) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(FabricError::Disconnected(format!(
                    "{}: {e}",
                    path.display()
                ))),
            };
        }
        Ok(self.lock()?.kv.get(key).cloned())
    }
}
