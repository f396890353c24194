//! Converters from source formats that differ from ours: ACDC's HDF5 slices and volumes to npz,
//! MovieLens from RecBole's atomic files or the GroupLens zip to the `ml-100k` folder, and
//! files read out of a zip (a PyPI wheel).
//!
//! HDF5 is read by `hdf5-pure`, a pure-Rust reader (no libhdf5, no C toolchain), which reads
//! these files' layout: superblock v0, symbol-table groups, chunked datasets with the deflate
//! filter. Its build cost is one crate of ~45 s (release, one core) plus `byteorder`;
//! `flate2`, its only other dependency, is ours already.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::npy::npy_bytes;

/// The largest scribble value of the npz layout: 4 = not annotated.
const SCRIBBLE_MAX: u16 = 4;

/// Converts one WSL4MIS ACDC HDF5 file (`image` float32 in [0, 1], `label` uint8, `scribble`
/// uint16, all the same 2-D or 3-D shape) into an npz of three uint8 arrays, the image as
/// `round(255 x)`.
pub fn convert_acdc_h5(src: &Path, out: &Path) -> Result<()> {
    let bad = |at: &str, m: String| DataError::malformed(src, at, m);
    let bytes = std::fs::read(src).map_err(|e| DataError::io(src, e))?;
    let f = hdf5_pure::File::from_bytes(bytes).map_err(|e| bad("HDF5", e.to_string()))?;
    let shape_of = |name: &str| -> Result<(hdf5_pure::Dataset, Vec<usize>)> {
        let ds = f
            .dataset(name)
            .map_err(|e| bad(&format!("dataset {name}"), e.to_string()))?;
        let shape = ds
            .shape()
            .map_err(|e| bad(&format!("dataset {name}"), e.to_string()))?
            .into_iter()
            .map(|d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect::<Vec<_>>();
        Ok((ds, shape))
    };
    let (img_ds, shape) = shape_of("image")?;
    if !(2..=3).contains(&shape.len()) {
        return Err(bad(
            "dataset image",
            format!("shape {shape:?} is not 2-D or 3-D"),
        ));
    }
    let read_err = |name: &'static str| {
        move |e: hdf5_pure::Error| bad(&format!("dataset {name}"), e.to_string())
    };
    let image: Vec<f32> = img_ds.read::<f32>().map_err(read_err("image"))?;
    let (lab_ds, lab_shape) = shape_of("label")?;
    let (scr_ds, scr_shape) = shape_of("scribble")?;
    for (name, s) in [("label", &lab_shape), ("scribble", &scr_shape)] {
        if *s != shape {
            return Err(bad(
                &format!("dataset {name}"),
                format!("shape {s:?} differs from image {shape:?}"),
            ));
        }
    }
    let label: Vec<u8> = lab_ds.read::<u8>().map_err(read_err("label"))?;
    let scribble: Vec<u16> = scr_ds.read::<u16>().map_err(read_err("scribble"))?;
    let n: usize = shape.iter().product();
    if image.len() != n || label.len() != n || scribble.len() != n {
        return Err(bad(
            "datasets",
            format!("element counts differ from shape {shape:?}"),
        ));
    }
    if let Some(i) = image.iter().position(|x| !(0.0..=1.0).contains(x)) {
        return Err(bad(
            &format!("dataset image, element {i}"),
            format!("intensity {} is outside [0, 1]", image[i]),
        ));
    }
    if let Some(i) = scribble.iter().position(|&s| s > SCRIBBLE_MAX) {
        return Err(bad(
            &format!("dataset scribble, element {i}"),
            format!("value {} exceeds {SCRIBBLE_MAX}", scribble[i]),
        ));
    }
    // f32 arithmetic and ties to even: what NumPy's round(255 * x) does on a float32 array.
    let img8: Vec<u8> = image
        .iter()
        .map(|&x| (255.0f32 * x).round_ties_even() as u8)
        .collect();
    let scr8: Vec<u8> = scribble.iter().map(|&s| s as u8).collect();
    let members = vec![
        ("image", npy_bytes("|u1", &shape, false, &img8)),
        ("label", npy_bytes("|u1", &shape, false, &label)),
        ("scribble", npy_bytes("|u1", &shape, false, &scr8)),
    ];
    crate::npz::write_npz(out, &members, true)
}

