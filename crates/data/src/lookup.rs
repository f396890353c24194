//! Where real data is found, and which data sets this crate knows.
//!
//! Each dataset is looked up on its own, in the first of these places that holds it:
//! `--data-dir`, `$FERROLAB_DATA`, the per-user data folder that `ferrolab data fetch` fills
//! ([`user_data_dir`]: `$XDG_DATA_HOME/ferrolab/data`, default `~/.local/share/ferrolab/data`),
//! `../shared/data` relative to the current folder, and the dataset's system location (Debian's
//! `/usr/share/datasets/fashion-mnist`). Nothing is looked up relative to where the binary was
//! built: a path compiled into the binary would find data on the build machine only.
//!
//! Names are kebab case (`cora-planetoid`, `sp500-index`); `_` spellings and a few older names
//! (`movielens`) are accepted as aliases.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Environment variable naming the data folder.
pub const DATA_ENV: &str = "FERROLAB_DATA";

/// How a data folder was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    CliFlag,
    Env,
    /// The per-user folder that `ferrolab data fetch` writes into.
    User,
    /// `../shared/data` relative to the current folder.
    Default,
    /// A dataset's fixed system location (a distribution package).
    System,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::CliFlag => "--data-dir",
            Source::Env => "$FERROLAB_DATA",
            Source::User => "per-user data folder",
            Source::Default => "default ../shared/data",
            Source::System => "system location",
        })
    }
}

/// The per-user data folder: `$XDG_DATA_HOME/ferrolab/data`, else
/// `$HOME/.local/share/ferrolab/data`. `None` when neither variable gives an absolute path
/// (the XDG spec says relative values are to be ignored).
pub fn user_data_dir() -> Option<PathBuf> {
    user_dir_with(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

fn user_dir_with(xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg)
        .or_else(|| absolute(home).map(|h| h.join(".local/share")))
        .map(|d| d.join("ferrolab/data"))
}

/// Every data folder a dataset is looked for in, in order (the dataset's system location comes
/// after these). Explicit choices are listed even when they do not exist, so a "not found"
/// error names them.
pub fn search_roots(cli: Option<&Path>) -> Vec<(PathBuf, Source)> {
    let cwd = std::env::current_dir().ok();
    roots_with(
        cli,
        std::env::var_os(DATA_ENV),
        user_data_dir(),
        cwd.as_deref(),
    )
}

fn roots_with(
    cli: Option<&Path>,
    env: Option<OsString>,
    user: Option<PathBuf>,
    cwd: Option<&Path>,
) -> Vec<(PathBuf, Source)> {
    let mut out = Vec::new();
    if let Some(p) = cli {
        out.push((p.to_path_buf(), Source::CliFlag));
    }
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        out.push((PathBuf::from(e), Source::Env));
    }
    if let Some(u) = user {
        out.push((u, Source::User));
    }
    if let Some(c) = cwd {
        out.push((c.join("../shared/data"), Source::Default));
    }
    out
}

/// The one data folder for callers that want a single root: `cli`, else `$FERROLAB_DATA`
/// (both returned even when missing, so the user gets an error naming them rather than a
/// silent fall-back), else the first of the per-user folder and `../shared/data` that exists.
/// Per-dataset lookup ([`find_dataset`]) is preferred: it also finds a dataset that only a
/// later folder holds.
pub fn resolve_data_root(cli: Option<&Path>) -> Option<(PathBuf, Source)> {
    let cwd = std::env::current_dir().ok();
    resolve_with(
        cli,
        std::env::var_os(DATA_ENV),
        user_data_dir(),
        cwd.as_deref(),
    )
}

fn resolve_with(
    cli: Option<&Path>,
    env: Option<OsString>,
    user: Option<PathBuf>,
    cwd: Option<&Path>,
) -> Option<(PathBuf, Source)> {
    roots_with(cli, env, user, cwd)
        .into_iter()
        .find(|(p, s)| matches!(s, Source::CliFlag | Source::Env) || p.is_dir())
}

