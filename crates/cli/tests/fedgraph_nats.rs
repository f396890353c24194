//! `ferrolab fedgraph --set fed.runtime=nats` and `ferrolab fed server|client --system
//! fedgraph`: every client a separate process, every model through a NATS server. The run must
//! equal the in-process one bit for bit (same per-seed accuracies, same curves). Bad requests
//! are one usage error before any work. The runs need Cora and a nats-server, so those tests are
//! `#[ignore]`d; `.ci/run` starts a server and runs them with the data.

mod common;
use common::*;
use std::process::Command;

#[test]
fn the_nats_runtime_refuses_what_it_cannot_run() {
    // Every table algorithm runs over NATS; a search or privacy study on graph families is
    // refused by its own key, not by the runtime.
    let cases: [(&[&str], &str); 1] = [(
        &[
            "fedgraph",
            "--set",
            "data.dataset=graph-families",
            "--set",
            "task.mode=hpo",
        ],
        "task.mode",
    )];
    for (args, key) in cases {
        let root = tmp("fedgraph-nats-bad");
        let out = root.join("out");
        let mut v = args.to_vec();
        v.extend_from_slice(&["--set", "fed.runtime=nats", "--out", out.to_str().unwrap()]);
        let o = ferrolab_fresh(&root, &v);
        let e = assert_usage_error(&o, key);
        assert!(e.contains(key), "{args:?}: {e}");
        assert!(!out.exists() && !incomplete(&out).exists(), "{args:?}");
    }
}

#[test]
fn the_nats_runtime_without_a_server_url_is_a_usage_error_before_any_work() {
    let root = tmp("fedgraph-nats-nourl");
    let out = root.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(["fedgraph", "--preset", "quick", "--set", "fed.runtime=nats"])
        // A graph file that is not there: the runtime is checked before any data is read.
        .args(["--set", "data.path=missing/cora.npz"])
        .args(["--out", out.to_str().unwrap()])
        .env_remove("FERROLAB_NATS_URL")
        .env_remove("FERROLAB_DATA")
        .current_dir(&root)
        .output()
        .unwrap();
    let e = assert_usage_error(&o, "no url");
    assert!(
        e.contains("NATS server") && e.contains("fed.nats_url"),
        "{e}"
    );
    assert!(!out.exists() && !incomplete(&out).exists());
}

#[test]
fn a_fedgraph_job_the_runtime_cannot_run_is_a_usage_error() {
    let root = tmp("fedgraph-nats-job");
    let cases = [
        ("[job]\nalgo = \"gcfl\"\n", "job.algo"),
        ("[job]\nseed_index = 9\n", "job.seed_index"),
        ("[job]\nbogus = 1\n", "bogus"),
        ("[fed]\nlrs = []\n", "fed.lrs"),
        // Local only and global are not federated; node algorithms need a node task.
        (
            "[data]\ndataset = \"graph-families\"\n[fed]\nalgo = \"gcfl\"\n[job]\nalgo = \"local\"\n",
            "job.algo",
        ),
        (
            "[data]\ndataset = \"graph-families\"\n[fed]\nalgo = \"gcfl\"\n[job]\nalgo = \"fedprox\"\n",
            "job.algo",
        ),
        // A search tunes FedAvg.
        (
            "[task]\nmode = \"hpo\"\n[fed]\nalgo = \"fedprox\"\n",
            "fed.algo",
        ),
        // A search job's seed index counts the search's seeds.
        (
            "[task]\nmode = \"hpo\"\n[hpo]\nseeds = 1\n[job]\nseed_index = 1\n",
            "hpo.seeds",
        ),
    ];
    for (i, (text, key)) in cases.into_iter().enumerate() {
        let file = root.join(format!("job{i}.toml"));
        std::fs::write(&file, text).unwrap();
        for role in [&["client", "--id", "0"][..], &["server"][..]] {
            let o = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
                .arg("fed")
                .args(role)
                .args(["--system", "fedgraph", "--config", file.to_str().unwrap()])
                .args(["--nats", "nats://127.0.0.1:1"])
                .output()
                .unwrap();
            let e = assert_usage_error(&o, key);
            assert!(e.contains(key), "{role:?} {text}: {e}");
        }
    }
}

