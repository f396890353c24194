//! `ferrolab adaevo edge` and `ferrolab adaevo mobile --id K`: one process per role over NATS.
//!
//! Every process of a run is given the same configuration (`--preset`, `--config`, `--set`),
//! `--seed`, `--run` name and `--start` time, so that each builds the same models and streams
//! (a mobile end runs its own: [`run_mobile_live`](super::run_mobile_live), or
//! [`run_det_mobile_live`](super::run_det_mobile_live) for `task.name = "detection"`; with
//! `--replay-trace` it replays the requests its factory model would make, computed up front by
//! [`make_trace`](super::make_trace) / [`make_det_trace`](super::make_det_trace)); the
//! processes then agree on the simulated clock
//! without talking about it. Each prints its summary as one JSON object on stdout.

use super::{NetError, NetOptions};
use crate::config::AdaEvoConfig;
use crate::experiment::{load_base, prepare_edge, prepare_end};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use ferrolab_core::system::SubCommand;
use ferrolab_core::{Checked, SysResult, SystemError};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// The two sub-commands, for [`System::subcommands`](ferrolab_core::System::subcommands).
pub fn subcommands() -> Vec<SubCommand> {
    vec![
        SubCommand {
            command: edge_command,
            run: edge_run,
        },
        SubCommand {
            command: mobile_command,
            run: mobile_run,
        },
    ]
}

fn common(c: Command) -> Command {
    c.arg(
        Arg::new("nats")
            .long("nats")
            .value_name("URL")
            .required(true)
            .help("NATS server, e.g. nats://127.0.0.1:4222"),
    )
    .arg(
        Arg::new("run")
            .long("run")
            .value_name("NAME")
            .required(true)
            .help("Run name shared by the edge and its mobile ends (1-40 of A-Z a-z 0-9 _ -)"),
    )
    .arg(
        Arg::new("preset")
            .long("preset")
            .value_name("NAME")
            .default_value("quick")
            .help("Preset every process of the run uses (quick, paper, fashion, detection)"),
    )
    .arg(
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .help("TOML file over the preset"),
    )
    .arg(
        Arg::new("set")
            .long("set")
            .value_name("KEY=VALUE")
            .action(ArgAction::Append)
            .help("Override one setting (repeatable)"),
    )
    .arg(
        Arg::new("seed")
            .long("seed")
            .value_name("N")
            .default_value("0")
            .value_parser(value_parser!(u64))
            .help("Seed of the models and streams (the same in every process)"),
    )
    .arg(
        Arg::new("data-dir")
            .long("data-dir")
            .value_name("DIR")
            .value_parser(value_parser!(PathBuf))
            .help("Where Fashion-MNIST is looked up (data.dataset = fashion-mnist)"),
    )
    .arg(
        Arg::new("speed")
            .long("speed")
            .value_name("X")
            .default_value("1")
            .value_parser(value_parser!(f64))
            .help("Simulated seconds per wall second"),
    )
    .arg(
        Arg::new("threads")
            .long("threads")
            .value_name("N")
            .value_parser(value_parser!(usize))
            .help("Compute threads (default: all cores)"),
    )
    .arg(
        Arg::new("tls-ca")
            .long("tls-ca")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .help("PEM file of the CA that signed the NATS server's certificate (TLS then required; default: $FERROLAB_NATS_CA)"),
    )
    .arg(
        Arg::new("tls-cert")
            .long("tls-cert")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .requires("tls-key")
            .help("PEM client certificate for a server that verifies clients (with --tls-key; default: $FERROLAB_NATS_CERT)"),
    )
    .arg(
        Arg::new("tls-key")
            .long("tls-key")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .requires("tls-cert")
            .help("PEM key of --tls-cert (default: $FERROLAB_NATS_KEY)"),
    )
    .arg(
        Arg::new("max-memory")
            .long("max-memory")
            .value_name("SIZE")
            .help("Refuse settings whose estimated memory exceeds SIZE (e.g. 2G; default: 80% of this machine's memory), as `ferrolab adaevo` does"),
    )
    .arg(
        Arg::new("start")
            .long("start")
            .value_name("UNIX_SECONDS")
            .value_parser(value_parser!(f64))
            .help("Simulated time 0 as a Unix time, the same in every process (default: when this process connects)"),
    )
}

