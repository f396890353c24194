//! The two data sets of the APG experiment.
//!
//! * MovieLens-100k as CTR: a rating ≥ 4 is a click; fields `user`, `item`, `age` (bucket),
//!   `gender`, `occupation`, `zip` (first two characters of the zip code) and the multi-hot
//!   `genres`. Split: a seeded random 80/10/10 split of the 100,000 ratings (train / valid /
//!   test), fixed by the master seed so every model and every training seed sees the same one.
//! * A Criteo-shaped synthetic generator (13 numeric fields `I1..I13`, 26 categorical fields
//!   `C1..C26`) whose true click function differs between instance groups (the value of `C1`):
//!   the situation APG's group-wise condition is designed for. Rows are generated in
//!   fixed-size chunks from counter-derived seeds, so any number of rows (10 M and more) can be
//!   streamed in constant memory and every chunk is reproducible on its own.

use crate::error::Result;
use crate::schema::{Encoded, Field, Layout, Schema};
use ferrolab_core::seed;
use ferrolab_data::movielens::MovieLens100k;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use std::path::Path;

/// Train / valid / test sets with their layout.
#[derive(Debug, Clone)]
pub struct CtrData {
    /// Dataset name for reports.
    pub name: String,
    /// Fields and table layout.
    pub layout: Layout,
    /// Training set.
    pub train: Encoded,
    /// Validation set (early stopping).
    pub valid: Encoded,
    /// Test set.
    pub test: Encoded,
    /// How the split was made.
    pub protocol: String,
}

impl CtrData {
    /// Refuses splits that cannot give a meaningful figure: an empty part, or a part whose
    /// rows are all clicks or all non-clicks (AUC is undefined there, and early stopping on
    /// `valid_auc` would read nothing).
    pub fn check(&self) -> Result<()> {
        for (part, e) in [
            ("train", &self.train),
            ("valid", &self.valid),
            ("test", &self.test),
        ] {
            let clicks = e.labels.iter().filter(|&&l| l > 0.5).count();
            if e.is_empty() || clicks == 0 || clicks == e.len() {
                return Err(crate::CtrError::Invalid(format!(
                    "{}: the {part} part has {} rows of which {clicks} are clicks; every part \
                     needs both clicks and non-clicks",
                    self.name,
                    e.len()
                )));
            }
        }
        Ok(())
    }
}

/// Age buckets of MovieLens-1M's user file, applied to ml-100k's raw ages.
pub fn age_bucket(age: u8) -> &'static str {
    match age {
        0..=17 => "<18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=49 => "45-49",
        50..=55 => "50-55",
        _ => "56+",
    }
}

const AGE_BUCKETS: [&str; 7] = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"];

/// The first two characters of a zip code, lower-cased (`T8H1N` → `t8`).
pub fn zip_prefix(zip: &str) -> String {
    zip.chars().take(2).collect::<String>().to_lowercase()
}

