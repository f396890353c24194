//! Versioned binary serialisation of parameters, keys, plaintexts and ciphertexts.
//!
//! Layout (little-endian): magic `FLCKKS`, format version (u16), object kind (u8), the
//! parameter fingerprint (u64, see [`Context::hash`]), payload length (u64), payload, and a
//! 64-bit checksum of everything before it. Loading checks all of it, then every residue
//! against its prime and every length against the parameters, so a truncated, corrupted or
//! mismatched file is a [`FheError::Decode`] / [`FheError::ParamsMismatch`], never a panic or
//! a wrong answer. The checksum detects accidental corruption; it is not a MAC (anyone can
//! recompute it), so a file from an untrusted party is only as good as the range checks.

use crate::ckks::{
    Ciphertext, EvaluationKeys, GaloisKeys, Plaintext, PublicKey, RelinKey, SecretKey, SwitchingKey,
};
use crate::error::{FheError, Result};
use crate::params::{Context, ParamSpec};
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 6] = b"FLCKKS";
/// The format version written; older or newer versions are refused.
pub const FORMAT_VERSION: u16 = 1;
const HEADER: usize = 6 + 2 + 1 + 8 + 8;

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x100_0000_01b3)
            .rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^ bytes.len() as u64
}

/// A reader over a payload that fails with a typed error instead of panicking (opaque).
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> FheError {
        FheError::Decode {
            what: self.what.into(),
            reason: reason.into(),
        }
    }
    fn take(&mut self, k: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < k {
            return Err(self.err(format!(
                "truncated: needed {k} bytes at offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + k];
        self.pos += k;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(w))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
    /// `idx.len()` limbs of N residues, each checked against its prime.
    fn poly(&mut self, ctx: &Context, idx: &[usize]) -> Result<Vec<u64>> {
        let n = ctx.n;
        let raw = self.take(idx.len() * n * 8)?;
        let mut out = Vec::with_capacity(idx.len() * n);
        for (k, &i) in idx.iter().enumerate() {
            let q = ctx.modulus(i).q;
            for j in 0..n {
                let o = (k * n + j) * 8;
                let mut w = [0u8; 8];
                w.copy_from_slice(&raw[o..o + 8]);
                let v = u64::from_le_bytes(w);
                if v >= q {
                    return Err(self.err(format!(
                        "residue {v} in limb {k} is not below its prime {q}"
                    )));
                }
                out.push(v);
            }
        }
        Ok(out)
    }
    fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(self.err(format!(
                "{} trailing bytes after the payload",
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }
}

fn put_u32(w: &mut Vec<u8>, x: u32) {
    w.extend_from_slice(&x.to_le_bytes());
}
fn put_u64(w: &mut Vec<u8>, x: u64) {
    w.extend_from_slice(&x.to_le_bytes());
}
fn put_poly(w: &mut Vec<u8>, p: &[u64]) {
    w.reserve(p.len() * 8);
    for &x in p {
        w.extend_from_slice(&x.to_le_bytes());
    }
}

/// An object that can be written and read back under a context.
pub trait FheObject: Sized {
    /// The kind byte in the header.
    const KIND: u8;
    /// A name for error messages.
    const NAME: &'static str;
    /// The parameter fingerprint the object was made under.
    fn params_hash(&self) -> u64;
    /// Appends the payload.
    fn write_payload(&self, ctx: &Context, w: &mut Vec<u8>);
    /// Reads the payload (header already checked).
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self>;
}

fn full_idx(ctx: &Context) -> Vec<usize> {
    (0..ctx.tables.len()).collect()
}

fn check_level(ctx: &Context, level: usize, what: &'static str) -> Result<()> {
    if level > ctx.max_level() {
        return Err(FheError::Decode {
            what: what.into(),
            reason: format!("level {level} is above the top level {}", ctx.max_level()),
        });
    }
    Ok(())
}

fn check_scale(scale: f64, what: &'static str) -> Result<()> {
    if !(scale.is_finite() && scale >= 1.0) {
        return Err(FheError::Decode {
            what: what.into(),
            reason: format!("scale {scale} is not a finite number ≥ 1"),
        });
    }
    Ok(())
}

impl FheObject for Ciphertext {
    const KIND: u8 = 8;
    const NAME: &'static str = "ciphertext";
    fn params_hash(&self) -> u64 {
        self.params
    }
    fn write_payload(&self, _ctx: &Context, w: &mut Vec<u8>) {
        put_u32(w, self.level as u32);
        put_u64(w, self.scale.to_bits());
        put_u32(w, self.parts.len() as u32);
        for p in &self.parts {
            put_poly(w, p);
        }
    }
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self> {
        let level = r.u32()? as usize;
        check_level(ctx, level, Self::NAME)?;
        let scale = r.f64()?;
        check_scale(scale, Self::NAME)?;
        let size = r.u32()? as usize;
        if !(2..=3).contains(&size) {
            return Err(r.err(format!("size {size} (must be 2 or 3)")));
        }
        let idx = ctx.q_idx(level);
        let parts = (0..size)
            .map(|_| r.poly(ctx, &idx))
            .collect::<Result<_>>()?;
        Ok(Ciphertext {
            parts,
            level,
            scale,
            params: ctx.hash,
        })
    }
}

impl FheObject for Plaintext {
    const KIND: u8 = 7;
    const NAME: &'static str = "plaintext";
    fn params_hash(&self) -> u64 {
        self.params
    }
    fn write_payload(&self, _ctx: &Context, w: &mut Vec<u8>) {
        put_u32(w, self.level as u32);
        put_u64(w, self.scale.to_bits());
        put_poly(w, &self.data);
    }
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self> {
        let level = r.u32()? as usize;
        check_level(ctx, level, Self::NAME)?;
        let scale = r.f64()?;
        check_scale(scale, Self::NAME)?;
        let data = r.poly(ctx, &ctx.q_idx(level))?;
        Ok(Plaintext {
            data,
            level,
            scale,
            params: ctx.hash,
        })
    }
}

impl FheObject for SecretKey {
    const KIND: u8 = 3;
    const NAME: &'static str = "secret key";
    fn params_hash(&self) -> u64 {
        self.params
    }
    fn write_payload(&self, _ctx: &Context, w: &mut Vec<u8>) {
        put_poly(w, &self.s);
    }
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self> {
        Ok(SecretKey {
            s: r.poly(ctx, &full_idx(ctx))?,
            params: ctx.hash,
        })
    }
}

impl FheObject for PublicKey {
    const KIND: u8 = 2;
    const NAME: &'static str = "public key";
    fn params_hash(&self) -> u64 {
        self.params
    }
    fn write_payload(&self, _ctx: &Context, w: &mut Vec<u8>) {
        put_poly(w, &self.b);
        put_poly(w, &self.a);
    }
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self> {
        let idx = full_idx(ctx);
        let b = r.poly(ctx, &idx)?;
        let a = r.poly(ctx, &idx)?;
        Ok(PublicKey {
            b,
            a,
            params: ctx.hash,
        })
    }
}

fn write_swk(k: &SwitchingKey, w: &mut Vec<u8>) {
    put_u32(w, k.digits.len() as u32);
    for (b, a) in &k.digits {
        put_poly(w, b);
        put_poly(w, a);
    }
}

fn read_swk(ctx: &Context, r: &mut Reader<'_>) -> Result<SwitchingKey> {
    let d = r.u32()? as usize;
    if d != ctx.dnum {
        return Err(r.err(format!(
            "switching key has {d} digits, the parameters need {}",
            ctx.dnum
        )));
    }
    let idx = full_idx(ctx);
    let mut digits = Vec::with_capacity(d);
    for _ in 0..d {
        let b = r.poly(ctx, &idx)?;
        let a = r.poly(ctx, &idx)?;
        digits.push((b, a));
    }
    Ok(SwitchingKey {
        digits,
        seeds: None,
        params: ctx.hash,
    })
}

impl FheObject for RelinKey {
    const KIND: u8 = 4;
    const NAME: &'static str = "relinearisation key";
    fn params_hash(&self) -> u64 {
        self.0.params
    }
    fn write_payload(&self, _ctx: &Context, w: &mut Vec<u8>) {
        write_swk(&self.0, w);
    }
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self> {
        Ok(RelinKey(read_swk(ctx, r)?))
    }
}

fn write_galois(g: &GaloisKeys, w: &mut Vec<u8>) {
    put_u32(w, g.keys.len() as u32);
    for (&e, k) in &g.keys {
        put_u64(w, e as u64);
        write_swk(k, w);
    }
}

fn read_galois(ctx: &Context, r: &mut Reader<'_>) -> Result<GaloisKeys> {
    let count = r.u32()? as usize;
    let mut keys = BTreeMap::new();
    for _ in 0..count {
        let g = r.u64()? as usize;
        if g.is_multiple_of(2) || g >= 2 * ctx.n {
            return Err(r.err(format!(
                "Galois element {g} is not an odd number below 2N = {}",
                2 * ctx.n
            )));
        }
        keys.insert(g, read_swk(ctx, r)?);
    }
    Ok(GaloisKeys { keys })
}

impl FheObject for GaloisKeys {
    const KIND: u8 = 5;
    const NAME: &'static str = "Galois keys";
    fn params_hash(&self) -> u64 {
        self.keys.values().next().map_or(0, |k| k.params)
    }
    fn write_payload(&self, _ctx: &Context, w: &mut Vec<u8>) {
        write_galois(self, w);
    }
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self> {
        read_galois(ctx, r)
    }
}

impl FheObject for EvaluationKeys {
    const KIND: u8 = 6;
    const NAME: &'static str = "evaluation keys";
    fn params_hash(&self) -> u64 {
        self.relin
            .as_ref()
            .map(|k| k.0.params)
            .or_else(|| self.galois.keys.values().next().map(|k| k.params))
            .unwrap_or(0)
    }
    fn write_payload(&self, _ctx: &Context, w: &mut Vec<u8>) {
        match &self.relin {
            Some(k) => {
                w.push(1);
                write_swk(&k.0, w);
            }
            None => w.push(0),
        }
        write_galois(&self.galois, w);
    }
    fn read_payload(ctx: &Context, r: &mut Reader<'_>) -> Result<Self> {
        let relin = match r.u8()? {
            0 => None,
            1 => Some(RelinKey(read_swk(ctx, r)?)),
            b => return Err(r.err(format!("relinearisation-key flag {b} (must be 0 or 1)"))),
        };
        let galois = read_galois(ctx, r)?;
        Ok(EvaluationKeys { relin, galois })
    }
}

/// The seed-compressed switching key: per digit the b half and the 32-byte seed its a half
/// was expanded from ([`crate::ckks::expand_a`]); a reader regenerates a, so the file is half
/// the size. Only keys made by this crate's key generator carry their seeds.
fn write_swk_compressed(k: &SwitchingKey, w: &mut Vec<u8>) -> Result<()> {
    let seeds = k.seeds.as_ref().ok_or_else(|| FheError::InvalidInput(
        "this key has no seeds (it was read from the uncompressed format); write it uncompressed".into(),
    ))?;
    put_u32(w, k.digits.len() as u32);
    for ((b, _), seed) in k.digits.iter().zip(seeds) {
        put_poly(w, b);
        w.extend_from_slice(seed);
    }
    Ok(())
}

fn read_swk_compressed(ctx: &Context, r: &mut Reader<'_>) -> Result<SwitchingKey> {
    let d = r.u32()? as usize;
    if d != ctx.dnum {
        return Err(r.err(format!(
            "switching key has {d} digits, the parameters need {}",
            ctx.dnum
        )));
    }
    let idx = full_idx(ctx);
    let mut digits = Vec::with_capacity(d);
    let mut seeds = Vec::with_capacity(d);
    for _ in 0..d {
        let b = r.poly(ctx, &idx)?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(r.take(32)?);
        digits.push((b, crate::ckks::expand_a(ctx, seed)));
        seeds.push(seed);
    }
    Ok(SwitchingKey {
        digits,
        seeds: Some(seeds),
        params: ctx.hash,
    })
}

const KIND_COMPRESSED_KEYS: u8 = 9;

/// Evaluation keys, seed-compressed (kind 9): about half the bytes of [`to_bytes`].
pub fn keys_to_bytes_compressed(ctx: &Context, keys: &EvaluationKeys) -> Result<Vec<u8>> {
    let hash = keys.params_hash();
    if hash != ctx.hash && hash != 0 {
        return Err(FheError::ParamsMismatch(format!(
            "the keys were made under parameters {hash:016x}, this context is {:016x}",
            ctx.hash
        )));
    }
    let mut w = Vec::new();
    match &keys.relin {
        Some(k) => {
            w.push(1);
            write_swk_compressed(&k.0, &mut w)?;
        }
        None => w.push(0),
    }
    put_u32(&mut w, keys.galois.keys.len() as u32);
    for (&e, k) in &keys.galois.keys {
        put_u64(&mut w, e as u64);
        write_swk_compressed(k, &mut w)?;
    }
    Ok(frame(KIND_COMPRESSED_KEYS, ctx.hash, w))
}

/// Reads [`keys_to_bytes_compressed`], regenerating every `a` half from its seed.
pub fn keys_from_bytes_compressed(ctx: &Context, bytes: &[u8]) -> Result<EvaluationKeys> {
    const NAME: &str = "compressed evaluation keys";
    let (hash, payload) = unframe(bytes, KIND_COMPRESSED_KEYS, NAME)?;
    if hash != ctx.hash {
        return Err(FheError::ParamsMismatch(format!(
            "the {NAME} were made under parameters {hash:016x}, this context is {:016x}",
            ctx.hash
        )));
    }
    let mut r = Reader {
        buf: payload,
        pos: 0,
        what: NAME,
    };
    let relin = match r.u8()? {
        0 => None,
        1 => Some(RelinKey(read_swk_compressed(ctx, &mut r)?)),
        b => return Err(r.err(format!("relinearisation-key flag {b} (must be 0 or 1)"))),
    };
    let count = r.u32()? as usize;
    let mut keys = BTreeMap::new();
    for _ in 0..count {
        let g = r.u64()? as usize;
        if g.is_multiple_of(2) || g >= 2 * ctx.n {
            return Err(r.err(format!(
                "Galois element {g} is not an odd number below 2N = {}",
                2 * ctx.n
            )));
        }
        keys.insert(g, read_swk_compressed(ctx, &mut r)?);
    }
    r.finish()?;
    Ok(EvaluationKeys {
        relin,
        galois: GaloisKeys { keys },
    })
}

fn frame(kind: u8, hash: u64, payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind);
    put_u64(&mut out, hash);
    put_u64(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    let c = checksum(&out);
    put_u64(&mut out, c);
    out
}

/// Checks magic, version, kind, checksum and length; returns (params hash, payload).
fn unframe<'a>(bytes: &'a [u8], kind: u8, what: &'static str) -> Result<(u64, &'a [u8])> {
    let err = |reason: String| FheError::Decode {
        what: what.into(),
        reason,
    };
    if bytes.len() < HEADER + 8 {
        return Err(err(format!(
            "truncated: {} bytes is shorter than the {}-byte header and checksum",
            bytes.len(),
            HEADER + 8
        )));
    }
    if &bytes[..6] != MAGIC {
        return Err(err("not a ferrolab CKKS file (bad magic)".into()));
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != FORMAT_VERSION {
        return Err(err(format!(
            "format version {version}, this build reads version {FORMAT_VERSION}"
        )));
    }
    if bytes[8] != kind {
        return Err(err(format!(
            "the file holds object kind {}, expected kind {kind} ({what})",
            bytes[8]
        )));
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[9..17]);
    let hash = u64::from_le_bytes(w);
    w.copy_from_slice(&bytes[17..25]);
    let len = u64::from_le_bytes(w);
    let expected = (HEADER as u64).saturating_add(len).saturating_add(8);
    if bytes.len() as u64 != expected {
        return Err(err(format!(
            "length mismatch: header announces a {len}-byte payload ({expected} bytes in all), the input has {} bytes (truncated or padded)",
            bytes.len()
        )));
    }
    let body = bytes.len() - 8;
    w.copy_from_slice(&bytes[body..]);
    if u64::from_le_bytes(w) != checksum(&bytes[..body]) {
        return Err(err(
            "checksum mismatch: the file is corrupted or was modified".into(),
        ));
    }
    Ok((hash, &bytes[HEADER..body]))
}

/// Bytes before a framed object's payload: magic, version, kind, fingerprint, length.
pub const FRAME_HEADER_BYTES: usize = HEADER;

/// Rewrites a framed object's length field and checksum after its payload was edited in
/// place. For the fuzz harness: its mutants must get past the integrity check to reach the
/// payload's own checks, which are what protects a reader from a file an untrusted party
/// made (the checksum is not a MAC).
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() < HEADER + 8 {
        return;
    }
    let body = bytes.len() - 8;
    let len = (body - HEADER) as u64;
    bytes[17..25].copy_from_slice(&len.to_le_bytes());
    let c = checksum(&bytes[..body]);
    bytes[body..].copy_from_slice(&c.to_le_bytes());
}

/// Serialises `x` made under `ctx`.
pub fn to_bytes<T: FheObject>(ctx: &Context, x: &T) -> Vec<u8> {
    let mut payload = Vec::new();
    x.write_payload(ctx, &mut payload);
    frame(T::KIND, x.params_hash(), payload)
}

/// Reads an object written by [`to_bytes`], checking it against `ctx`.
pub fn from_bytes<T: FheObject>(ctx: &Context, bytes: &[u8]) -> Result<T> {
    let (hash, payload) = unframe(bytes, T::KIND, T::NAME)?;
    if hash != ctx.hash {
        return Err(FheError::ParamsMismatch(format!(
            "the {} was made under parameters {hash:016x}, this context is {:016x}",
            T::NAME,
            ctx.hash
        )));
    }
    let mut r = Reader {
        buf: payload,
        pos: 0,
        what: T::NAME,
    };
    let x = T::read_payload(ctx, &mut r)?;
    r.finish()?;
    Ok(x)
}

/// Serialises a parameter spec (its fingerprint is the context's).
pub fn params_to_bytes(ctx: &Context) -> Vec<u8> {
    let s = ctx.spec();
    let mut w = Vec::new();
    put_u32(&mut w, s.log_n);
    put_u32(&mut w, s.log_scale);
    w.push(u8::from(s.allow_insecure));
    for bits in [&s.q_bits, &s.p_bits] {
        put_u32(&mut w, bits.len() as u32);
        for &b in bits.iter() {
            put_u32(&mut w, b);
        }
    }
    frame(1, ctx.hash, w)
}

/// Reads a parameter spec and rebuilds (and re-checks, security included) its context.
pub fn params_from_bytes(bytes: &[u8]) -> Result<std::sync::Arc<Context>> {
    let (hash, spec) = spec_from_bytes(bytes)?;
    context_for(hash, spec)
}

/// Reads a parameter spec and the fingerprint it was written with, without building the
/// context: a reader can size what the rest of a file must hold from the spec and refuse a
/// short file before the context's tables (limbs × N words each) are allocated.
pub fn spec_from_bytes(bytes: &[u8]) -> Result<(u64, ParamSpec)> {
    let (hash, payload) = unframe(bytes, 1, "parameters")?;
    let mut r = Reader {
        buf: payload,
        pos: 0,
        what: "parameters",
    };
    let log_n = r.u32()?;
    let log_scale = r.u32()?;
    let allow_insecure = r.u8()? != 0;
    let mut lists = Vec::new();
    for _ in 0..2 {
        let k = r.u32()? as usize;
        if k > 256 {
            return Err(r.err(format!("{k} primes is more than any valid chain")));
        }
        lists.push((0..k).map(|_| r.u32()).collect::<Result<Vec<u32>>>()?);
    }
    r.finish()?;
    let p_bits = lists.pop().unwrap_or_default();
    let q_bits = lists.pop().unwrap_or_default();
    Ok((
        hash,
        ParamSpec {
            log_n,
            q_bits,
            p_bits,
            log_scale,
            allow_insecure,
        },
    ))
}

/// Builds (and re-checks, security included) the context of a spec read by
/// [`spec_from_bytes`], and checks it against the fingerprint the file carried.
pub fn context_for(hash: u64, spec: ParamSpec) -> Result<std::sync::Arc<Context>> {
    let ctx = Context::new(spec)?;
    if ctx.hash != hash {
        return Err(FheError::Decode {
            what: "parameters".into(),
            reason: format!(
                "rebuilt parameters have fingerprint {:016x}, the file says {hash:016x}",
                ctx.hash
            ),
        });
    }
    Ok(ctx)
}

/// Writes bytes to a file, whole or not at all (core's atomic writer: an earlier file there
/// survives a failed write).
pub fn save(path: &Path, bytes: &[u8]) -> Result<()> {
    ferrolab_core::run::write_atomic(path, bytes).map_err(|e| FheError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Reads a file.
pub fn load(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| FheError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