/// Reads the member `name` of the zip archive at `zip_path` (a PyPI wheel, the GroupLens zip).
pub fn zip_member(zip_path: &Path, name: &str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(zip_path).map_err(|e| DataError::io(zip_path, e))?;
    let mut z = zip::ZipArchive::new(f)
        .map_err(|e| DataError::malformed(zip_path, "zip directory", e.to_string()))?;
    let mut m = z
        .by_name(name)
        .map_err(|_| DataError::missing(zip_path, format!("zip member {name}")))?;
    let mut out = Vec::new();
    m.read_to_end(&mut out)
        .map_err(|e| DataError::malformed(zip_path, format!("zip member {name}"), e.to_string()))?;
    Ok(out)
}

/// The 19 MovieLens genres, in the order of `u.genre` and of `u.item`'s flags.
const GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Writes the GroupLens `ml-100k` layout (UTF-8) into `out_dir` from RecBole 1.2.1's atomic
/// files `ml-100k.inter`, `.user`, `.item` (tab-separated, one header line). RecBole keeps the
/// title without its year, the release year, and the genres as space-separated names; it
/// writes `unkonwn` for movie 267's missing title and year. Reproduces `../shared/data/ctr/
/// ml-100k` byte for byte.
pub fn recbole_to_ml100k(inter: &[u8], user: &[u8], item: &[u8], out_dir: &Path) -> Result<()> {
    let rows = |bytes: &[u8], what: &str, fields: usize| -> Result<Vec<Vec<String>>> {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split('\n');
        lines.next(); // the header: `user_id:token\titem_id:token...`
        lines
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, l)| {
                let f: Vec<String> = l
                    .trim_end_matches('\r')
                    .split('\t')
                    .map(str::to_string)
                    .collect();
                if f.len() == fields {
                    Ok(f)
                } else {
                    Err(DataError::malformed(
                        Path::new(what),
                        format!("line {}", i + 2),
                        format!("{} fields, expected {fields}", f.len()),
                    ))
                }
            })
            .collect()
    };
    let inter = rows(inter, "ml-100k.inter", 4)?;
    let users = rows(user, "ml-100k.user", 5)?;
    let items = rows(item, "ml-100k.item", 4)?;
    let mut data = String::with_capacity(inter.len() * 24);
    for r in &inter {
        data.push_str(&r.join("\t"));
        data.push('\n');
    }
    let mut user_txt = String::new();
    for u in &users {
        user_txt.push_str(&u.join("|"));
        user_txt.push('\n');
    }
    let mut item_txt = String::new();
    for it in &items {
        let title = if it[1] == "unkonwn" {
            "unknown"
        } else {
            &it[1]
        };
        let year = &it[2];
        let year = if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) {
            year.as_str()
        } else {
            ""
        };
        let classes: Vec<&str> = it[3].split(' ').collect();
        let flags: Vec<&str> = GENRES
            .iter()
            .map(|g| if classes.contains(g) { "1" } else { "0" })
            .collect();
        item_txt.push_str(&format!("{}|{title}|{year}|||{}\n", it[0], flags.join("|")));
    }
    let genre_txt: String = GENRES
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{g}|{i}\n"))
        .collect();
    let mut occ: Vec<&str> = users.iter().map(|u| u[3].as_str()).collect();
    occ.sort_unstable();
    occ.dedup();
    let occ_txt: String = occ.iter().map(|o| format!("{o}\n")).collect();
    let info = format!(
        "{} users\n{} items\n{} ratings\n",
        users.len(),
        items.len(),
        inter.len()
    );
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    for (name, text) in [
        ("u.data", data),
        ("u.user", user_txt),
        ("u.item", item_txt),
        ("u.genre", genre_txt),
        ("u.occupation", occ_txt),
        ("u.info", info),
    ] {
        // Synced, so that the staged folder moved into place later holds complete files.
        crate::io::write_atomic(&out_dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// Writes the `ml-100k` layout into `out_dir` from GroupLens' `ml-100k.zip` (members
/// `ml-100k/u.*`, ISO-8859-1), re-encoded as UTF-8 so every copy of the dataset reads the same.
pub fn grouplens_zip_to_ml100k(zip_path: &Path, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    for name in [
        "u.data",
        "u.user",
        "u.item",
        "u.genre",
        "u.occupation",
        "u.info",
    ] {
        let member = format!("ml-100k/{name}");
        let bytes = match zip_member(zip_path, &member) {
            Ok(b) => b,
            // u.info is informative only; the reader does not need it.
            Err(DataError::Missing { .. }) if name == "u.info" => continue,
            Err(e) => return Err(e),
        };
        // ISO-8859-1 maps each byte to the code point of the same value.
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        // Synced, so that the staged folder moved into place later holds complete files.
        crate::io::write_atomic(&out_dir.join(name), text.as_bytes())?;
    }
    Ok(())
}
