//! The targets that drive the `ferrolab` binary: config files and `--set` values (through
//! `--print-config`, so nothing trains) and checkpoint folders (`secnn predict`,
//! `apg predict`, `classify predict`) built once by a tiny training run.

use crate::rng::Rng;
use crate::{json, mutate};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Sub-commands of the binary that are utilities, not systems.
const UTILITIES: &[&str] = &["data", "eval", "fed", "hcnn", "reproduce", "help"];

/// The systems the binary registers, read from its `--help` (so a new system's configuration
/// is fuzzed without editing this harness).
pub fn systems(bin: &Path, cwd: &Path) -> Result<Vec<String>, String> {
    let help = String::from_utf8_lossy(&output(bin, &["--help"], cwd)?).into_owned();
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !UTILITIES.contains(n))
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(format!("{}: --help lists no systems", bin.display()));
    }
    Ok(names)
}

/// A documented key of `--print-config`: its full name, default text and range text.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub default: String,
    pub range: String,
}

/// What the binary targets need, built once before the campaign.
#[derive(Debug)]
pub struct Setup {
    pub bin: PathBuf,
    /// `(system, print-config text)`.
    pub configs: Vec<(String, String)>,
    /// `(system, keys)`.
    pub keys: Vec<(String, Vec<Key>)>,
    pub secnn_ckpt: PathBuf,
    pub apg_ckpt: PathBuf,
    pub apg_rows: Vec<u8>,
    pub classify_ckpt: PathBuf,
    /// A finished tiny classify run (its `train-state` is what `--resume` reads).
    pub classify_run: PathBuf,
    /// An IDX file of three 28x28 images for `classify predict`.
    pub classify_input: Vec<u8>,
    /// A tiny ADOD checkpoint and a rendered PNG for `adod predict`.
    pub adod_ckpt: PathBuf,
    pub adod_input: Vec<u8>,
    /// A tiny AttenScribble checkpoint (trained on generated ACDC-layout files) and a volume
    /// npz for `attenscribble predict`.
    pub attenscribble_ckpt: PathBuf,
    pub attenscribble_input: PathBuf,
    /// An AttenScribble run stopped after 2 of its 4 iterations (`train-state/` holds its
    /// state), and the arguments that continue it (without `--resume`).
    pub attenscribble_resume_run: PathBuf,
    pub attenscribble_resume_args: Vec<String>,
    /// A finished tiny layer-importance run (its checkpoints and units are what `--resume`
    /// reads back).
    pub li_run: PathBuf,
}