/// The quick preset, shortened, as `fedgraph` args.
fn quick(out: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "fedgraph",
        "--preset",
        "quick",
        "--set",
        "fed.rounds=15",
        "--set",
        "baselines.global=false",
        "--threads",
        "2",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(out.to_string_lossy().into_owned());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
#[ignore = "needs Cora and nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn fedgraph_over_nats_equals_the_in_process_run_bit_for_bit() {
    require_nats_url();
    let root = tmp("fedgraph-nats-run");
    for algo in ["fedavg", "fedopt"] {
        let (a, b) = (
            root.join(format!("in-{algo}")),
            root.join(format!("nats-{algo}")),
        );
        let set = format!("fed.algo={algo}");
        let args_a = quick(&a, &["--set", &set]);
        let args_b = quick(&b, &["--set", &set, "--set", "fed.runtime=nats"]);
        for args in [&args_a, &args_b] {
            let v: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = ferrolab(&v);
            assert_eq!(o.status.code(), Some(0), "{v:?}: {}", stderr(&o));
        }
        let (ra, rb) = (report(&a), report(&b));
        assert_eq!(rb["details"]["runtime"], "nats");
        let key = format!("grid_{algo}");
        let (ga, gb) = (&ra["details"][&key][0], &rb["details"][&key][0]);
        let seeds = ga["per_seed_test_accuracy"].as_array().map_or(0, Vec::len);
        assert_eq!(seeds, 2, "{ga}");
        assert_eq!(ga["per_seed_test_accuracy"], gb["per_seed_test_accuracy"]);
        assert_eq!(ga["val_accuracy"], gb["val_accuracy"]);
        assert_eq!(ra["metrics"]["server_mb"], rb["metrics"]["server_mb"]);
        // FedOpt runs FedAvg beside it, both through the client processes.
        if algo == "fedopt" {
            assert_eq!(
                ra["baselines"]["fedavg"]["test_accuracy"],
                rb["baselines"]["fedavg"]["test_accuracy"]
            );
        }
        // Local only is no federation: it runs in the server's process either way.
        assert_eq!(
            ra["baselines"]["local"]["test_accuracy"],
            rb["baselines"]["local"]["test_accuracy"]
        );
        let acc = ra["metrics"]["test_accuracy"].as_f64().unwrap_or(0.0);
        assert!(acc > 0.6, "{algo}: {acc}");
        // The job files went with their runs.
        let left = std::fs::read_dir(b.join("fabric")).map_or(0, |d| d.count());
        assert_eq!(left, 0, "job files left in {}", b.display());
    }

    // `fed server --system fedgraph` runs one job (seed index 1 of the same experiment) and
    // prints its summary: the same figure as that seed of the in-process table.
    let job = root.join("job.toml");
    std::fs::write(
        &job,
        "[fed]\nrounds = 15\npatience = 0\nlrs = [0.25]\nlocal_steps = [4]\nseeds = 2\n\n[job]\nseed_index = 1\n",
    )
    .unwrap();
    let summary_file = root.join("summary.json");
    let o = ferrolab(&[
        "fed",
        "server",
        "--system",
        "fedgraph",
        "--config",
        job.to_str().unwrap(),
        "--prefix",
        &format!("fgcli{}", std::process::id()),
        "--out",
        summary_file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ra = report(&root.join("in-fedavg"));
    assert_eq!(
        s["test_accuracy"], ra["details"]["grid_fedavg"][0]["per_seed_test_accuracy"][1],
        "{s}"
    );
    assert_eq!(s["clients"], 5);
    assert_eq!(s["rounds"], 15);
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).unwrap();
    assert_eq!(full["curve"].as_array().map_or(0, Vec::len), 15);
}

#[test]
#[ignore = "needs Cora and nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn fedgraph_hpo_over_nats_equals_the_in_process_search_bit_for_bit() {
    require_nats_url();
    let root = tmp("fedgraph-nats-hpo");
    let space = [
        "--set",
        "hpo.lrs=[0.05,0.25]",
        "--set",
        "hpo.local_steps=[1,4]",
        "--set",
        "hpo.dropouts=[0.0,0.5]",
        "--set",
        "hpo.min_rounds=3",
        "--set",
        "hpo.max_rounds=9",
        "--set",
        "hpo.methods=[\"sh\",\"fedex\"]",
    ];
    let (a, b) = (root.join("in"), root.join("nats"));
    for (out, extra) in [(&a, None), (&b, Some("fed.runtime=nats"))] {
        let mut v = vec!["fedgraph", "hpo", "--preset", "hpo", "--threads", "2"];
        v.extend_from_slice(&space);
        if let Some(e) = extra {
            v.extend_from_slice(&["--set", e]);
        }
        v.extend_from_slice(&["--out", out.to_str().unwrap()]);
        let o = ferrolab(&v);
        assert_eq!(o.status.code(), Some(0), "{v:?}: {}", stderr(&o));
        if extra.is_some() {
            // One job per seed, every trial's rounds through the same client processes.
            assert!(
                stderr(&o)
                    .contains("federated rounds through nats (5 clients, 0 updates left out)"),
                "{}",
                stderr(&o)
            );
        }
    }
    let (ra, rb) = (report(&a), report(&b));
    assert_eq!(rb["details"]["runtime"], "nats");
    assert_eq!(ra["metrics"], rb["metrics"]);
    assert_eq!(ra["baselines"], rb["baselines"]);
    for key in ["sh_per_seed", "fedex_per_seed", "best_config"] {
        assert_eq!(ra["details"][key], rb["details"][key], "{key}");
    }
    assert!(ra["metrics"]["best_test_accuracy"].as_f64().unwrap_or(0.0) > 0.6);
    let left = std::fs::read_dir(b.join("fabric")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "job files left in {}", b.display());

    // `fed server --system fedgraph` on a search job runs that seed's search.
    let s = fed_server_summary(
        &root,
        "[task]\nmode = \"hpo\"\n[hpo]\nlrs = [0.05, 0.25]\nlocal_steps = [1, 4]\ndropouts = [0.0, 0.5]\nmin_rounds = 3\nmax_rounds = 9\nmethods = [\"sh\", \"fedex\"]\nseeds = 1\n\n[job]\nseed_index = 0\n",
        "fghpo",
    );
    assert_eq!(s["methods"][0]["method"], "sh");
    assert_eq!(
        s["methods"][0]["best_test_accuracy"], ra["details"]["sh_per_seed"][0]["test_accuracy"],
        "{s}"
    );
    assert_eq!(
        s["methods"][1]["best_config"],
        ra["details"]["fedex_per_seed"][0]["best_config"]
    );
}

