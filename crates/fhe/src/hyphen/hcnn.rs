//! `ferrolab hcnn` (HyPHEN's CLI name): the client / server split of encrypted inference.
//!
//! * `keygen --out DIR` (client): parameters, `secret.key`, `public.key`, `client.json` and
//!   `eval.keys`, a self-contained bundle (parameters + evaluation keys) that is all the
//!   server ever gets. Rotation keys are every power of two (plus bootstrapping's own at the
//!   secure set): the client does not know the network, and any amount is composed from
//!   them (hyphen.md §3.6), which keeps the keys small.
//! * `encrypt --keys DIR IMAGE.png --out X.ct` (client).
//! * `infer --keys EVAL --model CKPT X.ct --out Y.ct` (server): [`ServerKeys`] holds
//!   evaluation keys and parameters only — there is no field a secret key could sit in, and a
//!   secret-key file given as `--keys` is refused by kind.
//! * `decrypt --keys DIR Y.ct` (client): the logits as JSON on stdout.
//! * `bench --out DIR` : the four in one process, each timed, the server leg still on the
//!   evaluation-key bundle only; `DIR/report.json` with latency, CPU time, agreement and
//!   key sizes.
//!
//! Every file is versioned and checksummed (magic, version, header, payload, 64-bit checksum)
//! over the leveled scheme's own framed objects; a truncated, corrupted or mismatched file is
//! one line naming it and exit status 2.

use super::backend::{Backend, Ckks, Sim};
use super::conv::{ConvWeights, OpCost};
use super::layout::{Geometry, Map};
use super::net::{Act, Block, Net, Packing, RunOptions, encode_input, run};
use super::train::{Prepared, argmax};
use crate::bootstrap::BootChain;
use crate::ckks::{Ciphertext, EvaluationKeys, PublicKey, SecretKey};
use crate::params::{Context, ParamSpec};
use crate::serial;
use crate::{Bootstrapper, Decryptor, Encryptor, Evaluator, KeyGenerator, SlotKind};
use ferrolab_core::{SysResult, SystemError};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const VERSION: u16 = 1;
const MAGIC_KEYS: &[u8; 8] = b"FLHCNNEK";
const MAGIC_CT: &[u8; 8] = b"FLHCNNCT";
const MAGIC_MODEL: &str = "ferrolab-hcnn-model";
/// Hamming weight of the sparse secret of the bootstrapping sets.
const H: usize = crate::bootstrap::bench::SECRET_WEIGHT;

fn usage(msg: impl Into<String>) -> SystemError {
    SystemError::usage(msg)
}

/// An error reading a file a user supplied: bad input (exit 2) whatever its kind — a
/// parameter mismatch there means the wrong file, not a failure of the computation.
fn fhe(path: &Path, e: crate::FheError) -> SystemError {
    SystemError::usage(format!("{}: {e}", path.display()))
}

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a: detects accidental corruption, as the scheme's own frames do (not a MAC).
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A framed file: magic, version, then length-prefixed sections, then a checksum.
fn frame(magic: &[u8; 8], sections: &[&[u8]]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
    }
    let c = checksum(&out);
    out.extend_from_slice(&c.to_le_bytes());
    out
}

/// The sections of an hcnn key bundle or ciphertext file, read without checking the checksum
/// (None if the framing itself is broken); with [`file_from_sections`] the fuzz harness edits
/// a section and re-frames the file so that its mutants reach the readers behind the checksum.
pub fn file_sections(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let body = bytes.len().checked_sub(8)?;
    let count = u32::from_le_bytes(bytes.get(10..14)?.try_into().ok()?) as usize;
    let mut pos = 14;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = u64::from_le_bytes(bytes.get(pos..pos + 8)?.try_into().ok()?);
        pos += 8;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= body.saturating_sub(pos))?;
        out.push(bytes.get(pos..pos + len)?.to_vec());
        pos += len;
    }
    Some(out)
}

/// A file of the same kind (magic) as `like` holding `sections`, with a valid checksum.
pub fn file_from_sections(like: &[u8], sections: &[Vec<u8>]) -> Vec<u8> {
    let mut magic = [0u8; 8];
    if let Some(m) = like.get(..8) {
        magic.copy_from_slice(m);
    }
    let refs: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
    frame(&magic, &refs)
}

fn unframe<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    path: &Path,
    what: &str,
) -> SysResult<Vec<&'a [u8]>> {
    let bad = |why: String| usage(format!("{}: not a valid {what}: {why}", path.display()));
    if bytes.len() < 8 + 2 + 4 + 8 {
        return Err(bad(format!("{} bytes is too short", bytes.len())));
    }
    if &bytes[..8] != magic {
        if bytes.starts_with(b"FLCKKS")
            && bytes.get(8) == Some(&<SecretKey as serial::FheObject>::KIND)
        {
            return Err(usage(format!(
                "{}: is a secret key; the server takes evaluation keys only (eval.keys)",
                path.display()
            )));
        }
        return Err(bad("wrong magic bytes".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads {VERSION}"
        )));
    }
    let body = bytes.len() - 8;
    let mut c = [0u8; 8];
    c.copy_from_slice(&bytes[body..]);
    if u64::from_le_bytes(c) != checksum(&bytes[..body]) {
        return Err(bad("checksum mismatch (corrupted or truncated)".into()));
    }
    let mut n4 = [0u8; 4];
    n4.copy_from_slice(&bytes[10..14]);
    let count = u32::from_le_bytes(n4) as usize;
    let mut pos = 14;
    let mut out = Vec::new();
    for i in 0..count {
        if pos + 8 > body {
            return Err(bad(format!("section {i} is cut off")));
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&bytes[pos..pos + 8]);
        let len = u64::from_le_bytes(l);
        pos += 8;
        if len > (body - pos) as u64 {
            return Err(bad(format!(
                "section {i} announces {len} bytes, {} are left",
                body - pos
            )));
        }
        let len = len as usize;
        out.push(&bytes[pos..pos + len]);
        pos += len;
    }
    if pos != body {
        return Err(bad(format!("{} trailing bytes", body - pos)));
    }
    Ok(out)
}

fn read(path: &Path) -> SysResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn write(path: &Path, bytes: &[u8]) -> SysResult<()> {
    // The writer's error names the path already.
    Ok(ferrolab_core::run::write_atomic(path, bytes)?)
}

fn header(section: &[u8], path: &Path) -> SysResult<Value> {
    serde_json::from_slice(section)
        .map_err(|e| usage(format!("{}: header is not JSON: {e}", path.display())))
}

fn get_usize(h: &Value, key: &str, path: &Path) -> SysResult<usize> {
    h.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| usage(format!("{}: header lacks `{key}`", path.display())))
}

/// What a key set was made for: raster side and first-stage width of the network (the input
/// layout), and whether the chain bootstraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Input raster side (16 or 32).
    pub side: usize,
    /// conv1's output channels.
    pub width: usize,
    /// Levels after a bootstrap (None: leveled chain).
    pub boot_levels: Option<usize>,
}

impl Shape {
    /// Checks the shape against the parameters it is used with: a raster and width the ring
    /// holds, and a bootstrapping level count only on the chain bootstrapping is built for
    /// (what `infer` would otherwise hand to the layout code and the bootstrapper).
    pub fn check(self, ctx: &Context, path: &Path) -> SysResult<()> {
        let bad = |why: String| usage(format!("{}: {why}", path.display()));
        if ![8, 16, 32].contains(&self.side) {
            return Err(bad(format!("raster side {} (8, 16 or 32)", self.side)));
        }
        if !(1..=64).contains(&self.width) {
            return Err(bad(format!("network width {} (1..=64)", self.width)));
        }
        let blocks = ctx.slots() / (self.side * self.side);
        if blocks < self.width {
            return Err(bad(format!(
                "N = 2^{} holds {blocks} blocks of {}x{}, width {} needs {}",
                ctx.log_n, self.side, self.side, self.width, self.width
            )));
        }
        if let Some(l) = self.boot_levels {
            let chain = BootChain {
                levels_after: l,
                ..BootChain::n16_l9()
            };
            if !(1..=ctx.max_level()).contains(&l) || chain.spec() != *ctx.spec() {
                return Err(bad(format!(
                    "says it bootstraps with {l} levels, but the parameters are not that bootstrapping chain"
                )));
            }
        }
        Ok(())
    }

