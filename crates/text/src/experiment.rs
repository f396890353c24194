//! The paper's comparison: SECNN against Kim-CNN, same splits, same seeds, same initial
//! encoder weights (both models draw their encoder first from the same seed), so the per-seed
//! difference isolates what the squeeze-and-excitation block adds.

use crate::checkpoint::{Checkpoint, ModelKind};
use crate::config::SecnnConfig;
use crate::error::{Result, TextError};
use crate::models::{ConvEncoderConfig, KimCnn, Secnn, SentenceClassifier};
use crate::tokenize::{Vocab, tokenize};
use crate::train::{Encoded, Fit, accuracy};
use ferrolab_core::metrics::mean_std;
use ferrolab_core::run::{Curve, Outcome, PaperFigure, Report, RunDir};
use ferrolab_core::train::{EarlyStopping, History, Mode, Trainer};
use ferrolab_core::{Checked, backend, seed};
use ferrolab_data::text::{LabeledSentences, read_labeled_sentences};
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// The sentence files of one experiment.
#[derive(Debug, Clone)]
pub struct Files {
    /// Dataset name for the report.
    pub name: String,
    /// Training file.
    pub train: PathBuf,
    /// Optional test file.
    pub test: Option<PathBuf>,
    /// Optional dev file.
    pub dev: Option<PathBuf>,
}

