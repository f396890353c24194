//! The replay buffer (the reference's `replay_buffer.py`): a ring of transitions
//! `(s, a, r, s', not_done, not_done_no_max)`, sampled uniformly without replacement.
//! `not_done_no_max` is 1 when the episode went on or was only cut by the time limit, so the
//! Q target bootstraps through truncation ("allow infinite bootstrap" in `train.py`).
//!
//! Observations are stored in f32, as the reference's buffer does (`jnp.float32`): with 256
//! distractors and the reference's 200k-step capacity that is 416 MB instead of 832.

use super::RlRng;
use ferrolab_core::{CoreError, Result};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// The first bytes of a saved buffer (format version 1).
const MAGIC: &[u8; 8] = b"FLRLRB01";

/// A minibatch, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub n: usize,
    /// Observation size.
    pub dim: usize,
    pub obs: Vec<f64>,
    pub actions: Vec<usize>,
    pub rewards: Vec<f64>,
    pub next_obs: Vec<f64>,
    /// 0 after any episode end (termination or time limit), else 1.
    pub not_done: Vec<f64>,
    /// 0 only after a true termination: the Q target's bootstrap mask.
    pub not_done_no_max: Vec<f64>,
}

/// A fixed-capacity ring of transitions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer {
    dim: usize,
    capacity: usize,
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    actions: Vec<usize>,
    rewards: Vec<f64>,
    not_done: Vec<f64>,
    not_done_no_max: Vec<f64>,
    idx: usize,
    full: bool,
}

impl ReplayBuffer {
    /// A buffer of `capacity` transitions with observations of size `dim`.
    pub fn new(dim: usize, capacity: usize) -> Result<Self> {
        if dim == 0 || capacity == 0 {
            return Err(CoreError::Data(format!(
                "replay buffer: need positive sizes, got dim={dim} capacity={capacity}"
            )));
        }
        Ok(ReplayBuffer {
            dim,
            capacity,
            obs: vec![0.0; capacity * dim],
            next_obs: vec![0.0; capacity * dim],
            actions: vec![0; capacity],
            rewards: vec![0.0; capacity],
            not_done: vec![0.0; capacity],
            not_done_no_max: vec![0.0; capacity],
            idx: 0,
            full: false,
        })
    }

