//! TaskMet's CartPole agent checkpoints as a reader target (`rl-checkpoint`): the folder that
//! `ferrolab taskmet --resume` continues an agent from (`train-state/<unit>/`: `state.json` and
//! `replay-<step>.bin`), read by `ferrolab_dfl::rl::train_agent_checkpointed`.
//!
//! The seed is a tiny MSE agent (k = 2) stopped at step 250. A mutant edits one to three nodes
//! of `state.json` (nets, moments, random-stream positions, counters, the configuration), or
//! bytes of either file. The child continues the agent with a pause due at once: the
//! checkpoint is read, checked and restored (environment, streams, nets, buffer) and saved
//! again, without training; an accepted checkpoint must pause where it was saved.

use crate::mutate;
use crate::readers::{Seed, SeedKind};
use crate::rng::Rng;
use ferrolab_data::DataError;
use ferrolab_dfl::rl::{AgentConfig, AgentOutcome, Checkpointing, train_agent_checkpointed};
use std::path::Path;
use std::time::Instant;

const SEED: u64 = 1;
const STOP: usize = 250;

fn config() -> AgentConfig {
    AgentConfig {
        distractors: 2,
        steps: 600,
        init_steps: 100,
        eval_every: 300,
        eval_episodes: 1,
        ..AgentConfig::default()
    }
}

/// The stopped agent's folder, made in-process (a few milliseconds).
pub fn seeds() -> Vec<Seed> {
    let dir = std::env::temp_dir().join(format!("ferrolab-fuzz-rl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut ck = Checkpointing::new(&dir);
    ck.pause_at_step = Some(STOP);
    let made = train_agent_checkpointed(&config(), SEED, &ck, &mut |_| {});
    let mut members = Vec::new();
    if matches!(made, Ok(AgentOutcome::Paused { .. })) {
        for name in ["state.json".to_string(), format!("replay-{STOP:09}.bin")] {
            if let Ok(bytes) = std::fs::read(dir.join(&name)) {
                members.push((name, bytes));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if members.len() != 2 {
        return Vec::new();
    }
    vec![Seed {
        name: "agent".into(),
        kind: SeedKind::Folder,
        members,
    }]
}

/// Mostly JSON edits of `state.json`; otherwise bytes of it or of the replay buffer.
pub fn mutate(rng: &mut Rng, s: &mut Seed) {
    let k = if rng.chance(0.7) { 0 } else { 1 };
    let Some((_, m)) = s.members.get_mut(k) else {
        return;
    };
    if k == 0 {
        match serde_json::from_slice::<serde_json::Value>(m) {
            Ok(mut v) if rng.chance(0.85) => {
                for _ in 0..1 + rng.below(3) {
                    crate::json::mutate(rng, &mut v);
                }
                *m = v.to_string().into_bytes();
            }
            _ => mutate::text(rng, m, &[]),
        }
    } else {
        mutate::bytes(rng, m, &[]);
    }
}

/// Errors at the header: `state.json` not a checkpoint of this format, or the buffer's magic.
pub fn is_header(msg: &str, e: &DataError) -> bool {
    msg.contains("not a readable CartPole agent checkpoint")
        || msg.contains("this build reads")
        || msg.contains("not a ferrolab replay buffer")
        || matches!(e, DataError::Io { .. })
}

/// Continues the agent in `dir` with a pause due at once.
pub fn read(dir: &Path) -> ferrolab_data::Result<()> {
    let mut ck = Checkpointing::new(dir);
    ck.pause_after = Some(Instant::now());
    let out = train_agent_checkpointed(&config(), SEED, &ck, &mut |_| {}).map_err(|e| {
        DataError::Malformed {
            path: dir.to_path_buf(),
            at: "agent checkpoint".into(),
            msg: e.to_string(),
        }
    })?;
    // A checkpoint saved at the last step finishes instead (its final evaluation only).
    if let AgentOutcome::Paused { step } = out {
        assert!(
            step <= config().steps,
            "rl-checkpoint: paused at step {step}"
        );
    }
    Ok(())
}
