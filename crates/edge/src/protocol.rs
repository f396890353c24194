//! What travels between a mobile end and the edge: evolution task requests (the sampled frames
//! and the end's state), and model versions (the re-compressed model as an int8 blob with a
//! SHA-256 checksum). The in-process experiment passes these values directly; the NATS layer
//! (`src/net/`) sends their JSON / byte encodings. A blob whose checksum does not match is
//! rejected by [`ModelBlob::decode`], never loaded.

use crate::model::Mlp;
use ferrolab_compress::ops::{Int8Layer, LayerWeights, magnitude_prune};
use serde::{Deserialize, Serialize};

/// Why a blob or request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The blob's bytes do not hash to its checksum.
    #[error("model blob of end {end} version {version}: checksum mismatch (corrupt blob)")]
    Checksum { end: usize, version: u64 },
    /// The bytes cannot be a model.
    #[error("model blob: {0}")]
    Malformed(String),
    /// The request is inconsistent.
    #[error("task request: {0}")]
    BadRequest(String),
    /// The edge declined a valid task (its predicted gain is too small to be worth it).
    #[error("task declined: {0}")]
    Declined(String),
}

/// The drift type the mobile end detected (the sampling policy follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DriftType {
    /// Settled within a few window slides.
    Sudden,
    /// Steady progression through intermediate concepts.
    Incremental,
    /// Alternation between the old and the new concept.
    Gradual,
    /// Not classified (periodic trigger).
    Unknown,
}

impl DriftType {
    /// Name as in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            DriftType::Sudden => "sudden",
            DriftType::Incremental => "incremental",
            DriftType::Gradual => "gradual",
            DriftType::Unknown => "unknown",
        }
    }
    /// The type named `s`.
    pub fn parse(s: &str) -> Option<DriftType> {
        match s {
            "sudden" => Some(DriftType::Sudden),
            "incremental" => Some(DriftType::Incremental),
            "gradual" => Some(DriftType::Gradual),
            _ => None,
        }
    }
}

/// One uploaded frame: raw 8-bit grey pixels (what the camera produced; the edge labels it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Simulated capture time, seconds.
    pub t: f64,
    /// `side × side` grey levels.
    pub pixels: Vec<u8>,
}

impl Frame {
    /// Upload size in bytes.
    pub fn bytes(&self) -> usize {
        self.pixels.len()
    }
}

/// A mobile end's request to evolve its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// Mobile end id.
    pub end: usize,
    /// Task sequence number of this end (0, 1, …).
    pub seq: u64,
    /// The model version the end runs now.
    pub model_version: u64,
    /// Simulated time of the trigger, seconds.
    pub trigger_t: f64,
    /// The detected drift type.
    pub drift: DriftType,
    /// Label-free accuracy estimate (mean CC) of the current window.
    pub estimate: f64,
    /// The end's QoE threshold (accuracy), known to the edge from the original model.
    pub threshold: f64,
    /// Seconds of service left in the end's life (the scheduler's horizon).
    pub remaining_s: f64,
    /// The sampled frames.
    pub frames: Vec<Frame>,
}

impl TaskRequest {
    /// Upload size in bytes (frames only; the header is negligible).
    pub fn upload_bytes(&self) -> usize {
        self.frames.iter().map(Frame::bytes).sum()
    }

    /// Checks what the edge relies on.
    pub fn check(&self, side: usize) -> Result<(), ProtocolError> {
        if self.frames.is_empty() {
            return Err(ProtocolError::BadRequest(format!(
                "end {} task {}: no frames",
                self.end, self.seq
            )));
        }
        if let Some(f) = self.frames.iter().find(|f| f.pixels.len() != side * side) {
            return Err(ProtocolError::BadRequest(format!(
                "end {} task {}: frame of {} pixels, expected {}",
                self.end,
                self.seq,
                f.pixels.len(),
                side * side
            )));
        }
        Ok(())
    }
}

/// A model version as shipped: int8 codes + per-row scales + f32 biases, with its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBlob {
    /// Mobile end id.
    pub end: usize,
    /// Version (1 = the first evolved model; 0 is the factory model).
    pub version: u64,
    /// The encoded model ([`ModelBlob::encode`]).
    pub bytes: Vec<u8>,
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compresses `dense` as the mobile end runs it: magnitude pruning of each weight matrix to
/// `sparsity` (ferrolab-compress), then per-row int8 storage; returns the int8 layers and the
/// pruned dense model (its masks set) for the mask-keeping fine-tune.
pub fn prune(dense: &Mlp, sparsity: f64) -> Result<Mlp, ProtocolError> {
    let mut m = dense.clone();
    for l in 0..m.weights.len() {
        let pruned = magnitude_prune(&m.weights[l], sparsity)
            .map_err(|e| ProtocolError::Malformed(format!("pruning layer {l}: {e}")))?;
        m.masks[l] = Some(pruned.iter().map(|v| *v != 0.0).collect());
        m.weights[l] = pruned;
    }
    Ok(m)
}

