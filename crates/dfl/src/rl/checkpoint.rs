//! Saving a CartPole agent between two environment steps and continuing it later, bit for bit.
//!
//! A TaskMet agent at k = 256 runs for hours (18–36 steps/s here, 150k–200k steps), longer
//! than a working session, and DESIGN asks a run over an hour to checkpoint at least every ten
//! minutes. A checkpoint is a folder: `state.json` (the loop's counters and evaluations, the
//! environment, the nets and their Adam moments, and every random stream's position) and
//! `replay-<step>.bin` (the replay buffer, [`ReplayBuffer::save`]). The buffer is written
//! first under a new name, then `state.json` is replaced atomically and names it, then older
//! buffers are removed: a stop at any moment leaves one whole checkpoint.
//!
//! What makes the continuation exact: the random streams are ChaCha12 ([`RlRng`]), whose seed,
//! stream and word position are the whole state; f64 values go through JSON with
//! round-trip precision; the f32 replay rows are written as stored. Wall times (`elapsed_s`,
//! `train_seconds`) continue from the saved totals and are the only fields that differ.

use super::agent::{AgentState, UpdateStats};
use super::replay::ReplayBuffer;
use super::{AgentConfig, AgentRun, EvalPoint, RlRng};
use ferrolab_core::{CoreError, Result};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The state file's format; a file of another version is refused.
pub(crate) const FORMAT: u32 = 1;
const STATE_FILE: &str = "state.json";

/// Where and when [`super::train_agent_checkpointed`] saves.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// The agent's own folder (created when first saved).
    pub dir: PathBuf,
    /// Save once this much wall time has passed since the start or the last save.
    pub every: Duration,
    /// Save and pause on reaching this step: a caller's step budget for one sitting.
    pub pause_at_step: Option<usize>,
    /// Save and pause at the first step boundary after this instant (a session's end).
    pub pause_after: Option<Instant>,
}

impl Checkpointing {
    /// Saves every ten minutes into `dir`, never pausing.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Checkpointing {
            dir: dir.into(),
            every: Duration::from_secs(600),
            pause_at_step: None,
            pause_after: None,
        }
    }

    /// Removes the checkpoint (the state and the replay buffer) and leaves anything else in
    /// the folder: for a caller that keeps the finished result beside it.
    pub fn remove_state(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CoreError::io(&self.dir, e)),
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name == STATE_FILE || is_replay_name(&name) {
                std::fs::remove_file(e.path()).map_err(|err| CoreError::io(e.path(), err))?;
            }
        }
        Ok(())
    }

    /// Removes the folder once its agent has finished (its result is kept elsewhere).
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoreError::io(&self.dir, e)),
        }
    }
}

/// How a checkpointed run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentOutcome {
    Finished(Box<AgentRun>),
    /// Saved at `step` and stopped as asked; calling again with the same folder continues.
    Paused {
        step: usize,
    },
}

/// One random stream's position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed, hex.
    seed: String,
    stream: u64,
    /// The word position (a u128, kept as decimal text).
    word_pos: String,
}

impl RngState {
    pub fn of(r: &RlRng) -> Self {
        RngState {
            seed: r.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: r.get_stream(),
            word_pos: r.get_word_pos().to_string(),
        }
    }

    /// The generator at the saved position.
    pub fn rng(&self) -> std::result::Result<RlRng, String> {
        let hex = self.seed.as_bytes();
        if hex.len() != 64 {
            return Err(format!(
                "random stream seed {:?} is not 64 hex digits",
                self.seed
            ));
        }
        let mut seed = [0u8; 32];
        for (b, pair) in seed.iter_mut().zip(hex.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            *b = u8::from_str_radix(text, 16)
                .map_err(|_| format!("random stream seed {:?} is not hex", self.seed))?;
        }
        let pos: u128 = self
            .word_pos
            .parse()
            .map_err(|_| format!("random stream position {:?}", self.word_pos))?;
        let mut r = RlRng::from_seed(seed);
        r.set_stream(self.stream);
        r.set_word_pos(pos);
        Ok(r)
    }
}

/// The environment between two steps: CartPole's state and both streams (resets, distractors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvState {
    pub state: [f64; 4],
    pub steps: usize,
    pub over: bool,
    pub resets: RngState,
    pub noise: RngState,
}

/// Everything `train_agent_checkpointed`'s loop holds between two steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoopState {
    pub format: u32,
    pub config: AgentConfig,
    pub seed: u64,
    pub step: usize,
    pub episodes: usize,
    pub obs: Vec<f64>,
    pub action: usize,
    pub eval_index: u64,
    pub eval_seconds: f64,
    /// Wall seconds of the run so far, evaluations included.
    pub elapsed_s: f64,
    pub steady_steps: usize,
    pub steady_seconds: f64,
    pub last_stats: UpdateStats,
    pub evals: Vec<EvalPoint>,
    pub env: EnvState,
    pub act: RngState,
    pub explore: RngState,
    pub replay: RngState,
    pub agent: AgentState,
    /// The replay buffer's file in the same folder.
    pub replay_file: String,
}

