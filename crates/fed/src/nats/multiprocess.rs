//! Running an in-process driver as the server of a multi-process run: the driver keeps its
//! round loop, [`ServerOnly`] makes its client threads stand down at once (their work is done
//! by client processes answering over NATS), and [`ClientProcesses`] starts those processes,
//! reports a crashed one, and kills them all if the server side returns early.

use crate::fabric::{
    ClientId, Collected, DeviceId, ExchangeKey, Fabric, FabricError, Reply, Task, TaskKind,
    Validator,
};
use crate::params::Params;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

/// Delegates everything to the inner fabric except [`Fabric::recv_task`], which answers
/// `Shutdown` at once: a driver that starts in-process client threads (each `serve`-ing its
/// tasks) can then run unchanged as the server of a run whose clients are other processes.
/// A collection does not wait for the clients the second field holds (filled by a
/// [`DeathWatch`]): they are failures at once ("client process exited …"), so that after a
/// client process dies each later round no longer waits its whole deadline for it.
pub struct ServerOnly(pub Arc<dyn Fabric>, pub Dead);

impl ServerOnly {
    /// `inner` as the server, with no dead clients to skip.
    pub fn new(inner: Arc<dyn Fabric>) -> Self {
        Self(inner, Dead::default())
    }
}

impl std::fmt::Debug for ServerOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerOnly({})", self.0.name())
    }
}

impl Fabric for ServerOnly {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn send_task(&self, client: ClientId, task: &Task) -> Result<(), FabricError> {
        self.0.send_task(client, task)
    }
    fn recv_task(&self, _: ClientId, _: Duration) -> Result<Option<Task>, FabricError> {
        Ok(Some(Task {
            round: u64::MAX,
            kind: TaskKind::Shutdown,
            config: Default::default(),
            params: Params::new(),
        }))
    }
    fn send_reply(&self, reply: &Reply) -> Result<(), FabricError> {
        self.0.send_reply(reply)
    }
    fn collect_replies(
        &self,
        round: u64,
        kind: TaskKind,
        expected: &[ClientId],
        deadline: Duration,
        validate: Validator<'_>,
    ) -> Result<Collected, FabricError> {
        let dead = self.1.lock().map(|d| d.clone()).unwrap_or_default();
        if dead.is_empty() {
            return self
                .0
                .collect_replies(round, kind, expected, deadline, validate);
        }
        let alive: Vec<ClientId> = expected
            .iter()
            .copied()
            .filter(|k| !dead.contains_key(k))
            .collect();
        let mut c = self
            .0
            .collect_replies(round, kind, &alive, deadline, validate)?;
        for k in expected.iter().filter(|k| dead.contains_key(k)) {
            c.failures.push(crate::fabric::Failure {
                client: *k,
                reason: format!("client process {}", dead[k]),
            });
        }
        c.failures.sort_by_key(|f| f.client);
        Ok(c)
    }
    fn exchange(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        self.0.exchange(key, members, outgoing, timeout)
    }
    fn exchange_skipping_gone(
        &self,
        key: ExchangeKey,
        members: &[DeviceId],
        outgoing: Vec<(DeviceId, Params)>,
        timeout: Duration,
    ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
        self.0
            .exchange_skipping_gone(key, members, outgoing, timeout)
    }
    fn put_state(&self, key: &str, value: &[u8]) -> Result<(), FabricError> {
        self.0.put_state(key, value)
    }
    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, FabricError> {
        self.0.get_state(key)
    }
    fn end_run(&self) -> Result<(), FabricError> {
        self.0.end_run()
    }
}

/// Clients whose process died (id → how), shared by a [`DeathWatch`] and a [`ServerOnly`].
pub type Dead = Arc<std::sync::Mutex<std::collections::BTreeMap<ClientId, String>>>;

