//! `ferrolab`: the one binary. Systems come from [`registry`] and run through one generic
//! [`runner`]; the utilities that are not systems (`data`, `reproduce`) are a small clap enum.
//! `main` maps a `Result` to an exit code (2 = usage, config or data error; 1 = runtime
//! failure). No maths here.

mod common;
mod data_cmd;
mod eval;
mod fed_cmd;
mod plot;
mod registry;
mod reproduce;
mod runner;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// ferrolab: eleven published deep-learning systems in one Rust toolkit, each reproduced
/// side by side with its baseline.
#[derive(Parser, Debug)]
#[command(name = "ferrolab", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the datasets ferrolab knows, where each was found (or why not), and verify them;
    /// `data fetch` downloads them.
    Data(data_cmd::DataArgs),
    /// Run every system's experiment and write report.md with plots.
    Reproduce(reproduce::ReproduceArgs),
    /// Detection (COCO mAP, as pycocotools) and segmentation (Dice, IoU, HD95, as medpy)
    /// metrics on prediction files.
    Eval(eval::EvalArgs),
    /// One party of a federated run over NATS: `fed server --system sdgt|fedgraph --config FILE`
    /// or `fed client --id K --config FILE` (`--nats URL` or $FERROLAB_NATS_URL).
    Fed(fed_cmd::FedArgs),
}

/// `println!` panics when stdout is a closed pipe (`ferrolab … --print-config | head -1`);
/// like ripgrep, a reader that stopped reading ends the output quietly (exit 0) instead of a
/// panic and a backtrace. Every other panic goes to the default hook.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

// Counts each thread's live heap bytes (thread-local cells, no shared atomics), so that a
// system can report what a phase really allocated (AdaEvo's profiler checks its memory
// prediction against it); allocation itself is the system allocator's.
#[global_allocator]
static ALLOC: ferrolab_core::alloc::PeakAlloc = ferrolab_core::alloc::PeakAlloc;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let mut cmd = Cli::command();
    for s in registry::systems() {
        cmd = cmd.subcommand(runner::command(s));
    }
    // HyPHEN's client/server commands under their own CLI name (issue 21): `ferrolab hcnn ...`.
    cmd = cmd.subcommand(ferrolab_fhe::hyphen::hcnn::command());
    let matches = match cmd.try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One `error:` line: the exit-code rule.
            eprintln!("error: {} (see --help)", common::clap_error_line(&e));
            return ExitCode::from(2);
        }
    };
    let result = match matches.subcommand() {
        Some(("hcnn", sub)) => ferrolab_fhe::hyphen::hcnn::run_command(sub).map_err(Into::into),
        Some((name, sub)) if registry::find(name).is_some() => match registry::find(name) {
            Some(s) => runner::run(s, sub),
            None => Ok(()),
        },
        _ => match Cli::from_arg_matches(&matches) {
            Ok(cli) => {
                ferrolab_core::backend::tune_allocator();
                match cli.command {
                    Command::Data(a) => data_cmd::run(&a),
                    Command::Reproduce(a) => reproduce::run(&a),
                    Command::Eval(a) => eval::run(&a),
                    Command::Fed(a) => fed_cmd::run(&a),
                }
            }
            Err(e) => e.exit(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", common::one_line(&e));
            ExitCode::from(common::exit_code(&e))
        }
    }
}
