//! Downloading, checking and installing: the part of fetch that touches the network and the
//! destination folder.
//!
//! `ureq` 3 with rustls and ring: blocking (no async runtime to build), no OpenSSL; ring also
//! supplies the SHA-256.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{FetchOptions, Plan, Recipe, Remote, convert, planetoid};
use crate::error::{DataError, Result};

pub(super) struct Fetcher {
    agent: ureq::Agent,
    opts: FetchOptions,
    /// Hosts that could not be connected to, with why: later requests fail at once.
    dead: Mutex<HashMap<String, String>>,
}

/// `scheme://host[:port]/...` → (host with port as written, host, port).
fn host_of(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.to_string(), p.parse().ok()?)
        }
        _ => (authority.to_string(), default),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Some((authority.to_string(), host, port))
}

fn proxy_configured() -> bool {
    [
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

fn is_connect_failure(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::NetworkUnreachable
                | K::HostUnreachable
                | K::AddrNotAvailable
                | K::NotConnected
        ),
        _ => false,
    }
}

fn transient_io(k: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        k,
        K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::TimedOut
            | K::Interrupted
            | K::WouldBlock
    )
}

/// The system's CA bundle (`$SSL_CERT_FILE` or the usual Linux paths), as curl and pip use it,
/// so that a machine whose TLS goes through an inspecting proxy with its own CA works; Mozilla's
/// bundled roots where there is none.
fn root_certs() -> ureq::tls::RootCerts {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
                "/etc/ssl/ca-bundle.pem",
            ]
            .iter()
            .map(PathBuf::from),
        );
    for p in candidates {
        let Ok(pem) = std::fs::read(&p) else { continue };
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            return ureq::tls::RootCerts::new_with_certs(&certs);
        }
    }
    ureq::tls::RootCerts::WebPki
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What one attempt at a download came to.
enum Attempt {
    Done {
        sha256: String,
        bytes: u64,
    },
    /// Worth another try (broken connection, timeout, 429/5xx).
    Transient(String),
    Fatal(DataError),
}

