//! Opening files that may be gzip-compressed.

use crate::error::{DataError, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// A buffered reader over `path`, transparently gunzipped when the file starts with the gzip
/// magic bytes, and whether it was compressed (for error messages about offsets).
pub(crate) fn open_maybe_gz(path: &Path) -> Result<(Box<dyn BufRead>, bool)> {
    let mut file = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
    let gz = file
        .fill_buf()
        .map_err(|e| DataError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        (Box::new(BufReader::new(MultiGzDecoder::new(file))), true)
    } else {
        (Box::new(file), false)
    })
}
