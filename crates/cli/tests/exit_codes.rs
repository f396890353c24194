//! One exit-code rule, tested: anything the user supplied that is wrong or unreadable (config,
//! data, checkpoint, `--out`, flags) is 2; failures while running are 1; a panic is a bug.
//! stderr's last line is the only line beginning `error:`, and for failures found before work
//! starts stderr is exactly that line.
//!

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{TmpDir, ferrolab, stderr, tmp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One bad invocation.
struct Case {
    name: &'static str,
    /// Arguments; `{D}` is replaced by the case folder, `{CK}` by a fresh tiny SECNN checkpoint
    /// copy and `{ACK}` by a fresh tiny APG checkpoint copy.
    args: &'static [&'static str],
    /// Damage done to the files before running (`None`: nothing).
    prepare: Option<fn(&Path)>,
    /// Bytes on stdin.
    stdin: &'static [u8],
    code: i32,
    /// Found before any work starts: stderr is exactly the `error:` line.
    before_work: bool,
    /// Text the error line must hold, where the exit code alone would not tell this refusal
    /// from an earlier one (`None`: any).
    says: Option<&'static str>,
}

const TINY_SECNN: &[&str] = &[
    "--set",
    "model.embed_dim=4",
    "--set",
    "model.maps=2",
    "--set",
    "model.se_reduction=1",
    "--set",
    "model.widths=[2,3]",
    "--set",
    "train.epochs=1",
    "--set",
    "train.seeds=1",
    "--threads",
    "1",
];

fn write(p: PathBuf, bytes: &[u8]) {
    std::fs::write(p, bytes).unwrap();
}

/// `{D}/finance/sp500_dataset.csv.gz` as plain CSV: `rows` days of 3 positive prices, the
/// middle row's second price replaced by `bad` when given.
fn prices(d: &Path, rows: usize, bad: Option<&str>) {
    let mut csv = String::from("Date,A,B,C\n");
    for i in 0..rows {
        let date = format!(
            "{:04}-{:02}-{:02}",
            2000 + i / 300,
            1 + (i / 25) % 12,
            1 + i % 25
        );
        let b = match bad {
            Some(v) if i == rows / 2 => v.to_string(),
            _ => format!("{}", 50.0 + (i % 7) as f64),
        };
        csv.push_str(&format!(
            "{date},{},{b},{}\n",
            100.0 + i as f64,
            20.0 + (i % 3) as f64
        ));
    }
    std::fs::create_dir_all(d.join("finance")).unwrap();
    write(d.join("finance/sp500_dataset.csv.gz"), csv.as_bytes());
}

fn truncate(p: &Path, keep: usize) {
    let b = std::fs::read(p).unwrap();
    std::fs::write(p, &b[..keep.min(b.len())]).unwrap();
}

