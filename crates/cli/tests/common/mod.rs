//! Helpers shared by the binary's integration tests: run `ferrolab`, fresh temp folders, the
//! systems `--help` lists and a tiny Cluster-GCN configuration.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses some helpers; a panic is the report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `ferrolab ARGS` in the test's working directory.
pub fn ferrolab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// `ferrolab ARGS` run in `cwd`.
pub fn ferrolab_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs")
}

/// `ferrolab ARGS` as on a fresh machine: working directory `root/cwd` (so `../shared/data`
/// is `root/shared/data`, which does not exist), no `$FERROLAB_DATA`, and empty
/// `$XDG_DATA_HOME` and `$HOME`.
pub fn ferrolab_fresh(root: &Path, args: &[&str]) -> Output {
    let (cwd, xdg, home) = (root.join("cwd"), root.join("xdg"), root.join("home"));
    for d in [&cwd, &xdg, &home] {
        std::fs::create_dir_all(d).unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(args)
        .current_dir(&cwd)
        .env_remove("FERROLAB_DATA")
        .env("XDG_DATA_HOME", &xdg)
        .env("HOME", &home)
        .output()
        .expect("binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a usage error: exit status 2 and an `error:` line on stderr; returns stderr.
#[track_caller]
pub fn assert_usage_error(o: &Output, what: &str) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one `error:` line expected: {e}");
    e
}

/// A fresh empty folder for the test `tag` (unique per process), removed when the test
/// passes. A failing test keeps it (the drop runs while panicking), so what the run wrote can
/// be read; the next run of the same test starts from an empty one anyway.
pub fn tmp(tag: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("ferrolab-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

/// See [`tmp`]; derefs to the folder's path.
pub struct TmpDir(PathBuf);

impl TmpDir {
    /// The folder, never removed: for fixtures shared by the whole test process (a static
    /// outlives every test, so nothing could tell when to remove it).
    pub fn keep(self) -> PathBuf {
        let d = self.0.clone();
        std::mem::forget(self);
        d
    }
}

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `<out>.incomplete`.
pub fn incomplete(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

/// The file names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The systems `ferrolab --help` lists under Commands (not `data`, `reproduce`, `eval`, `fed`,
/// `hcnn` (HyPHEN's client/server tools), `help`).
pub fn systems() -> Vec<String> {
    let o = ferrolab(&["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let mut in_commands = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if !in_commands {
            continue;
        }
        if !line.starts_with("  ") {
            break;
        }
        let name = line.split_whitespace().next().unwrap_or("");
        if !name.is_empty() && !["data", "reproduce", "eval", "fed", "hcnn", "help"].contains(&name)
        {
            out.push(name.to_string());
        }
    }
    assert!(
        out.len() >= 4,
        "expected at least secnn, cluster-gcn, apg, ckks in --help: {text}"
    );
    out
}

/// Settings of a Cluster-GCN run on a 300-node generated graph that takes well under a second.
pub const TINY_CLUSTER_GCN: [&str; 16] = [
    "--set",
    "data.synthetic.nodes=300",
    "--set",
    "data.synthetic.features=8",
    "--set",
    "train.epochs=2",
    "--set",
    "train.seeds=1",
    "--set",
    "cluster.parts=4",
    "--set",
    "data.train_per_class=5",
    "--set",
    "data.val_per_class=5",
    "--set",
    "cluster.cache_dir=none",
];

/// `cluster-gcn <tiny settings> <extra>...`.
pub fn tiny_cluster_gcn<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["cluster-gcn"];
    v.extend(TINY_CLUSTER_GCN);
    v.extend_from_slice(extra);
    v.extend(["--threads", "1"]);
    v
}

/// `out/report.json`, or `Null` when it is missing or not JSON (the caller's asserts then say
/// which key was not there).
pub fn report(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("report.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Fails (never skips) a test that needs a NATS server when `$FERROLAB_NATS_URL` is unset:
/// `.ci/run` starts one and exports it.
pub fn require_nats_url() {
    assert!(
        std::env::var("FERROLAB_NATS_URL").is_ok_and(|u| !u.is_empty()),
        "FERROLAB_NATS_URL is not set: start `nats-server -js` and export its URL (.ci/run does)"
    );
}