/// Resolves the files named by `data.train/test/dev`, or the preset under the data folder,
/// and checks that each exists (so a typo fails before any output is written).
pub fn resolve_files(cfg: &SecnnConfig, data_dir: Option<&Path>) -> Result<Files> {
    let files = resolve_paths(cfg, data_dir)?;
    for p in std::iter::once(&files.train)
        .chain(&files.test)
        .chain(&files.dev)
    {
        if !p.is_file() {
            return Err(TextError::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
    }
    Ok(files)
}

fn resolve_paths(cfg: &SecnnConfig, data_dir: Option<&Path>) -> Result<Files> {
    let d = &cfg.data;
    if let Some(train) = &d.train {
        let name = Path::new(train).file_stem().map_or_else(
            || "custom".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        return Ok(Files {
            name,
            train: train.into(),
            test: d.test.as_ref().map(PathBuf::from),
            dev: d.dev.as_ref().map(PathBuf::from),
        });
    }
    // The dataset's own place in the lookup chain (the first location that holds it), so a
    // per-user folder without the text files does not hide ../shared/data.
    let train = ferrolab_data::lookup::find_dataset(data_dir, &d.preset)?;
    let sibling = |ext: &str| train.with_extension(ext);
    let (test, dev) = if crate::config::preset_has_splits(&d.preset) {
        (Some(sibling("test")), Some(sibling("dev")))
    } else {
        (None, None)
    };
    // A file the user names wins over the preset's own, as it does with mr.
    Ok(Files {
        name: d.preset.clone(),
        train,
        test: d.test.as_ref().map(PathBuf::from).or(test),
        dev: d.dev.as_ref().map(PathBuf::from).or(dev),
    })
}

/// Sentences after tokenisation, with labels.
#[derive(Debug, Clone)]
struct Tokenized {
    tokens: Vec<Vec<String>>,
    labels: Vec<usize>,
}

/// The class map of a training file: its distinct labels in increasing order (class `i` is
/// label `class_map[i]`), so a label's value is never used as a size. Refuses fewer than two
/// classes and a class with a single example, which no split can both train and evaluate on.
fn class_map(path: &Path, s: &LabeledSentences) -> Result<Vec<u32>> {
    let mut counts: std::collections::BTreeMap<u32, (usize, usize)> = Default::default();
    for (i, &l) in s.labels.iter().enumerate() {
        let e = counts
            .entry(l)
            .or_insert((0, s.lines.get(i).copied().unwrap_or(i + 1)));
        e.0 += 1;
    }
    if counts.len() < 2 {
        return Err(TextError::Invalid(format!(
            "{}: needs at least two classes, found {} example(s) all labelled {}",
            path.display(),
            s.len(),
            s.labels.first().copied().unwrap_or(0)
        )));
    }
    if let Some((label, (_, line))) = counts.iter().find(|(_, (n, _))| *n < 2) {
        return Err(TextError::bad(
            path,
            *line,
            format!(
                "label {label} has a single example; every class needs at least two in the \
                 training file (one to train on, one to evaluate)"
            ),
        ));
    }
    Ok(counts.into_keys().collect())
}

/// Tokenises a sentence file and maps its labels to class indices; a label that is not in
/// `map` (absent from the training file) is an error naming the file and line.
fn tokenized(path: &Path, s: &LabeledSentences, map: &[u32]) -> Result<Tokenized> {
    let mut labels = Vec::with_capacity(s.len());
    for (i, &l) in s.labels.iter().enumerate() {
        let c = map.binary_search(&l).map_err(|_| {
            TextError::bad(
                path,
                s.lines.get(i).copied().unwrap_or(i + 1),
                format!("label {l} does not occur in the training file (its labels are {map:?})"),
            )
        })?;
        labels.push(c);
    }
    let tokens = s.texts.iter().map(|t| tokenize(t)).collect();
    Ok(Tokenized { tokens, labels })
}

/// Reads and tokenises a test or dev file against the training file's class map.
fn load(path: &Path, map: &[u32]) -> Result<(Tokenized, usize)> {
    let s = read_labeled_sentences(path)?;
    Ok((tokenized(path, &s, map)?, s.skipped_empty))
}

fn encode(t: &Tokenized, idx: &[usize], vocab: &Vocab, max_len: usize) -> Encoded {
    Encoded {
        ids: idx
            .iter()
            .map(|&i| vocab.encode(&t.tokens[i], max_len))
            .collect(),
        labels: idx.iter().map(|&i| t.labels[i]).collect(),
    }
}

/// Splits `idx` into (kept, held out) with a held-out share `frac`, stratified by label.
fn stratified_split(
    idx: &[usize],
    labels: &[usize],
    frac: f64,
    rng: &mut impl rand::Rng,
) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let (mut keep, mut out) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut members: Vec<usize> = idx.iter().copied().filter(|&i| labels[i] == c).collect();
        members.shuffle(rng);
        let n_out = ((members.len() as f64) * frac).round() as usize;
        out.extend_from_slice(&members[..n_out]);
        keep.extend_from_slice(&members[n_out..]);
    }
    keep.sort_unstable();
    out.sort_unstable();
    (keep, out)
}

/// Per-run figures.
/// What one run (seed or fold) leaves behind, saved so that `--resume` can skip it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RunUnit {
    figs: RunFigures,
    curves: Vec<Curve>,
    train_seconds: f64,
    vocab_size: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct RunFigures {
    secnn: f64,
    kim: f64,
}

/// Runs the comparison and writes checkpoints and `metrics.jsonl` into `run`.
pub fn run(
    cfg: &Checked<SecnnConfig>,
    data_dir: Option<&Path>,
    master_seed: u64,
    run: &mut RunDir,
) -> Result<Outcome> {
    let cfg: &SecnnConfig = cfg;
    let files = resolve_files(cfg, data_dir)?;
    let _rng = backend::exclusive_rng();
    let sw = ferrolab_core::resources::Stopwatch::start();
    let train_raw = read_labeled_sentences(&files.train)?;
    let class_labels = class_map(&files.train, &train_raw)?;
    let classes = class_labels.len();
    let train_all = tokenized(&files.train, &train_raw, &class_labels)?;
    let mut skipped = train_raw.skipped_empty;
    drop(train_raw);
    let test_file = match &files.test {
        Some(p) => {
            let (t, s) = load(p, &class_labels)?;
            skipped += s;
            Some(t)
        }
        None => None,
    };
    let dev_file = match &files.dev {
        Some(p) => {
            let (t, s) = load(p, &class_labels)?;
            skipped += s;
            Some(t)
        }
        None => None,
    };
    let load_seconds = sw.seconds();

    let d = &cfg.data;
    let all: Vec<usize> = (0..train_all.labels.len()).collect();
    let runs = if d.folds > 1 {
        d.folds
    } else {
        cfg.train.seeds
    };
    // The hold-out test split is fixed by the master seed so every run sees the same test set.
    let holdout = stratified_split(
        &all,
        &train_all.labels,
        d.holdout,
        &mut seed::rng(master_seed, "holdout"),
    );
    let mut folds_perm = all.clone();
    folds_perm.shuffle(&mut seed::rng(master_seed, "folds"));

    let min_len = cfg.model.widths.iter().copied().max().unwrap_or(1);
    let mut per_run = Vec::new();
    let mut curves = Vec::new();
    let mut train_seconds = 0.0;
    let mut vocab_sizes = Vec::new();
    for r in 0..runs {
        // One unit per run: a run continued with --resume skips the runs it finished.
        let unit: RunUnit = run.unit(&format!("run{r}"), |run| -> Result<RunUnit> {
            let run_seed = seed::derive(master_seed, &format!("run{r}"));
            let (train_idx, test_idx) = if test_file.is_some() {
                (all.clone(), Vec::new())
            } else if d.folds > 1 {
                let test: Vec<usize> = folds_perm
                    .iter()
                    .copied()
                    .skip(r)
                    .step_by(d.folds)
                    .collect();
                let mut is_test = vec![false; all.len()];
                test.iter().for_each(|&i| is_test[i] = true);
                (all.iter().copied().filter(|&i| !is_test[i]).collect(), test)
            } else {
                holdout.clone()
            };
            let (fit_idx, dev_idx) = if dev_file.is_some() {
                (train_idx.clone(), Vec::new())
            } else {
                stratified_split(
                    &train_idx,
                    &train_all.labels,
                    d.dev_fraction,
                    &mut seed::rng(run_seed, "dev"),
                )
            };
            let fit_idx = if d.limit > 0 && fit_idx.len() > d.limit {
                fit_idx[..d.limit].to_vec()
            } else {
                fit_idx
            };
            check_splits(
                &files,
                cfg,
                &train_all.labels,
                &fit_idx,
                dev_file.as_ref().map_or(dev_idx.len(), |t| t.labels.len()),
                test_file
                    .as_ref()
                    .map_or(test_idx.len(), |t| t.labels.len()),
            )?;
            let vocab = Vocab::build(fit_idx.iter().map(|&i| &train_all.tokens[i]), d.min_count);
            let train = encode(&train_all, &fit_idx, &vocab, d.max_len);
            let dev = match &dev_file {
                Some(t) => encode(
                    t,
                    &(0..t.labels.len()).collect::<Vec<_>>(),
                    &vocab,
                    d.max_len,
                ),
                None => encode(&train_all, &dev_idx, &vocab, d.max_len),
            };
            let test = match &test_file {
                Some(t) => encode(
                    t,
                    &(0..t.labels.len()).collect::<Vec<_>>(),
                    &vocab,
                    d.max_len,
                ),
                None => encode(&train_all, &test_idx, &vocab, d.max_len),
            };
            let embeddings = initial_embeddings(cfg, &vocab, run_seed)?;
            let enc = ConvEncoderConfig::new(vocab.len())
                .with_embed_dim(cfg.model.embed_dim)
                .with_widths(cfg.model.widths.clone())
                .with_maps(cfg.model.maps);
            let tdev = backend::train_device();
            let mut figs = RunFigures::default();
            let mut unit_curves = Vec::new();
            let mut unit_seconds = 0.0;
            for kind in [ModelKind::KimCnn, ModelKind::Secnn] {
                backend::seed_backend(seed::derive(run_seed, "init"));
                let label = format!("{} run {r}", kind.name());
                let sw = ferrolab_core::resources::Stopwatch::start();
                let ctx = Stage {
                    cfg,
                    train: &train,
                    dev: &dev,
                    test: &test,
                    run_seed,
                    min_len,
                    label: &label,
                    embeddings: embeddings.as_deref(),
                };
                // Run 0's models are kept: `checkpoint/` (SECNN) serves `secnn predict`.
                let save = (r == 0).then(|| {
                    let dir = match kind {
                        ModelKind::KimCnn => "checkpoint-kim-cnn",
                        ModelKind::Secnn => "checkpoint",
                    };
                    (
                        Checkpoint::new(kind, cfg, classes, vocab.clone())
                            .with_class_map(class_labels.clone()),
                        run.join(dir),
                    )
                });
                let (acc, hist) = match kind {
                    ModelKind::KimCnn => ctx.train_and_test(
                        KimCnn::new(&enc, classes, cfg.model.dropout, &tdev),
                        save,
                    )?,
                    ModelKind::Secnn => ctx.train_and_test(
                        Secnn::new(
                            &enc,
                            classes,
                            cfg.model.dropout,
                            cfg.model.se_reduction,
                            &tdev,
                        ),
                        save,
                    )?,
                };
                unit_seconds += sw.seconds();
                for ep in &hist.epochs {
                    let mut rec = ep.to_json();
                    rec["run"] = r.into();
                    rec["model"] = kind.name().into();
                    run.log_metrics(&rec)?;
                }
                unit_curves.push(Curve {
                    label: label.clone(),
                    y_name: "dev_accuracy".into(),
                    points: hist
                        .epochs
                        .iter()
                        .filter_map(|e| {
                            e.valid
                                .get("dev_accuracy")
                                .map(|&v| (e.epoch as f64 + 1.0, v))
                        })
                        .collect(),
                });
                match kind {
                    ModelKind::KimCnn => figs.kim = acc,
                    ModelKind::Secnn => figs.secnn = acc,
                }
            }
            eprintln!(
                "secnn [{}] run {}/{runs}: SECNN {:.4}  Kim-CNN {:.4}",
                files.name,
                r + 1,
                figs.secnn,
                figs.kim
            );
            Ok(RunUnit {
                figs,
                curves: unit_curves,
                train_seconds: unit_seconds,
                vocab_size: vocab.len() as f64,
            })
        })?;
        per_run.push(unit.figs);
        curves.extend(unit.curves);
        train_seconds += unit.train_seconds;
        vocab_sizes.push(unit.vocab_size);
    }

    let mut outcome = build_outcome(
        cfg,
        &files,
        master_seed,
        &per_run,
        curves,
        skipped,
        load_seconds,
        train_seconds,
        mean_std(&vocab_sizes).0,
    );
    // Class i of the model (and of `secnn predict`'s output before mapping) is this label.
    outcome.report.details["class_map"] = serde_json::json!(class_labels);
    Ok(outcome)
}

/// Refuses a run whose splits cannot give a meaningful figure: a training part with fewer than
/// two classes (e.g. cut by `data.limit`), or an empty dev part (early stopping and model
/// selection read it) or test part (the accuracy would be undefined).
fn check_splits(
    files: &Files,
    cfg: &SecnnConfig,
    labels: &[usize],
    fit_idx: &[usize],
    dev_len: usize,
    test_len: usize,
) -> Result<()> {
    let name = files.train.display();
    let first = fit_idx.first().map(|&i| labels[i]);
    if fit_idx.iter().all(|&i| Some(labels[i]) == first) {
        return Err(TextError::Invalid(format!(
            "{name}: the training part has {} example(s) of fewer than two classes (data.limit = {}); \
             give more examples or raise data.limit",
            fit_idx.len(),
            cfg.data.limit
        )));
    }
    if dev_len == 0 {
        return Err(TextError::Invalid(format!(
            "{name}: the dev part is empty (data.dev_fraction = {} of too few examples); give more \
             examples, a larger data.dev_fraction or a data.dev file",
            cfg.data.dev_fraction
        )));
    }
    if test_len == 0 {
        return Err(TextError::Invalid(format!(
            "{name}: the test part is empty (data.holdout = {} of too few examples); give more \
             examples, a larger data.holdout or a data.test file",
            cfg.data.holdout
        )));
    }
    Ok(())
}

/// What one model's training and test evaluation needs within a run.
struct Stage<'a> {
    cfg: &'a SecnnConfig,
    train: &'a Encoded,
    dev: &'a Encoded,
    test: &'a Encoded,
    run_seed: u64,
    min_len: usize,
    label: &'a str,
    embeddings: Option<&'a [f32]>,
}

