//! `ferrolab data fetch` end to end against a loopback HTTP server: downloads, checksums,
//! conversions, atomic installs, offline behaviour. The tests marked `#[ignore]` serve the
//! original files of `../shared/data-raw` and compare with `../shared/data`; they fail, not
//! skip, when those folders are absent (`cargo test --release -p ferrolab-data -- --include-ignored`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolab_data::fetch::{self, FetchOptions};
use ferrolab_data::{DataError, Npz};

/// What the server answers for one path.
#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    /// Claims `claimed` bytes, sends `body`, closes.
    Cut {
        body: Vec<u8>,
        claimed: usize,
    },
}

struct Server {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    /// Serves `routes` first, then files below `root`.
    fn start(routes: HashMap<String, Reply>, root: Option<PathBuf>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (routes, root, h) = (routes.clone(), root.clone(), h.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    loop {
                        let mut hdr = String::new();
                        if r.read_line(&mut hdr).unwrap_or(0) == 0 || hdr == "\r\n" {
                            break;
                        }
                    }
                    let path = line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_string();
                    *h.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                    let reply = routes.get(&path).cloned().or_else(|| {
                        root.as_ref()
                            .and_then(|d| std::fs::read(d.join(&path)).ok())
                            .map(Reply::Body)
                    });
                    let (head, body) = match reply {
                        Some(Reply::Body(b)) => {
                            (format!("200 OK\r\nContent-Length: {}", b.len()), b)
                        }
                        Some(Reply::Cut { body, claimed }) => {
                            (format!("200 OK\r\nContent-Length: {claimed}"), body)
                        }
                        None => ("404 Not Found\r\nContent-Length: 0".to_string(), Vec::new()),
                    };
                    let _ = write!(s, "HTTP/1.1 {head}\r\nConnection: close\r\n\r\n");
                    let _ = s.write_all(&body);
                    let _ = s.flush();
                });
            }
        });
        Server { base, hits }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn opts(base: &str) -> FetchOptions {
    FetchOptions {
        base_url: Some(base.to_string()),
        progress: false,
        retries: 1,
        backoff: Duration::from_millis(20),
        ..FetchOptions::default()
    }
}

fn shared(sub: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(sub);
    assert!(
        p.is_dir(),
        "{} is missing (this test needs ../shared)",
        p.display()
    );
    p
}

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "ferrolab-fetch-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_below(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn assert_same_npz(ours: &Path, theirs: &Path) {
    let (mut a, mut b) = (Npz::open(ours).unwrap(), Npz::open(theirs).unwrap());
    let mut ka = a.keys().to_vec();
    let mut kb = b.keys().to_vec();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb, "{}", ours.display());
    for k in &ka {
        let (x, y) = (a.get(k).unwrap(), b.get(k).unwrap());
        assert_eq!(x.data.dtype(), y.data.dtype(), "{k}");
        assert!(x == y, "{}: member {k} differs", ours.display());
    }
}

#[test]
#[ignore = "needs ../shared/data-raw and ../shared/data"]
fn planetoid_cora_from_raw_pickles_equals_shared_npz() {
    let server = Server::start(HashMap::new(), Some(shared("data-raw")));
    let dir = Tmp::new("planetoid");
    let p = fetch::fetch("cora_planetoid", &dir.0, &opts(&server.base)).unwrap();
    assert_eq!(p, dir.0.join("graphs/cora_planetoid.npz"));
    assert_same_npz(&p, &shared("data").join("graphs/cora_planetoid.npz"));
    assert_eq!(server.hits("planetoid/ind.cora.graph"), 1);
    // Only the result is left, no working files.
    assert_eq!(files_below(&dir.0), vec![p]);
}

