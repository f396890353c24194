//! HyPHEN's `hcnn` binary files as reader targets: evaluation-key bundles (`eval.keys`, read
//! by `hcnn infer`) and ciphertext files (inputs read by `infer`, outputs read by `decrypt`).
//!
//! Both are an outer frame (magic, version, length-prefixed sections, checksum) around the
//! scheme's own framed objects (kind, parameter fingerprint, payload length, checksum). A
//! mutant usually edits one section — the JSON header, or a field or the residues of one
//! framed object — and then re-seals the inner and outer checksums, so that it reaches the
//! range and size checks behind them; sometimes it leaves a stale checksum or damages the
//! frame itself.
//!
//! The parameters are a small insecure test chain (N = 2^11, one level) for an 8 × 8 / width-4
//! network, so a seed is a few hundred KiB; the child rebuilds the same context and, for
//! decryption, the same seeded secret key.

use crate::mutate;
use crate::rng::Rng;
use ferrolab_data::DataError;
use ferrolab_fhe::hyphen::hcnn::{self, ClientKeys, ServerKeys, Shape};
use ferrolab_fhe::hyphen::layout::Map;
use ferrolab_fhe::params::{Context, ParamSpec};
use ferrolab_fhe::{Encryptor, KeyGenerator, serial};
use std::path::Path;
use std::sync::Arc;

const LOG_N: u32 = 11;
const LEVELS: usize = 1;
const KEY_SEED: u64 = 0x4843_4e4e;
const SHAPE: Shape = Shape {
    side: 8,
    width: 4,
    boot_levels: None,
};

fn spec() -> ParamSpec {
    hcnn::test_spec(LOG_N, LEVELS)
}

fn context() -> Option<Arc<Context>> {
    Context::new(spec()).ok()
}

/// Bytes of one polynomial over every limb of the fuzz parameters.
fn poly_bytes() -> usize {
    let s = spec();
    (s.q_bits.len() + s.p_bits.len()) * (1usize << s.log_n) * 8
}

fn client(ctx: &Arc<Context>) -> ClientKeys {
    let mut kg = KeyGenerator::new_seeded(ctx, KEY_SEED);
    ClientKeys {
        ctx: ctx.clone(),
        sk: kg.secret_key().clone(),
        pk: kg.public_key(),
        shape: SHAPE,
    }
}

fn one(name: &str, bytes: Vec<u8>) -> crate::readers::Seed {
    crate::readers::Seed {
        name: name.into(),
        kind: crate::readers::SeedKind::File,
        members: vec![(name.into(), bytes)],
    }
}

/// Two bundles: relinearisation plus two rotation keys, and relinearisation only.
pub fn key_seeds() -> Vec<crate::readers::Seed> {
    let Some(ctx) = context() else {
        return Vec::new();
    };
    [(vec![1i64, 8], "rot.keys"), (vec![], "relin.keys")]
        .into_iter()
        .filter_map(|(steps, name)| {
            let mut kg = KeyGenerator::new_seeded(&ctx, KEY_SEED);
            let keys = ServerKeys {
                ctx: ctx.clone(),
                keys: kg.evaluation_keys(&steps, false),
                shape: SHAPE,
            };
            Some(one(name, keys.to_bytes().ok()?))
        })
        .collect()
}

/// An encrypted input (what `hcnn encrypt` writes) and an output with two ciphertexts at
/// different levels and the logit map `decrypt` reads.
pub fn ct_seeds() -> Vec<crate::readers::Seed> {
    let Some(ctx) = context() else {
        return Vec::new();
    };
    let keys = client(&ctx);
    let mut enc = Encryptor::new_seeded(&ctx, 5);
    let mut x = Map::zeros(3, SHAPE.side);
    for (i, v) in x.v.iter_mut().enumerate() {
        *v = ((i * 37) % 101) as f64 / 101.0;
    }
    let mut out = Vec::new();
    if let Ok(b) = hcnn::encrypt_with(&keys, &x, &mut enc) {
        out.push(one("x.ct", b));
    }
    let cts: Option<Vec<_>> = [1usize, 0]
        .iter()
        .map(|&level| {
            let v: Vec<f64> = (0..ctx.slots()).map(|i| (i % 13) as f64 - 6.0).collect();
            let pt = ctx.encode_real(&v, level, ctx.scale_at(level)).ok()?;
            enc.encrypt(&keys.pk, &pt).ok()
        })
        .collect();
    if let Some(cts) = cts {
        let slots: Vec<(usize, usize)> = (0..10).map(|i| (i % 2, i * 3)).collect();
        out.push(one(
            "y.ct",
            hcnn::output_file(&ctx, SHAPE, &slots, 1.0, &cts),
        ));
    }
    out
}

