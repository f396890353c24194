//! The run folder: `report.json`, `config.toml`, `metrics.jsonl` and checkpoints, every file
//! written to a temporary sibling and renamed into place so a crash never leaves half a file.

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A `--out FILE` argument: it must name a file (not a folder) in an existing folder, and no
/// file may be there yet — a command never replaces what is already written (its own input, a
/// key, an earlier result), as [`ensure_fresh`] never fills a folder that holds anything.
/// Checked before the work that produces the file, so a typo costs no work (a usage error,
/// exit 2).
pub fn check_out_file(out: &Path) -> Result<()> {
    if out.file_name().is_none() {
        return Err(CoreError::Data(format!(
            "--out {}: names no file; give the output file",
            out.display()
        )));
    }
    if out.is_dir() {
        return Err(CoreError::Data(format!(
            "--out {}: is a folder; give the output file",
            out.display()
        )));
    }
    if out.symlink_metadata().is_ok() {
        return Err(CoreError::Data(format!(
            "--out {}: already exists; nothing is overwritten, so remove it or choose another name",
            out.display()
        )));
    }
    let dir = folder_of(out);
    if !dir.is_dir() {
        let why = if dir.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        return Err(CoreError::Data(format!(
            "--out {}: {} {why}",
            out.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// The folder `path` lies in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed and
/// synced, then renamed over `path` ([`ferrolab_data::write_file_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.is_dir() {
        // A damaged or hand-edited run folder: a usage error (exit 2) naming the path, not an
        // I/O failure after the work that produced the bytes.
        return Err(CoreError::Data(format!(
            "{} is a folder where this run writes a file; move it away",
            path.display()
        )));
    }
    ferrolab_data::write_file_atomic(path, bytes).map_err(|e| CoreError::io(path, e))
}

/// The refusal rule of every command that writes a folder (runs, `reproduce`, exports):
/// `path` must not exist, or be an empty folder; a file or a folder holding anything is a
/// usage error, so nothing already written is replaced or mixed with new files.
pub fn ensure_fresh(path: &Path) -> Result<()> {
    if path.is_file() {
        return Err(CoreError::Data(format!(
            "output folder {} is a file; choose another --out",
            path.display()
        )));
    }
    // A file on the way (`report.txt/run`) would only fail when the folder is made, after
    // the checks a usage error is due before.
    if let Some(file) = path.ancestors().skip(1).find(|a| a.is_file()) {
        return Err(CoreError::Data(format!(
            "output folder {}: {} is a file, not a folder; choose another --out",
            path.display(),
            file.display()
        )));
    }
    if !path.exists() {
        return Ok(());
    }
    let empty = path.is_dir() && is_empty_dir(path);
    if empty {
        Ok(())
    } else {
        Err(CoreError::Data(format!(
            "output folder {} already exists and is not empty; choose another --out",
            path.display()
        )))
    }
}

/// Makes the output folder `out` whole or not at all. After [`ensure_fresh`], `fill` writes
/// into a staging folder beside `out` (`<out>.partial-<pid>-<ns>`), which is renamed to `out`
/// when `fill` succeeds and removed when it fails: a failed export or render leaves no
/// half-filled `out` that a reader would take for a result or a rerun would refuse, and a
/// killed one leaves only the staging folder, whose name says it is partial. An `out` that
/// already exists (empty: a folder the user made, maybe a link or a mount point, which a
/// rename cannot replace) is filled in place and emptied again when `fill` fails.
pub fn fill_fresh_folder<T, E>(
    out: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<T, E>,
) -> std::result::Result<T, E>
where
    E: From<CoreError>,
{
    ensure_fresh(out)?;
    if out.exists() {
        return fill(out).inspect_err(|_| empty_folder(out));
    }
    let name = out.file_name().ok_or_else(|| {
        CoreError::Data(format!(
            "output folder {} names no folder; choose another --out",
            out.display()
        ))
    })?;
    let parent = folder_of(out);
    std::fs::create_dir_all(parent).map_err(|e| CoreError::io(parent, e))?;
    // `a/.` and `a/` name the folder `a`: the rename goes to that, not to the spelling.
    let target = parent.join(name);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut staged = name.to_owned();
    staged.push(format!(".partial-{}-{nanos}", std::process::id()));
    let staging = parent.join(staged);
    // `create_dir`, not `create_dir_all`: a folder of that name belongs to someone else.
    std::fs::create_dir(&staging).map_err(|e| CoreError::io(&staging, e))?;
    let v = match fill(&staging) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&staging, &target) {
        // The work is done: say where it is rather than throw it away.
        return Err(CoreError::Runtime(format!(
            "{}: cannot move the finished folder into place ({e}); it is in {}",
            out.display(),
            staging.display()
        ))
        .into());
    }
    ferrolab_data::sync_dir(parent);
    Ok(v)
}

/// Removes what is inside `dir` (which [`fill_fresh_folder`] found empty), keeping `dir`.
fn empty_folder(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Whether `dir` is a folder with nothing in it (false when it cannot be read).
pub fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// `runs/<name>-<unix seconds>`: the default output folder of a run.
pub fn default_out(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Path::new("runs").join(format!("{name}-{secs}"))
}

/// The report every system writes (schema in DESIGN.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// System name, e.g. `secnn`.
    pub system: String,
    /// Dataset name, e.g. `mr`.
    pub dataset: String,
    /// The resolved configuration.
    pub config: serde_json::Value,
    /// Headline metrics of the system itself (lower_snake_case, unit in the name).
    pub metrics: BTreeMap<String, f64>,
    /// The baselines measured in the same run: name → metrics.
    pub baselines: BTreeMap<String, BTreeMap<String, f64>>,
    /// Wall-clock seconds of named phases.
    pub timings: BTreeMap<String, f64>,
    /// The master seed.
    pub seed: u64,
    /// Per-seed values and anything else a reader needs to judge the figures.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Plain-language notes (e.g. "SE did not help on MR: -0.3 ± 0.5").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    /// A report for `system` on `dataset`.
    pub fn new(system: &str, dataset: &str, seed: u64) -> Self {
        Report {
            system: system.into(),
            dataset: dataset.into(),
            seed,
            config: serde_json::Value::Null,
            ..Default::default()
        }
    }
}

/// A training curve for the plots in `report.md` (e.g. validation accuracy per epoch).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Curve {
    /// Legend label, e.g. `secnn seed 0`.
    pub label: String,
    /// What the y axis measures, e.g. `dev_accuracy`.
    pub y_name: String,
    /// `(epoch, value)` points.
    pub points: Vec<(f64, f64)>,
}

/// A published figure to print beside ours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaperFigure {
    /// Model, e.g. `kim_cnn`.
    pub model: String,
    /// Metric name as in our report, e.g. `test_accuracy`.
    pub metric: String,
    /// The published value, in the same unit as our metric.
    pub value: f64,
    /// Where it is published.
    pub source: String,
}