/// Converts MovieLens-100k (read by `ferrolab_data`) to CTR instances with a seeded random
/// 80/10/10 split.
pub fn movielens_ctr(ml: &MovieLens100k, split_seed: u64) -> Result<CtrData> {
    let users: Vec<String> = ml.users.iter().map(|u| u.id.to_string()).collect();
    let items: Vec<String> = ml.items.iter().map(|i| i.id.to_string()).collect();
    let mut zips: Vec<String> = ml.users.iter().map(|u| zip_prefix(&u.zip)).collect();
    zips.sort();
    zips.dedup();
    let max_genres = ml.items.iter().map(|i| i.genres.len()).max().unwrap_or(1);
    let schema = Schema {
        fields: vec![
            Field::categorical("user", users),
            Field::categorical("item", items),
            Field::categorical("age", AGE_BUCKETS.iter().map(|s| s.to_string()).collect()),
            Field::categorical("gender", vec!["M".into(), "F".into()]),
            Field::categorical("occupation", ml.occupations.clone()),
            Field::categorical("zip", zips),
            Field::multi_hot("genres", ml.genre_names.clone(), max_genres.max(1)),
        ],
    };
    let layout = Layout::new(schema)?;
    let mut all = Encoded::new(layout.slots());
    for r in &ml.ratings {
        let (Some(u), Some(it)) = (ml.user(r.user), ml.item(r.item)) else {
            return Err(crate::CtrError::Invalid(format!(
                "ml-100k: rating of user {} for item {} refers to a missing user or item",
                r.user, r.item
            )));
        };
        let mut inst = layout.instance();
        let cat = |name: &str, v: &str, inst: &mut crate::schema::Instance| {
            layout.set_category(inst, field_index(&layout, name), v);
        };
        cat("user", &u.id.to_string(), &mut inst);
        cat("item", &it.id.to_string(), &mut inst);
        cat("age", age_bucket(u.age), &mut inst);
        let g = match u.gender {
            ferrolab_data::movielens::Gender::Male => "M",
            ferrolab_data::movielens::Gender::Female => "F",
        };
        cat("gender", g, &mut inst);
        let occ = ml
            .occupations
            .get(u.occupation as usize)
            .cloned()
            .unwrap_or_default();
        cat("occupation", &occ, &mut inst);
        cat("zip", &zip_prefix(&u.zip), &mut inst);
        let genres: Vec<usize> = it.genres.iter().map(|&g| g as usize).collect();
        layout.set_multi(&mut inst, field_index(&layout, "genres"), &genres);
        all.push(&inst, if r.rating >= 4 { 1.0 } else { 0.0 });
    }
    let mut idx: Vec<usize> = (0..all.len()).collect();
    idx.shuffle(&mut seed::rng(split_seed, "ml-split"));
    let n = idx.len();
    let (n_train, n_valid) = (n * 8 / 10, n / 10);
    let mut tr = idx[..n_train].to_vec();
    let mut va = idx[n_train..n_train + n_valid].to_vec();
    let mut te = idx[n_train + n_valid..].to_vec();
    tr.sort_unstable();
    va.sort_unstable();
    te.sort_unstable();
    let data = CtrData {
        name: "movielens-100k".into(),
        train: all.subset(&tr),
        valid: all.subset(&va),
        test: all.subset(&te),
        layout,
        protocol:
            "seeded random 80/10/10 split of the ratings (train/valid/test); rating >= 4 = click"
                .into(),
    };
    data.check()?;
    Ok(data)
}

fn field_index(layout: &Layout, name: &str) -> usize {
    layout
        .schema()
        .fields
        .iter()
        .position(|f| f.name == name)
        .unwrap_or(0)
}

impl CtrData {
    /// Writes `train.tsv`, `valid.tsv` and `test.tsv` into `dir`: a header line, then
    /// `label<TAB>` and the fields in schema order (multi-hot values joined by `|`), so other
    /// tools (bench/apg_fuxictr.py) train on exactly this split.
    pub fn export(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| crate::CtrError::io(dir, e))?;
        let header = self
            .layout
            .schema()
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join("\t");
        for (name, set) in [
            ("train", &self.train),
            ("valid", &self.valid),
            ("test", &self.test),
        ] {
            let mut text = format!("label\t{header}\n");
            for i in 0..set.len() {
                text.push_str(if set.labels[i] > 0.5 { "1\t" } else { "0\t" });
                text.push_str(&self.layout.decode_row(set, i));
                text.push('\n');
            }
            ferrolab_core::run::write_atomic(&dir.join(format!("{name}.tsv")), text.as_bytes())?;
        }
        Ok(())
    }
}

/// Loads MovieLens-100k from its folder and converts it.
pub fn load_movielens_ctr(dir: &Path, split_seed: u64) -> Result<CtrData> {
    let ml = ferrolab_data::movielens::load_movielens_100k(dir)?;
    movielens_ctr(&ml, split_seed)
}

ferrolab_core::config_section! {
    /// Settings of the synthetic generator.
    pub struct SyntheticConfig {
        /// Number of instance groups (the categories of `C1`); each has its own click function.
        pub groups: usize = 8, "1..=1000" => |v| (1..=1000).contains(v);
        /// Largest vocabulary of a categorical field (vocabularies cycle up to this size).
        pub max_vocab: usize = 1000, "2..=1000000" => |v| (2..=1_000_000).contains(v);
        /// How strongly the click function depends on the group (0 = not at all).
        pub heterogeneity: f64 = 1.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
    }
}

/// Numeric and categorical fields of the Criteo layout.
pub const NUMERIC_FIELDS: usize = 13;
/// Categorical fields of the Criteo layout.
pub const CATEGORICAL_FIELDS: usize = 26;
/// Rows per generated chunk (each chunk has its own derived seed).
pub const CHUNK_ROWS: usize = 4096;
/// Hidden units of each group's click function.
const UNITS: usize = 4;
/// Categorical fields that enter the group-specific function (through a scalar per value).
const GROUP_FIELDS: usize = 8;
/// Inputs of the group-specific function: the numeric fields and one scalar per group field.
const INPUTS: usize = NUMERIC_FIELDS + GROUP_FIELDS;