impl Stage<'_> {
    /// Trains `model` (with pretrained vectors if any), returns its test accuracy and curve,
    /// and saves it when `save` names a checkpoint folder.
    fn train_and_test<M: SentenceClassifier>(
        &self,
        model: M,
        save: Option<(Checkpoint, PathBuf)>,
    ) -> Result<(f64, History)> {
        let model = match self.embeddings {
            Some(e) => model.with_embeddings(e.to_vec()),
            None => model,
        };
        let (m, h) = fit(
            self.cfg,
            model,
            self.train,
            self.dev,
            self.run_seed,
            self.min_len,
            self.label,
        )?;
        let acc = accuracy(&m.valid(), self.test, self.min_len, &backend::device());
        if let Some((ckpt, dir)) = save {
            ckpt.save(&m, &dir)?;
        }
        Ok((acc, h))
    }
}

fn fit<M: SentenceClassifier>(
    cfg: &SecnnConfig,
    model: M,
    train: &Encoded,
    dev: &Encoded,
    run_seed: u64,
    min_len: usize,
    label: &str,
) -> Result<(M, History)> {
    let t = &cfg.train;
    let mut fit = Fit::new(
        model,
        train,
        Some(dev),
        t.batch_size,
        min_len,
        cfg.model.max_norm,
        seed::derive(run_seed, "batches"),
    );
    let trainer = Trainer {
        epochs: t.epochs,
        lr: t.lr,
        schedule: Default::default(),
        early_stopping: Some(EarlyStopping {
            metric: "dev_accuracy".into(),
            mode: Mode::Max,
            patience: t.early_stopping_patience(),
        }),
        label: label.to_string(),
    };
    let mut hist = History::default();
    trainer.fit(&mut fit, &mut [&mut hist])?;
    let model = fit
        .into_model()
        .ok_or_else(|| TextError::Invalid("training lost the model".into()))?;
    Ok((model, hist))
}