/// What a system's experiment returns: its report, curves and the paper's figures.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The report written as `report.json`.
    pub report: Report,
    /// Curves for plots.
    pub curves: Vec<Curve>,
    /// Published figures for comparison.
    pub paper: Vec<PaperFigure>,
}

/// An output folder for one run.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    metrics_lines: Vec<String>,
    /// The unit whose work is running ([`RunDir::unit`]): its `metrics.jsonl` lines carry
    /// `"unit": name`, so that a resumed run can drop the lines of a unit that a kill
    /// interrupted before it re-runs it (instead of logging them twice).
    current_unit: Option<String>,
}

impl RunDir {
    /// Creates (or reuses an empty) folder; refuses one that already holds a run's report.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if root.join("report.json").exists() {
            return Err(CoreError::RunExists(root));
        }
        std::fs::create_dir_all(&root).map_err(|e| CoreError::io(&root, e))?;
        Ok(RunDir {
            root,
            metrics_lines: Vec::new(),
            current_unit: None,
        })
    }

    /// Creates a new run folder after [`ensure_fresh`].
    pub fn create_fresh(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        ensure_fresh(&root)?;
        Self::create(root)
    }

    /// Reopens the folder of a killed run to continue it: `metrics.jsonl` keeps its lines.
    pub fn reopen(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(CoreError::Data(format!(
                "{} is not a run folder",
                root.display()
            )));
        }
        let path = root.join("metrics.jsonl");
        // The file is only ever replaced whole (`log_metrics`), so a line that is not a JSON
        // record is damage from outside the run: refused (exit 2) rather than carried into the
        // finished run's history.
        let damaged = |what: String| {
            CoreError::Data(format!(
                "{}: {what}; the run folder is damaged (restore the file or start a new run)",
                path.display()
            ))
        };
        let metrics_lines: Vec<String> = match std::fs::read(&path) {
            Ok(bytes) => {
                let text =
                    String::from_utf8(bytes).map_err(|_| damaged("not UTF-8 text".into()))?;
                text.lines().map(str::to_string).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(_) if path.is_dir() => return Err(damaged("a folder, not a file".into())),
            Err(e) => return Err(CoreError::io(&path, e)),
        };
        for (i, line) in metrics_lines.iter().enumerate() {
            // A blank or whitespace-only line (an editor's stray empty line) holds no record.
            if !line.trim().is_empty()
                && serde_json::from_str::<serde::de::IgnoredAny>(line).is_err()
            {
                return Err(damaged(format!("line {} is not a JSON record", i + 1)));
            }
        }
        let metrics_lines: Vec<String> = metrics_lines
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect();
        Ok(RunDir {
            root,
            metrics_lines,
            current_unit: None,
        })
    }

    /// Runs one unit of work (a seed, a fold) once: its result is saved as
    /// `units/<name>.json` when it completes, and when that file already exists (a run
    /// continued with `--resume`; a fresh run folder is always empty) the saved result is
    /// returned without running `f` again. An experiment made of units shorter than ten
    /// minutes therefore checkpoints at least every ten minutes.
    pub fn unit<T, E, F>(&mut self, name: &str, f: F) -> std::result::Result<T, E>
    where
        T: Serialize + serde::de::DeserializeOwned,
        E: From<CoreError>,
        F: FnOnce(&mut RunDir) -> std::result::Result<T, E>,
    {
        if let Some(v) = self.saved_unit::<T>(name) {
            eprintln!(
                "resume: {name} already done ({})",
                self.unit_path(name).display()
            );
            return Ok(v);
        }
        // Checked before the work, which may be long, rather than when its result is saved.
        self.check_unit_place(name)?;
        let outer = self.begin_unit(name);
        let v = f(self);
        self.end_unit(outer);
        let v = v?;
        let text = self.save_unit(name, &v)?;
        // JSON has no NaN or infinity (serde_json writes `null`), so such a result is saved
        // but cannot be read back: said now, not as a puzzling re-run on resume.
        if !reads_back::<T>(&text) {
            eprintln!(
                "warning: unit {name}'s saved result does not read back (JSON stores NaN and \
                 infinity as null); a --resume would run the unit again"
            );
        }
        Ok(v)
    }

    /// Marks unit `name` as running and forgets the `metrics.jsonl` lines an earlier, killed
    /// sitting logged for it (they are logged again as it re-runs); returns the unit that was
    /// running before, for the caller to put back when this one ends.
    pub fn begin_unit(&mut self, name: &str) -> Option<String> {
        let stale = |line: &String| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("unit").and_then(|u| u.as_str().map(|u| u == name)))
                .unwrap_or(false)
        };
        self.metrics_lines.retain(|l| !stale(l));
        self.current_unit.replace(name.to_string())
    }

    /// Puts back the unit [`RunDir::begin_unit`] returned.
    pub fn end_unit(&mut self, outer: Option<String>) {
        self.current_unit = outer;
    }

    /// Refuses a run folder whose `units` entry or unit file has the wrong kind.
    pub fn check_unit_place(&self, name: &str) -> Result<()> {
        let (dir, path) = (self.join("units"), self.unit_path(name));
        for (p, want_dir) in [(&dir, true), (&path, false)] {
            if p.exists() && p.is_dir() != want_dir {
                return Err(CoreError::Data(format!(
                    "{} should be a {} in this run folder; the folder is damaged (move it away and start afresh)",
                    p.display(),
                    if want_dir { "folder" } else { "file" }
                )));
            }
        }
        Ok(())
    }

    /// Saves the result of unit `name` where [`unit`](Self::unit) and
    /// [`saved_unit`](Self::saved_unit) find it (atomically). For units run side by side on
    /// threads, which share the folder by reference: check the place with
    /// [`check_unit_place`](Self::check_unit_place), look for a saved result, work, save.
    pub fn save_unit<T: Serialize>(&self, name: &str, v: &T) -> Result<Vec<u8>> {
        self.check_unit_place(name)?;
        let dir = self.join("units");
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::io(&dir, e))?;
        let text = serde_json::to_vec(v)
            .map_err(|e| CoreError::Runtime(format!("saving unit {name}: {e}")))?;
        write_atomic(&self.unit_path(name), &text)?;
        Ok(text)
    }

    /// Where [`unit`](Self::unit) keeps the result of unit `name`.
    fn unit_path(&self, name: &str) -> PathBuf {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.join("units").join(format!("{safe}.json"))
    }

    /// The saved result of unit `name`, when a previous run finished it (what
    /// [`unit`](Self::unit) would return without running); for work that only a pending unit
    /// needs, such as keys made before it.
    pub fn saved_unit<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.unit_path(name);
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                // Written by an older binary, truncated or edited: the work is done again,
                // which the user should know about.
                eprintln!(
                    "warning: {} is not a finished unit this run can read ({e}); running it again",
                    path.display()
                );
                None
            }
        }
    }

    /// Moves the folder to `to` (a finished run leaving its temporary name).
    pub fn rename(&mut self, to: &Path) -> Result<()> {
        std::fs::rename(&self.root, to).map_err(|e| CoreError::io(to, e))?;
        self.root = to.to_path_buf();
        ferrolab_data::sync_dir(folder_of(to));
        Ok(())
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `config.toml`.
    pub fn write_config(&self, toml_text: &str) -> Result<()> {
        write_atomic(&self.join("config.toml"), toml_text.as_bytes())
    }

    /// Appends one record to `metrics.jsonl` (the file is rewritten atomically each time, so
    /// a reader never sees a torn line).
    pub fn log_metrics(&mut self, record: &serde_json::Value) -> Result<()> {
        match (&self.current_unit, record) {
            (Some(unit), serde_json::Value::Object(m)) if !m.contains_key("unit") => {
                let mut m = m.clone();
                m.insert("unit".into(), unit.clone().into());
                self.metrics_lines
                    .push(serde_json::Value::Object(m).to_string());
            }
            _ => self.metrics_lines.push(record.to_string()),
        }
        let mut text = self.metrics_lines.join("\n");
        text.push('\n');
        write_atomic(&self.join("metrics.jsonl"), text.as_bytes())
    }

    /// Writes `report.json`; this marks the run as complete.
    pub fn write_report(&self, report: &Report) -> Result<()> {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| CoreError::Runtime(format!("serialising report: {e}")))?;
        write_atomic(&self.join("report.json"), text.as_bytes())
    }

    /// Writes any other artefact atomically.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.join(name), bytes)
    }
}