    /// Transitions held.
    pub fn len(&self) -> usize {
        if self.full { self.capacity } else { self.idx }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Stores a transition, overwriting the oldest once full. `done`: the episode ended here;
    /// `terminated`: it ended by the pole falling or the cart leaving (not the time limit).
    pub fn add(
        &mut self,
        obs: &[f64],
        action: usize,
        reward: f64,
        next_obs: &[f64],
        done: bool,
        terminated: bool,
    ) -> Result<()> {
        if obs.len() != self.dim || next_obs.len() != self.dim {
            return Err(CoreError::Data(format!(
                "replay buffer: observations of {} and {} values, expected {}",
                obs.len(),
                next_obs.len(),
                self.dim
            )));
        }
        let (i, d) = (self.idx, self.dim);
        for (dst, &src) in self.obs[i * d..(i + 1) * d].iter_mut().zip(obs) {
            *dst = src as f32;
        }
        for (dst, &src) in self.next_obs[i * d..(i + 1) * d].iter_mut().zip(next_obs) {
            *dst = src as f32;
        }
        self.actions[i] = action;
        self.rewards[i] = reward;
        self.not_done[i] = if done { 0.0 } else { 1.0 };
        self.not_done_no_max[i] = if terminated { 0.0 } else { 1.0 };
        self.idx = (self.idx + 1) % self.capacity;
        self.full = self.full || self.idx == 0;
        Ok(())
    }

    /// `min(n, len)` distinct transitions, uniformly (`np.random.choice(len, n,
    /// replace=False)`).
    pub fn sample(&self, n: usize, rng: &mut RlRng) -> Batch {
        let idx = rand::seq::index::sample(rng, self.len(), n.min(self.len())).into_vec();
        self.gather(&idx)
    }

    /// The transitions at `idx`.
    pub fn gather(&self, idx: &[usize]) -> Batch {
        let d = self.dim;
        let mut b = Batch {
            n: idx.len(),
            dim: d,
            obs: Vec::with_capacity(idx.len() * d),
            actions: Vec::with_capacity(idx.len()),
            rewards: Vec::with_capacity(idx.len()),
            next_obs: Vec::with_capacity(idx.len() * d),
            not_done: Vec::with_capacity(idx.len()),
            not_done_no_max: Vec::with_capacity(idx.len()),
        };
        for &i in idx {
            let widen = |v: &f32| f64::from(*v);
            b.obs.extend(self.obs[i * d..(i + 1) * d].iter().map(widen));
            b.next_obs
                .extend(self.next_obs[i * d..(i + 1) * d].iter().map(widen));
            b.actions.push(self.actions[i]);
            b.rewards.push(self.rewards[i]);
            b.not_done.push(self.not_done[i]);
            b.not_done_no_max.push(self.not_done_no_max[i]);
        }
        b
    }

    /// Saves the held transitions to `path` in one go: written beside it, then renamed over
    /// it, so a stop while writing leaves the previous file whole. The ring's rows are
    /// written as they lie (f32 observations stay f32), so [`ReplayBuffer::load`] rebuilds
    /// the buffer bit for bit.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| CoreError::Checkpoint {
            path: path.to_path_buf(),
            msg: e.to_string(),
        };
        let written = self
            .write_to(&tmp)
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            // A full disk must not leave up to ~0.4 GB of half buffer behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    fn write_to(&self, tmp: &Path) -> std::io::Result<()> {
        let rows = self.len();
        let d = self.dim;
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(tmp)?);
        w.write_all(MAGIC)?;
        for v in [d, self.capacity, self.idx, usize::from(self.full), rows] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        for v in self.obs[..rows * d]
            .iter()
            .chain(&self.next_obs[..rows * d])
        {
            w.write_all(&v.to_le_bytes())?;
        }
        for &a in &self.actions[..rows] {
            w.write_all(&(a as u32).to_le_bytes())?;
        }
        for v in self.rewards[..rows]
            .iter()
            .chain(&self.not_done[..rows])
            .chain(&self.not_done_no_max[..rows])
        {
            w.write_all(&v.to_le_bytes())?;
        }
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }

    /// A buffer saved by [`ReplayBuffer::save`]. Its observation size and capacity must be
    /// `dim` and `capacity` (the configuration the agent resumes with); a file that is
    /// truncated, padded or from another format is refused with its path.
    pub fn load(path: &Path, dim: usize, capacity: usize) -> Result<Self> {
        let bad = |msg: String| CoreError::Data(format!("replay buffer {}: {msg}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut read = |buf: &mut [u8]| {
            r.read_exact(buf)
                .map_err(|_| bad("truncated (the file ends early)".into()))
        };
        let mut magic = [0u8; 8];
        read(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a ferrolab replay buffer".into()));
        }
        let mut head = [0u64; 5];
        for h in head.iter_mut() {
            let mut b = [0u8; 8];
            read(&mut b)?;
            *h = u64::from_le_bytes(b);
        }
        let [d, cap, idx, full, rows] = head;
        if d != dim as u64 || cap != capacity as u64 {
            return Err(bad(format!(
                "holds observations of {d} values and room for {cap} transitions; this agent \
                 needs {dim} and {capacity}"
            )));
        }
        let full = match full {
            0 => false,
            1 => true,
            v => return Err(bad(format!("bad ring flag {v}"))),
        };
        let expected_rows = if full { cap } else { idx };
        if idx >= cap || rows != expected_rows {
            return Err(bad(format!(
                "inconsistent ring: {rows} rows, position {idx} of {cap}"
            )));
        }
        let rows = rows as usize;
        let want = 8 + 5 * 8 + (rows * dim * 2) as u64 * 4 + rows as u64 * (4 + 3 * 8);
        if len != want {
            return Err(bad(format!("{len} bytes where its header implies {want}")));
        }
        let mut buf = ReplayBuffer::new(dim, capacity)?;
        buf.idx = idx as usize;
        buf.full = full;
        let mut b4 = [0u8; 4];
        let mut b8 = [0u8; 8];
        for v in buf.obs[..rows * dim].iter_mut() {
            read(&mut b4)?;
            *v = f32::from_le_bytes(b4);
        }
        for v in buf.next_obs[..rows * dim].iter_mut() {
            read(&mut b4)?;
            *v = f32::from_le_bytes(b4);
        }
        for a in buf.actions[..rows].iter_mut() {
            read(&mut b4)?;
            *a = u32::from_le_bytes(b4) as usize;
            if *a >= super::cartpole::N_ACTIONS {
                return Err(bad(format!("action {a} (CartPole has 2)")));
            }
        }
        for v in buf.rewards[..rows]
            .iter_mut()
            .chain(buf.not_done[..rows].iter_mut())
            .chain(buf.not_done_no_max[..rows].iter_mut())
        {
            read(&mut b8)?;
            *v = f64::from_le_bytes(b8);
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ring_and_masks() {
        let mut buf = ReplayBuffer::new(2, 3).unwrap();
        assert!(buf.is_empty());
        for t in 0..4 {
            let x = t as f64;
            buf.add(&[x, x], t % 2, 1.0, &[x + 1.0, x], t == 1 || t == 3, t == 3)
                .unwrap();
        }
        assert_eq!(buf.len(), 3);
        // Slot 0 now holds t = 3 (terminated), slots 1, 2 hold t = 1 (time limit), t = 2.
        let b = buf.gather(&[0, 1, 2]);
        assert_eq!(b.obs, vec![3.0, 3.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(b.actions, vec![1, 1, 0]);
        assert_eq!(b.not_done, vec![0.0, 0.0, 1.0]);
        assert_eq!(b.not_done_no_max, vec![0.0, 1.0, 1.0]);
        let mut rng = RlRng::seed_from_u64(0);
        let s = buf.sample(10, &mut rng);
        assert_eq!(s.n, 3);
        let mut firsts: Vec<i64> = s.obs.chunks(2).map(|r| r[0] as i64).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, vec![1, 2, 3]);
        assert!(buf.add(&[0.0], 0, 0.0, &[0.0, 0.0], false, false).is_err());
    }
}
