//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), parsed here rather than through a
//! crate so that every failure can name the file, the npz member and the byte offset.
//!
//! Supported element types: `<f4 <f8 <i4 <i8 |i1 |u1 <u2` as [`NpyData`], and fixed-width
//! Unicode `<U<n>` (UTF-32LE) through the separate string readers. Arrays must be in C order;
//! `fortran_order: True` is accepted only where it cannot change the element order (0-D and
//! 1-D arrays).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The elements of an array, by NumPy dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    U16(Vec<u16>),
}

impl NpyData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::I8(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::U16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The NumPy `descr` this data is read from and would be written as.
    pub fn dtype(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::I32(_) => "<i4",
            NpyData::I64(_) => "<i8",
            NpyData::I8(_) => "|i1",
            NpyData::U8(_) => "|u1",
            NpyData::U16(_) => "<u2",
        }
    }
}

/// A C-order array read from a `.npy` file or an `.npz` member.
///
/// The array remembers where it came from, so the checked conversions below can report the
/// file, member and element of a bad value.
#[derive(Debug, Clone)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
    origin_path: PathBuf,
    origin_at: String,
}

impl PartialEq for NpyArray {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}

impl NpyArray {
    /// An in-memory array; `shape`'s product must equal `data.len()`.
    pub fn new(shape: Vec<usize>, data: NpyData) -> Result<Self> {
        let n = element_count(&shape);
        if n != Some(data.len()) {
            return Err(DataError::invalid(
                "array",
                format!("shape {shape:?} does not hold {} elements", data.len()),
            ));
        }
        Ok(NpyArray {
            shape,
            data,
            origin_path: PathBuf::from("<memory>"),
            origin_at: String::new(),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The file this array was read from.
    pub fn path(&self) -> &Path {
        &self.origin_path
    }

    /// An error about this array, placed at `detail` (e.g. `element 5`, `shape`).
    pub fn error(&self, detail: &str, msg: impl Into<String>) -> DataError {
        let at = match (self.origin_at.is_empty(), detail.is_empty()) {
            (true, true) => "data".to_string(),
            (true, false) => detail.to_string(),
            (false, true) => self.origin_at.clone(),
            (false, false) => format!("{}, {detail}", self.origin_at),
        };
        DataError::malformed(&self.origin_path, at, msg)
    }

    /// Fails unless the array has exactly `ndim` dimensions.
    pub fn expect_ndim(&self, ndim: usize) -> Result<()> {
        if self.shape.len() == ndim {
            Ok(())
        } else {
            Err(self.error(
                "shape",
                format!("expected {ndim}-D array, found shape {:?}", self.shape),
            ))
        }
    }

    /// Elements as `f32` (wider types are rounded, as NumPy's `astype` would).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            NpyData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            NpyData::U16(v) => v.iter().map(|&x| f32::from(x)).collect(),
        }
    }

    /// Elements as `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            NpyData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NpyData::F64(v) => v.clone(),
            NpyData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NpyData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NpyData::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }

    /// Elements as `i64`; float elements must be whole numbers (ids are sometimes stored as
    /// floats), anything else is an error naming the element.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        let floats = |v: &mut dyn Iterator<Item = f64>| -> Result<Vec<i64>> {
            v.enumerate()
                .map(|(i, x)| {
                    // 2^63 is exactly representable; anything at or beyond it overflows i64.
                    if x.fract() == 0.0 && x.abs() < 9.223_372_036_854_776e18 {
                        Ok(x as i64)
                    } else if x.fract() == 0.0 {
                        Err(self.error(
                            &format!("element {i}"),
                            format!("{} is outside the 64-bit integer range", short_float(x)),
                        ))
                    } else {
                        Err(self.error(
                            &format!("element {i}"),
                            format!("expected a whole number, found {}", short_float(x)),
                        ))
                    }
                })
                .collect()
        };
        Ok(match &self.data {
            NpyData::F32(v) => floats(&mut v.iter().map(|&x| f64::from(x)))?,
            NpyData::F64(v) => floats(&mut v.iter().copied())?,
            NpyData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            NpyData::I64(v) => v.clone(),
            NpyData::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            NpyData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            NpyData::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
        })
    }

    /// Elements as indices; a negative element is an error naming it.
    pub fn to_usize_vec(&self) -> Result<Vec<usize>> {
        self.to_i64_vec()?
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                usize::try_from(x).map_err(|_| {
                    self.error(
                        &format!("element {i}"),
                        format!("expected a non-negative index, found {x}"),
                    )
                })
            })
            .collect()
    }

    /// Elements as bytes: moved out when the dtype is `|u1`, otherwise converted with a range
    /// check.
    pub fn into_u8_vec(self) -> Result<Vec<u8>> {
        if let NpyData::U8(v) = self.data {
            return Ok(v);
        }
        self.to_i64_vec()?
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                u8::try_from(x).map_err(|_| {
                    self.error(
                        &format!("element {i}"),
                        format!("expected a value in 0..=255, found {x}"),
                    )
                })
            })
            .collect()
    }
}