/// Saves a module's parameters as safetensors at `path` (burn-store writes a scratch file and
/// renames it, so this is atomic too).
pub fn save_checkpoint<M: burn::module::Module>(model: &M, path: &Path) -> Result<()> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    let mut store = SafetensorsStore::from_file(path).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| CoreError::Checkpoint {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
}

/// The largest safetensors header (its JSON index) accepted; ours are a few kilobytes, and
/// the `safetensors` crate itself refuses more than 100 MB.
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

/// One tensor of a safetensors file as its header declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type as spelled in the file (`F32`, `I64`, …).
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<usize>,
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads and checks the header of a safetensors file without reading its data: an 8-byte
/// little-endian length, then a JSON object naming each tensor's `dtype`, `shape` and
/// `data_offsets`. The offsets must tile the data part exactly (no gap, no overlap, nothing
/// past the end of the file) and agree with dtype × shape, so a truncated, padded or damaged
/// file is refused here, before any tensor is allocated. Errors are one line naming the file.
pub fn read_safetensors_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    use std::io::Read;
    let err = |msg: String| CoreError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err("file not found".into()),
        _ => err(e.to_string()),
    })?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let len = meta.len();
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut n = [0u8; 8];
    if len < 8 {
        return Err(err(format!(
            "{len} bytes is too short for a safetensors file (truncated?)"
        )));
    }
    f.read_exact(&mut n).map_err(|e| err(e.to_string()))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_SAFETENSORS_HEADER || n > len - 8 {
        return Err(err(format!(
            "header length {n} does not fit the file's {len} bytes (truncated or not safetensors)"
        )));
    }
    let mut header = Vec::new();
    (&mut f)
        .take(n)
        .read_to_end(&mut header)
        .map_err(|e| err(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        err(format!(
            "header is not valid JSON ({e}); not a safetensors file?"
        ))
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| err("header is not a JSON object".into()))?;
    let data_len = len - 8 - n;
    let mut out = BTreeMap::new();
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| err(format!("tensor {name}: {what}"));
        let dtype = v
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype"))?;
        let size = dtype_size(dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype:?}")))?;
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad("shape is not a list of sizes"))?;
        let offsets: Vec<u64> = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(serde_json::Value::as_u64).collect())
            .filter(|o: &Vec<u64>| o.len() == 2)
            .ok_or_else(|| bad("data_offsets is not [begin, end]"))?;
        let (begin, end) = (offsets[0], offsets[1]);
        let bytes = shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(&format!("shape {shape:?} is too large")))?;
        if end < begin || end - begin != bytes {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] do not hold {dtype} {shape:?} ({bytes} bytes)"
            )));
        }
        if end > data_len {
            return Err(bad(&format!(
                "data ends at byte {end} but the file holds {data_len} bytes of data (truncated?)"
            )));
        }
        spans.push((begin, end, name));
        out.insert(
            name.clone(),
            TensorInfo {
                dtype: dtype.to_string(),
                shape,
            },
        );
    }
    spans.sort_unstable();
    let mut at = 0u64;
    for (begin, end, name) in spans {
        if begin != at {
            return Err(err(format!(
                "tensor {name}: data starts at byte {begin}, expected {at} (gap or overlap)"
            )));
        }
        at = end;
    }
    if at != data_len {
        return Err(err(format!(
            "the tensors hold {at} bytes of data but the file has {data_len} (damaged or padded)"
        )));
    }
    Ok(out)
}