    fn to_json(self) -> Value {
        json!({"side": self.side, "width": self.width, "boot_levels": self.boot_levels})
    }

    fn from_json(h: &Value, path: &Path) -> SysResult<Shape> {
        Ok(Shape {
            side: get_usize(h, "side", path)?,
            width: get_usize(h, "width", path)?,
            boot_levels: match h.get("boot_levels") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().map(|v| v as usize).ok_or_else(|| {
                    usage(format!(
                        "{}: header's `boot_levels` is not a level count",
                        path.display()
                    ))
                })?),
            },
        })
    }
}

/// The server's keys: parameters and evaluation keys, nothing that decrypts.
pub struct ServerKeys {
    /// The parameters.
    pub ctx: Arc<Context>,
    /// Evaluation keys (relinearisation, rotations, conjugation).
    pub keys: EvaluationKeys,
    /// What they were made for.
    pub shape: Shape,
}

impl ServerKeys {
    /// Reads an `eval.keys` bundle (a folder holding one, or the file).
    pub fn load(path: &Path) -> SysResult<ServerKeys> {
        let file = if path.is_dir() {
            path.join("eval.keys")
        } else {
            path.to_path_buf()
        };
        ServerKeys::from_bytes(&read(&file)?, &file)
    }

    /// Reads an `eval.keys` bundle's bytes (`file` names it in errors).
    pub fn from_bytes(bytes: &[u8], file: &Path) -> SysResult<ServerKeys> {
        let file = file.to_path_buf();
        let s = unframe(bytes, MAGIC_KEYS, &file, "evaluation-key bundle")?;
        let [h, p, k] = s.as_slice() else {
            return Err(usage(format!(
                "{}: {} sections, an eval.keys has 3",
                file.display(),
                s.len()
            )));
        };
        let shape = Shape::from_json(&header(h, &file)?, &file)?;
        let (hash, spec) = serial::spec_from_bytes(p).map_err(|e| fhe(&file, e))?;
        // The relinearisation key alone is dnum digits of (limbs × N residues + a seed):
        // a key section shorter than that is refused before the context's tables (sized by
        // the same header fields) are built.
        let need = relin_bytes(&spec);
        if (k.len() as u128) < need {
            return Err(usage(format!(
                "{}: the key section holds {} bytes, a relinearisation key under its parameters (N = 2^{}, {} + {} primes) needs {need} (truncated, or not made by hcnn keygen)",
                file.display(),
                k.len(),
                spec.log_n,
                spec.q_bits.len(),
                spec.p_bits.len()
            )));
        }
        let ctx = serial::context_for(hash, spec).map_err(|e| fhe(&file, e))?;
        shape.check(&ctx, &file)?;
        let keys = serial::keys_from_bytes_compressed(&ctx, k).map_err(|e| fhe(&file, e))?;
        if keys.relin.is_none() {
            return Err(usage(format!(
                "{}: has no relinearisation key; the activations need one",
                file.display()
            )));
        }
        Ok(ServerKeys { ctx, keys, shape })
    }

    /// The `eval.keys` bundle.
    pub fn to_bytes(&self) -> SysResult<Vec<u8>> {
        let h = serde_json::to_vec(&self.shape.to_json()).unwrap_or_default();
        let p = serial::params_to_bytes(&self.ctx);
        let k = serial::keys_to_bytes_compressed(&self.ctx, &self.keys)
            .map_err(|e| SystemError::runtime(e.to_string()))?;
        Ok(frame(MAGIC_KEYS, &[&h, &p, &k]))
    }
}

/// Bytes of one seed-compressed relinearisation key under `spec` (u128: the fields come from
/// a file and are not checked yet).
fn relin_bytes(spec: &ParamSpec) -> u128 {
    if spec.log_n > 16 || spec.p_bits.is_empty() {
        // Context::new refuses these without allocating.
        return 0;
    }
    let limbs = (spec.q_bits.len() + spec.p_bits.len()) as u128;
    let dnum = crate::params::digit_ranges(&spec.q_bits, spec.p_bits.len()).len() as u128;
    1 + 4 + dnum * (limbs * (1u128 << spec.log_n) * 8 + 32)
}

/// Parameters from a `params.bin` whose companion file `other` must hold at least one
/// polynomial over every limb (a secret key): checked before the context is built.
fn params_for(pf: &Path, other: &Path, other_len: usize) -> SysResult<Arc<Context>> {
    let (hash, spec) = serial::spec_from_bytes(&read(pf)?).map_err(|e| fhe(pf, e))?;
    if spec.log_n <= 16 {
        let limbs = (spec.q_bits.len() + spec.p_bits.len()) as u128;
        let need = limbs * (1u128 << spec.log_n) * 8;
        if (other_len as u128) < need {
            return Err(usage(format!(
                "{}: {other_len} bytes, a key under the parameters of {} needs {need} (truncated, or from another key folder)",
                other.display(),
                pf.display()
            )));
        }
    }
    serial::context_for(hash, spec).map_err(|e| fhe(pf, e))
}

/// The client's side of a key folder.
pub struct ClientKeys {
    /// The parameters.
    pub ctx: Arc<Context>,
    /// The secret key (never leaves the client).
    pub sk: SecretKey,
    /// The public key (encryption).
    pub pk: PublicKey,
    /// What the keys were made for.
    pub shape: Shape,
}

impl ClientKeys {
    /// Reads `params.bin`, `secret.key`, `public.key` and `client.json` from `dir`.
    pub fn load(dir: &Path) -> SysResult<ClientKeys> {
        if !dir.is_dir() {
            return Err(usage(format!(
                "{}: not a key folder (run `hcnn keygen --out DIR`)",
                dir.display()
            )));
        }
        let pf = dir.join("params.bin");
        let sf = dir.join("secret.key");
        let sk_bytes = read(&sf)?;
        let ctx = params_for(&pf, &sf, sk_bytes.len())?;
        let sk: SecretKey = serial::from_bytes(&ctx, &sk_bytes).map_err(|e| fhe(&sf, e))?;
        let kf = dir.join("public.key");
        let pk: PublicKey = serial::from_bytes(&ctx, &read(&kf)?).map_err(|e| fhe(&kf, e))?;
        let cf = dir.join("client.json");
        let shape = Shape::from_json(&header(&read(&cf)?, &cf)?, &cf)?;
        shape.check(&ctx, &cf)?;
        Ok(ClientKeys { ctx, sk, pk, shape })
    }
}

/// Parameters of `keygen`.
#[derive(Debug, Clone)]
pub struct KeygenOptions {
    /// `secure`: N = 2^16 with bootstrapping (n16_l9, 128-bit as documented); `test`: a
    /// leveled insecure chain at `log_n` with `levels` levels (fast; flagged).
    pub secure: bool,
    /// log2 N of the test chain.
    pub log_n: u32,
    /// Levels of the test chain.
    pub levels: usize,
    /// Raster side.
    pub side: usize,
    /// conv1 width.
    pub width: usize,
    /// `--max-memory`: the resource guard's limit (default: the machine's).
    pub max_memory: Option<u64>,
}

