//! MovieLens-100k as CTR (needs `../shared/data`; run with `--include-ignored`; fails, not
//! skips, when the data is missing).

#![allow(clippy::unwrap_used)]

use ferrolab_ctr::schema::FieldKind;

#[test]
#[ignore = "needs the real data: FERROLAB_DATA=../shared/data cargo test --release -p ferrolab-ctr -- --include-ignored"]
fn movielens_ctr_split_and_fields() {
    let dir = ferrolab_data::lookup::find_dataset(None, "ml-100k")
        .expect("ml-100k not found: set FERROLAB_DATA or --data-dir");
    let d = ferrolab_ctr::data::load_movielens_ctr(&dir, 0).unwrap();
    assert_eq!(d.train.len(), 80_000);
    assert_eq!(d.valid.len(), 10_000);
    assert_eq!(d.test.len(), 10_000);
    let clicks: f32 = [&d.train, &d.valid, &d.test]
        .iter()
        .map(|e| e.labels.iter().sum::<f32>())
        .sum();
    assert_eq!(clicks as usize, 55_375); // ratings >= 4
    let s = d.layout.schema();
    let names: Vec<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "user",
            "item",
            "age",
            "gender",
            "occupation",
            "zip",
            "genres"
        ]
    );
    assert_eq!(s.fields[0].vocab.len(), 943);
    assert_eq!(s.fields[1].vocab.len(), 1682);
    assert_eq!(s.fields[6].kind, FieldKind::MultiHot);
    assert_eq!(s.fields[6].vocab.len(), 19);
    // Same seed, same split; another seed, another split.
    let again = ferrolab_ctr::data::load_movielens_ctr(&dir, 0).unwrap();
    assert_eq!(again.test, d.test);
    let other = ferrolab_ctr::data::load_movielens_ctr(&dir, 1).unwrap();
    assert_ne!(other.test, d.test);
}
