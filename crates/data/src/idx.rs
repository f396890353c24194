//! IDX files (MNIST, Fashion-MNIST): a big-endian header `00 00 <type> <ndim>`, `ndim`
//! big-endian `u32` sizes, then the elements. Only unsigned bytes (type `0x08`) are read,
//! which is what the MNIST family uses. Gzip-compressed files are detected by their magic.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// An unsigned-byte IDX array in C order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Number of items along the first dimension (images, labels).
    pub fn len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Size of one item (e.g. 28 * 28 for images, 1 for labels).
    pub fn item_size(&self) -> usize {
        self.dims.iter().skip(1).product()
    }
}

fn type_name(t: u8) -> &'static str {
    match t {
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// Reads an IDX file, plain or gzip-compressed.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let (mut reader, gz) = crate::io::open_maybe_gz(path)?;
    let unpacked = if gz { " (after gunzip)" } else { "" };
    let read_err = |e: std::io::Error, at: usize| match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            DataError::malformed(
                path,
                format!("byte {at}{unpacked}"),
                format!("corrupt or truncated gzip data: {e}"),
            )
        }
        _ => DataError::io(path, e),
    };
    // Reads up to `want` bytes into `buf`, stopping only at end of input.
    let mut fill = |buf: &mut Vec<u8>, want: usize, at: usize| -> Result<()> {
        (&mut reader)
            .take(want as u64)
            .read_to_end(buf)
            .map_err(|e| read_err(e, at + buf.len()))?;
        Ok(())
    };
    let mut head = Vec::with_capacity(4);
    fill(&mut head, 4, 0)?;
    if head.len() < 4 || head[0] != 0 || head[1] != 0 {
        return Err(DataError::malformed(
            path,
            format!("byte 0{unpacked}"),
            format!("not an IDX file: expected magic 00 00 08 <ndim>, found {head:02x?}"),
        ));
    }
    if head[2] != 0x08 {
        return Err(DataError::malformed(
            path,
            format!("byte 2{unpacked}"),
            format!(
                "element type 0x{:02x} ({}) is not supported; only 0x08 (unsigned byte) is read",
                head[2],
                type_name(head[2])
            ),
        ));
    }
    let ndim = usize::from(head[3]);
    let mut dims_raw = Vec::with_capacity(4 * ndim);
    fill(&mut dims_raw, 4 * ndim, 4)?;
    if dims_raw.len() < 4 * ndim {
        return Err(DataError::malformed(
            path,
            format!("byte {}{unpacked}", 4 + dims_raw.len()),
            format!(
                "truncated header: {ndim} dimensions need {} bytes, found {}",
                4 * ndim,
                dims_raw.len()
            ),
        ));
    }
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let header = 4 + 4 * ndim;
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            DataError::malformed(path, "header", format!("dimensions {dims:?} are too large"))
        })?;
    // The header's sizes are untrusted: the first allocation is bounded by what the file can
    // hold (its length, or the gzip expansion cap), so a 20-byte file claiming gigabytes
    // reserves nothing large before the size mismatch is reported.
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    let room = if gz {
        len.saturating_mul(1100).min(crate::io::MAX_EXPANDED)
    } else {
        len
    };
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let mut data = Vec::with_capacity(need.min(room).min(1 << 28));
    fill(&mut data, need, header)?;
    if data.len() < need {
        return Err(DataError::malformed(
            path,
            format!("byte {}{unpacked}", header + data.len()),
            format!(
                "truncated data: dimensions {dims:?} need {need} bytes, found {}",
                data.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if reader
        .read(&mut extra)
        .map_err(|e| read_err(e, header + need))?
        > 0
    {
        return Err(DataError::malformed(
            path,
            format!("byte {}{unpacked}", header + need),
            format!("trailing bytes after the {need} data bytes of dimensions {dims:?}"),
        ));
    }
    Ok(IdxArray { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_plain_and_gzip() {
        let dir = TempDir::new("idx_ok");
        let raw = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        for (name, bytes) in [("a.idx", raw.clone()), ("a.idx.gz", gz(&raw))] {
            let a = read_idx(dir.write(name, &bytes)).unwrap();
            assert_eq!(a.dims, vec![2, 2, 3]);
            assert_eq!((a.len(), a.item_size(), a.data[11]), (2, 6, 12));
        }
        let labels = read_idx(dir.write("l.idx", &idx(&[3], &[0, 9, 4]))).unwrap();
        assert_eq!(
            (labels.len(), labels.item_size(), labels.data),
            (3, 1, vec![0, 9, 4])
        );
    }

    #[test]
    fn bad_files_name_file_and_byte_counts() {
        let dir = TempDir::new("idx_bad");
        let raw = idx(&[2, 3], &[1, 2, 3, 4, 5]);
        let e = read_idx(dir.write("t.idx", &raw)).unwrap_err().to_string();
        assert!(
            e.contains("t.idx") && e.contains("byte 17") && e.contains("need 6 bytes, found 5"),
            "{e}"
        );
        let e = read_idx(dir.write("t.idx.gz", &gz(&raw)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.idx.gz")
                && e.contains("after gunzip")
                && e.contains("need 6 bytes, found 5"),
            "{e}"
        );
        let e = read_idx(dir.write("h.idx", &[0, 0, 8, 3, 0, 0]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated header"), "{e}");
        let e = read_idx(dir.write("f.idx", &[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0x0d (f32)"), "{e}");
        let e = read_idx(dir.write("m.idx", b"PK\x03\x04"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.idx") && e.contains("magic"), "{e}");
        let e = read_idx(dir.write("x.idx", &idx(&[1], &[1, 2])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trailing"), "{e}");
        let mut cut = gz(&idx(
            &[100, 100],
            &(0..10000).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>(),
        ));
        cut.truncate(cut.len() / 2);
        let e = read_idx(dir.write("c.idx.gz", &cut))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.idx.gz") && e.contains("truncated"), "{e}");
    }
}