/// Rotation amounts the client makes keys for: the powers of two below the slot count.
pub fn power_of_two_steps(slots: usize) -> Vec<i64> {
    (0..)
        .map(|i| 1i64 << i)
        .take_while(|&p| (p as usize) < slots)
        .collect()
}

/// The insecure leveled chain of `keygen --params test`: `levels` levels over N = 2^log_n.
pub fn test_spec(log_n: u32, levels: usize) -> ParamSpec {
    // A 41-bit prime on top anchors the scale ladder at the bottom (see system.rs).
    let mut q_bits = vec![60];
    q_bits.extend(std::iter::repeat_n(40, levels.saturating_sub(1)));
    q_bits.push(41);
    ParamSpec {
        log_n,
        q_bits,
        p_bits: vec![60; 4],
        log_scale: 40,
        allow_insecure: true,
    }
}

/// Memory the keys of `o` take while they are made and used: at the secure set the measured
/// peak of `hcnn bench` (8.6 GB: 6.0 GiB of keys and the bootstrapper's DFT factors), else the
/// power-of-two rotation keys and the relinearisation key of the test chain, each twice its
/// seed-compressed size in memory, and twice over (the client's copy while the bundle is
/// written, the server's).
pub fn keygen_memory(o: &KeygenOptions) -> ferrolab_core::guard::MemoryEstimate {
    let bytes = if o.secure {
        9 << 30
    } else {
        let keys = u128::from(o.log_n - 1) + 1;
        let total = 2 * keys * 2 * relin_bytes(&test_spec(o.log_n, o.levels));
        u64::try_from(total).unwrap_or(u64::MAX)
    };
    ferrolab_core::guard::MemoryEstimate {
        setting: if o.secure {
            "--params secure".into()
        } else {
            format!("--params test --log-n {} --levels {}", o.log_n, o.levels)
        },
        bytes,
    }
}

/// `--max-memory SIZE` of `keygen` and `bench` (a malformed size: exit 2).
fn max_memory(s: &clap::ArgMatches) -> SysResult<Option<u64>> {
    s.get_one::<String>("max-memory")
        .map(|t| ferrolab_core::guard::parse_size(t).map_err(|e| usage(e.to_string())))
        .transpose()
}

/// Refuses (a usage error, exit 2) a key set that would not fit in memory.
fn check_memory(o: &KeygenOptions) -> SysResult<()> {
    let limit = o
        .max_memory
        .unwrap_or_else(ferrolab_core::guard::default_limit);
    ferrolab_core::guard::check(&keygen_memory(o), limit).map_err(|e| usage(e.to_string()))
}

/// Generates a client's keys; returns them with the server's bundle.
pub fn keygen(o: &KeygenOptions) -> SysResult<(ClientKeys, ServerKeys)> {
    keygen_keeping_bootstrapper(o).map(|(c, s, _)| (c, s))
}

/// [`keygen`], also returning the bootstrapper it built to learn bootstrapping's rotation
/// amounts. It holds public data only (DFT factors, polynomial coefficients), so a server in
/// the same process may use it instead of building its own (`hcnn bench`: one ~3 GB copy
/// instead of two).
fn keygen_keeping_bootstrapper(
    o: &KeygenOptions,
) -> SysResult<(ClientKeys, ServerKeys, Option<Bootstrapper>)> {
    let err = |e: crate::FheError| SystemError::usage(format!("keygen: {e}"));
    let (spec, chain): (ParamSpec, Option<BootChain>) = if o.secure {
        let c = BootChain::n16_l9();
        (c.spec(), Some(c))
    } else {
        (test_spec(o.log_n, o.levels), None)
    };
    let ctx = Context::new(spec).map_err(err)?;
    let slots = ctx.slots();
    if slots / (o.side * o.side) < o.width {
        return Err(usage(format!(
            "keygen: N = 2^{} holds {} blocks of {}×{}, the network's first stage needs {}",
            ctx.spec().log_n,
            slots / (o.side * o.side),
            o.side,
            o.side,
            o.width
        )));
    }
    let mut kg = if chain.is_some() {
        KeyGenerator::new_sparse(&ctx, H).map_err(err)?
    } else {
        KeyGenerator::new(&ctx).map_err(err)?
    };
    let pk = kg.public_key();
    let steps = power_of_two_steps(slots);
    let boot = match &chain {
        Some(c) => Some(Bootstrapper::new(&ctx, c.config(slots, SlotKind::Real, H)).map_err(err)?),
        None => None,
    };
    let keys = network_keys(&mut kg, boot.as_ref(), &steps);
    let shape = Shape {
        side: o.side,
        width: o.width,
        boot_levels: chain.as_ref().map(|c| c.levels_after),
    };
    let client = ClientKeys {
        ctx: ctx.clone(),
        sk: kg.secret_key().clone(),
        pk,
        shape,
    };
    Ok((client, ServerKeys { ctx, keys, shape }, boot))
}

fn geometry(ctx: &Context, shape: Shape) -> Geometry {
    Geometry {
        n: ctx.slots(),
        wr: shape.side,
    }
}

/// An image as the network's input map: a `side × side` PNG as it is, or a 28 × 28 one
/// (Fashion-MNIST) padded / pooled as in training.
pub fn load_image(path: &Path, side: usize) -> SysResult<Map> {
    use ferrolab_vision::data::read_images;
    let set = match read_images(path, 28, 28) {
        Ok(s) => Prepared::new(&s, side),
        Err(e28) => match read_images(path, side, side) {
            Ok(s) => Prepared::new(&s, side),
            Err(_) => {
                return Err(usage(format!(
                    "{} (the network takes 28x28 Fashion-MNIST images or {side}x{side})",
                    ferrolab_core::run::first_line(&e28.to_string())
                )));
            }
        },
    };
    if set.x.len() != 1 {
        return Err(usage(format!(
            "{}: holds {} images, encrypt takes one",
            path.display(),
            set.x.len()
        )));
    }
    Ok(set.map(0))
}

/// Encrypts one input map for HyPHEN's input layout (public key).
pub fn encrypt(keys: &ClientKeys, x: &Map) -> SysResult<Vec<u8>> {
    let mut enc = Encryptor::new(&keys.ctx).map_err(|e| SystemError::runtime(e.to_string()))?;
    encrypt_with(keys, x, &mut enc)
}

/// [`encrypt`] with a given encryptor (a seeded one makes the same file every time: the fuzz
/// harness's seeds).
pub fn encrypt_with(keys: &ClientKeys, x: &Map, enc: &mut Encryptor) -> SysResult<Vec<u8>> {
    let ctx = &keys.ctx;
    if x.c != 3 || x.h != keys.shape.side {
        return Err(usage(format!(
            "input: a {}-channel {}x{} map, the keys are for 3 channels of {}x{}",
            x.c, x.h, x.h, keys.shape.side, keys.shape.side
        )));
    }
    let vs = input_vectors(ctx, keys.shape, x);
    let top = keys.shape.boot_levels.unwrap_or(ctx.max_level());
    let mut sections =
        vec![serde_json::to_vec(&json!({
        "kind": "input", "shape": keys.shape.to_json(), "params": format!("{:016x}", ctx.hash),
    }))
    .unwrap_or_default()];
    for v in &vs {
        let pt = ctx
            .encode_real(v, top, ctx.scale_at(top))
            .map_err(|e| SystemError::runtime(e.to_string()))?;
        let ct = enc
            .encrypt(&keys.pk, &pt)
            .map_err(|e| SystemError::runtime(e.to_string()))?;
        sections.push(serial::to_bytes(ctx, &ct));
    }
    let refs: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
    Ok(frame(MAGIC_CT, &refs))
}

/// The slot vectors of an input map in HyPHEN's input layout. The layout depends only on the
/// raster and conv1's width (HerPN nets run at scale 1), so the client needs no weights.
fn input_vectors(ctx: &Context, shape: Shape, x: &Map) -> Vec<Vec<f64>> {
    let stub = layout_stub(shape.width);
    encode_input(&stub, geometry(ctx, shape), Packing::Hyphen, x)
}

