//! `ferrolab fed server|client`: one process per party of a federated run over NATS.
//!
//! Everything a user can get wrong is checked before any work, each as one line with exit
//! code 2: no URL (`--nats` or `$FERROLAB_NATS_URL`), a malformed URL, a server that refuses
//! or does not answer (3 s connect limit), a wrong password, a server without JetStream, an
//! unreadable or non-TOML config file, an unknown system. The transport is
//! `ferrolab_fed::nats` (see `crates/fed/NATS.md`). `--system sdgt` runs one SD-GT run (the
//! config file's `[job]` table, or the first split, algorithm and step size): the server
//! starts one `fed client --id K` process per client (none with `--external-clients`: the
//! operator starts them, on any machine) and prints the run's summary as JSON.
//! `--system fedgraph` does the same for one federated run of `ferrolab fedgraph`'s node table
//! (FedAvg, FedProx, FedOpt or FedSage+ with its generator stage; the job names the grid cell
//! and seed), or, for a job of
//! `task.mode = "hpo"`, one seed's federated hyper-parameter search, or, for `task.mode =
//! "privacy"`, one seed of the privacy study (its clients clip and noise their own updates), or,
//! on `data.dataset = "graph-families"`, one GCFL+, plain GCFL or FedAvg run of the
//! graph-classification table (each client process keeps its own graphs and unshared layers).

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
    /// The server of a federated run: starts its clients itself (one `fed client --id K`
    /// process per client, same --config and --prefix, on this machine) unless
    /// --external-clients, sends tasks, collects and aggregates replies, checkpoints rounds in
    /// the NATS key-value store.
    Server(ServerArgs),
    /// One client process, answering the server's tasks for its devices: what `fed server`
    /// starts for each of its clients, or what you start yourself, on any machine, for a
    /// `fed server --external-clients` (same --config file and --prefix).
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
    /// PEM file of the CA that signed the NATS server's certificate; TLS is then required
    /// (default: $FERROLAB_NATS_CA). A server passes it on to the clients it starts.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM certificate this party presents to a server that verifies clients (with --tls-key;
    /// default: $FERROLAB_NATS_CERT).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (default: $FERROLAB_NATS_KEY).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Server: refuse a configuration whose estimated peak memory exceeds SIZE (8G, 8GiB, 512M
    /// or bytes; default 80% of the machine's or cgroup's memory), checked before any data is
    /// loaded. The estimate is the whole run's, as `ferrolab sdgt|fedgraph` makes it (a server
    /// that starts its clients runs them all here); a client does not check it.
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
}

impl Common {
    /// `command` with this party's TLS files in its environment, where the spawned party's
    /// `NatsOptions` read them.
    #[cfg(feature = "nats")]
    fn with_tls(&self, mut command: std::process::Command) -> std::process::Command {
        if let Some(ca) = &self.tls_ca {
            command.env("FERROLAB_NATS_CA", ca);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            command
                .env("FERROLAB_NATS_CERT", cert)
                .env("FERROLAB_NATS_KEY", key);
        }
        command
    }
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Which federated system: `sdgt` or `fedgraph`.
    #[arg(long, value_parser = ["sdgt", "fedgraph"])]
    system: String,
    /// Also write the whole run (history, final parameters) as JSON here (a new file).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// How `ferrolab sdgt --set fed.runtime=nats` gets the run back from this process: the run,
    /// or the round at which it diverged, as JSON (not meant to be given by hand).
    #[arg(long, value_name = "FILE", hide = true)]
    outcome: Option<PathBuf>,
    /// Start no client processes: you start `ferrolab fed client --system S --id K --config
    /// FILE --prefix P` for every client it names (ids 0 to N-1), on any machine that reaches
    /// the NATS server, each with its own --nats URL and credentials. Tasks wait in each
    /// client's queue until it connects; a client missing at a round's deadline
    /// (`fed.deadline_seconds` / `fed.reply_seconds`) loses that round's reply.
    #[arg(long)]
    external_clients: bool,
    /// A client whose heartbeats (one a second) stop for this many seconds is gone: rounds and
    /// D2D exchanges stop waiting for it until it beats again (at least 3; default 15, longer
    /// than the 10 s in which a dropped connection reconnects). Raise it on a network that
    /// stalls for longer; lower it to give up on a killed client sooner.
    #[arg(long, value_name = "SECONDS", value_parser = parse_silence)]
    silence: Option<f64>,
    #[command(flatten)]
    common: Common,
}

