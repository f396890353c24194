//! A `nats-server` configuration with one user per party and per-user subject permissions, so
//! that a client can publish replies, exchange contributions and tensor objects only under its
//! own name. The fault tests start a server from it; `NATS.md` shows it for deployments.
//!
//! What a client `k` may publish: its reply subjects `fl.P.reply.*.*.k`, its heartbeat
//! `fl.P.alive.k`, its exchange subjects
//! `fl.P.x.*.*.*.ck.*`, its own object bucket `$O.fl_P_ck.>`, acknowledgements of its own task
//! consumer, JetStream flow-control answers and the JetStream API minus the calls that delete or
//! reconfigure the run's streams. It may subscribe only to its inboxes. The server user may do
//! anything.

use crate::fabric::ClientId;
use std::fmt::Write as _;
use std::path::Path;

/// One user of the generated configuration.
#[derive(Debug, Clone)]
pub struct User {
    /// Which party (`None` for the server).
    pub client: Option<ClientId>,
    /// Its password (plain text in the file; use a secrets manager and bcrypt in production).
    pub password: String,
}

/// User name of a party: `s` for the server, `c<k>` for client `k` (the bucket suffix).
pub fn user_name(client: Option<ClientId>) -> String {
    match client {
        None => "s".to_string(),
        Some(k) => format!("c{k}"),
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", q.join(", "))
}

/// Subjects client `k` of run `prefix` may publish to.
pub fn client_publish_allow(prefix: &str, k: ClientId) -> Vec<String> {
    vec![
        format!("fl.{prefix}.reply.*.*.{k}"),
        format!("fl.{prefix}.alive.{k}"),
        format!("fl.{prefix}.x.*.*.*.c{k}.*"),
        format!("$O.fl_{prefix}_c{k}.>"),
        format!("$JS.ACK.FL_{prefix}_TASKS.task_{k}.>"),
        "$JS.FC.>".to_string(),
        "$JS.API.>".to_string(),
    ]
}

/// JetStream API calls a client may not make even though `$JS.API.>` is allowed.
pub fn client_publish_deny(prefix: &str) -> Vec<String> {
    let mut v = vec![
        "$JS.API.STREAM.DELETE.>".to_string(),
        "$JS.API.STREAM.UPDATE.>".to_string(),
        "$JS.API.STREAM.MSG.DELETE.>".to_string(),
    ];
    for s in ["TASKS", "REPLIES", "X"] {
        v.push(format!("$JS.API.STREAM.PURGE.FL_{prefix}_{s}"));
    }
    v.push(format!("$JS.API.STREAM.PURGE.KV_fl_{prefix}_state"));
    v.push(format!("$JS.API.CONSUMER.DELETE.FL_{prefix}_TASKS.>"));
    v
}

/// A complete `nats-server -c` configuration: loopback on `port` (`-1` for any free port),
/// JetStream storing under `store_dir`, monitoring on `http_port` (`None` for off), the
/// server user `s` with every right and one restricted user per client.
pub fn server_config(
    prefix: &str,
    port: i32,
    http_port: Option<i32>,
    store_dir: &Path,
    users: &[User],
) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "listen: \"127.0.0.1:{port}\"");
    if let Some(h) = http_port {
        let _ = writeln!(c, "http: \"127.0.0.1:{h}\"");
    }
    let _ = writeln!(
        c,
        "jetstream {{ store_dir: {} }}",
        quote(&store_dir.display().to_string())
    );
    let _ = writeln!(c, "authorization {{\n  users: [");
    for u in users {
        let name = user_name(u.client);
        match u.client {
            None => {
                let _ = writeln!(
                    c,
                    "    {{ user: {}, password: {}, permissions: {{ publish: \">\", subscribe: \">\" }} }}",
                    quote(&name),
                    quote(&u.password)
                );
            }
            Some(k) => {
                let _ = writeln!(
                    c,
                    "    {{ user: {}, password: {}, permissions: {{\n      publish: {{ allow: {}, deny: {} }},\n      subscribe: {{ allow: {} }}\n    }} }}",
                    quote(&name),
                    quote(&u.password),
                    list(&client_publish_allow(prefix, k)),
                    list(&client_publish_deny(prefix)),
                    list(&["_INBOX.>".to_string()])
                );
            }
        }
    }
    let _ = writeln!(c, "  ]\n}}");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_each_client_subjects() {
        let users = vec![
            User {
                client: None,
                password: "p0".into(),
            },
            User {
                client: Some(3),
                password: "p\"3".into(),
            },
        ];
        let c = server_config("run1", -1, None, Path::new("/tmp/x"), &users);
        assert!(c.contains("fl.run1.reply.*.*.3"), "{c}");
        assert!(c.contains("$O.fl_run1_c3.>"), "{c}");
        assert!(c.contains("user: \"c3\", password: \"p\\\"3\""), "{c}");
        assert!(!c.contains("reply.*.*.0"), "{c}");
        assert!(c.contains("$JS.API.STREAM.PURGE.FL_run1_REPLIES"), "{c}");
    }
}