/// A network with only the fields `encode_input` reads (conv1's width, scale 1).
fn layout_stub(width: usize) -> Net {
    Net {
        conv1: ConvWeights {
            co: width,
            ci: 3,
            kh: 3,
            stride: 1,
            pad: 1,
            w: vec![],
            bias: vec![],
        },
        a0: Act::Relu,
        blocks: vec![],
        fc: vec![],
        fc_b: vec![],
        scale: 1.0,
    }
}

/// Reads a ciphertext file under `ctx`: its header and ciphertexts.
pub fn read_cts(ctx: &Context, path: &Path) -> SysResult<(Value, Vec<Ciphertext>)> {
    let bytes = read(path)?;
    let s = unframe(&bytes, MAGIC_CT, path, "hcnn ciphertext file")?;
    let Some((h, rest)) = s.split_first() else {
        return Err(usage(format!("{}: no header", path.display())));
    };
    let h = header(h, path)?;
    let mine = format!("{:016x}", ctx.hash);
    match h.get("params").and_then(Value::as_str) {
        Some(p) if p == mine => {}
        Some(p) => {
            return Err(usage(format!(
                "{}: encrypted under parameters {p}, the keys are for {mine} (keys and ciphertext come from different `hcnn keygen` runs)",
                path.display()
            )));
        }
        None => {
            return Err(usage(format!(
                "{}: header lacks the parameter fingerprint `params`",
                path.display()
            )));
        }
    }
    if rest.is_empty() {
        return Err(usage(format!("{}: holds no ciphertext", path.display())));
    }
    let cts = rest
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serial::from_bytes::<Ciphertext>(ctx, b)
                .map_err(|e| usage(format!("{}: ciphertext {i}: {e}", path.display())))
        })
        .collect::<SysResult<Vec<_>>>()?;
    Ok((h, cts))
}

/// Checks an encrypted input against the keys before any work: its kind and shape, as many
/// fresh ciphertexts as the input layout has, all at one level with that level's scale.
pub fn check_input(
    ctx: &Context,
    shape: Shape,
    h: &Value,
    cts: &[Ciphertext],
    path: &Path,
) -> SysResult<()> {
    let p = path.display();
    if h.get("kind").and_then(Value::as_str) != Some("input") {
        return Err(usage(format!(
            "{p}: not an encrypted input (an output of infer?)"
        )));
    }
    let got = Shape::from_json(h.get("shape").unwrap_or(&Value::Null), path)?;
    if got != shape {
        return Err(usage(format!(
            "{p}: encrypted for a {}x{} raster / width {}, the keys are for {}x{} / width {}",
            got.side, got.side, got.width, shape.side, shape.side, shape.width
        )));
    }
    let want = input_vectors(ctx, shape, &Map::zeros(3, shape.side)).len();
    if cts.len() != want {
        return Err(usage(format!(
            "{p}: {} ciphertexts, a {}x{} / width {} input has {want}",
            cts.len(),
            shape.side,
            shape.side,
            shape.width
        )));
    }
    let level = cts[0].level;
    for (i, c) in cts.iter().enumerate() {
        if c.size() != 2 || c.level != level {
            return Err(usage(format!(
                "{p}: ciphertext {i} has {} parts at level {}, a fresh input has 2 at level {level}",
                c.size(),
                c.level
            )));
        }
        let want = ctx.scale_at(level);
        if ((c.scale - want) / want).abs() > 1e-9 {
            return Err(usage(format!(
                "{p}: ciphertext {i} has scale {:e}, level {level} encrypts at {want:e}",
                c.scale
            )));
        }
    }
    Ok(())
}

/// What a server run measured.
#[derive(Debug, Clone, Default)]
pub struct InferStats {
    /// Wall seconds of the network.
    pub seconds: f64,
    /// Process CPU seconds of the network (all threads).
    pub cpu_seconds: f64,
    /// Rotations the algorithm issued, key switches they cost (composed ones included).
    pub rotations: u64,
    /// Key switches.
    pub key_switches: u64,
    /// Bootstraps.
    pub bootstraps: u64,
}

/// The server: runs `net` on the input ciphertexts with evaluation keys only; returns the
/// output file's bytes.
pub fn infer(keys: ServerKeys, net: &Net, input: &Path) -> SysResult<(Vec<u8>, InferStats)> {
    Server::new(keys)?.infer(net, input)
}

/// The server's state, built once from its keys and used for any number of inputs: the
/// evaluator (which owns the keys) and, at the secure set, the bootstrapper.
pub struct Server {
    ctx: Arc<Context>,
    shape: Shape,
    ev: Evaluator,
    boot: Option<Bootstrapper>,
}

impl Server {
    /// Takes the keys (moved, not cloned: at the secure set they are gigabytes).
    pub fn new(keys: ServerKeys) -> SysResult<Server> {
        Server::with_bootstrapper(keys, None)
    }

    /// [`Server::new`] with the bootstrapper the keys' own keygen built (public data; see
    /// `keygen_keeping_bootstrapper`), if there is one.
    fn with_bootstrapper(keys: ServerKeys, built: Option<Bootstrapper>) -> SysResult<Server> {
        let ctx = keys.ctx.clone();
        let shape = keys.shape;
        let boot = match (shape.boot_levels, built) {
            (Some(_), Some(b)) => Some(b),
            (None, _) => None,
            (Some(l), None) => {
                let c = BootChain {
                    levels_after: l,
                    ..BootChain::n16_l9()
                };
                Some(
                    Bootstrapper::new(&ctx, c.config(ctx.slots(), SlotKind::Real, H))
                        .map_err(|e| SystemError::runtime(format!("bootstrapping: {e}")))?,
                )
            }
        };
        if keys.keys.relin.is_none() {
            return Err(usage(
                "eval.keys has no relinearisation key; the activations need one",
            ));
        }
        let ev = Evaluator::new(&ctx, keys.keys).map_err(|e| usage(e.to_string()))?;
        Ok(Server {
            ctx,
            shape,
            ev,
            boot,
        })
    }

    /// Runs `net` on the ciphertext file `input`; returns the output file's bytes.
    pub fn infer(&self, net: &Net, input: &Path) -> SysResult<(Vec<u8>, InferStats)> {
        let (ctx, shape) = (&self.ctx, self.shape);
        let (h, cts) = read_cts(ctx, input)?;
        check_input(ctx, shape, &h, &cts, input)?;
        check_model(net, shape)?;
        let geo = geometry(ctx, shape);
        let opt = RunOptions {
            geo,
            cost: OpCost::default(),
        };
        let mut be = Ckks::new(&self.ev, self.boot.as_ref());
        // Every rotation the network issues must be composable from the keys, and a leveled
        // chain must be deep enough: both found on the simulator first, so a missing key is a
        // usage error before any work.
        let mut deep = Sim::new(ctx.slots(), 400);
        let sim_in: Vec<_> = encode_input(net, geo, Packing::Hyphen, &Map::zeros(3, shape.side))
            .into_iter()
            .map(|v| deep.encrypt(v, 400))
            .collect();
        let (dout, _, _) = run(&mut deep, net, Packing::Hyphen, sim_in, &opt)
            .map_err(|e| usage(format!("model: {e}")))?;
        let need = dout.first().map_or(0, |c| 400 - deep.level(c));
        for &s in &deep.steps {
            be.hops(s).map_err(|e| usage(format!("eval.keys: {e}")))?;
        }
        let top = cts.iter().map(|c| c.level).min().unwrap_or(0);
        if shape.boot_levels.is_none() && top < need {
            return Err(usage(format!(
                "{}: the chain has {top} levels, this network needs {need} without bootstrapping (keygen --params test --levels {need})",
                input.display()
            )));
        }
        let t = Instant::now();
        let cpu = crate::bootstrap::bench::process_cpu_ms();
        let (out, pf, _) = run(&mut be, net, Packing::Hyphen, cts, &opt)
            .map_err(|e| SystemError::runtime(format!("encrypted inference: {e}")))?;
        let cpu_seconds = (crate::bootstrap::bench::process_cpu_ms() - cpu) / 1e3;
        let seconds = t.elapsed().as_secs_f64();
        let st = *be.stats();
        Ok((
            output_file(ctx, shape, &pf.slots, net.scale, &out),
            InferStats {
                seconds,
                cpu_seconds,
                rotations: st.rot_calls,
                key_switches: st.key_switches(),
                bootstraps: st.boot,
            },
        ))
    }
}