impl Fetcher {
    pub(super) fn new(opts: &FetchOptions) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_recv_response(Some(opts.read_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(root_certs())
                    .build(),
            )
            .user_agent(format!("ferrolab/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher {
            agent,
            opts: opts.clone(),
            dead: Mutex::new(HashMap::new()),
        }
    }

    fn url(&self, r: &Remote) -> String {
        match &self.opts.base_url {
            Some(b) => format!("{}/{}", b.trim_end_matches('/'), r.mirror_path),
            None => r.url.clone(),
        }
    }

    fn mark_dead(&self, host: &str, why: String) {
        if let Ok(mut d) = self.dead.lock() {
            d.entry(host.to_string()).or_insert(why);
        }
    }

    fn dead_reason(&self, host: &str) -> Option<String> {
        self.dead.lock().ok().and_then(|d| d.get(host).cloned())
    }

    /// Tries one TCP connection to every host the plans need, all at once, and remembers the
    /// ones that fail; returns within about `connect_timeout` whatever DNS does. Skipped when
    /// a proxy is configured, since then the proxy, not the host, is what gets connected to.
    pub(super) fn probe(&self, plans: &[Plan]) {
        if proxy_configured() {
            return;
        }
        let mut hosts: Vec<(String, String, u16)> = plans
            .iter()
            .flat_map(|p| p.remotes())
            .filter_map(|r| host_of(&self.url(r)))
            .collect();
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            return;
        }
        let limit = self.opts.connect_timeout;
        let (tx, rx) = mpsc::channel();
        for (key, host, port) in hosts.iter().cloned() {
            let tx = tx.clone();
            // Detached on purpose: a resolver stuck past the deadline must not hold us up.
            std::thread::spawn(move || {
                let r = (|| -> std::result::Result<(), String> {
                    let addrs: Vec<_> = (host.as_str(), port)
                        .to_socket_addrs()
                        .map_err(|e| format!("cannot resolve {host}: {e}"))?
                        .collect();
                    let mut last = format!("no address for {host}");
                    for a in addrs {
                        match TcpStream::connect_timeout(&a, limit) {
                            Ok(_) => return Ok(()),
                            Err(e) => last = format!("connect to {a}: {e}"),
                        }
                    }
                    Err(last)
                })();
                let _ = tx.send((key, r));
            });
        }
        drop(tx);
        let deadline = Instant::now() + limit + Duration::from_millis(500);
        let mut answered = Vec::new();
        while answered.len() < hosts.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((key, r)) => {
                    if let Err(why) = r {
                        self.mark_dead(&key, why);
                    }
                    answered.push(key);
                }
                Err(_) => break,
            }
        }
        for (key, _, _) in &hosts {
            if !answered.contains(key) {
                self.mark_dead(key, format!("no answer within {} s", limit.as_secs()));
            }
        }
    }

    fn bar(&self, len: u64, files: bool, name: &str) -> ProgressBar {
        if !self.opts.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let tmpl = if files {
            "{prefix:>14} [{bar:30}] {pos}/{len} files {elapsed}"
        } else {
            "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(tmpl) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_prefix(name.to_string());
        pb
    }

    /// Downloads `r` into `dest` and checks its SHA-256; on any failure `dest` is removed.
    fn download(
        &self,
        dataset: &str,
        r: &Remote,
        dest: &Path,
        bar: Option<&ProgressBar>,
    ) -> Result<()> {
        let res = self.download_inner(dataset, r, dest, bar);
        if res.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        res
    }

    fn download_inner(
        &self,
        dataset: &str,
        r: &Remote,
        dest: &Path,
        bar: Option<&ProgressBar>,
    ) -> Result<()> {
        let url = self.url(r);
        let key = host_of(&url).map_or_else(|| url.clone(), |(k, _, _)| k);
        let dl_err = |msg: String| DataError::Download {
            name: dataset.to_string(),
            url: url.clone(),
            msg,
        };
        let mut wait = self.opts.backoff;
        let mut last = String::new();
        for attempt in 0..=self.opts.retries {
            if let Some(why) = self.dead_reason(&key) {
                return Err(DataError::Offline {
                    name: dataset.to_string(),
                    host: key,
                    msg: why,
                });
            }
            if attempt > 0 {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
            match self.attempt(&url, dest, bar) {
                Attempt::Done { sha256, bytes } => {
                    if sha256 == r.sha256 {
                        return Ok(());
                    }
                    return Err(DataError::Checksum {
                        name: dataset.to_string(),
                        url,
                        expected: r.sha256.clone(),
                        actual: sha256,
                        bytes,
                    });
                }
                Attempt::Transient(msg) => last = msg,
                Attempt::Fatal(DataError::Offline { msg, .. }) => {
                    self.mark_dead(&key, msg.clone());
                    return Err(DataError::Offline {
                        name: dataset.to_string(),
                        host: key,
                        msg,
                    });
                }
                Attempt::Fatal(DataError::Download { msg, .. }) => return Err(dl_err(msg)),
                Attempt::Fatal(e) => return Err(e),
            }
        }
        Err(dl_err(format!(
            "{last} (gave up after {} attempts)",
            self.opts.retries + 1
        )))
    }

    fn attempt(&self, url: &str, dest: &Path, bar: Option<&ProgressBar>) -> Attempt {
        let fatal = |msg: String| {
            Attempt::Fatal(DataError::Download {
                name: String::new(),
                url: String::new(),
                msg,
            })
        };
        let resp = match self.agent.get(url).call() {
            Ok(r) => r,
            Err(e) if is_connect_failure(&e) => {
                return Attempt::Fatal(DataError::Offline {
                    name: String::new(),
                    host: String::new(),
                    msg: e.to_string(),
                });
            }
            // A certificate or other TLS failure would fail the same way again: not retried.
            Err(ureq::Error::Io(e)) if !transient_io(e.kind()) => return fatal(e.to_string()),
            Err(e @ (ureq::Error::Timeout(_) | ureq::Error::Io(_) | ureq::Error::Protocol(_))) => {
                return Attempt::Transient(e.to_string());
            }
            Err(e) => return fatal(e.to_string()),
        };
        let status = resp.status().as_u16();
        if status == 429 || status >= 500 {
            return Attempt::Transient(format!("HTTP {status}"));
        }
        if status != 200 {
            return fatal(format!("HTTP {status}"));
        }
        let total = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(b), Some(t)) = (bar, total)
            && b.length() == Some(0)
        {
            b.set_length(t);
        }
        let mut file = match std::fs::File::create(dest) {
            Ok(f) => f,
            Err(e) => return Attempt::Fatal(DataError::io(dest, e)),
        };
        let mut reader = resp.into_body().into_reader();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Attempt::Transient(format!(
                        "connection broke after {bytes} bytes: {e}"
                    ));
                }
            };
            ctx.update(&buf[..n]);
            if let Err(e) = file.write_all(&buf[..n]) {
                return Attempt::Fatal(DataError::io(dest, e));
            }
            bytes += n as u64;
            if let (Some(b), false) = (bar, total.is_none()) {
                b.inc(n as u64);
            }
        }
        if let Some(t) = total
            && bytes != t
        {
            return Attempt::Transient(format!("received {bytes} of {t} bytes"));
        }
        if let Err(e) = file.sync_all() {
            return Attempt::Fatal(DataError::io(dest, e));
        }
        Attempt::Done {
            sha256: hex(ctx.finish().as_ref()),
            bytes,
        }
    }

    /// Downloads, converts and installs one plan into `data_dir`.
    pub(super) fn run(&self, plan: &Plan, data_dir: &Path) -> Result<PathBuf> {
        let name = plan.dataset.name;
        std::fs::create_dir_all(data_dir).map_err(|e| DataError::io(data_dir, e))?;
        let work = Work::new(data_dir)?;
        let out = work.0.join("out");
        let dl = work.0.join("dl");
        for d in [&out, &dl] {
            std::fs::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
        }
        let out_path = |rel: &str| -> Result<PathBuf> {
            let p = out.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
            }
            Ok(p)
        };
        let single = |r: &Remote, file: &str| -> Result<PathBuf> {
            let bar = self.bar(0, false, name);
            let p = dl.join(file);
            let res = self.download(name, r, &p, Some(&bar));
            bar.finish_and_clear();
            res.map(|()| p)
        };
        let mut files: Vec<String> = Vec::new();
        match &plan.recipe {
            Recipe::Copy(list) => {
                let bar = self.bar(list.len() as u64, true, name);
                for (i, (r, dest)) in list.iter().enumerate() {
                    let p = dl.join(i.to_string());
                    self.download(name, r, &p, None)?;
                    let o = out_path(dest)?;
                    std::fs::rename(&p, &o).map_err(|e| DataError::io(&o, e))?;
                    files.push(dest.clone());
                    bar.inc(1);
                }
                bar.finish_and_clear();
            }
            Recipe::ZipMember {
                archive,
                member,
                dest,
            } => {
                let z = single(archive, "archive.zip")?;
                let bytes = convert::zip_member(&z, member)?;
                let o = out_path(dest)?;
                std::fs::write(&o, bytes).map_err(|e| DataError::io(&o, e))?;
                files.push(dest.clone());
            }
            Recipe::Planetoid {
                name: set,
                files: remotes,
                dest,
            } => {
                let bar = self.bar(remotes.len() as u64, true, name);
                for r in remotes {
                    let file = r.mirror_path.rsplit('/').next().unwrap_or(&r.mirror_path);
                    self.download(name, r, &dl.join(file), None)?;
                    bar.inc(1);
                }
                bar.finish_and_clear();
                planetoid::convert_planetoid(&dl, set, &out_path(dest)?)?;
                files.push(dest.clone());
            }
            Recipe::RecboleMovieLens { wheel, dest } => {
                let z = single(wheel, "recbole.whl")?;
                let m = |ext: &str| {
                    convert::zip_member(
                        &z,
                        &format!("recbole/dataset_example/ml-100k/ml-100k.{ext}"),
                    )
                };
                let (i, u, it) = (m("inter")?, m("user")?, m("item")?);
                convert::recbole_to_ml100k(&i, &u, &it, &out_path(dest)?)?;
                files.extend(
                    [
                        "u.data",
                        "u.user",
                        "u.item",
                        "u.genre",
                        "u.occupation",
                        "u.info",
                    ]
                    .iter()
                    .map(|f| format!("{dest}/{f}")),
                );
            }
            Recipe::AcdcH5 {
                files: remotes,
                dest,
            } => {
                files = self.acdc(name, remotes, dest, &dl, &out)?;
            }
        }
        install(&out, data_dir, plan.dataset.rel_path, &files)?;
        Ok(data_dir.join(plan.dataset.rel_path))
    }

    /// ACDC's many small files: downloaded and converted by a few threads, each file deleted
    /// once converted, so the working space stays small.
    fn acdc(
        &self,
        name: &str,
        remotes: &[Remote],
        dest: &str,
        dl: &Path,
        out: &Path,
    ) -> Result<Vec<String>> {
        let mut jobs = Vec::with_capacity(remotes.len());
        for r in remotes {
            let file = r.mirror_path.rsplit('/').next().unwrap_or(&r.mirror_path);
            let split = if r.mirror_path.contains("ACDC_training_volumes/") {
                "val"
            } else {
                "train"
            };
            let stem = file.strip_suffix(".h5").unwrap_or(file);
            jobs.push((r, file.to_string(), format!("{dest}/{split}/{stem}.npz")));
        }
        for split in ["train", "val"] {
            let d = out.join(dest).join(split);
            std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, e))?;
        }
        let bar = self.bar(jobs.len() as u64, true, name);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let first_err: Mutex<Option<DataError>> = Mutex::new(None);
        let threads = self.opts.threads.clamp(1, 16).min(jobs.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((r, file, rel)) = jobs.get(i) else {
                            break;
                        };
                        let p = dl.join(file);
                        let res = self
                            .download(name, r, &p, None)
                            .and_then(|()| convert::convert_acdc_h5(&p, &out.join(rel)));
                        let _ = std::fs::remove_file(&p);
                        match res {
                            Ok(()) => bar.inc(1),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                if let Ok(mut f) = first_err.lock()
                                    && f.is_none()
                                {
                                    *f = Some(e);
                                }
                            }
                        }
                    }
                });
            }
        });
        bar.finish_and_clear();
        if let Some(e) = first_err.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(jobs.into_iter().map(|(_, _, rel)| rel).collect())
    }
}

