//! COCO box detection evaluation, number for number as pycocotools' `COCOeval(iouType="bbox")`
//! (`evaluate`, `accumulate`, `summarize`), and the mAP@0.5 the detector's training reports.
//!
//! The reference is `PythonAPI/pycocotools/cocoeval.py` (pycocotools 2.0.x) with
//! `common/maskApi.c::bbIou`. The behaviour reproduced, because each changes numbers:
//! - 10 IoU thresholds `np.linspace(.5, .95, 10)` and 101 recall thresholds
//!   `np.linspace(0, 1, 101)`, computed with NumPy's formula (`i * step + start`) so that
//!   `searchsorted` sees the very same floats; precision is made monotone (the envelope) before
//!   it is read at the recall thresholds, and a threshold beyond the last recall reads 0.
//! - maxDets 1/10/100: per image and category only the 100 best-scored detections exist at all;
//!   1 and 10 are prefixes of that list.
//! - Area ranges all/small/medium/large `[0, 1e10] [0, 32²] [32², 96²] [96², 1e10]`, both ends
//!   inclusive, by a ground truth's `area` field (not w·h) and by a detection's w·h.
//! - `iscrowd` ground truth is ignored, may be matched any number of times, and its IoU divides
//!   by the detection's area only. The `ignore` field is overwritten by `iscrowd`, as there.
//! - Score order is a stable sort on −score: ties keep file order within an image, then image-id
//!   order across images (the order pycocotools concatenates them in).
//! - Greedy matching at each threshold: ground truth sorted non-ignored first, the best IoU
//!   ≥ threshold wins (a later equal IoU replaces an earlier one), a detection that found a
//!   regular match stops at the first ignored ground truth.
//! - Categories or area ranges with no non-ignored ground truth give −1, and the 12 `stats` are
//!   means over the entries that are not −1.
//! - One quirk kept on purpose: pycocotools stores a match as the ground truth's id, so a match
//!   to an annotation with id 0 counts as no match. Real COCO ids start at 1.
//!
//! Inputs not in pycocotools' happy path: a detection naming an image absent from the ground
//! truth is an error (pycocotools asserts); detections or annotations naming a category or
//! annotations naming an image not listed are left out (as pycocotools' id filters do), and
//! counted in [`CocoEval::left_out`]. A missing `area` falls back to w·h, a missing `iscrowd`
//! to 0 and a missing annotation `id` to its 1-based position (pycocotools would raise).
//!
//! Cost: one pass that groups boxes by (category, image) with a sort, IoUs only inside a group,
//! and one score sort per category; nothing loops over empty (category, area, image) cells,
//! which is where pycocotools spends most of its time on large sets.

use std::collections::HashMap;
use std::path::Path;

use ferrolab_data::DataError;
use rayon::prelude::*;
use serde::Deserialize;

/// IoU thresholds: `T` = 10.
pub const NUM_IOU: usize = 10;
/// Recall thresholds: `R` = 101.
pub const NUM_REC: usize = 101;
/// Area ranges: all, small, medium, large.
pub const NUM_AREA: usize = 4;
/// Detection caps per image and category.
pub const MAX_DETS: [usize; 3] = [1, 10, 100];
/// Area range labels in pycocotools' order.
pub const AREA_LABELS: [&str; NUM_AREA] = ["all", "small", "medium", "large"];
/// Area ranges (inclusive at both ends), in squared pixels.
pub const AREA_RANGES: [(f64, f64); NUM_AREA] =
    [(0.0, 1e10), (0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)];
/// Names of the 12 summary numbers, in pycocotools' `stats` order.
pub const STAT_KEYS: [&str; 12] = [
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
];

const NUM_MAXDET: usize = MAX_DETS.len();
const TOP: usize = MAX_DETS[NUM_MAXDET - 1];

/// `np.linspace(start, stop, num)`: NumPy multiplies the index by the step and then adds the
/// start, and pins the last point to `stop`; the same operations give the same floats.
fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    let mut out = [0.0; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    out[N - 1] = stop;
    out
}