fn parse_silence(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (3.0..=86_400.0).contains(&v) => Ok(v),
        Ok(_) => Err("must be between 3 and 86400 seconds".into()),
        Err(e) => Err(e.to_string()),
    }
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
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        UsageError(format!(
            "config {}: {}",
            path.display(),
            ferrolab_core::config::one_line(&e)
        ))
    })?;
    Ok(table)
}

#[cfg(feature = "nats")]
fn connect(
    a: &FedArgs,
    party: ferrolab_fed::nats::Party,
) -> Result<ferrolab_fed::nats::NatsFabric> {
    use ferrolab_fed::nats::{NatsFabric, NatsOptions};
    let c = match &a.role {
        Role::Server(s) => &s.common,
        Role::Client(c) => &c.common,
    };
    let url = nats_url(c.nats.as_deref())?;
    let mut opts = NatsOptions::new(&url, &c.prefix, party);
    if let Role::Server(ServerArgs {
        silence: Some(s), ..
    }) = &a.role
    {
        opts.silence = std::time::Duration::from_secs_f64(*s);
    }
    if let Some(ca) = &c.tls_ca {
        opts.tls_ca = Some(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) {
        opts.tls_client = Some((cert.clone(), key.clone()));
    }
    NatsFabric::connect(opts).map_err(|e| UsageError(e.to_string()).into())
}

/// Runs one party.
#[cfg(feature = "nats")]
pub fn run(a: &FedArgs) -> Result<()> {
    use ferrolab_fed::nats::Party;
    let (system, common, party) = match &a.role {
        Role::Server(s) => (s.system.as_str(), &s.common, Party::Server),
        Role::Client(c) => (c.system.as_str(), &c.common, Party::Client(c.id)),
    };
    if let Role::Server(ServerArgs { out: Some(p), .. }) = &a.role {
        // Checked before the run, which may be long, rather than losing its result at the end.
        ferrolab_core::run::check_out_file(p).map_err(|e| UsageError(e.to_string()))?;
    }
    let config = read_config(&common.config)?;
    if matches!(a.role, Role::Server(_)) && !config.contains_key("job") {
        // A whole experiment's config names a grid; a server runs one job of it.
        let search = config
            .get("task")
            .and_then(|t| t.get("mode"))
            .and_then(toml::Value::as_str)
            == Some("hpo");
        eprintln!(
            "fed: {} has no [job] table: this server runs one job, {} at seed index 0 (the whole {} over NATS: `ferrolab {system}{} --set fed.runtime=nats`)",
            common.config.display(),
            if search {
                "the search"
            } else if system == "fedgraph" {
                "the first learning rate and local-step count of fed.algo"
            } else {
                "the first split, algorithm and step size"
            },
            if search { "search" } else { "grid" },
            if search { " hpo" } else { "" }
        );
    }
    if system == "fedgraph" {
        return fedgraph(a, common, party, config);
    }
    sdgt(a, common, party, config)
}

/// `fed server|client --system fedgraph`: one federated run of the node or graph-families table (the file's
/// `[job]` table, else `fed.algo` with the first learning rate and local-step count at seed
/// index 0) with the clients as processes.
#[cfg(feature = "nats")]
fn fedgraph(
    a: &FedArgs,
    common: &Common,
    party: ferrolab_fed::nats::Party,
    config: toml::Table,
) -> Result<()> {
    use ferrolab_fed::fedgraph::multiproc;
    use ferrolab_fed::nats::Party;
    use std::sync::Arc;
    let at = |e: String| UsageError(format!("config {}: {e}", common.config.display()));
    let json = serde_json::to_value(&config).map_err(|e| at(e.to_string()))?;
    let (cfg, job) = multiproc::parse_job(json).map_err(at)?;
    guard(
        a,
        ferrolab_core::System::memory_estimate(&ferrolab_fed::fedgraph::FedGraphSystem, &cfg, None),
    )?;
    if cfg.data.dataset == "graph-families" {
        return fedgraph_families(a, common, party, &cfg, &job);
    }
    let unit = multiproc::build(&cfg, &job).map_err(fedgraph_err)?;
    let fabric = connect(a, party)?;
    if cfg.task.mode == "hpo" {
        eprintln!(
            "fed: connected to NATS as {} (run prefix {}): fedgraph hpo, seed index {} (each task carries its trial's configuration)",
            party.tag(),
            fabric.options().prefix,
            job.seed_index
        );
    } else {
        eprintln!(
            "fed: connected to NATS as {} (run prefix {}): fedgraph {} lr {} local steps {} seed {}",
            party.tag(),
            fabric.options().prefix,
            job.algo,
            job.lr,
            job.local_steps,
            job.seed_index
        );
    }
    match party {
        Party::Client(id) => {
            let n = multiproc::run_client(&unit, &fabric, id).map_err(fedgraph_err)?;
            eprintln!("fed: client {id}: {n} tasks answered");
            Ok(())
        }
        Party::Server if cfg.task.mode == "hpo" => {
            fedgraph_search(a, common, &cfg, &job, &unit, fabric)
        }
        Party::Server if cfg.task.mode == "privacy" => {
            fedgraph_privacy(a, common, &cfg, &job, &unit, fabric)
        }
        Party::Server => {
            let st = Starter::new(a, common, multiproc::client_ids(&unit), &fabric)?;
            let clients = &st.clients;
            let spawn = st.spawn.clone();
            let (out, generator) =
                multiproc::run_node_server(&unit, Arc::new(fabric), &spawn, |id| {
                    st.command(common, id)
                })
                .map_err(fedgraph_err)?;
            let mut summary = serde_json::json!({
                "algo": job.algo, "lr": job.lr, "local_steps": job.local_steps,
                "seed_index": job.seed_index, "clients": clients.len(),
                "rounds": out.rounds_run, "best_round": out.best_round,
                "val_accuracy": out.val_accuracy, "test_accuracy": out.test_accuracy,
                "server_mb": out.server_bytes as f64 / 1e6,
                "server_mib": out.server_bytes as f64 / f64::from(1u32 << 20),
                "rejected": out.rejected,
            });
            if let Some((g, secs)) = &generator {
                // FedSage+'s generator stage, through the same client processes.
                summary["generator"] = serde_json::json!({
                    "added": g.added, "count_loss": g.count_loss, "feat_loss": g.feat_loss,
                    "server_mb": g.server_bytes as f64 / 1e6, "seconds": secs,
                });
            }
            let file = serde_json::json!({
                "summary": summary, "curve": out.curve, "round_seconds": out.round_seconds,
            });
            print_summary(a, &summary, &file)
        }
    }
}

/// `fed server|client --system fedgraph` on a graph-families job: one GCFL+, plain GCFL or
/// FedAvg run of the graph-classification table, each client a process holding its own
/// graphs and unshared layers; the server prints the run's figures and clusters as JSON.
#[cfg(feature = "nats")]
fn fedgraph_families(
    a: &FedArgs,
    common: &Common,
    party: ferrolab_fed::nats::Party,
    cfg: &ferrolab_fed::fedgraph::config::FedGraphConfig,
    job: &ferrolab_fed::fedgraph::multiproc::Job,
) -> Result<()> {
    use ferrolab_fed::fedgraph::multiproc;
    use ferrolab_fed::nats::Party;
    use std::sync::Arc;
    let unit = multiproc::build_families(cfg, job).map_err(fedgraph_err)?;
    let fabric = connect(a, party)?;
    eprintln!(
        "fed: connected to NATS as {} (run prefix {}): fedgraph {} on graph-families, lr {} local steps {} seed {}",
        party.tag(),
        fabric.options().prefix,
        job.algo,
        job.lr,
        job.local_steps,
        job.seed_index
    );
    match party {
        Party::Client(id) => {
            let n = multiproc::run_family_client(&unit, &fabric, id).map_err(fedgraph_err)?;
            eprintln!("fed: client {id}: {n} tasks answered");
            Ok(())
        }
        Party::Server => {
            let st = Starter::new(a, common, multiproc::family_ids(&unit), &fabric)?;
            let spawn = st.spawn.clone();
            let (out, log) = multiproc::run_family_server(&unit, Arc::new(fabric), &spawn, |id| {
                st.command(common, id)
            })
            .map_err(fedgraph_err)?;
            let summary = serde_json::json!({
                "algo": job.algo, "lr": job.lr, "local_steps": job.local_steps,
                "seed_index": job.seed_index, "clients": st.clients.len(),
                "rounds": out.rounds_run, "best_round": out.best_round,
                "val_accuracy": out.val_accuracy, "test_accuracy": out.test_accuracy,
                "server_mb": out.server_bytes as f64 / 1e6,
                "server_mib": out.server_bytes as f64 / f64::from(1u32 << 20),
                "left_out": out.rejected,
                "final_clusters": log.clusters,
                "split_rounds": log.splits.iter().map(|s| s.0).collect::<Vec<_>>(),
            });
            let file = serde_json::json!({
                "summary": summary, "curve": out.curve, "clusters": log,
            });
            print_summary(a, &summary, &file)
        }
    }
}

/// How a fedgraph server starts its clients: each of `clients` as a `fed client` process of
/// this executable on the same config and prefix, or none with `--external-clients` (`spawn`
/// is then empty, and the operator is told what to start).
#[cfg(feature = "nats")]
struct Starter {
    url: String,
    exe: PathBuf,
    prefix: String,
    clients: Vec<u32>,
    spawn: Vec<u32>,
}

#[cfg(feature = "nats")]
impl Starter {
    fn new(
        a: &FedArgs,
        common: &Common,
        clients: Vec<u32>,
        fabric: &ferrolab_fed::nats::NatsFabric,
    ) -> Result<Self> {
        let url = nats_url(common.nats.as_deref())?;
        let exe = std::env::current_exe()?;
        let prefix = fabric.options().prefix.clone();
        let spawn = if external(a) {
            waiting_for("fedgraph", &clients, &common.config, &prefix);
            Vec::new()
        } else {
            clients.clone()
        };
        Ok(Starter {
            url,
            exe,
            prefix,
            clients,
            spawn,
        })
    }

    fn command(&self, common: &Common, id: u32) -> std::process::Command {
        common.with_tls(ferrolab_fed::fedgraph::multiproc::client_command(
            &self.exe,
            &self.url,
            &common.config,
            &self.prefix,
            id,
        ))
    }
}

/// Prints a fedgraph server's `summary` as JSON and writes `file` to `fed server --out`.
#[cfg(feature = "nats")]
fn print_summary(a: &FedArgs, summary: &serde_json::Value, file: &serde_json::Value) -> Result<()> {
    if let Role::Server(s) = &a.role
        && let Some(path) = &s.out
    {
        let text = serde_json::to_string_pretty(file)?;
        ferrolab_core::run::write_atomic(path, text.as_bytes())?;
    }
    println!("{}", serde_json::to_string_pretty(summary)?);
    Ok(())
}

/// `fed server --system fedgraph` on a job of `task.mode = "hpo"`: that seed's federated
/// search (every method of `hpo.methods`) with the clients as processes (or started by hand
/// with `--external-clients`); prints one line per method as JSON and writes it to `--out`.
#[cfg(feature = "nats")]
fn fedgraph_search(
    a: &FedArgs,
    common: &Common,
    cfg: &ferrolab_fed::fedgraph::config::FedGraphConfig,
    job: &ferrolab_fed::fedgraph::multiproc::Job,
    unit: &ferrolab_fed::fedgraph::multiproc::Unit,
    fabric: ferrolab_fed::nats::NatsFabric,
) -> Result<()> {
    use ferrolab_fed::fedgraph::{hpo, multiproc};
    use std::sync::Arc;
    let st = Starter::new(a, common, multiproc::client_ids(unit), &fabric)?;
    let cx = hpo::SeedCtx {
        g: &unit.graph,
        setup: &unit.setup,
        zoo: &unit.zoo,
        weight_decay: cfg.fed.weight_decay,
        seed: unit.seed,
        workers: 1,
        trainer: &hpo::InProcess,
    };
    let results = hpo::search_on(
        cfg,
        &cx,
        job.seed_index,
        Arc::new(fabric),
        &st.spawn,
        |id| st.command(common, id),
    )
    .map_err(fedgraph_err)?;
    let grid_rounds = hpo::search_space(&cfg.hpo).len() * cfg.hpo.max_rounds;
    let methods: Vec<serde_json::Value> = cfg
        .hpo
        .methods
        .iter()
        .zip(&results)
        .map(|(m, r)| {
            serde_json::json!({
                "method": m, "best_config": r.best.json(),
                "best_val_accuracy": r.val_accuracy, "best_test_accuracy": r.test_accuracy,
                "rounds_used": r.rounds_used, "grid_rounds": grid_rounds,
                "seconds": r.seconds,
            })
        })
        .collect();
    let summary = serde_json::json!({
        "seed_index": job.seed_index, "clients": st.clients.len(), "methods": methods,
    });
    print_summary(a, &summary, &summary)
}

/// `fed server --system fedgraph` on a job of `task.mode = "privacy"`: that seed's arms (no DP,
/// then each σ) with the clients as processes (or started by hand with `--external-clients`),
/// each client clipping and noising its own updates; prints each arm's figures as JSON and
/// writes them to `--out`.
#[cfg(feature = "nats")]
fn fedgraph_privacy(
    a: &FedArgs,
    common: &Common,
    cfg: &ferrolab_fed::fedgraph::config::FedGraphConfig,
    job: &ferrolab_fed::fedgraph::multiproc::Job,
    unit: &ferrolab_fed::fedgraph::multiproc::Unit,
    fabric: ferrolab_fed::nats::NatsFabric,
) -> Result<()> {
    use ferrolab_fed::fedgraph::{multiproc, privacy};
    use std::sync::Arc;
    let st = Starter::new(a, common, multiproc::client_ids(unit), &fabric)?;
    let arms = privacy::arms(&cfg.privacy);
    let runs = privacy::arms_on(
        cfg,
        &unit.graph,
        &unit.setup,
        &unit.zoo,
        &arms,
        unit.seed,
        job.seed_index,
        Arc::new(fabric),
        &st.spawn,
        |id| st.command(common, id),
    )
    .map_err(fedgraph_err)?;
    // ε of the no-DP arm is infinite: JSON has no such number, so it is null there.
    let finite = |x: f64| x.is_finite().then_some(x);
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "sigma": r.sigma, "epsilon": finite(r.epsilon),
                "epsilon_node": finite(r.epsilon_node),
                "test_accuracy": r.test_accuracy, "val_accuracy": r.val_accuracy,
                "mia_auc": finite(r.mia_auc), "mia_auc_same_class": finite(r.mia_auc_same_class),
                "property_attack_accuracy": r.property_attack_accuracy,
                "property_attack_chance": r.property_attack_chance,
                "update_norm_median": finite(r.update_norm_median),
                "clipped_fraction": r.clipped_fraction, "rounds": r.rounds,
            })
        })
        .collect();
    let summary = serde_json::json!({
        "seed_index": job.seed_index, "clients": st.clients.len(), "noise": cfg.privacy.noise,
        "delta": cfg.privacy.delta, "arms": rows,
    });
    print_summary(a, &summary, &summary)
}

