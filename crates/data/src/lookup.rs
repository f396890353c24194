//! Where real data is found, and which data sets this crate knows.
//!
//! The data folder is `--data-dir` if given, else `$FERROLAB_DATA` if set, else
//! `../shared/data` when it exists. An explicit choice is returned even when it does not exist,
//! so the user gets an error naming it rather than a silent fall-back to another folder.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Environment variable naming the data folder.
pub const DATA_ENV: &str = "FERROLAB_DATA";

/// How the data folder was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    CliFlag,
    Env,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::CliFlag => "--data-dir",
            Source::Env => "$FERROLAB_DATA",
            Source::Default => "default ../shared/data",
        })
    }
}

/// Resolves the data folder: `cli`, then `$FERROLAB_DATA`, then `../shared/data` relative to
/// the current folder, then the `shared/data` beside this source tree (so tests find it from
/// any crate folder). `None` when nothing was given and no default exists.
pub fn resolve_data_root(cli: Option<&Path>) -> Option<(PathBuf, Source)> {
    let cwd = std::env::current_dir().ok();
    resolve_with(cli, std::env::var_os(DATA_ENV), cwd.as_deref())
}

fn resolve_with(
    cli: Option<&Path>,
    env: Option<OsString>,
    cwd: Option<&Path>,
) -> Option<(PathBuf, Source)> {
    if let Some(p) = cli {
        return Some((p.to_path_buf(), Source::CliFlag));
    }
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return Some((PathBuf::from(e), Source::Env));
    }
    let beside_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    cwd.map(|c| c.join("../shared/data"))
        .into_iter()
        .chain(std::iter::once(beside_tree))
        .find(|p| p.is_dir())
        .map(|p| (p, Source::Default))
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
    pub name: &'static str,
    /// Path below the data folder (a file or a folder).
    pub rel_path: &'static str,
    /// An absolute location tried when the data folder lacks it (e.g. a Debian package).
    pub alt_path: Option<&'static str>,
    pub kind: DatasetKind,
    pub description: &'static str,
}

/// Every data set this crate can read.
pub fn datasets() -> Vec<DatasetInfo> {
    use DatasetKind::*;
    let d = |name, rel_path, kind, description| DatasetInfo {
        name,
        rel_path,
        alt_path: None,
        kind,
        description,
    };
    vec![
        d(
            "cora",
            "graphs/cora.npz",
            NpzGraph,
            "Cora citation graph, directed links, no split (gnn-benchmark)",
        ),
        d(
            "cora_planetoid",
            "graphs/cora_planetoid.npz",
            NpzGraph,
            "Cora, Planetoid order and 140/500/1000 split",
        ),
        d(
            "mr",
            "text/rt-polarity.all",
            Sentences,
            "MR movie-review polarity sentences (Windows-1252 bytes)",
        ),
        d(
            "sst2",
            "text/stsa.binary.train",
            SentenceSplits,
            "SST-2 binary sentences, train/dev/test",
        ),
        d(
            "ml-100k",
            "ctr/ml-100k",
            MovieLens,
            "MovieLens 100K ratings, users, items",
        ),
        d(
            "sp500",
            "finance/sp500_dataset.csv.gz",
            PriceCsv,
            "daily prices of 20 S&P 500 stocks, 1990-2022",
        ),
        d(
            "sp500-index",
            "finance/sp500_index.csv.gz",
            PriceCsv,
            "daily S&P 500 index, 1990-2022",
        ),
        d(
            "acdc",
            "acdc",
            Acdc,
            "ACDC cardiac MRI with scribbles: train slices, val volumes",
        ),
        DatasetInfo {
            alt_path: Some("/usr/share/datasets/fashion-mnist"),
            ..d(
                "fashion-mnist",
                "fashion-mnist",
                IdxImages,
                "Fashion-MNIST 28x28 images (IDX, gzip)",
            )
        },
    ]
}

/// The registered data set called `name`.
pub fn dataset(name: &str) -> Option<DatasetInfo> {
    datasets().into_iter().find(|d| d.name == name)
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

/// Resolves the data folder (as [`resolve_data_root`]) and locates the data set `name`.
pub fn find_dataset(cli: Option<&Path>, name: &str) -> Result<PathBuf> {
    let info = dataset(name).ok_or_else(|| {
        let known: Vec<&str> = datasets().iter().map(|d| d.name).collect();
        DataError::invalid(
            "data set name",
            format!("{name:?} is not one of {}", known.join(", ")),
        )
    })?;
    let root = resolve_data_root(cli).map(|(p, _)| p);
    locate(root.as_deref(), &info)
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
            format!("{} sentences, label counts {:?}", s.len(), s.label_counts())
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
    fn resolution_order_is_flag_env_default() {
        let dir = TempDir::new("lookup");
        let flag = Path::new("/no/such/flag");
        assert_eq!(
            resolve_with(Some(flag), Some("/env".into()), None),
            Some((flag.to_path_buf(), Source::CliFlag))
        );
        assert_eq!(
            resolve_with(None, Some("/env".into()), None),
            Some((PathBuf::from("/env"), Source::Env))
        );
        let work = dir.path().join("work");
        std::fs::create_dir_all(dir.path().join("shared/data")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let (p, s) = resolve_with(None, Some("".into()), Some(&work)).unwrap();
        assert_eq!((p, s), (work.join("../shared/data"), Source::Default));
        assert_eq!(Source::Env.to_string(), "$FERROLAB_DATA");
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
        assert!(
            find_dataset(None, "nope")
                .unwrap_err()
                .to_string()
                .contains("cora_planetoid")
        );
        let names: Vec<_> = datasets().iter().map(|d| d.name).collect();
        for n in [
            "cora",
            "cora_planetoid",
            "mr",
            "sst2",
            "ml-100k",
            "sp500",
            "acdc",
            "fashion-mnist",
        ] {
            assert!(names.contains(&n), "{n}");
        }
    }

    #[test]
    fn verify_summarises_tiny_sentence_file() {
        let dir = TempDir::new("verify");
        dir.write("text/rt-polarity.all", b"0 a\n1 b\n1 c\n");
        let s = verify(dir.path(), &dataset("mr").unwrap()).unwrap();
        assert_eq!(s, "3 sentences, label counts [1, 2]");
    }
}