/// The generator: its true click function, drawn once from the seed.
#[derive(Debug, Clone)]
pub struct Synthetic {
    cfg: SyntheticConfig,
    seed: u64,
    vocab: Vec<usize>,
    /// Shared first-order effect of each value of each categorical field.
    global: Vec<Vec<f32>>,
    /// Scalar code of each value of the fields `C2..C9` (inputs of the group function).
    code: Vec<Vec<f32>>,
    /// Per group: hidden weights `[UNITS * INPUTS]` and output weights `[UNITS]`.
    hidden: Vec<Vec<f32>>,
    out: Vec<[f32; UNITS]>,
    bias: Vec<f32>,
}

impl Synthetic {
    /// Draws the click function from `seed`.
    pub fn new(cfg: SyntheticConfig, seed: u64) -> Self {
        let mut rng = seed::rng(seed, "synthetic-truth");
        let sizes = [4usize, 10, 30, 100, 300, 1000, 3000];
        let vocab: Vec<usize> = (0..CATEGORICAL_FIELDS)
            .map(|f| {
                if f == 0 {
                    cfg.groups.max(1)
                } else {
                    sizes[f % sizes.len()].min(cfg.max_vocab.max(2))
                }
            })
            .collect();
        let h = cfg.heterogeneity as f32;
        let mut normal = move |s: f32| -> f32 {
            // Box–Muller: rand 0.10 without rand_distr.
            let u1: f32 = rng.random_range(1e-7f32..1.0);
            let u2: f32 = rng.random();
            s * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        };
        let global = vocab
            .iter()
            .map(|&n| (0..n).map(|_| normal(0.3)).collect())
            .collect();
        let code = (0..GROUP_FIELDS)
            .map(|f| (0..vocab[f + 1]).map(|_| normal(1.0)).collect())
            .collect();
        // Each group's function = a shared part + `heterogeneity` × a group-specific part, so
        // heterogeneity 0 gives every group the same click function.
        let groups = cfg.groups.max(1);
        let scale = 1.0 / (INPUTS as f32).sqrt();
        let shared_hidden: Vec<f32> = (0..UNITS * INPUTS).map(|_| normal(scale)).collect();
        let shared_out: [f32; UNITS] = std::array::from_fn(|_| normal(1.0));
        let hidden = (0..groups)
            .map(|_| {
                shared_hidden
                    .iter()
                    .map(|&w| w + h * normal(1.5 * scale))
                    .collect()
            })
            .collect();
        let out = (0..groups)
            .map(|_| std::array::from_fn(|k| shared_out[k] + h * normal(1.5)))
            .collect();
        let bias = (0..groups).map(|_| normal(0.3 * h)).collect();
        Synthetic {
            cfg,
            seed,
            vocab,
            global,
            code,
            hidden,
            out,
            bias,
        }
    }

    /// The generator's settings.
    pub fn config(&self) -> &SyntheticConfig {
        &self.cfg
    }

    /// The schema: `I1..I13` numeric, then `C1..C26` categorical with values `"0".."n-1"`.
    pub fn schema(&self) -> Schema {
        let mut fields: Vec<Field> = (1..=NUMERIC_FIELDS)
            .map(|j| Field::numeric(&format!("I{j}")))
            .collect();
        for (f, &n) in self.vocab.iter().enumerate() {
            fields.push(Field::categorical(
                &format!("C{}", f + 1),
                (0..n).map(|v| v.to_string()).collect(),
            ));
        }
        Schema { fields }
    }

    /// True click probability of an instance given its numeric values and category indices:
    /// `σ(b_g + Σ_f t_f(v_f) + Σ_k c_{g,k} tanh(w_{g,k} · [x ; code(C2..C9)]))`, a shared
    /// first-order part plus a small nonlinear function whose weights depend on the group `g`
    /// (the value of `C1`): the per-instance parameters APG is built to produce.
    pub fn click_probability(&self, num: &[f32], cat: &[usize]) -> f32 {
        let g = cat[0];
        let mut logit = self.bias[g] - 0.3;
        for (f, &v) in cat.iter().enumerate().skip(1) {
            logit += self.global[f][v];
        }
        let mut input = [0f32; INPUTS];
        input[..NUMERIC_FIELDS].copy_from_slice(&num[..NUMERIC_FIELDS]);
        for f in 0..GROUP_FIELDS {
            input[NUMERIC_FIELDS + f] = self.code[f][cat[f + 1]];
        }
        let w = &self.hidden[g];
        for k in 0..UNITS {
            let z: f32 = w[k * INPUTS..(k + 1) * INPUTS]
                .iter()
                .zip(&input)
                .map(|(a, b)| a * b)
                .sum();
            logit += self.out[g][k] * (1.5 * z).tanh();
        }
        1.0 / (1.0 + (-logit).exp())
    }