#[test]
#[ignore = "needs Cora and nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn fedgraph_privacy_over_nats_equals_the_in_process_study_bit_for_bit() {
    require_nats_url();
    let root = tmp("fedgraph-nats-privacy");
    let (a, b) = (root.join("in"), root.join("nats"));
    for (out, extra) in [(&a, None), (&b, Some("fed.runtime=nats"))] {
        let mut v = vec![
            "fedgraph",
            "privacy",
            "--preset",
            "privacy",
            "--set",
            "privacy.rounds=10",
            "--set",
            "privacy.sigmas=[0.8]",
            "--threads",
            "2",
        ];
        if let Some(e) = extra {
            v.extend_from_slice(&["--set", e]);
        }
        v.extend_from_slice(&["--out", out.to_str().unwrap()]);
        let o = ferrolab(&v);
        assert_eq!(o.status.code(), Some(0), "{v:?}: {}", stderr(&o));
        if extra.is_some() {
            // Both arms' rounds went through the client processes, which noised their own
            // updates.
            assert!(
                stderr(&o)
                    .contains("20 federated rounds through nats (5 clients, 0 updates left out)"),
                "{}",
                stderr(&o)
            );
        }
    }
    let (ra, rb) = (report(&a), report(&b));
    assert_eq!(ra["metrics"], rb["metrics"]);
    assert_eq!(ra["baselines"], rb["baselines"]);
    let m = &ra["metrics"];
    assert!(
        m["dp_sigma0p8_epsilon"].as_f64().unwrap_or(0.0) > 1.0,
        "{m}"
    );
    assert!(m["test_accuracy"].as_f64().unwrap_or(0.0) > 0.6, "{m}");

    // `fed server --system fedgraph` on a privacy job runs that seed's arms: the same figures.
    let s = fed_server_summary(
        &root,
        "[task]\nmode = \"privacy\"\n[privacy]\nrounds = 10\nsigmas = [0.8]\nseeds = 1\n\n[job]\nseed_index = 0\n",
        "fgpriv",
    );
    assert_eq!(s["arms"][0]["sigma"], serde_json::Value::Null, "{s}");
    assert_eq!(s["arms"][0]["epsilon"], serde_json::Value::Null, "{s}");
    assert_eq!(s["arms"][0]["test_accuracy"], m["test_accuracy"], "{s}");
    assert_eq!(s["arms"][1]["sigma"], 0.8);
    assert_eq!(
        s["arms"][1]["test_accuracy"], m["dp_sigma0p8_test_accuracy"],
        "{s}"
    );
    assert_eq!(s["arms"][1]["epsilon"], m["dp_sigma0p8_epsilon"], "{s}");
}

