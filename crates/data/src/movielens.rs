//! MovieLens 100K in the GroupLens `ml-100k` layout: `u.data`, `u.user`, `u.item`, `u.genre`,
//! `u.occupation`. Text is UTF-8, with Latin-1/Windows-1252 bytes (the GroupLens original's
//! encoding) decoded rather than rejected.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{DataError, Result, quote};
use crate::text::decode_text;

/// One rating; ids are the file's 1-based ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating {
    pub user: u32,
    pub item: u32,
    /// 1 to 5 stars.
    pub rating: u8,
    /// Unix seconds.
    pub timestamp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    Female,
    Male,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u32,
    pub age: u8,
    pub gender: Gender,
    /// Index into [`MovieLens100k::occupations`].
    pub occupation: u16,
    /// A string: some are not numeric (`T8H1N`).
    pub zip: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: u32,
    pub title: String,
    /// From the release date (`1995` or `01-Jan-1995`); `None` where the date is empty.
    pub year: Option<u16>,
    /// Indices into [`MovieLens100k::genre_names`] of the genres flagged 1, ascending.
    pub genres: Vec<u8>,
}

/// The whole data set. Users and items are stored in id order with ids `1..=len` (checked),
/// so `users[id - 1]` is user `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct MovieLens100k {
    pub ratings: Vec<Rating>,
    pub users: Vec<User>,
    pub items: Vec<Item>,
    pub genre_names: Vec<String>,
    pub occupations: Vec<String>,
}

impl MovieLens100k {
    pub fn user(&self, id: u32) -> Option<&User> {
        self.users.get((id as usize).checked_sub(1)?)
    }

    pub fn item(&self, id: u32) -> Option<&Item> {
        self.items.get((id as usize).checked_sub(1)?)
    }
}

/// Calls `f(line_number, fields)` for every non-blank line of `path`, split on `sep`.
fn for_each_line(
    path: &Path,
    sep: char,
    mut f: impl FnMut(usize, &[&str]) -> Result<()>,
) -> Result<()> {
    let file = crate::npz::open_regular(path)?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::with_capacity(128);
    let mut line_no = 0;
    loop {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, e))?
            == 0
        {
            return Ok(());
        }
        line_no += 1;
        let text = decode_text(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(sep).collect();
        f(line_no, &fields)?;
    }
}

struct LineCtx<'a> {
    path: &'a Path,
    line: usize,
}

impl LineCtx<'_> {
    fn err(&self, field: usize, name: &str, msg: impl Into<String>) -> DataError {
        DataError::malformed(
            self.path,
            format!("line {}, field {} ({name})", self.line, field + 1),
            msg,
        )
    }

    fn count(&self, fields: &[&str], want: usize, layout: &str) -> Result<()> {
        if fields.len() == want {
            Ok(())
        } else {
            Err(DataError::malformed(
                self.path,
                format!("line {}", self.line),
                format!("expected {want} fields ({layout}), found {}", fields.len()),
            ))
        }
    }

    fn num<T: std::str::FromStr>(&self, fields: &[&str], i: usize, name: &str) -> Result<T> {
        fields[i].trim().parse().map_err(|_| {
            self.err(
                i,
                name,
                format!("expected a number, found {}", quote(fields[i])),
            )
        })
    }
}

fn read_names(path: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for_each_line(path, '\n', |_, f| {
        names.push(f[0].trim().to_string());
        Ok(())
    })?;
    if names.is_empty() {
        return Err(DataError::malformed(path, "line 1", "file lists no names"));
    }
    Ok(names)
}

fn read_genres(path: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for_each_line(path, '|', |line, f| {
        let c = LineCtx { path, line };
        c.count(f, 2, "genre|index")?;
        let idx: usize = c.num(f, 1, "index")?;
        if idx != names.len() {
            return Err(c.err(
                1,
                "index",
                format!("expected genre index {}, found {idx}", names.len()),
            ));
        }
        names.push(f[0].to_string());
        Ok(())
    })?;
    if names.is_empty() || names.len() > usize::from(u8::MAX) {
        return Err(DataError::malformed(
            path,
            "line 1",
            format!("expected 1 to 255 genres, found {}", names.len()),
        ));
    }
    Ok(names)
}

fn parse_year(c: &LineCtx<'_>, s: &str) -> Result<Option<u16>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    // Either a bare year or the GroupLens `dd-Mon-yyyy`; both end in the year.
    let tail = s.get(s.len().saturating_sub(4)..).unwrap_or("");
    let ok = tail.len() == 4
        && tail.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 4 || s.len() == 11);
    match tail.parse::<u16>() {
        Ok(y) if ok => Ok(Some(y)),
        _ => Err(c.err(
            2,
            "release date",
            format!("expected YYYY or dd-Mon-YYYY, found {}", quote(s)),
        )),
    }
}