/// An inference output file: the output ciphertexts and where the logits sit in them
/// (ciphertext, slot), divided by `scale` on decryption.
pub fn output_file(
    ctx: &Context,
    shape: Shape,
    logit_slots: &[(usize, usize)],
    scale: f64,
    cts: &[Ciphertext],
) -> Vec<u8> {
    let mut sections = vec![
        serde_json::to_vec(&json!({
            "kind": "output", "shape": shape.to_json(), "params": format!("{:016x}", ctx.hash),
            "logit_slots": logit_slots, "scale": scale,
        }))
        .unwrap_or_default(),
    ];
    for c in cts {
        sections.push(serial::to_bytes(ctx, c));
    }
    let refs: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
    frame(MAGIC_CT, &refs)
}

/// The model must be a HerPN ResNet whose input layout matches the keys.
fn check_model(net: &Net, shape: Shape) -> SysResult<()> {
    net.check().map_err(|e| usage(e.to_string()))?;
    if net.conv1.co != shape.width {
        return Err(usage(format!(
            "model: conv1 has {} output channels, the keys and input were made for width {}",
            net.conv1.co, shape.width
        )));
    }
    if !matches!(net.a0, Act::Quad(_)) || net.scale != 1.0 {
        return Err(usage(
            "model: hcnn runs HerPN (degree-2) networks; this one uses ReLU",
        ));
    }
    Ok(())
}

/// Decrypts an output file: the logits.
pub fn decrypt(keys: &ClientKeys, path: &Path) -> SysResult<Vec<f64>> {
    let (h, cts) = read_cts(&keys.ctx, path)?;
    decrypt_output(&keys.ctx, &keys.sk, &h, &cts, path)
}

/// The logits of an output file already read by [`read_cts`].
pub fn decrypt_output(
    ctx: &Arc<Context>,
    sk: &SecretKey,
    h: &Value,
    cts: &[Ciphertext],
    path: &Path,
) -> SysResult<Vec<f64>> {
    if h.get("kind").and_then(Value::as_str) != Some("output") {
        return Err(usage(format!(
            "{}: not an inference output (run `hcnn infer` first)",
            path.display()
        )));
    }
    let slots: Vec<(usize, usize)> = h
        .get("logit_slots")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| usage(format!("{}: header lacks logit_slots", path.display())))?;
    let scale = h.get("scale").and_then(Value::as_f64).unwrap_or(1.0);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(usage(format!(
            "{}: logit scale {scale} is not a positive number",
            path.display()
        )));
    }
    let dec = Decryptor::new(ctx, sk).map_err(|e| usage(e.to_string()))?;
    let vs = cts
        .iter()
        .map(|c| {
            dec.decrypt_decode(c)
                .map(|v| v.iter().map(|z| z.re).collect::<Vec<f64>>())
        })
        .collect::<crate::Result<Vec<_>>>()
        .map_err(|e| fhe(path, e))?;
    slots
        .iter()
        .map(|&(a, s)| {
            vs.get(a)
                .and_then(|v| v.get(s))
                .map(|x| x / scale)
                .ok_or_else(|| {
                    usage(format!(
                        "{}: logit slot ({a}, {s}) out of range",
                        path.display()
                    ))
                })
        })
        .collect()
}

// ---- model checkpoints (the folded network as JSON, with a checksum) ----

fn conv_json(c: &ConvWeights) -> Value {
    json!({"co": c.co, "ci": c.ci, "kh": c.kh, "stride": c.stride, "pad": c.pad, "w": c.w, "bias": c.bias})
}

fn act_json(a: &Act) -> Value {
    match a {
        Act::Quad(q) => json!({"herpn": {"a": q.a, "b": q.b, "c": q.c}}),
        Act::Relu => json!("relu"),
    }
}

/// Evaluation keys for the network's rotation `steps`, plus bootstrapping's own keys when it
/// runs (its rotations are not generated twice).
pub(crate) fn network_keys(
    kg: &mut KeyGenerator,
    boot: Option<&Bootstrapper>,
    steps: &[i64],
) -> EvaluationKeys {
    match boot {
        Some(bt) => {
            let mut keys = bt.generate_keys(kg);
            let have = bt.rotations();
            let more: Vec<i64> = steps
                .iter()
                .copied()
                .filter(|s| !have.contains(s))
                .collect();
            keys.galois.extend(kg.galois_keys(&more, false));
            keys
        }
        None => kg.evaluation_keys(steps, false),
    }
}

/// The checksum field of a model checkpoint whose `net` text is `text` (the fuzz harness
/// recomputes it so that mutated bodies reach the parser).
pub fn model_checksum(text: &str) -> String {
    format!("{:016x}", checksum(text.as_bytes()))
}

/// The folded network as a checkpoint file's text.
pub fn model_to_json(net: &Net) -> String {
    let body = json!({
        "conv1": conv_json(&net.conv1), "a0": act_json(&net.a0),
        "blocks": net.blocks.iter().map(|b| json!({"c1": conv_json(&b.c1), "a1": act_json(&b.a1), "c2": conv_json(&b.c2), "a2": act_json(&b.a2)})).collect::<Vec<_>>(),
        "fc": net.fc, "fc_b": net.fc_b, "scale": net.scale,
    });
    let text = body.to_string();
    json!({"format": MAGIC_MODEL, "version": VERSION, "checksum": model_checksum(&text), "net": text})
        .to_string()
}

/// Writes a checkpoint.
pub fn save_model(path: &Path, net: &Net) -> SysResult<()> {
    write(path, model_to_json(net).as_bytes())
}

fn field<'a>(v: &'a Value, k: &str) -> SysResult<&'a Value> {
    v.get(k)
        .ok_or_else(|| usage(format!("model: missing `{k}`")))
}

fn num_vec(v: &Value, k: &str) -> SysResult<Vec<f64>> {
    serde_json::from_value(field(v, k)?.clone()).map_err(|e| usage(format!("model: `{k}`: {e}")))
}

fn conv_from(v: &Value) -> SysResult<ConvWeights> {
    let u = |k: &str| -> SysResult<usize> {
        field(v, k)?
            .as_u64()
            .map(|x| x as usize)
            .filter(|&x| x <= 4096)
            .ok_or_else(|| usage(format!("model: `{k}` is not a small non-negative integer")))
    };
    let c = ConvWeights {
        co: u("co")?,
        ci: u("ci")?,
        kh: u("kh")?,
        stride: u("stride")?,
        pad: u("pad")?,
        w: num_vec(v, "w")?,
        bias: num_vec(v, "bias")?,
    };
    if c.w.len() != c.co * c.ci * c.kh * c.kh || c.bias.len() != c.co {
        return Err(usage(format!(
            "model: a {}x{}x{k}x{k} convolution with {} weights and {} biases",
            c.co,
            c.ci,
            c.w.len(),
            c.bias.len(),
            k = c.kh
        )));
    }
    Ok(c)
}