/// A fedgraph error as the CLI classifies it (usage: exit 2, runtime: exit 1).
#[cfg(feature = "nats")]
fn fedgraph_err(e: ferrolab_fed::fedgraph::FedGraphError) -> anyhow::Error {
    use ferrolab_core::{Classify, ErrorClass};
    match e.class() {
        ErrorClass::Usage => UsageError(e.to_string()).into(),
        _ => anyhow::anyhow!("fedgraph over NATS: {e}"),
    }
}

/// `fed server|client --system sdgt`: one run (the file's `[job]` table, else the first
/// split, algorithm and step size at seed index 0) with the clients as processes.
#[cfg(feature = "nats")]
fn sdgt(
    a: &FedArgs,
    common: &Common,
    party: ferrolab_fed::nats::Party,
    config: toml::Table,
) -> Result<()> {
    use ferrolab_fed::nats::Party;
    use ferrolab_fed::sdgt::multiproc;
    use std::sync::Arc;
    let at = |e: String| UsageError(format!("config {}: {e}", common.config.display()));
    let json = serde_json::to_value(&config).map_err(|e| at(e.to_string()))?;
    let (cfg, job) = multiproc::parse_job(json).map_err(at)?;
    guard(
        a,
        ferrolab_core::System::memory_estimate(&ferrolab_fed::sdgt::SdgtSystem, &cfg, None),
    )?;
    let (spec, data) = multiproc::build(&cfg, &job).map_err(sys_err)?;
    let fabric = connect(a, party)?;
    eprintln!(
        "fed: connected to NATS as {} (run prefix {}): sdgt {} lr {} seed {} split {}",
        party.tag(),
        fabric.options().prefix,
        job.algo,
        job.lr,
        job.seed_index,
        job.split
    );
    match party {
        Party::Client(id) => {
            let n = multiproc::run_client(&spec, &data, &fabric, id).map_err(sys_err)?;
            eprintln!("fed: client {id}: {n} tasks answered");
            Ok(())
        }
        Party::Server => {
            let url = nats_url(common.nats.as_deref())?;
            let exe = std::env::current_exe()?;
            let prefix = fabric.options().prefix.clone();
            let out = if external(a) {
                let clients = multiproc::client_ids(&spec, &data);
                waiting_for("sdgt", &clients, &common.config, &prefix);
                multiproc::run_server_external(&spec, &data, Arc::new(fabric))
            } else {
                multiproc::run_server(&spec, &data, Arc::new(fabric), |id| {
                    common.with_tls(multiproc::client_command(
                        &exe,
                        &url,
                        &common.config,
                        &prefix,
                        id,
                    ))
                })
            }
            .map_err(sys_err)?;
            let outcome = match &a.role {
                Role::Server(s) => s.outcome.clone(),
                Role::Client(_) => None,
            };
            use ferrolab_fed::sdgt::driver::RunError;
            let out = match (out, outcome) {
                // For the `ferrolab sdgt` that started this process: a divergence is a result
                // of its step-size grid (exit 0, nothing on stderr); a lost connection keeps its
                // checkpoint for `--resume` (exit 1, said by the parent).
                (Err(RunError::Diverged { round, .. }), Some(path)) => {
                    let o = multiproc::ServerOutcome::Diverged { round };
                    ferrolab_core::run::write_atomic(&path, serde_json::to_string(&o)?.as_bytes())?;
                    return Ok(());
                }
                (
                    Err(RunError::Fabric(ferrolab_fed::fabric::FabricError::Disconnected(why))),
                    Some(path),
                ) => {
                    let o = multiproc::ServerOutcome::Disconnected(why.clone());
                    ferrolab_core::run::write_atomic(&path, serde_json::to_string(&o)?.as_bytes())?;
                    return Err(anyhow::anyhow!("sdgt over NATS: {why}"));
                }
                (out, _) => out.map_err(|e| anyhow::anyhow!("sdgt over NATS: {e}"))?,
            };
            let last = out.history.last();
            let summary = serde_json::json!({
                "split": job.split, "algo": job.algo, "lr": job.lr, "seed_index": job.seed_index,
                "clients": out.clients, "rounds": last.map(|h| h.round),
                "test_accuracy": last.map(|h| h.test_accuracy),
                "val_accuracy": last.map(|h| h.val_accuracy),
                "d2d_mb": last.map(|h| h.d2d_mb), "server_mb": last.map(|h| h.server_mb),
                "lost_devices": out.lost_devices, "gone_contributions": out.gone_contributions,
                "round_seconds": out.round_seconds,
                "final_params_fnv1a": fnv1a(&out.final_params),
            });
            if let Role::Server(s) = &a.role
                && let Some(path) = &s.out
            {
                let text = serde_json::to_string_pretty(&out)?;
                ferrolab_core::run::write_atomic(path, text.as_bytes())?;
            }
            println!("{}", serde_json::to_string_pretty(&summary)?);
            if let Role::Server(s) = &a.role
                && let Some(path) = &s.outcome
            {
                let text = serde_json::to_string(&multiproc::ServerOutcome::Finished(out))?;
                ferrolab_core::run::write_atomic(path, text.as_bytes())?;
            }
            Ok(())
        }
    }
}