/// The IoU thresholds .50:.05:.95 as pycocotools holds them.
pub fn iou_thresholds() -> [f64; NUM_IOU] {
    linspace::<NUM_IOU>(0.5, 0.95)
}

/// The recall thresholds 0:.01:1 as pycocotools holds them.
pub fn recall_thresholds() -> [f64; NUM_REC] {
    linspace::<NUM_REC>(0.0, 1.0)
}

/// One ground-truth box.
#[derive(Debug, Clone, PartialEq)]
pub struct GtAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// Decides the area range (COCO stores the mask area here, which is not w·h).
    pub area: f64,
    pub iscrowd: bool,
}

impl GtAnnotation {
    /// A regular (non-crowd) box whose area is w·h.
    pub fn from_box(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4]) -> Self {
        GtAnnotation {
            id,
            image_id,
            category_id,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd: false,
        }
    }
}

/// One detection, as in a COCO results file.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    pub score: f64,
}

/// A category as listed in the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    pub id: i64,
    pub name: String,
}

/// COCO ground truth: the evaluated images and categories, and the boxes.
#[derive(Debug, Clone, Default)]
pub struct CocoGt {
    /// Image ids; every one is evaluated, with or without boxes.
    pub images: Vec<i64>,
    pub categories: Vec<Category>,
    pub annotations: Vec<GtAnnotation>,
}

// ---------------------------------------------------------------------------------------------
// JSON

#[derive(Deserialize)]
struct RawGt {
    images: Vec<RawImage>,
    #[serde(default)]
    annotations: Vec<RawAnn>,
    categories: Vec<RawCat>,
}

#[derive(Deserialize)]
struct RawImage {
    id: i64,
}

#[derive(Deserialize)]
struct RawCat {
    id: i64,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RawAnn {
    id: Option<i64>,
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    area: Option<f64>,
    #[serde(default, deserialize_with = "crowd_flag")]
    iscrowd: bool,
}

/// COCO writes `iscrowd` as 0/1, some converters as booleans; read either without buffering
/// (an untagged enum would copy every value first).
fn crowd_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("0, 1 or a boolean")
        }
        fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_u64<E>(self, v: u64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_f64<E>(self, v: f64) -> Result<bool, E> {
            Ok(v != 0.0)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
struct RawDet {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    score: f64,
}

fn malformed(path: &Path, at: impl Into<String>, msg: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        at: at.into(),
        msg: msg.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A FIFO or device would block or never end; a folder gives a less clear OS message.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    std::fs::read(path).map_err(io)
}

fn json_error(path: &Path, e: &serde_json::Error) -> DataError {
    malformed(
        path,
        format!("line {} column {}", e.line(), e.column()),
        format!("not COCO JSON: {e}"),
    )
}

fn check_box(path: &Path, at: &dyn Fn() -> String, b: &[f64; 4]) -> Result<(), DataError> {
    if b.iter().any(|v| !v.is_finite()) {
        return Err(malformed(path, at(), format!("bbox {b:?} is not finite")));
    }
    if b[2] < 0.0 || b[3] < 0.0 {
        return Err(malformed(
            path,
            at(),
            format!("bbox {b:?} has a negative size (w={}, h={})", b[2], b[3]),
        ));
    }
    Ok(())
}

impl CocoGt {
    /// Reads a COCO ground-truth file (`images`, `annotations`, `categories`; other keys and
    /// fields such as segmentations are skipped).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        Self::from_json_slice(&read_file(path)?, path)
    }

    /// Parses ground-truth JSON; `path` names the source in errors.
    pub fn from_json_slice(bytes: &[u8], path: &Path) -> Result<Self, DataError> {
        let raw: RawGt = serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))?;
        let mut annotations = Vec::with_capacity(raw.annotations.len());
        for (i, a) in raw.annotations.into_iter().enumerate() {
            let at = || format!("annotations[{i}]");
            check_box(path, &at, &a.bbox)?;
            let area = a.area.unwrap_or(a.bbox[2] * a.bbox[3]);
            if !area.is_finite() {
                return Err(malformed(path, at(), format!("area {area} is not finite")));
            }
            annotations.push(GtAnnotation {
                id: a.id.unwrap_or(i as i64 + 1),
                image_id: a.image_id,
                category_id: a.category_id,
                bbox: a.bbox,
                area,
                iscrowd: a.iscrowd,
            });
        }
        Ok(CocoGt {
            images: raw.images.into_iter().map(|i| i.id).collect(),
            categories: raw
                .categories
                .into_iter()
                .map(|c| Category {
                    id: c.id,
                    name: c.name,
                })
                .collect(),
            annotations,
        })
    }
}