/// Writes `st` and `buf` into `dir` (see the module's documentation for the order).
pub(crate) fn save(dir: &Path, st: &LoopState, buf: &ReplayBuffer) -> Result<()> {
    let text = serde_json::to_vec(st).map_err(|e| CoreError::Checkpoint {
        path: dir.join(STATE_FILE),
        msg: e.to_string(),
    })?;
    // JSON writes NaN and ±∞ as null, which does not read back: a diverged agent keeps its
    // last readable checkpoint (a resume repeats the steps to here exactly) instead of one
    // that would refuse to load.
    if serde_json::from_slice::<LoopState>(&text).is_err() {
        eprintln!(
            "warning: {}: the agent holds non-finite values at step {}; keeping the previous checkpoint",
            dir.display(),
            st.step
        );
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    buf.save(&dir.join(&st.replay_file))?;
    ferrolab_core::run::write_atomic(&dir.join(STATE_FILE), &text)?;
    let entries = std::fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if is_replay_name(&name) && name != st.replay_file {
            std::fs::remove_file(e.path()).map_err(|err| CoreError::io(e.path(), err))?;
        }
    }
    Ok(())
}

fn is_replay_name(name: &str) -> bool {
    name.strip_prefix("replay-")
        .and_then(|s| s.strip_suffix(".bin"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The checkpoint in `dir`, if there is one, checked against the run it must continue: the
/// same configuration and seed, an observation of `dim` values. A damaged or foreign
/// checkpoint is a usage error naming the file (the folder is the caller's to remove).
pub(crate) fn load(
    dir: &Path,
    cfg: &AgentConfig,
    seed: u64,
    dim: usize,
) -> Result<Option<(LoopState, ReplayBuffer)>> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bad = |msg: String| {
        CoreError::Data(format!(
            "agent checkpoint {}: {msg}; remove the folder {} to start this agent again",
            path.display(),
            dir.display()
        ))
    };
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let st: LoopState = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("not a readable CartPole agent checkpoint ({e})")))?;
    if st.format != FORMAT {
        return Err(bad(format!(
            "format {} (this build reads {FORMAT})",
            st.format
        )));
    }
    if st.seed != seed {
        return Err(bad(format!("saved for seed {}, not {seed}", st.seed)));
    }
    if &st.config != cfg {
        return Err(bad("saved under another agent configuration".into()));
    }
    // A checkpoint is saved between steps of a running episode, never after its end.
    if st.step > cfg.steps
        || st.obs.len() != dim
        || st.action >= super::cartpole::N_ACTIONS
        || st.env.over
    {
        return Err(bad(format!(
            "inconsistent loop state (step {} of {}, an observation of {} values where {dim} \
             are expected, action {})",
            st.step,
            cfg.steps,
            st.obs.len(),
            st.action
        )));
    }
    if !is_replay_name(&st.replay_file) {
        return Err(bad(format!("bad replay file name {:?}", st.replay_file)));
    }
    let buf = ReplayBuffer::load(&dir.join(&st.replay_file), dim, cfg.steps.max(1))?;
    if buf.len() != st.step.min(cfg.steps.max(1)) {
        return Err(bad(format!(
            "the replay buffer holds {} transitions after step {}",
            buf.len(),
            st.step
        )));
    }
    Ok(Some((st, buf)))
}

/// A stream's saved position back as a generator, or the usage error naming the checkpoint.
pub(crate) fn rng_of(dir: &Path, what: &str, s: &RngState) -> Result<RlRng> {
    s.rng().map_err(|e| {
        CoreError::Data(format!(
            "agent checkpoint {}: {what}: {e}",
            dir.join(STATE_FILE).display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn a_stream_continues_from_its_saved_position() {
        let mut a = super::super::stream(7, "x");
        for _ in 0..13 {
            let _: u32 = a.random();
        }
        let _: u64 = a.random();
        let saved = RngState::of(&a);
        let mut b = saved.rng().unwrap();
        let next_a: Vec<u64> = (0..40).map(|_| a.random()).collect();
        let next_b: Vec<u64> = (0..40).map(|_| b.random()).collect();
        assert_eq!(next_a, next_b);
        let bad = RngState {
            seed: "zz".into(),
            ..saved.clone()
        };
        assert!(bad.rng().is_err());
        let bad = RngState {
            word_pos: "-1".into(),
            ..saved
        };
        assert!(bad.rng().is_err());
    }

    #[test]
    fn the_agent_streams_are_those_of_std_rng() {
        // The streams were StdRng before checkpoints existed; the same numbers keep every
        // published CartPole figure reproducible.
        let mut a = super::super::stream(3, "rl/act");
        let mut b = ferrolab_core::seed::rng(3, "rl/act");
        let xa: Vec<u64> = (0..100).map(|_| a.random()).collect();
        let xb: Vec<u64> = (0..100).map(|_| b.random()).collect();
        assert_eq!(xa, xb);
    }

    #[test]
    fn replay_names_are_recognised() {
        assert!(is_replay_name("replay-000001000.bin"));
        assert!(!is_replay_name("replay-.bin"));
        assert!(!is_replay_name("../replay-1.bin"));
        assert!(!is_replay_name("state.json"));
    }
}