impl ModelBlob {
    /// Quantises `model` to int8 (per output row) and encodes it.
    pub fn encode(end: usize, version: u64, model: &Mlp) -> ModelBlob {
        let mut out = Vec::new();
        out.extend_from_slice(b"AEVO1");
        out.extend_from_slice(&(model.sizes.len() as u32).to_le_bytes());
        for s in &model.sizes {
            out.extend_from_slice(&(*s as u32).to_le_bytes());
        }
        for l in 0..model.weights.len() {
            let lw = LayerWeights {
                weight: model.weights[l].clone(),
                out_channels: model.sizes[l + 1],
                bn_scale: None,
            };
            let q = Int8Layer::store(&lw);
            for s in &q.scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
            out.extend(q.codes.iter().map(|c| *c as u8));
            for b in &model.biases[l] {
                out.extend_from_slice(&b.to_le_bytes());
            }
        }
        let sha256 = sha256_hex(&out);
        ModelBlob {
            end,
            version,
            bytes: out,
            sha256,
        }
    }

    /// Verifies the checksum and decodes the model the mobile end runs (int8 weights
    /// dequantised; zeros stay zeros, so the pruning survives).
    pub fn decode(&self) -> Result<Mlp, ProtocolError> {
        if sha256_hex(&self.bytes) != self.sha256 {
            return Err(ProtocolError::Checksum {
                end: self.end,
                version: self.version,
            });
        }
        let b = &self.bytes;
        let bad = |w: &str| ProtocolError::Malformed(w.to_string());
        if b.len() < 9 || &b[..5] != b"AEVO1" {
            return Err(bad("no AEVO1 header"));
        }
        let mut pos = 5;
        let u32_at = |pos: &mut usize| -> Result<u32, ProtocolError> {
            let s = b.get(*pos..*pos + 4).ok_or_else(|| bad("truncated"))?;
            *pos += 4;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        let nl = u32_at(&mut pos)? as usize;
        if !(2..=16).contains(&nl) {
            return Err(bad("layer count outside 2..=16"));
        }
        let mut sizes = Vec::with_capacity(nl);
        for _ in 0..nl {
            let s = u32_at(&mut pos)? as usize;
            if s == 0 || s > 1 << 16 {
                return Err(bad("layer width outside 1..=65536"));
            }
            sizes.push(s);
        }
        let f32s = |pos: &mut usize, n: usize| -> Result<Vec<f32>, ProtocolError> {
            let s = b.get(*pos..*pos + 4 * n).ok_or_else(|| bad("truncated"))?;
            *pos += 4 * n;
            Ok(s.chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for w in sizes.windows(2) {
            let (i, o) = (w[0], w[1]);
            let scales = f32s(&mut pos, o)?;
            let codes = b.get(pos..pos + i * o).ok_or_else(|| bad("truncated"))?;
            pos += i * o;
            let q = Int8Layer {
                codes: codes.iter().map(|c| *c as i8).collect(),
                scales,
                fan_in: i,
            };
            let lw = LayerWeights {
                weight: vec![0.0; i * o],
                out_channels: o,
                bn_scale: None,
            };
            weights.push(q.dequantize(&lw));
            biases.push(f32s(&mut pos, o)?);
        }
        if pos != b.len() {
            return Err(bad("trailing bytes"));
        }
        let masks = vec![None; weights.len()];
        Ok(Mlp {
            sizes,
            weights,
            biases,
            masks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_and_corruption() {
        let m = prune(&Mlp::new(&[16, 8, 4], 2), 0.5).unwrap();
        let blob = ModelBlob::encode(3, 1, &m);
        let d = blob.decode().unwrap();
        assert_eq!(d.sizes, m.sizes);
        let x: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
        let (a, b) = (m.forward(&x).probs, d.forward(&x).probs);
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 0.02));
        assert!(d.sparsity() >= 0.49);
        let mut bad = blob.clone();
        bad.bytes[20] ^= 1;
        assert!(matches!(
            bad.decode(),
            Err(ProtocolError::Checksum { end: 3, .. })
        ));
    }
}
