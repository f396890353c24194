//! Opening files that may be gzip-compressed.

use crate::error::{DataError, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// A buffered reader over `path`, transparently gunzipped when the file starts with the gzip
/// magic bytes, and whether it was compressed (for error messages about offsets).
/// Refuses a non-regular file first (a FIFO or device never ends), and caps what a gzip file
/// may expand to: deflate cannot exceed ~1032:1, so more than 1100x the compressed size (or
/// 4 GiB) is a crafted file, refused as invalid data instead of filling memory.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<(Box<dyn BufRead>, bool)> {
    crate::npz::ensure_regular(path)?;
    let compressed = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    let mut file = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
    let gz = file
        .fill_buf()
        .map_err(|e| DataError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        let cap = compressed.saturating_mul(1100).min(MAX_EXPANDED);
        (
            Box::new(BufReader::new(Capped {
                inner: MultiGzDecoder::new(file),
                left: cap,
                cap,
            })),
            true,
        )
    } else {
        (Box::new(file), false)
    })
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it with a name unique
/// to the call (two writers of one name cannot share it), synced, renamed over `path` (an
/// earlier file there stays intact until then), and the folder synced so the rename is
/// durable. Core's `run::write_atomic` adds its checks and error type around this.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file",
        ));
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename in `dir` durable (the new name survives a power cut). Best effort: where a
/// folder cannot be opened or synced (some file systems, other platforms) the file itself is
/// already complete.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// [`write_file_atomic`] with this crate's error.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_atomic(path, bytes).map_err(|e| DataError::io(path, e))
}

/// The most a gzip data file may expand to.
pub(crate) const MAX_EXPANDED: u64 = 4 << 30;

/// A reader that fails once more than `cap` bytes have come out of `inner`.
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "gzip data expands beyond {} bytes (more than deflate can compress)",
                    self.cap
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn expansion_is_capped_and_a_fifo_is_not_opened() {
        let dir = std::env::temp_dir().join(format!("ferrolab-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A legitimate file reads back.
        let ok = dir.join("ok.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"a,b\n1,2\n").unwrap();
        std::fs::write(&ok, e.finish().unwrap()).unwrap();
        let (mut r, gz) = open_maybe_gz(&ok).unwrap();
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        assert!(gz && text == "a,b\n1,2\n");
        // 8 MiB of zeros compress ~1000:1; a reader capped at 1 MiB refuses the stream, one
        // capped at 1100x the file size (the real path) reads it.
        let zeros = dir.join("zeros.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 8 << 20]).unwrap();
        let z = e.finish().unwrap();
        let mut c = Capped {
            inner: flate2::read::GzDecoder::new(&z[..]),
            left: 1 << 20,
            cap: 1 << 20,
        };
        let mut out = Vec::new();
        let err = c.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        std::fs::write(&zeros, &z).unwrap();
        let (mut r, _) = open_maybe_gz(&zeros).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 8 << 20);
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
            let e = open_maybe_gz(&fifo).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("regular file")),
                "{e:?}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
