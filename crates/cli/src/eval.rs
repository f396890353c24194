//! `ferrolab eval coco` and `ferrolab eval seg`: the detection and segmentation metrics of
//! `ferrolab_vision::metrics` on files, as drop-ins for pycocotools' `COCOeval` (bbox) and
//! medpy 0.5.2's `dc` / `jc` / `hd95`. Results go to stdout as one JSON object, a readable table
//! to stderr; any bad input is one `error:` line naming the file (and index) with exit 2.
//!
//! Segmentation inputs: files ending `.npz` or `.png` in `--label DIR`, each paired with the file
//! of the same name in `--pred DIR`. From an npz the array read is `label` in a label file and
//! `pred` in a prediction file; failing that `label` (predictions saved in the label format),
//! then the archive's first array. Arrays are 2-D (H, W) or 3-D (D, H, W) of integer class
//! values (whole-valued floats are accepted); PNGs are read as masks (gray or palette sample
//! values, see `ferrolab_data::image::read_png_mask`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ferrolab_data::image::read_png_mask;
use ferrolab_data::npz::Npz;
use ferrolab_vision::metrics::coco::{self, CocoGt};
use ferrolab_vision::metrics::seg::{self, ClassScore, SegAccumulator};
use serde_json::{Map, Value, json};

use crate::common::UsageError;

/// Arguments of `ferrolab eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

/// Sub-commands of `ferrolab eval`.
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// COCO box detection metrics as pycocotools' COCOeval (bbox): the 12 summary numbers as
    /// JSON on stdout (ap, ap50, ap75, ap_small, ap_medium, ap_large, ar1, ar10, ar100,
    /// ar_small, ar_medium, ar_large), the summary and per-class AP on stderr.
    Coco(CocoArgs),
    /// Segmentation Dice, IoU and HD95 per class as medpy 0.5.2 (connectivity 1, scaled by
    /// voxel spacing), averaged over volumes, as JSON on stdout.
    Seg(SegArgs),
}

/// Arguments of `ferrolab eval coco`.
#[derive(Args, Debug)]
pub struct CocoArgs {
    /// Ground truth in COCO format (images, annotations, categories).
    #[arg(long, value_name = "GT.json")]
    pub gt: PathBuf,
    /// Detections: a COCO results list [{image_id, category_id, bbox: [x, y, w, h], score}].
    #[arg(long, value_name = "DETECTIONS.json")]
    pub dt: PathBuf,
    /// Also put each category's AP@[.5:.95] into the JSON, as "per_class_ap": {"<id>": ap}.
    #[arg(long)]
    pub per_class: bool,
}

/// Arguments of `ferrolab eval seg`.
#[derive(Args, Debug)]
pub struct SegArgs {
    /// Folder of predicted masks (.npz or .png), named as their label files.
    #[arg(long, value_name = "DIR")]
    pub pred: PathBuf,
    /// Folder of ground-truth masks (.npz or .png).
    #[arg(long, value_name = "DIR")]
    pub label: PathBuf,
    /// Class values to score (default: every non-zero value found in the labels).
    #[arg(long, value_name = "1,2,3", value_delimiter = ',')]
    pub classes: Option<Vec<i64>>,
    /// Voxel spacing in array-axis order (z,y,x for volumes, y,x for slices; default 1 per
    /// axis, i.e. HD95 in pixels). One number applies to every axis; three numbers for a 2-D
    /// mask use the last two.
    #[arg(long, value_name = "z,y,x", value_delimiter = ',')]
    pub spacing: Option<Vec<f64>>,
}

/// Runs `ferrolab eval ...`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    match &args.command {
        EvalCommand::Coco(a) => run_coco(a),
        EvalCommand::Seg(a) => run_seg(a),
    }
}

fn run_coco(a: &CocoArgs) -> anyhow::Result<()> {
    let gt = CocoGt::from_json_file(&a.gt)?;
    let dets = coco::detections_from_json_file(&a.dt, &gt)?;
    let ev = coco::evaluate(&gt, &dets);
    // Written by hand so that the keys keep pycocotools' `stats` order (serde_json's map sorts).
    let mut fields: Vec<String> = ev
        .stats_named()
        .iter()
        .map(|(k, v)| format!("  \"{k}\": {}", json!(v)))
        .collect();
    let per_class = ev.per_class_ap();
    if a.per_class {
        let m: Map<String, Value> = per_class
            .iter()
            .map(|(id, ap)| (id.to_string(), json!(ap)))
            .collect();
        fields.push(format!("  \"per_class_ap\": {}", Value::Object(m)));
    }
    let mut table = ev.summary_table();
    let names: std::collections::HashMap<i64, &str> = gt
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    table.push_str("per-class AP@[.5:.95] (-1: no ground truth):\n");
    for (id, ap) in &per_class {
        let name = names.get(id).copied().unwrap_or("");
        table.push_str(&format!("  {id:>6} {name:<24} {ap:>7.3}\n"));
    }
    let lo = ev.left_out;
    let dropped = [
        (
            lo.annotations_unknown_image,
            "annotations name an image not listed",
        ),
        (
            lo.annotations_unknown_category,
            "annotations name a category not listed",
        ),
        (
            lo.detections_unknown_category,
            "detections name a category not listed",
        ),
    ];
    for (n, what) in dropped {
        if n > 0 {
            table.push_str(&format!(
                "note: {n} {what}; left out, as pycocotools does\n"
            ));
        }
    }
    eprint!("{table}");
    println!("{{\n{}\n}}", fields.join(",\n"));
    Ok(())
}

/// One mask: class values and the array shape.
struct Volume {
    shape: Vec<usize>,
    data: Vec<i64>,
}

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

