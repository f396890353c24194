//! `ferrolab`: the one binary. It parses arguments, dispatches to a system's library and maps
//! errors to exit codes (2 = usage, config or data error; 1 = runtime failure). No maths here.

mod apg_cmd;
mod ckks_cmd;
mod cluster_gcn_cmd;
mod common;
mod data_cmd;
mod plot;
mod reproduce;
mod secnn_cmd;

use clap::{Parser, Subcommand};
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
    /// List the datasets ferrolab knows, where each was found (or why not), and verify them.
    Data(data_cmd::DataArgs),
    /// Run every system's experiment and write report.md with plots.
    Reproduce(reproduce::ReproduceArgs),
    /// SECNN vs Kim-CNN sentence classification (train + evaluate, or `predict`).
    Secnn(secnn_cmd::SecnnArgs),
    /// Cluster-GCN vs full-batch GCN and random partitions (node classification).
    ClusterGcn(cluster_gcn_cmd::ClusterGcnArgs),
    /// APG vs plain deep layers in Wide&Deep, DeepFM and DCNv2 (CTR; train, `predict`, `generate`).
    Apg(apg_cmd::ApgArgs),
    /// RNS-CKKS homomorphic encryption: `bench` prints per-operation latency and precision.
    Ckks(ckks_cmd::CkksArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // cluster-gcn tunes the allocator itself when training starts: the graph it loads (or
    // generates) and then drops must go back to the kernel, which glibc does not do for
    // blocks served from the heap under the raised mmap threshold (a 1M-node graph left
    // ~80 MiB resident after being freed and trimmed).
    if !matches!(cli.command, Command::ClusterGcn(_)) {
        ferrolab_core::backend::tune_allocator();
    }
    let result = match cli.command {
        Command::Data(a) => data_cmd::run(&a),
        Command::Reproduce(a) => reproduce::run(&a),
        Command::Secnn(a) => secnn_cmd::run(a),
        Command::ClusterGcn(a) => cluster_gcn_cmd::run(a),
        Command::Apg(a) => apg_cmd::run(a),
        Command::Ckks(a) => ckks_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", common::one_line(&e));
            ExitCode::from(common::exit_code(&e))
        }
    }
}
