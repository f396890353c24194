//! `ferrolab layer-importance`: builds the ground-truth dataset over the zoo, benchmarks the
//! criteria against it and runs the three budgets, into one report.
//!
//! Every zoo member is one resumable unit: its trained weights (`models/<id>.safetensors`),
//! its probe record and its criteria scores (`units/*.json`); a killed run continued with
//! `--resume DIR` retrains and reprobes nothing that finished.

use crate::bench::{self, agreement, best_criterion, mean_std};
use crate::budget;
use crate::config::LayerImportanceConfig;
use crate::criteria::{self, CRITERIA, CriteriaSettings, Scores};
use crate::crossdomain;
use crate::dataset::{self, FAMILIES, Grid, ModelRecord, VERSION};
use crate::ops::{self, Int8Layer};
use crate::train::{self, EvalSet, TrainSettings, to_train};
use crate::zoo::{LayerParams, ZooNet, ZooSpec};
use burn::module::Module;
use ferrolab_core::run::{Outcome, Report};
use ferrolab_core::{Checked, RunContext, SysResult, SystemError};
use ferrolab_vision::data::{self as vdata, ImageSet, Normalization};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Training images, evaluation images and the normalisation.
pub struct Data {
    pub train: ImageSet,
    pub eval: ImageSet,
    pub norm: Normalization,
    pub source: String,
}

/// Loads the configured data (a data error names the file).
pub fn load(cfg: &LayerImportanceConfig, data_dir: Option<&Path>) -> SysResult<Data> {
    let d = &cfg.data;
    let (train, test, source) = if d.dataset == "synthetic" {
        (
            vdata::synthetic(d.train_images, 28, 1),
            vdata::synthetic(d.eval_images, 28, 2),
            "generated strokes".to_string(),
        )
    } else {
        let dir = match &d.dir {
            Some(p) => PathBuf::from(p),
            None => ferrolab_data::lookup::find_dataset(data_dir, "fashion-mnist")?,
        };
        let (train, test) = vdata::load_fashion_mnist(&dir)?;
        (train, test, dir.display().to_string())
    };
    let train = train.head(d.train_images);
    let eval = test.head(d.eval_images);
    let norm = Normalization::of(&train);
    Ok(Data {
        train,
        eval,
        norm,
        source,
    })
}

/// One zoo member: its spec and seed.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub spec: ZooSpec,
    pub seed: u64,
    pub seed_index: usize,
    /// Training epochs (`zoo.epochs`, or `zoo.mlp_epochs` for an MLP when set).
    pub epochs: usize,
}

pub fn members(cfg: &LayerImportanceConfig, master: u64) -> Vec<Member> {
    let mut out = Vec::new();
    for arch in &cfg.zoo.archs {
        for s in 0..cfg.zoo.seeds {
            out.push(Member {
                id: format!("{arch}-s{s}"),
                spec: ZooSpec {
                    arch: arch.clone(),
                    width: cfg.zoo.width,
                    classes: 10,
                    side: 28,
                },
                seed: ferrolab_core::seed::derive(master, &format!("zoo-{arch}-{s}")),
                seed_index: s,
                epochs: if arch == "mlp" && cfg.zoo.mlp_epochs > 0 {
                    cfg.zoo.mlp_epochs
                } else {
                    cfg.zoo.epochs
                },
            });
        }
    }
    out
}

fn grid(cfg: &LayerImportanceConfig) -> Grid {
    Grid {
        sparsities: cfg.grid.sparsities.clone(),
        bits: cfg.grid.bits.clone(),
        flip_counts: cfg.grid.flip_counts.clone(),
        flip_rates: cfg.grid.flip_rates.clone(),
        flip_seeds: cfg.grid.flip_seeds,
    }
}

fn train_settings(cfg: &LayerImportanceConfig) -> TrainSettings {
    TrainSettings {
        epochs: cfg.zoo.epochs,
        batch_size: cfg.zoo.batch_size,
        lr: cfg.zoo.lr,
        weight_decay: cfg.zoo.weight_decay,
    }
}

fn ckpt_path(run: &Path, id: &str) -> PathBuf {
    run.join("models").join(format!("{id}.safetensors"))
}

/// The trained member: loaded from the run folder when a previous call saved it.
fn trained(m: &Member, data: &Data, s: &TrainSettings, run: &Path) -> SysResult<(ZooNet, f64)> {
    let path = ckpt_path(run, &m.id);
    let dev = ferrolab_core::backend::device();
    if path.exists() {
        let net = m.spec.build(&dev).map_err(SystemError::usage)?;
        // A file that does not fit the architecture is the user's to fix (exit 2).
        let net = ferrolab_core::run::load_checkpoint(net, &path)
            .map_err(|e| SystemError::usage(e.to_string()))?;
        return Ok((net, 0.0));
    }
    let t = Instant::now();
    let s = TrainSettings {
        epochs: m.epochs,
        ..*s
    };
    let net =
        train::train(&m.spec, &data.train, data.norm, &s, m.seed).map_err(SystemError::usage)?;
    let secs = t.elapsed().as_secs_f64();
    let dir = run.join("models");
    std::fs::create_dir_all(&dir)
        .map_err(|e| SystemError::runtime(format!("{}: {e}", dir.display())))?;
    ferrolab_core::run::save_checkpoint(&net, &path)?;
    Ok((net, secs))
}