    /// Generates chunk `c` (rows `c * CHUNK_ROWS ..`), calling `f(numeric, categories, label)`
    /// for each of its first `rows` rows.
    pub fn chunk(&self, c: u64, rows: usize, mut f: impl FnMut(&[f32], &[usize], bool)) {
        let mut rng = StdRng::seed_from_u64(seed::derive(self.seed, &format!("chunk{c}")));
        let mut num = [0f32; NUMERIC_FIELDS];
        let mut cat = [0usize; CATEGORICAL_FIELDS];
        for _ in 0..rows.min(CHUNK_ROWS) {
            for x in num.iter_mut() {
                let u1: f32 = rng.random_range(1e-7f32..1.0);
                let u2: f32 = rng.random();
                *x = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            }
            for (f, v) in cat.iter_mut().enumerate() {
                let u: f32 = rng.random();
                // Skewed (power-law-like) value frequencies, as in click logs; the group
                // field is uniform so every group is well represented.
                let p = if f == 0 { u } else { u * u };
                *v = ((p * self.vocab[f] as f32) as usize).min(self.vocab[f] - 1);
            }
            let p = self.click_probability(&num, &cat);
            let click = rng.random::<f32>() < p;
            f(&num, &cat, click);
        }
    }

    /// Streams rows `start..start + count` (chunk-aligned `start`), calling `f` per row.
    pub fn stream(&self, start: usize, count: usize, mut f: impl FnMut(&[f32], &[usize], bool)) {
        let first = start / CHUNK_ROWS;
        let mut left = count;
        let mut c = first as u64;
        while left > 0 {
            let n = left.min(CHUNK_ROWS);
            self.chunk(c, n, &mut f);
            left -= n;
            c += 1;
        }
    }

    /// Encodes rows `start..start + count` for training.
    pub fn encode(&self, layout: &Layout, start: usize, count: usize) -> Encoded {
        let mut out = Encoded::new(layout.slots());
        out.ids.reserve(count * layout.slots());
        out.w.reserve(count * layout.slots());
        let mut inst = layout.instance();
        self.stream(start, count, |num, cat, click| {
            for (j, &x) in num.iter().enumerate() {
                layout.set_numeric(&mut inst, j, x);
            }
            for (f, &v) in cat.iter().enumerate() {
                layout.set_categorical(&mut inst, NUMERIC_FIELDS + f, Some(v));
            }
            out.push(&inst, if click { 1.0 } else { 0.0 });
        });
        out
    }

    /// Train / valid / test sets of the given sizes, from disjoint chunk ranges.
    pub fn split(&self, train: usize, valid: usize, test: usize) -> Result<CtrData> {
        let layout = Layout::new(self.schema())?;
        let chunks = |n: usize| n.div_ceil(CHUNK_ROWS) * CHUNK_ROWS;
        let tr = self.encode(&layout, 0, train);
        let va = self.encode(&layout, chunks(train), valid);
        let te = self.encode(&layout, chunks(train) + chunks(valid), test);
        let data = CtrData {
            name: "synthetic".into(),
            layout,
            train: tr,
            valid: va,
            test: te,
            protocol: format!(
                "synthetic Criteo-shaped rows ({} groups by C1, heterogeneity {}): {train} train, {valid} valid, {test} test from disjoint chunks",
                self.cfg.groups, self.cfg.heterogeneity
            ),
        };
        data.check()?;
        Ok(data)
    }