/// Kim's random U(-0.25, 0.25) vectors, overwritten by pretrained ones where a file is given.
fn initial_embeddings(cfg: &SecnnConfig, vocab: &Vocab, run_seed: u64) -> Result<Option<Vec<f32>>> {
    let Some(path) = &cfg.model.embeddings else {
        return Ok(None);
    };
    use rand::RngExt;
    let dim = cfg.model.embed_dim;
    let mut rng = seed::rng(run_seed, "embeddings");
    let mut m: Vec<f32> = (0..vocab.len() * dim)
        .map(|_| rng.random_range(-0.25f32..0.25))
        .collect();
    let found = crate::embeddings::load_word_vectors(Path::new(path), vocab, dim, &mut m)?;
    eprintln!(
        "embeddings: {found} of {} vocabulary words found in {path}",
        vocab.len() - 2
    );
    Ok(Some(m))
}

#[allow(clippy::too_many_arguments)]
fn build_outcome(
    cfg: &SecnnConfig,
    files: &Files,
    master_seed: u64,
    per_run: &[RunFigures],
    curves: Vec<Curve>,
    skipped: usize,
    load_seconds: f64,
    train_seconds: f64,
    vocab_mean: f64,
) -> Outcome {
    let se: Vec<f64> = per_run.iter().map(|f| f.secnn).collect();
    let kim: Vec<f64> = per_run.iter().map(|f| f.kim).collect();
    let diff: Vec<f64> = per_run.iter().map(|f| f.secnn - f.kim).collect();
    let (se_m, se_s) = mean_std(&se);
    let (k_m, k_s) = mean_std(&kim);
    let (d_m, d_s) = mean_std(&diff);
    let mut report = Report::new("secnn", &files.name, master_seed);
    report.config = serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null);
    let m = &mut report.metrics;
    m.insert("test_accuracy".into(), se_m);
    m.insert("test_accuracy_std".into(), se_s);
    m.insert("paired_difference_mean".into(), d_m);
    m.insert("paired_difference_std".into(), d_s);
    m.insert("runs".into(), per_run.len() as f64);
    m.insert("skipped_empty_lines".into(), skipped as f64);
    m.insert("vocab_size".into(), vocab_mean);
    report.baselines.insert(
        "kim_cnn".into(),
        [
            ("test_accuracy".to_string(), k_m),
            ("test_accuracy_std".to_string(), k_s),
        ]
        .into(),
    );
    report.timings.insert("load_seconds".into(), load_seconds);
    report.timings.insert("train_seconds".into(), train_seconds);
    report.details = serde_json::json!({
        "protocol": if cfg.data.folds > 1 { format!("{}-fold cross-validation", cfg.data.folds) }
                    else if files.test.is_some() { "given test file".to_string() }
                    else { format!("seeded {:.0}% hold-out", cfg.data.holdout * 100.0) },
        "secnn_test_accuracy_per_run": se,
        "kim_cnn_test_accuracy_per_run": kim,
        "paired_difference_per_run": diff,
        "train_file": files.train.display().to_string(),
        "test_file": files.test.as_ref().map(|p| p.display().to_string()),
        "dev_file": files.dev.as_ref().map(|p| p.display().to_string()),
    });
    let verdict = if d_m > 0.0 && d_m > d_s / (per_run.len() as f64).sqrt() {
        "SE helped"
    } else if d_m > 0.0 {
        "SE was ahead on average but within one standard error"
    } else {
        "SE did not help"
    };
    report.notes.push(format!(
        "{verdict} on {}: SECNN − Kim-CNN = {:+.2} ± {:.2} points (mean ± std of the paired per-run difference, {} runs)",
        files.name,
        d_m * 100.0,
        d_s * 100.0,
        per_run.len()
    ));
    let paper = match files.name.as_str() {
        "mr" => vec![PaperFigure {
            model: "kim_cnn".into(),
            metric: "test_accuracy".into(),
            value: 0.761,
            source: "Kim 2014, CNN-rand, 10-fold CV".into(),
        }],
        "sst2" => vec![PaperFigure {
            model: "kim_cnn".into(),
            metric: "test_accuracy".into(),
            value: 0.827,
            source: "Kim 2014, CNN-rand".into(),
        }],
        _ => Vec::new(),
    };
    Outcome {
        report,
        curves,
        paper,
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_paths;
    use crate::config::SecnnConfig;
    use std::path::PathBuf;

    #[test]
    fn named_test_and_dev_files_win_over_the_presets_own() {
        let dir = std::env::temp_dir().join(format!("ferrolab-secnn-paths-{}", std::process::id()));
        let text = dir.join("text");
        std::fs::create_dir_all(&text).unwrap();
        for ext in ["train", "test", "dev"] {
            std::fs::write(text.join(format!("stsa.binary.{ext}")), "1 a\n0 b\n").unwrap();
        }
        let mut cfg = SecnnConfig::default();
        cfg.data.preset = "sst2".into();
        let own = resolve_paths(&cfg, Some(&dir)).unwrap();
        assert_eq!(own.test, Some(text.join("stsa.binary.test")));
        assert_eq!(own.dev, Some(text.join("stsa.binary.dev")));
        cfg.data.test = Some("mine.test".into());
        cfg.data.dev = Some("mine.dev".into());
        let named = resolve_paths(&cfg, Some(&dir)).unwrap();
        assert_eq!(named.train, text.join("stsa.binary.train"));
        assert_eq!(named.test, Some(PathBuf::from("mine.test")));
        assert_eq!(named.dev, Some(PathBuf::from("mine.dev")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