fn output(bin: &Path, args: &[&str], cwd: &Path) -> Result<Vec<u8>, String> {
    let o = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !o.status.success() {
        return Err(format!(
            "`ferrolab {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(o.stdout)
}

/// Keys, defaults and ranges from `--print-config` text.
pub fn parse_keys(text: &str) -> Vec<Key> {
    let mut section = String::new();
    let mut range = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(s) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            range.clear();
        } else if let Some(doc) = t.strip_prefix('#') {
            let doc = doc.trim();
            if let Some(k) = doc.strip_suffix("= (unset)") {
                out.push(Key {
                    name: format!("{section}.{}", k.trim()),
                    default: String::new(),
                    range: std::mem::take(&mut range),
                });
            } else if doc.ends_with(']') {
                range = doc
                    .rfind('[')
                    .map(|i| doc[i..].to_string())
                    .unwrap_or_default();
            } else {
                range.clear();
            }
        } else if let Some((k, v)) = t.split_once('=') {
            out.push(Key {
                name: format!("{section}.{}", k.trim()),
                default: v.trim().to_string(),
                range: std::mem::take(&mut range),
            });
        }
    }
    out
}

/// A classify run that trains in a fraction of a second (the resume cases repeat it).
const CLASSIFY_TINY: [&str; 17] = [
    "classify",
    "--set",
    "data.dataset=synthetic",
    "--set",
    "data.synthetic_train=300",
    "--set",
    "data.synthetic_test=50",
    "--set",
    "data.val_size=50",
    "--set",
    "model.arch=mlp",
    "--set",
    "model.mlp_hidden=[8]",
    "--set",
    "train.epochs=1",
    "--threads",
    "1",
];

/// Builds the seeds: each system's resolved config, a tiny SECNN and a tiny APG checkpoint.
pub fn setup(bin: &Path, work: &Path) -> Result<Setup, String> {
    let mut configs = Vec::new();
    let mut keys = Vec::new();
    for s in systems(bin, work)? {
        let s = s.as_str();
        let text =
            String::from_utf8_lossy(&output(bin, &[s, "--print-config"], work)?).into_owned();
        keys.push((s.to_string(), parse_keys(&text)));
        configs.push((s.to_string(), text));
        let quick = output(bin, &[s, "--print-config", "--preset", "quick"], work)?;
        configs.push((s.to_string(), String::from_utf8_lossy(&quick).into_owned()));
    }
    let mut sentences = String::new();
    for i in 0..60 {
        sentences.push_str(&format!(
            "{} the film was {} and the plot {}\n",
            i % 2,
            ["great", "awful"][i % 2],
            ["moved", "ran", "went"][i % 3]
        ));
    }
    let train = work.join("sentences.txt");
    std::fs::write(&train, sentences).map_err(|e| format!("{}: {e}", train.display()))?;
    let train_set = format!("data.train={}", train.display());
    let secnn_out = work.join("secnn-run");
    let secnn_out_s = secnn_out.display().to_string();
    #[rustfmt::skip]
    output(bin, &["secnn", "--set", &train_set, "--set", "model.embed_dim=4", "--set", "model.maps=2",
        "--set", "model.se_reduction=1", "--set", "model.widths=[2,3]", "--set", "train.epochs=1",
        "--set", "train.seeds=1", "--out", &secnn_out_s, "--threads", "1"], work)?;
    let apg_out = work.join("apg-run");
    let apg_out_s = apg_out.display().to_string();
    #[rustfmt::skip]
    output(bin, &["apg", "--set", "data.dataset=synthetic", "--set", "data.train_rows=400",
        "--set", "data.valid_rows=100", "--set", "data.test_rows=100", "--set", "model.models=[\"deepfm\"]",
        "--set", "model.embed_dim=4", "--set", "model.hidden=[8]", "--set", "apg.rank=2",
        "--set", "apg.overparam=4", "--set", "apg.hyper_hidden=4", "--set", "train.epochs=1",
        "--set", "train.seeds=1", "--set", "efficiency.enabled=false", "--out", &apg_out_s,
        "--threads", "1"], work)?;
    let apg_rows = output(bin, &["apg", "generate", "--rows", "4", "--no-label"], work)?;
    let classify_out = work.join("classify-run");
    let classify_out_s = classify_out.display().to_string();
    let mut classify_args = CLASSIFY_TINY.to_vec();
    classify_args.extend(["--out", &classify_out_s]);
    output(bin, &classify_args, work)?;
    let mut classify_input = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28];
    classify_input.extend((0..3 * 28 * 28).map(|i| (i * 37 % 251) as u8));
    let adod_out = work.join("adod-run");
    let adod_out_s = adod_out.display().to_string();
    #[rustfmt::skip]
    output(bin, &["adod", "--preset", "quick", "--set", "train.iterations=2",
        "--set", "data.train_per_type=4", "--set", "data.test_per_type=2",
        "--set", "model.widths=[2,2,2,2,2,2,2]", "--out", &adod_out_s, "--threads", "1"], work)?;
    let synth = work.join("adod-synth");
    let synth_s = synth.display().to_string();
    #[rustfmt::skip]
    output(bin, &["adod", "synth", "--types", "7", "--images", "1", "--size", "64",
        "--out", &synth_s], work)?;
    let png = synth.join("images/7_00000.png");
    let adod_input = std::fs::read(&png).map_err(|e| format!("{}: {e}", png.display()))?;
    let (attenscribble_ckpt, attenscribble_input) = attenscribble_setup(bin, work)?;
    let (attenscribble_resume_run, attenscribble_resume_args) =
        attenscribble_resume_setup(&work.join("acdc"), work)?;
    let li_run = work.join("li-run");
    let li_out = li_run.display().to_string();
    let mut li_args = LI_TINY.to_vec();
    li_args.extend(["--out", &li_out]);
    output(bin, &li_args, work)?;
    Ok(Setup {
        bin: bin.to_path_buf(),
        configs,
        keys,
        secnn_ckpt: secnn_out.join("checkpoint"),
        apg_ckpt: apg_out.join("checkpoint"),
        apg_rows,
        classify_ckpt: classify_out.join("checkpoint"),
        classify_run: classify_out,
        classify_input,
        adod_ckpt: adod_out.join("checkpoint"),
        adod_input,
        attenscribble_ckpt,
        attenscribble_input,
        attenscribble_resume_run,
        attenscribble_resume_args,
        li_run,
    })
}

/// Trains a two-step AttenScribble on generated files in the ACDC layout (`train/` slices,
/// `val/` volumes; the real data is not needed): its checkpoint and a volume to segment.
fn attenscribble_setup(bin: &Path, work: &Path) -> Result<(PathBuf, PathBuf), String> {
    let data = work.join("acdc");
    let write = |rel: &str, shape: &[usize]| {
        let p = data.join(rel);
        let members = crate::readers::acdc_members(shape);
        let refs: Vec<(&str, Vec<u8>)> = members
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        std::fs::create_dir_all(p.parent().unwrap_or(&data))
            .and_then(|()| {
                ferrolab_data::npz::write_npz(&p, &refs, false).map_err(std::io::Error::other)
            })
            .map_err(|e| format!("{}: {e}", p.display()))?;
        Ok::<PathBuf, String>(p)
    };
    write("train/patient021_frame01_slice_0.npz", &[20, 18])?;
    write("train/patient022_frame01_slice_0.npz", &[18, 20])?;
    let volume = write("val/patient011_frame01.npz", &[3, 20, 18])?;
    let out = work.join("attenscribble-run");
    let (data_s, out_s) = (
        format!("data.dir={}", data.display()),
        out.display().to_string(),
    );
    #[rustfmt::skip]
    output(bin, &["attenscribble", "--preset", "quick", "--set", &data_s, "--set", "data.size=16",
        "--set", "train.iterations=2", "--set", "train.batch_size=2", "--set", "train.seeds=1",
        "--set", "train.methods=[\"attenscribble\"]", "--set", "model.widths=[2,2]",
        "--set", "model.dropout=[0,0]", "--set", "model.attention_level=1",
        "--set", "train.eval_every=2", "--set", "loss.crf_radius=1", "--set", "loss.attn_radius=1",
        "--out", &out_s, "--threads", "1"], work)?;
    Ok((out.join("checkpoint"), volume))
}

