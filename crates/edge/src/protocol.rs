//! What travels between a mobile end and the edge: evolution task requests (the sampled frames
//! and the end's state), and model versions (the re-compressed model as an int8 blob with a
//! SHA-256 checksum). The in-process experiment passes these values directly; the NATS layer
//! (`src/net/`) sends their JSON / byte encodings. A blob whose checksum does not match is
//! rejected by [`ModelBlob::decode`], never loaded.

use crate::model::Mlp;
use ferrolab_compress::ops::{Int8Layer, LayerWeights, magnitude_prune};
use ferrolab_vision::tiny::ConvPool;
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

/// Prunes `dense` as the mobile end runs it: magnitude pruning of each weight matrix (and of
/// the conv stem's filters) to `sparsity` (ferrolab-compress); returns the pruned model (its
/// masks set) for the mask-keeping fine-tune ([`ModelBlob::encode`] then stores it int8).
pub fn prune(dense: &Mlp, sparsity: f64) -> Result<Mlp, ProtocolError> {
    let mut m = dense.clone();
    for l in 0..m.weights.len() {
        let pruned = magnitude_prune(&m.weights[l], sparsity)
            .map_err(|e| ProtocolError::Malformed(format!("pruning layer {l}: {e}")))?;
        m.masks[l] = Some(pruned.iter().map(|v| *v != 0.0).collect());
        m.weights[l] = pruned;
    }
    if let Some(st) = m.stem.as_mut() {
        let pruned = magnitude_prune(&st.weight, sparsity)
            .map_err(|e| ProtocolError::Malformed(format!("pruning the conv stem: {e}")))?;
        st.mask = Some(pruned.iter().map(|v| *v != 0.0).collect());
        st.weight = pruned;
    }
    Ok(m)
}

/// Appends one layer as int8 codes with per-output-row scales, then its float biases.
fn put_int8(out: &mut Vec<u8>, weight: &[f32], out_channels: usize, bias: &[f32]) {
    let lw = LayerWeights {
        weight: weight.to_vec(),
        out_channels,
        bn_scale: None,
    };
    let q = Int8Layer::store(&lw);
    for s in &q.scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend(q.codes.iter().map(|c| *c as u8));
    for b in bias {
        out.extend_from_slice(&b.to_le_bytes());
    }
}

/// Largest conv stem a blob may declare (a corrupt header must not ask for a huge buffer).
const STEM_LIMITS: [(&str, u32); 4] = [
    ("input channels", 64),
    ("input side", 1024),
    ("filters", 1024),
    ("kernel", 15),
];

