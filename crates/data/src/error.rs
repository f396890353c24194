//! The one error type of this crate.
//!
//! Every variant that comes from a file names the file and where in it the problem is, so a
//! user can open the file at that place: `line 12`, `line 3, field 2 (age)`, `byte 4096`,
//! `member adj_indices.npy`.

use std::path::{Path, PathBuf};

/// Errors from reading, checking or generating data.
#[derive(thiserror::Error, Debug)]
pub enum DataError {
    /// The file could not be opened or read.
    ///
    /// The I/O message is part of the display so that a plain `{}` is enough to act on; it is
    /// also exposed as `source()` for callers that walk error chains.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but its content is not what the format requires.
    #[error("malformed {} at {at}: {msg}", path.display())]
    Malformed {
        path: PathBuf,
        at: String,
        msg: String,
    },
    /// A required part (an npz key, a file of a dataset folder) is absent.
    #[error("{}: missing {what}", path.display())]
    Missing { path: PathBuf, what: String },
    /// A dataset was looked for in several places and found in none.
    #[error("dataset {name} not found; searched {}", list_paths(searched))]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    /// An argument or configuration value is out of range (found before any work starts).
    #[error("invalid {what}: {msg}")]
    Invalid { what: String, msg: String },
    /// A download host could not be connected to at all (no network, DNS failure, refused).
    #[error("dataset {name}: cannot reach {host} (offline?): {msg}")]
    Offline {
        name: String,
        host: String,
        msg: String,
    },
    /// A download started but failed (HTTP status, broken connection, retries exhausted).
    #[error("dataset {name}: download of {url} failed: {msg}")]
    Download {
        name: String,
        url: String,
        msg: String,
    },
    /// A download completed but is not the pinned file (damaged, truncated or changed upstream).
    #[error(
        "dataset {name}: {url} has SHA-256 {actual}, expected {expected} ({bytes} bytes received; nothing was kept)"
    )]
    Checksum {
        name: String,
        url: String,
        expected: String,
        actual: String,
        bytes: u64,
    },
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

fn list_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere (no data folder given or found)".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn malformed(path: &Path, at: impl Into<String>, msg: impl Into<String>) -> Self {
        DataError::Malformed {
            path: path.to_path_buf(),
            at: at.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn missing(path: &Path, what: impl Into<String>) -> Self {
        DataError::Missing {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        DataError::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// Shortens untrusted text quoted in an error message so one bad line cannot flood a terminal.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_and_names_file_and_place() {
        let e = DataError::malformed(Path::new("/d/x.npz"), "member a.npy", "bad magic");
        let s = e.to_string();
        assert_eq!(s, "malformed /d/x.npz at member a.npy: bad magic");
        let e = DataError::NotFound {
            name: "cora".into(),
            searched: vec!["/a".into(), "/b".into()],
        };
        assert_eq!(e.to_string(), "dataset cora not found; searched /a, /b");
        let e = DataError::io(
            Path::new("/nope"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert!(!e.to_string().contains('\n'));
        assert!(e.to_string().contains("/nope"));
    }

    #[test]
    fn quote_truncates_long_text() {
        let long = "x".repeat(100);
        let q = quote(&long);
        assert!(q.len() < 50, "{q}");
        assert!(q.ends_with("..."));
        assert_eq!(quote("ab"), "\"ab\"");
    }
}