/// The tiny AttenScribble run of the `--resume` target (after `--preset quick` and the data
/// folder): 4 iterations, a training state every 2.
const AS_RESUME_SETS: [&str; 13] = [
    "data.size=16",
    "train.iterations=4",
    "train.batch_size=2",
    "train.seeds=1",
    "train.methods=[\"attenscribble\"]",
    "model.widths=[2,2]",
    "model.dropout=[0,0]",
    "model.attention_level=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "loss.crf_radius=1",
    "loss.attn_radius=1",
    "loss.attn_start=0",
];

/// Stops a tiny AttenScribble run on the generated `data` after 2 of its 4 iterations, in
/// process — `experiment::run_with`'s stop, which leaves what a kill at that point leaves: the
/// resolved `config.toml` and `train-state/attenscribble-seed0/` (`state.json`,
/// `it-00000002/{model,best,optim}.bpk`). Returns the folder and the arguments that continue
/// it, so the CLI's resolved configuration matches the folder's.
fn attenscribble_resume_setup(data: &Path, work: &Path) -> Result<(PathBuf, Vec<String>), String> {
    use ferrolab_vision::attenscribble::{AttenScribbleSystem, experiment};
    let err = |e: &dyn std::fmt::Display| format!("attenscribble resume setup: {e}");
    let mut sets = vec![format!("data.dir={}", data.display())];
    sets.extend(AS_RESUME_SETS.iter().map(|s| s.to_string()));
    let checked =
        ferrolab_core::system::resolve_config(&AttenScribbleSystem, Some("quick"), None, &sets)
            .map_err(|e| err(&e))?;
    let toml = ferrolab_core::config::to_toml(checked.get()).map_err(|e| err(&e))?;
    let root = work.join("attenscribble-resume.incomplete");
    let run = ferrolab_core::RunDir::create(&root).map_err(|e| err(&e))?;
    run.write_config(&toml).map_err(|e| err(&e))?;
    let mut ctx = ferrolab_core::RunContext::new(0, 1, None, run);
    match experiment::run_with(&checked, &mut ctx, Some(2)) {
        Err(e) if e.to_string().contains("--resume") => {}
        Err(e) => return Err(err(&e)),
        Ok(_) => return Err(err(&"the run was not stopped")),
    }
    let mut args = vec![
        "attenscribble".to_string(),
        "--preset".into(),
        "quick".into(),
    ];
    for s in sets {
        args.extend(["--set".to_string(), s]);
    }
    args.extend(["--threads".to_string(), "1".into()]);
    Ok((root, args))
}

/// One prepared invocation: arguments, an optional stdin file and the exit codes allowed.
#[derive(Debug)]
pub struct Invocation {
    pub args: Vec<String>,
    pub stdin: Option<PathBuf>,
    pub allowed: &'static [i32],
    /// Re-run with `--config <stdout>` and expect the same output (print-config round trip).
    pub round_trip: Option<String>,
}

fn numbers_in(s: &str) -> Vec<f64> {
    mutate::number_spans(s.as_bytes())
        .into_iter()
        .filter_map(|(a, b)| s[a..b].parse().ok())
        .collect()
}

