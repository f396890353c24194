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

/// Longest run of calendar days allowed between consecutive rows. Market closures are
/// shorter (the September 2001 closure: 7 days; a long holiday week: 9–10); a longer jump is
/// rows missing from the file, and a return across it would silently span weeks.
pub const MAX_GAP_DAYS: i64 = 14;

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, or `None` when it is not one (a month
/// outside 1–12, a day the month does not have, 29 February outside leap years).
pub fn day_number(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&d) {
        return None;
    }
    // Count from 1 March so that the leap day ends a year: whole 400-year eras, then years,
    // then the month's offset by the 153-days-per-5-months rule.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
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

/// The number of asset columns a price CSV declares (its header's fields after `Date`), read
/// from the header alone: what a resource estimate needs before the whole table is parsed. A
/// header longer than 1 MiB or a file without one is an error naming the file.
pub fn count_assets(path: impl AsRef<Path>) -> Result<usize> {
    use std::io::Read;
    let path = path.as_ref();
    crate::npz::ensure_regular(path)?;
    let (reader, _) = crate::io::open_maybe_gz(path)?;
    let mut head = Vec::with_capacity(4096);
    reader
        .take(1 << 20)
        .read_until(b'\n', &mut head)
        .map_err(|e| {
            DataError::malformed(path, "line 1", format!("cannot read the header: {e}"))
        })?;
    if !head.ends_with(b"\n") {
        return Err(DataError::malformed(
            path,
            "line 1",
            "no complete header line in the first 1 MiB",
        ));
    }
    Ok(head.iter().filter(|b| **b == b',').count())
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
        let Some(day) = day_number(date) else {
            return Err(DataError::malformed(
                path,
                at(1),
                format!("expected a date YYYY-MM-DD, found {}", quote(date)),
            ));
        };
        if let Some(prev) = table.dates.last() {
            if date <= prev.as_str() {
                return Err(DataError::malformed(
                    path,
                    at(1),
                    format!("dates must be strictly ascending: {date} follows {prev}"),
                ));
            }
            let gap = day - day_number(prev).unwrap_or(day);
            if gap > MAX_GAP_DAYS {
                return Err(DataError::malformed(
                    path,
                    at(1),
                    format!(
                        "gap of {gap} days: {date} follows {prev} (rows missing? consecutive \
                         trading days are at most {MAX_GAP_DAYS} days apart)"
                    ),
                ));
            }
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

    /// The asset count comes from the header alone, gzip or plain; a file without a complete
    /// header line is refused by name.
    #[test]
    fn assets_are_counted_from_the_header() {
        let dir = TempDir::new("prices-count");
        let text = "Date,A,B,C\n2020-01-02,1,2,3\n";
        let plain = dir.path().join("p.csv");
        std::fs::write(&plain, text).unwrap();
        let zipped = dir.path().join("p.csv.gz");
        std::fs::write(&zipped, gz(text)).unwrap();
        assert_eq!(count_assets(&plain).unwrap(), 3);
        assert_eq!(count_assets(&zipped).unwrap(), 3);
        let cut = dir.path().join("cut.csv");
        std::fs::write(&cut, "Date,A,B").unwrap();
        let e = count_assets(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.csv") && e.contains("header"), "{e}");
    }

    #[test]
    fn day_numbers_count_from_the_epoch_and_refuse_impossible_dates() {
        assert_eq!(day_number("1970-01-01"), Some(0));
        assert_eq!(day_number("1969-12-31"), Some(-1));
        assert_eq!(day_number("2000-03-01"), Some(11_017));
        assert_eq!(
            day_number("1992-02-29")
                .zip(day_number("1992-03-01"))
                .map(|(a, b)| b - a),
            Some(1)
        );
        for bad in [
            "1991-02-29",
            "1900-02-29",
            "2005-13-45",
            "2005-04-31",
            "2005-00-10",
            "2005-1-1",
            "banana",
        ] {
            assert_eq!(day_number(bad), None, "{bad}");
        }
        assert!(day_number("2000-02-29").is_some());
        let ok = "Date,A\n1990-01-02,1\n1990-01-16,2\n";
        let dir = TempDir::new("px_gap");
        assert_eq!(
            load_price_csv_gz(dir.write("g.csv", ok.as_bytes()))
                .unwrap()
                .num_rows(),
            2
        );
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
            ("Date,A\n1990-02-30,1\n", "YYYY-MM-DD"),
            ("Date,A\n1991-02-29,1\n", "YYYY-MM-DD"),
            (
                "Date,A\n1990-01-02,1\n1990-01-17,2\n",
                "line 3, column 1: gap of 15 days",
            ),
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
        // 25 rows a month, 12 months a year: at most 7 days between rows.
        let long: String = std::iter::once("Date,A\n".to_string())
            .chain((0..2000).map(|i| {
                let (y, m, d) = (1000 + i / 300, (i / 25) % 12 + 1, i % 25 + 1);
                format!("{y:04}-{m:02}-{d:02},{i}.5\n")
            }))
            .collect();
        assert_eq!(
            load_price_csv_gz(dir.write("long.csv.gz", &gz(&long)))
                .unwrap()
                .num_rows(),
            2000
        );
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