fn act_from(v: &Value) -> SysResult<Act> {
    if v.as_str() == Some("relu") {
        return Ok(Act::Relu);
    }
    let q = field(v, "herpn")?;
    Ok(Act::Quad(super::act::HerPn {
        a: num_vec(q, "a")?,
        b: num_vec(q, "b")?,
        c: num_vec(q, "c")?,
    }))
}

/// Parses a checkpoint's text (checked: format, version, checksum, shapes).
pub fn model_from_json(text: &str, path: &Path) -> SysResult<Net> {
    let p = path.display();
    let outer: Value = serde_json::from_str(text)
        .map_err(|e| usage(format!("{p}: not an hcnn model checkpoint (JSON: {e})")))?;
    if outer.get("format").and_then(Value::as_str) != Some(MAGIC_MODEL) {
        return Err(usage(format!("{p}: not an hcnn model checkpoint (format)")));
    }
    if outer.get("version").and_then(Value::as_u64) != Some(u64::from(VERSION)) {
        return Err(usage(format!(
            "{p}: model checkpoint version is not {VERSION}"
        )));
    }
    let inner = outer.get("net").and_then(Value::as_str).unwrap_or("");
    if outer.get("checksum").and_then(Value::as_str) != Some(&model_checksum(inner)) {
        return Err(usage(format!(
            "{p}: model checkpoint checksum mismatch (corrupted or edited)"
        )));
    }
    let v: Value =
        serde_json::from_str(inner).map_err(|e| usage(format!("{p}: model body: {e}")))?;
    let blocks = field(&v, "blocks")?
        .as_array()
        .ok_or_else(|| usage(format!("{p}: model: `blocks` is not a list")))?
        .iter()
        .map(|b| {
            Ok(Block {
                c1: conv_from(field(b, "c1")?)?,
                a1: act_from(field(b, "a1")?)?,
                c2: conv_from(field(b, "c2")?)?,
                a2: act_from(field(b, "a2")?)?,
            })
        })
        .collect::<SysResult<Vec<_>>>()?;
    let net = Net {
        conv1: conv_from(field(&v, "conv1")?)?,
        a0: act_from(field(&v, "a0")?)?,
        blocks,
        fc: serde_json::from_value(field(&v, "fc")?.clone())
            .map_err(|e| usage(format!("{p}: model: `fc`: {e}")))?,
        fc_b: num_vec(&v, "fc_b")?,
        scale: field(&v, "scale")?.as_f64().unwrap_or(f64::NAN),
    };
    net.check().map_err(|e| usage(format!("{p}: {e}")))?;
    Ok(net)
}

/// Reads a checkpoint file.
pub fn load_model(path: &Path) -> SysResult<Net> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "{}: not an hcnn model checkpoint (not UTF-8)",
            path.display()
        ))
    })?;
    model_from_json(&text, path)
}

// ---- the sub-commands ----

/// Options of `hcnn bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Key parameters (the network's shape is filled in from the model).
    pub keygen: KeygenOptions,
    /// Folder for `report.json`.
    pub out: PathBuf,
    /// A model checkpoint; without one, a random-weight HerPN ResNet-(6·blocks+2) (latency
    /// does not depend on the weights).
    pub model: Option<PathBuf>,
    /// Basic blocks per stage of the random network (3: ResNet-20).
    pub blocks: usize,
    /// Images to encrypt (PNG files); without any, `images` synthetic ones.
    pub image_files: Vec<PathBuf>,
    /// Synthetic images when no files are given.
    pub images: usize,
    /// Seed of the random network and the synthetic images.
    pub seed: u64,
    /// Threads the run uses (already initialised by the caller).
    pub threads: usize,
}

/// `hcnn bench`: keygen, encrypt, infer and decrypt in one process, each timed, the server
/// leg on evaluation keys only (a [`Server`] built from the [`ServerKeys`] bundle), and the
/// decrypted logits against the plaintext network. Writes `out/report.json`.
pub fn bench(o: &BenchOptions) -> SysResult<ferrolab_core::Report> {
    let report_path = o.out.join("report.json");
    if report_path.exists() {
        return Err(usage(format!(
            "{}: already exists; bench never overwrites a report",
            report_path.display()
        )));
    }
    let (net, model_name) = match &o.model {
        Some(p) => (load_model(p)?, p.display().to_string()),
        None => (
            Net::random_resnet(o.seed, true, 10, o.blocks, o.keygen.width),
            format!(
                "random-weight HerPN ResNet-{} (seed {})",
                6 * o.blocks + 2,
                o.seed
            ),
        ),
    };
    let side = o.keygen.side;
    let xs: Vec<Map> = if o.image_files.is_empty() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed ^ 0x1a9e5);
        let set = ferrolab_vision::data::ImageSet {
            height: 28,
            width: 28,
            pixels: (0..o.images * 28 * 28)
                .map(|_| rng.random::<u8>())
                .collect(),
            labels: vec![0; o.images],
        };
        let p = Prepared::new(&set, side);
        (0..o.images).map(|i| p.map(i)).collect()
    } else {
        o.image_files
            .iter()
            .map(|f| load_image(f, side))
            .collect::<SysResult<_>>()?
    };
    let mut ko = o.keygen.clone();
    ko.width = net.conv1.co;
    check_model(
        &net,
        Shape {
            side,
            width: ko.width,
            boot_levels: None,
        },
    )?;
    check_memory(&ko)?;
    // Everything that can be refused beforehand is checked: now the folder. A failure from
    // here on (a chain too short for the network is found by the server's own check, after
    // key generation) removes the scratch files, and the output folder if this run made it.
    let made_out = !o.out.exists();
    std::fs::create_dir_all(&o.out).map_err(|e| usage(format!("{}: {e}", o.out.display())))?;
    let work = o.out.join(".hcnn-bench");
    let measured = std::fs::create_dir_all(&work)
        .map_err(|e| usage(format!("{}: {e}", work.display())))
        .and_then(|()| measure(&net, &ko, &xs, &work));
    std::fs::remove_dir_all(&work).ok();
    if measured.is_err() && made_out {
        // Only if empty: `remove_dir` never takes anything else with it.
        std::fs::remove_dir(&o.out).ok();
    }
    let m = measured?;

    use ferrolab_core::metrics::median;
    let depth = net.depth();
    let t = o.threads;
    let mut r = ferrolab_core::Report::new(
        "hcnn-bench",
        if o.image_files.is_empty() {
            "synthetic"
        } else {
            "files"
        },
        o.seed,
    );
    r.config = json!({"log_n": m.log_n, "secure": ko.secure, "levels": ko.levels, "side": side,
        "width": ko.width, "model": model_name, "images": xs.len(), "threads": t});
    let n = xs.len().max(1) as f64;
    for (k, v) in [
        (
            format!("latency_seconds_resnet{depth}_t{t}"),
            median(&m.inf_s),
        ),
        (
            format!("cpu_seconds_resnet{depth}_t{t}"),
            median(&m.inf_cpu),
        ),
        ("keygen_seconds".into(), m.keygen_seconds),
        ("keygen_cpu_seconds".into(), m.keygen_cpu),
        ("encrypt_seconds".into(), median(&m.enc_s)),
        ("decrypt_seconds".into(), median(&m.dec_s)),
        ("agreement_top1_encrypted".into(), m.agree as f64 / n),
        ("max_logit_error".into(), m.max_err),
        ("eval_key_mb".into(), m.eval_key_mb),
        ("rotation_keys".into(), m.rotation_keys as f64),
        ("rotations_total".into(), m.last.rotations as f64),
        ("key_switches_encrypted".into(), m.last.key_switches as f64),
        ("bootstraps_encrypted".into(), m.last.bootstraps as f64),
        (
            "peak_rss_mb".into(),
            crate::bootstrap::bench::peak_rss_bytes() as f64 / (1u64 << 20) as f64,
        ),
    ] {
        r.metrics.insert(k, v);
    }
    r.timings.insert("keygen".into(), m.keygen_seconds);
    r.timings.insert("infer_total".into(), m.inf_s.iter().sum());
    r.details = json!({"per_image": m.per_image});
    r.notes.push(if ko.secure {
        format!("N = 2^{}, bootstrapping set n16_l9 (sparse secret h = 192): 128-bit secure as documented", m.log_n)
    } else {
        format!(
            "N = 2^{}, leveled test chain of {} levels: NOT 128-bit secure (insecure test parameters, flagged)",
            m.log_n, ko.levels
        )
    });
    if o.image_files.is_empty() {
        r.notes.push("inputs: synthetic images (uniform random grey levels, normalised as Fashion-MNIST); latency does not depend on the pixels".into());
    }
    let text =
        serde_json::to_vec_pretty(&r).map_err(|e| SystemError::runtime(format!("report: {e}")))?;
    write(&report_path, &text)?;
    Ok(r)
}