/// A value for `key` at or beyond one of its bounds (or of another type).
fn edge_value(rng: &mut Rng, key: &Key) -> String {
    let mut cands: Vec<String> = Vec::new();
    for v in numbers_in(&key.range)
        .into_iter()
        .chain(numbers_in(&key.default))
    {
        let is_int = v.fract() == 0.0 && v.abs() < 1e15;
        if is_int {
            let i = v as i64;
            cands.extend([i - 1, i, i + 1].iter().map(i64::to_string));
        } else {
            cands.extend(
                [
                    v,
                    v * (1.0 - 1e-9),
                    v * (1.0 + 1e-9),
                    v.next_up(),
                    v.next_down(),
                ]
                .iter()
                .map(|x| format!("{x:?}")),
            );
        }
    }
    if key.default.starts_with('[') {
        let inner = if cands.is_empty() {
            "1".to_string()
        } else {
            rng.pick(&cands).clone()
        };
        cands = vec![
            "[]".into(),
            format!("[{inner}]"),
            format!("[{inner}, {inner}]"),
            format!("[{}]", vec![inner.clone(); 64].join(",")),
            "[\"a\"]".into(),
            format!("[{}]", rng.pick(mutate::EDGE_NUMBERS)),
        ];
    } else if key.default.starts_with('"') || key.default.is_empty() {
        cands.extend(
            [
                "\"\"",
                "\"nosuch\"",
                "none",
                "\"none\"",
                "/nonexistent/x",
                "\"\u{e9}\u{263a}\"",
                "1",
                "[1]",
                "true",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        cands.push("x".repeat(5000));
    } else if key.default == "true" || key.default == "false" {
        cands.extend(
            ["0", "1", "\"true\"", "yes", "TRUE"]
                .iter()
                .map(|s| s.to_string()),
        );
    }
    if cands.is_empty() || rng.chance(0.2) {
        return rng.pick(mutate::EDGE_NUMBERS).to_string();
    }
    rng.pick(&cands).clone()
}

/// `--set` values at and beyond the bounds, one to three keys per run.
pub fn set_case(rng: &mut Rng, s: &Setup) -> Invocation {
    let (sys, keys) = &s.keys[rng.below(s.keys.len())];
    let mut args = vec![sys.clone(), "--print-config".to_string()];
    let n = 1 + rng.below(3);
    for _ in 0..n {
        if keys.is_empty() {
            break;
        }
        let key = rng.pick(keys);
        let value = edge_value(rng, key);
        let name = if rng.chance(0.03) {
            format!("{}x", key.name)
        } else {
            key.name.clone()
        };
        args.push("--set".into());
        args.push(format!("{name}={value}"));
    }
    Invocation {
        args,
        stdin: None,
        allowed: &[0, 2],
        round_trip: Some(sys.clone()),
    }
}

/// A mutated config file (written to `dir`) through `--print-config --config`.
pub fn config_case(rng: &mut Rng, s: &Setup, dir: &Path) -> std::io::Result<Invocation> {
    let (sys, text) = &s.configs[rng.below(s.configs.len())];
    let other = s.configs[rng.below(s.configs.len())].1.as_bytes();
    let mut bytes = text.as_bytes().to_vec();
    match rng.below(10) {
        0..=5 => mutate::text(rng, &mut bytes, other),
        6 => {
            // A value of another type.
            let spans: Vec<usize> = bytes
                .windows(3)
                .enumerate()
                .filter(|(_, w)| w == b" = ")
                .map(|(i, _)| i + 3)
                .collect();
            if let Some(&at) = spans.get(rng.below(spans.len().max(1))) {
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| at + p);
                let v = rng.pick(&[
                    "\"7\"",
                    "[1, 2]",
                    "{ a = 1 }",
                    "true",
                    "1979-05-27",
                    "'''x'''",
                    "-0",
                    "inf",
                    "nan",
                    "[[1]]",
                    "[]",
                    "\"\"",
                ]);
                bytes.splice(at..end, v.bytes());
            }
        }
        7 => {
            // An unknown key, a repeated key or a repeated section.
            let extra = rng.pick(&[
                "\nnosuch = 1\n",
                "\n[nosuch]\nx = 1\n",
                "\n[train]\n",
                "\n[model]\nepochs = 1\n",
                "\ntrain.epochs = 2\n",
                "\n[data]\n",
            ]);
            let at = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i)
                .collect::<Vec<_>>();
            let p = at.get(rng.below(at.len().max(1))).copied().unwrap_or(0);
            bytes.splice(p..p, extra.bytes());
        }
        _ => mutate::bytes(rng, &mut bytes, other),
    }
    let f = dir.join("config.toml");
    std::fs::write(&f, bytes)?;
    Ok(Invocation {
        args: vec![
            sys.clone(),
            "--print-config".into(),
            "--config".into(),
            f.display().to_string(),
        ],
        stdin: None,
        allowed: &[0, 2],
        round_trip: Some(sys.clone()),
    })
}

/// A mutated job file of `ferrolab fed client --system sdgt|fedgraph` (the system's resolved
/// config plus a `[job]` table). The NATS URL refuses connections, so no case can do work:
/// every one must end in a clear error (2 for what the user wrote; 1 for a failure building
/// the run's data), never in a panic or a hang.
pub fn fed_job_case(rng: &mut Rng, s: &Setup, dir: &Path) -> std::io::Result<Invocation> {
    let jobs: Vec<&(String, String)> = s
        .configs
        .iter()
        .filter(|(sys, _)| sys == "sdgt" || sys == "fedgraph")
        .collect();
    let Some(&(sys, text)) = jobs.get(rng.below(jobs.len().max(1))) else {
        return Err(std::io::Error::other(
            "no sdgt or fedgraph config to seed fed-job",
        ));
    };
    let job = if sys == "fedgraph" {
        format!(
            "\n[job]\nmaster_seed = {}\nalgo = \"{}\"\nlr = {}\nlocal_steps = {}\nseed_index = {}\n",
            rng.below(5),
            rng.pick(&["fedavg", "fedprox", "fedopt", "fedsage", ""]),
            rng.pick(&["0.25", "0.01", "0", "-1"]),
            rng.below(6),
            rng.below(7),
        )
    } else {
        format!(
            "\n[job]\nmaster_seed = {}\nalgo = \"{}\"\nlr = {}\nseed_index = {}\n",
            rng.below(5),
            rng.pick(&["sdgt", "fedavg", "scaffold", "bogus", ""]),
            rng.pick(&["0.05", "0", "-1"]),
            rng.below(4),
        )
    };
    let mut bytes = format!("{text}{job}").into_bytes();
    let other = s.configs[rng.below(s.configs.len())].1.as_bytes();
    match rng.below(4) {
        0 => {}
        1 | 2 => mutate::text(rng, &mut bytes, other),
        _ => mutate::bytes(rng, &mut bytes, other),
    }
    let f = dir.join("job.toml");
    std::fs::write(&f, bytes)?;
    Ok(Invocation {
        args: vec![
            "fed".into(),
            "client".into(),
            "--system".into(),
            sys.clone(),
            "--id".into(),
            rng.below(6).to_string(),
            "--config".into(),
            f.display().to_string(),
            "--nats".into(),
            "nats://127.0.0.1:1".into(),
        ],
        stdin: None,
        allowed: &[1, 2],
        round_trip: None,
    })
}

