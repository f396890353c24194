//! Daily price tables: CSV with a `Date` column then one price column per asset, usually
//! gzip-compressed (skfolio's S&P 500 files).

use std::io::BufRead;
use std::path::Path;

use crate::error::{DataError, Result, quote};

/// Prices by date; every cell is a finite positive number.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriceTable {
    /// `YYYY-MM-DD`, strictly ascending.
    pub dates: Vec<String>,
    /// Asset names (the header without `Date`).
    pub columns: Vec<String>,
    /// One row per date, `columns.len()` values each.
    pub values: Vec<Vec<f64>>,
}

impl PriceTable {
    pub fn num_rows(&self) -> usize {
        self.dates.len()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// All prices of one asset, in date order.
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let c = self.column_index(name)?;
        Some(self.values.iter().map(|r| r[c]).collect())
    }

    /// Simple returns `p[t] / p[t-1] - 1`, one row fewer than the prices.
    pub fn returns(&self) -> Vec<Vec<f64>> {
        self.values
            .windows(2)
            .map(|w| w[1].iter().zip(&w[0]).map(|(b, a)| b / a - 1.0).collect())
            .collect()
    }
}

fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return false;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Reads a price CSV, gzip-compressed or plain (detected by the gzip magic bytes). Checks the
/// header, row widths, dates (format, strictly ascending) and that every price is a finite
/// positive number (returns divide by it); a path that is not a regular file is refused; errors name the file, line and column.
pub fn load_price_csv_gz(path: impl AsRef<Path>) -> Result<PriceTable> {
    let path = path.as_ref();
    crate::npz::ensure_regular(path)?;
    let (reader, _) = crate::io::open_maybe_gz(path)?;
    parse_price_csv(reader, path)
}