/// What [`bench`] measures between key generation and the report.
struct Measured {
    keygen_seconds: f64,
    keygen_cpu: f64,
    rotation_keys: usize,
    eval_key_mb: f64,
    log_n: u32,
    enc_s: Vec<f64>,
    inf_s: Vec<f64>,
    inf_cpu: Vec<f64>,
    dec_s: Vec<f64>,
    agree: usize,
    max_err: f64,
    per_image: Vec<serde_json::Value>,
    last: InferStats,
}

/// Key generation, then encrypt → infer → decrypt for each image, files in `work`.
fn measure(net: &Net, ko: &KeygenOptions, xs: &[Map], work: &Path) -> SysResult<Measured> {
    let cpu_now = crate::bootstrap::bench::process_cpu_ms;
    let (t, c) = (Instant::now(), cpu_now());
    let (client, server, boot) = keygen_keeping_bootstrapper(ko)?;
    let keygen_seconds = t.elapsed().as_secs_f64();
    let keygen_cpu = (cpu_now() - c) / 1e3;
    let rotation_keys = server.keys.galois.keys.len();
    let eval_key_mb = server.keys.size_bytes() as f64 / (1u64 << 20) as f64;
    let log_n = client.ctx.spec().log_n;
    let srv = Server::with_bootstrapper(server, boot)?;
    let mut enc = Encryptor::new(&client.ctx).map_err(|e| fhe(work, e))?;

    let (mut enc_s, mut inf_s, mut inf_cpu, mut dec_s) = (vec![], vec![], vec![], vec![]);
    let (mut agree, mut max_err) = (0usize, 0.0f64);
    let mut per_image = vec![];
    let mut last = InferStats::default();
    for (i, x) in xs.iter().enumerate() {
        let xf = work.join(format!("x{i}.ct"));
        let yf = work.join(format!("y{i}.ct"));
        let t = Instant::now();
        write(&xf, &encrypt_with(&client, x, &mut enc)?)?;
        enc_s.push(t.elapsed().as_secs_f64());
        let (bytes, st) = srv.infer(net, &xf).map_err(|e| {
            // The scratch ciphertext is gone by the time this is read: name the setting.
            let text = e
                .to_string()
                .replace(&xf.display().to_string(), "hcnn bench")
                .replace("keygen --params test --levels", "hcnn bench --levels");
            if e.class() == ferrolab_core::ErrorClass::Usage {
                usage(text)
            } else {
                SystemError::runtime(text)
            }
        })?;
        write(&yf, &bytes)?;
        inf_s.push(st.seconds);
        inf_cpu.push(st.cpu_seconds);
        let t = Instant::now();
        let got = decrypt(&client, &yf)?;
        dec_s.push(t.elapsed().as_secs_f64());
        let want = net.reference(x);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, f64::max);
        max_err = max_err.max(err);
        agree += usize::from(argmax(&got) == argmax(&want));
        eprintln!(
            "hcnn bench: image {i}: infer {:.1} s (CPU {:.1} s), max logit error {err:.2e}",
            st.seconds, st.cpu_seconds
        );
        per_image.push(
            json!({"logits": got, "plaintext_logits": want, "infer_seconds": st.seconds,
            "infer_cpu_seconds": st.cpu_seconds, "max_logit_error": err}),
        );
        last = st;
    }
    Ok(Measured {
        keygen_seconds,
        keygen_cpu,
        rotation_keys,
        eval_key_mb,
        log_n,
        enc_s,
        inf_s,
        inf_cpu,
        dec_s,
        agree,
        max_err,
        per_image,
        last,
    })
}

fn path_arg(name: &'static str, long: bool, help: &'static str) -> clap::Arg {
    let a = clap::Arg::new(name)
        .value_parser(clap::value_parser!(PathBuf))
        .required(true)
        .help(help);
    if long {
        a.long(name).value_name("PATH")
    } else {
        a
    }
}

/// The `hcnn` command and its sub-commands.
pub fn command() -> clap::Command {
    use clap::{Arg, Command, value_parser};
    Command::new("hcnn")
        .about("HyPHEN's client/server encrypted inference: keygen, encrypt, infer, decrypt; bench does all four in one process")
        .subcommand_required(true)
        .subcommand(
            Command::new("keygen")
                .about("Client: write secret.key, public.key, params.bin, client.json and eval.keys (the server's) into DIR")
                .arg(path_arg("out", true, "Key folder to create (must not hold keys already)"))
                .arg(Arg::new("params").long("params").value_parser(["secure", "test"]).default_value("secure")
                    .help("secure: N = 2^16 with bootstrapping (n16_l9, 128-bit); test: leveled insecure chain (--log-n, --levels)"))
                .arg(Arg::new("log-n").long("log-n").value_parser(value_parser!(u32).range(11..=16)).default_value("13"))
                .arg(Arg::new("levels").long("levels").value_parser(value_parser!(usize)).default_value("30"))
                .arg(Arg::new("side").long("side").value_parser(["8", "16", "32"]).default_value("32").help("Input raster side"))
                .arg(Arg::new("width").long("width").value_parser(value_parser!(usize)).default_value("16").help("The network's first-stage width"))
                .arg(Arg::new("max-memory").long("max-memory").value_name("SIZE")
                    .help("Refuse key sets whose estimated memory exceeds SIZE (e.g. 8G; default: 80% of the machine's or cgroup's memory)")),
        )
        .subcommand(
            Command::new("encrypt")
                .about("Client: encrypt one PNG (28x28 Fashion-MNIST or side x side) with the public key")
                .arg(path_arg("keys", true, "Key folder written by keygen"))
                .arg(path_arg("image", false, "IMAGE.png"))
                .arg(path_arg("out", true, "Ciphertext file to write (X.ct; must not exist)")),
        )
        .subcommand(
            Command::new("infer")
                .about("Server: run the network on X.ct with evaluation keys only")
                .arg(path_arg("keys", true, "eval.keys (or the folder holding it); a secret key is refused"))
                .arg(path_arg("model", true, "Model checkpoint (model_herpn.json written by `ferrolab hyphen`)"))
                .arg(path_arg("input", false, "X.ct"))
                .arg(path_arg("out", true, "Output ciphertext file (Y.ct; must not exist)"))
                .arg(ferrolab_core::system::threads_arg()),
        )
        .subcommand(
            Command::new("bench")
                .about("keygen, encrypt, infer and decrypt in one process, each timed; writes DIR/report.json")
                .arg(path_arg("out", true, "Folder for report.json (created; an existing report is never overwritten)"))
                .arg(Arg::new("model").long("model").value_name("PATH").value_parser(value_parser!(PathBuf))
                    .help("Model checkpoint (model_herpn.json written by `ferrolab hyphen`); default: a random-weight HerPN ResNet"))
                .arg(Arg::new("image").value_name("IMAGE.png").num_args(0..).value_parser(value_parser!(PathBuf))
                    .help("Images to encrypt (28x28 Fashion-MNIST or side x side); default: --images synthetic ones"))
                .arg(Arg::new("images").long("images").value_parser(value_parser!(u64).range(1..=100)).default_value("1")
                    .help("Synthetic images when no IMAGE.png is given"))
                .arg(Arg::new("params").long("params").value_parser(["secure", "test"]).default_value("secure")
                    .help("secure: N = 2^16 with bootstrapping (n16_l9, 128-bit; ~9 GB); test: leveled insecure chain (--log-n, --levels)"))
                .arg(Arg::new("log-n").long("log-n").value_parser(value_parser!(u32).range(11..=16)).default_value("13").help("log2 N of the test chain"))
                .arg(Arg::new("levels").long("levels").value_parser(value_parser!(u64).range(2..=200)).default_value("30").help("Levels of the test chain"))
                .arg(Arg::new("side").long("side").value_parser(["8", "16", "32"]).default_value("32").help("Input raster side"))
                .arg(Arg::new("width").long("width").value_parser(value_parser!(u64).range(4..=64)).default_value("16")
                    .help("First-stage width of the random network"))
                .arg(Arg::new("blocks").long("blocks").value_parser(value_parser!(u64).range(1..=9)).default_value("3")
                    .help("Basic blocks per stage of the random network (3: ResNet-20)"))
                .arg(Arg::new("seed").long("seed").value_parser(value_parser!(u64)).default_value("0").help("Seed of the random network and the synthetic images"))
                .arg(Arg::new("max-memory").long("max-memory").value_name("SIZE")
                    .help("Refuse key sets whose estimated memory exceeds SIZE (e.g. 8G; default: 80% of the machine's or cgroup's memory)"))
                .arg(ferrolab_core::system::threads_arg()),
        )
        .subcommand(
            Command::new("decrypt")
                .about("Client: decrypt Y.ct and print the logits as JSON")
                .arg(path_arg("keys", true, "Key folder written by keygen"))
                .arg(path_arg("input", false, "Y.ct")),
        )
}