/// A safetensors file damaged in its JSON header (a node edited) or its bytes; also the
/// `params` reader target's mutation.
pub(crate) fn mutate_safetensors(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.len() >= 8 && rng.chance(0.6) {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n <= bytes.len() - 8 {
            let header = &bytes[8..8 + n];
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(header) {
                json::mutate(rng, &mut v);
                let mut h = v.to_string().into_bytes();
                // safetensors pads the header with spaces to 8 bytes.
                while h.len() % 8 != 0 {
                    h.push(b' ');
                }
                let mut out = (h.len() as u64).to_le_bytes().to_vec();
                if rng.chance(0.1) {
                    out = (h.len() as u64 + 8).to_le_bytes().to_vec();
                }
                out.extend(h);
                out.extend_from_slice(&bytes[8 + n..]);
                *bytes = out;
                return;
            }
        }
    }
    mutate::bytes(rng, bytes, &[]);
}

/// A mutated copy of a checkpoint folder (written to `dir/checkpoint`) through
/// `<system> predict --checkpoint`.
pub fn checkpoint_case(
    rng: &mut Rng,
    s: &Setup,
    dir: &Path,
    system: &str,
) -> std::io::Result<Invocation> {
    let (src, names): (&Path, &[&str]) = match system {
        "secnn" => (
            &s.secnn_ckpt,
            &["meta.json", "model.safetensors", "vocab.txt"],
        ),
        "classify" => (&s.classify_ckpt, &["meta.json", "model.safetensors"]),
        "adod" => (&s.adod_ckpt, &["meta.json", "model.safetensors"]),
        "attenscribble" => (&s.attenscribble_ckpt, &["meta.json", "model.safetensors"]),
        _ => (&s.apg_ckpt, &["meta.json", "model.safetensors"]),
    };
    let ck = dir.join("checkpoint");
    std::fs::create_dir_all(&ck)?;
    for n in names {
        std::fs::copy(src.join(n), ck.join(n))?;
    }
    let which = match rng.below(20) {
        0..=7 => "meta.json",
        8..=15 => "model.safetensors",
        16..=17 if system == "secnn" => "vocab.txt",
        _ => "",
    };
    if which.is_empty() {
        // A file missing, or a folder where a file should be.
        let n = rng.pick(names);
        std::fs::remove_file(ck.join(n))?;
        if rng.chance(0.5) {
            std::fs::create_dir(ck.join(n))?;
        }
    } else {
        let p = ck.join(which);
        let mut bytes = std::fs::read(&p)?;
        match which {
            "meta.json" => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(mut v) if rng.chance(0.7) => {
                    json::mutate(rng, &mut v);
                    bytes = v.to_string().into_bytes();
                }
                _ => mutate::text(rng, &mut bytes, &[]),
            },
            "model.safetensors" => mutate_safetensors(rng, &mut bytes),
            _ => mutate::text(rng, &mut bytes, &[]),
        }
        std::fs::write(&p, bytes)?;
    }
    let mut args = vec![
        system.to_string(),
        "predict".into(),
        "--checkpoint".into(),
        ck.display().to_string(),
        "--threads".into(),
        "1".into(),
    ];
    // Images come as a file argument (a PNG for adod, IDX for classify), damaged in a fifth
    // of the cases.
    let image_input = match system {
        "adod" => Some((&s.adod_input, "image.png")),
        "classify" => Some((&s.classify_input, "images.idx")),
        _ => None,
    };
    if let Some((bytes, name)) = image_input {
        let mut input = bytes.clone();
        if rng.chance(0.2) {
            mutate::bytes(rng, &mut input, &[]);
        }
        let f = dir.join(name);
        std::fs::write(&f, input)?;
        args.push(f.display().to_string());
        return Ok(Invocation {
            args,
            stdin: None,
            allowed: &[0, 1, 2],
            round_trip: None,
        });
    }
    if system == "attenscribble" {
        // `predict` reads the volume's `image` itself (not through the `acdc` reader), so a
        // fifth of the cases give it a damaged file or an `image` of another rank, size or
        // dtype, or whose data does not fill its shape.
        let mut input = s.attenscribble_input.clone();
        if rng.chance(0.2) {
            let f = dir.join("volume.npz");
            let bytes = if rng.chance(0.3) {
                let mut b = std::fs::read(&s.attenscribble_input)?;
                mutate::bytes(rng, &mut b, &[]);
                b
            } else {
                let rank = rng.below(5);
                let shape: Vec<usize> = (0..rank).map(|_| rng.below(7)).collect();
                let n: usize = shape.iter().product();
                let len = if rng.chance(0.8) {
                    n
                } else {
                    rng.below(2 * n + 2)
                };
                let dtype = *rng.pick(&["|u1", "|u1", "|u1", "<f4", "|i1", "<u2"]);
                let width = if dtype == "<f4" {
                    4
                } else if dtype == "<u2" {
                    2
                } else {
                    1
                };
                let data: Vec<u8> = (0..len * width).map(|i| (i * 37 % 251) as u8).collect();
                let npy = ferrolab_data::npy::npy_bytes(dtype, &shape, false, &data);
                ferrolab_data::npz::npz_bytes(&[("image", npy)], rng.chance(0.5))?
            };
            std::fs::write(&f, bytes)?;
            input = f;
        }
        args.extend([
            "--out".into(),
            dir.join("mask.npz").display().to_string(),
            input.display().to_string(),
        ]);
        return Ok(Invocation {
            args,
            stdin: None,
            allowed: &[0, 1, 2],
            round_trip: None,
        });
    }
    let mut input: Vec<u8> = if system == "secnn" {
        b"a good film\nthe plot went awful\n\n".to_vec()
    } else {
        s.apg_rows.clone()
    };
    if rng.chance(0.2) {
        mutate::text(rng, &mut input, &[]);
    }
    let stdin = dir.join("stdin.txt");
    std::fs::write(&stdin, input)?;
    Ok(Invocation {
        args,
        stdin: Some(stdin),
        allowed: &[0, 1, 2],
        round_trip: None,
    })
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// The first folder inside `dir` (a training state's checkpoint folder).
fn first_subdir(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .ok_or_else(|| std::io::Error::other(format!("{} holds no folder", dir.display())))
}

