//! Sentence-classification files: one `<label> <sentence>` per line (MR, SST-2 as distributed
//! with Kim (2014)'s code).
//!
//! Lines are split on LF (`0x0A`) only, because MR holds the byte `0x85`, which some decoders
//! treat as a line break. Bytes that are not valid UTF-8 are decoded as Windows-1252, so a
//! file in a legacy encoding is read rather than rejected.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{DataError, Result, quote};

/// Sentences with their integer labels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabeledSentences {
    /// The text after the first space of each line, as it stands (leading/trailing spaces
    /// kept; a final `\r` is removed).
    pub texts: Vec<String>,
    pub labels: Vec<u32>,
    /// The 1-based line of each example, so later checks (e.g. a label unseen in training)
    /// can name the line.
    pub lines: Vec<usize>,
    /// Lines that were empty or held only whitespace; they are skipped, not errors, because
    /// a blank last line is common in hand-edited files.
    pub skipped_empty: usize,
}

impl LabeledSentences {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Number of distinct labels (a label is a class's name, never a table size: one line
    /// labelled 2^31 does not make 2^31 classes).
    pub fn num_classes(&self) -> usize {
        self.class_labels().len()
    }

    /// The distinct labels, in increasing order: class `i` is label `class_labels()[i]`.
    pub fn class_labels(&self) -> Vec<u32> {
        let set: std::collections::BTreeSet<u32> = self.labels.iter().copied().collect();
        set.into_iter().collect()
    }

    /// Number of examples of each distinct label, in increasing label order (for labels
    /// `0..k` with none missing, entry `l` is the count of label `l`).
    pub fn label_counts(&self) -> Vec<usize> {
        let mut c = std::collections::BTreeMap::<u32, usize>::new();
        for &l in &self.labels {
            *c.entry(l).or_default() += 1;
        }
        c.into_values().collect()
    }
}

/// Windows-1252 code points for bytes 0x80..=0x9F; the five bytes it leaves undefined map to
/// the C1 controls of the same value, as in the WHATWG encoding standard.
const CP1252_80: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// Decodes bytes as UTF-8 where they are valid and as Windows-1252 where they are not; never
/// fails.
pub fn decode_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(match b {
                0x80..=0x9F => CP1252_80[usize::from(b - 0x80)],
                _ => char::from(b),
            });
        }
    }
    out
}

/// Reads a `<label> <sentence>` file. Errors name the file and the 1-based line; a file with
/// no example is an error.
pub fn read_labeled_sentences(path: impl AsRef<Path>) -> Result<LabeledSentences> {
    let path = path.as_ref();
    let file = crate::npz::open_regular(path)?;
    let mut reader = BufReader::new(file);
    let mut out = LabeledSentences::default();
    let mut buf = Vec::with_capacity(256);
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let mut line: &[u8] = &buf;
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest;
        }
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            out.skipped_empty += 1;
            continue;
        }
        let at = || format!("line {line_no}");
        let Some(space) = line.iter().position(|&b| b == b' ') else {
            return Err(DataError::malformed(
                path,
                at(),
                format!(
                    "expected '<label> <sentence>', found no space in {}",
                    quote(&decode_text(line))
                ),
            ));
        };
        let label_txt = decode_text(&line[..space]);
        let label = label_txt.parse::<u32>().map_err(|_| {
            DataError::malformed(
                path,
                at(),
                format!(
                    "expected a non-negative integer label before the first space, found {}",
                    quote(&label_txt)
                ),
            )
        })?;
        out.labels.push(label);
        out.lines.push(line_no);
        out.texts.push(decode_text(&line[space + 1..]));
    }
    if out.is_empty() {
        return Err(DataError::malformed(
            path,
            format!("line {}", line_no + 1),
            format!(
                "no examples in the file ({} blank lines)",
                out.skipped_empty
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn reads_labels_and_decodes_legacy_bytes() {
        let dir = TempDir::new("text_ok");
        let mut bytes =
            b"0 a caf\xe9 scene \x85 dull \n\n1  two spaces\n   \n1 utf8 \xc3\xa9t\xc3\xa9"
                .to_vec();
        bytes.extend_from_slice(b"\n2 x\r\n");
        let p = dir.write("s.txt", &bytes);
        let s = read_labeled_sentences(&p).unwrap();
        assert_eq!(s.labels, vec![0, 1, 1, 2]);
        assert_eq!(s.texts[0], "a caf\u{e9} scene \u{2026} dull ");
        assert_eq!(s.texts[1], " two spaces");
        assert_eq!(s.texts[2], "utf8 \u{e9}t\u{e9}");
        assert_eq!(s.texts[3], "x");
        assert_eq!(s.skipped_empty, 2);
        assert_eq!((s.num_classes(), s.label_counts()), (3, vec![1, 2, 1]));
    }

    #[test]
    fn a_huge_label_is_a_name_not_a_table_size() {
        let dir = TempDir::new("text_huge");
        let p = dir.write("s.txt", b"2147483648 a\n7 b\n4294967295 c\n7 d\n");
        let s = read_labeled_sentences(&p).unwrap();
        assert_eq!(s.num_classes(), 3);
        assert_eq!(s.class_labels(), vec![7, 2_147_483_648, 4_294_967_295]);
        assert_eq!(s.label_counts(), vec![2, 1, 1]);
    }

    #[test]
    fn decode_maps_windows_1252_and_latin1() {
        assert_eq!(
            decode_text(b"\x80\x81\x9f\xa0\xff"),
            "\u{20ac}\u{81}\u{178}\u{a0}\u{ff}"
        );
        assert_eq!(decode_text("ok \u{263a}".as_bytes()), "ok \u{263a}");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let dir = TempDir::new("text_bad");
        let p = dir.write("bad.txt", b"0 fine\n\nx not a label\n");
        let e = read_labeled_sentences(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.txt") && e.contains("line 3") && e.contains("\"x\""),
            "{e}"
        );
        let p = dir.write("nospace.txt", b"1 ok\n1\n");
        let e = read_labeled_sentences(&p).unwrap_err().to_string();
        assert!(
            e.contains("nospace.txt") && e.contains("line 2") && e.contains("no space"),
            "{e}"
        );
        let p = dir.write("neg.txt", b"-1 no\n");
        assert!(
            read_labeled_sentences(&p)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        let p = dir.write("empty.txt", b"\n \n");
        let e = read_labeled_sentences(&p).unwrap_err().to_string();
        assert!(e.contains("empty.txt") && e.contains("no examples"), "{e}");
        let e = read_labeled_sentences(dir.path().join("nope.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.txt"), "{e}");
    }
}
