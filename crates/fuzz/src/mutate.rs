//! The mutators: byte-level (bit flip, byte set, insert, delete, truncate, duplicate, splice)
//! and text-level (a number replaced by a value at or beyond a bound, lines deleted, duplicated
//! or swapped, separators and line ends changed).

use crate::rng::Rng;

/// Numbers at and beyond the bounds a reader or a config checks.
pub const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e308",
    "1e309",
    "-1e309",
    "1e-320",
    "0.0",
    "-0.0",
    "0.5",
    "1.0000001",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e9",
    "100000000",
    "",
    " ",
    "x",
    "0x10",
    "1_000",
    "+1",
    "00",
    "1.5e",
];

/// Bytes that mean something to the formats here.
const INTERESTING_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b'\t', b' ', b',', b'|', b'"', b'\'', b'{', b'}', b'[',
    b']', b'(', b')', b':', b'=', b'.', b'-', b'0', b'9', 0xc3, 0xe9,
];

/// Applies one to three byte-level mutations. `other` is a second input for splicing.
pub fn bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        byte_once(rng, data, other);
    }
}

fn byte_once(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(9) {
        0 | 1 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(INTERESTING_BYTES);
        }
        3 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let b = if rng.chance(0.5) {
                    *rng.pick(INTERESTING_BYTES)
                } else {
                    rng.below(256) as u8
                };
                data.insert(i.min(data.len()), b);
            }
        }
        4 if len > 0 => {
            let i = rng.below(len);
            let n = (1 + rng.below(16)).min(len - i);
            data.drain(i..i + n);
        }
        5 if len > 0 => {
            // Truncation: the commonest real damage (an interrupted copy).
            let keep = rng.below(len);
            data.truncate(keep);
        }
        6 if len > 0 => {
            // Duplicate a block in place.
            let i = rng.below(len);
            let n = (1 + rng.below(64)).min(len - i);
            let block: Vec<u8> = data[i..i + n].to_vec();
            let at = rng.below(data.len() + 1);
            data.splice(at..at, block);
        }
        7 if !other.is_empty() && len > 0 => {
            // Splice: our head, another input's tail.
            let a = rng.below(len);
            let b = rng.below(other.len());
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        8 if len >= 4 => {
            // Overwrite an aligned 4- or 8-byte word with an extreme integer (sizes, offsets).
            let w = if rng.chance(0.5) { 4 } else { 8 };
            if len >= w {
                let i = rng.below(len - w + 1);
                let v: u64 = *rng.pick(&[
                    0,
                    1,
                    u64::MAX,
                    u64::from(u32::MAX),
                    1 << 31,
                    1 << 40,
                    i64::MAX as u64,
                    0x7fff,
                ]);
                data[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
        }
        _ => {
            if len > 0 {
                let i = rng.below(len);
                data[i] = data[i].wrapping_add(1 + rng.below(3) as u8);
            } else {
                data.push(rng.below(256) as u8);
            }
        }
    }
}

/// Byte ranges of the decimal numbers in `text` (an optional sign, digits, fraction, exponent).
pub fn number_spans(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let starts_number = text[i].is_ascii_digit()
            || (text[i] == b'-' && text.get(i + 1).is_some_and(u8::is_ascii_digit));
        let boundary = i == 0 || !text[i - 1].is_ascii_alphanumeric() && text[i - 1] != b'_';
        if starts_number && boundary {
            let s = i;
            i += 1;
            while i < text.len()
                && (text[i].is_ascii_digit()
                    || text[i] == b'.'
                    || text[i] == b'e'
                    || text[i] == b'E'
                    || ((text[i] == b'-' || text[i] == b'+') && matches!(text[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces one to three numbers of a text format by values at or beyond common bounds.
/// Returns false when the text has no number.
pub fn numbers(rng: &mut Rng, data: &mut Vec<u8>) -> bool {
    let rounds = 1 + rng.below(3);
    let mut any = false;
    for _ in 0..rounds {
        let spans = number_spans(data);
        if spans.is_empty() {
            break;
        }
        let (s, e) = *rng.pick(&spans);
        let old = String::from_utf8_lossy(&data[s..e]).into_owned();
        let new = match rng.below(4) {
            0 => match old.parse::<i128>() {
                Ok(v) => (v + [-1i128, 1][rng.below(2)]).to_string(),
                Err(_) => rng.pick(EDGE_NUMBERS).to_string(),
            },
            1 => match old.parse::<i128>() {
                Ok(v) => v.saturating_mul(1 << (8 + rng.below(56))).to_string(),
                Err(_) => format!("{old}0"),
            },
            _ => rng.pick(EDGE_NUMBERS).to_string(),
        };
        data.splice(s..e, new.into_bytes());
        any = true;
    }
    any
}

/// Line-level mutations: delete, duplicate, swap, blank, join, CRLF, a field separator removed
/// or added.
pub fn lines(rng: &mut Rng, data: &mut Vec<u8>) {
    let mut ls: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = ls.len();
    match rng.below(7) {
        0 if n > 1 => {
            ls.remove(rng.below(n));
        }
        1 => {
            let i = rng.below(n);
            let l = ls[i].clone();
            let times = 1 + rng.below(3);
            for _ in 0..times {
                ls.insert(i, l.clone());
            }
        }
        2 if n > 1 => {
            let (a, b) = (rng.below(n), rng.below(n));
            ls.swap(a, b);
        }
        3 => {
            let i = rng.below(n);
            ls[i].clear();
        }
        4 => {
            let i = rng.below(n);
            ls[i].push(b'\r');
        }
        5 => {
            let i = rng.below(n);
            let seps: Vec<usize> = ls[i]
                .iter()
                .enumerate()
                .filter(|(_, b)| matches!(b, b' ' | b',' | b'|' | b'\t' | b'=' | b':'))
                .map(|(k, _)| k)
                .collect();
            if let Some(&k) = seps.get(rng.below(seps.len().max(1))) {
                ls[i].remove(k);
            }
        }
        _ => {
            let i = rng.below(n);
            let k = rng.below(ls[i].len() + 1);
            let sep = *rng.pick(b" ,|\t=\0");
            ls[i].insert(k, sep);
        }
    }
    *data = ls.join(&b'\n');
}

/// A structure-aware text mutation (numbers, then lines) with some byte-level noise.
pub fn text(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    match rng.below(10) {
        0..=4 => {
            if !numbers(rng, data) {
                lines(rng, data);
            }
        }
        5..=7 => lines(rng, data),
        _ => bytes(rng, data, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbers_but_not_inside_words() {
        let t = b"a1 -2 3.5e-3 x_4 (7,)";
        let s: Vec<String> = number_spans(t)
            .into_iter()
            .map(|(a, b)| String::from_utf8_lossy(&t[a..b]).into_owned())
            .collect();
        assert_eq!(s, vec!["-2", "3.5e-3", "7"]);
    }

    #[test]
    fn mutators_are_deterministic() {
        let run = |seed| {
            let mut r = Rng::new(seed);
            let mut d = b"1 hello world\n0 bye 12\n".to_vec();
            for _ in 0..50 {
                text(&mut r, &mut d, b"other 5");
                bytes(&mut r, &mut d, b"zz");
            }
            d
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