#[test]
#[ignore = "needs ../shared/data-raw and ../shared/data"]
fn acdc_hdf5_files_convert_to_the_shared_npz() {
    let server = Server::start(HashMap::new(), Some(shared("data-raw")));
    let dir = Tmp::new("acdc");
    let want = [
        "acdc/ACDC_training_slices/patient021_frame01_slice_0.h5",
        "acdc/ACDC_training_slices/patient021_frame01_slice_1.h5",
        "acdc/ACDC_training_volumes/patient011_frame01.h5",
    ];
    let mut plan = fetch::plan("acdc").unwrap();
    assert_eq!(plan.remotes().len(), 1532);
    plan.retain_acdc(|r| want.contains(&r.mirror_path.as_str()));
    assert_eq!(plan.remotes().len(), 3);
    let root = fetch::run_plan(&plan, &dir.0, &opts(&server.base)).unwrap();
    let data = shared("data");
    for rel in [
        "train/patient021_frame01_slice_0.npz",
        "train/patient021_frame01_slice_1.npz",
        "val/patient011_frame01.npz",
    ] {
        assert_same_npz(&root.join(rel), &data.join("acdc").join(rel));
    }
    let v = ferrolab_data::load_acdc_volume(root.join("val/patient011_frame01.npz")).unwrap();
    assert_eq!((v.d, v.h, v.w), (9, 256, 216));
    assert_eq!(files_below(&dir.0).len(), 3);
}

#[test]
fn wrong_checksum_is_rejected_and_leaves_nothing() {
    let mut routes = HashMap::new();
    routes.insert(
        "gnn-benchmark/cora.npz".to_string(),
        Reply::Body(b"not cora".to_vec()),
    );
    let server = Server::start(routes, None);
    let dir = Tmp::new("checksum");
    let e = fetch::fetch("cora", &dir.0, &opts(&server.base)).unwrap_err();
    match &e {
        DataError::Checksum {
            name,
            url,
            expected,
            actual,
            bytes,
        } => {
            assert_eq!(name, "cora");
            assert!(url.ends_with("/gnn-benchmark/cora.npz"), "{url}");
            assert_eq!(
                expected,
                "068e22d90c3849b4057dfb05851741428992af058efcd4e7ebb4186f3d581de2"
            );
            assert_ne!(actual, expected);
            assert_eq!(*bytes, 8);
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("cora") && msg.contains("expected 068e22d9"),
        "{msg}"
    );
    // A checksum mismatch is not retried: the server would send the same bytes again.
    assert_eq!(server.hits("gnn-benchmark/cora.npz"), 1);
    assert!(files_below(&dir.0).is_empty(), "{:?}", files_below(&dir.0));
    assert!(!dir.0.join("graphs").exists());
}

#[test]
fn truncated_download_is_retried_then_rejected_and_leaves_nothing() {
    let mut routes = HashMap::new();
    routes.insert(
        "text/rt-polarity.all".to_string(),
        Reply::Cut {
            body: b"0 a truncated fi".to_vec(),
            claimed: 1000,
        },
    );
    // Consistent headers, short body: only the checksum can tell.
    routes.insert(
        "text/stsa.binary.dev".to_string(),
        Reply::Body(b"1 short\n".to_vec()),
    );
    let server = Server::start(routes, None);
    let dir = Tmp::new("truncated");
    let e = fetch::fetch("mr", &dir.0, &opts(&server.base)).unwrap_err();
    assert!(matches!(e, DataError::Download { .. }), "{e}");
    assert!(e.to_string().contains("rt-polarity.all"), "{e}");
    assert_eq!(server.hits("text/rt-polarity.all"), 2, "one retry");
    let e = fetch::fetch("sst2", &dir.0, &opts(&server.base)).unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e}");
    assert!(files_below(&dir.0).is_empty(), "{:?}", files_below(&dir.0));
}

