//! `ferrolab fed server|client`: one process per party of a federated run over NATS.
//!
//! Everything a user can get wrong is checked before any work, each as one line with exit
//! code 2: no URL (`--nats` or `$FERROLAB_NATS_URL`), a malformed URL, a server that refuses
//! or does not answer (3 s connect limit), a wrong password, a server without JetStream, an
//! unreadable or non-TOML config file, an unknown system. The transport is
//! `ferrolab_fed::nats` (see `crates/fed/NATS.md`).

use crate::common::UsageError;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// `fed server ...` / `fed client ...`.
#[derive(Args, Debug)]
pub struct FedArgs {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// The server of a federated run: sends tasks, collects and aggregates replies,
    /// checkpoints rounds in the NATS key-value store.
    Server(ServerArgs),
    /// One client process: answers the server's tasks for its devices.
    Client(ClientArgs),
}

/// Where the run lives.
#[derive(Args, Debug)]
struct Common {
    /// Experiment configuration (the system's TOML, as for `ferrolab <system> --config`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// NATS server URL, `nats://[user:password@]host:port` (default: $FERROLAB_NATS_URL).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Run namespace shared by the server and its clients (streams and buckets are named after it).
    #[arg(long, default_value = "ferrolab")]
    prefix: String,
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Which federated system: `sdgt` or `fedgraph`.
    #[arg(long, value_parser = ["sdgt", "fedgraph"])]
    system: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// This client's id.
    #[arg(long)]
    id: u32,
    /// Which federated system (default: `sdgt`).
    #[arg(long, default_value = "sdgt", value_parser = ["sdgt", "fedgraph"])]
    system: String,
    #[command(flatten)]
    common: Common,
}

/// The URL from the flag, else from the environment; none is a usage error.
fn nats_url(flag: Option<&str>) -> Result<String> {
    if let Some(u) = flag.filter(|u| !u.trim().is_empty()) {
        return Ok(u.to_string());
    }
    match std::env::var("FERROLAB_NATS_URL") {
        Ok(u) if !u.trim().is_empty() => Ok(u),
        _ => Err(
            UsageError("no NATS server: pass --nats URL or set FERROLAB_NATS_URL".into()).into(),
        ),
    }
}

fn read_config(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("config {}: {e}", path.display())))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| UsageError(format!("config {}: {}", path.display(), e.message())))?;
    Ok(table)
}

#[cfg(feature = "nats")]
fn connect(c: &Common, party: ferrolab_fed::nats::Party) -> Result<ferrolab_fed::nats::NatsFabric> {
    use ferrolab_fed::nats::{NatsFabric, NatsOptions};
    let url = nats_url(c.nats.as_deref())?;
    NatsFabric::connect(NatsOptions::new(&url, &c.prefix, party))
        .map_err(|e| UsageError(e.to_string()).into())
}

/// Runs one party.
#[cfg(feature = "nats")]
pub fn run(a: &FedArgs) -> Result<()> {
    use ferrolab_fed::nats::Party;
    let (system, common, party) = match &a.role {
        Role::Server(s) => (s.system.as_str(), &s.common, Party::Server),
        Role::Client(c) => (c.system.as_str(), &c.common, Party::Client(c.id)),
    };
    let _config = read_config(&common.config)?;
    let fabric = connect(common, party)?;
    eprintln!(
        "fed: connected to NATS as {} (run prefix {})",
        party.tag(),
        fabric.options().prefix
    );
    // The systems' round loops and clients live in ferrolab-fed; neither exposes its
    // multi-process entry yet (see crates/fed/NATS.md, "Multi-process runs").
    Err(UsageError(format!(
        "fed {}: the {system} system has no multi-process entry in this build; run `ferrolab {system}` (in-process)",
        match party {
            Party::Server => "server",
            Party::Client(_) => "client",
        }
    ))
    .into())
}

/// Without the `nats` feature there is no transport to run a party over.
#[cfg(not(feature = "nats"))]
pub fn run(a: &FedArgs) -> Result<()> {
    let common = match &a.role {
        Role::Server(s) => &s.common,
        Role::Client(c) => &c.common,
    };
    read_config(&common.config)?;
    nats_url(common.nats.as_deref())?;
    Err(UsageError(
        "this ferrolab was built without the `nats` feature; rebuild with --features nats".into(),
    )
    .into())
}