/// `ferrolab fedgraph --config` on `config` (written under `root`), in-process and with
/// `--set fed.runtime=nats`: both reports and the NATS run's stderr.
#[allow(clippy::unwrap_used)]
fn in_process_and_over_nats(
    root: &std::path::Path,
    config: &str,
) -> (serde_json::Value, serde_json::Value, String) {
    let cfg = root.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let (a, b) = (root.join("in"), root.join("nats"));
    let mut said = String::new();
    for (out, extra) in [(&a, None), (&b, Some("fed.runtime=nats"))] {
        let mut v = vec!["fedgraph", "--config", cfg.to_str().unwrap()];
        v.extend_from_slice(&["--threads", "2"]);
        if let Some(e) = extra {
            v.extend_from_slice(&["--set", e]);
        }
        v.extend_from_slice(&["--out", out.to_str().unwrap()]);
        let o = ferrolab(&v);
        assert_eq!(o.status.code(), Some(0), "{v:?}: {}", stderr(&o));
        said = stderr(&o);
    }
    (report(&a), report(&b), said)
}

/// `ferrolab fed server --system fedgraph` on the job file `job` (written under `root`) with
/// a prefix unique to this process: its summary.
#[allow(clippy::unwrap_used)]
fn fed_server_summary(root: &std::path::Path, job: &str, prefix: &str) -> serde_json::Value {
    let file = root.join("job.toml");
    std::fs::write(&file, job).unwrap();
    let o = ferrolab(&[
        "fed",
        "server",
        "--system",
        "fedgraph",
        "--config",
        file.to_str().unwrap(),
        "--prefix",
        &format!("{prefix}{}", std::process::id()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// A report block without its wall-clock keys (the one part runs may differ in).
fn no_seconds(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.contains("seconds"));
    }
    v
}

/// A small GCFL+ table on the synthetic graph families whose thresholds every round meets
/// (so clusters split within its rounds), plain GCFL and FedAvg beside it.
const FAMILIES: &str = "[data]
dataset = \"graph-families\"
[model]
arch = \"gin\"
hidden = 16
layers = 2
dropout = 0.2
[fed]
algo = \"gcfl\"
clients = 6
rounds = 10
patience = 0
lrs = [0.01]
local_steps = [2]
seeds = 1
[families]
graphs_per_client = 60
[gcfl]
eps1 = 1e9
eps2 = 0.0
warmup = 2
seq_length = 3
batch_size = 16
[baselines]
gcfl_plain = true
local = false
global = false
";

#[test]
#[ignore = "needs nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn fedgraph_gcfl_over_nats_equals_the_in_process_table_bit_for_bit() {
    require_nats_url();
    let root = tmp("fedgraph-nats-gcfl");
    let (ra, rb, _) = in_process_and_over_nats(&root, FAMILIES);
    assert_eq!(no_seconds(&ra["metrics"]), no_seconds(&rb["metrics"]));
    for r in ["fedavg", "gcfl_plain"] {
        assert_eq!(
            no_seconds(&ra["baselines"][r]),
            no_seconds(&rb["baselines"][r]),
            "{r}"
        );
    }
    assert_eq!(
        ra["details"]["gcfl_clusters"],
        rb["details"]["gcfl_clusters"]
    );
    assert_eq!(rb["details"]["runtime"], "nats");
    let clusters = &ra["details"]["gcfl_clusters"];
    let plain = clusters
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["regime"] == "gcfl_plain")
        .unwrap();
    assert!(
        !plain["splits"].as_array().unwrap().is_empty(),
        "the split path is exercised: {clusters}"
    );

    // `fed server --system fedgraph` on a graph-families job runs that one regime's run with
    // its clients as processes: the same figures and clusters.
    let job = format!("{FAMILIES}\n[job]\nalgo = \"gcfl_plain\"\n");
    let s = fed_server_summary(&root, &job, "fggcfl");
    assert_eq!(s["algo"], "gcfl_plain");
    assert_eq!(s["left_out"], 0, "{s}");
    assert_eq!(
        s["test_accuracy"], ra["baselines"]["gcfl_plain"]["test_accuracy"],
        "{s}"
    );
    assert_eq!(s["final_clusters"], plain["final_clusters"], "{s}");
}