/// The format of a registered data set, which decides how [`verify`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    NpzGraph,
    Sentences,
    /// SST-2: the train file plus its `.dev` and `.test` siblings.
    SentenceSplits,
    MovieLens,
    PriceCsv,
    Acdc,
    /// A folder of `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`.
    IdxImages,
}

/// A known data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetInfo {
    /// Kebab-case name, as `ferrolab data` lists it and `ferrolab data fetch` takes it.
    pub name: &'static str,
    /// Older spellings still accepted (besides `_` for `-`, which is always accepted).
    pub aliases: &'static [&'static str],
    /// Path below the data folder (a file or a folder).
    pub rel_path: &'static str,
    /// An absolute location tried when no data folder holds it (e.g. a Debian package).
    pub alt_path: Option<&'static str>,
    pub kind: DatasetKind,
    pub description: &'static str,
}

impl DatasetInfo {
    /// Whether `path` (this dataset's `rel_path` below some folder, or its `alt_path`) holds
    /// the whole dataset, not just its first file.
    pub fn is_complete_at(&self, path: &Path) -> bool {
        let all = |names: &[&str]| names.iter().all(|n| path.join(n).is_file());
        match self.kind {
            DatasetKind::NpzGraph | DatasetKind::Sentences | DatasetKind::PriceCsv => {
                path.is_file()
            }
            DatasetKind::SentenceSplits => ["train", "dev", "test"]
                .iter()
                .all(|e| path.with_extension(e).is_file()),
            DatasetKind::MovieLens => {
                all(&["u.data", "u.user", "u.item", "u.genre", "u.occupation"])
            }
            DatasetKind::Acdc => path.join("train").is_dir() && path.join("val").is_dir(),
            DatasetKind::IdxImages => all(&[
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ]),
        }
    }
}

/// Every data set this crate can read.
pub fn datasets() -> Vec<DatasetInfo> {
    use DatasetKind::*;
    let d = |name, aliases, rel_path, kind, description| DatasetInfo {
        name,
        aliases,
        rel_path,
        alt_path: None,
        kind,
        description,
    };
    vec![
        d(
            "cora",
            &[],
            "graphs/cora.npz",
            NpzGraph,
            "Cora citation graph, directed links, no split (gnn-benchmark)",
        ),
        d(
            "cora-planetoid",
            &["planetoid-cora"],
            "graphs/cora_planetoid.npz",
            NpzGraph,
            "Cora, Planetoid order and 140/500/1000 split",
        ),
        d(
            "mr",
            &["rt-polarity"],
            "text/rt-polarity.all",
            Sentences,
            "MR movie-review polarity sentences (Windows-1252 bytes)",
        ),
        d(
            "sst2",
            &["sst-2"],
            "text/stsa.binary.train",
            SentenceSplits,
            "SST-2 binary sentences, train/dev/test",
        ),
        d(
            "ml-100k",
            &["movielens", "movielens-100k", "ml100k"],
            "ctr/ml-100k",
            MovieLens,
            "MovieLens 100K ratings, users, items",
        ),
        d(
            "sp500",
            &[],
            "finance/sp500_dataset.csv.gz",
            PriceCsv,
            "daily prices of 20 S&P 500 stocks, 1990-2022",
        ),
        d(
            "sp500-index",
            &[],
            "finance/sp500_index.csv.gz",
            PriceCsv,
            "daily S&P 500 index, 1990-2022",
        ),
        d(
            "acdc",
            &[],
            "acdc",
            Acdc,
            "ACDC cardiac MRI with scribbles: train slices, val volumes",
        ),
        DatasetInfo {
            alt_path: Some("/usr/share/datasets/fashion-mnist"),
            ..d(
                "fashion-mnist",
                &["fashionmnist"],
                "fashion-mnist",
                IdxImages,
                "Fashion-MNIST 28x28 images (IDX, gzip)",
            )
        },
    ]
}