fn edge_command() -> Command {
    common(Command::new("edge").about(
        "Run the edge server over NATS: accept evolution tasks from the mobile ends, schedule them (knapsack over the memory budget), retrain, re-compress and ship models",
    ))
    .arg(
        Arg::new("state")
            .long("state")
            .value_name("DIR")
            .value_parser(value_parser!(PathBuf))
            .help("Persist accepted tasks and model versions here; an edge restarted with the same DIR (and run arguments) re-queues the tasks and continues the versions"),
    )
}

fn mobile_command() -> Command {
    common(
        Command::new("mobile")
            .about("Run mobile end K over NATS: its compressed model reads its drifting stream on the run's clock (label-free estimate, drift-end trigger, drift-type sampling), uploads evolution requests, and runs each model the edge ships (checksum-verified); prints its accuracy over time and QoE")
            .arg(
                Arg::new("id")
                    .long("id")
                    .value_name("K")
                    .required(true)
                    .value_parser(value_parser!(usize))
                    .help("This end's index, 0..stream.ends"),
            )
            .arg(
                Arg::new("replay-trace")
                    .long("replay-trace")
                    .action(ArgAction::SetTrue)
                    .help("Replay the requests the end's factory model would make (computed up front) instead of running the model: no inference while the run goes, as in the load test; shipped models are verified but not run"),
            )
            .arg(
                Arg::new("tail")
                    .long("tail")
                    .value_name("SECONDS")
                    .default_value("30")
                    .value_parser(value_parser!(f64))
                    .help("Simulated seconds to wait for models still in flight after the stream ends"),
            ),
    )
}

/// The configuration, options and seed every process of a run derives from its arguments.
fn setup(m: &ArgMatches) -> SysResult<(AdaEvoConfig, NetOptions, u64, Option<PathBuf>)> {
    let preset = m
        .get_one::<String>("preset")
        .map(String::as_str)
        .unwrap_or("quick");
    let base = match preset {
        "quick" => include_str!("../../../../configs/adaevo/quick.toml"),
        "paper" => include_str!("../../../../configs/adaevo/paper.toml"),
        "fashion" => include_str!("../../../../configs/adaevo/fashion.toml"),
        "detection" => include_str!("../../../../configs/adaevo/detection.toml"),
        other => {
            return Err(SystemError::usage(format!(
                "--preset {other}: unknown preset (quick, paper, fashion, detection)"
            )));
        }
    };
    let sets: Vec<String> = m
        .get_many::<String>("set")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let cfg: AdaEvoConfig = ferrolab_core::config::load_layers(
        Some((&format!("preset {preset}"), base)),
        m.get_one::<PathBuf>("config").map(PathBuf::as_path),
        &sets,
    )?;
    let cfg = Checked::new(cfg)?.into_inner();
    // The resource guard `ferrolab adaevo` applies: an upper bound for a process, which
    // builds only its share (the edge no stream, a mobile end its own).
    let limit = match m.get_one::<String>("max-memory") {
        Some(s) => ferrolab_core::guard::parse_size(s)?,
        None => ferrolab_core::guard::default_limit(),
    };
    if let Some(est) =
        ferrolab_core::System::memory_estimate(&crate::system::AdaEvoSystem, &cfg, None)
    {
        ferrolab_core::guard::check(&est, limit)?;
    }
    let url = m.get_one::<String>("nats").cloned().unwrap_or_default();
    let run = m.get_one::<String>("run").cloned().unwrap_or_default();
    let mut opts = NetOptions::new(&url, &run);
    let speed = m.get_one::<f64>("speed").copied().unwrap_or(1.0);
    if !(speed.is_finite() && speed > 0.0 && speed <= 1e4) {
        return Err(SystemError::usage(format!(
            "--speed {speed}: must be in (0, 10000]"
        )));
    }
    opts.speed = speed;
    opts.seconds = cfg.stream.seconds as f64;
    if let Some(&s) = m.get_one::<f64>("start") {
        if !(s.is_finite() && s >= 0.0) {
            return Err(SystemError::usage(format!(
                "--start {s}: must be a Unix time in seconds"
            )));
        }
        opts.start = Some(UNIX_EPOCH + Duration::from_secs_f64(s));
    }
    if let Some(ca) = m.get_one::<PathBuf>("tls-ca") {
        opts.tls_ca = Some(ca.clone());
    }
    if m.get_one::<PathBuf>("tls-cert").is_none()
        && super::env_path("FERROLAB_NATS_CERT").is_some()
            != super::env_path("FERROLAB_NATS_KEY").is_some()
    {
        return Err(SystemError::usage(
            "TLS client certificate: FERROLAB_NATS_CERT and FERROLAB_NATS_KEY go together; only one is set",
        ));
    }
    if let (Some(c), Some(k)) = (
        m.get_one::<PathBuf>("tls-cert"),
        m.get_one::<PathBuf>("tls-key"),
    ) {
        opts.tls_client = Some((c.clone(), k.clone()));
    }
    let seed = m.get_one::<u64>("seed").copied().unwrap_or(0);
    ferrolab_core::backend::try_init_threads(m.get_one::<usize>("threads").copied())?;
    let data_dir = ferrolab_core::system::data_dir_arg(m)?.map(PathBuf::from);
    Ok((cfg, opts, seed, data_dir))
}