#[test]
#[ignore = "needs Cora and nats-server (FERROLAB_NATS_URL; .ci/run starts one)"]
fn fedgraph_fedsage_over_nats_equals_the_in_process_run_bit_for_bit() {
    require_nats_url();
    let root = tmp("fedgraph-nats-fedsage");
    // A small generator, pre-trained one step, three federated rounds.
    let generator = "[fedsage]\ngen_rounds = 3\ngen_hidden = 16\nenc_dim = 16\nnum_pred = 2\npretrain_steps = 1\n";
    // Two grid cells: over NATS one set of client processes trains the generators once and
    // serves both cells' classifier runs.
    let base = "[fed]\nalgo = \"fedsage\"\nrounds = 8\npatience = 0\nlrs = [0.25, 0.05]\nlocal_steps = [4]\nseeds = 1\n[baselines]\nlocal = false\nglobal = false\n";
    let (ra, rb, said) = in_process_and_over_nats(&root, &format!("{base}{generator}"));
    assert_eq!(
        said.matches("generator stage through nats").count(),
        1,
        "one generator stage for both cells: {said}"
    );
    assert!(said.contains("with 2 classifier run(s)"), "{said}");
    assert_eq!(ra["details"]["grid_fedsage"], rb["details"]["grid_fedsage"]);
    assert_eq!(no_seconds(&ra["metrics"]), no_seconds(&rb["metrics"]));
    assert_eq!(
        no_seconds(&ra["baselines"]["fedavg"]),
        no_seconds(&rb["baselines"]["fedavg"])
    );
    let (ga, gb) = (
        no_seconds(&ra["details"]["fedsage_generator"][0]),
        no_seconds(&rb["details"]["fedsage_generator"][0]),
    );
    assert_eq!(ga, gb, "the generator stage through the client processes");
    assert!(ga["added"].as_array().is_some_and(|v| v.len() == 5), "{ga}");

    // `fed server --system fedgraph` on a fedsage job: both stages through its client
    // processes, the same figures.
    let job = format!("{base}{generator}\n[job]\nseed_index = 0\n");
    let s = fed_server_summary(&root, &job, "fgsage");
    assert_eq!(s["algo"], "fedsage");
    // The job's cell is the first (lr 0.25).
    assert_eq!(
        s["test_accuracy"], ra["details"]["grid_fedsage"][0]["per_seed_test_accuracy"][0],
        "{s}"
    );
    assert_eq!(s["generator"]["added"], ga["added"], "{s}");
    assert_eq!(s["generator"]["feat_loss"], ga["feat_loss"], "{s}");
}