/// The registered data set called `name` (its kebab-case name, with `_` accepted for `-`, or
/// one of its aliases; case-insensitive).
pub fn dataset(name: &str) -> Option<DatasetInfo> {
    let key = name.trim().to_ascii_lowercase().replace('_', "-");
    datasets()
        .into_iter()
        .find(|d| d.name == key || d.aliases.contains(&key.as_str()))
}

/// [`dataset`], or an error listing the known names.
pub fn dataset_or_err(name: &str) -> Result<DatasetInfo> {
    dataset(name).ok_or_else(|| {
        let known: Vec<&str> = datasets().iter().map(|d| d.name).collect();
        DataError::invalid(
            "data set name",
            format!("{name:?} is not one of {}", known.join(", ")),
        )
    })
}

/// Where `info` is: below `root` if there, else at its absolute alternative; otherwise
/// [`DataError::NotFound`] listing the places tried.
pub fn locate(root: Option<&Path>, info: &DatasetInfo) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = root
        .map(|r| r.join(info.rel_path))
        .into_iter()
        .chain(info.alt_path.map(PathBuf::from))
        .collect();
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| DataError::NotFound {
            name: info.name.to_string(),
            searched: candidates,
        })
}

/// Where `info` is and which folder held it: the first of [`search_roots`] then its system
/// location that holds the whole dataset.
pub fn locate_in_chain(cli: Option<&Path>, info: &DatasetInfo) -> Result<(PathBuf, Source)> {
    locate_in(&search_roots(cli), info)
}

fn locate_in(roots: &[(PathBuf, Source)], info: &DatasetInfo) -> Result<(PathBuf, Source)> {
    let candidates: Vec<(PathBuf, Source)> = roots
        .iter()
        .map(|(r, s)| (r.join(info.rel_path), *s))
        .chain(info.alt_path.map(|p| (PathBuf::from(p), Source::System)))
        .collect();
    candidates
        .iter()
        .find(|(p, _)| info.is_complete_at(p))
        .cloned()
        .ok_or_else(|| DataError::NotFound {
            name: info.name.to_string(),
            searched: candidates.into_iter().map(|(p, _)| p).collect(),
        })
}

/// Finds the data set `name` (see [`dataset`] for the spellings) in the first place of the
/// lookup chain that holds it.
pub fn find_dataset(cli: Option<&Path>, name: &str) -> Result<PathBuf> {
    let info = dataset_or_err(name)?;
    locate_in_chain(cli, &info).map(|(p, _)| p)
}

/// Whether some place in the lookup chain holds the data set `name` (false for unknown names).
pub fn is_available(cli: Option<&Path>, name: &str) -> bool {
    find_dataset(cli, name).is_ok()
}