fn is_detection(cfg: &AdaEvoConfig) -> bool {
    cfg.task.name == "detection"
}

/// The server (URL, TLS, and for detection JetStream) is checked before any model is built.
fn probe(cfg: &AdaEvoConfig, opts: &NetOptions) -> SysResult<()> {
    if is_detection(cfg) {
        super::probe_store(opts).map_err(net_error)
    } else {
        super::probe(opts).map_err(net_error)
    }
}

fn net_error(e: NetError) -> SystemError {
    match e {
        NetError::Usage(m) => SystemError::usage(m),
        NetError::Runtime(m) => SystemError::runtime(m),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> SysResult<()> {
    let s = serde_json::to_string(v)
        .map_err(|e| SystemError::runtime(format!("summary as JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

fn edge_run(m: &ArgMatches) -> SysResult<()> {
    let (cfg, mut opts, seed, data_dir) = setup(m)?;
    opts.state_dir = m.get_one::<PathBuf>("state").cloned();
    probe(&cfg, &opts)?;
    let summary = if is_detection(&cfg) {
        // The edge's share only: no ends' streams (it sees frames in uploads).
        let prep = crate::detect::experiment::prepare_edge(&cfg, seed)?;
        super::run_det_edge(&cfg, &prep, seed, &opts)
    } else {
        // The edge's share only: no end's stream.
        let (pre, pool) = load_base(&cfg, data_dir.as_deref(), seed)?;
        let prep = prepare_edge(&cfg, &pre, &pool, seed);
        super::run_edge(&cfg, &prep, seed, &opts)
    };
    print_json(&summary.map_err(net_error)?)
}

fn mobile_run(m: &ArgMatches) -> SysResult<()> {
    let (cfg, opts, seed, data_dir) = setup(m)?;
    let id = m.get_one::<usize>("id").copied().unwrap_or(0);
    if id >= cfg.stream.ends {
        return Err(SystemError::usage(format!(
            "--id {id}: the run has stream.ends = {} (ids 0..{})",
            cfg.stream.ends, cfg.stream.ends
        )));
    }
    let tail = m.get_one::<f64>("tail").copied().unwrap_or(30.0);
    if !(tail.is_finite() && tail >= 0.0) {
        return Err(SystemError::usage(format!(
            "--tail {tail}: must be ≥ 0 seconds"
        )));
    }
    probe(&cfg, &opts)?;
    let replay = m.get_flag("replay-trace");
    // Only this end's trace: each mobile process replays its own.
    let trace = if is_detection(&cfg) {
        // This end's share only: no teacher, no other end's stream.
        let prep = crate::detect::experiment::prepare_end(&cfg, seed, id)?;
        if !replay {
            let summary =
                super::run_det_mobile_live(&cfg, &prep, &opts, tail).map_err(net_error)?;
            return print_json(&summary);
        }
        super::make_det_trace(&cfg, &prep, cfg.stream.seconds)
    } else {
        // This end's share only: no other end's stream, and no teacher unless the mobile
        // model is made from it.
        let (pre, pool) = load_base(&cfg, data_dir.as_deref(), seed)?;
        // `None` only past stream.ends, which `--id` was checked against above.
        let Some(prep) = prepare_end(&cfg, &pre, &pool, seed, id) else {
            return Err(SystemError::usage(format!(
                "--id {id}: the run has stream.ends = {}",
                cfg.stream.ends
            )));
        };
        if !replay {
            let summary = super::run_mobile_live(&cfg, &prep, &opts, tail).map_err(net_error)?;
            return print_json(&summary);
        }
        super::make_trace(&cfg, &prep, cfg.stream.seconds)
    };
    let summary = super::run_mobile(&trace, &opts, tail).map_err(net_error)?;
    print_json(&summary)
}