    /// Writes `count` rows as TSV (`label`, `I1..I13`, `C1..C26`) to `w`, streaming.
    pub fn write_tsv(
        &self,
        count: usize,
        w: &mut impl std::io::Write,
        label: bool,
    ) -> std::io::Result<()> {
        let mut err = None;
        let mut line = String::with_capacity(256);
        // Chunk by chunk so that a closed pipe (`generate | head`) stops the generator instead
        // of computing the remaining rows unwritten.
        let mut done = 0;
        while done < count && err.is_none() {
            let n = (count - done).min(CHUNK_ROWS);
            self.stream(done, n, |num, cat, click| {
                if err.is_some() {
                    return;
                }
                use std::fmt::Write as _;
                line.clear();
                if label {
                    line.push_str(if click { "1\t" } else { "0\t" });
                }
                for x in num {
                    let _ = write!(line, "{x:.4}\t");
                }
                for (k, v) in cat.iter().enumerate() {
                    let _ = write!(line, "{v}");
                    line.push(if k + 1 == cat.len() { '\n' } else { '\t' });
                }
                if let Err(e) = w.write_all(line.as_bytes()) {
                    err = Some(e);
                }
            });
            done += n;
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_one_sided_part_is_refused() {
        let g = Synthetic::new(SyntheticConfig::default(), 3);
        let e = g.split(500, 0, 500).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("valid part has 0 rows"),
            "{e}"
        );
        let mut d = g.split(500, 500, 500).unwrap();
        d.check().unwrap();
        d.test.labels.iter_mut().for_each(|l| *l = 1.0);
        let e = d.check().unwrap_err().to_string();
        assert!(e.contains("test part") && e.contains("clicks"), "{e}");
    }

    #[test]
    fn synthetic_is_deterministic_and_chunked() {
        let g = Synthetic::new(SyntheticConfig::default(), 3);
        let l = Layout::new(g.schema()).unwrap();
        let a = g.encode(&l, 0, 5000);
        let b = g.encode(&l, 0, 5000);
        assert_eq!(a, b);
        // Chunk 1 generated alone equals rows 4096.. of the full stream.
        let c = g.encode(&l, CHUNK_ROWS, 100);
        let s = l.slots();
        assert_eq!(&a.ids[CHUNK_ROWS * s..(CHUNK_ROWS + 100) * s], &c.ids[..]);
        let rate = a.labels.iter().sum::<f32>() / a.len() as f32;
        assert!(rate > 0.2 && rate < 0.8, "click rate {rate}");
    }

    /// A reader that goes away (`generate | head`) stops the generator: with 2^40 rows asked,
    /// the old row-by-row loop would compute them all unwritten; this one returns after the
    /// chunk that hit the closed pipe (so a regression shows as this test never ending, which
    /// CI's time limit turns into a failure). Rows written before the error are the stream's.
    #[test]
    fn write_tsv_stops_at_a_closed_pipe_and_matches_the_stream() {
        struct Closes {
            left: usize,
            got: Vec<u8>,
        }
        impl std::io::Write for Closes {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.left == 0 {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                self.left -= 1;
                self.got.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let g = Synthetic::new(SyntheticConfig::default(), 2);
        let mut w = Closes {
            left: CHUNK_ROWS + 10,
            got: Vec::new(),
        };
        let e = g.write_tsv(1 << 40, &mut w, true).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        let mut all = Vec::new();
        g.write_tsv(CHUNK_ROWS + 10, &mut all, true).unwrap();
        assert_eq!(w.got, all);
        let text = String::from_utf8(all).unwrap();
        assert_eq!(text.lines().count(), CHUNK_ROWS + 10);
        assert_eq!(text.lines().next().unwrap().split('\t').count(), 40);
    }

    /// The true probabilities rank clicks well (there is signal to learn), and that signal
    /// needs the group: scoring with the wrong group's function loses much of it.
    #[test]
    fn bayes_auc_is_high_and_needs_the_group() {
        let g = Synthetic::new(SyntheticConfig::default(), 1);
        let (mut p_true, mut p_wrong, mut y) = (Vec::new(), Vec::new(), Vec::new());
        g.stream(0, 20_000, |num, cat, click| {
            p_true.push(f64::from(g.click_probability(num, cat)));
            let mut other = cat.to_vec();
            other[0] = (cat[0] + 1) % g.config().groups;
            p_wrong.push(f64::from(g.click_probability(num, &other)));
            y.push(click);
        });
        let auc = ferrolab_core::metrics::roc_auc(&p_true, &y);
        let wrong = ferrolab_core::metrics::roc_auc(&p_wrong, &y);
        eprintln!("bayes AUC {auc:.4}, with another group's function {wrong:.4}");
        assert!(auc > 0.8, "{auc}");
        assert!(auc - wrong > 0.05, "{auc} vs {wrong}");
    }

    #[test]
    fn click_function_differs_between_groups() {
        let g = Synthetic::new(SyntheticConfig::default(), 5);
        let num = [0.5f32; NUMERIC_FIELDS];
        let mut cat = [1usize; CATEGORICAL_FIELDS];
        let ps: Vec<f32> = (0..8)
            .map(|grp| {
                cat[0] = grp;
                g.click_probability(&num, &cat)
            })
            .collect();
        let spread = ps.iter().cloned().fold(f32::MIN, f32::max)
            - ps.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.2, "{ps:?}");
    }
}