/// Opens and fully parses the data set (for ACDC: counts the files and parses one of each
/// kind) and returns a one-line summary such as `2708 nodes, 10556 edges, ...`.
pub fn verify(root: &Path, info: &DatasetInfo) -> Result<String> {
    let path = locate(Some(root), info)?;
    Ok(match info.kind {
        DatasetKind::NpzGraph => {
            let g = crate::graph::load_npz_graph(&path)?;
            let split = g.split.as_ref().map_or("no split".to_string(), |s| {
                format!("split {}/{}/{}", s.train.len(), s.val.len(), s.test.len())
            });
            format!(
                "{} nodes, {} edges ({}), {} features, {} classes, {split}",
                g.num_nodes,
                g.num_edges(),
                if g.is_symmetric() {
                    "symmetric"
                } else {
                    "directed"
                },
                g.num_features(),
                g.num_classes
            )
        }
        DatasetKind::Sentences => {
            let s = crate::text::read_labeled_sentences(&path)?;
            // Labels may have gaps (they are names, not indices): print each with its count.
            let counts: Vec<String> = s
                .class_labels()
                .iter()
                .zip(s.label_counts())
                .map(|(l, n)| format!("{l}: {n}"))
                .collect();
            format!(
                "{} sentences, label counts {{{}}}",
                s.len(),
                counts.join(", ")
            )
        }
        DatasetKind::SentenceSplits => {
            let mut parts = Vec::new();
            for ext in ["train", "dev", "test"] {
                let p = path.with_extension(ext);
                let s = crate::text::read_labeled_sentences(&p)?;
                parts.push(format!("{ext} {}", s.len()));
            }
            format!("{} sentences", parts.join(", "))
        }
        DatasetKind::MovieLens => {
            let m = crate::movielens::load_movielens_100k(&path)?;
            format!(
                "{} ratings, {} users, {} items",
                m.ratings.len(),
                m.users.len(),
                m.items.len()
            )
        }
        DatasetKind::PriceCsv => {
            let t = crate::prices::load_price_csv_gz(&path)?;
            let first = t.dates.first().map_or("", String::as_str);
            let last = t.dates.last().map_or("", String::as_str);
            format!(
                "{} days x {} columns, {first} to {last}",
                t.num_rows(),
                t.columns.len()
            )
        }
        DatasetKind::Acdc => {
            let (train, val) = crate::acdc::list_acdc(&path)?;
            let s = crate::acdc::load_acdc_slice(&train[0])?;
            let v = crate::acdc::load_acdc_volume(&val[0])?;
            format!(
                "{} train slices, {} val volumes (first slice {}x{}, first volume {}x{}x{})",
                train.len(),
                val.len(),
                s.h,
                s.w,
                v.d,
                v.h,
                v.w
            )
        }
        DatasetKind::IdxImages => {
            let mut parts = Vec::new();
            for split in ["train", "t10k"] {
                let ip = path.join(format!("{split}-images-idx3-ubyte.gz"));
                let lp = path.join(format!("{split}-labels-idx1-ubyte.gz"));
                let images = crate::idx::read_idx(&ip)?;
                let labels = crate::idx::read_idx(&lp)?;
                if images.dims.len() != 3 || labels.dims.len() != 1 || images.len() != labels.len()
                {
                    return Err(DataError::malformed(
                        &lp,
                        "header",
                        format!(
                            "labels {:?} do not match images {:?}",
                            labels.dims, images.dims
                        ),
                    ));
                }
                if let Some(i) = labels.data.iter().position(|&l| l > 9) {
                    return Err(DataError::malformed(
                        &lp,
                        format!("label {i}"),
                        format!("class {} is not 0..=9", labels.data[i]),
                    ));
                }
                parts.push(format!(
                    "{split} {} images {}x{}",
                    images.len(),
                    images.dims[1],
                    images.dims[2]
                ));
            }
            parts.join(", ")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn resolution_order_is_flag_env_user_default() {
        let dir = TempDir::new("lookup");
        let flag = Path::new("/no/such/flag");
        let user = dir.path().join("user");
        assert_eq!(
            resolve_with(Some(flag), Some("/env".into()), Some(user.clone()), None),
            Some((flag.to_path_buf(), Source::CliFlag))
        );
        assert_eq!(
            resolve_with(None, Some("/env".into()), None, None),
            Some((PathBuf::from("/env"), Source::Env))
        );
        let work = dir.path().join("work");
        std::fs::create_dir_all(dir.path().join("shared/data")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        // The per-user folder does not exist yet, so ../shared/data is the root.
        let (p, s) = resolve_with(None, Some("".into()), Some(user.clone()), Some(&work)).unwrap();
        assert_eq!((p, s), (work.join("../shared/data"), Source::Default));
        std::fs::create_dir_all(&user).unwrap();
        let (p, s) = resolve_with(None, None, Some(user.clone()), Some(&work)).unwrap();
        assert_eq!((p, s), (user, Source::User));
        assert_eq!(Source::Env.to_string(), "$FERROLAB_DATA");
    }

    #[test]
    fn user_dir_follows_xdg_then_home() {
        assert_eq!(
            user_dir_with(Some("/x".into()), Some("/h".into())),
            Some(PathBuf::from("/x/ferrolab/data"))
        );
        assert_eq!(
            user_dir_with(Some("rel".into()), Some("/h".into())),
            Some(PathBuf::from("/h/.local/share/ferrolab/data"))
        );
        assert_eq!(user_dir_with(None, None), None);
    }

    #[test]
    fn each_dataset_comes_from_the_first_folder_that_holds_it() {
        let dir = TempDir::new("chain");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        dir.write("b/text/rt-polarity.all", b"0 x\n");
        dir.write("a/graphs/cora.npz", b"");
        dir.write("b/graphs/cora.npz", b"");
        // A partial SST-2 (train only) in the first folder does not hide a complete one.
        dir.write("a/text/stsa.binary.train", b"");
        for ext in ["train", "dev", "test"] {
            dir.write(&format!("b/text/stsa.binary.{ext}"), b"");
        }
        let roots = vec![(a.clone(), Source::CliFlag), (b.clone(), Source::User)];
        let at = |name: &str| locate_in(&roots, &dataset(name).unwrap());
        assert_eq!(
            at("cora").unwrap(),
            (a.join("graphs/cora.npz"), Source::CliFlag)
        );
        assert_eq!(
            at("mr").unwrap(),
            (b.join("text/rt-polarity.all"), Source::User)
        );
        assert_eq!(at("sst2").unwrap().1, Source::User);
        match at("cora_planetoid") {
            Err(DataError::NotFound { name, searched }) => {
                assert_eq!(name, "cora-planetoid");
                assert_eq!(searched[0], a.join("graphs/cora_planetoid.npz"));
                assert_eq!(searched.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_kebab_case_with_old_spellings_accepted() {
        let names: Vec<_> = datasets().iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "cora",
                "cora-planetoid",
                "mr",
                "sst2",
                "ml-100k",
                "sp500",
                "sp500-index",
                "acdc",
                "fashion-mnist"
            ]
        );
        for (alias, name) in [
            ("cora_planetoid", "cora-planetoid"),
            ("movielens", "ml-100k"),
            ("ml_100k", "ml-100k"),
            ("sp500_index", "sp500-index"),
            ("fashion_mnist", "fashion-mnist"),
            ("SST2", "sst2"),
        ] {
            assert_eq!(dataset(alias).map(|d| d.name), Some(name), "{alias}");
        }
        let e = find_dataset(None, "nope").unwrap_err().to_string();
        assert!(e.contains("cora-planetoid"), "{e}");
        assert!(!is_available(None, "nope"));
    }

    #[test]
    fn locate_reports_every_place_searched() {
        let dir = TempDir::new("locate");
        let info = dataset("fashion-mnist").unwrap();
        match locate(Some(dir.path()), &info) {
            Err(DataError::NotFound { name, searched }) => {
                assert_eq!(name, "fashion-mnist");
                assert_eq!(
                    searched,
                    vec![
                        dir.path().join("fashion-mnist"),
                        PathBuf::from("/usr/share/datasets/fashion-mnist")
                    ]
                );
            }
            // The Debian package may be installed on this machine.
            Ok(p) => assert_eq!(p, PathBuf::from("/usr/share/datasets/fashion-mnist")),
            Err(e) => panic!("{e}"),
        }
        let cora = dataset("cora").unwrap();
        let e = verify(dir.path(), &cora).unwrap_err().to_string();
        assert!(e.contains("cora") && e.contains("graphs/cora.npz"), "{e}");
    }

    #[test]
    fn verify_summarises_tiny_sentence_file() {
        let dir = TempDir::new("verify");
        dir.write("text/rt-polarity.all", b"0 a\n1 b\n1 c\n");
        let s = verify(dir.path(), &dataset("mr").unwrap()).unwrap();
        assert_eq!(s, "3 sentences, label counts {0: 1, 1: 2}");
    }
}