const CASES: &[Case] = &[
    Case {
        name: "missing --config",
        args: &["secnn", "--config", "{D}/nosuch.toml"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "--config is a directory",
        args: &["secnn", "--config", "{D}"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "non-UTF-8 --config",
        args: &["secnn", "--config", "{D}/latin1.toml"],
        prepare: Some(|d| write(d.join("latin1.toml"), b"[train]\n# caf\xe9\nepochs = 1\n")),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "malformed TOML",
        args: &["apg", "--config", "{D}/bad.toml"],
        prepare: Some(|d| write(d.join("bad.toml"), b"[train\nepochs = 1\n")),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "unknown key",
        args: &["cluster-gcn", "--set", "train.nosuch=1"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "unknown key in a file",
        args: &["ckks", "--config", "{D}/unknown.toml"],
        prepare: Some(|d| write(d.join("unknown.toml"), b"[bench]\nrepz = 3\n")),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "out-of-range value",
        args: &["secnn", "--set", "model.dropout=1.5"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "out-of-range value (print-config)",
        args: &["apg", "--print-config", "--set", "train.epochs=0"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "unknown preset",
        args: &["secnn", "--preset", "nosuch"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "--out is a regular file",
        args: &[
            "secnn",
            "--set",
            "data.train={D}/train.txt",
            "--out",
            "{D}/file",
        ],
        prepare: Some(|d| {
            write(d.join("file"), b"x");
            write(d.join("train.txt"), &sentences());
        }),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "--out is a non-empty folder",
        args: &[
            "secnn",
            "--set",
            "data.train={D}/train.txt",
            "--out",
            "{D}/full",
        ],
        prepare: Some(|d| {
            std::fs::create_dir_all(d.join("full")).unwrap();
            write(d.join("full/keep.txt"), b"x");
            write(d.join("train.txt"), &sentences());
        }),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "missing data file (data.train)",
        args: &[
            "secnn",
            "--set",
            "data.train=/nonexistent/train.txt",
            "--out",
            "{D}/o",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: false,
        says: None,
    },
    Case {
        name: "missing data file (data.path)",
        args: &[
            "cluster-gcn",
            "--set",
            "data.path=/nonexistent/g.npz",
            "--out",
            "{D}/o",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: false,
        says: None,
    },
    Case {
        name: "malformed data file",
        args: &["secnn", "--set", "data.train={D}/bad.txt", "--out", "{D}/o"],
        prepare: Some(|d| write(d.join("bad.txt"), b"1 fine\nnolabel here\n")),
        stdin: b"",
        code: 2,
        before_work: false,
        says: None,
    },
    Case {
        name: "secnn predict: checkpoint folder missing",
        args: &["secnn", "predict", "--checkpoint", "{D}/nosuch"],
        prepare: None,
        stdin: b"a film\n",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "secnn predict: meta.json missing",
        args: &["secnn", "predict", "--checkpoint", "{CK}"],
        prepare: Some(|d| std::fs::remove_file(d.join("ck/meta.json")).unwrap()),
        stdin: b"a film\n",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "secnn predict: garbage meta.json",
        args: &["secnn", "predict", "--checkpoint", "{CK}"],
        prepare: Some(|d| write(d.join("ck/meta.json"), b"{\"version\": 2, \"kind\": [")),
        stdin: b"a film\n",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "secnn predict: meta.json of another shape",
        args: &["secnn", "predict", "--checkpoint", "{CK}"],
        prepare: Some(|d| {
            let p = d.join("ck/meta.json");
            let t = std::fs::read_to_string(&p).unwrap();
            let t = t.replace("\"maps\": 2", "\"maps\": 3");
            write(p, t.as_bytes());
        }),
        stdin: b"a film\n",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "secnn predict: truncated safetensors",
        args: &["secnn", "predict", "--checkpoint", "{CK}"],
        prepare: Some(|d| truncate(&d.join("ck/model.safetensors"), 100)),
        stdin: b"a film\n",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "--threads 0",
        args: &["secnn", "--threads", "0"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "--threads 100000",
        args: &["cluster-gcn", "--threads", "100000"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "reproduce --threads 0",
        args: &["reproduce", "--threads", "0", "--out", "{D}/r"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "reproduce --only nosuch",
        args: &["reproduce", "--only", "nosuch", "--out", "{D}/r"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "reproduce --max-memory abc",
        args: &[
            "reproduce",
            "--max-memory",
            "abc",
            "--only",
            "cluster-gcn",
            "--out",
            "{D}/r",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "apg export --data-dir that is not a folder",
        args: &[
            "apg",
            "export",
            "--data-dir",
            "{D}/nosuch",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("is not a folder"),
    },
    Case {
        name: "adaevo mobile --data-dir that is not a folder",
        args: &[
            "adaevo",
            "mobile",
            "--run",
            "x",
            "--id",
            "0",
            "--nats",
            "nats://127.0.0.1:1",
            "--data-dir",
            "{D}/nosuch",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("is not a folder"),
    },
    Case {
        name: "--data-dir that is not a folder",
        args: &[
            "cluster-gcn",
            "--preset",
            "quick",
            "--data-dir",
            "{D}/nosuch",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "fedgraph: a node-split key on the graph-classification table",
        args: &[
            "fedgraph",
            "--preset",
            "gcfl",
            "--set",
            "data.split=random",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("data.split"),
    },
    Case {
        name: "fedgraph fed.select_by=val_loss on the graph-classification table",
        args: &[
            "fedgraph",
            "--preset",
            "gcfl",
            "--set",
            "fed.select_by=val_loss",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("fed.select_by"),
    },
    Case {
        name: "fedgraph model.init=glorot on an architecture PyG draws otherwise",
        args: &[
            "fedgraph",
            "--preset",
            "quick",
            "--set",
            "model.arch=sage",
            "--set",
            "model.init=glorot",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "--out under a file",
        args: &["cluster-gcn", "--preset", "quick", "--out", "{D}/f/run"],
        prepare: Some(|d| write(d.join("f"), b"x")),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "fed server --out at a folder",
        args: &[
            "fed",
            "server",
            "--system",
            "sdgt",
            "--config",
            "{D}/x.toml",
            "--out",
            "{D}",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "hcnn encrypt --out in a folder that does not exist",
        args: &[
            "hcnn",
            "encrypt",
            "--keys",
            "{D}/keys",
            "{D}/x.png",
            "--out",
            "{D}/nodir/x.ct",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("nodir does not exist"),
    },
    Case {
        name: "apg export of 3e8 rows (~160 GiB) over --max-memory",
        args: &[
            "apg",
            "export",
            "--set",
            "data.dataset=synthetic",
            "--set",
            "data.train_rows=100000000",
            "--set",
            "data.valid_rows=100000000",
            "--set",
            "data.test_rows=100000000",
            "--max-memory",
            "8GiB",
            "--out",
            "{D}/e",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("needs ~"),
    },
    Case {
        name: "apg with an unknown condition field (refused before the first model trains)",
        args: &[
            "apg",
            "--preset",
            "quick-synthetic",
            "--set",
            "apg.condition=group",
            "--set",
            "apg.condition_fields=[\"nope\"]",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("`nope` is not a field"),
    },
    Case {
        name: "data synth-underwater --types with a type twice",
        args: &[
            "data",
            "synth-underwater",
            "--types",
            "I,c7,7",
            "--out",
            "{D}/s",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("given twice"),
    },
    Case {
        name: "fedgraph hpo with its own task.mode (--set=)",
        args: &[
            "fedgraph",
            "hpo",
            "--set= task.mode=privacy",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "fedgraph hpo with its own task.mode",
        args: &[
            "fedgraph",
            "hpo",
            "--set",
            "task.mode=privacy",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "layer-importance dataset with its own task.stage",
        args: &[
            "layer-importance",
            "dataset",
            "--set",
            "task.stage=budget",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("sets task.stage itself"),
    },
    Case {
        name: "data fetch nosuch",
        args: &["data", "fetch", "nosuch", "--data-dir", "{D}/data"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "data fetch into a file",
        args: &["data", "fetch", "cora", "--data-dir", "{D}/afile"],
        prepare: Some(|d| write(d.join("afile"), b"x")),
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("is not a folder"),
    },
    Case {
        name: "ckks bench --reps 0",
        args: &["ckks", "bench", "--reps", "0", "--out", "{D}/b"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "ckks bootstrap-bench --slots 3000 (not a power of two)",
        args: &[
            "ckks",
            "bootstrap-bench",
            "--log-n",
            "13",
            "--allow-insecure",
            "--slots",
            "3000",
            "--out",
            "{D}/b",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "ckks bootstrap-bench --slots 8192 (> N/2)",
        args: &[
            "ckks",
            "bootstrap-bench",
            "--log-n",
            "13",
            "--allow-insecure",
            "--slots",
            "8192",
            "--out",
            "{D}/b",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "ckks bootstrap-bench whose estimated peak exceeds --max-memory",
        args: &[
            "ckks",
            "bootstrap-bench",
            "--log-n",
            "13",
            "--allow-insecure",
            "--levels-after",
            "2",
            "--slots",
            "512",
            "--kinds",
            "real",
            "--max-memory",
            "100M",
            "--out",
            "{D}/b",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "ckks bootstrap-bench --max-memory 12X (not a size)",
        args: &[
            "ckks",
            "bootstrap-bench",
            "--log-n",
            "13",
            "--allow-insecure",
            "--max-memory",
            "12X",
            "--out",
            "{D}/b",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "ckks bootstrap-bench --log-n 13 without --allow-insecure",
        args: &["ckks", "bootstrap-bench", "--log-n", "13", "--out", "{D}/b"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "ckks bootstrap-bench --levels-after 12 (no such N = 2^16 set)",
        args: &[
            "ckks",
            "bootstrap-bench",
            "--levels-after",
            "12",
            "--out",
            "{D}/b",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "apg generate --groups 0",
        args: &["apg", "generate", "--groups", "0", "--rows", "3"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "apg predict: checkpoint folder missing",
        args: &["apg", "predict", "--checkpoint", "{D}/nosuch"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "apg predict: truncated safetensors",
        args: &["apg", "predict", "--checkpoint", "{ACK}"],
        prepare: Some(|d| truncate(&d.join("ack/model.safetensors"), 100)),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "apg predict: model.safetensors missing",
        args: &["apg", "predict", "--checkpoint", "{ACK}"],
        prepare: Some(|d| std::fs::remove_file(d.join("ack/model.safetensors")).unwrap()),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "apg predict --threads 0",
        args: &["apg", "predict", "--checkpoint", "{ACK}", "--threads", "0"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "/dev/zero as --config is refused, not read",
        args: &["secnn", "--config", "/dev/zero", "--print-config"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "cluster-gcn data.val_per_class = 0 (no validation to pick the epoch)",
        args: &[
            "cluster-gcn",
            "--set",
            "data.val_per_class=0",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "a clap parse error (--seed x) is one error line",
        args: &["secnn", "--seed", "x"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "attenscribble: a data folder without its train/ slices",
        args: &[
            "attenscribble",
            "--set",
            "data.dir={D}/empty",
            "--out",
            "{D}/out",
        ],
        prepare: Some(|d| std::fs::create_dir_all(d.join("empty")).unwrap()),
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("training folder"),
    },
    Case {
        name: "attenscribble predict: a checkpoint folder that is not there",
        args: &[
            "attenscribble",
            "predict",
            "--checkpoint",
            "{D}/nope",
            "{D}/v.npz",
            "--out",
            "{D}/m.npz",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("meta.json"),
    },
    Case {
        name: "attenscribble predict: --out that exists is not overwritten",
        args: &[
            "attenscribble",
            "predict",
            "--checkpoint",
            "{D}/nope",
            "{D}/v.npz",
            "--out",
            "{D}/m.npz",
        ],
        prepare: Some(|d| write(d.join("m.npz"), b"keep")),
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("already exists"),
    },
    Case {
        name: "attenscribble: data.dir with the synthetic set",
        args: &[
            "attenscribble",
            "--set",
            "data.dataset=synthetic",
            "--set",
            "data.dir={D}",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("data.dir"),
    },
    Case {
        name: "attenscribble synth: a shape below 32 pixels",
        args: &[
            "attenscribble",
            "synth",
            "--shape",
            "16x64",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: Some("16×64"),
    },
    Case {
        name: "taskmet: unknown task name",
        args: &["taskmet", "--set", "task.name=tsp", "--out", "{D}/out"],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "taskmet: non-positive budget",
        args: &[
            "taskmet",
            "--set",
            "task.name=budget",
            "--set",
            "budget.budget=0",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "taskmet: negative risk aversion",
        args: &[
            "taskmet",
            "--set",
            "portfolio.lambda=-0.1",
            "--out",
            "{D}/out",
        ],
        prepare: None,
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "taskmet: a non-positive price",
        args: &["taskmet", "--data-dir", "{D}", "--out", "{D}/out"],
        prepare: Some(|d| prices(d, 400, Some("0"))),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "taskmet: NaN in the price file",
        args: &["taskmet", "--data-dir", "{D}", "--out", "{D}/out"],
        prepare: Some(|d| prices(d, 400, Some("nan"))),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "taskmet: a price file with a gap (a row missing a column)",
        args: &["taskmet", "--data-dir", "{D}", "--out", "{D}/out"],
        prepare: Some(|d| prices(d, 400, Some(""))),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "taskmet: too few rows for the rolling window",
        args: &[
            "taskmet",
            "--data-dir",
            "{D}",
            "--set",
            "portfolio.start=2000-01-01",
            "--out",
            "{D}/out",
        ],
        prepare: Some(|d| prices(d, 400, None)),
        stdin: b"",
        code: 2,
        before_work: true,
        says: None,
    },
    Case {
        name: "secnn predict --threads 0 is a usage error",
        args: &["secnn", "predict", "--checkpoint", "{CK}", "--threads", "0"],
        prepare: None,
        stdin: b"a film\n",
        code: 2,
        before_work: true,
        says: None,
    },
];

fn sentences() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..60 {
        s.push_str(&format!(
            "{} the film was {} and the plot {}\n",
            i % 2,
            ["great", "awful"][i % 2],
            ["moved", "ran", "went"][i % 3]
        ));
    }
    s.into_bytes()
}

/// Tiny SECNN and APG checkpoints, trained once per test process.
fn checkpoints() -> &'static (PathBuf, PathBuf) {
    static CK: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    CK.get_or_init(|| {
        let d = tmp("exit-codes-ck").keep();
        write(d.join("train.txt"), &sentences());
        let train = format!("data.train={}", d.join("train.txt").display());
        let out = d.join("secnn");
        let mut args = vec!["secnn", "--set", &train, "--out", out.to_str().unwrap()];
        args.extend_from_slice(TINY_SECNN);
        let o = ferrolab(&args);
        assert!(o.status.success(), "tiny secnn run: {}", stderr(&o));
        let aout = d.join("apg");
        #[rustfmt::skip]
        let o = ferrolab(&["apg", "--set", "data.dataset=synthetic", "--set", "data.train_rows=400",
            "--set", "data.valid_rows=100", "--set", "data.test_rows=100",
            "--set", "model.models=[\"deepfm\"]", "--set", "model.embed_dim=4", "--set", "model.hidden=[8]",
            "--set", "apg.rank=2", "--set", "apg.overparam=4", "--set", "apg.hyper_hidden=4",
            "--set", "train.epochs=1", "--set", "train.seeds=1", "--set", "efficiency.enabled=false",
            "--out", aout.to_str().unwrap(), "--threads", "1"]);
        assert!(o.status.success(), "tiny apg run: {}", stderr(&o));
        (out.join("checkpoint"), aout.join("checkpoint"))
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Runs case `i` in a fresh folder, returned with the output so that a failing case's folder
/// can be kept for reading (a passing one is removed when the guard drops).
fn run_case(i: usize, c: &Case) -> (Output, TmpDir) {
    let d = tmp(&format!("exit-codes-{i}"));
    let uses = |tag: &str| c.args.iter().any(|a| a.contains(tag));
    if uses("{CK}") {
        copy_dir(&checkpoints().0, &d.join("ck"));
    }
    if uses("{ACK}") {
        copy_dir(&checkpoints().1, &d.join("ack"));
    }
    if let Some(p) = c.prepare {
        p(&d);
    }
    let args: Vec<String> = c
        .args
        .iter()
        .map(|a| {
            a.replace("{CK}", d.join("ck").to_str().unwrap())
                .replace("{ACK}", d.join("ack").to_str().unwrap())
                .replace("{D}", d.to_str().unwrap())
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(&args)
        .current_dir(&d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // The binary may exit before reading stdin: a closed pipe is fine here.
        let _ = stdin.write_all(c.stdin);
    }
    let o = child.wait_with_output().unwrap();
    (o, d)
}

/// The rule for one case; `Err` says what broke it.
fn check(c: &Case, o: &Output) -> Result<(), String> {
    let e = stderr(o);
    let code = o.status.code();
    if code != Some(c.code) {
        return Err(format!("exit {code:?}, expected {}; stderr:\n{e}", c.code));
    }
    let lines: Vec<&str> = e.lines().collect();
    let errors = lines.iter().filter(|l| l.starts_with("error:")).count();
    if errors != 1 || !lines.last().is_some_and(|l| l.starts_with("error:")) {
        return Err(format!(
            "stderr's last line must be the only `error:` line; stderr:\n{e}"
        ));
    }
    if let Some(text) = c.says
        && !lines.last().is_some_and(|l| l.contains(text))
    {
        return Err(format!("the error line must say `{text}`; stderr:\n{e}"));
    }
    if c.before_work && lines.len() != 1 {
        return Err(format!(
            "found before work starts, so stderr must be exactly the error line; stderr:\n{e}"
        ));
    }
    Ok(())
}

#[test]
fn every_bad_invocation_exits_with_its_code_and_one_error_line() {
    let failures: Vec<String> = CASES
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let (o, d) = run_case(i, c);
            check(c, &o)
                .err()
                .map(|e| format!("{}: {e} (its folder kept: {})", c.name, d.keep().display()))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
