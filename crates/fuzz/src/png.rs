//! The PNG readers (`ferrolab_data::image::{read_png, read_png_mask}`) as a fuzz target.
//!
//! Every PNG chunk carries a CRC, so flipping bytes at random mostly tests the CRC check and
//! nothing behind it. Most mutants therefore change one chunk's *content* and then write a
//! correct CRC: IHDR fields (size, depth, colour type, interlace), the scanlines inside the
//! zlib stream of IDAT (filter bytes, truncated or extra rows), or the chunk list itself (a
//! chunk dropped, repeated or cut short). A share keep a wrong CRC or raw damage on purpose.

use crate::mutate;
use crate::rng::Rng;
use std::io::{Read, Write};

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// One chunk: its four-byte type and its data (length and CRC are recomputed on writing).
#[derive(Debug, Clone)]
struct Chunk {
    kind: [u8; 4],
    data: Vec<u8>,
}

fn crc(kind: &[u8; 4], data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(kind);
    c.update(data);
    c.sum()
}

/// Splits a PNG into its chunks; `None` when it is not a well-formed chunk list (then the
/// mutation falls back to raw bytes).
fn chunks(bytes: &[u8]) -> Option<Vec<Chunk>> {
    let mut rest = bytes.strip_prefix(SIGNATURE)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let data = rest.get(8..8usize.checked_add(len)?)?.to_vec();
        rest = rest.get(12 + len..)?;
        out.push(Chunk { kind, data });
    }
    Some(out)
}

fn pack(chunks: &[Chunk], bad_crc: Option<usize>) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    for (i, c) in chunks.iter().enumerate() {
        out.extend((c.data.len() as u32).to_be_bytes());
        out.extend(c.kind);
        out.extend(&c.data);
        let sum = crc(&c.kind, &c.data);
        out.extend(if bad_crc == Some(i) { !sum } else { sum }.to_be_bytes());
    }
    out
}

fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// The seed images: every 8-bit colour type the writer produces, odd sizes, and one mask.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    // One folder per call: tests call this from parallel threads of one process, and a shared
    // folder was removed by one call while another still wrote into it.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ferrolab-fuzz-png-{}-{call}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("gray.png", 7, 5, 1),
        ("ga.png", 4, 3, 2),
        ("rgb.png", 6, 4, 3),
        ("rgba.png", 3, 3, 4),
        ("labels.mask.png", 9, 6, 1),
    ];
    let mut out = Vec::new();
    for &(name, w, h, c) in shapes {
        let data: Vec<u8> = (0..w * h * c)
            .map(|i| {
                if name.contains("mask") {
                    (i % 4) as u8
                } else {
                    (i * 37 % 256) as u8
                }
            })
            .collect();
        let Ok(img) = ferrolab_data::image::Image::new(w, h, c, data) else {
            continue;
        };
        let p = dir.join(name);
        if ferrolab_data::image::write_png(&p, &img).is_ok()
            && let Ok(bytes) = std::fs::read(&p)
        {
            out.push((name.to_string(), bytes));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Mutates PNG bytes in place (see the module notes for the mix).
pub fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let Some(mut cs) = chunks(bytes) else {
        mutate::bytes(rng, bytes, &[]);
        return;
    };
    let mut bad_crc = None;
    match rng.below(20) {
        // Raw damage: the signature, a length field or a CRC.
        0..=1 => {
            mutate::bytes(rng, bytes, &[]);
            return;
        }
        2 => bad_crc = Some(rng.below(cs.len())),
        // IHDR: width, height, bit depth, colour type, compression, filter, interlace.
        3..=7 => {
            if let Some(h) = cs.iter_mut().find(|c| &c.kind == b"IHDR") {
                let field = rng.below(7);
                let (at, len) = if field < 2 {
                    (field * 4, 4)
                } else {
                    (6 + field, 1)
                };
                if h.data.len() >= at + len {
                    let v: u32 = match rng.below(6) {
                        0 => 0,
                        1 => 1,
                        2 => u32::MAX >> rng.below(32),
                        3 => 1 << rng.below(31),
                        4 => rng.below(17) as u32,
                        _ => (rng.next_u64() & 0xffff_ffff) as u32,
                    };
                    let be = v.to_be_bytes();
                    h.data[at..at + len].copy_from_slice(&be[4 - len..]);
                }
            }
        }
        // The filtered scanlines inside IDAT's zlib stream.
        8..=15 => {
            let idat: Vec<u8> = cs
                .iter()
                .filter(|c| &c.kind == b"IDAT")
                .flat_map(|c| c.data.clone())
                .collect();
            if let Some(mut raw) = inflate(&idat) {
                match rng.below(4) {
                    0 => {
                        let n = rng.below(raw.len() + 1);
                        raw.truncate(n);
                    }
                    1 => {
                        let extra = rng.below(64) + 1;
                        raw.extend((0..extra).map(|_| rng.below(256) as u8));
                    }
                    _ => mutate::bytes(rng, &mut raw, &[]),
                }
                let z = deflate(&raw);
                cs.retain(|c| &c.kind != b"IDAT");
                let at = cs.len().saturating_sub(1);
                // Split over one to three IDAT chunks: readers must join them.
                let parts = rng.below(3) + 1;
                let step = z.len().div_ceil(parts).max(1);
                for (k, part) in z.chunks(step).enumerate() {
                    cs.insert(
                        at + k,
                        Chunk {
                            kind: *b"IDAT",
                            data: part.to_vec(),
                        },
                    );
                }
            }
        }
        // The zlib stream's own bytes.
        16 => {
            if let Some(c) = cs.iter_mut().find(|c| &c.kind == b"IDAT") {
                mutate::bytes(rng, &mut c.data, &[]);
            }
        }
        // The chunk list: one dropped, repeated, or a foreign chunk added.
        _ => {
            let i = rng.below(cs.len());
            match rng.below(3) {
                0 => {
                    cs.remove(i);
                }
                1 => {
                    let c = cs[i].clone();
                    cs.insert(i, c);
                }
                _ => cs.insert(
                    i,
                    Chunk {
                        kind: *rng.pick(&[*b"PLTE", *b"tRNS", *b"zzZz", *b"IEND", *b"IHDR"]),
                        data: (0..rng.below(24)).map(|_| rng.below(256) as u8).collect(),
                    },
                ),
            }
        }
    }
    *bytes = pack(&cs, bad_crc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        for (name, bytes) in seeds() {
            let cs = chunks(&bytes).unwrap();
            assert_eq!(&cs[0].kind, b"IHDR", "{name}");
            assert_eq!(pack(&cs, None), bytes, "{name}");
        }
        assert_eq!(seeds().len(), 5);
    }

    #[test]
    fn mutants_differ_and_mostly_keep_their_crcs() {
        let seeds = seeds();
        assert_eq!(seeds.len(), 5);
        let mut rng = Rng::new(7);
        let (mut changed, mut crc_ok) = (0, 0);
        for k in 0..200 {
            let mut b = seeds[k % seeds.len()].1.clone();
            mutate(&mut rng, &mut b);
            changed += usize::from(b != seeds[k % seeds.len()].1);
            if let Some(cs) = chunks(&b)
                && pack(&cs, None) == b
            {
                crc_ok += 1;
            }
        }
        assert!(changed > 150, "{changed}/200 mutants changed");
        assert!(crc_ok > 120, "{crc_ok}/200 mutants have valid CRCs");
    }
}