/// Polls the client processes every 200 ms while the server runs, recording each one that
/// exits unsuccessfully in `dead` (a clean exit only follows `Shutdown`) and saying so once.
pub struct DeathWatch {
    procs: Arc<std::sync::Mutex<ClientProcesses>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeathWatch {
    /// Starts watching `procs`.
    pub fn start(procs: ClientProcesses, dead: Dead) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let procs = Arc::new(std::sync::Mutex::new(procs));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, st) = (Arc::clone(&procs), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let exited = p.lock().map(|mut g| g.exited()).unwrap_or_default();
                if let Ok(mut d) = dead.lock() {
                    for (k, status) in exited.into_iter().filter(|(_, s)| !s.success()) {
                        if let std::collections::btree_map::Entry::Vacant(e) = d.entry(k) {
                            eprintln!(
                                "fed: client process {k} exited with {status}; the rounds go on without it"
                            );
                            e.insert(format!("exited with {status}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self {
            procs,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching and hands the processes back.
    pub fn finish(mut self) -> ClientProcesses {
        self.halt();
        self.procs
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DeathWatch {
    /// A server that unwinds still stops the watcher, so the processes it holds are dropped,
    /// and so killed, with it.
    fn drop(&mut self) {
        self.halt();
    }
}

/// Child processes, one per client; killed when dropped unless [`ClientProcesses::wait`]ed.
#[derive(Debug, Default)]
pub struct ClientProcesses {
    children: Vec<(ClientId, Child)>,
}

impl ClientProcesses {
    /// Starts `command(k)` for every `k` in `clients`.
    pub fn spawn(
        clients: &[ClientId],
        mut command: impl FnMut(ClientId) -> Command,
    ) -> std::io::Result<Self> {
        let mut out = Self::default();
        for &k in clients {
            let child = command(k).spawn()?;
            out.children.push((k, child));
        }
        Ok(out)
    }

    /// Clients whose process has already exited, with its status.
    pub fn exited(&mut self) -> Vec<(ClientId, ExitStatus)> {
        self.children
            .iter_mut()
            .filter_map(|(k, c)| c.try_wait().ok().flatten().map(|s| (*k, s)))
            .collect()
    }

    /// Waits up to `limit` for every process to exit (they do after their `Shutdown` task);
    /// kills the rest. Returns the clients that did not exit cleanly.
    pub fn wait(mut self, limit: Duration) -> Vec<(ClientId, String)> {
        let until = std::time::Instant::now() + limit;
        let mut bad = Vec::new();
        for (k, c) in self.children.iter_mut() {
            loop {
                match c.try_wait() {
                    Ok(Some(s)) if s.success() => break,
                    Ok(Some(s)) => {
                        bad.push((*k, format!("exited with {s}")));
                        break;
                    }
                    Ok(None) if std::time::Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(None) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        bad.push((*k, "still running after the run ended; killed".into()));
                        break;
                    }
                    Err(e) => {
                        bad.push((*k, e.to_string()));
                        break;
                    }
                }
            }
        }
        self.children.clear();
        bad
    }
}

impl Drop for ClientProcesses {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// After a run whose clients were started by hand (`fed server --external-clients`): waits
/// up to `grace` before the run's streams are removed, so that a client still finishing its
/// last task reads its `Shutdown` (spawned clients get up to 30 s the same way), and says so.
/// It stops waiting once every one of `clients` has taken all its tasks or is gone
/// ([`Fabric::tasks_taken`]): before, every external run ended with the whole grace (up to
/// 30 s) however quickly its clients read their shutdown.
pub fn external_grace(fabric: &dyn Fabric, clients: &[ClientId], grace: Duration) {
    eprintln!(
        "fed: the run finished; waiting up to {:.0} s for hand-started clients to read their shutdown before the run's streams are removed",
        grace.as_secs_f64()
    );
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        if fabric.tasks_taken(clients) {
            return;
        }
        std::thread::sleep(
            Duration::from_millis(200)
                .min(until.saturating_duration_since(std::time::Instant::now())),
        );
    }
}

/// Runs `server` (a driver's whole round loop) against `fabric` wrapped in [`ServerOnly`],
/// while `command(k)` processes serve the clients; returns the server's result and the clients
/// that did not exit cleanly. This is the hook `fed.runtime = nats` uses: the driver is the
/// in-process one, the clients are `ferrolab fed client --id K` processes. A [`DeathWatch`]
/// notices a client process that dies within 200 ms, and later collections stop waiting for
/// it (each round would otherwise wait its whole deadline for a reply that cannot come).
pub fn run_multiprocess<R>(
    fabric: Arc<dyn Fabric>,
    clients: &[ClientId],
    command: impl FnMut(ClientId) -> Command,
    server: impl FnOnce(Arc<dyn Fabric>) -> R,
) -> std::io::Result<(R, Vec<(ClientId, String)>)> {
    let procs = ClientProcesses::spawn(clients, command)?;
    let dead = Dead::default();
    let watch = DeathWatch::start(procs, Arc::clone(&dead));
    let out = server(Arc::new(ServerOnly(fabric, dead)));
    let bad = watch.finish().wait(Duration::from_secs(30));
    Ok((out, bad))
}

/// The text of a job file: a system's config as TOML plus the `[job]` table (every config key
/// is in a section and a job holds only scalars, so appending the table keeps it valid TOML).
pub fn job_text<C: serde::Serialize, J: serde::Serialize>(
    cfg: &C,
    job: &J,
) -> Result<String, String> {
    let c = ferrolab_core::config::to_toml(cfg).map_err(|e| e.to_string())?;
    let j = ferrolab_core::config::to_toml(job).map_err(|e| e.to_string())?;
    Ok(format!("{c}\n[job]\n{j}"))
}

/// A job file (or a plain config TOML), given as the JSON form of its table: the checked
/// config and the `[job]` table as written (its default when absent).
pub fn read_job<C, J>(table: serde_json::Value) -> Result<(C, J), String>
where
    C: serde::de::DeserializeOwned
        + ferrolab_core::config::ConfigValue
        + ferrolab_core::config::Validate,
    J: serde::de::DeserializeOwned + Default,
{
    let serde_json::Value::Object(mut table) = table else {
        return Err("not a table".into());
    };
    let job: J = match table.remove("job") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("[job]: {}", keyed_message::<J>(&v).unwrap_or(e.to_string())))?,
        None => J::default(),
    };
    let table = serde_json::Value::Object(table);
    let cfg: C = serde_json::from_value(table.clone())
        .map_err(|e| keyed_message::<C>(&table).unwrap_or(e.to_string()))?;
    let cfg = ferrolab_core::Checked::new(cfg)
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok((cfg, job))
}

/// serde_json's errors do not say which key was wrong; the same value deserialised through
/// TOML names it (`in `fed.rounds``). `None` when the value is not TOML-shaped (a null).
fn keyed_message<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Option<String> {
    let serde_json::Value::Object(_) = v else {
        return None;
    };
    let toml::Value::Table(t) = toml::Value::try_from(v).ok()? else {
        return None;
    };
    ferrolab_core::config::from_toml_table::<T>(&t).err()
}

/// `ferrolab fed client --system SYSTEM --id K --config FILE --prefix P` with the URL in the
/// environment (so a password never shows in the process list).
pub fn client_command(
    exe: &std::path::Path,
    system: &str,
    url: &str,
    job_file: &std::path::Path,
    prefix: &str,
    id: ClientId,
) -> Command {
    let mut c = Command::new(exe);
    c.args(["fed", "client", "--system", system, "--id"])
        .arg(id.to_string())
        .arg("--config")
        .arg(job_file)
        .args(["--prefix", prefix])
        .env("FERROLAB_NATS_URL", url);
    c
}

/// The configured NATS URL when it is not blank, else `$FERROLAB_NATS_URL` when that is not.
pub fn url_or_env(configured: &str) -> Option<String> {
    if !configured.trim().is_empty() {
        return Some(configured.to_string());
    }
    std::env::var("FERROLAB_NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A run prefix (`[A-Za-z0-9_-]{1,40}`) starting with `tag` (≤ 12 characters), unique to this
/// process and call.
pub fn fresh_prefix(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inproc::InProcFabric;

    #[test]
    fn server_only_stands_client_threads_down_and_passes_the_rest_through() {
        let inner: Arc<dyn Fabric> = Arc::new(InProcFabric::new());
        let f = ServerOnly::new(Arc::clone(&inner));
        let t = f.recv_task(3, Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(t.kind, TaskKind::Shutdown);
        f.put_state("k", b"v").unwrap();
        assert_eq!(inner.get_state("k").unwrap().as_deref(), Some(&b"v"[..]));
        let task = Task {
            round: 1,
            kind: TaskKind::Fit,
            config: Default::default(),
            params: Params::flat("w", vec![1.0]),
        };
        f.send_task(3, &task).unwrap();
        assert_eq!(
            inner.recv_task(3, Duration::from_secs(1)).unwrap(),
            Some(task)
        );
    }

    #[test]
    fn client_processes_report_failures_and_are_killed() {
        let procs = ClientProcesses::spawn(&[0, 1, 2], |k| {
            let mut c = Command::new("sh");
            let script = match k {
                0 => "exit 0",
                1 => "exit 3",
                _ => "exec sleep 30",
            };
            c.args(["-c", script]);
            c
        })
        .unwrap();
        let t0 = std::time::Instant::now();
        let bad = procs.wait(Duration::from_millis(500));
        assert!(t0.elapsed() < Duration::from_secs(5));
        let ids: Vec<ClientId> = bad.iter().map(|b| b.0).collect();
        assert_eq!(ids, vec![1, 2], "{bad:?}");
        assert!(bad[1].1.contains("killed"));
    }
}