impl ModelBlob {
    /// Quantises `model` to int8 (per output row) and encodes it.
    pub fn encode(end: usize, version: u64, model: &Mlp) -> ModelBlob {
        let mut out = Vec::new();
        // AEVO1: fully connected only; AEVO2: a conv stem's shape and int8 filters first.
        match &model.stem {
            None => out.extend_from_slice(b"AEVO1"),
            Some(st) => {
                out.extend_from_slice(b"AEVO2");
                for v in [st.in_channels, st.side, st.out_channels, st.kernel] {
                    out.extend_from_slice(&(v as u32).to_le_bytes());
                }
                put_int8(&mut out, &st.weight, st.out_channels, &st.bias);
            }
        }
        out.extend_from_slice(&(model.sizes.len() as u32).to_le_bytes());
        for s in &model.sizes {
            out.extend_from_slice(&(*s as u32).to_le_bytes());
        }
        for l in 0..model.weights.len() {
            put_int8(
                &mut out,
                &model.weights[l],
                model.sizes[l + 1],
                &model.biases[l],
            );
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
        if b.len() < 9 || (&b[..5] != b"AEVO1" && &b[..5] != b"AEVO2") {
            return Err(bad("no AEVO1/AEVO2 header"));
        }
        let mut pos = 5;
        let u32_at = |pos: &mut usize| -> Result<u32, ProtocolError> {
            let s = b.get(*pos..*pos + 4).ok_or_else(|| bad("truncated"))?;
            *pos += 4;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        let f32s = |pos: &mut usize, n: usize| -> Result<Vec<f32>, ProtocolError> {
            let s = b.get(*pos..*pos + 4 * n).ok_or_else(|| bad("truncated"))?;
            *pos += 4 * n;
            Ok(s.chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        // One int8 layer of `o` rows of `fan_in` codes: scales, codes, biases.
        let int8 = |pos: &mut usize,
                    fan_in: usize,
                    o: usize|
         -> Result<(Vec<f32>, Vec<f32>), ProtocolError> {
            let scales = f32s(pos, o)?;
            let codes = b
                .get(*pos..*pos + fan_in * o)
                .ok_or_else(|| bad("truncated"))?;
            *pos += fan_in * o;
            let q = Int8Layer {
                codes: codes.iter().map(|c| *c as i8).collect(),
                scales,
                fan_in,
            };
            let lw = LayerWeights {
                weight: vec![0.0; fan_in * o],
                out_channels: o,
                bn_scale: None,
            };
            Ok((q.dequantize(&lw), f32s(pos, o)?))
        };
        let stem = if &b[..5] == b"AEVO2" {
            let mut dims = [0usize; 4];
            for (d, (what, max)) in dims.iter_mut().zip(STEM_LIMITS) {
                let v = u32_at(&mut pos)?;
                if v == 0 || v > max {
                    return Err(bad(&format!("conv stem {what} {v} outside 1..={max}")));
                }
                *d = v as usize;
            }
            let [ci, side, co, k] = dims;
            let (weight, bias) = int8(&mut pos, ci * k * k, co)?;
            let st = ConvPool {
                in_channels: ci,
                side,
                out_channels: co,
                kernel: k,
                weight,
                bias,
                mask: None,
            };
            st.check().map_err(|e| bad(&e))?;
            Some(st)
        } else {
            None
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
        if let Some(st) = &stem
            && sizes[0] != st.output_len()
        {
            return Err(bad(&format!(
                "first layer width {} is not the conv stem's output {}",
                sizes[0],
                st.output_len()
            )));
        }
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for w in sizes.windows(2) {
            let (wt, bs) = int8(&mut pos, w[0], w[1])?;
            weights.push(wt);
            biases.push(bs);
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
            stem,
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

    /// A model with a conv stem travels as AEVO2: pruned stem and layers, int8, decoded to
    /// the same shape and (within int8 error) the same outputs; a corrupt stem header whose
    /// checksum was recomputed is refused by the bounds check, not allocated.
    #[test]
    fn stem_blob_round_trip_and_bad_header() {
        let m = prune(&Mlp::with_stem(1, 14, 4, 3, &[16, 10], 5), 0.5).unwrap();
        let st = m.stem.as_ref().unwrap();
        assert!(st.mask.as_ref().unwrap().iter().filter(|k| !**k).count() >= st.weight.len() / 2);
        let blob = ModelBlob::encode(1, 2, &m);
        assert_eq!(&blob.bytes[..5], b"AEVO2");
        let d = blob.decode().unwrap();
        assert!(d.same_shape(&m));
        let x: Vec<f32> = (0..196)
            .map(|i| ((i * 31 % 17) as f32 / 8.5) - 1.0)
            .collect();
        let (a, b) = (m.forward(&x).probs, d.forward(&x).probs);
        assert!(
            a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 0.03),
            "{a:?} vs {b:?}"
        );
        assert!(d.sparsity() >= 0.49);
        let mut bytes = blob.bytes.clone();
        bytes[5..9].copy_from_slice(&100_000u32.to_le_bytes());
        let forged = ModelBlob {
            sha256: sha256_hex(&bytes),
            bytes,
            ..blob.clone()
        };
        let e = forged.decode().unwrap_err().to_string();
        assert!(e.contains("input channels 100000"), "{e}");
        let mut bytes = blob.bytes.clone();
        bytes.truncate(40);
        let cut = ModelBlob {
            sha256: sha256_hex(&bytes),
            bytes,
            ..blob
        };
        assert!(cut.decode().unwrap_err().to_string().contains("truncated"));
    }
}