#[test]
fn offline_fails_fast_without_retries() {
    // A port nobody listens on: connections are refused, as for an unreachable host.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = Tmp::new("offline");
    let o = FetchOptions {
        retries: 3,
        backoff: Duration::from_secs(2),
        ..opts(&base)
    };
    let t = Instant::now();
    let res = fetch::fetch_many(&["cora", "mr", "sst2", "cora-planetoid"], &dir.0, &o);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(res.len(), 4);
    for (name, r) in res {
        match r {
            Err(e @ DataError::Offline { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains(&format!("127.0.0.1:{port}")) && m.contains("offline?"),
                    "{m}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(files_below(&dir.0).is_empty());
}

/// An installed copy that does not parse is not "fetched": it is downloaded again (here the
/// server is unreachable, so the damaged file is reported, not passed as ok).
#[test]
fn a_damaged_installed_copy_is_fetched_again() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = Tmp::new("damaged");
    let npz = dir.0.join("graphs/cora_planetoid.npz");
    std::fs::create_dir_all(npz.parent().unwrap()).unwrap();
    std::fs::write(&npz, b"").unwrap();
    let res = fetch::fetch_many(
        &["cora-planetoid"],
        &dir.0,
        &opts(&format!("http://127.0.0.1:{port}")),
    );
    assert!(
        matches!(res[0].1, Err(DataError::Offline { .. })),
        "{:?}",
        res[0].1
    );
}

#[test]
fn unknown_names_are_rejected_and_old_spellings_accepted() {
    assert!(matches!(
        fetch::plan("nope"),
        Err(DataError::Invalid { .. })
    ));
    assert_eq!(fetch::plan("movielens").unwrap().dataset.name, "ml-100k");
    assert_eq!(
        fetch::plan("sp500_index").unwrap().dataset.name,
        "sp500-index"
    );
    for d in ferrolab_data::datasets() {
        let p = fetch::plan(d.name).unwrap();
        for r in p.remotes() {
            assert_eq!(r.sha256.len(), 64, "{}", r.url);
            assert!(r.url.starts_with("http"), "{}", r.url);
        }
    }
}

#[test]
fn planetoid_set_with_a_test_index_gap_gets_zero_rows() {
    let dir = Tmp::new("gap");
    for (name, bytes) in fetch::toy_planetoid_files("toy") {
        std::fs::write(dir.0.join(name), bytes).unwrap();
    }
    let out = dir.0.join("toy.npz");
    fetch::convert_planetoid(&dir.0, "toy", &out).unwrap();
    let g = ferrolab_data::load_npz_graph(&out).unwrap();
    assert_eq!(g.num_nodes, 6);
    assert_eq!(g.labels, vec![1, 0, 1, 1, 0, 1]);
    let dense = g.features.to_dense();
    let row = |i: usize| dense[i * 4..(i + 1) * 4].to_vec();
    assert_eq!(row(1), vec![2.0, 0.0, 0.0, 0.5], "columns sorted");
    assert_eq!(
        row(3),
        vec![0.0, 0.0, 0.0, 4.0],
        "test.index line 2 = tx row 1"
    );
    assert_eq!(row(4), vec![0.0; 4], "gap node is zero-filled");
    assert_eq!(
        row(5),
        vec![0.0, 3.0, 0.0, 0.0],
        "test.index line 1 = tx row 0"
    );
    assert_eq!(g.neighbors(1), &[0, 2]);
    assert_eq!(g.neighbors(3), &[5], "self loop dropped");
    assert_eq!(g.neighbors(5), &[3]);
    assert_eq!(g.num_edges(), 6);
    let s = g.split.as_ref().unwrap();
    assert_eq!((s.train.clone(), s.test.clone()), (vec![0], vec![3, 5]));
    // PyG's val (the nodes after the training rows) minus the test nodes: parts never overlap.
    assert_eq!(s.val, vec![1, 2, 4]);

    // A damaged test index (found by the `planetoid` fuzz target): a far node would size the
    // node tables by itself; it is refused, naming the line, and nothing is written.
    let bad_out = dir.0.join("bad.npz");
    for (index, line) in [
        ("5\n4294967295\n", "line 2"),
        ("18446744073709551615\n3\n", "line 1"),
        // Blank lines are skipped but counted: the line named is the file's.
        ("5\n\n\n4294967295\n", "line 4"),
    ] {
        std::fs::write(dir.0.join("ind.toy.test.index"), index).unwrap();
        let e = fetch::convert_planetoid(&dir.0, "toy", &bad_out).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(line) && text.contains("without a feature row"),
            "{text}"
        );
        assert!(!bad_out.exists());
    }
}

#[test]
fn movielens_grouplens_zip_is_read_as_iso_8859_1() {
    use zip::write::SimpleFileOptions;
    let dir = Tmp::new("ml");
    let zpath = dir.0.join("ml-100k.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zpath).unwrap());
    let genres: String = [
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
    ]
    .iter()
    .enumerate()
    .map(|(i, g)| format!("{g}|{i}\n"))
    .collect();
    let flags = |k: usize| {
        (0..19)
            .map(|j| if j == k { "1" } else { "0" })
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut item = format!("1|Caf\u{e9} (1995)|01-Jan-1995||http://x|{}\n", flags(5)).into_bytes();
    // Re-encode the UTF-8 é as the single ISO-8859-1 byte the GroupLens file has.
    item = String::from_utf8(item)
        .unwrap()
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    item.extend_from_slice(
        format!("2|Plain (1996)|01-Jan-1996||http://y|{}\n", flags(8)).as_bytes(),
    );
    for (name, bytes) in [
        (
            "u.data",
            b"1\t1\t5\t881250949\n2\t2\t3\t881250950\n".to_vec(),
        ),
        (
            "u.user",
            b"1|24|M|technician|85711\n2|53|F|other|94043\n".to_vec(),
        ),
        ("u.item", item),
        ("u.genre", genres.into_bytes()),
        ("u.occupation", b"other\ntechnician\n".to_vec()),
    ] {
        z.start_file(format!("ml-100k/{name}"), SimpleFileOptions::default())
            .unwrap();
        z.write_all(&bytes).unwrap();
    }
    z.finish().unwrap();
    let out = dir.0.join("ml-100k");
    fetch::grouplens_zip_to_ml100k(&zpath, &out).unwrap();
    let raw = std::fs::read_to_string(out.join("u.item")).unwrap();
    assert!(raw.starts_with("1|Caf\u{e9} (1995)|"), "{raw}");
    let m = ferrolab_data::load_movielens_100k(&out).unwrap();
    assert_eq!((m.ratings.len(), m.users.len(), m.items.len()), (2, 2, 2));
    assert!(
        m.items[0].title.starts_with("Caf\u{e9}"),
        "{}",
        m.items[0].title
    );
}

#[test]
fn recbole_atomic_files_become_the_grouplens_layout() {
    let dir = Tmp::new("recbole");
    let inter =
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t4\t881250949\n";
    let user = b"user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n";
    let item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n1\tToy Story\t1995\tAnimation Children's Comedy\n2\tunkonwn\tunkonwn\tunknown\n";
    let out = dir.0.join("ml-100k");
    fetch::recbole_to_ml100k(inter, user, item.as_bytes(), &out).unwrap();
    let item_txt = std::fs::read_to_string(out.join("u.item")).unwrap();
    assert_eq!(
        item_txt,
        "1|Toy Story|1995|||0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n2|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("u.data")).unwrap(),
        "1\t2\t4\t881250949\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("u.info")).unwrap(),
        "1 users\n2 items\n1 ratings\n"
    );
    let m = ferrolab_data::load_movielens_100k(&out).unwrap();
    assert_eq!(m.items.len(), 2);
}

#[test]
fn fetch_missing_skips_what_a_location_holds_and_downloads_nothing_offline() {
    let dir = Tmp::new("missing");
    std::fs::create_dir_all(dir.0.join("text")).unwrap();
    std::fs::write(dir.0.join("text/rt-polarity.all"), "0 a\n").unwrap();
    let t = Instant::now();
    let r = fetch::fetch_missing(&["mr", "nope", "cora"], Some(&dir.0), true);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(
        r[0].1.as_ref().unwrap(),
        &dir.0.join("text/rt-polarity.all")
    );
    assert!(matches!(r[1].1, Err(DataError::Invalid { .. })));
    // Offline: nothing is fetched; cora is reported missing unless some other place has it.
    match &r[2].1 {
        Ok(p) => assert!(!p.starts_with(&dir.0)),
        Err(e) => assert!(matches!(e, DataError::NotFound { .. }), "{e}"),
    }
    assert_eq!(files_below(&dir.0).len(), 1);
}