fn parse_price_csv(mut reader: impl BufRead, path: &Path) -> Result<PriceTable> {
    let read_err = |e: std::io::Error, line: usize| match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            DataError::malformed(
                path,
                format!("line {line}"),
                format!("corrupt or truncated compressed data: {e}"),
            )
        }
        _ => DataError::io(path, e),
    };
    let mut buf = Vec::with_capacity(256);
    let mut table = PriceTable::default();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| read_err(e, line_no + 1))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = std::str::from_utf8(&buf).map_err(|e| {
            DataError::malformed(
                path,
                format!("line {line_no}, byte {}", e.valid_up_to() + 1),
                "not text: price files are ASCII CSV",
            )
        })?;
        let text = text.trim_end_matches(['\n', '\r']);
        let at = |col: usize| format!("line {line_no}, column {col}");
        if line_no == 1 {
            let mut head = text.split(',');
            if head.next().map(str::trim) != Some("Date") {
                return Err(DataError::malformed(
                    path,
                    at(1),
                    format!("expected header starting with Date, found {}", quote(text)),
                ));
            }
            table.columns = head.map(|s| s.trim().to_string()).collect();
            if table.columns.is_empty() {
                return Err(DataError::malformed(
                    path,
                    at(2),
                    "header names no price column",
                ));
            }
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }
        let mut cells = text.split(',');
        let date = cells.next().unwrap_or("").trim();
        if !valid_date(date) {
            return Err(DataError::malformed(
                path,
                at(1),
                format!("expected a date YYYY-MM-DD, found {}", quote(date)),
            ));
        }
        if let Some(prev) = table.dates.last()
            && date <= prev.as_str()
        {
            return Err(DataError::malformed(
                path,
                at(1),
                format!("dates must be strictly ascending: {date} follows {prev}"),
            ));
        }
        let mut row = Vec::with_capacity(table.columns.len());
        for (k, cell) in cells.enumerate() {
            let name = table
                .columns
                .get(k)
                .map_or("a column beyond the header", String::as_str);
            let v: f64 = cell.trim().parse().map_err(|_| {
                let what = if cell.trim().is_empty() {
                    "an empty cell".to_string()
                } else {
                    quote(cell)
                };
                DataError::malformed(
                    path,
                    at(k + 2),
                    format!("expected a price for {name}, found {what}"),
                )
            })?;
            if !v.is_finite() || v <= 0.0 {
                return Err(DataError::malformed(
                    path,
                    at(k + 2),
                    format!("price for {name} is {v}, expected a finite positive number"),
                ));
            }
            row.push(v);
        }
        if row.len() != table.columns.len() {
            return Err(DataError::malformed(
                path,
                format!("line {line_no}"),
                format!(
                    "expected {} prices after the date, found {}",
                    table.columns.len(),
                    row.len()
                ),
            ));
        }
        table.dates.push(date.to_string());
        table.values.push(row);
    }
    if table.dates.is_empty() {
        return Err(DataError::malformed(
            path,
            format!("line {}", line_no + 1),
            "no data rows after the header",
        ));
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(text: impl AsRef<[u8]>) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(text.as_ref()).unwrap();
        e.finish().unwrap()
    }

    const OK: &str = "Date,AAA,BBB\n1990-01-02,1.0,4.125\n1990-01-03,1.5,4\n";

    #[test]
    fn reads_gzip_and_plain() {
        let dir = TempDir::new("px_ok");
        for (name, bytes) in [("p.csv.gz", gz(OK)), ("p.csv", OK.as_bytes().to_vec())] {
            let t = load_price_csv_gz(dir.write(name, &bytes)).unwrap();
            assert_eq!(t.dates, ["1990-01-02", "1990-01-03"]);
            assert_eq!(t.columns, ["AAA", "BBB"]);
            assert_eq!(t.values, vec![vec![1.0, 4.125], vec![1.5, 4.0]]);
            assert_eq!(t.column("AAA"), Some(vec![1.0, 1.5]));
            assert_eq!(t.returns(), vec![vec![0.5, 4.0 / 4.125 - 1.0]]);
        }
    }

    #[test]
    fn bad_tables_name_file_line_and_column() {
        let dir = TempDir::new("px_bad");
        let cases = [
            ("Date,A\n1990-01-02,1\n1990-01-02,2\n", "line 3, column 1"),
            ("Date,A\n1990-01-03,1\n1990-01-02,2\n", "strictly ascending"),
            ("Date,A,B\n1990-01-02,1,\n", "line 2, column 3"),
            ("Date,A,B\n1990-01-02,1,NaN\n", "finite"),
            ("Date,A,B\n1990-01-02,1,0\n", "line 2, column 3"),
            ("Date,A,B\n1990-01-02,-2.5,1\n", "positive"),
            ("Date,A,B\n1990-01-02,1\n", "expected 2 prices"),
            (
                "Date,A,B\n1990-01-02,1,2,3\n",
                "expected 2 prices after the date, found 3",
            ),
            ("Date,A\n1990-13-02,1\n", "YYYY-MM-DD"),
            ("Day,A\n", "line 1, column 1"),
            ("Date,A\n", "no data rows"),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = dir.write(&format!("b{i}.csv.gz"), &gz(text));
            let e = load_price_csv_gz(&p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("b{i}.csv.gz")) && e.contains(want),
                "{want}: {e}"
            );
        }
        let long: String = std::iter::once("Date,A\n".to_string())
            .chain((0..2000).map(|i| format!("{:04}-01-01,{i}.5\n", 1000 + i)))
            .collect();
        let p = dir.write("bin.csv.gz", &gz(b"Date,A\n1990-01-02,\xff\n"));
        let e = load_price_csv_gz(&p).unwrap_err().to_string();
        assert!(
            e.contains("line 2, byte 12") && e.contains("not text"),
            "{e}"
        );
        let mut cut = gz(&long);
        cut.truncate(cut.len() / 2);
        let e = load_price_csv_gz(dir.write("cut.csv.gz", &cut))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.csv.gz") && e.contains("truncated"), "{e}");
    }
}