/// Reads a COCO results file: a list of `{image_id, category_id, bbox, score}`. Every image id
/// must be one of `gt`'s images (pycocotools asserts the same); boxes must have w, h ≥ 0.
pub fn detections_from_json_file(
    path: impl AsRef<Path>,
    gt: &CocoGt,
) -> Result<Vec<Detection>, DataError> {
    let path = path.as_ref();
    detections_from_json_slice(&read_file(path)?, path, gt)
}

/// Parses a results list; `path` names the source in errors.
pub fn detections_from_json_slice(
    bytes: &[u8],
    path: &Path,
    gt: &CocoGt,
) -> Result<Vec<Detection>, DataError> {
    let raw: Vec<RawDet> = serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))?;
    let images: std::collections::HashSet<i64> = gt.images.iter().copied().collect();
    let mut out = Vec::with_capacity(raw.len());
    for (i, d) in raw.into_iter().enumerate() {
        let at = || format!("detection [{i}]");
        check_box(path, &at, &d.bbox)?;
        if !d.score.is_finite() {
            return Err(malformed(
                path,
                at(),
                format!("score {} is not finite", d.score),
            ));
        }
        if !images.contains(&d.image_id) {
            return Err(malformed(
                path,
                at(),
                format!(
                    "image_id {} is not an image of the ground truth",
                    d.image_id
                ),
            ));
        }
        out.push(Detection {
            image_id: d.image_id,
            category_id: d.category_id,
            bbox: d.bbox,
            score: d.score,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// The accumulated evaluation: pycocotools' `eval["precision"]`, `eval["recall"]` and
/// `stats`.
#[derive(Debug, Clone)]
pub struct CocoEval {
    /// Sorted unique category ids: index `k` of the arrays.
    pub cat_ids: Vec<i64>,
    /// `[T][R][K][A][M]`, −1 where a category has no non-ignored ground truth in that range.
    pub precision: Vec<f64>,
    /// `[T][K][A][M]`, −1 likewise.
    pub recall: Vec<f64>,
    /// The 12 summary numbers in [`STAT_KEYS`] order.
    pub stats: [f64; 12],
    /// Inputs that pycocotools' filters would drop: (annotations, detections) naming a category
    /// not listed, or (annotations) an image not listed.
    pub left_out: LeftOut,
}

/// What [`evaluate`] did not evaluate, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub annotations_unknown_image: usize,
    pub annotations_unknown_category: usize,
    pub detections_unknown_category: usize,
    pub detections_unknown_image: usize,
}

impl CocoEval {
    fn pidx(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        let kk = self.cat_ids.len();
        (((t * NUM_REC + r) * kk + k) * NUM_AREA + a) * NUM_MAXDET + m
    }

    /// `precision[t, r, k, a, m]`.
    pub fn precision_at(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> f64 {
        self.precision[self.pidx(t, r, k, a, m)]
    }

    /// `recall[t, k, a, m]`.
    pub fn recall_at(&self, t: usize, k: usize, a: usize, m: usize) -> f64 {
        self.recall[((t * self.cat_ids.len() + k) * NUM_AREA + a) * NUM_MAXDET + m]
    }

    /// AP@[.5:.95] of each category (area all, 100 detections), −1 for a category without
    /// ground truth: the per-class table detectron2 and mmdetection print from the same array.
    pub fn per_class_ap(&self) -> Vec<(i64, f64)> {
        (0..self.cat_ids.len())
            .map(|k| {
                let vals = (0..NUM_IOU).flat_map(|t| {
                    (0..NUM_REC).map(move |r| self.precision_at(t, r, k, 0, NUM_MAXDET - 1))
                });
                (self.cat_ids[k], mean_valid(vals))
            })
            .collect()
    }

    /// AP at IoU .5 (area all, 100 detections): `stats[1]`.
    pub fn map50(&self) -> f64 {
        self.stats[1]
    }

    /// The 12 numbers with their [`STAT_KEYS`] names.
    pub fn stats_named(&self) -> Vec<(&'static str, f64)> {
        STAT_KEYS.iter().copied().zip(self.stats).collect()
    }

    /// The summary as pycocotools' `summarize()` prints it.
    pub fn summary_table(&self) -> String {
        let rows: [(bool, &str, &str, usize); 12] = [
            (true, "0.50:0.95", "all", 100),
            (true, "0.50", "all", 100),
            (true, "0.75", "all", 100),
            (true, "0.50:0.95", "small", 100),
            (true, "0.50:0.95", "medium", 100),
            (true, "0.50:0.95", "large", 100),
            (false, "0.50:0.95", "all", 1),
            (false, "0.50:0.95", "all", 10),
            (false, "0.50:0.95", "all", 100),
            (false, "0.50:0.95", "small", 100),
            (false, "0.50:0.95", "medium", 100),
            (false, "0.50:0.95", "large", 100),
        ];
        let mut s = String::new();
        for ((ap, iou, area, md), v) in rows.iter().zip(self.stats) {
            let (title, ty) = if *ap {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            s.push_str(&format!(
                " {title:<18} {ty} @[ IoU={iou:<9} | area={area:>6} | maxDets={md:>3} ] = {v:0.3}\n"
            ));
        }
        s
    }
}

/// Mean of the entries that are not −1 (pycocotools' `np.mean(s[s > -1])`), or −1.
fn mean_valid(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in vals {
        if v > -1.0 {
            sum += v;
            n += 1;
        }
    }
    if n == 0 { -1.0 } else { sum / n as f64 }
}

/// A score as a sort key with a total order that agrees with NumPy's `<` on −score: −0 equals
/// +0, and NaN (refused by the file readers) sorts last instead of breaking the sort.
fn score_key(s: f64) -> f64 {
    if s.is_nan() {
        f64::NEG_INFINITY
    } else if s == 0.0 {
        0.0
    } else {
        s
    }
}

/// Ground truth and detections of one (category, image), as index ranges into the sorted lists.
struct Cell {
    k: usize,
    gt: std::ops::Range<usize>,
    /// At most [`TOP`] detections, best score first.
    dt: std::ops::Range<usize>,
}

/// Flags of one detection: `[A][T]`, so that the score-ordered pass reads them contiguously.
type DetFlags = [u8; NUM_AREA * NUM_IOU];

/// Per cell and area range: the non-ignored ground-truth count and, for each detection, area
/// range and threshold, whether it is a true positive, a false positive or ignored.
struct CellEval {
    npig: [usize; NUM_AREA],
    /// One entry per detection, best score first.
    flags: Vec<DetFlags>,
}

const IGNORED: u8 = 0;
const TP: u8 = 1;
const FP: u8 = 2;

/// The pycocotools box IoU (`maskApi.c::bbIou`): for crowd ground truth the union is the
/// detection's area.
fn box_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

fn eval_cell(
    cell: &Cell,
    gts: &[&GtAnnotation],
    dts: &[&Detection],
    thrs: &[f64; NUM_IOU],
) -> CellEval {
    let g = &gts[cell.gt.clone()];
    let d = &dts[cell.dt.clone()];
    let (ng, nd) = (g.len(), d.len());
    let mut ious = vec![0.0; nd * ng];
    for (di, dt) in d.iter().enumerate() {
        for (gi, gt) in g.iter().enumerate() {
            ious[di * ng + gi] = box_iou(&dt.bbox, &gt.bbox, gt.iscrowd);
        }
    }
    let mut npig = [0; NUM_AREA];
    let mut flags = vec![[IGNORED; NUM_AREA * NUM_IOU]; nd];
    let mut ignore = vec![false; ng];
    let mut order: Vec<usize> = Vec::with_capacity(ng);
    let mut taken = vec![false; ng];
    for (a, &(lo, hi)) in AREA_RANGES.iter().enumerate() {
        for (gi, gt) in g.iter().enumerate() {
            ignore[gi] = gt.iscrowd || gt.area < lo || gt.area > hi;
        }
        npig[a] = ignore.iter().filter(|&&x| !x).count();
        // Non-ignored first, each part in file order (pycocotools' stable argsort).
        order.clear();
        order.extend((0..ng).filter(|&gi| !ignore[gi]));
        order.extend((0..ng).filter(|&gi| ignore[gi]));
        for (t, &thr) in thrs.iter().enumerate() {
            taken.iter_mut().for_each(|x| *x = false);
            for (di, dt) in d.iter().enumerate() {
                let mut best = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (pos, &gi) in order.iter().enumerate() {
                    if taken[pos] && !g[gi].iscrowd {
                        continue;
                    }
                    if let Some(mp) = m
                        && !ignore[order[mp]]
                        && ignore[gi]
                    {
                        break;
                    }
                    let v = ious[di * ng + gi];
                    if v < best {
                        continue;
                    }
                    best = v;
                    m = Some(pos);
                }
                let (matched_ignored, matched_nonzero) = match m {
                    Some(pos) => {
                        taken[pos] = true;
                        let gi = order[pos];
                        (ignore[gi], g[gi].id != 0)
                    }
                    None => (false, false),
                };
                let area = dt.bbox[2] * dt.bbox[3];
                let outside = area < lo || area > hi;
                let ig = matched_ignored || (!matched_nonzero && outside);
                flags[di][a * NUM_IOU + t] = if ig {
                    IGNORED
                } else if matched_nonzero {
                    TP
                } else {
                    FP
                };
            }
        }
    }
    CellEval { npig, flags }
}

/// pycocotools' `evaluate()` + `accumulate()` + `summarize()` on boxes.
pub fn evaluate(gt: &CocoGt, dets: &[Detection]) -> CocoEval {
    let mut img_ids = gt.images.clone();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let img_index: HashMap<i64, usize> = img_ids.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let cat_index: HashMap<i64, usize> = cat_ids.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let mut left_out = LeftOut::default();

    // (k, i, position) keys; sorting them groups each cell in file order.
    let mut gkeys: Vec<(usize, usize, usize)> = Vec::with_capacity(gt.annotations.len());
    for (n, a) in gt.annotations.iter().enumerate() {
        match (cat_index.get(&a.category_id), img_index.get(&a.image_id)) {
            (Some(&k), Some(&i)) => gkeys.push((k, i, n)),
            (None, _) => left_out.annotations_unknown_category += 1,
            (_, None) => left_out.annotations_unknown_image += 1,
        }
    }
    gkeys.sort_unstable();
    let mut dkeys: Vec<(usize, usize, usize)> = Vec::with_capacity(dets.len());
    for (n, d) in dets.iter().enumerate() {
        match (cat_index.get(&d.category_id), img_index.get(&d.image_id)) {
            (Some(&k), Some(&i)) => dkeys.push((k, i, n)),
            (None, _) => left_out.detections_unknown_category += 1,
            // Callers that parse files refuse unknown images first; in memory they are dropped.
            (_, None) => left_out.detections_unknown_image += 1,
        }
    }
    // Within a cell: score descending, ties by file position (stable sort on −score).
    dkeys.par_sort_unstable_by(|x, y| {
        (x.0, x.1)
            .cmp(&(y.0, y.1))
            .then_with(|| score_key(dets[y.2].score).total_cmp(&score_key(dets[x.2].score)))
            .then_with(|| x.2.cmp(&y.2))
    });
    let gts: Vec<&GtAnnotation> = gkeys.iter().map(|&(_, _, n)| &gt.annotations[n]).collect();
    let dts: Vec<&Detection> = dkeys.iter().map(|&(_, _, n)| &dets[n]).collect();

    // Merge the two sorted key lists into cells.
    let mut cells: Vec<Cell> = Vec::new();
    let (mut gp, mut dp) = (0, 0);
    while gp < gkeys.len() || dp < dkeys.len() {
        let gk = gkeys.get(gp).map(|x| (x.0, x.1));
        let dk = dkeys.get(dp).map(|x| (x.0, x.1));
        let key = match (gk, dk) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        let g0 = gp;
        while gp < gkeys.len() && (gkeys[gp].0, gkeys[gp].1) == key {
            gp += 1;
        }
        let d0 = dp;
        while dp < dkeys.len() && (dkeys[dp].0, dkeys[dp].1) == key {
            dp += 1;
        }
        cells.push(Cell {
            k: key.0,
            gt: g0..gp,
            dt: d0..dp.min(d0 + TOP),
        });
    }

    let thrs = iou_thresholds();
    let evals: Vec<CellEval> = cells
        .par_iter()
        .map(|c| eval_cell(c, &gts, &dts, &thrs))
        .collect();

    // Cells are sorted by (k, image), so each category's cells are contiguous, in image order.
    let kk = cat_ids.len();
    let mut cat_start = vec![cells.len(); kk + 1];
    for (ci, c) in cells.iter().enumerate().rev() {
        cat_start[c.k] = ci;
    }
    for k in (0..kk).rev() {
        cat_start[k] = cat_start[k].min(cat_start[k + 1]);
    }
    let rec_thrs = recall_thresholds();
    let per_cat: Vec<(Vec<f64>, Vec<f64>)> = (0..kk)
        .into_par_iter()
        .map(|k| {
            accumulate_category(
                &cells[cat_start[k]..cat_start[k + 1]],
                &evals[cat_start[k]..cat_start[k + 1]],
                &dts,
                &rec_thrs,
            )
        })
        .collect();

    let mut precision = vec![-1.0; NUM_IOU * NUM_REC * kk * NUM_AREA * NUM_MAXDET];
    let mut recall = vec![-1.0; NUM_IOU * kk * NUM_AREA * NUM_MAXDET];
    for (k, (p, r)) in per_cat.iter().enumerate() {
        for t in 0..NUM_IOU {
            for a in 0..NUM_AREA {
                for m in 0..NUM_MAXDET {
                    let local = (t * NUM_AREA + a) * NUM_MAXDET + m;
                    recall[((t * kk + k) * NUM_AREA + a) * NUM_MAXDET + m] = r[local];
                    for rr in 0..NUM_REC {
                        precision
                            [(((t * NUM_REC + rr) * kk + k) * NUM_AREA + a) * NUM_MAXDET + m] =
                            p[local * NUM_REC + rr];
                    }
                }
            }
        }
    }
    let mut ev = CocoEval {
        cat_ids,
        precision,
        recall,
        stats: [0.0; 12],
        left_out,
    };
    ev.stats = summarize(&ev);
    ev
}

/// One category's precision `[T][A][M][R]` and recall `[T][A][M]` (−1 where undefined).
fn accumulate_category(
    cells: &[Cell],
    evals: &[CellEval],
    dts: &[&Detection],
    rec_thrs: &[f64; NUM_REC],
) -> (Vec<f64>, Vec<f64>) {
    let mut prec = vec![-1.0; NUM_IOU * NUM_AREA * NUM_MAXDET * NUM_REC];
    let mut rec = vec![-1.0; NUM_IOU * NUM_AREA * NUM_MAXDET];
    // (cell, rank) of every kept detection, concatenated in image order then rank, then
    // stably sorted by score descending: pycocotools' concatenation + mergesort on −score.
    let mut order: Vec<(u32, u32)> = Vec::new();
    for (ci, c) in cells.iter().enumerate() {
        for r in 0..c.dt.len() {
            order.push((ci as u32, r as u32));
        }
    }
    let score =
        |&(ci, r): &(u32, u32)| score_key(dts[cells[ci as usize].dt.start + r as usize].score);
    order.sort_by(|x, y| score(y).total_cmp(&score(x)));
    // One gather into score order; the 120 passes below then read memory in sequence.
    let sorted: Vec<(u32, DetFlags)> = order
        .iter()
        .map(|&(ci, r)| (r, evals[ci as usize].flags[r as usize]))
        .collect();
    let eps = f64::EPSILON; // np.spacing(1)
    let mut rc: Vec<f64> = Vec::with_capacity(order.len());
    let mut pr: Vec<f64> = Vec::with_capacity(order.len());
    for a in 0..NUM_AREA {
        let npig: usize = evals.iter().map(|e| e.npig[a]).sum();
        if npig == 0 {
            continue;
        }
        let npig = npig as f64;
        for (m, &max_det) in MAX_DETS.iter().enumerate() {
            for t in 0..NUM_IOU {
                rc.clear();
                pr.clear();
                let (mut tp, mut fp) = (0u64, 0u64);
                let col = a * NUM_IOU + t;
                for (r, f) in &sorted {
                    if *r as usize >= max_det {
                        continue;
                    }
                    match f[col] {
                        TP => tp += 1,
                        FP => fp += 1,
                        _ => {}
                    }
                    let (tpf, fpf) = (tp as f64, fp as f64);
                    rc.push(tpf / npig);
                    pr.push(tpf / (fpf + tpf + eps));
                }
                let base = (t * NUM_AREA + a) * NUM_MAXDET + m;
                rec[base] = rc.last().copied().unwrap_or(0.0);
                for i in (1..pr.len()).rev() {
                    if pr[i] > pr[i - 1] {
                        pr[i - 1] = pr[i];
                    }
                }
                // searchsorted(rc, rec_thrs, "left"): first index with rc >= threshold.
                let q = &mut prec[base * NUM_REC..(base + 1) * NUM_REC];
                let mut idx = 0;
                for (ri, &thr) in rec_thrs.iter().enumerate() {
                    while idx < rc.len() && rc[idx] < thr {
                        idx += 1;
                    }
                    q[ri] = if idx < pr.len() { pr[idx] } else { 0.0 };
                }
            }
        }
    }
    (prec, rec)
}

fn summarize(ev: &CocoEval) -> [f64; 12] {
    let kk = ev.cat_ids.len();
    let ap = |ts: &[usize], a: usize, m: usize| {
        mean_valid(ts.iter().flat_map(|&t| {
            (0..NUM_REC).flat_map(move |r| (0..kk).map(move |k| ev.precision_at(t, r, k, a, m)))
        }))
    };
    let ar = |a: usize, m: usize| {
        mean_valid((0..NUM_IOU).flat_map(|t| (0..kk).map(move |k| ev.recall_at(t, k, a, m))))
    };
    let all: Vec<usize> = (0..NUM_IOU).collect();
    // iouThr .5 and .75 are thresholds 0 and 5 of the linspace.
    [
        ap(&all, 0, 2),
        ap(&[0], 0, 2),
        ap(&[5], 0, 2),
        ap(&all, 1, 2),
        ap(&all, 2, 2),
        ap(&all, 3, 2),
        ar(0, 0),
        ar(0, 1),
        ar(0, 2),
        ar(1, 2),
        ar(2, 2),
        ar(3, 2),
    ]
}

/// COCO AP at IoU .5 with 101-point interpolation (area all, 100 detections per image and
/// class): the detection mAP@0.5 the detector's training and evaluation report. It is the
/// COCO flavour of VOC's mAP@0.5 (VOC 2010+ integrates the whole precision envelope instead
/// of sampling it at 101 recalls; the two differ by well under a point on real curves).
pub fn map50(gt: &CocoGt, dets: &[Detection]) -> f64 {
    evaluate(gt, dets).map50()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt_one(bbox: [f64; 4]) -> CocoGt {
        CocoGt {
            images: vec![1, 2],
            categories: vec![Category {
                id: 7,
                name: "a".into(),
            }],
            annotations: vec![GtAnnotation::from_box(1, 1, 7, bbox)],
        }
    }

    #[test]
    fn thresholds_are_numpy_linspace() {
        // repr(np.linspace(.5, .95, 10).tolist()), bit for bit.
        let numpy = [
            0.5,
            0.55,
            0.6,
            0.65,
            0.7,
            0.75,
            0.8,
            0.85,
            0.8999999999999999,
            0.95,
        ];
        assert_eq!(iou_thresholds(), numpy);
        let r = recall_thresholds();
        assert_eq!(r[3], 0.03);
        assert_eq!(r[100], 1.0);
    }

    #[test]
    fn perfect_detection_scores_one_and_a_miss_zero() {
        let gt = gt_one([10.0, 10.0, 50.0, 40.0]);
        let hit = Detection {
            image_id: 1,
            category_id: 7,
            bbox: [10.0, 10.0, 50.0, 40.0],
            score: 0.9,
        };
        let ev = evaluate(&gt, std::slice::from_ref(&hit));
        // Precision is tp / (tp + fp + eps), so "1" is one ulp short, as in pycocotools.
        assert!((ev.stats[0] - 1.0).abs() < 1e-12);
        assert_eq!(ev.stats[3], -1.0); // no small ground truth
        assert!((ev.stats[4] - 1.0).abs() < 1e-12);
        assert_eq!(ev.stats[8], 1.0);
        let miss = Detection {
            bbox: [100.0, 100.0, 5.0, 5.0],
            ..hit.clone()
        };
        let ev = evaluate(&gt, &[miss]);
        assert_eq!(ev.stats[0], 0.0);
        assert_eq!(ev.stats[8], 0.0);
    }

    #[test]
    fn iou_and_crowd_iou_follow_bbiou() {
        let d = [0.0, 0.0, 10.0, 10.0];
        let g = [5.0, 0.0, 10.0, 10.0];
        assert!((box_iou(&d, &g, false) - 50.0 / 150.0).abs() < 1e-15);
        assert!((box_iou(&d, &g, true) - 0.5).abs() < 1e-15);
        assert_eq!(box_iou(&d, &[10.0, 0.0, 5.0, 5.0], false), 0.0);
    }

    #[test]
    fn parse_errors_name_file_and_index() {
        let p = Path::new("gt.json");
        let e = CocoGt::from_json_slice(b"{\"images\": [", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gt.json") && e.contains("line 1"), "{e}");
        let bad = br#"{"images":[{"id":1}],"categories":[{"id":1}],
            "annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[0,0,-2,3]}]}"#;
        let e = CocoGt::from_json_slice(bad, p).unwrap_err().to_string();
        assert!(
            e.contains("annotations[0]") && e.contains("negative"),
            "{e}"
        );
        let gt = gt_one([0.0, 0.0, 1.0, 1.0]);
        let dp = Path::new("dt.json");
        let e = detections_from_json_slice(
            br#"[{"image_id":1,"category_id":7,"bbox":[0,0,1,1],"score":0.5},
                 {"image_id":9,"category_id":7,"bbox":[0,0,1,1],"score":0.5}]"#,
            dp,
            &gt,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("dt.json") && e.contains("detection [1]") && e.contains("9"),
            "{e}"
        );
    }
}
