//! Checks against the real data sets in `../shared/data` (figures from its README). Ignored by
//! default; run with `--include-ignored`. Each test fails when the data is absent.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrolab_data::*;

/// `$FERROLAB_DATA` (what CI sets), else the `shared/data` beside this checkout: a test may
/// know where its tree is; the library no longer does.
fn root() -> (PathBuf, String) {
    if let Some(p) = std::env::var_os(DATA_ENV).filter(|p| !p.is_empty()) {
        return (PathBuf::from(p), DATA_ENV.to_string());
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        p.is_dir(),
        "no data folder: set {DATA_ENV} or provide {}",
        p.display()
    );
    (p, "the checkout's ../shared/data".to_string())
}

fn data(rel: &str) -> PathBuf {
    let (root, source) = root();
    let p = root.join(rel);
    assert!(
        p.exists(),
        "{} (data folder from {source}) is missing",
        p.display()
    );
    p
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn cora_planetoid_matches_readme() {
    let g = load_npz_graph(data("graphs/cora_planetoid.npz")).unwrap();
    assert_eq!(
        (g.num_nodes, g.num_edges(), g.num_features(), g.num_classes),
        (2708, 10556, 1433, 7)
    );
    assert!(g.is_symmetric());
    assert_eq!(g.class_counts(), vec![351, 217, 418, 818, 426, 298, 180]);
    let s = g.split.as_ref().unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (140, 500, 1000));
    assert_eq!(s.train, (0..140).collect::<Vec<_>>());
    assert_eq!(s.test, (1708..2708).collect::<Vec<_>>());
    let mut per_class = vec![0; 7];
    for &i in &s.train {
        per_class[g.labels[i] as usize] += 1;
    }
    assert_eq!(per_class, vec![20; 7]);
    let Features::Sparse(x) = &g.features else {
        panic!("cora features are sparse")
    };
    assert_eq!(x.nnz(), 49216);
    assert!(x.data.iter().all(|&v| v == 1.0));
    let degrees: Vec<usize> = (0..g.num_nodes).map(|i| g.degree(i)).collect();
    assert_eq!(
        (degrees.iter().min(), degrees.iter().max()),
        (Some(&1), Some(&168))
    );
    assert_eq!(
        g.symmetrize(),
        g,
        "already symmetric, sorted and without self loops"
    );
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn cora_symmetrizes_to_10556_entries() {
    let g = load_npz_graph(data("graphs/cora.npz")).unwrap();
    assert_eq!(
        (g.num_nodes, g.num_edges(), g.num_features(), g.num_classes),
        (2708, 5429, 1433, 7)
    );
    assert!(g.split.is_none());
    assert!(!g.is_symmetric());
    let names = g.class_names.clone().unwrap();
    let counts = g.class_counts();
    let by_name: Vec<(String, usize)> = names.into_iter().zip(counts).collect();
    for (name, n) in [
        ("Case_Based", 298),
        ("Genetic_Algorithms", 418),
        ("Neural_Networks", 818),
        ("Theory", 351),
    ] {
        assert!(
            by_name.contains(&(name.to_string(), n)),
            "{name}: {by_name:?}"
        );
    }
    let s = g.symmetrize();
    assert_eq!(s.num_edges(), 10556);
    assert!(s.is_symmetric());
    assert!((0..s.num_nodes).all(|i| s.degree(i) > 0 && !s.neighbors(i).contains(&(i as u32))));
    let split = s.seeded_per_class_split(20, 30, 1).unwrap();
    assert_eq!(
        (split.train.len(), split.val.len(), split.test.len()),
        (140, 210, 2708 - 350)
    );
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn sentence_files_match_readme() {
    let mr = read_labeled_sentences(data("text/rt-polarity.all")).unwrap();
    assert_eq!(
        (mr.len(), mr.label_counts(), mr.skipped_empty),
        (10662, vec![5331, 5331], 0)
    );
    assert!(
        mr.texts.iter().any(|t| t.contains('\u{2026}')),
        "0x85 decodes to an ellipsis"
    );
    assert_eq!(mr.texts.iter().filter(|t| t.starts_with(' ')).count(), 314);
    for (file, n, counts) in [
        ("text/stsa.binary.train", 6920, vec![3310, 3610]),
        ("text/stsa.binary.dev", 872, vec![428, 444]),
        ("text/stsa.binary.test", 1821, vec![912, 909]),
    ] {
        let s = read_labeled_sentences(data(file)).unwrap();
        assert_eq!((s.len(), s.label_counts()), (n, counts), "{file}");
    }
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn movielens_matches_readme() {
    let m = load_movielens_100k(data("ctr/ml-100k")).unwrap();
    assert_eq!(
        (m.ratings.len(), m.users.len(), m.items.len()),
        (100_000, 943, 1682)
    );
    assert_eq!(m.ratings.iter().filter(|r| r.rating >= 4).count(), 55_375);
    assert_eq!(
        m.ratings[0],
        Rating {
            user: 196,
            item: 242,
            rating: 3,
            timestamp: 881_250_949
        }
    );
    assert_eq!((m.genre_names.len(), m.occupations.len()), (19, 21));
    assert_eq!(
        m.users
            .iter()
            .filter(|u| u.gender == Gender::Female)
            .count(),
        273
    );
    let drama = m.genre_names.iter().position(|g| g == "Drama").unwrap() as u8;
    assert_eq!(
        m.items.iter().filter(|i| i.genres.contains(&drama)).count(),
        725
    );
    let (t1, t267) = (m.item(1).unwrap(), m.item(267).unwrap());
    assert_eq!((t1.title.as_str(), t1.year), ("Toy Story", Some(1995)));
    assert_eq!((t267.title.as_str(), t267.year), ("unknown", None));
    assert_eq!(m.items.iter().filter(|i| !i.title.is_ascii()).count(), 9);
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn prices_match_readme() {
    let t = load_price_csv_gz(data("finance/sp500_dataset.csv.gz")).unwrap();
    assert_eq!((t.num_rows(), t.columns.len()), (8313, 20));
    assert_eq!(
        (t.dates[0].as_str(), t.dates[8312].as_str()),
        ("1990-01-02", "2022-12-28")
    );
    assert_eq!((&t.columns[0][..], &t.columns[19][..]), ("AAPL", "XOM"));
    let all = t.values.iter().flatten();
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(
        (lo - 0.098).abs() < 1e-9 && (hi - 549.225).abs() < 1e-9,
        "{lo} {hi}"
    );
    let ix = load_price_csv_gz(data("finance/sp500_index.csv.gz")).unwrap();
    assert_eq!(
        (ix.num_rows(), ix.columns.clone()),
        (8313, vec!["SP500".to_string()])
    );
    assert_eq!(ix.dates, t.dates);
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn acdc_matches_readme() {
    let (train, val) = list_acdc(data("acdc")).unwrap();
    assert_eq!((train.len(), val.len()), (1512, 20));
    assert!(train[0].ends_with("patient021_frame01_slice_0.npz"));
    let mut labels = [0u64; 4];
    let mut scribbles = [0u64; 5];
    let (mut min_h, mut max_h) = (usize::MAX, 0);
    for p in &train {
        let s = load_acdc_slice(p).unwrap();
        (min_h, max_h) = (min_h.min(s.h), max_h.max(s.h));
        s.label.iter().for_each(|&v| labels[v as usize] += 1);
        s.scribble.iter().for_each(|&v| scribbles[v as usize] += 1);
    }
    assert_eq!((min_h, max_h), (154, 512));
    assert_eq!(labels, [77_787_580, 972_912, 1_025_432, 837_500]);
    assert_eq!(scribbles, [501_049, 98_158, 138_192, 88_441, 79_797_584]);
    let mut vlabels = [0u64; 4];
    for p in &val {
        let v = load_acdc_volume(p).unwrap();
        assert!((8..=11).contains(&v.d), "{}", p.display());
        v.label.iter().for_each(|&x| vlabels[x as usize] += 1);
    }
    assert_eq!(vlabels, [9_553_431, 145_968, 141_907, 234_854]);
}

#[test]
#[ignore = "needs real data in ../shared/data (run with --include-ignored)"]
fn every_shared_dataset_verifies() {
    let (root, _) = root();
    for info in datasets() {
        // Fashion-MNIST comes from a Debian package (or `data fetch`), not from
        // ../shared/data; .ci/run installs it, so a failed lookup here is a defect to see.
        if info.kind == DatasetKind::IdxImages
            && let Err(e) = locate(Some(&root), &info)
        {
            panic!(
                "{}: {e} (apt-get install dataset-fashion-mnist, or ferrolab data fetch fashion-mnist)",
                info.name
            );
        }
        let summary = verify(&root, &info).unwrap_or_else(|e| panic!("{}: {e}", info.name));
        println!("{}: {summary}", info.name);
        let want = match info.name {
            "cora" => "2708 nodes, 5429 edges (directed)",
            "cora-planetoid" => {
                "2708 nodes, 10556 edges (symmetric), 1433 features, 7 classes, split 140/500/1000"
            }
            "mr" => "10662 sentences",
            "sst2" => "train 6920, dev 872, test 1821",
            "ml-100k" => "100000 ratings, 943 users, 1682 items",
            "sp500" => "8313 days x 20 columns, 1990-01-02 to 2022-12-28",
            "sp500-index" => "8313 days x 1 columns",
            "acdc" => "1512 train slices, 20 val volumes",
            "fashion-mnist" => "train 60000 images 28x28, t10k 10000 images 28x28",
            other => panic!("no expectation for {other}"),
        };
        assert!(summary.contains(want), "{}: {summary}", info.name);
    }
}