/// The resource guard every `ferrolab <system>` run applies, before this process loads data.
/// Only a server that was not started by `ferrolab <system>` applies it: the estimate is the
/// whole run's (a server that starts its clients runs them all on its machine), not one
/// client's, and a `ferrolab <system> --set fed.runtime=nats` parent has checked it already
/// against its own `--max-memory`.
#[cfg(feature = "nats")]
fn guard(a: &FedArgs, estimate: Option<ferrolab_core::guard::MemoryEstimate>) -> Result<()> {
    let Role::Server(s) = &a.role else {
        return Ok(());
    };
    if s.outcome.is_some() {
        return Ok(());
    }
    let limit = match &s.common.max_memory {
        Some(s) => ferrolab_core::guard::parse_size(s).map_err(|e| UsageError(e.to_string()))?,
        None => ferrolab_core::guard::default_limit(),
    };
    if let Some(est) = estimate {
        ferrolab_core::guard::check(&est, limit).map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(())
}

/// Whether the server leaves starting its clients to the operator.
#[cfg(feature = "nats")]
fn external(a: &FedArgs) -> bool {
    matches!(&a.role, Role::Server(s) if s.external_clients)
}

/// What a server with `--external-clients` waits for, as the commands that provide it.
#[cfg(feature = "nats")]
fn waiting_for(system: &str, clients: &[u32], config: &Path, prefix: &str) {
    let (first, last) = (
        clients.first().copied().unwrap_or(0),
        clients.last().copied().unwrap_or(0),
    );
    eprintln!(
        "fed: waiting for {} clients: start `ferrolab fed client --system {system} --id K --config {} --prefix {prefix} --nats URL` for K = {first}..={last}",
        clients.len(),
        config.display()
    );
}

/// A fingerprint of the final model's exact bits, to compare runs.
#[cfg(feature = "nats")]
fn fnv1a(w: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in w {
        for b in x.to_bits().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The CLI classifies a `SystemError` itself (usage: exit 2, runtime: exit 1).
#[cfg(feature = "nats")]
fn sys_err(e: ferrolab_core::SystemError) -> anyhow::Error {
    e.into()
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