/// Trains, probes and scores one cross-domain member.
fn cross_member(
    name: &str,
    data_dir: Option<&Path>,
    g: &Grid,
    cs: &CriteriaSettings,
    seed: u64,
) -> SysResult<Measured> {
    let t = Instant::now();
    // A missing or unreadable data file is the user's to fix (exit 2, before anything runs
    // for long: `prepare` has found the files).
    let mut member = match name {
        "secnn-mr" => crossdomain::secnn_mr(data_dir, seed, cs.calib_images),
        _ => crossdomain::gcn_cora(data_dir, seed),
    }
    .map_err(SystemError::usage)?;
    let train_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = member.accuracy();
    let ips = member.eval_size as f64 / t.elapsed().as_secs_f64().max(1e-9);
    let t = Instant::now();
    let (base, fams, probes, criteria) = crossdomain::measure(&mut member, g, cs, seed);
    let probe_seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "layer-importance: {name} base accuracy {base:.4}, {probes} probes and criteria in {probe_seconds:.1} s (trained in {train_seconds:.1} s)"
    );
    let (layer_names, layer_params) = member.layers();
    let (drops, normalized, drop_std) = dataset::split_families(fams);
    Ok(Measured {
        record: ModelRecord {
            id: name.to_string(),
            arch: member.arch.to_string(),
            width: 1.0,
            seed,
            layer_names,
            layer_params,
            base_accuracy: base,
            eval_images: member.eval_size,
            train_seconds,
            probe_seconds,
            probes,
            eval_images_per_second: ips,
            drops,
            normalized,
            drop_std,
        },
        criteria,
    })
}

/// A unit read back from the run folder is what the benchmark and the budgets index: a file
/// edited or damaged since it was written is the user's to fix (exit 2), not a panic.
fn unit_error(unit: &str, e: &str) -> SystemError {
    SystemError::usage(format!(
        "units/{unit}.json: {e} (delete the file to redo that part)"
    ))
}

/// A probe record: self-consistent, of the member `id`, with the architecture's layers.
fn check_record(unit: &str, r: &ModelRecord, id: &str, layers: Option<&[String]>) -> SysResult<()> {
    r.check().map_err(|e| unit_error(unit, &e))?;
    if r.id != id {
        return Err(unit_error(
            unit,
            &format!("the record is of model {}", r.id),
        ));
    }
    if let Some(names) = layers
        && r.layer_names != names
    {
        return Err(unit_error(
            unit,
            &format!(
                "its {} layer names are not the architecture's {}",
                r.layer_names.len(),
                names.len()
            ),
        ));
    }
    Ok(())
}

