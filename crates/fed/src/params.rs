//! Model parameters as named f32 tensors, and their wire form: a safetensors file.
//!
//! The safetensors layout (8-byte little-endian header length, a JSON header mapping each name
//! to `{dtype, shape, data_offsets}`, then the raw little-endian data) is small enough to write
//! and read by hand, which keeps the runtime free of tensor libraries and lets the reader
//! validate everything a remote peer could get wrong: header bounds, dtype, offsets that
//! overlap or leave gaps, shapes that do not match the bytes, and non-finite values. Encoding is
//! deterministic (names sorted, offsets contiguous), so equal parameters give equal bytes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why bytes could not be read as parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamsError {
    /// The safetensors framing itself is wrong (length, JSON, offsets).
    #[error("malformed safetensors: {0}")]
    Malformed(String),
    /// A tensor holds NaN or an infinity.
    #[error("tensor `{name}` holds a non-finite value at index {index}")]
    NonFinite {
        /// Tensor name.
        name: String,
        /// Flat index of the first bad value.
        index: usize,
    },
    /// Shapes or names differ from what was expected.
    #[error("parameter mismatch: {0}")]
    Mismatch(String),
}

/// One named tensor: row-major f32 data with its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Dimensions; their product is `data.len()`.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A model's parameters (or an update, or a control variate): named tensors, kept sorted by name
/// so that iteration, flattening and encoding are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    tensors: BTreeMap<String, Tensor>,
}

/// A header entry as safetensors writes it.
#[derive(Serialize, Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Index of the first NaN or infinity in `v`. Every update a server accepts is checked, so
/// this scans 256 values at a time without an early exit inside the chunk (an exponent of all
/// ones is non-finite), which vectorises, and looks for the index only in a chunk that has one.
fn first_non_finite(v: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    v.chunks(256)
        .position(|c| {
            c.iter()
                .fold(false, |bad, x| bad | (x.to_bits() & EXP == EXP))
        })
        .and_then(|k| {
            let at = k * 256;
            v[at..].iter().position(|x| !x.is_finite()).map(|i| at + i)
        })
}

/// Header larger than this is refused before it is parsed (safetensors' own limit is 100 MB).
const MAX_HEADER: usize = 100 << 20;

impl Params {
    /// No tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// One tensor named `name` holding `data` (shape `[data.len()]`).
    pub fn flat(name: &str, data: Vec<f32>) -> Self {
        let mut p = Self::new();
        let n = data.len();
        p.tensors.insert(
            name.to_string(),
            Tensor {
                shape: vec![n],
                data,
            },
        );
        p
    }

    /// Adds or replaces a tensor; `shape`'s product must equal `data.len()`.
    pub fn insert(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<(), ParamsError> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(ParamsError::Mismatch(format!(
                "tensor `{name}`: shape {shape:?} needs {numel} values, got {}",
                data.len()
            )));
        }
        self.tensors
            .insert(name.to_string(), Tensor { shape, data });
        Ok(())
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Removes and returns a tensor.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// Tensors in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    /// Bytes on the wire as float32 (4 bytes per scalar), the unit of the communication counts.
    pub fn payload_bytes(&self) -> usize {
        self.numel() * 4
    }