/// Damages one file of a training state: `parts[i]` edited with weight `weights[i]` (a JSON
/// file structurally in most cases, otherwise its bytes), or, with weight 1, one of them
/// removed (and a folder put in its place half the time).
fn damage_one(rng: &mut Rng, parts: &[PathBuf], weights: &[usize]) -> std::io::Result<()> {
    let mut draw = rng.below(weights.iter().sum::<usize>() + 1);
    let Some(p) = parts.iter().zip(weights).find_map(|(p, &w)| {
        if draw < w {
            Some(p)
        } else {
            draw -= w;
            None
        }
    }) else {
        let victim = rng.pick(parts).clone();
        std::fs::remove_file(&victim)?;
        if rng.chance(0.5) {
            std::fs::create_dir(&victim)?;
        }
        return Ok(());
    };
    let mut bytes = std::fs::read(p)?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) if rng.chance(0.7) => {
            json::mutate(rng, &mut v);
            bytes = v.to_string().into_bytes();
        }
        _ => mutate::bytes(rng, &mut bytes, &[]),
    }
    std::fs::write(p, bytes)
}

/// A damaged training state (`train-state/`) of an unfinished tiny classify run, continued
/// with `classify --resume`.
pub fn resume_case(rng: &mut Rng, s: &Setup, dir: &Path) -> std::io::Result<Invocation> {
    let run = dir.join("r.incomplete");
    copy_tree(&s.classify_run, &run)?;
    // Without its report the run is unfinished, which is what --resume continues.
    std::fs::remove_file(run.join("report.json"))?;
    let state = run.join("train-state");
    let epoch = first_subdir(&state)?;
    let parts = [
        state.join("state.json"),
        epoch.join("model.bpk"),
        epoch.join("optim.bpk"),
    ];
    damage_one(rng, &parts, &[4, 3, 2])?;
    let mut args: Vec<String> = CLASSIFY_TINY.iter().map(|a| a.to_string()).collect();
    args.extend(["--resume".to_string(), run.display().to_string()]);
    Ok(Invocation {
        args,
        stdin: None,
        allowed: &[0, 1, 2],
        round_trip: None,
    })
}

/// A damaged training state of a stopped tiny AttenScribble run, continued with
/// `attenscribble --resume`: `state.json` or one of the model, best-model and optimiser
/// records edited, or one of them missing (or a folder in its place).
pub fn attenscribble_resume_case(
    rng: &mut Rng,
    s: &Setup,
    dir: &Path,
) -> std::io::Result<Invocation> {
    let run = dir.join("r.incomplete");
    copy_tree(&s.attenscribble_resume_run, &run)?;
    let unit = run.join("train-state/attenscribble-seed0");
    let it = first_subdir(&unit)?;
    let parts = [
        unit.join("state.json"),
        it.join("model.bpk"),
        it.join("best.bpk"),
        it.join("optim.bpk"),
    ];
    damage_one(rng, &parts, &[4, 2, 2, 1])?;
    let mut args = s.attenscribble_resume_args.clone();
    args.extend(["--resume".to_string(), run.display().to_string()]);
    Ok(Invocation {
        args,
        stdin: None,
        allowed: &[0, 1, 2],
        round_trip: None,
    })
}

