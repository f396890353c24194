//! NumPy `.npz` archives: ZIP files whose members are `<key>.npy`, stored or deflated.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use crate::error::{DataError, Result};
use crate::npy::{NpyArray, parse_npy, parse_npy_strings};

/// The most bytes one member may expand to, whatever its header declares: 4 GiB, above any
/// array of the datasets we read (the largest, a 1M-node feature matrix, is under 1 GiB).
pub const MAX_MEMBER_BYTES: u64 = 4 << 30;

/// Refuses a data path that is not a regular file (after following links): a FIFO would block
/// the reader until some other process writes, a device such as `/dev/zero` never ends.
pub(crate) fn ensure_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file (a FIFO, socket or device)"
    };
    Err(DataError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}; data paths must name regular files"),
        ),
    ))
}

/// Opens a data file after [`ensure_regular`].
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    ensure_regular(path)?;
    File::open(path).map_err(|e| DataError::io(path, e))
}

/// An open `.npz` archive. Members are read on demand, one at a time; a member may not expand
/// beyond the size its zip header declares, nor beyond [`MAX_MEMBER_BYTES`].
pub struct Npz {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
    keys: Vec<String>,
}

impl std::fmt::Debug for Npz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Npz")
            .field("path", &self.path)
            .field("keys", &self.keys)
            .finish()
    }
}

impl Npz {
    /// Opens the archive and reads its directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = open_regular(path)?;
        let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| {
            DataError::malformed(
                path,
                "zip directory",
                format!("not a readable zip/npz archive: {e}"),
            )
        })?;
        let keys = archive
            .file_names()
            .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
            .collect();
        Ok(Npz {
            path: path.to_path_buf(),
            archive,
            keys,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Array names, in archive order, without the `.npy` suffix.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    fn member_bytes(&mut self, key: &str) -> Result<Vec<u8>> {
        if !self.contains(key) {
            return Err(DataError::missing(
                &self.path,
                format!("array {key:?} (keys present: {})", self.keys.join(", ")),
            ));
        }
        let name = if self.archive.index_for_name(&format!("{key}.npy")).is_some() {
            format!("{key}.npy")
        } else {
            key.to_string()
        };
        let path = &self.path;
        let mut member = self.archive.by_name(&name).map_err(|e| {
            DataError::malformed(
                path,
                format!("member {name}"),
                format!("cannot open member: {e}"),
            )
        })?;
        // The declared size is untrusted: it bounds the first allocation and, with an absolute
        // cap, how much is read, so a small archive cannot expand to gigabytes.
        let declared = member.size();
        if declared > MAX_MEMBER_BYTES {
            return Err(DataError::malformed(
                path,
                format!("member {name}"),
                format!(
                    "declares {declared} uncompressed bytes, more than the {MAX_MEMBER_BYTES} \
                     a member may hold"
                ),
            ));
        }
        let cap = usize::try_from(declared).unwrap_or(0).min(1 << 28);
        let mut bytes = Vec::with_capacity(cap);
        (&mut member)
            .take(declared.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| {
                DataError::malformed(
                    path,
                    format!("member {name}"),
                    format!("cannot decompress member: {e}"),
                )
            })?;
        if bytes.len() as u64 > declared {
            return Err(DataError::malformed(
                path,
                format!("member {name}"),
                format!("expands beyond the {declared} bytes its zip header declares"),
            ));
        }
        Ok(bytes)
    }

    /// Reads the numeric array `key`. A missing key is [`DataError::Missing`] naming the key,
    /// the file and the keys that are there.
    pub fn get(&mut self, key: &str) -> Result<NpyArray> {
        let bytes = self.member_bytes(key)?;
        parse_npy(bytes, &self.path, Some(key))
    }

    /// Reads the Unicode (`<U<n>`) array `key`.
    pub fn get_strings(&mut self, key: &str) -> Result<Vec<String>> {
        let bytes = self.member_bytes(key)?;
        parse_npy_strings(&bytes, &self.path, Some(key))
    }
}

/// An `.npz` of ready-made `.npy` members (see [`crate::npy::npy_bytes`]), in memory: callers
/// that must not leave half a file write it with an atomic writer.
pub fn npz_bytes(members: &[(&str, Vec<u8>)], deflate: bool) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        CompressionMethod::Deflated
    } else {
        CompressionMethod::Stored
    };
    let opts = SimpleFileOptions::default().compression_method(method);
    for (key, bytes) in members {
        zw.start_file(format!("{key}.npy"), opts)
            .map_err(std::io::Error::other)?;
        zw.write_all(bytes)?;
    }
    Ok(zw.finish().map_err(std::io::Error::other)?.into_inner())
}

