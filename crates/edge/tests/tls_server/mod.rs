//! A throw-away CA, a server certificate for 127.0.0.1 signed by it, and a `nats-server` that
//! requires TLS with it. Shared by the TLS tests of `crates/edge` (`nats_tls.rs`) and
//! `crates/cli` (`sdgt_nats.rs`, which includes this file by path). Needs `openssl` and
//! `nats-server` on the PATH (`.ci/run` installs both) and fails without them.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The TLS server goes when the test does, failing or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (.ci/run installs it)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Writes the CA (`dir/ca.pem`, the file a client must trust) and the server's certificate,
/// then starts the server in `dir` (with a JetStream store under `dir/js` when `jetstream`).
/// Returns the server and its `tls://` URL.
pub fn start(dir: &Path, jetstream: bool) -> (KillOnDrop, String) {
    #[rustfmt::skip]
    openssl(dir, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=ferrolab test CA"]);
    #[rustfmt::skip]
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n")
        .expect("the test folder is writable");
    #[rustfmt::skip]
    openssl(dir, &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"]);
    let js = if jetstream {
        format!("jetstream {{ store_dir: \"{}/js\" }}\n", dir.display())
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("nats.conf"),
        format!(
            "listen: 127.0.0.1:-1\n{js}tls {{ cert_file: \"{0}/server.pem\", key_file: \"{0}/server.key\" }}\n",
            dir.display()
        ),
    )
    .expect("the test folder is writable");
    let server = KillOnDrop(
        Command::new("nats-server")
            .args(["-c", "nats.conf", "--ports_file_dir", "."])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (.ci/run installs it)"),
    );
    let url = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let f = std::fs::read_dir(dir)
                .ok()?
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().ends_with(".ports"))?;
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f.path()).ok()?).ok()?;
            v["nats"][0].as_str().map(str::to_string)
        })
        .expect("the TLS nats-server wrote its ports file");
    assert!(url.starts_with("tls://"), "{url}");
    (server, url)
}