/// Mask files (`.npz`, `.png`) of a folder, by file name.
fn mask_files(dir: &Path, flag: &str) -> anyhow::Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        usage(format!(
            "{flag} {}: cannot list the folder: {e}",
            dir.display()
        ))
    })?;
    let mut names = Vec::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| usage(format!("{flag} {}: cannot list: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".npz") || lower.ends_with(".png") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn read_volume(path: &Path, preferred: &str) -> anyhow::Result<Volume> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        let m = read_png_mask(path)?;
        return Ok(Volume {
            shape: vec![m.height, m.width],
            data: m.data.into_iter().map(i64::from).collect(),
        });
    }
    let mut npz = Npz::open(path)?;
    let key = [preferred, "label"]
        .into_iter()
        .find(|k| npz.contains(k))
        .map(str::to_string)
        .or_else(|| npz.keys().first().cloned())
        .ok_or_else(|| {
            usage(format!(
                "{}: the npz archive holds no array",
                path.display()
            ))
        })?;
    let arr = npz.get(&key)?;
    if !(2..=3).contains(&arr.shape.len()) {
        return Err(arr
            .error(
                "shape",
                format!(
                    "expected a 2-D (H, W) or 3-D (D, H, W) mask, found shape {:?}",
                    arr.shape
                ),
            )
            .into());
    }
    Ok(Volume {
        shape: arr.shape.clone(),
        data: arr.to_i64_vec()?,
    })
}

/// The spacing for a mask of `ndim` axes (see `SegArgs::spacing`).
fn spacing_for(given: Option<&[f64]>, ndim: usize) -> anyhow::Result<Vec<f64>> {
    let s = match given {
        None => vec![1.0; ndim],
        Some([one]) => vec![*one; ndim],
        Some(v) if v.len() >= ndim => v[v.len() - ndim..].to_vec(),
        Some(v) => {
            return Err(usage(format!(
                "--spacing has {} numbers but the masks are {ndim}-D",
                v.len()
            )));
        }
    };
    Ok(s)
}

fn run_seg(a: &SegArgs) -> anyhow::Result<()> {
    if let Some(s) = &a.spacing
        && (s.is_empty() || s.len() > 3 || s.iter().any(|v| !(v.is_finite() && *v > 0.0)))
    {
        return Err(usage(format!(
            "--spacing {s:?}: expected 1 to 3 positive numbers (z,y,x)"
        )));
    }
    if let Some(c) = &a.classes
        && c.is_empty()
    {
        return Err(usage("--classes is empty".into()));
    }
    let labels = mask_files(&a.label, "--label")?;
    let preds = mask_files(&a.pred, "--pred")?;
    if labels.is_empty() {
        return Err(usage(format!(
            "--label {}: no .npz or .png files",
            a.label.display()
        )));
    }
    let label_set: BTreeSet<&String> = labels.iter().collect();
    if let Some(extra) = preds.iter().find(|p| !label_set.contains(p)) {
        return Err(usage(format!(
            "{}: no label file of the same name in {}",
            a.pred.join(extra).display(),
            a.label.display()
        )));
    }
    let pred_set: BTreeSet<&String> = preds.iter().collect();
    let mut per_volume: Vec<Vec<(i64, Option<ClassScore>)>> = Vec::with_capacity(labels.len());
    let mut found: BTreeSet<i64> = BTreeSet::new();
    for name in &labels {
        let (lp, pp) = (a.label.join(name), a.pred.join(name));
        if !pred_set.contains(name) {
            return Err(usage(format!(
                "{}: no prediction file of the same name in {}",
                lp.display(),
                a.pred.display()
            )));
        }
        let label = read_volume(&lp, "label")?;
        let pred = read_volume(&pp, "pred")?;
        if label.shape != pred.shape {
            return Err(usage(format!(
                "{}: mask shape {:?} differs from its label {} {:?}",
                pp.display(),
                pred.shape,
                lp.display(),
                label.shape
            )));
        }
        let spacing = spacing_for(a.spacing.as_deref(), label.shape.len())?;
        let present: BTreeSet<i64> = label.data.iter().copied().filter(|&v| v != 0).collect();
        let classes: Vec<i64> = match &a.classes {
            Some(c) => c.clone(),
            None => present.iter().copied().collect(),
        };
        found.extend(&present);
        let mut scores = Vec::with_capacity(classes.len());
        for c in classes {
            let s = seg::class_score(&pred.data, &label.data, &label.shape, &spacing, c)
                .map_err(|e| usage(format!("{}: {e}", pp.display())))?;
            scores.push((c, s));
        }
        per_volume.push(scores);
    }
    let classes: Vec<i64> = match &a.classes {
        Some(c) => c.clone(),
        None => found.into_iter().collect(),
    };
    let mut acc = SegAccumulator::new(&classes);
    for s in &per_volume {
        acc.add_scores(s);
    }
    let out = acc.to_json();
    let fmt = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
    let mut table = format!(
        "{} volumes, {} (volume, class) pairs skipped (class absent from the label)\n{:>8} {:>8} {:>8} {:>8} {:>10}\n",
        labels.len(),
        acc.skipped(),
        "class",
        "volumes",
        "dice",
        "iou",
        "hd95"
    );
    for c in &classes {
        let e = &out[c.to_string()];
        table.push_str(&format!(
            "{c:>8} {:>8} {:>8} {:>8} {:>10}\n",
            e["volumes"],
            fmt(&e["dice"]),
            fmt(&e["iou"]),
            fmt(&e["hd95"])
        ));
    }
    let m = &out["mean"];
    table.push_str(&format!(
        "{:>8} {:>8} {:>8} {:>8} {:>10}\n",
        "mean",
        "",
        fmt(&m["dice"]),
        fmt(&m["iou"]),
        fmt(&m["hd95"])
    ));
    eprint!("{table}");
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