fn p<'a>(m: &'a clap::ArgMatches, k: &str) -> SysResult<&'a PathBuf> {
    m.get_one::<PathBuf>(k)
        .ok_or_else(|| usage(format!("missing {k}")))
}

/// Runs `hcnn <sub>`.
pub fn run_command(m: &clap::ArgMatches) -> SysResult<()> {
    match m.subcommand() {
        Some(("keygen", s)) => {
            let out = p(s, "out")?;
            if out.join("secret.key").exists() || out.join("eval.keys").exists() {
                return Err(usage(format!(
                    "{}: already holds keys; keygen never overwrites a secret key",
                    out.display()
                )));
            }
            // A file in the way is refused before keygen, which takes minutes at N = 2^16.
            if let Some(file) = out.ancestors().find(|a| a.is_file()) {
                return Err(usage(format!(
                    "--out {}: {} is a file, not a folder",
                    out.display(),
                    file.display()
                )));
            }
            let num = |k: &str| {
                s.get_one::<String>(k)
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            let o = KeygenOptions {
                secure: s.get_one::<String>("params").map(String::as_str) != Some("test"),
                log_n: s.get_one::<u32>("log-n").copied().unwrap_or(13),
                levels: s.get_one::<usize>("levels").copied().unwrap_or(30),
                side: num("side"),
                width: s.get_one::<usize>("width").copied().unwrap_or(16),
                max_memory: max_memory(s)?,
            };
            if !(1..=64).contains(&o.width) || !(2..=200).contains(&o.levels) {
                return Err(usage(
                    "keygen: --width must be in 1..=64 and --levels in 2..=200",
                ));
            }
            check_memory(&o)?;
            let t = Instant::now();
            let (client, server) = keygen(&o)?;
            std::fs::create_dir_all(out).map_err(|e| usage(format!("{}: {e}", out.display())))?;
            write(
                &out.join("params.bin"),
                &serial::params_to_bytes(&client.ctx),
            )?;
            write(
                &out.join("secret.key"),
                &serial::to_bytes(&client.ctx, &client.sk),
            )?;
            write(
                &out.join("public.key"),
                &serial::to_bytes(&client.ctx, &client.pk),
            )?;
            write(
                &out.join("client.json"),
                &serde_json::to_vec(&client.shape.to_json()).unwrap_or_default(),
            )?;
            let bundle = server.to_bytes()?;
            write(&out.join("eval.keys"), &bundle)?;
            println!(
                "{}",
                json!({"keys": out, "log_n": client.ctx.spec().log_n, "secure": o.secure, "bootstrapping": client.shape.boot_levels.is_some(),
                    "rotation_keys": server.keys.galois.keys.len(), "eval_key_mb": server.keys.size_bytes() as f64 / (1u64 << 20) as f64,
                    "eval_keys_file_mb": bundle.len() as f64 / (1u64 << 20) as f64, "seconds": t.elapsed().as_secs_f64()})
            );
            Ok(())
        }
        Some(("encrypt", s)) => {
            ferrolab_core::run::check_out_file(p(s, "out")?)?;
            let keys = ClientKeys::load(p(s, "keys")?)?;
            let x = load_image(p(s, "image")?, keys.shape.side)?;
            write(p(s, "out")?, &encrypt(&keys, &x)?)
        }
        Some(("infer", s)) => {
            ferrolab_core::backend::try_init_threads(s.get_one::<usize>("threads").copied())?;
            ferrolab_core::run::check_out_file(p(s, "out")?)?;
            let net = load_model(p(s, "model")?)?;
            let keys = ServerKeys::load(p(s, "keys")?)?;
            let (bytes, st) = infer(keys, &net, p(s, "input")?)?;
            write(p(s, "out")?, &bytes)?;
            println!(
                "{}",
                json!({"seconds": st.seconds, "rotations": st.rotations, "key_switches": st.key_switches, "bootstraps": st.bootstraps})
            );
            Ok(())
        }
        Some(("decrypt", s)) => {
            let keys = ClientKeys::load(p(s, "keys")?)?;
            let logits = decrypt(&keys, p(s, "input")?)?;
            println!("{}", json!({"logits": logits, "class": argmax(&logits)}));
            Ok(())
        }
        Some(("bench", s)) => {
            let threads =
                ferrolab_core::backend::try_init_threads(s.get_one::<usize>("threads").copied())?;
            let get = |k: &str| s.get_one::<u64>(k).map(|&v| v as usize);
            let o = BenchOptions {
                keygen: KeygenOptions {
                    secure: s.get_one::<String>("params").map(String::as_str) != Some("test"),
                    log_n: s.get_one::<u32>("log-n").copied().unwrap_or(13),
                    levels: get("levels").unwrap_or(30),
                    side: s
                        .get_one::<String>("side")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(32),
                    width: get("width").unwrap_or(16),
                    max_memory: max_memory(s)?,
                },
                out: p(s, "out")?.clone(),
                model: s.get_one::<PathBuf>("model").cloned(),
                blocks: get("blocks").unwrap_or(3),
                image_files: s
                    .get_many::<PathBuf>("image")
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default(),
                images: get("images").unwrap_or(1),
                seed: s.get_one::<u64>("seed").copied().unwrap_or(0),
                threads,
            };
            let r = bench(&o)?;
            println!("{}", serde_json::to_string(&r.metrics).unwrap_or_default());
            println!("wrote {}", o.out.join("report.json").display());
            Ok(())
        }
        _ => Err(usage(
            "hcnn needs a sub-command: keygen, encrypt, infer, decrypt, bench",
        )),
    }
}