/// The private working folder of one run, inside the destination so that installing is a
/// rename on the same file system; removed with everything in it when dropped.
struct Work(PathBuf);

impl Work {
    fn new(data_dir: &Path) -> Result<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = data_dir.join(format!(".ferrolab-fetch-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| DataError::io(&p, e))?;
        Ok(Work(p))
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Moves the finished dataset from `out` into `data_dir`: a folder dataset that is not there
/// yet in one rename; otherwise file by file in `files` order (the file that marks the dataset
/// as present comes last).
fn install(out: &Path, data_dir: &Path, rel_path: &str, files: &[String]) -> Result<()> {
    let src = out.join(rel_path);
    let dst = data_dir.join(rel_path);
    let parent_of = |p: &Path| -> Result<()> {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        Ok(())
    };
    if src.is_dir() && !dst.exists() {
        parent_of(&dst)?;
        return std::fs::rename(&src, &dst).map_err(|e| DataError::io(&dst, e));
    }
    for f in files {
        let (s, d) = (out.join(f), data_dir.join(f));
        parent_of(&d)?;
        std::fs::rename(&s, &d).map_err(|e| DataError::io(&d, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_parsed_with_default_ports() {
        assert_eq!(
            host_of("https://raw.githubusercontent.com/a/b"),
            Some((
                "raw.githubusercontent.com".into(),
                "raw.githubusercontent.com".into(),
                443
            ))
        );
        assert_eq!(
            host_of("http://127.0.0.1:8080/x"),
            Some(("127.0.0.1:8080".into(), "127.0.0.1".into(), 8080))
        );
        assert_eq!(host_of("nonsense"), None);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