/// A layer-importance run of two tiny members (quarter-width ResNet-8 and MLP) on generated
/// images that stops after the dataset (about a second; the resume cases repeat parts of it).
const LI_TINY: [&str; 19] = [
    "layer-importance",
    "--preset",
    "quick",
    "--set",
    "data.dataset=synthetic",
    "--set",
    "data.train_images=200",
    "--set",
    "data.eval_images=50",
    "--set",
    "zoo.epochs=1",
    "--set",
    "budget.finetune_images=50",
    "--set",
    "grid.flip_seeds=1",
    "--set",
    "task.stage=dataset",
    "--threads",
    "1",
];

/// A damaged layer-importance run continued with `layer-importance --resume`: a member's
/// checkpoint (`models/*.safetensors`, its probe unit removed so that it is loaded again) or
/// a unit file (`units/*.json`, the probe records read back) edited, or one of them missing.
pub fn li_resume_case(rng: &mut Rng, s: &Setup, dir: &Path) -> std::io::Result<Invocation> {
    let run = dir.join("r.incomplete");
    copy_tree(&s.li_run, &run)?;
    // Without its report the run is unfinished, which is what --resume continues.
    std::fs::remove_file(run.join("report.json"))?;
    let files = |sub: &str| -> std::io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(run.join(sub))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        v.sort();
        Ok(v)
    };
    let models = files("models")?;
    let units = files("units")?;
    if models.is_empty() || units.is_empty() {
        return Err(std::io::Error::other(
            "layer-importance run has no models or units",
        ));
    }
    match rng.below(10) {
        0..=4 => {
            let ck = rng.pick(&models).clone();
            let id = ck
                .file_stem()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = std::fs::remove_file(run.join("units").join(format!("probe-{id}.json")));
            let mut bytes = std::fs::read(&ck)?;
            mutate_safetensors(rng, &mut bytes);
            std::fs::write(&ck, bytes)?;
        }
        5..=8 => {
            let p = rng.pick(&units).clone();
            let mut bytes = std::fs::read(&p)?;
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(mut v) if rng.chance(0.8) => {
                    json::mutate(rng, &mut v);
                    bytes = v.to_string().into_bytes();
                }
                _ => mutate::bytes(rng, &mut bytes, &[]),
            }
            std::fs::write(&p, bytes)?;
        }
        _ => {
            let mut all = models.clone();
            all.extend(units.iter().cloned());
            let victim = rng.pick(&all).clone();
            std::fs::remove_file(&victim)?;
            if rng.chance(0.5) {
                std::fs::create_dir(&victim)?;
            }
        }
    }
    let mut args: Vec<String> = LI_TINY.iter().map(|a| a.to_string()).collect();
    args.extend(["--resume".to_string(), run.display().to_string()]);
    Ok(Invocation {
        args,
        stdin: None,
        allowed: &[0, 2],
        round_trip: None,
    })
}