    /// All values concatenated in name order.
    pub fn to_flat(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.numel());
        for t in self.tensors.values() {
            v.extend_from_slice(&t.data);
        }
        v
    }

    /// [`Params::to_flat`] without the copy when there is only one tensor (a model kept as
    /// one flat vector, as SD-GT's x̄ is): the server reads x̄ every round.
    pub fn flat_view(&self) -> std::borrow::Cow<'_, [f32]> {
        match self.tensors.values().next() {
            Some(t) if self.tensors.len() == 1 => std::borrow::Cow::Borrowed(&t.data),
            _ => std::borrow::Cow::Owned(self.to_flat()),
        }
    }

    /// [`Params::with_flat`] taking the vector: with one tensor it becomes that tensor's data
    /// without a copy.
    pub fn with_flat_vec(&self, flat: Vec<f32>) -> Result<Params, ParamsError> {
        match self.tensors.iter().next() {
            Some((name, t)) if self.tensors.len() == 1 && t.data.len() == flat.len() => {
                let mut out = Params::new();
                out.tensors.insert(
                    name.clone(),
                    Tensor {
                        shape: t.shape.clone(),
                        data: flat,
                    },
                );
                Ok(out)
            }
            _ => self.with_flat(&flat),
        }
    }

    /// Same names and shapes as `self`, values taken in order from `flat`.
    pub fn with_flat(&self, flat: &[f32]) -> Result<Params, ParamsError> {
        if flat.len() != self.numel() {
            return Err(ParamsError::Mismatch(format!(
                "flat vector has {} values, the template {}",
                flat.len(),
                self.numel()
            )));
        }
        let mut out = Params::new();
        let mut at = 0;
        for (name, t) in &self.tensors {
            let n = t.data.len();
            out.tensors.insert(
                name.clone(),
                Tensor {
                    shape: t.shape.clone(),
                    data: flat[at..at + n].to_vec(),
                },
            );
            at += n;
        }
        Ok(out)
    }

    /// Checks that `other` has exactly the names and shapes of `self`.
    pub fn check_same_layout(&self, other: &Params) -> Result<(), ParamsError> {
        for (name, t) in &self.tensors {
            match other.tensors.get(name) {
                None => return Err(ParamsError::Mismatch(format!("tensor `{name}` is missing"))),
                Some(o) if o.shape != t.shape => {
                    return Err(ParamsError::Mismatch(format!(
                        "tensor `{name}` has shape {:?}, expected {:?}",
                        o.shape, t.shape
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = other
            .tensors
            .keys()
            .find(|k| !self.tensors.contains_key(*k))
        {
            return Err(ParamsError::Mismatch(format!(
                "unexpected tensor `{extra}`"
            )));
        }
        Ok(())
    }

    /// First non-finite value, as an error.
    pub fn check_finite(&self) -> Result<(), ParamsError> {
        for (name, t) in &self.tensors {
            if let Some(index) = first_non_finite(&t.data) {
                return Err(ParamsError::NonFinite {
                    name: name.clone(),
                    index,
                });
            }
        }
        Ok(())
    }

    /// The safetensors encoding (dtype F32, names sorted, header padded to 8 bytes).
    pub fn to_safetensors(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut at = 0usize;
        for (name, t) in &self.tensors {
            let end = at + t.data.len() * 4;
            let entry = HeaderEntry {
                dtype: "F32".into(),
                shape: t.shape.clone(),
                data_offsets: [at, end],
            };
            // A derived Serialize of plain fields and numbers cannot fail.
            header.insert(
                name.clone(),
                serde_json::to_value(entry).unwrap_or_default(),
            );
            at = end;
        }
        let mut json = serde_json::Value::Object(header).to_string().into_bytes();
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + at);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        for t in self.tensors.values() {
            for v in &t.data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Reads a safetensors file, refusing anything but contiguous F32 tensors with finite values.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Params, ParamsError> {
        let bad = |m: String| ParamsError::Malformed(m);
        if bytes.len() < 8 {
            return Err(bad(format!(
                "{} bytes, shorter than the 8-byte header length",
                bytes.len()
            )));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[..8]);
        let hlen = u64::from_le_bytes(len8);
        if hlen > MAX_HEADER as u64 || hlen as usize > bytes.len() - 8 {
            return Err(bad(format!(
                "header length {hlen} exceeds the {} bytes that follow it",
                bytes.len() - 8
            )));
        }
        let hlen = hlen as usize;
        let header: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..8 + hlen])
                .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
        let data = &bytes[8 + hlen..];
        let mut entries: Vec<(String, HeaderEntry)> = Vec::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let e: HeaderEntry = serde_json::from_value(v)
                .map_err(|e| bad(format!("header entry `{name}`: {e}")))?;
            if e.dtype != "F32" {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {}, only F32 is read",
                    e.dtype
                )));
            }
            entries.push((name, e));
        }
        // Offsets must tile the data exactly: no overlap, no gap, nothing left over.
        entries.sort_by_key(|(_, e)| e.data_offsets);
        let mut at = 0usize;
        let mut out = Params::new();
        for (name, e) in entries {
            let [start, end] = e.data_offsets;
            if start != at || end < start || end > data.len() {
                return Err(bad(format!(
                    "tensor `{name}` has offsets [{start}, {end}], expected to start at {at} \
                     within {} data bytes",
                    data.len()
                )));
            }
            let numel = e
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor `{name}`: shape {:?} overflows", e.shape)))?;
            if numel.checked_mul(4) != Some(end - start) {
                return Err(bad(format!(
                    "tensor `{name}`: shape {:?} needs {} bytes, offsets give {}",
                    e.shape,
                    numel.saturating_mul(4),
                    end - start
                )));
            }
            let vals: Vec<f32> = data[start..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(index) = first_non_finite(&vals) {
                return Err(ParamsError::NonFinite { name, index });
            }
            out.tensors.insert(
                name,
                Tensor {
                    shape: e.shape,
                    data: vals,
                },
            );
            at = end;
        }
        if at != data.len() {
            return Err(bad(format!(
                "{} trailing data bytes after the last tensor",
                data.len() - at
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Params {
        let mut p = Params::new();
        p.insert("w", vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-30, 7.0])
            .unwrap();
        p.insert("b", vec![3], vec![0.25, 0.5, -0.75]).unwrap();
        p
    }

    #[test]
    fn roundtrip_is_exact_and_deterministic() {
        let p = sample();
        let bytes = p.to_safetensors();
        assert_eq!(bytes, p.clone().to_safetensors());
        assert_eq!(Params::from_safetensors(&bytes).unwrap(), p);
        // Header length is a multiple of 8, as the format recommends.
        let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(hlen % 8, 0);
    }

    #[test]
    fn rejects_truncated_nan_and_bad_offsets() {
        let p = sample();
        let bytes = p.to_safetensors();
        assert!(matches!(
            Params::from_safetensors(&bytes[..bytes.len() - 1]),
            Err(ParamsError::Malformed(_))
        ));
        assert!(Params::from_safetensors(&bytes[..4]).is_err());
        let mut nan = p.clone();
        nan.insert("b", vec![3], vec![0.0, f32::NAN, 1.0]).unwrap();
        let e = Params::from_safetensors(&nan.to_safetensors()).unwrap_err();
        assert_eq!(
            e,
            ParamsError::NonFinite {
                name: "b".into(),
                index: 1
            }
        );
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0, 0, 0, 0]);
        assert!(Params::from_safetensors(&extra).is_err());
        let mut huge = bytes;
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Params::from_safetensors(&huge).is_err());
    }

    #[test]
    fn layout_check_names_the_tensor() {
        let p = sample();
        let mut q = p.clone();
        q.insert("w", vec![3, 2], vec![0.0; 6]).unwrap();
        let e = p.check_same_layout(&q).unwrap_err().to_string();
        assert!(e.contains("`w`"), "{e}");
        let flat = p.to_flat();
        assert_eq!(p.with_flat(&flat).unwrap(), p);
        assert!(p.with_flat(&flat[1..]).is_err());
    }

    /// The chunked scan finds the first non-finite value wherever it is (first, last, inside
    /// and at the edges of a chunk, a short tail) and nothing in finite data.
    #[test]
    fn first_non_finite_matches_a_plain_scan() {
        let n = 256 * 3 + 17;
        let base: Vec<f32> = (0..n).map(|i| (i as f32 - 300.0) * 1e30).collect();
        assert_eq!(first_non_finite(&base), None);
        assert_eq!(first_non_finite(&[]), None);
        for at in [0, 1, 255, 256, 300, 511, 512, n - 17, n - 1] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut v = base.clone();
                v[at] = bad;
                if at + 5 < n {
                    v[at + 5] = f32::NAN;
                }
                assert_eq!(first_non_finite(&v), Some(at), "at {at}");
            }
        }
        assert_eq!(first_non_finite(&[f32::MAX, f32::MIN_POSITIVE, -0.0]), None);
    }

    /// The copy-free forms agree with the copying ones, for one tensor and for several.
    #[test]
    fn flat_view_and_with_flat_vec_match_the_copies() {
        let one = Params::flat("x", vec![1.0, -2.0, 3.0]);
        assert!(matches!(one.flat_view(), std::borrow::Cow::Borrowed(_)));
        for p in [one, sample()] {
            let flat = p.to_flat();
            assert_eq!(&*p.flat_view(), flat.as_slice());
            assert_eq!(p.with_flat_vec(flat.clone()).unwrap(), p);
            assert_eq!(
                p.with_flat_vec(flat.iter().map(|v| v * 2.0).collect())
                    .unwrap(),
                p.with_flat(&flat.iter().map(|v| v * 2.0).collect::<Vec<_>>())
                    .unwrap()
            );
            assert!(p.with_flat_vec(flat[1..].to_vec()).is_err());
        }
    }
}