fn malformed(path: &Path, e: impl ToString) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        at: "hcnn file".into(),
        msg: e.to_string(),
    }
}

/// What `hcnn infer --keys` does with the bundle; a bundle that loads must be a fixpoint of
/// save/load.
pub fn read_keys(path: &Path) -> ferrolab_data::Result<()> {
    let keys = ServerKeys::load(path).map_err(|e| malformed(path, e))?;
    let bytes = keys.to_bytes().map_err(|e| malformed(path, e))?;
    let again = ServerKeys::from_bytes(&bytes, path)
        .and_then(|k| k.to_bytes())
        .map_err(|e| malformed(path, e))?;
    assert!(
        again == bytes,
        "hcnn-keys: a loaded bundle does not survive save/load"
    );
    Ok(())
}

/// What `hcnn infer` checks of an input before any work, or what `hcnn decrypt` does with an
/// output, under the fuzz parameters.
pub fn read_ct(path: &Path) -> ferrolab_data::Result<()> {
    let ctx = context().ok_or_else(|| malformed(path, "the fuzz parameters do not build"))?;
    let (h, cts) = hcnn::read_cts(&ctx, path).map_err(|e| malformed(path, e))?;
    if h.get("kind").and_then(serde_json::Value::as_str) == Some("input") {
        hcnn::check_input(&ctx, SHAPE, &h, &cts, path).map_err(|e| malformed(path, e))
    } else {
        let keys = client(&ctx);
        hcnn::decrypt_output(&ctx, &keys.sk, &h, &cts, path)
            .map(drop)
            .map_err(|e| malformed(path, e))
    }
}

/// A field of a framed object's payload the mutator aims at: offset and width in bytes.
#[derive(Debug, Clone, Copy)]
struct Field {
    at: usize,
    width: usize,
    float: bool,
}