fn shape_text(s: &[usize]) -> String {
    format!("{s:?}")
}

/// Compares a safetensors header with the tensors a model expects (`name → shape`): one line
/// naming the first tensor that is missing, unexpected or of another shape, with both shapes.
/// `source` names where the expectation comes from (`the model`, `meta.json`).
pub fn compare_tensor_shapes(
    path: &Path,
    file: &BTreeMap<String, TensorInfo>,
    expected: &BTreeMap<String, Vec<usize>>,
    source: &str,
) -> Result<()> {
    let err = |msg: String| CoreError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    for (name, want) in expected {
        match file.get(name) {
            None => {
                return Err(err(format!(
                    "tensor {name} is missing ({source} expects shape {})",
                    shape_text(want)
                )));
            }
            Some(t) if &t.shape != want => {
                return Err(err(format!(
                    "tensor {name} has shape {} in the file, {source} expects {}",
                    shape_text(&t.shape),
                    shape_text(want)
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = file.keys().find(|k| !expected.contains_key(*k)) {
        return Err(err(format!(
            "tensor {extra} in the file is not part of {source}"
        )));
    }
    Ok(())
}

/// One parameter of a module as a checkpoint names it.
struct ParamInfo {
    name: String,
    shape: Vec<usize>,
    /// The safetensors name of a float parameter's type; `None` for int and bool ones.
    float_dtype: Option<&'static str>,
}

/// Every parameter's name, shape and float type, read without initialising anything.
///
/// burn's `collect` reads each value, which makes a lazily initialised parameter draw its
/// random initial value from the process-wide generator; a load that then overwrites it
/// would still shift another thread's seeded stream. Names follow `collect`'s: the module
/// path joined with dots.
fn param_layout<M: burn::module::Module>(model: &M) -> Vec<ParamInfo> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::{Bool, DType, Int, Tensor};
    struct Layout {
        path: Vec<String>,
        out: Vec<ParamInfo>,
    }
    impl Layout {
        fn push(&mut self, shape: burn::tensor::Shape, float_dtype: Option<&'static str>) {
            self.out.push(ParamInfo {
                name: self.path.join("."),
                shape: shape.to_vec(),
                float_dtype,
            });
        }
    }
    impl ModuleVisitor for Layout {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            // An uninitialised parameter will take the backend's float type, f32 here.
            let dtype = if p.is_initialized() {
                match p.val().dtype() {
                    DType::F64 => Some("F64"),
                    DType::F16 => Some("F16"),
                    DType::BF16 => Some("BF16"),
                    DType::F32 | DType::Flex32 => Some("F32"),
                    _ => None,
                }
            } else {
                Some("F32")
            };
            self.push(p.lazy_shape(), dtype);
        }
        fn visit_int<const D: usize>(&mut self, p: &Param<Tensor<D, Int>>) {
            self.push(p.lazy_shape(), None);
        }
        fn visit_bool<const D: usize>(&mut self, p: &Param<Tensor<D, Bool>>) {
            self.push(p.lazy_shape(), None);
        }
    }
    let mut v = Layout {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Loads parameters saved by [`save_checkpoint`] into `model` (whose shapes must match).
///
/// The file's header is read and checked first ([`read_safetensors_header`]) and every tensor's
/// name, shape and float type are compared with the model's before burn reads any data, so a
/// missing, truncated, damaged or mismatched file is a one-line [`CoreError::Checkpoint`]
/// naming the file (and the tensor with both shapes).
pub fn load_checkpoint<M: burn::module::Module>(model: M, path: &Path) -> Result<M> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    let err = |msg: String| CoreError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let file = read_safetensors_header(path)?;
    let params = param_layout(&model);
    let expected: BTreeMap<String, Vec<usize>> = params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    compare_tensor_shapes(path, &file, &expected, "the model")?;
    for p in &params {
        let Some(want) = p.float_dtype else { continue };
        if let Some(f) = file.get(&p.name)
            && f.dtype != want
        {
            return Err(err(format!(
                "tensor {} is {} in the file, the model expects {want}",
                p.name, f.dtype
            )));
        }
    }
    let mut model = model;
    let mut store = SafetensorsStore::from_file(path)
        .allow_partial(true)
        .validate(false);
    let res = model
        .load_from(&mut store)
        .map_err(|e| err(first_line(&e.to_string())))?;
    if let Some(e) = res.errors.first() {
        return Err(err(first_line(&e.to_string())));
    }
    if let Some(m) = res.missing.first() {
        return Err(err(format!("tensor {} is missing", m.0)));
    }
    Ok(model)
}

/// burn's messages can span many lines (a summary table and a hint); the CLI prints one.
pub fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unreadable checkpoint")
        .to_string()
}

/// JSON has no NaN: with `#[serde(with = "ferrolab_core::run::f64_or_null")]` a saved unit
/// writes a non-finite `f64` (a "not measured") as `null` and reads `null` back as NaN, so the
/// unit survives a `--resume` instead of being run again.
pub mod f64_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// [`f64_or_null`] for a fixed-size array of `f64` (per-class figures, say). For JSON, as the
/// run folder writes: the array is read back as a sequence.
pub mod f64s_or_null {
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[f64; N], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(N)?;
        for x in v {
            t.serialize_element(&x.is_finite().then_some(*x))?;
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[f64; N], D::Error> {
        let v = Vec::<Option<f64>>::deserialize(d)?;
        let n = v.len();
        if n != N {
            return Err(serde::de::Error::invalid_length(
                n,
                &format!("{N} numbers or nulls").as_str(),
            ));
        }
        let mut out = [f64::NAN; N];
        for (o, x) in out.iter_mut().zip(v) {
            *o = x.unwrap_or(f64::NAN);
        }
        Ok(out)
    }
}

/// Whether a saved unit result `text` reads back as a `T`. Only a text holding `null` can fail
/// for a result that was just serialised (a NaN or infinity written as `null`), so the others
/// are not parsed a second time (a unit's result can be large).
fn reads_back<T: serde::de::DeserializeOwned>(text: &[u8]) -> bool {
    !text.windows(4).any(|w| w == b"null") || serde_json::from_slice::<T>(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrolab-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_result_holding_nan_does_not_read_back_and_a_finite_or_optional_one_does() {
        use serde_json::to_vec as save;
        assert!(!reads_back::<f64>(&save(&f64::NAN).unwrap()));
        assert!(!reads_back::<Vec<f64>>(
            &save(&vec![1.0, f64::INFINITY]).unwrap()
        ));
        assert!(reads_back::<f64>(&save(&0.5).unwrap()));
        // `null` that is a value of the type (an absent option) reads back.
        assert!(reads_back::<Option<f64>>(&save(&None::<f64>).unwrap()));
    }

    #[test]
    fn non_finite_figures_marked_or_null_round_trip_as_nan() {
        #[derive(Debug, Serialize, Deserialize)]
        struct R {
            #[serde(with = "f64_or_null")]
            one: f64,
            #[serde(with = "f64s_or_null")]
            per_class: [f64; 3],
        }
        let r = R {
            one: f64::NAN,
            per_class: [1.5, f64::NAN, f64::INFINITY],
        };
        let text = serde_json::to_vec(&r).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&text),
            r#"{"one":null,"per_class":[1.5,null,null]}"#
        );
        assert!(reads_back::<R>(&text));
        let back: R = serde_json::from_slice(&text).unwrap();
        assert!(back.one.is_nan());
        assert_eq!(back.per_class[0], 1.5);
        assert!(back.per_class[1].is_nan() && back.per_class[2].is_nan());
        // A wrong length is an error, not a silently padded array.
        let e = serde_json::from_str::<R>(r#"{"one":1.0,"per_class":[1.0,2.0]}"#).unwrap_err();
        assert!(e.to_string().contains("3 numbers or nulls"), "{e}");
    }

    #[test]
    fn a_unit_whose_result_json_cannot_hold_runs_again_and_a_finite_one_does_not() {
        let d = tmpdir("unit-nan");
        let mut run = RunDir::create(&d).unwrap();
        let mut calls = 0;
        for _ in 0..2 {
            let v: f64 = run
                .unit::<_, CoreError, _>("nan", |_| {
                    calls += 1;
                    Ok(f64::NAN)
                })
                .unwrap();
            assert!(v.is_nan());
        }
        assert_eq!(calls, 2);
        for _ in 0..2 {
            let v: f64 = run
                .unit::<_, CoreError, _>("finite", |_| {
                    calls += 1;
                    Ok(0.5)
                })
                .unwrap();
            assert_eq!(v, 0.5);
        }
        assert_eq!(calls, 3);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_unit_rerun_after_a_kill_logs_its_lines_once() {
        let d = tmpdir("unit-lines");
        let mut run = RunDir::create(&d).unwrap();
        run.log_metrics(&serde_json::json!({"stage": "setup"}))
            .unwrap();
        let work = |r: &mut RunDir, fail: bool| -> Result<u32> {
            for epoch in 0..3 {
                r.log_metrics(&serde_json::json!({ "epoch": epoch }))
                    .unwrap();
            }
            if fail {
                return Err(CoreError::Runtime("killed".into()));
            }
            Ok(7)
        };
        // A sitting that dies inside the unit leaves its lines but no saved result.
        assert!(run.unit("a", |r| work(r, true)).is_err());
        let lines = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        assert_eq!(lines(&d).lines().count(), 4);
        let mut again = RunDir::reopen(&d).unwrap();
        assert_eq!(again.unit("a", |r| work(r, false)).unwrap(), 7);
        again
            .log_metrics(&serde_json::json!({"stage": "end"}))
            .unwrap();
        let text = lines(&d);
        let recs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 5, "{text}");
        assert_eq!(recs[0], serde_json::json!({"stage": "setup"}));
        for (i, r) in recs[1..4].iter().enumerate() {
            assert_eq!(r, &serde_json::json!({"epoch": i, "unit": "a"}));
        }
        assert_eq!(recs[4], serde_json::json!({"stage": "end"}));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_metrics_file_is_refused_on_resume() {
        use crate::system::{Classify, ErrorClass};
        let d = tmpdir("reopen");
        let mut run = RunDir::create(&d).unwrap();
        run.log_metrics(&serde_json::json!({"step": 1})).unwrap();
        run.log_metrics(&serde_json::json!({"step": 2})).unwrap();
        assert_eq!(RunDir::reopen(&d).unwrap().metrics_lines.len(), 2);
        let m = d.join("metrics.jsonl");
        let whole = std::fs::read(&m).unwrap();
        let mut blanks = b"\n".to_vec();
        blanks.extend(&whole);
        blanks.extend(b"  \n");
        std::fs::write(&m, &blanks).unwrap();
        assert_eq!(RunDir::reopen(&d).unwrap().metrics_lines.len(), 2);
        for (bytes, says) in [
            (
                whole[..whole.len() - 4].to_vec(),
                "line 2 is not a JSON record",
            ),
            (b"\xff\xfe{}\n".to_vec(), "not UTF-8"),
        ] {
            std::fs::write(&m, bytes).unwrap();
            let e = RunDir::reopen(&d).unwrap_err();
            assert_eq!(e.class(), ErrorClass::Usage, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        std::fs::remove_file(&m).unwrap();
        std::fs::create_dir(&m).unwrap();
        let e = RunDir::reopen(&d).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage, "{e}");
        assert!(e.to_string().contains("a folder"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_out_file_that_cannot_be_written_is_a_usage_error_before_work() {
        use crate::system::{Classify, ErrorClass};
        let d = tmpdir("outfile");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
        for (bad, says) in [
            (d.clone(), "is a folder"),
            (d.join("nope/x.ct"), "does not exist"),
            (d.join("f/x.ct"), "is not a folder"),
            (PathBuf::from(".."), "names no file"),
            // An existing file — the command's own input, a key, an earlier result — is
            // never replaced.
            (d.join("f"), "already exists"),
        ] {
            let e = check_out_file(&bad).unwrap_err();
            assert_eq!(e.class(), ErrorClass::Usage, "{e}");
            let text = e.to_string();
            assert!(text.contains(says) && text.contains("--out "), "{text}");
        }
        check_out_file(&d.join("x.ct")).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_filled_folder_appears_whole_or_not_at_all() {
        let d = tmpdir("fill");
        std::fs::create_dir_all(&d).unwrap();
        let out = d.join("export");
        // A failure part-way leaves neither `out` nor the staging folder.
        let e = fill_fresh_folder(&out, |dir| {
            std::fs::write(dir.join("train.tsv"), b"1").unwrap();
            Err::<(), _>(CoreError::Runtime("disk full".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        // Success: every file under `out`, nothing else beside it; an empty `out` is allowed.
        std::fs::create_dir_all(&out).unwrap();
        let n = fill_fresh_folder(&out, |dir| {
            write_atomic(&dir.join("train.tsv"), b"1")?;
            write_atomic(&dir.join("test.tsv"), b"2")?;
            Ok::<_, CoreError>(2)
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(out.join("test.tsv")).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        // A folder holding files is refused before `fill` runs.
        let e = fill_fresh_folder(&out, |_| -> Result<()> { panic!("must not run") }).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("not empty"), "{e}");
        // An empty `out` reached through a link is filled in place, and emptied on failure.
        let real = d.join("real");
        std::fs::create_dir_all(&real).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        fill_fresh_folder(&link, |dir| {
            std::fs::create_dir_all(dir.join("images")).unwrap();
            Err::<(), _>(CoreError::Runtime("render failed".into()))
        })
        .unwrap_err();
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
        fill_fresh_folder(&link, |dir| write_atomic(&dir.join("a.json"), b"{}")).unwrap();
        assert_eq!(std::fs::read(real.join("a.json")).unwrap(), b"{}");
        // A trailing `/.` or `/` names the same folder; nothing is left beside it.
        for (i, spelling) in ["x/.", "y/"].iter().enumerate() {
            let o = d.join(spelling);
            fill_fresh_folder(&o, |dir| write_atomic(&dir.join("f"), b"1")).unwrap();
            let name = ["x", "y"][i];
            assert_eq!(std::fs::read(d.join(name).join("f")).unwrap(), b"1");
        }
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["export", "link", "real", "x", "y"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn run_dir_writes_and_refuses_to_overwrite() {
        let d = tmpdir("a");
        let mut run = RunDir::create(&d).unwrap();
        run.write_config("a = 1\n").unwrap();
        run.log_metrics(&serde_json::json!({"epoch": 0})).unwrap();
        run.log_metrics(&serde_json::json!({"epoch": 1})).unwrap();
        let mut r = Report::new("x", "y", 3);
        r.metrics.insert("test_accuracy".into(), 0.5);
        run.write_report(&r).unwrap();
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
        assert_eq!(back, r);
        let lines = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2);
        let e = RunDir::create(&d).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("already holds a run"));
        // No temporary files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&d).ok();
    }

    /// A folder where a unit's file belongs (a damaged folder under `--resume`) is a usage
    /// error before the unit's work runs; so is one where any file is written atomically.
    #[test]
    fn a_folder_in_a_files_place_is_a_usage_error_before_the_work() {
        let d = tmpdir("unit-dir");
        let mut run = RunDir::create(&d).unwrap();
        let first: u32 = run.unit("done", |_| Ok::<_, CoreError>(7)).unwrap();
        assert_eq!(first, 7);
        std::fs::create_dir_all(d.join("units").join("next.json")).unwrap();
        let mut ran = false;
        let e = run
            .unit("next", |_| {
                ran = true;
                Ok::<u32, CoreError>(1)
            })
            .unwrap_err();
        assert!(!ran, "the unit's work ran before the damage was reported");
        assert!(e.is_usage() && e.to_string().contains("next.json"), "{e}");
        let e = write_atomic(&d.join("units"), b"x").unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("units"), "{e}");
        // The saved unit is still returned.
        assert_eq!(run.unit("done", |_| Ok::<u32, CoreError>(0)).unwrap(), 7);
        std::fs::remove_dir_all(&d).ok();
    }

    #[derive(burn::module::Module, Debug)]
    struct Nested {
        layers: Vec<burn::nn::Linear>,
        head: Option<burn::nn::Linear>,
        norm: burn::nn::BatchNorm,
        conv: burn::nn::conv::Conv2d,
    }

    #[test]
    fn param_layout_names_and_shapes_are_collects() {
        let _rng = crate::backend::exclusive_rng();
        use burn::module::Module;
        use burn::store::ModuleSnapshot;
        let dev = crate::backend::device();
        let net = Nested {
            layers: vec![
                burn::nn::LinearConfig::new(3, 4).init(&dev),
                burn::nn::LinearConfig::new(4, 2)
                    .with_bias(false)
                    .init(&dev),
            ],
            head: Some(burn::nn::LinearConfig::new(2, 5).init(&dev)),
            norm: burn::nn::BatchNormConfig::new(6).init(&dev),
            conv: burn::nn::conv::Conv2dConfig::new([2, 3], [3, 3]).init(&dev),
        };
        let lazy: BTreeMap<String, (Vec<usize>, Option<&str>)> = param_layout(&net)
            .into_iter()
            .map(|p| (p.name, (p.shape, p.float_dtype)))
            .collect();
        let net = net.no_grad();
        let collected: BTreeMap<String, (Vec<usize>, Option<&str>)> = net
            .collect(None, None, false)
            .into_iter()
            .map(|t| {
                let f = matches!(t.dtype, burn::tensor::DType::F32).then_some("F32");
                (t.name.clone(), (t.shape.to_vec(), f))
            })
            .collect();
        assert_eq!(lazy, collected);
        assert!(lazy.contains_key("layers.1.weight") && lazy.contains_key("norm.running_var"));
    }

    #[test]
    fn loading_into_a_fresh_model_draws_nothing_from_the_generator() {
        use burn::nn::LinearConfig;
        use burn::tensor::Distribution;
        let d = tmpdir("ckpt-draw");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("m.safetensors");
        let _g = crate::backend::exclusive_rng();
        let dev = crate::backend::train_device();
        save_checkpoint(&LinearConfig::new(5, 4).init(&dev), &p).unwrap();
        let draw = |dev: &burn::prelude::Device| {
            burn::Tensor::<1>::random([16], Distribution::Default, dev)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        dev.seed(9);
        let want = draw(&dev);
        dev.seed(9);
        let loaded = load_checkpoint(LinearConfig::new(5, 4).init(&dev), &p).unwrap();
        crate::backend::materialize(&loaded);
        assert_eq!(draw(&dev), want, "loading drew from the generator");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn load_checkpoint_checks_the_header_and_every_shape_first() {
        let _rng = crate::backend::exclusive_rng();
        use burn::nn::LinearConfig;
        let d = tmpdir("ckpt");
        std::fs::create_dir_all(&d).unwrap();
        let dev = crate::backend::device();
        let p = d.join("m.safetensors");
        save_checkpoint(&LinearConfig::new(3, 2).init(&dev), &p).unwrap();
        let header = read_safetensors_header(&p).unwrap();
        assert_eq!(header["weight"].shape, vec![3, 2]);
        assert!(load_checkpoint(LinearConfig::new(3, 2).init(&dev), &p).is_ok());
        // Another shape: one line naming the tensor and both shapes, no burn summary.
        let e = load_checkpoint(LinearConfig::new(3, 4).init(&dev), &p)
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains('\n')
                && e.contains("tensor bias")
                && e.contains("[2]")
                && e.contains("[4]"),
            "{e}"
        );
        // A tensor the model lacks.
        let e = load_checkpoint(LinearConfig::new(3, 2).with_bias(false).init(&dev), &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bias") && !e.contains('\n'), "{e}");
        // Truncated data and an absurd header length.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_safetensors_header(&p).unwrap_err().to_string();
        assert!(e.contains("truncated") || e.contains("data"), "{e}");
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&p, &huge).unwrap();
        assert!(read_safetensors_header(&p).is_err());
        assert!(read_safetensors_header(&d).is_err());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn atomic_write_keeps_old_file_when_target_dir_is_missing() {
        let d = tmpdir("b");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("f.txt");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(write_atomic(&d.join("nope/f.txt"), b"x").is_err());
        std::fs::remove_dir_all(&d).ok();
    }
}