/// Criteria scores: every criterion (SynFlow only for image members), one score per layer.
fn check_scores(unit: &str, s: &Scores, layers: usize, image: bool) -> SysResult<()> {
    for c in CRITERIA {
        match s.scores.get(c) {
            Some(v) if v.len() != layers => {
                return Err(unit_error(
                    unit,
                    &format!("criterion {c} has {} scores for {layers} layers", v.len()),
                ));
            }
            None if image || !c.starts_with("synflow") => {
                return Err(unit_error(unit, &format!("criterion {c} is missing")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Everything the benchmark and the budgets need of one member.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Measured {
    record: ModelRecord,
    criteria: Scores,
}

/// Runs the experiment.
pub fn run(cfg: &Checked<LayerImportanceConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    let clock = Instant::now();
    let _rng = ferrolab_core::backend::exclusive_rng();
    let data = load(cfg, ctx.data_dir())?;
    let eval = EvalSet::new(&data.eval, data.norm, cfg.data.eval_batch);
    let zoo = members(cfg, ctx.seed());
    let ts = train_settings(cfg);
    let g = grid(cfg);
    let cs = CriteriaSettings {
        calib_images: cfg.criteria.calib_images,
        batch: cfg.criteria.batch,
        hutchinson_probes: cfg.criteria.hutchinson_probes,
        ig_steps: cfg.criteria.ig_steps,
    };
    let run_path = ctx.run_dir().path().to_path_buf();
    let stage = cfg.task.stage.as_str();
    let want_criteria = stage != "dataset";

    // 1. Dataset (and criteria scores), one unit per member.
    let mut measured: Vec<Measured> = Vec::new();
    for m in &zoo {
        let record = ctx.unit(&format!("probe-{}", m.id), |ctx| {
            let (mut net, train_seconds) = trained(m, &data, &ts, &run_path)?;
            let t = Instant::now();
            let (base, fams, probes, ips) = dataset::probe(&mut net, &eval, &g, m.seed);
            let probe_seconds = t.elapsed().as_secs_f64();
            eprintln!(
                "layer-importance: {} base accuracy {base:.4}, {probes} probes in {probe_seconds:.1} s (trained in {train_seconds:.1} s)",
                m.id
            );
            // metrics.jsonl: one line per member (the run's "rounds"), inside the unit so
            // that a resumed run does not log it twice.
            ctx.log_metrics(&serde_json::json!({
                "stage": "probe", "member": m.id, "base_accuracy": base, "probes": probes,
                "train_seconds": train_seconds, "probe_seconds": probe_seconds,
                "eval_images_per_second": ips,
            }))?;
            let (drops, normalized, drop_std) = dataset::split_families(fams);
            Ok(ModelRecord {
                id: m.id.clone(),
                arch: m.spec.arch.clone(),
                width: m.spec.width,
                seed: m.seed,
                layer_names: net.layer_names(),
                layer_params: net.layer_sizes(),
                base_accuracy: base,
                eval_images: eval.labels.len(),
                train_seconds,
                probe_seconds,
                probes,
                eval_images_per_second: ips,
                drops,
                normalized,
                drop_std,
            })
        })?;
        let names = m
            .spec
            .build(&ferrolab_core::backend::device())
            .map_err(SystemError::usage)?
            .layer_names();
        check_record(
            &format!("probe-{}", m.id),
            &record,
            &m.id,
            Some(names.as_slice()),
        )?;
        let scores = if want_criteria {
            ctx.unit(&format!("criteria-{}", m.id), |_| {
                let (net, _) = trained(m, &data, &ts, &run_path)?;
                Ok::<_, SystemError>(criteria::compute(
                    &net,
                    &data.train,
                    data.norm,
                    &eval,
                    &cs,
                    m.seed,
                ))
            })?
        } else {
            Scores::default()
        };
        if want_criteria {
            check_scores(&format!("criteria-{}", m.id), &scores, names.len(), true)?;
        }
        measured.push(Measured {
            record,
            criteria: scores,
        });
    }
    // Cross-domain members: trained, probed and scored in one unit each.
    for name in &cfg.zoo.cross_domain {
        let seed = ferrolab_core::seed::derive(ctx.seed(), &format!("cross-{name}"));
        let data_dir = ctx.data_dir().map(Path::to_path_buf);
        let m: Measured = ctx.unit(&format!("cross-{name}"), |ctx| {
            let m = cross_member(name, data_dir.as_deref(), &g, &cs, seed)?;
            let r = &m.record;
            ctx.log_metrics(&serde_json::json!({
                "stage": "probe", "member": r.id, "base_accuracy": r.base_accuracy,
                "probes": r.probes, "train_seconds": r.train_seconds,
                "probe_seconds": r.probe_seconds,
            }))?;
            Ok(m)
        })?;
        let unit = format!("cross-{name}");
        check_record(&unit, &m.record, name, None)?;
        check_scores(&unit, &m.criteria, m.record.layer_names.len(), false)?;
        measured.push(m);
    }
    let records: Vec<ModelRecord> = measured.iter().map(|m| m.record.clone()).collect();
    let ds = serde_json::json!({
        "version": VERSION,
        "what": "SAfER-style layer sensitivity: accuracy drop when one layer is perturbed",
        "dataset": cfg.data.dataset,
        "eval_images": eval.labels.len(),
        "grid": g,
        "models": records,
    });
    let text = serde_json::to_vec_pretty(&ds).map_err(|e| SystemError::runtime(e.to_string()))?;
    ctx.run_dir().write_file("dataset.json", &text)?;
    ctx.run_dir()
        .write_file("dataset.csv", dataset::to_csv(&records).as_bytes())?;
    let dataset_seconds = clock.elapsed().as_secs_f64();

    let mut r = Report::new("layer-importance", &cfg.data.dataset, ctx.seed());
    r.notes.push(format!(
        "{} zoo members ({}), width ×{}, trained on {} images of {}, probed on {} test images",
        zoo.len(),
        cfg.zoo.archs.join(", "),
        cfg.zoo.width,
        data.train.len(),
        data.source,
        eval.labels.len()
    ));
    let base: Vec<f64> = records.iter().map(|r| r.base_accuracy).collect();
    put(&mut r.metrics, "base_accuracy", &base);
    // Throughput differs by orders of magnitude between architectures; the speed
    // target is on ResNet-20, so only its members are averaged.
    let ips: Vec<f64> = records
        .iter()
        .filter(|r| r.arch == "resnet20")
        .map(|r| r.eval_images_per_second)
        .collect();
    if !ips.is_empty() {
        put(&mut r.metrics, "resnet20_eval_images_per_second", &ips);
    }
    r.timings.insert("dataset_seconds".into(), dataset_seconds);
    let mut details = serde_json::Map::new();
    details.insert(
        "models".into(),
        serde_json::json!(records.iter().map(|r| serde_json::json!({
            "id": r.id, "layers": r.layer_names.len(), "params": r.layer_params.iter().sum::<usize>(),
            "base_accuracy": r.base_accuracy, "train_seconds": r.train_seconds, "probe_seconds": r.probe_seconds,
            "probes": r.probes, "eval_images_per_second": r.eval_images_per_second})).collect::<Vec<_>>()),
    );
    if stage == "dataset" {
        r.details = serde_json::Value::Object(details);
        return Ok(Outcome {
            report: r,
            curves: Vec::new(),
            paper: Vec::new(),
        });
    }

    // 2. Benchmark.
    let t = Instant::now();
    let truths: Vec<BTreeMap<&str, Vec<f64>>> = records
        .iter()
        .map(|rec| FAMILIES.iter().map(|f| (*f, rec.ground_truth(f))).collect())
        .collect();
    // rho[family][criterion][model]
    let mut rho: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut table = serde_json::Map::new();
    let mut heat = Vec::new();
    for c in CRITERIA {
        let mut row = Vec::new();
        let mut crow = serde_json::Map::new();
        for f in FAMILIES {
            let ag: Vec<bench::Agreement> = measured
                .iter()
                .zip(&truths)
                .map(|(m, t)| match m.criteria.scores.get(c) {
                    Some(sc) => agreement(sc, &t[f]),
                    // SynFlow is not defined for the cross-domain members.
                    None => bench::Agreement {
                        spearman: f64::NAN,
                        kendall: f64::NAN,
                        top_precision: f64::NAN,
                    },
                })
                .collect();
            let sp: Vec<f64> = ag.iter().map(|a| a.spearman).collect();
            let kt: Vec<f64> = ag.iter().map(|a| a.kendall).collect();
            let tp: Vec<f64> = ag.iter().map(|a| a.top_precision).collect();
            let (sm, ss) = mean_std(&finite(&sp));
            let (km, ks) = mean_std(&finite(&kt));
            let (pm, pstd) = mean_std(&finite(&tp));
            crow.insert(
                f.into(),
                serde_json::json!({"spearman": sm, "spearman_std": ss, "kendall": km, "kendall_std": ks, "top_precision": pm, "top_precision_std": pstd}),
            );
            rho.entry(f).or_default().insert(c.to_string(), sp);
            row.push(sm);
        }
        let secs: Vec<f64> = measured
            .iter()
            .filter_map(|m| m.criteria.seconds.get(c).copied())
            .collect();
        crow.insert("seconds".into(), serde_json::json!(mean_std(&secs).0));
        table.insert(c.into(), serde_json::Value::Object(crow));
        heat.push(row);
    }
    let svg = bench::heatmap_svg(
        &CRITERIA.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &FAMILIES.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &heat,
    );
    ctx.run_dir().write_file("benchmark.svg", svg.as_bytes())?;
    let mut best_names = serde_json::Map::new();
    for f in FAMILIES {
        if let Some((name, v)) = best_criterion(&rho[f], &CRITERIA, |_| true) {
            r.metrics.insert(format!("best_criterion_spearman_{f}"), v);
            let sp = &rho[f][&name];
            r.metrics.insert(
                format!("best_criterion_spearman_{f}_std"),
                mean_std(&finite(sp)).1,
            );
            best_names.insert(f.into(), serde_json::json!(name));
        }
    }
    ctx.run_dir()
        .write_file("benchmark.md", markdown_table(&table).as_bytes())?;
    details.insert("benchmark".into(), serde_json::Value::Object(table));
    details.insert(
        "best_criterion".into(),
        serde_json::Value::Object(best_names),
    );
    r.timings
        .insert("benchmark_seconds".into(), t.elapsed().as_secs_f64());
    if stage == "benchmark" {
        r.details = serde_json::Value::Object(details);
        return Ok(Outcome {
            report: r,
            curves: Vec::new(),
            paper: Vec::new(),
        });
    }

    // 3. Budgets, one unit per member; criteria chosen leave-one-seed-out.
    let t = Instant::now();
    let mut ours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut base_rows: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut chosen = serde_json::Map::new();
    let mut paired = serde_json::Map::new();
    let mut flip_cost = serde_json::Map::new();
    let mut calibration = serde_json::Map::new();
    let mut vs_uniform = serde_json::Map::new();
    for (i, m) in zoo.iter().enumerate() {
        let others_seed: Vec<usize> = (0..zoo.len())
            .filter(|&j| zoo[j].seed_index != m.seed_index)
            .collect();
        let pool: Vec<usize> = if others_seed.is_empty() {
            (0..zoo.len()).filter(|&j| j != i).collect()
        } else {
            others_seed
        };
        let pick = |f: &str| -> (String, Vec<f64>) {
            let name = best_criterion(&rho[f], &CRITERIA, |j| pool.contains(&j))
                .map_or("random".to_string(), |b| b.0);
            let s = measured[i].criteria.scores[&name].clone();
            (name, s)
        };
        let (pc, ps) = pick("prune");
        let (qc, qs) = pick("quant");
        let (fc, fs) = pick("flip_rate");
        chosen.insert(
            m.id.clone(),
            serde_json::json!({"prune": pc, "quant": qc, "flip": fc}),
        );
        let truth = &truths[i];
        let res: BudgetResult = ctx.unit(&format!("budget-{}", m.id), |ctx| {
            let (net, _) = trained(m, &data, &ts, &run_path)?;
            let res = budgets(
                cfg,
                &net,
                &data,
                &eval,
                (&ps, &qs, &fs),
                (&truth["prune"], &truth["quant"], &truth["flip_rate"]),
                m.seed,
            );
            ctx.log_metrics(&serde_json::json!({
                "stage": "budget", "member": m.id, "ours": res.ours, "baselines": res.baselines,
            }))?;
            Ok::<_, SystemError>(res)
        })?;
        paired.insert(m.id.clone(), serde_json::json!(res.flip_paired));
        flip_cost.insert(m.id.clone(), serde_json::json!(res.flip_cost));
        if !res.calibration.is_empty() {
            calibration.insert(m.id.clone(), serde_json::json!(res.calibration));
        }
        // The target is per member ("beats uniform on every model"): ours − uniform.
        if let Some(u) = res.baselines.get("uniform") {
            let gap: BTreeMap<&String, f64> = res
                .ours
                .iter()
                .filter_map(|(k, v)| u.get(k).map(|w| (k, v - w)))
                .collect();
            vs_uniform.insert(m.id.clone(), serde_json::json!(gap));
        }
        for (k, v) in res.ours {
            ours.entry(k).or_default().push(v);
        }
        for (b, kv) in res.baselines {
            for (k, v) in kv {
                base_rows
                    .entry(match b.as_str() {
                        "uniform" => "uniform",
                        "random" => "random",
                        "largest" => "largest",
                        _ => "oracle",
                    })
                    .or_default()
                    .entry(k)
                    .or_default()
                    .push(v);
            }
        }
    }
    for (k, v) in &ours {
        put(&mut r.metrics, k, v);
    }
    for (b, kv) in &base_rows {
        let e = r.baselines.entry(b.to_string()).or_default();
        for (k, v) in kv {
            put(e, k, v);
        }
    }
    details.insert("budget_criterion".into(), serde_json::Value::Object(chosen));
    details.insert(
        "flip_protection_vs_random".into(),
        serde_json::Value::Object(paired),
    );
    details.insert(
        "flip_cost_unprotected".into(),
        serde_json::Value::Object(flip_cost),
    );
    details.insert(
        "budget_calibration".into(),
        serde_json::Value::Object(calibration),
    );
    details.insert(
        "budget_minus_uniform".into(),
        serde_json::Value::Object(vs_uniform),
    );
    r.timings
        .insert("budget_seconds".into(), t.elapsed().as_secs_f64());
    r.timings
        .insert("total_seconds".into(), clock.elapsed().as_secs_f64());
    r.details = serde_json::Value::Object(details);
    Ok(Outcome {
        report: r,
        curves: Vec::new(),
        paper: Vec::new(),
    })
}

/// The finite values of `v` (a criterion undefined on a member gives NaN there).
fn finite(v: &[f64]) -> Vec<f64> {
    v.iter().copied().filter(|x| x.is_finite()).collect()
}

fn put(m: &mut BTreeMap<String, f64>, key: &str, v: &[f64]) {
    let (mean, std) = mean_std(v);
    m.insert(key.to_string(), mean);
    m.insert(format!("{key}_std"), std);
}

fn markdown_table(table: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut s = String::from("| criterion |");
    for f in FAMILIES {
        s.push_str(&format!(" {f} ρ |"));
    }
    s.push_str(" seconds |\n|---|");
    for _ in FAMILIES {
        s.push_str("---|");
    }
    s.push_str("---|\n");
    for (c, row) in table {
        s.push_str(&format!("| {c} |"));
        for f in FAMILIES {
            let m = row[f]["spearman"].as_f64().unwrap_or(f64::NAN);
            let sd = row[f]["spearman_std"].as_f64().unwrap_or(f64::NAN);
            s.push_str(&format!(" {m:.2} ± {sd:.2} |"));
        }
        s.push_str(&format!(
            " {:.2} |\n",
            row["seconds"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    s
}

/// Budget results of one member: ours (the chosen criterion) and each baseline, by report key.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct BudgetResult {
    ours: BTreeMap<String, f64>,
    baselines: BTreeMap<String, BTreeMap<String, f64>>,
    /// Bit-flip protection, paired by flip seed: `<budget>_ber<rate>` → method → (mean
    /// accuracy gain over random protection, seeds won, tied, lost).
    #[serde(default)]
    flip_paired: BTreeMap<String, BTreeMap<String, Paired>>,
    /// What the flips of each rate do with no layer protected (`ber<rate>` → figures): the
    /// most any protection could save, and how many flips (and sign-bit flips) there were.
    #[serde(default)]
    flip_cost: BTreeMap<String, FlipCost>,
    /// The rule each calibrated budget kept (`<who>_prune_s<s>` / `<who>_quant_b<b>` → score
    /// transform, sharpness and its accuracy on the calibration images); empty without one.
    #[serde(default)]
    calibration: BTreeMap<String, serde_json::Value>,
}

/// The unprotected model under one bit-error rate, over the budget's flip seeds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct FlipCost {
    /// Accuracy with every layer stored as int8 and no flip.
    int8_accuracy: f64,
    /// Accuracy with every layer's flips: mean, 5th percentile and worst over the seeds.
    unprotected_mean_accuracy: f64,
    unprotected_p5_accuracy: f64,
    unprotected_min_accuracy: f64,
    /// Flipped bits per seed, all of them and those that hit bit 7 (the sign).
    flips_mean: f64,
    sign_flips_mean: f64,
    /// Layers that took at least one flip, per seed.
    layers_hit_mean: f64,
}

/// Mean accuracy gain over random protection, and the flip seeds won, tied and lost.
type Paired = (f64, usize, usize, usize);

fn key_num(v: f64) -> String {
    // 0.5 → "50" (sparsity in percent); 4.5 → "4p5".
    format!("{v}").replace('.', "p")
}

fn ber_key(r: f64) -> String {
    let e = r.log10().round() as i32;
    let m = r / 10f64.powi(e);
    if (m - 1.0).abs() < 1e-9 {
        format!("1em{}", -e).replace("1em-", "1e")
    } else {
        format!("{r:e}").replace('-', "m").replace('.', "p")
    }
}

/// The budget stage's calibration images (`budget.calibrate_images` of them, the training
/// subset's last ones; the fine-tune reads its first), or `None` when calibration is off.
pub fn calibration_set(cfg: &LayerImportanceConfig, data: &Data) -> Option<EvalSet> {
    (cfg.budget.calibrate_images > 0).then(|| {
        let n = data.train.len();
        let k = cfg.budget.calibrate_images.min(n);
        let idx: Vec<usize> = (n - k..n).collect();
        EvalSet::new(&data.train.subset(&idx), data.norm, cfg.data.eval_batch)
    })
}

/// Prunes `counts[l]` weights of each layer by magnitude; returns the masks (`true` = pruned)
/// that keep them at zero through a fine-tune.
pub fn prune_model(net: &mut ZooNet, counts: &[usize]) -> Vec<Option<Vec<bool>>> {
    let mut masks = Vec::new();
    for (l, &k) in counts.iter().enumerate() {
        let w = ops::prune_count(&net.layer(l).weight, k);
        masks.push(Some(w.iter().map(|v| *v == 0.0).collect()));
        net.set_layer_weight(l, &w);
    }
    masks
}

fn percentile5(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let k = ((0.05 * v.len() as f64).ceil() as usize).max(1) - 1;
    v.get(k).copied().unwrap_or(f64::NAN)
}

/// A budget's allocation: without calibration images the configured rule's; with them, that of
/// the candidate rule whose model is most accurate there (ties: the first; no candidates: the
/// configured rule), returned with that accuracy.
fn pick_rule<R: Copy, A>(
    configured: R,
    candidates: &[R],
    build: impl Fn(R) -> A,
    model: impl Fn(&A) -> &ZooNet,
    calib: Option<&EvalSet>,
) -> (A, Option<(R, f64)>) {
    let Some(cal) = calib else {
        return (build(configured), None);
    };
    let mut best: Option<(A, R, f64)> = None;
    for &r in candidates {
        let a = build(r);
        let acc = cal.accuracy(model(&a));
        if best.as_ref().is_none_or(|(_, _, b)| acc > *b) {
            best = Some((a, r, acc));
        }
    }
    match best {
        Some((a, r, acc)) => (a, Some((r, acc))),
        None => (build(configured), None),
    }
}

#[allow(clippy::too_many_arguments)]
fn budgets(
    cfg: &LayerImportanceConfig,
    net: &ZooNet,
    data: &Data,
    eval: &EvalSet,
    (ps, qs, fs): (&[f64], &[f64], &[f64]),
    (pt, qt, flip_truth): (&[f64], &[f64], &[f64]),
    seed: u64,
) -> BudgetResult {
    let mut out = BudgetResult::default();
    let b = &cfg.budget;
    let sizes = net.layer_sizes();
    let nl = sizes.len();
    let channels: Vec<usize> = (0..nl).map(|l| net.layer(l).out_channels).collect();
    let ft_set = data.train.head(b.finetune_images);
    let ft = TrainSettings {
        epochs: b.finetune_epochs,
        batch_size: cfg.zoo.batch_size,
        lr: b.finetune_lr,
        weight_decay: cfg.zoo.weight_decay,
    };
    let mut record = |who: &str, key: String, v: f64| {
        if who == "ours" {
            out.ours.insert(key, v);
        } else {
            out.baselines
                .entry(who.to_string())
                .or_default()
                .insert(key, v);
        }
    };
    // With `per_weight`, a layer's score becomes its cost per weight: the single-layer drop
    // of a large layer at a fixed fraction removes many weights, so at a global budget it
    // need not be the layer to spare (measured on the MLP: fc1, 86% of the weights, has the
    // largest drop; ranked by the drop alone the classifier is pruned to the cap).
    let density = |v: &[f64], per_weight: bool| -> Vec<f64> {
        if per_weight {
            v.iter()
                .zip(&sizes)
                .map(|(x, n)| x / (*n).max(1) as f64)
                .collect()
        } else {
            v.to_vec()
        }
    };
    // The calibration images are the training subset's last ones (the fine-tune reads its
    // first): how strongly a score should move a budget depends on the model (a sharp rule
    // that helps a CNN with 20 layers of mixed sizes lost 47 points on the three-layer MLP),
    // so the rule's strength is measured, on data the evaluation never sees.
    let calib = calibration_set(cfg, data);
    // Candidates of the calibrated budgets: (score transform, sharpness) for pruning, the score
    // transform for bits.
    let prune_rules: Vec<(bool, f64)> = [false, true]
        .iter()
        .flat_map(|&pw| b.sharpness_grid.iter().map(move |&k| (pw, k)))
        .collect();
    // (a) pruning.
    let pruned = |counts: &[usize]| {
        let mut m = net.clone();
        let masks = prune_model(&mut m, counts);
        (m, masks)
    };
    for &s in &b.sparsities {
        let sk = key_num((s * 100.0).round());
        for (who, scores) in [("uniform", None), ("ours", Some(ps)), ("oracle", Some(pt))] {
            let ((m, masks), rule) = match scores {
                None => (pruned(&budget::prune_counts(&sizes, pt, s, 0.0)), None),
                Some(sc) => pick_rule(
                    (b.per_weight, b.sharpness),
                    &prune_rules,
                    |(pw, k)| pruned(&budget::prune_counts(&sizes, &density(sc, pw), s, k)),
                    |(m, _)| m,
                    calib.as_ref(),
                ),
            };
            if let Some(((pw, k), a)) = rule {
                out.calibration.insert(
                    format!("{who}_prune_s{sk}"),
                    serde_json::json!({"per_weight": pw, "sharpness": k, "calibration_accuracy": a}),
                );
            }
            record(who, format!("prune_s{sk}_accuracy"), eval.accuracy(&m));
            let tuned =
                train::fit(to_train(&m), &ft_set, data.norm, &ft, seed, Some(&masks)).valid();
            record(
                who,
                format!("prune_s{sk}_ft_accuracy"),
                eval.accuracy(&tuned),
            );
        }
    }
    // (b) mixed precision.
    let quantized = |bits: &[Vec<u32>]| -> ZooNet {
        let mut m = net.clone();
        for (l, lb) in bits.iter().enumerate() {
            let lw = m.layer(l);
            if let Ok(w) = ops::fake_quantize_channels(&lw, lb) {
                m.set_layer_weight(l, &w);
            }
        }
        m
    };
    for &avg in &b.avg_bits {
        let bk = key_num(avg);
        for (who, scores) in [("uniform", None), ("ours", Some(qs)), ("oracle", Some(qt))] {
            let (m, rule) = match scores {
                None => (
                    quantized(&budget::quant_bits(&sizes, &channels, None, avg, 2)),
                    None,
                ),
                Some(sc) => pick_rule(
                    b.per_weight,
                    &[false, true],
                    |pw| {
                        quantized(&budget::quant_bits(
                            &sizes,
                            &channels,
                            Some(&density(sc, pw)),
                            avg,
                            2,
                        ))
                    },
                    |m| m,
                    calib.as_ref(),
                ),
            };
            if let Some((pw, a)) = rule {
                out.calibration.insert(
                    format!("{who}_quant_b{bk}"),
                    serde_json::json!({"per_weight": pw, "calibration_accuracy": a}),
                );
            }
            record(who, format!("quant_b{bk}_accuracy"), eval.accuracy(&m));
        }
    }
    // (c) protection against bit flips: every layer stored as int8, flips on unprotected ones.
    let stored: Vec<(Int8Layer, Vec<f32>, crate::ops::LayerWeights)> = (0..nl)
        .map(|l| {
            let lw = net.layer(l);
            let s = Int8Layer::store(&lw);
            let d = s.dequantize(&lw);
            (s, d, lw)
        })
        .collect();
    let mut q = net.clone();
    for (l, (_, d, _)) in stored.iter().enumerate() {
        q.set_layer_weight(l, d);
    }
    let int8_acc = eval.accuracy(&q);
    record("ours", "int8_accuracy".into(), int8_acc);
    let by_size: Vec<f64> = sizes.iter().map(|&n| n as f64).collect();
    let budgets_b: Vec<(String, usize)> = vec![
        ("top1".into(), 1),
        ("top2".into(), 2.min(nl)),
        ("topq".into(), nl.div_ceil(4)),
    ];
    let mut flip_paired: BTreeMap<String, BTreeMap<String, Paired>> = BTreeMap::new();
    for &ber in &b.flip_rates {
        let bk = ber_key(ber);
        // results[(bname, who)] = accuracies over seeds
        let mut acc: BTreeMap<(String, &str), Vec<f64>> = BTreeMap::new();
        let (mut unprotected, mut n_flips, mut n_sign, mut n_hit) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..b.flip_seeds {
            let flips: Vec<Vec<u64>> = (0..nl)
                .map(|l| {
                    let s =
                        ferrolab_core::seed::derive(seed, &format!("budget-flip-{l}-{ber}-{r}"));
                    ops::flip_positions_rate(stored[l].0.bits(), ber, s).unwrap_or_default()
                })
                .collect();
            let mut cache: BTreeMap<Vec<usize>, f64> = BTreeMap::new();
            // Accuracy with the flips of the `hit` layers (the others int8 as stored); the
            // same hit set is evaluated once per seed whichever method protected it.
            let mut with_flips = |hit: Vec<usize>| -> f64 {
                if hit.is_empty() {
                    return int8_acc;
                }
                if let Some(a) = cache.get(&hit) {
                    return *a;
                }
                let mut m = q.clone();
                for &l in &hit {
                    let mut c = stored[l].0.clone();
                    c.flip(&flips[l]);
                    m.set_layer_weight(l, &c.dequantize(&stored[l].2));
                }
                let a = eval.accuracy(&m);
                cache.insert(hit, a);
                a
            };
            let all_hit: Vec<usize> = (0..nl).filter(|l| !flips[*l].is_empty()).collect();
            n_hit.push(all_hit.len() as f64);
            n_flips.push(flips.iter().map(Vec::len).sum::<usize>() as f64);
            n_sign.push(flips.iter().flatten().filter(|p| **p % 8 == 7).count() as f64);
            unprotected.push(with_flips(all_hit));
            let mut rrng = rand::rngs::StdRng::seed_from_u64(ferrolab_core::seed::derive(
                seed,
                &format!("budget-random-{ber}-{r}"),
            ));
            let mut perm: Vec<usize> = (0..nl).collect();
            perm.shuffle(&mut rrng);
            for (bname, k) in &budgets_b {
                for (who, prot) in [
                    ("ours", bench::top_k(fs, *k)),
                    ("random", perm[..*k].to_vec()),
                    ("largest", bench::top_k(&by_size, *k)),
                    ("oracle", bench::top_k(flip_truth, *k)),
                ] {
                    let hit: Vec<usize> = (0..nl)
                        .filter(|l| !prot.contains(l) && !flips[*l].is_empty())
                        .collect();
                    let a = with_flips(hit);
                    acc.entry((bname.clone(), who)).or_default().push(a);
                }
            }
        }
        for (bname, _) in &budgets_b {
            let Some(rnd) = acc.get(&(bname.clone(), "random")) else {
                continue;
            };
            for who in ["ours", "largest", "oracle"] {
                if let Some(v) = acc.get(&(bname.clone(), who)) {
                    let d: Vec<f64> = v.iter().zip(rnd).map(|(a, b)| a - b).collect();
                    let won = d.iter().filter(|x| **x > 0.0).count();
                    let lost = d.iter().filter(|x| **x < 0.0).count();
                    flip_paired
                        .entry(format!("{bname}_ber{bk}"))
                        .or_default()
                        .insert(
                            who.to_string(),
                            (mean_std(&d).0, won, d.len() - won - lost, lost),
                        );
                }
            }
        }
        out.flip_cost.insert(
            format!("ber{bk}"),
            FlipCost {
                int8_accuracy: int8_acc,
                unprotected_mean_accuracy: mean_std(&unprotected).0,
                unprotected_p5_accuracy: percentile5(&mut unprotected.clone()),
                unprotected_min_accuracy: unprotected.iter().copied().fold(f64::NAN, f64::min),
                flips_mean: mean_std(&n_flips).0,
                sign_flips_mean: mean_std(&n_sign).0,
                layers_hit_mean: mean_std(&n_hit).0,
            },
        );
        for ((bname, who), mut v) in acc {
            let mean = mean_std(&v).0;
            record(who, format!("flip_{bname}_ber{bk}_mean_accuracy"), mean);
            record(
                who,
                format!("flip_{bname}_ber{bk}_p5_accuracy"),
                percentile5(&mut v),
            );
        }
    }
    out.flip_paired = flip_paired;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_key_spelling() {
        assert_eq!(key_num((0.5f64 * 100.0).round()), "50");
        assert_eq!(key_num(4.5), "4p5");
        assert_eq!(ber_key(1e-5), "1em5");
        assert_eq!(ber_key(1e-4), "1em4");
        assert_eq!(ber_key(1e-3), "1em3");
        let mut v = vec![0.5, 0.1, 0.9];
        assert_eq!(percentile5(&mut v), 0.1);
    }
}