/// Reads the data set from the folder holding `u.data`, `u.user`, `u.item`, `u.genre`,
/// `u.occupation`. Errors name the file, line and field.
pub fn load_movielens_100k(dir: impl AsRef<Path>) -> Result<MovieLens100k> {
    let dir = dir.as_ref();
    let file = |name: &str| -> Result<std::path::PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(DataError::missing(
                dir,
                format!("file {name} of the ml-100k layout"),
            ))
        }
    };
    let (data_p, user_p, item_p) = (file("u.data")?, file("u.user")?, file("u.item")?);
    let genre_names = read_genres(&file("u.genre")?)?;
    let occupations = read_names(&file("u.occupation")?)?;

    let mut users = Vec::new();
    for_each_line(&user_p, '|', |line, f| {
        let c = LineCtx {
            path: &user_p,
            line,
        };
        c.count(f, 5, "user id|age|gender|occupation|zip code")?;
        let id: u32 = c.num(f, 0, "user id")?;
        if id as usize != users.len() + 1 {
            return Err(c.err(
                0,
                "user id",
                format!(
                    "expected id {} (ids are 1-based, ascending, contiguous), found {id}",
                    users.len() + 1
                ),
            ));
        }
        let gender = match f[2].trim() {
            "M" => Gender::Male,
            "F" => Gender::Female,
            other => {
                return Err(c.err(
                    2,
                    "gender",
                    format!("expected M or F, found {}", quote(other)),
                ));
            }
        };
        let occ = f[3].trim();
        let occupation = occupations.iter().position(|o| o == occ).ok_or_else(|| {
            c.err(
                3,
                "occupation",
                format!("{} is not listed in u.occupation", quote(occ)),
            )
        })?;
        users.push(User {
            id,
            age: c.num(f, 1, "age")?,
            gender,
            occupation: occupation as u16,
            zip: f[4].trim().to_string(),
        });
        Ok(())
    })?;

    let mut items = Vec::new();
    let ng = genre_names.len();
    for_each_line(&item_p, '|', |line, f| {
        let c = LineCtx {
            path: &item_p,
            line,
        };
        c.count(
            f,
            5 + ng,
            &format!("id|title|release date|video release date|IMDb URL|{ng} genre flags"),
        )?;
        let id: u32 = c.num(f, 0, "movie id")?;
        if id as usize != items.len() + 1 {
            return Err(c.err(
                0,
                "movie id",
                format!(
                    "expected id {} (ids are 1-based, ascending, contiguous), found {id}",
                    items.len() + 1
                ),
            ));
        }
        let mut genres = Vec::new();
        for (g, flag) in f[5..].iter().enumerate() {
            match flag.trim() {
                "1" => genres.push(g as u8),
                "0" => {}
                other => {
                    return Err(c.err(
                        5 + g,
                        &genre_names[g],
                        format!("expected genre flag 0 or 1, found {}", quote(other)),
                    ));
                }
            }
        }
        items.push(Item {
            id,
            title: f[1].to_string(),
            year: parse_year(&c, f[2])?,
            genres,
        });
        Ok(())
    })?;

    let mut ratings = Vec::with_capacity(100_000);
    // (user, item) → line of its first rating: a pair rated twice would put the same example
    // in two splits or weigh it twice.
    let mut rated: std::collections::HashMap<(u32, u32), usize> =
        std::collections::HashMap::with_capacity(100_000);
    for_each_line(&data_p, '\t', |line, f| {
        let c = LineCtx {
            path: &data_p,
            line,
        };
        c.count(f, 4, "user id<TAB>item id<TAB>rating<TAB>timestamp")?;
        let user: u32 = c.num(f, 0, "user id")?;
        if user == 0 || user as usize > users.len() {
            return Err(c.err(
                0,
                "user id",
                format!("user {user} is not in u.user (1..={})", users.len()),
            ));
        }
        let item: u32 = c.num(f, 1, "item id")?;
        if item == 0 || item as usize > items.len() {
            return Err(c.err(
                1,
                "item id",
                format!("item {item} is not in u.item (1..={})", items.len()),
            ));
        }
        let rating: u8 = c.num(f, 2, "rating")?;
        if !(1..=5).contains(&rating) {
            return Err(c.err(
                2,
                "rating",
                format!("expected 1 to 5 stars, found {rating}"),
            ));
        }
        if let Some(first) = rated.insert((user, item), line) {
            return Err(c.err(
                1,
                "item id",
                format!("user {user} rates item {item} again (first on line {first})"),
            ));
        }
        ratings.push(Rating {
            user,
            item,
            rating,
            timestamp: c.num(f, 3, "timestamp")?,
        });
        Ok(())
    })?;
    if ratings.is_empty() {
        return Err(DataError::malformed(
            &data_p,
            "line 1",
            "no ratings in the file",
        ));
    }
    Ok(MovieLens100k {
        ratings,
        users,
        items,
        genre_names,
        occupations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn write_set(dir: &TempDir, item_extra: &str, data: &str) {
        dir.write("u.genre", b"unknown|0\nAction|1\nComedy|2\n\n");
        dir.write("u.occupation", b"artist\nother\n");
        dir.write("u.user", b"1|24|M|other|85711\n2|53|F|artist|T8H1N\n");
        let mut item = b"1|Toy Story|1995|||0|0|1\n2|Caf\xe9|01-Jan-1997|||0|1|1\n".to_vec();
        item.extend_from_slice(item_extra.as_bytes());
        dir.write("u.item", &item);
        dir.write("u.data", data.as_bytes());
    }

    #[test]
    fn reads_tiny_set() {
        let dir = TempDir::new("ml_ok");
        write_set(
            &dir,
            "3|unknown||||1|0|0\n",
            "1\t2\t5\t881250949\n2\t3\t1\t1\n",
        );
        let m = load_movielens_100k(dir.path()).unwrap();
        assert_eq!(m.genre_names, ["unknown", "Action", "Comedy"]);
        assert_eq!(
            m.ratings,
            vec![
                Rating {
                    user: 1,
                    item: 2,
                    rating: 5,
                    timestamp: 881250949
                },
                Rating {
                    user: 2,
                    item: 3,
                    rating: 1,
                    timestamp: 1
                },
            ]
        );
        let u = m.user(2).unwrap();
        assert_eq!(
            (
                u.age,
                u.gender,
                m.occupations[u.occupation as usize].as_str(),
                u.zip.as_str()
            ),
            (53, Gender::Female, "artist", "T8H1N")
        );
        let it = m.item(2).unwrap();
        assert_eq!(
            (it.title.as_str(), it.year, it.genres.clone()),
            ("Caf\u{e9}", Some(1997), vec![1, 2])
        );
        assert_eq!(
            (m.item(3).unwrap().year, m.item(1).unwrap().genres.clone()),
            (None, vec![2])
        );
        assert!(m.user(0).is_none() && m.item(4).is_none());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let dir = TempDir::new("ml_bad");
        let cases = [
            (
                "3|x|1995|||0|2|0\n",
                "1\t1\t1\t1\n",
                "u.item",
                "line 3, field 7 (Action)",
            ),
            (
                "3|x|199|||0|0|0\n",
                "1\t1\t1\t1\n",
                "u.item",
                "line 3, field 3 (release date)",
            ),
            (
                "3|x|1995|||0|0\n",
                "1\t1\t1\t1\n",
                "u.item",
                "expected 8 fields",
            ),
            (
                "",
                "1\t1\t1\t1\n2\t9\t1\t1\n",
                "u.data",
                "line 2, field 2 (item id)",
            ),
            ("", "1\t1\t6\t1\n", "u.data", "line 1, field 3 (rating)"),
            ("", "1\t1\tx\t1\n", "u.data", "\"x\""),
            ("", "1 1 1 1\n", "u.data", "expected 4 fields"),
            ("", "", "u.data", "no ratings"),
            (
                "",
                "1\t1\t1\t1\n1\t1\t4\t2\n",
                "u.data",
                "line 2, field 2 (item id): user 1 rates item 1 again (first on line 1)",
            ),
        ];
        for (item, data, file, want) in cases {
            write_set(&dir, item, data);
            let e = load_movielens_100k(dir.path()).unwrap_err().to_string();
            assert!(e.contains(file) && e.contains(want), "{want}: {e}");
        }
        write_set(&dir, "", "1\t1\t1\t1\n");
        dir.write("u.user", b"1|24|X|other|1\n");
        let e = load_movielens_100k(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("u.user") && e.contains("line 1, field 3 (gender)"),
            "{e}"
        );
        dir.write("u.user", b"1|24|M|pilot|1\n");
        assert!(
            load_movielens_100k(dir.path())
                .unwrap_err()
                .to_string()
                .contains("pilot")
        );
        std::fs::remove_file(dir.path().join("u.genre")).unwrap();
        let e = load_movielens_100k(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }) && e.to_string().contains("u.genre"));
    }
}