/// Writes an `.npz` of ready-made `.npy` members to `path`, whole or not at all (fetch's
/// conversions, the examples' exports, test fixtures).
#[doc(hidden)]
pub fn write_npz(path: &Path, members: &[(&str, Vec<u8>)], deflate: bool) -> Result<()> {
    let bytes = npz_bytes(members, deflate)
        .map_err(|e| DataError::malformed(path, "zip writer", e.to_string()))?;
    crate::io::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::{NpyData, npy_bytes};
    use crate::testutil::TempDir;

    fn members() -> Vec<(&'static str, Vec<u8>)> {
        let f: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let names: Vec<u8> = ["ab", "c"]
            .iter()
            .flat_map(|s| {
                let mut cps: Vec<u32> = s.chars().map(u32::from).collect();
                cps.resize(2, 0);
                cps.into_iter()
                    .flat_map(u32::to_le_bytes)
                    .collect::<Vec<_>>()
            })
            .collect();
        vec![
            ("vals", npy_bytes("<f4", &[3], false, &f)),
            ("img", npy_bytes("|u1", &[2, 2], false, &[1, 2, 3, 4])),
            ("names", npy_bytes("<U2", &[2], false, &names)),
        ]
    }

    /// Rewrites the uncompressed size of every member, in local headers and the central
    /// directory, to `size`: an archive that lies about how much it expands to.
    fn lie_about_sizes(bytes: &mut [u8], size: u32) {
        let mut i = 0;
        while i + 4 <= bytes.len() {
            match &bytes[i..i + 4] {
                b"PK\x03\x04" => bytes[i + 22..i + 26].copy_from_slice(&size.to_le_bytes()),
                b"PK\x01\x02" => bytes[i + 24..i + 28].copy_from_slice(&size.to_le_bytes()),
                _ => {}
            }
            i += 1;
        }
    }

    #[test]
    fn a_member_may_not_expand_beyond_its_declared_size() {
        let dir = TempDir::new("npz_bomb");
        let p = dir.path().join("bomb.npz");
        // 1 MB of zeros deflates to about 1 kB; the header then claims 200 bytes.
        let big = npy_bytes("|u1", &[1 << 20], false, &vec![0u8; 1 << 20]);
        write_npz(&p, &[("x", big)], true).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        assert!(bytes.len() < 20_000, "{}", bytes.len());
        lie_about_sizes(&mut bytes, 200);
        std::fs::write(&p, &bytes).unwrap();
        let e = Npz::open(&p)
            .and_then(|mut z| z.get("x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb.npz") && e.contains("member x.npy") && e.contains("200 bytes"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_device_is_not_read_as_data() {
        let e = Npz::open("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("regular file"), "{e}");
        let e = crate::npy::read_npy("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("regular file"), "{e}");
        let dir = TempDir::new("npz_fifo");
        let fifo = dir.path().join("f.npz");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
        // Opening a FIFO with no writer would block forever; it must be refused first.
        let e = Npz::open(&fifo).unwrap_err().to_string();
        assert!(e.contains("f.npz") && e.contains("FIFO"), "{e}");
        let e = crate::text::read_labeled_sentences(&fifo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("regular file"), "{e}");
        let e = crate::prices::load_price_csv_gz(&fifo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("regular file"), "{e}");
        let e = crate::text::read_labeled_sentences(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a folder"), "{e}");
    }

    #[test]
    fn reads_stored_and_deflated_archives() {
        let dir = TempDir::new("npz_rw");
        for deflate in [false, true] {
            let p = dir.path().join(format!("a{deflate}.npz"));
            write_npz(&p, &members(), deflate).unwrap();
            let mut z = Npz::open(&p).unwrap();
            assert_eq!(z.keys(), ["vals", "img", "names"]);
            assert_eq!(
                z.get("vals").unwrap().data,
                NpyData::F32(vec![1.0, 2.0, 3.0])
            );
            let img = z.get("img").unwrap();
            assert_eq!(
                (img.shape.clone(), img.data),
                (vec![2, 2], NpyData::U8(vec![1, 2, 3, 4]))
            );
            assert_eq!(z.get_strings("names").unwrap(), ["ab", "c"]);
        }
    }

    #[test]
    fn errors_name_file_and_member() {
        let dir = TempDir::new("npz_err");
        let p = dir.path().join("g.npz");
        let mut m = members();
        let cut = m[0].1.len() - 2;
        m[0].1.truncate(cut);
        write_npz(&p, &m, true).unwrap();
        let mut z = Npz::open(&p).unwrap();
        let e = z.get("vals").unwrap_err().to_string();
        assert!(
            e.contains("g.npz") && e.contains("member vals.npy") && e.contains("truncated"),
            "{e}"
        );
        let e = z.get("labels").unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }));
        let e = e.to_string();
        assert!(
            e.contains("g.npz") && e.contains("\"labels\"") && e.contains("vals, img, names"),
            "{e}"
        );
        assert!(
            z.get_strings("vals")
                .unwrap_err()
                .to_string()
                .contains("<U")
        );

        // A zip cut short loses its central directory.
        let bytes = std::fs::read(&p).unwrap();
        let cut = dir.path().join("cut.npz");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = Npz::open(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.npz") && e.contains("zip directory"), "{e}");

        // Corrupt deflated bytes inside a member: the CRC or the inflater catches it.
        let mut bad = bytes.clone();
        let at = bytes.windows(8).position(|w| w == b"vals.npy").unwrap() + 12;
        for b in &mut bad[at..at + 20] {
            *b ^= 0x5a;
        }
        let badp = dir.path().join("bad.npz");
        std::fs::write(&badp, &bad).unwrap();
        let e = Npz::open(&badp)
            .and_then(|mut z| z.get("vals"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.npz"), "{e}");

        let e = Npz::open(dir.path().join("absent.npz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.npz"), "{e}");
    }
}