fn u32_at(p: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// The count and element fields of a compressed key payload, walked as the reader does.
fn key_fields(p: &[u8], poly: usize) -> Vec<Field> {
    let int = |at, width| Field {
        at,
        width,
        float: false,
    };
    let mut f = vec![int(0, 1)];
    let mut pos = 1;
    let swk = |pos: &mut usize, f: &mut Vec<Field>| -> Option<()> {
        f.push(int(*pos, 4));
        let d = u32_at(p, *pos)?.min(64);
        *pos += 4 + d * (poly + 32);
        Some(())
    };
    if p.first() == Some(&1) && swk(&mut pos, &mut f).is_none() {
        return f;
    }
    f.push(int(pos, 4));
    let count = u32_at(p, pos).unwrap_or(0).min(64);
    pos += 4;
    for _ in 0..count {
        if pos + 8 > p.len() {
            break;
        }
        f.push(int(pos, 8));
        pos += 8;
        if swk(&mut pos, &mut f).is_none() {
            break;
        }
    }
    f.retain(|x| x.at + x.width <= p.len());
    f
}

/// The fields of a parameter payload: log N, log scale, the insecure flag, both prime lists.
fn param_fields(p: &[u8]) -> Vec<Field> {
    let int = |at, width| Field {
        at,
        width,
        float: false,
    };
    let mut f = vec![int(0, 4), int(4, 4), int(8, 1)];
    let mut pos = 9;
    for _ in 0..2 {
        f.push(int(pos, 4));
        let k = u32_at(p, pos).unwrap_or(0).min(64);
        pos += 4;
        for i in 0..k {
            f.push(int(pos + 4 * i, 4));
        }
        pos += 4 * k;
    }
    f.retain(|x| x.at + x.width <= p.len());
    f
}

/// The header fields of a ciphertext payload: level, scale, number of parts.
fn ct_fields() -> Vec<Field> {
    vec![
        Field {
            at: 0,
            width: 4,
            float: false,
        },
        Field {
            at: 4,
            width: 8,
            float: true,
        },
        Field {
            at: 12,
            width: 4,
            float: false,
        },
    ]
}

fn set_field(rng: &mut Rng, p: &mut [u8], f: Field) {
    let v: u64 = if f.float {
        rng.pick(&[
            0.0f64,
            -1.0,
            0.5,
            1.0,
            f64::NAN,
            f64::INFINITY,
            (40f64).exp2(),
            (39f64).exp2(),
            1e308,
        ])
        .to_bits()
    } else {
        *rng.pick(&[
            0,
            1,
            2,
            3,
            4,
            7,
            11,
            16,
            17,
            40,
            60,
            61,
            2047,
            2048,
            4095,
            4096,
            1 << 31,
            u64::from(u32::MAX),
            u64::MAX,
        ])
    };
    let old = p[f.at..f.at + f.width].to_vec();
    p[f.at..f.at + f.width].copy_from_slice(&v.to_le_bytes()[..f.width]);
    if p[f.at..f.at + f.width] == old[..] {
        // Unchanged: nudge it instead.
        p[f.at] = p[f.at].wrapping_add(1);
    }
}

/// Mutates one framed object (a section): a payload field, the payload bytes, or the object's
/// header; mostly re-sealed so the payload checks are reached.
fn mutate_object(rng: &mut Rng, obj: &mut Vec<u8>, fields: impl Fn(&[u8]) -> Vec<Field>) {
    let h = serial::FRAME_HEADER_BYTES;
    if obj.len() < h + 8 || rng.chance(0.05) {
        mutate::bytes(rng, obj, &[]);
        return;
    }
    let mut head = obj[..h].to_vec();
    let mut payload = obj[h..obj.len() - 8].to_vec();
    let fs = fields(&payload);
    let r = rng.below(10);
    if r < 5 && !fs.is_empty() {
        let f = *rng.pick(&fs);
        set_field(rng, &mut payload, f);
    } else if r < 9 {
        mutate::bytes(rng, &mut payload, &[]);
    } else {
        // Magic, version, kind, fingerprint (the length is rewritten by the re-seal).
        mutate::bytes(rng, &mut head, &[]);
        head.resize(h, 0);
    }
    let mut out = head;
    out.extend_from_slice(&payload);
    out.extend_from_slice(&[0; 8]);
    if rng.chance(0.9) {
        serial::reseal(&mut out);
    }
    *obj = out;
}

/// Mutates a key bundle (`keys`) or a ciphertext file.
pub fn mutate(rng: &mut Rng, keys: bool, bytes: &mut Vec<u8>) {
    let Some(mut secs) = hcnn::file_sections(bytes) else {
        mutate::bytes(rng, bytes, &[]);
        return;
    };
    if secs.is_empty() || rng.chance(0.08) {
        // The outer frame itself: magic, version, section lengths, truncation.
        mutate::bytes(rng, bytes, &[]);
        return;
    }
    let r = rng.below(10);
    if r < 2 {
        // The JSON header (shape, kind, parameter fingerprint, logit slots).
        if !(rng.chance(0.5) && mutate::numbers(rng, &mut secs[0])) {
            mutate::text(rng, &mut secs[0], &[]);
        }
    } else if r < 3 {
        // The section list: one dropped, duplicated or two swapped.
        let n = secs.len();
        match rng.below(3) {
            0 => {
                secs.remove(rng.below(n));
            }
            1 => {
                let s = secs[rng.below(n)].clone();
                secs.insert(rng.below(n + 1), s);
            }
            _ => secs.swap(rng.below(n), rng.below(n)),
        }
    } else if secs.len() > 1 {
        let i = 1 + rng.below(secs.len() - 1);
        let poly = poly_bytes();
        if keys && i == 1 {
            mutate_object(rng, &mut secs[i], param_fields);
        } else if keys {
            mutate_object(rng, &mut secs[i], |p| key_fields(p, poly));
        } else {
            mutate_object(rng, &mut secs[i], |_| ct_fields());
        }
    }
    let mut out = hcnn::file_from_sections(bytes, &secs);
    if rng.chance(0.05) {
        // A stale checksum.
        let n = out.len();
        out[n - 1] ^= 0x5a;
    }
    *bytes = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_small_and_fields_found() {
        let ks = key_seeds();
        assert_eq!(ks.len(), 2);
        for s in &ks {
            assert!(
                s.members[0].1.len() < 1 << 20,
                "{} bytes",
                s.members[0].1.len()
            );
        }
        let secs = hcnn::file_sections(&ks[0].members[0].1).unwrap();
        let h = serial::FRAME_HEADER_BYTES;
        let p = &secs[2][h..secs[2].len() - 8];
        // Flag, relin digits, key count, then element + digits for each of two keys.
        assert_eq!(key_fields(p, poly_bytes()).len(), 3 + 2 * 2);
        let cs = ct_seeds();
        assert_eq!(cs.len(), 2);
    }
}