/// A float for an error message: `1e308` rather than Rust's 309-digit `Display`.
fn short_float(x: f64) -> String {
    if x.is_finite() && x != 0.0 && !(1e-4..1e15).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Reads a numeric `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    crate::npz::ensure_regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy(bytes, path, None)
}

/// Reads a fixed-width Unicode (`<U<n>`) `.npy` file; trailing NULs of each element are dropped,
/// as NumPy does.
pub fn read_npy_strings(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    crate::npz::ensure_regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy_strings(&bytes, path, None)
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
    /// Offset of the first data byte.
    data_start: usize,
}

fn place(member: Option<&str>, detail: &str) -> String {
    match member {
        Some(m) => format!("member {m}.npy, {detail}"),
        None => detail.to_string(),
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn read_header(bytes: &[u8], path: &Path, member: Option<&str>) -> Result<Header> {
    let err = |byte: usize, msg: String| {
        DataError::malformed(path, place(member, &format!("byte {byte}")), msg)
    };
    if bytes.len() < 10 && bytes.starts_with(MAGIC) {
        return Err(err(
            bytes.len(),
            "file ends inside the .npy preamble".into(),
        ));
    }
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        let shown = &bytes[..bytes.len().min(6)];
        return Err(err(
            0,
            format!("not a .npy file: expected magic \\x93NUMPY, found {shown:?}"),
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err(8, "file ends inside the header length".into()));
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        _ => {
            return Err(err(
                6,
                format!("unsupported .npy format version {major}.{minor} (1.0, 2.0, 3.0 are read)"),
            ));
        }
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(err(
            header_start,
            format!(
                "truncated header: declares {header_len} bytes, file has {} after the length field",
                bytes.len() - header_start
            ),
        ));
    }
    let text = std::str::from_utf8(&bytes[header_start..data_start]).map_err(|e| {
        err(
            header_start + e.valid_up_to(),
            "header is not valid text".into(),
        )
    })?;
    let mut p = DictParser {
        s: text.as_bytes(),
        pos: 0,
    };
    let (descr, fortran_order, shape) = p.parse().map_err(|msg| {
        err(
            header_start + p.pos,
            format!("{msg} in header {}", crate::error::quote(text.trim_end())),
        )
    })?;
    Ok(Header {
        descr,
        fortran_order,
        shape,
        data_start,
    })
}

/// Just enough of a Python-literal parser for the three-key dict NumPy writes.
struct DictParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl DictParser<'_> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}'", c as char))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        self.ws();
        let q = match self.s.get(self.pos) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err("expected a quoted string".into()),
        };
        let start = self.pos + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or_else(|| "unterminated string".to_string())?;
        self.pos = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn ident(&mut self) -> &[u8] {
        self.ws();
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn parse(&mut self) -> std::result::Result<(String, bool, Vec<usize>), String> {
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        self.expect(b'{')?;
        loop {
            if self.eat(b'}') {
                break;
            }
            let key = self.string()?;
            self.expect(b':')?;
            match key.as_str() {
                "descr" => {
                    self.ws();
                    if self.s.get(self.pos) == Some(&b'[') {
                        return Err("structured dtypes are not supported".into());
                    }
                    descr = Some(self.string()?);
                }
                "fortran_order" => {
                    fortran = Some(match self.ident() {
                        b"True" => true,
                        b"False" => false,
                        _ => return Err("expected True or False for fortran_order".into()),
                    })
                }
                "shape" => {
                    self.expect(b'(')?;
                    let mut dims = Vec::new();
                    while !self.eat(b')') {
                        let tok = self.ident();
                        let d = std::str::from_utf8(tok)
                            .ok()
                            .and_then(|t| t.trim_end_matches('L').parse::<usize>().ok())
                            .ok_or_else(|| {
                                "expected a non-negative integer in shape".to_string()
                            })?;
                        dims.push(d);
                        if !self.eat(b',') {
                            self.expect(b')')?;
                            break;
                        }
                    }
                    shape = Some(dims);
                }
                other => return Err(format!("unexpected key {other:?}")),
            }
            if !self.eat(b',') {
                self.expect(b'}')?;
                break;
            }
        }
        match (descr, fortran, shape) {
            (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
            _ => Err("header lacks one of descr, fortran_order, shape".into()),
        }
    }
}

/// Checks order and size, returning the element count and the data bytes.
fn data_bytes<'a>(
    bytes: &'a [u8],
    h: &Header,
    itemsize: usize,
    path: &Path,
    member: Option<&str>,
) -> Result<(usize, &'a [u8])> {
    let err = |byte: usize, msg: String| {
        DataError::malformed(path, place(member, &format!("byte {byte}")), msg)
    };
    if h.fortran_order && h.shape.len() > 1 {
        return Err(err(
            h.data_start,
            format!(
                "fortran_order=True (column-major) arrays are not supported, shape {:?}; save with C order",
                h.shape
            ),
        ));
    }
    let expected = element_count(&h.shape)
        .and_then(|n| n.checked_mul(itemsize).map(|b| (n, b)))
        .ok_or_else(|| err(h.data_start, format!("shape {:?} is too large", h.shape)))?;
    let (n, need) = expected;
    let have = bytes.len() - h.data_start;
    if have != need {
        let what = if have < need {
            "truncated data"
        } else {
            "trailing bytes after data"
        };
        return Err(err(
            h.data_start + have.min(need),
            format!(
                "{what}: shape {:?} of {} needs {need} bytes, found {have}",
                h.shape, h.descr
            ),
        ));
    }
    Ok((n, &bytes[h.data_start..]))
}

fn le<const N: usize, T>(b: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Parses a numeric array from the whole content of a `.npy` file.
pub(crate) fn parse_npy(mut bytes: Vec<u8>, path: &Path, member: Option<&str>) -> Result<NpyArray> {
    let h = read_header(&bytes, path, member)?;
    let unsupported = || {
        let hint = if h.descr.contains('U') {
            " (a Unicode array: read it with the string readers)"
        } else if h.descr.starts_with('>') {
            " (big-endian: convert with astype('<...'))"
        } else {
            ""
        };
        DataError::malformed(
            path,
            place(member, "header"),
            format!(
                "unsupported dtype {:?}{hint}; supported: <f4 <f8 <i4 <i8 |i1 |u1 <u2",
                h.descr
            ),
        )
    };
    // Single-byte types have no byte order, so NumPy may write '|' or '<' or '='.
    let single = |t: &str| ["|", "<", "="].iter().any(|o| h.descr == format!("{o}{t}"));
    let data = if single("u1") {
        data_bytes(&bytes, &h, 1, path, member)?;
        bytes.drain(..h.data_start);
        NpyData::U8(bytes)
    } else if single("i1") {
        let (_, b) = data_bytes(&bytes, &h, 1, path, member)?;
        NpyData::I8(b.iter().map(|&x| x as i8).collect())
    } else {
        let (size, order) = (
            h.descr.get(2..).unwrap_or(""),
            h.descr.get(..2).unwrap_or(""),
        );
        if !matches!(order, "<f" | "<i" | "<u") {
            return Err(unsupported());
        }
        let itemsize: usize = size.parse().map_err(|_| unsupported())?;
        // Reject the type before the size, so a wrong dtype is not reported as a wrong length.
        if !matches!((order, itemsize), ("<f", 4 | 8) | ("<i", 4 | 8) | ("<u", 2)) {
            return Err(unsupported());
        }
        let (_, b) = data_bytes(&bytes, &h, itemsize, path, member)?;
        match (order, itemsize) {
            ("<f", 4) => NpyData::F32(le(b, f32::from_le_bytes)),
            ("<f", 8) => NpyData::F64(le(b, f64::from_le_bytes)),
            ("<i", 4) => NpyData::I32(le(b, i32::from_le_bytes)),
            ("<i", 8) => NpyData::I64(le(b, i64::from_le_bytes)),
            _ => NpyData::U16(le(b, u16::from_le_bytes)),
        }
    };
    Ok(NpyArray {
        shape: h.shape,
        data,
        origin_path: path.to_path_buf(),
        origin_at: member
            .map(|m| format!("member {m}.npy"))
            .unwrap_or_default(),
    })
}

/// Parses a `<U<n>` array (any shape, flattened in C order).
pub(crate) fn parse_npy_strings(
    bytes: &[u8],
    path: &Path,
    member: Option<&str>,
) -> Result<Vec<String>> {
    let h = read_header(bytes, path, member)?;
    let width: usize = h
        .descr
        .strip_prefix("<U")
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| {
            DataError::malformed(
                path,
                place(member, "header"),
                format!(
                    "expected a little-endian Unicode dtype <U<n>, found {:?}",
                    h.descr
                ),
            )
        })?;
    let (n, b) = data_bytes(bytes, &h, width * 4, path, member)?;
    let mut out = Vec::with_capacity(n);
    for (i, item) in b.chunks_exact((width * 4).max(1)).take(n).enumerate() {
        let mut s = String::with_capacity(width);
        for (k, c) in item.chunks_exact(4).enumerate() {
            let cp = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if cp == 0 {
                break;
            }
            let ch = char::from_u32(cp).ok_or_else(|| {
                DataError::malformed(
                    path,
                    place(
                        member,
                        &format!("byte {}", h.data_start + i * width * 4 + k * 4),
                    ),
                    format!("element {i}: 0x{cp:x} is not a Unicode code point"),
                )
            })?;
            s.push(ch);
        }
        out.push(s);
    }
    // Zero-width strings have no bytes to iterate over but still count as elements.
    out.resize(n, String::new());
    Ok(out)
}

/// A minimal `.npy` writer for tests of this crate and of crates that build fixtures.
#[doc(hidden)]
pub fn npy_bytes(descr: &str, shape: &[usize], fortran_order: bool, data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let fo = if fortran_order { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fo}, 'shape': {shape_txt}, }}");
    // NumPy pads so the data starts on a 64-byte boundary, ending the header with '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn parse(bytes: Vec<u8>) -> Result<NpyArray> {
        parse_npy(bytes, Path::new("t.npy"), None)
    }

    #[test]
    fn a_float_that_is_no_index_is_named_briefly() {
        let d: Vec<u8> = [1.0f64, 1e308, 0.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = parse(npy_bytes("<f8", &[3], false, &d)).unwrap();
        let e = a.to_i64_vec().unwrap_err().to_string();
        assert!(
            e.contains("element 1") && e.contains("1e308 is outside the 64-bit"),
            "{e}"
        );
        assert!(e.len() < 200, "{e}");
        let d: Vec<u8> = [0.5f64].iter().flat_map(|x| x.to_le_bytes()).collect();
        let e = parse(npy_bytes("<f8", &[1], false, &d))
            .unwrap()
            .into_u8_vec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("found 0.5"), "{e}");
    }

    #[test]
    fn reads_every_supported_dtype() {
        let f: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = parse(npy_bytes("<f4", &[2], false, &f)).unwrap();
        assert_eq!(a.data, NpyData::F32(vec![1.5, -2.0]));
        let d: Vec<u8> = [0.25f64].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            parse(npy_bytes("<f8", &[1], false, &d)).unwrap().data,
            NpyData::F64(vec![0.25])
        );
        let i: Vec<u8> = [7i32, -3, 0, 1, 2, 3]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = parse(npy_bytes("<i4", &[2, 3], false, &i)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, NpyData::I32(vec![7, -3, 0, 1, 2, 3]));
        let l: Vec<u8> = [i64::MAX, -1]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            parse(npy_bytes("<i8", &[2], false, &l)).unwrap().data,
            NpyData::I64(vec![i64::MAX, -1])
        );
        assert_eq!(
            parse(npy_bytes("|i1", &[2], false, &[0xff, 5]))
                .unwrap()
                .data,
            NpyData::I8(vec![-1, 5])
        );
        assert_eq!(
            parse(npy_bytes("|u1", &[2], false, &[0xff, 5]))
                .unwrap()
                .data,
            NpyData::U8(vec![255, 5])
        );
        let u: Vec<u8> = [65535u16, 4].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            parse(npy_bytes("<u2", &[2], false, &u)).unwrap().data,
            NpyData::U16(vec![65535, 4])
        );
        // A 0-D array holds one element; an empty dimension holds none.
        let a = parse(npy_bytes("|u1", &[], false, &[9])).unwrap();
        assert_eq!((a.shape.len(), a.len()), (0, 1));
        assert!(
            parse(npy_bytes("<f4", &[0, 3], false, &[]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn reads_version_2_header_and_file_from_disk() {
        let mut b = npy_bytes("|u1", &[3], false, &[1, 2, 3]);
        // Rewrite as version 2.0: a 4-byte header length.
        let hl = u16::from_le_bytes([b[8], b[9]]) as u32;
        b[6] = 2;
        b.splice(8..10, hl.to_le_bytes());
        let dir = TempDir::new("npy_v2");
        let p = dir.path().join("a.npy");
        std::fs::write(&p, &b).unwrap();
        assert_eq!(read_npy(&p).unwrap().data, NpyData::U8(vec![1, 2, 3]));
    }

    #[test]
    fn conversions_check_values() {
        let l: Vec<u8> = [3i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse_npy(
            npy_bytes("<i8", &[2], false, &l),
            Path::new("/x/g.npz"),
            Some("idx_train"),
        )
        .unwrap();
        assert_eq!(a.to_i64_vec().unwrap(), vec![3, -1]);
        assert_eq!(a.to_f32_vec(), vec![3.0, -1.0]);
        let e = a.to_usize_vec().unwrap_err().to_string();
        assert!(
            e.contains("/x/g.npz")
                && e.contains("member idx_train.npy")
                && e.contains("element 1")
                && e.contains("-1"),
            "{e}"
        );
        let f: Vec<u8> = [2.0f32, 2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse(npy_bytes("<f4", &[2], false, &f)).unwrap();
        assert!(
            a.to_i64_vec()
                .unwrap_err()
                .to_string()
                .contains("element 1")
        );
        let a = NpyArray::new(vec![2], NpyData::I32(vec![1, 300])).unwrap();
        assert!(a.into_u8_vec().unwrap_err().to_string().contains("300"));
        assert!(NpyArray::new(vec![3], NpyData::U8(vec![1])).is_err());
    }

    #[test]
    fn reads_unicode_strings() {
        let mut data = Vec::new();
        for s in ["ab", "\u{e9}t\u{e9}x"] {
            let mut cps: Vec<u32> = s.chars().map(u32::from).collect();
            cps.resize(4, 0);
            data.extend(cps.iter().flat_map(|c| c.to_le_bytes()));
        }
        let b = npy_bytes("<U4", &[2], false, &data);
        let s = parse_npy_strings(&b, Path::new("s.npy"), None).unwrap();
        assert_eq!(s, vec!["ab".to_string(), "\u{e9}t\u{e9}x".to_string()]);
        // The numeric reader refuses strings and says where to go instead.
        let e = parse(b).unwrap_err().to_string();
        assert!(e.contains("<U4") && e.contains("string readers"), "{e}");
    }

    #[test]
    fn malformed_files_name_file_and_byte() {
        let e = parse(b"PK\x03\x04notnumpy".to_vec())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.npy") && e.contains("byte 0") && e.contains("magic"),
            "{e}"
        );

        let mut b = npy_bytes("<i4", &[4], false, &[0; 16]);
        b.truncate(b.len() - 3);
        let at = format!("byte {}", b.len());
        let e = parse(b).unwrap_err().to_string();
        assert!(
            e.contains("truncated data")
                && e.contains("needs 16 bytes, found 13")
                && e.contains(&at),
            "{e}"
        );

        let mut b = npy_bytes("<i4", &[1], false, &[0; 4]);
        b.push(0);
        assert!(parse(b).unwrap_err().to_string().contains("trailing bytes"));

        let e = parse(npy_bytes("<f4", &[2, 2], true, &[0; 16]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fortran_order"), "{e}");
        // Column-major and row-major agree for one dimension, so that is accepted.
        assert!(parse(npy_bytes("<f4", &[2], true, &[0; 8])).is_ok());

        for bad in [">f4", "<c8", "<u4", "|b1", "<f2"] {
            let e = parse(npy_bytes(bad, &[1], false, &[0; 8]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("unsupported dtype"), "{bad}: {e}");
        }

        let mut b = npy_bytes("<f4", &[1], false, &[0; 4]);
        b.truncate(30);
        assert!(
            parse(b)
                .unwrap_err()
                .to_string()
                .contains("truncated header")
        );

        let mut b = npy_bytes("<f4", &[1], false, &[0; 4]);
        let at = b.windows(5).position(|w| w == b"shape").unwrap();
        b[at + 9] = b'x';
        let e = parse(b).unwrap_err().to_string();
        assert!(e.contains("shape") && e.contains("byte"), "{e}");

        let dir = TempDir::new("npy_missing");
        let e = read_npy(dir.path().join("none.npy")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("none.npy"));
    }
}
