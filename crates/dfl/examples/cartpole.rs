//! TaskMet's model-based RL comparison on CartPole with distractors ([`ferrolab_dfl::rl`]):
//! trains agents whose model is fit by MSE, TaskMet's metric or OMD, and reports evaluation
//! returns, environment steps per second and steps to a return threshold.
//!
//! `cargo run --release -p ferrolab-dfl --example cartpole -- [--losses mse,taskmet,omd]
//! [--k 0,16] [--seeds 0,1] [--steps N] [--stop-at R] [--eval-every N] [--threads N]
//! [--json PATH]`
//!
//! Every (loss, k, seed) runs in turn; each evaluation is printed as it happens, then one
//! summary line per run and, with `--json`, every run's record.
//!
//! With `--checkpoint DIR` each run keeps a checkpoint in `DIR/<loss>-k<k>-seed<s>/` (every
//! `--checkpoint-minutes`, and at `--stop-after-minutes`, where the process exits with status
//! 75 after saving); the same command again continues every run from where it stopped, and a
//! run that finished is read back from its `done.json` instead of being trained again. The
//! figures equal an uninterrupted run's (wall times aside). The folders are removed once
//! `--json` is written.

use clap::Parser;
use ferrolab_core::backend::try_init_threads;
use ferrolab_dfl::rl::{
    AgentConfig, AgentOutcome, AgentRun, Checkpointing, ModelLoss, train_agent_checkpointed,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The exit status of a run paused by `--stop-after-minutes` (sysexits' EX_TEMPFAIL: run the
/// same command again to continue).
const PAUSED: u8 = 75;

#[derive(Parser, Debug)]
struct Args {
    /// Comma-separated model losses: mse (mle), taskmet (metric), omd.
    #[arg(long, default_value = "mse,taskmet,omd")]
    losses: String,
    /// Comma-separated distractor counts.
    #[arg(long, default_value = "0")]
    k: String,
    /// Comma-separated seeds.
    #[arg(long, default_value = "0")]
    seeds: String,
    /// Environment steps per run (the reference: 200000).
    #[arg(long, default_value_t = 150_000)]
    steps: usize,
    /// Stop a run at the first evaluation with at least this mean return.
    #[arg(long)]
    stop_at: Option<f64>,
    #[arg(long, default_value_t = 1000)]
    eval_every: usize,
    /// Random steps before updates start (the reference: 1000).
    #[arg(long, default_value_t = 1000)]
    init_steps: usize,
    /// TaskMet's metric warm-up (the reference: 5000).
    #[arg(long, default_value_t = 5000)]
    warmup: usize,
    /// Rayon threads (the GEMMs of large metric nets use them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// TaskMet: the reference's stale model-optimiser state (sign-descent model steps), the
    /// default since 2026-11-30; kept so that older command lines still parse.
    #[arg(long, conflicts_with = "carried_model_adam")]
    reference_stale_model_adam: bool,
    /// TaskMet: a model Adam whose moments carry over between steps instead of the
    /// reference's stale state.
    #[arg(long)]
    carried_model_adam: bool,
    /// TaskMet: a state-conditioned diagonal metric `L(s)` (O(o) per row) instead of the
    /// default per-dimension metric of the reference's figure.
    #[arg(long, conflicts_with = "full_metric")]
    diagonal: bool,
    /// TaskMet: the state-conditioned lower-triangular metric `L(s)` (the reference's later
    /// code default) instead of the per-dimension metric of its figure.
    #[arg(long)]
    full_metric: bool,
    /// TaskMet with the per-dimension metric: the least weight any dimension keeps, in
    /// [0, 1) (0 = the reference's metric, which can weight a real state dimension to zero).
    #[arg(long, default_value_t = 0.0)]
    metric_floor: f64,
    /// TaskMet: CG on the normal equations (the reference's; the default since 2026-11-29).
    /// Kept so that older command lines still parse.
    #[arg(long)]
    normal_cg: bool,
    /// TaskMet: plain CG on the next-state net's `H + 1e-5·I` instead of the reference's
    /// joint normal-equation CG.
    #[arg(long, conflicts_with = "normal_cg")]
    plain_cg: bool,
    /// Write every run (config, evaluations, timings) here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep each run's checkpoint under this folder and continue from it when present.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Minutes of wall time between two checkpoints of a run.
    #[arg(long, default_value_t = 10.0, requires = "checkpoint")]
    checkpoint_minutes: f64,
    /// Save every unfinished run and exit with status 75 once this many minutes have passed.
    #[arg(long, requires = "checkpoint")]
    stop_after_minutes: Option<f64>,
}

fn minutes(m: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(m * 60.0)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag} {m}: expected a positive number of minutes"))
}

/// A finished run kept beside its checkpoint, so that a rerun does not train it again.
fn read_done(dir: &Path) -> Result<Option<AgentRun>, String> {
    let path = dir.join("done.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e} (remove it to train the run again)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn list<T>(s: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(|t| parse(t.trim()).ok_or_else(|| format!("bad {what}: {t:?}")))
        .collect()
}

/// Whether every run finished (false: at least one paused at `--stop-after-minutes`).
fn run(args: &Args) -> Result<bool, String> {
    try_init_threads(Some(args.threads)).map_err(|e| e.to_string())?;
    let every = minutes(args.checkpoint_minutes, "--checkpoint-minutes")?;
    let deadline = match args.stop_after_minutes {
        Some(m) => Some(
            Instant::now()
                .checked_add(minutes(m, "--stop-after-minutes")?)
                .ok_or_else(|| format!("--stop-after-minutes {m}: too far ahead"))?,
        ),
        None => None,
    };
    let mut paused = false;
    let losses = list(&args.losses, ModelLoss::parse, "loss")?;
    let ks = list(&args.k, |t| t.parse::<usize>().ok(), "k")?;
    let seeds = list(&args.seeds, |t| t.parse::<u64>().ok(), "seed")?;
    let mut runs: Vec<AgentRun> = Vec::new();
    for &k in &ks {
        for &loss in &losses {
            for &seed in &seeds {
                let cfg = AgentConfig {
                    loss,
                    distractors: k,
                    steps: args.steps,
                    eval_every: args.eval_every,
                    init_steps: args.init_steps,
                    metric_warmup_steps: args.warmup,
                    reference_stale_model_adam: !args.carried_model_adam,
                    diagonal_metric: args.diagonal,
                    global_metric: !(args.diagonal || args.full_metric),
                    metric_floor: args.metric_floor,
                    normal_cg: !args.plain_cg,
                    stop_at_return: args.stop_at,
                    ..AgentConfig::default()
                };
                let tag = format!("{} k={k} seed={seed}", loss.name());
                let ck = args.checkpoint.as_ref().map(|base| Checkpointing {
                    every,
                    pause_after: deadline,
                    ..Checkpointing::new(base.join(format!("{}-k{k}-seed{seed}", loss.name())))
                });
                let mut show = |e: &ferrolab_dfl::rl::EvalPoint| {
                    println!(
                        "{tag} step {:>6} return {:>6.1} ({:.0} s) q-loss {:.3e} model-mse {:.3e} \
                         outer {}",
                        e.step,
                        e.mean_return,
                        e.elapsed_s,
                        e.window.mean_q_loss(),
                        e.window.mean_model_mse(),
                        sci(e.window.mean_outer_loss(), 3)
                    );
                };
                let run = match &ck {
                    None => ferrolab_dfl::rl::train_agent(&cfg, seed, &mut show)
                        .map_err(|e| format!("{tag}: {e}"))?,
                    Some(ck) => match read_done(&ck.dir)? {
                        Some(run) if run.config == cfg && run.seed == seed => run,
                        Some(_) => {
                            return Err(format!(
                                "{}: a finished run of another configuration; remove it",
                                ck.dir.join("done.json").display()
                            ));
                        }
                        None => match train_agent_checkpointed(&cfg, seed, ck, &mut show)
                            .map_err(|e| format!("{tag}: {e}"))?
                        {
                            AgentOutcome::Finished(run) => {
                                let text = serde_json::to_vec(&run).map_err(|e| e.to_string())?;
                                let done = ck.dir.join("done.json");
                                std::fs::create_dir_all(&ck.dir)
                                    .and_then(|()| ferrolab_data::write_file_atomic(&done, &text))
                                    .map_err(|e| format!("{}: {e}", done.display()))?;
                                ck.remove_state().map_err(|e| e.to_string())?;
                                *run
                            }
                            AgentOutcome::Paused { step } => {
                                println!(
                                    "PAUSED {tag} at step {step}: checkpoint in {}; run the same \
                                     command again to continue",
                                    ck.dir.display()
                                );
                                paused = true;
                                continue;
                            }
                        },
                    },
                };
                let to400 = run
                    .steps_to(400.0)
                    .map_or("-".to_string(), |s| s.to_string());
                println!(
                    "SUMMARY {tag}: steps {} final {:.1} best {:.1} steps-to-400 {to400} \
                     steps/s {:.0} steady {:.1} (train {:.1} s, eval {:.1} s) q-loss {:.3e} model-mse {:.3e} \
                     outer {} cg-res {} cg-breakdowns {}",
                    run.steps,
                    run.final_return(),
                    run.best_return(),
                    run.steps_per_sec(),
                    run.steady_steps_per_sec(),
                    run.train_seconds,
                    run.eval_seconds,
                    run.stats.mean_q_loss(),
                    run.stats.mean_model_mse(),
                    sci(run.stats.mean_outer_loss(), 3),
                    sci(run.stats.mean_cg_residual(), 2),
                    run.stats.cg_breakdowns,
                );
                if let Some(w) = &run.metric_weights {
                    // The CartPole state's weights, then the distractors' spread.
                    let (state, noise) = w.split_at(w.len().min(4));
                    let fmt: Vec<String> = state.iter().map(|v| format!("{v:.3}")).collect();
                    let (lo, hi, mean) = noise.iter().fold(
                        (f64::INFINITY, f64::NEG_INFINITY, 0.0),
                        |(lo, hi, s), &v| (lo.min(v), hi.max(v), s + v / noise.len() as f64),
                    );
                    println!(
                        "METRIC {tag}: state [{}] distractors mean {mean:.3} (min {lo:.3}, max {hi:.3})",
                        fmt.join(", ")
                    );
                }
                runs.push(run);
            }
        }
    }
    if paused {
        return Ok(false);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&runs).map_err(|e| e.to_string())?;
        // Whole or not at all: a rerun stopped while writing keeps the previous results.
        ferrolab_data::write_file_atomic(path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // The runs are in the JSON now; their checkpoints (up to ~0.4 GB each) can go.
        if let Some(base) = &args.checkpoint {
            for &k in &ks {
                for &loss in &losses {
                    for &seed in &seeds {
                        let ck = Checkpointing::new(
                            base.join(format!("{}-k{k}-seed{seed}", loss.name())),
                        );
                        ck.remove().map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(PAUSED),
        Err(e) => {
            eprintln!("cartpole: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A mean over no updates (the MSE model has no outer problem and no CG solves) is NaN in the
/// statistics; the log shows "-" there so that it does not read as a diverged run.
fn sci(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$e}")
    } else {
        "-".to_string()
    }
}