/// `layer-importance probe` on a finished tiny run whose `config.toml`, `seed.txt` or a
/// member's checkpoint is damaged or missing, with flags drawn from valid and out-of-range
/// values (a member or layer that does not exist among them). The probe only reads the run:
/// every case ends in exit 0 or 2.
pub fn li_probe_case(rng: &mut Rng, s: &Setup, dir: &Path) -> std::io::Result<Invocation> {
    let run = dir.join("r");
    copy_tree(&s.li_run, &run)?;
    let mut models: Vec<PathBuf> = std::fs::read_dir(run.join("models"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    models.sort();
    if models.is_empty() {
        return Err(std::io::Error::other("layer-importance run has no models"));
    }
    let ck = rng.pick(&models).clone();
    let id = ck
        .file_stem()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match rng.below(10) {
        0..=3 => {
            let mut bytes = std::fs::read(&ck)?;
            mutate_safetensors(rng, &mut bytes);
            std::fs::write(&ck, bytes)?;
        }
        4 | 5 => {
            let f = run.join("config.toml");
            let mut bytes = std::fs::read(&f)?;
            mutate::text(rng, &mut bytes, &[]);
            std::fs::write(&f, bytes)?;
        }
        6 => {
            let f = run.join("seed.txt");
            let mut bytes = std::fs::read(&f)?;
            mutate::bytes(rng, &mut bytes, &[]);
            std::fs::write(&f, bytes)?;
        }
        7 => {
            let victim = rng
                .pick(&[run.join("config.toml"), run.join("seed.txt"), ck.clone()])
                .clone();
            std::fs::remove_file(&victim)?;
            if rng.chance(0.5) {
                std::fs::create_dir(&victim)?;
            }
        }
        // The flags alone.
        _ => {}
    }
    let mut args: Vec<String> = ["layer-importance", "probe", "--run"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.push(run.display().to_string());
    args.push("--model".into());
    args.push(if rng.chance(0.9) {
        id.clone()
    } else {
        "vgg-s0".into()
    });
    // Mostly valid flags, so that the damaged files are what the case tests.
    let bad_flags = rng.chance(0.2);
    for _ in 0..rng.below(3) {
        let layer = if bad_flags {
            rng.pick(&["fc9", "nosuch", ""])
        } else if id.starts_with("mlp") {
            rng.pick(&["fc1", "fc2", "fc3"])
        } else {
            rng.pick(&["stem", "fc", "block0.conv1", "block2.conv2"])
        };
        args.extend(["--layer".to_string(), layer.to_string()]);
    }
    let valid = [
        ("--prune", "0.5"),
        ("--prune", "0"),
        ("--prune-channels", "0.75"),
        ("--bits", "4"),
        ("--bits", "2"),
        ("--flips", "3"),
        ("--flips", "0"),
        ("--flips", "18446744073709551615"),
        ("--ber", "0.01"),
        ("--ber", "1"),
        ("--ber", "1e-20"),
        ("--flip-seeds", "2"),
    ];
    let invalid = [
        ("--prune", "1"),
        ("--prune", "nan"),
        ("--prune-channels", "-0.5"),
        ("--bits", "9"),
        ("--ber", "inf"),
        ("--flip-seeds", "0"),
    ];
    for _ in 0..1 + rng.below(3) {
        let (flag, value) = *rng.pick(&valid);
        args.extend([flag.to_string(), value.to_string()]);
    }
    if bad_flags {
        let (flag, value) = *rng.pick(&invalid);
        args.extend([flag.to_string(), value.to_string()]);
    }
    args.extend(["--threads".to_string(), "1".to_string()]);
    Ok(Invocation {
        args,
        stdin: None,
        allowed: &[0, 2],
        round_trip: None,
    })
}

/// A COCO ground-truth file (crowd region, an image without boxes, `area` unlike `w·h`).
const COCO_GT: &str = r#"{"images": [{"id": 1, "width": 64, "height": 48}, {"id": 2, "width": 32, "height": 32}, {"id": 3, "width": 16, "height": 16}],
"annotations": [
 {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 10], "area": 200, "iscrowd": 0},
 {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 8, 12, 30], "area": 300, "iscrowd": 0},
 {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 1},
 {"id": 4, "image_id": 2, "category_id": 2, "bbox": [1.5, 2.5, 8, 9], "area": 50.5, "iscrowd": 0}],
"categories": [{"id": 1, "name": "echinus"}, {"id": 2, "name": "starfish"}, {"id": 7, "name": "absent"}]}"#;

/// Detections for [`COCO_GT`]: tied scores, an unknown category, a box on the crowd region.
const COCO_DT: &str = r#"[
 {"image_id": 1, "category_id": 1, "bbox": [5, 5, 19, 11], "score": 0.9},
 {"image_id": 1, "category_id": 1, "bbox": [2, 2, 40, 40], "score": 0.9},
 {"image_id": 1, "category_id": 2, "bbox": [29, 9, 12, 28], "score": 0.75},
 {"image_id": 2, "category_id": 2, "bbox": [1, 2, 8, 8], "score": 0.5},
 {"image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.1}]"#;

/// `eval coco --gt --dt` on a mutated ground truth or detections file (the COCO JSON
/// readers of `ferrolab_vision::metrics::coco`). A bad file is a usage error: exit 0 or 2.
pub fn coco_case(rng: &mut Rng, dir: &Path) -> std::io::Result<Invocation> {
    let gt = dir.join("gt.json");
    let dt = dir.join("dt.json");
    let mut files = [COCO_GT.as_bytes().to_vec(), COCO_DT.as_bytes().to_vec()];
    let k = rng.below(2);
    let bytes = &mut files[k];
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(mut v) if rng.chance(0.7) => {
            // One to three node edits, so that deeper fields are reached too.
            for _ in 0..=rng.below(3) {
                json::mutate(rng, &mut v);
            }
            *bytes = v.to_string().into_bytes();
        }
        _ => mutate::text(rng, bytes, &[]),
    }
    std::fs::write(&gt, &files[0])?;
    std::fs::write(&dt, &files[1])?;
    let mut args = vec![
        "eval".to_string(),
        "coco".into(),
        "--gt".into(),
        gt.display().to_string(),
        "--dt".into(),
        dt.display().to_string(),
    ];
    if rng.chance(0.3) {
        args.push("--per-class".into());
    }
    Ok(Invocation {
        args,
        stdin: None,
        allowed: &[0, 2],
        round_trip: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_ranges_and_unset_keys() {
        let t = "\n[data]\n# doc. [1..=20]\nfolds = 1\n# A file.\n# train = (unset)\n[data.synthetic]\ngroups = 8\n";
        let k = parse_keys(t);
        let names: Vec<&str> = k.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["data.folds", "data.train", "data.synthetic.groups"]);
        assert_eq!(k[0].range, "[1..=20]");
        assert_eq!(k[2].default, "8");
    }
}
