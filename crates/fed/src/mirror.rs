//! A fabric whose state store is mirrored into local files: every
//! [`Fabric::put_state`] is written (atomically) to a folder of this machine *before* it goes to
//! the inner fabric, and [`Fabric::get_state`] prefers that folder.
//!
//! Why: over NATS the round state lives in the server's KV bucket, so a lost connection would
//! leave the process unable to save anything, and a NATS server that lost its store (memory
//! storage, a new machine) would make `--resume` start from round 0. With the mirror the last
//! checkpoint is on local disk whenever a call fails with
//! [`FabricError::Disconnected`], and a resumed run reads it from there whatever the new NATS
//! server holds. The local copy is always at least as new as the remote one (it is written
//! first), which is why reads prefer it.

use crate::fabric::{
    ClientId, Collected, DeviceId, ExchangeKey, Fabric, FabricError, Reply, Task, TaskKind,
    Validator,
};
use crate::inproc::InProcFabric;
use crate::params::Params;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The wrapped fabric: shared, or borrowed for the length of a call (a client's `serve`).
enum Inner<'a> {
    Shared(Arc<dyn Fabric>),
    Borrowed(&'a dyn Fabric),
}

impl Inner<'_> {
    fn get(&self) -> &dyn Fabric {
        match self {
            Inner::Shared(f) => &**f,
            Inner::Borrowed(f) => *f,
        }
    }
}

/// Delegates everything to `inner` except the state store, which is mirrored under `dir`.
pub struct MirroredState<'a> {
    inner: Inner<'a>,
    local: InProcFabric,
    dir: PathBuf,
}

impl std::fmt::Debug for MirroredState<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MirroredState({}, {})",
            self.inner.get().name(),
            self.dir.display()
        )
    }
}

impl MirroredState<'static> {
    /// Mirrors `inner`'s state into files under `dir` (created on the first write).
    pub fn new(inner: Arc<dyn Fabric>, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            inner: Inner::Shared(inner),
            local: InProcFabric::with_dir(&dir),
            dir,
        }
    }
}

impl<'a> MirroredState<'a> {
    /// Like [`MirroredState::new`] over a borrowed fabric.
    pub fn borrowed(inner: &'a dyn Fabric, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            inner: Inner::Borrowed(inner),
            local: InProcFabric::with_dir(&dir),
            dir,
        }
    }

    /// The local folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Fabric for MirroredState<'_> {
    fn name(&self) -> &str {
        self.inner.get().name()
    }
    fn send_task(&self, client: ClientId, task: &Task) -> Result<(), FabricError> {
        self.inner.get().send_task(client, task)
    }
    fn send_task_owned(&self, client: ClientId, task: Task) -> Result<(), FabricError> {
        self.inner.get().send_task_owned(client, task)
    }
    fn recv_task(&self, client: ClientId, timeout: Duration) -> Result<Option<Task>, FabricError> {
        self.inner.get().recv_task(client, timeout)
    }
    fn send_reply(&self, reply: &Reply) -> Result<(), FabricError> {
        self.inner.get().send_reply(reply)
    }
    fn send_reply_owned(&self, reply: Reply) -> Result<(), FabricError> {
        self.inner.get().send_reply_owned(reply)
    }
    fn collect_replies(
        &self,
        round: u64,
        kind: TaskKind,
        expected: &[ClientId],
        deadline: Duration,
        validate: Validator<'_>,
    ) -> Result<Collected, FabricError> {
        self.inner
            .get()
            .collect_replies(round, kind, expected, deadline, validate)
    }
    fn exchange(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        self.inner.get().exchange(key, members, outgoing, timeout)
    }
    fn exchange_skipping_gone(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        self.inner
            .get()
            .exchange_skipping_gone(key, members, outgoing, timeout)
    }
    fn put_state(&self, key: &str, value: &[u8]) -> Result<(), FabricError> {
        // Local first: if the remote write then fails, the state is still saved here.
        self.local.put_state(key, value)?;
        self.inner.get().put_state(key, value)
    }
    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, FabricError> {
        match self.local.get_state(key)? {
            Some(v) => Ok(Some(v)),
            None => self.inner.get().get_state(key),
        }
    }
    fn end_run(&self) -> Result<(), FabricError> {
        self.inner.get().end_run()
    }
    fn set_owners(&self, owners: &[(DeviceId, ClientId)]) {
        self.inner.get().set_owners(owners)
    }
    fn tasks_taken(&self, clients: &[ClientId]) -> bool {
        self.inner.get().tasks_taken(clients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fabric whose state calls fail as a lost connection does.
    struct Down;
    impl Fabric for Down {
        fn name(&self) -> &str {
            "down"
        }
        fn send_task(&self, _: ClientId, _: &Task) -> Result<(), FabricError> {
            Err(FabricError::Disconnected("down".into()))
        }
        fn recv_task(&self, _: ClientId, _: Duration) -> Result<Option<Task>, FabricError> {
            Err(FabricError::Disconnected("down".into()))
        }
        fn send_reply(&self, _: &Reply) -> Result<(), FabricError> {
            Err(FabricError::Disconnected("down".into()))
        }
        fn collect_replies(
            &self,
            _: u64,
            _: TaskKind,
            _: &[ClientId],
            _: Duration,
            _: Validator<'_>,
        ) -> Result<Collected, FabricError> {
            Err(FabricError::Disconnected("down".into()))
        }
        fn exchange(
            &self,
            _: ExchangeKey,
            _: &[DeviceId],
            _: Vec<(DeviceId, Params)>,
            _: Duration,
        ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
            Err(FabricError::Disconnected("down".into()))
        }
        fn put_state(&self, _: &str, _: &[u8]) -> Result<(), FabricError> {
            Err(FabricError::Disconnected("down".into()))
        }
        fn get_state(&self, _: &str) -> Result<Option<Vec<u8>>, FabricError> {
            Err(FabricError::Disconnected("down".into()))
        }
    }

    #[test]
    fn state_survives_a_lost_connection_and_reads_prefer_the_local_copy() {
        let dir = std::env::temp_dir().join(format!("fed-mirror-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = MirroredState::new(Arc::new(Down), &dir);
        assert!(matches!(
            f.put_state("server/checkpoint", b"round 3"),
            Err(FabricError::Disconnected(_))
        ));
        // A new process over a new (empty) remote still finds it.
        let remote: Arc<dyn Fabric> = Arc::new(InProcFabric::new());
        remote.put_state("other", b"remote only").unwrap();
        let g = MirroredState::new(Arc::clone(&remote), &dir);
        assert_eq!(
            g.get_state("server/checkpoint").unwrap().as_deref(),
            Some(&b"round 3"[..])
        );
        assert_eq!(
            g.get_state("other").unwrap().as_deref(),
            Some(&b"remote only"[..])
        );
        g.put_state("server/checkpoint", b"round 6").unwrap();
        assert_eq!(
            remote.get_state("server/checkpoint").unwrap().as_deref(),
            Some(&b"round 6"[..])
        );
        assert_eq!(g.get_state("missing").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
