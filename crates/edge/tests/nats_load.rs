//! AdaEvo across processes over a real NATS server (`$FERROLAB_NATS_URL`; `.ci/run` starts
//! one; these tests are `#[ignore]`d and fail without it):
//!
//! * the load test: one edge process and N mobile processes, each replaying a precomputed
//!   trace of its end's requests (no inference), on a simulated clock: every triggered task
//!   completes (its model version installed) or is dropped with a logged reason, no model
//!   version is lost, the edge's task memory stays within its budget. The CI size is 12 ends
//!   × 300 simulated s at 15× speed (~20 s wall); the size is
//!   `ADAEVO_LOAD_ENDS=50 ADAEVO_LOAD_SPEED=1 <this test binary> --include-ignored load`
//!   (50 processes, 5 simulated minutes in 5 minutes of wall time);
//! * a corrupt model blob is rejected by checksum and the end keeps its model; a re-delivered
//!   version is acknowledged once, not installed twice;
//! * the edge killed (SIGKILL) while it holds accepted, unfinished tasks and started again on
//!   its state directory: the tasks are re-queued, versions continue above the shipped ones,
//!   every mobile end's tasks are installed or dropped with a reason, none left hanging;
//! * a mobile end whose connection dies in the middle of an upload (a truncated NATS message)
//!   and one that vanishes right after uploading: the edge never sees the partial upload,
//!   gives up on the vanished end's model with a logged reason, and keeps serving the others.
//!
//! Child processes are this test binary again, running [`adaevo_child`] with `ADAEVO_CHILD`.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

use ferrolab_edge::AdaEvoConfig;
use ferrolab_edge::detect::experiment::prepare as det_prepare;
use ferrolab_edge::experiment::{load_base, prepare};
use ferrolab_edge::net::{self, EdgeSummary, MobileSummary, NetOptions, Trace};
use ferrolab_edge::protocol::ModelBlob;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// Measured task memory is the heap peak, as in the `ferrolab` binary.
#[global_allocator]
static ALLOC: ferrolab_core::alloc::PeakAlloc = ferrolab_core::alloc::PeakAlloc;

fn nats_url() -> String {
    match std::env::var("FERROLAB_NATS_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ => panic!(
            "FERROLAB_NATS_URL is not set: start `nats-server -js` and export its URL (.ci/run does)"
        ),
    }
}

fn prefix(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}{}_{nanos}", std::process::id())
}

fn config(ends: usize) -> AdaEvoConfig {
    let mut cfg = AdaEvoConfig::default();
    cfg.data.dataset = "synthetic".into();
    cfg.stream.ends = ends;
    cfg
}

const SEED: u64 = 5;

fn prepared(cfg: &AdaEvoConfig) -> ferrolab_edge::experiment::Prepared {
    let (pre, pool) = load_base(cfg, None, SEED).unwrap();
    prepare(cfg, &pre, &pool, SEED)
}

/// [`prepared`] and the seconds it took (a bound on any child process's, which builds only its
/// share).
fn timed_prepared(cfg: &AdaEvoConfig) -> (ferrolab_edge::experiment::Prepared, f64) {
    let t0 = Instant::now();
    let prep = prepared(cfg);
    (prep, t0.elapsed().as_secs_f64())
}

/// Every process's simulated time 0, as a Unix time: after each has rebuilt its models (which
/// took `prep_s` here).
fn start_after(prep_s: f64) -> f64 {
    unix_now() + 2.0 * prep_s + 3.0
}

fn opts_from(v: &serde_json::Value) -> NetOptions {
    let mut o = NetOptions::new(v["url"].as_str().unwrap(), v["prefix"].as_str().unwrap());
    o.speed = v["speed"].as_f64().unwrap();
    o.seconds = v["seconds"].as_f64().unwrap();
    o.start = Some(UNIX_EPOCH + Duration::from_secs_f64(v["start"].as_f64().unwrap()));
    o.state_dir = v["state"].as_str().map(PathBuf::from);
    if let Some(g) = v["grace"].as_f64() {
        o.delivery_grace = Duration::from_secs_f64(g);
    }
    o.inline_limit = v["inline"].as_u64().map(|b| b as usize);
    o
}

/// Entry point of the child processes; does nothing in a normal test run.
#[test]
fn adaevo_child() {
    let Ok(arg) = std::env::var("ADAEVO_CHILD") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&arg).unwrap();
    let opts = opts_from(&v);
    match v["role"].as_str().unwrap() {
        "edge" => {
            let cfg: AdaEvoConfig = serde_json::from_value(v["cfg"].clone()).unwrap();
            // The edge's share only, as `ferrolab adaevo edge` builds it.
            let (pre, pool) = load_base(&cfg, None, SEED).unwrap();
            let prep = ferrolab_edge::experiment::prepare_edge(&cfg, &pre, &pool, SEED);
            let s = net::run_edge(&cfg, &prep, SEED, &opts).unwrap();
            println!("EDGE-SUMMARY {}", serde_json::to_string(&s).unwrap());
        }
        "det-edge" => {
            let cfg: AdaEvoConfig = serde_json::from_value(v["cfg"].clone()).unwrap();
            let prep = ferrolab_edge::detect::experiment::prepare_edge(&cfg, SEED).unwrap();
            let s = net::run_det_edge(&cfg, &prep, SEED, &opts).unwrap();
            println!("EDGE-SUMMARY {}", serde_json::to_string(&s).unwrap());
        }
        "det-live" => {
            let cfg: AdaEvoConfig = serde_json::from_value(v["cfg"].clone()).unwrap();
            let end = v["end"].as_u64().unwrap() as usize;
            let prep = ferrolab_edge::detect::experiment::prepare_end(&cfg, SEED, end).unwrap();
            let tail = v["tail"].as_f64().unwrap();
            let s = net::run_det_mobile_live(&cfg, &prep, &opts, tail).unwrap();
            println!("MOBILE-SUMMARY {}", serde_json::to_string(&s).unwrap());
        }
        "live" => {
            let cfg: AdaEvoConfig = serde_json::from_value(v["cfg"].clone()).unwrap();
            let end = v["end"].as_u64().unwrap() as usize;
            // This end's share only, as `ferrolab adaevo mobile --id K` builds it.
            let (pre, pool) = load_base(&cfg, None, SEED).unwrap();
            let prep =
                ferrolab_edge::experiment::prepare_end(&cfg, &pre, &pool, SEED, end).unwrap();
            let tail = v["tail"].as_f64().unwrap();
            let s = net::run_mobile_live(&cfg, &prep, &opts, tail).unwrap();
            println!("MOBILE-SUMMARY {}", serde_json::to_string(&s).unwrap());
        }
        _ => {
            let trace: Trace =
                serde_json::from_slice(&std::fs::read(v["trace"].as_str().unwrap()).unwrap())
                    .unwrap();
            let s = net::run_mobile(&trace, &opts, v["tail"].as_f64().unwrap()).unwrap();
            println!("MOBILE-SUMMARY {}", serde_json::to_string(&s).unwrap());
        }
    }
}

fn child(v: serde_json::Value) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "adaevo_child", "--nocapture", "--test-threads=1"])
        .env("ADAEVO_CHILD", v.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Starts the edge child `edge` and `ends` live mobile children (`role`, each `base` with its
/// end and `tail`), and returns their summaries once all have exited.
fn edge_and_live_ends(
    edge: serde_json::Value,
    base: &serde_json::Value,
    role: &str,
    ends: usize,
    tail: f64,
) -> (Vec<MobileSummary>, EdgeSummary) {
    let edge = child(edge);
    let mobiles: Vec<Child> = (0..ends)
        .map(|k| {
            let mut v = base.clone();
            v["role"] = role.into();
            v["end"] = k.into();
            v["tail"] = tail.into();
            child(v)
        })
        .collect();
    let ms = mobiles
        .into_iter()
        .map(|c| serde_json::from_str(&summary_line(c, "MOBILE-SUMMARY")).unwrap())
        .collect();
    let es = serde_json::from_str(&summary_line(edge, "EDGE-SUMMARY")).unwrap();
    (ms, es)
}

/// A live end's tasks all resolved: each sent task installed or dropped (none unresolved),
/// no model refused, versions 1, 2, 3, … without a gap, the same ones the edge shipped.
fn assert_live_end_accounted(m: &MobileSummary, es: &EdgeSummary) {
    let k = m.end;
    assert_eq!(
        m.triggered - m.skipped_in_flight,
        m.installed.len() + m.dropped.len() + m.unresolved,
        "end {k}: {m:?}"
    );
    assert_eq!(m.unresolved, 0, "end {k}");
    assert!(m.rejected.is_empty(), "end {k}: {:?}", m.rejected);
    let want: Vec<u64> = (1..=m.installed.len() as u64).collect();
    assert_eq!(m.installed, want, "end {k}");
    assert_eq!(
        es.versions.get(&k).cloned().unwrap_or_default(),
        m.installed,
        "end {k}: shipped vs installed"
    );
}

fn summary_line(c: Child, tag: &str) -> String {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "{tag} child failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    BufReader::new(text.as_bytes())
        .lines()
        .map_while(Result::ok)
        // libtest may print `test adaevo_child ... ` on the same line first.
        .find_map(|l| l.split_once(&format!("{tag} ")).map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no {tag} line in {text}"))
}

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A restarted edge reads its state directory before it connects: a damaged, foreign or
/// truncated end file is a usage error naming the file, found before any server is contacted
/// (the URL here has no server behind it).
#[test]
fn a_damaged_state_directory_is_refused_before_connecting() {
    use ferrolab_edge::edge::EndState;
    use ferrolab_edge::net::state::{EndFile, Store, fingerprint};
    let cfg = config(2);
    let prep = prepared(&cfg);
    let fp = fingerprint(&serde_json::to_string(&cfg).unwrap(), SEED, 2);
    let good = EndState {
        end: 0,
        version: 1,
        dense: prep.dense.clone(),
        deployed: prep.mobile.clone(),
        replay: prep.anchor[..3].to_vec(),
    };
    assert_eq!(good.check_model(&prep.dense), Ok(()));
    let mut wide = good.clone();
    wide.dense = ferrolab_edge::model::Mlp::new(&[196, 8, 10], 1);
    let mut short = good.clone();
    short.dense.weights[0].pop();
    let mut replay = good.clone();
    replay.replay[1].1 = 10;
    let file = |state: EndState| {
        serde_json::to_value(EndFile {
            state,
            finished_seq: Some(0),
            outbox: Vec::new(),
            next_id: 1,
        })
        .unwrap()
    };
    // JSON has no NaN, and a weight beyond f32's range is refused by the parser (the finite
    // check behind it guards states built in memory).
    let mut huge = file(good.clone());
    huge["state"]["deployed"]["weights"][1][3] = serde_json::json!(1e39);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (serde_json::to_vec(&file(wide)).unwrap(), "layer widths"),
        (serde_json::to_vec(&huge).unwrap(), "out of range"),
        (serde_json::to_vec(&file(short)).unwrap(), "layer 0"),
        (serde_json::to_vec(&file(replay)).unwrap(), "replay frame 1"),
        (
            serde_json::to_vec(&file(EndState {
                end: 1,
                ..good.clone()
            }))
            .unwrap(),
            "holds the state of end 1",
        ),
        // Cut off mid-file.
        (b"{\"state\": {\"end\": 0, \"ver".to_vec(), "EOF"),
    ];
    for (bytes, what) in cases {
        let dir = std::env::temp_dir().join(prefix("adaevo-badstate"));
        let store = Store::open(&dir, &fp).unwrap();
        std::fs::write(dir.join("end_0.json"), bytes).unwrap();
        // A task file the (damaged) end file would call stale: refused, it must stay.
        store
            .put_task(&ferrolab_edge::net::state::TaskFile {
                arrival: 1.0,
                req: ferrolab_edge::protocol::TaskRequest {
                    end: 0,
                    seq: 0,
                    model_version: 0,
                    trigger_t: 1.0,
                    drift: ferrolab_edge::protocol::DriftType::Sudden,
                    estimate: 0.5,
                    threshold: 0.8,
                    remaining_s: 100.0,
                    frames: Vec::new(),
                },
            })
            .unwrap();
        let mut opts = NetOptions::new("nats://127.0.0.1:1", "badstate");
        opts.state_dir = Some(dir.clone());
        let t0 = Instant::now();
        let e = net::run_edge(&cfg, &prep.edge(), SEED, &opts).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, net::NetError::Usage(_)), "{what}: {msg}");
        assert!(
            msg.contains(what) && msg.contains("end_0.json"),
            "{what}: {msg}"
        );
        assert!(
            dir.join("task_0_0.json").exists(),
            "{what}: a task file was removed"
        );
        // Refused before the 4-second connection attempt.
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what}: connected first"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `ferrolab adaevo mobile` without `--replay-trace`: each process runs its end's compressed
/// model on its stream, triggers and uploads from what that model sees, and runs every model
/// the edge ships from then on. Before any install its accuracy is the factory model's to the
/// bit; after one it is the shipped model's.
#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn live_mobile_processes_run_the_models_the_edge_ships() {
    let url = nats_url();
    let ends = 3;
    let speed = 24.0;
    let cfg = config(ends);
    let seconds = cfg.stream.seconds as f64;
    let (prep, prep_s) = timed_prepared(&cfg);
    let run = prefix("aelive");
    let start = start_after(prep_s);
    let base = serde_json::json!({
        "url": url, "prefix": run, "speed": speed, "seconds": seconds, "start": start,
        "cfg": serde_json::to_value(&cfg).unwrap(),
    });
    let mut edge = base.clone();
    edge["role"] = "edge".into();
    let (ms, es) = edge_and_live_ends(edge, &base, "live", ends, 5.0 * speed);
    let every = cfg.stream.eval_every_s;
    let mut after_install = 0;
    let mut differs = 0;
    for m in &ms {
        let k = m.end;
        eprintln!(
            "live end {k}: triggered {} installed {:?} dropped {:?} avg accuracy {:?} QoE@90% {:?}",
            m.triggered, m.installed, m.dropped, m.avg_accuracy, m.qoe_t90
        );
        assert_live_end_accounted(m, &es);
        // One evaluation per `eval_every_s` of the end's life, versions never going back.
        assert_eq!(
            m.accuracy.len(),
            (seconds as usize).div_ceil(every),
            "end {k}"
        );
        assert!(
            m.accuracy
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        for &(t, version, acc) in &m.accuracy {
            let (xs, ys) = &prep.eval[k][t as usize / every];
            let factory = prep.mobile.accuracy(xs, ys);
            if version == 0 {
                assert_eq!(acc, factory, "end {k} at {t}: the factory model runs");
            } else {
                after_install += 1;
                differs += usize::from(acc != factory);
            }
        }
        let mean = m.accuracy.iter().map(|a| a.2).sum::<f64>() / m.accuracy.len() as f64;
        assert_eq!(m.avg_accuracy, Some(mean));
        let q90 = m.qoe_t90.unwrap();
        let q80 = m.qoe_t80.unwrap();
        assert!((0.0..=1.0).contains(&q90) && q90 <= q80 && q80 <= 1.0);
    }
    assert!(after_install > 0, "no end ran a shipped model: {ms:?}");
    assert!(
        differs > 0,
        "every evaluation after an install scored as the factory model: the shipped model is not the one running"
    );
}

/// The detection task across processes: an upload of RGB frames is over NATS's message cap, so
/// it goes through the run's object store (the mobile ends use the server's cap as their
/// limit); the edge here is told a 4 KiB limit, so its model blobs take the object store too.
/// Every task is installed or dropped with a reason, each end's detector is the shipped one
/// after an install (its mAP@0.5 differs from the factory detector's there, equals it before).
#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn detection_over_nats_moves_large_bodies_through_the_object_store() {
    let url = nats_url();
    let mut cfg = AdaEvoConfig::default();
    cfg.task.name = "detection".into();
    cfg.stream.ends = 2;
    cfg.stream.seconds = 240;
    cfg.stream.jitter_s = 10.0;
    cfg.stream.eval_every_s = 10;
    cfg.detect.drifts = vec![
        "sudden:murky@50".into(),
        "incremental:deep@110+40".into(),
        "gradual:green@170+30".into(),
    ];
    cfg.detect.pretrain_frames = 300;
    cfg.detect.eval_frames = 8;
    let speed = 8.0;
    let seconds = cfg.stream.seconds as f64;
    let t0 = Instant::now();
    let prep = det_prepare(&cfg, SEED).unwrap();
    let prep_s = t0.elapsed().as_secs_f64();
    eprintln!("detection over NATS: preparation {prep_s:.1} s");
    let run = prefix("aedet");
    let base = serde_json::json!({
        "url": url, "prefix": run, "speed": speed, "seconds": seconds,
        // Three processes prepare at once on this machine's cores.
        "start": unix_now() + 3.0 * prep_s + 5.0,
        "cfg": serde_json::to_value(&cfg).unwrap(),
    });
    let mut edge = base.clone();
    edge["role"] = "det-edge".into();
    edge["inline"] = 4096.into();
    let (ms, es) = edge_and_live_ends(edge, &base, "det-live", cfg.stream.ends, 10.0 * speed);
    let every = cfg.stream.eval_every_s;
    let (mut installs, mut differs) = (0, 0);
    for m in &ms {
        let k = m.end;
        eprintln!(
            "detection end {k}: triggered {} uploads {} B ({} through the object store) installed {:?} ({} blobs through it) dropped {:?} mAP {:?} QoE@90% {:?}",
            m.triggered,
            m.upload_bytes,
            m.stored_uploads,
            m.installed,
            m.stored_blobs,
            m.dropped,
            m.avg_accuracy,
            m.qoe_t90
        );
        assert_live_end_accounted(m, &es);
        assert!(
            m.dropped
                .iter()
                .all(|r| !r.contains("unreadable") && !r.contains("upload failed")),
            "end {k}: {:?}",
            m.dropped
        );
        // Every shipped detector came through the object store (the edge's 4 KiB limit).
        assert_eq!(m.stored_blobs, m.installed.len() + m.duplicates, "end {k}");
        assert_eq!(
            m.accuracy.len(),
            (seconds as usize).div_ceil(every),
            "end {k}"
        );
        for &(t, version, map) in &m.accuracy {
            let set: Vec<(&[u8], &[ferrolab_edge::detect::grid::GtBox])> = prep.eval[k]
                [t as usize / every]
                .iter()
                .map(|f| (f.rgb.as_slice(), f.boxes.as_slice()))
                .collect();
            let factory = ferrolab_edge::detect::grid::model_map50(&prep.grid, &prep.mobile, &set);
            if version == 0 {
                assert_eq!(map, factory, "end {k} at {t}: the factory detector runs");
            } else {
                installs += 1;
                differs += usize::from(map != factory);
            }
        }
    }
    let stored: usize = ms.iter().map(|m| m.stored_uploads).sum();
    assert!(
        stored > 0,
        "no upload went through the object store: {ms:?}"
    );
    assert_eq!(
        es.stored_uploads, stored,
        "the edge read every stored upload"
    );
    assert!(es.undelivered.is_empty(), "{:?}", es.undelivered);
    assert!(installs > 0, "no end ran a shipped detector: {ms:?}");
    assert!(
        differs > 0,
        "every evaluation after an install scored as the factory detector"
    );
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn load_many_mobile_processes_every_task_completes_or_is_dropped_with_a_reason() {
    let url = nats_url();
    let ends = env_or("ADAEVO_LOAD_ENDS", 12.0) as usize;
    let speed = env_or("ADAEVO_LOAD_SPEED", 15.0);
    let seconds = 300.0;
    let cfg = config(ends);
    let (prep, prep_s) = timed_prepared(&cfg);
    let traces = net::make_traces(&cfg, &prep, seconds as usize);
    let dir: PathBuf = std::env::temp_dir().join(prefix("adaevo-load"));
    std::fs::create_dir_all(&dir).unwrap();
    let run = prefix("ae");
    // Every process's simulated time 0: after the edge has rebuilt its models.
    let start = start_after(prep_s);
    let base = serde_json::json!({
        "url": url, "prefix": run, "speed": speed, "seconds": seconds, "start": start,
    });
    let t0 = Instant::now();
    let mut v = base.clone();
    v["role"] = "edge".into();
    v["cfg"] = serde_json::to_value(&cfg).unwrap();
    let edge = child(v);
    let mut mobiles = Vec::new();
    for t in &traces {
        let path = dir.join(format!("trace{}.json", t.end));
        std::fs::write(&path, serde_json::to_vec(t).unwrap()).unwrap();
        let mut v = base.clone();
        v["role"] = "mobile".into();
        v["trace"] = path.to_str().unwrap().into();
        // Time for the last deliveries after the ends' life.
        v["tail"] = (5.0 * speed).into();
        mobiles.push(child(v));
    }
    let ms: Vec<MobileSummary> = mobiles
        .into_iter()
        .map(|c| serde_json::from_str(&summary_line(c, "MOBILE-SUMMARY")).unwrap())
        .collect();
    let es: EdgeSummary = serde_json::from_str(&summary_line(edge, "EDGE-SUMMARY")).unwrap();
    let wall = t0.elapsed().as_secs_f64();

    let triggered: usize = ms.iter().map(|m| m.triggered).sum();
    let sent: usize = ms.iter().map(|m| m.triggered - m.skipped_in_flight).sum();
    let installed: usize = ms.iter().map(|m| m.installed.len()).sum();
    let dropped: usize = ms.iter().map(|m| m.dropped.len()).sum();
    let trace_requests: usize = traces.iter().map(|t| t.requests.len()).sum();
    eprintln!(
        "adaevo load: {ends} mobile processes, {seconds} simulated s at {speed}x: {wall:.1}s wall \
         (prepare {prep_s:.1}s); trace requests {trace_requests}, triggered {triggered}, sent {sent}, \
         skipped in flight {}, installed {installed}, dropped {dropped}; edge received {} accepted {} \
         completed {} dropped {} undelivered {}; task memory peak {} of {} B; edge peak RSS {:?} B; \
         drop reasons {:?}",
        triggered - sent,
        es.received,
        es.accepted,
        es.completed,
        es.dropped.len(),
        es.undelivered.len(),
        es.peak_memory,
        es.memory_budget,
        es.peak_rss,
        ms.iter()
            .flat_map(|m| m.dropped.iter())
            .take(5)
            .collect::<Vec<_>>(),
    );
    assert_eq!(triggered, trace_requests, "every trace request's time came");
    assert!(sent > ends, "too few tasks to be a load test: {sent}");
    // Every sent task completed or was dropped with a reason, on both sides.
    for m in &ms {
        assert_eq!(
            m.triggered - m.skipped_in_flight,
            m.installed.len() + m.dropped.len() + m.unresolved,
            "end {}: {m:?}",
            m.end
        );
        assert_eq!(m.unresolved, 0, "end {} left a task unresolved", m.end);
        assert!(m.dropped.iter().all(|r| !r.trim().is_empty()));
        assert!(m.rejected.is_empty(), "end {}: {:?}", m.end, m.rejected);
        // No lost model versions: the end installed 1, 2, 3, … with no gap.
        let want: Vec<u64> = (1..=m.installed.len() as u64).collect();
        assert_eq!(m.installed, want, "end {}", m.end);
        assert_eq!(
            es.versions.get(&m.end).cloned().unwrap_or_default(),
            m.installed,
            "end {}: shipped vs installed",
            m.end
        );
    }
    assert_eq!(es.received, sent);
    assert_eq!(
        es.accepted,
        es.completed + es.dropped.len() - (es.received - es.accepted)
    );
    assert!(es.undelivered.is_empty(), "{:?}", es.undelivered);
    assert!(installed > 0, "no task completed");
    assert!(
        es.peak_memory <= es.memory_budget,
        "edge task memory {} over its budget {}",
        es.peak_memory,
        es.memory_budget
    );
    assert!(wall < 600.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn corrupt_blob_is_rejected_by_checksum_and_a_redelivery_is_installed_once() {
    let url = nats_url();
    let cfg = config(1);
    let prep = prepared(&cfg);
    let run = prefix("aeblob");
    let dir: PathBuf = std::env::temp_dir().join(prefix("adaevo-blob"));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = Trace {
        end: 0,
        requests: Vec::new(),
    };
    let path = dir.join("trace0.json");
    std::fs::write(&path, serde_json::to_vec(&trace).unwrap()).unwrap();
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mobile = child(serde_json::json!({
        "url": url, "prefix": run, "speed": 1.0, "seconds": 6.0, "start": start,
        "role": "mobile", "trace": path.to_str().unwrap(), "tail": 0.0,
    }));
    let good = ModelBlob::encode(0, 1, &prep.mobile);
    let mut bad = good.clone();
    let mid = bad.bytes.len() / 2;
    bad.bytes[mid] ^= 0x40;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers: Vec<String> = rt.block_on(async {
        let c = async_nats::connect(url.as_str()).await.unwrap();
        let subj = format!("ae.{run}.model.0");
        let mut out = Vec::new();
        for blob in [&bad, &good, &good] {
            let payload = serde_json::to_vec(blob).unwrap();
            // The mobile process may still be subscribing: retry until it answers.
            let t0 = Instant::now();
            loop {
                match tokio::time::timeout(
                    Duration::from_secs(1),
                    c.request(subj.clone(), payload.clone().into()),
                )
                .await
                {
                    Ok(Ok(m)) => {
                        out.push(String::from_utf8_lossy(&m.payload).into_owned());
                        break;
                    }
                    _ => {
                        assert!(
                            t0.elapsed() < Duration::from_secs(5),
                            "mobile never answered"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        out
    });
    let m: MobileSummary = serde_json::from_str(&summary_line(mobile, "MOBILE-SUMMARY")).unwrap();
    assert!(
        answers[0].starts_with("rejected") && answers[0].contains("checksum"),
        "{answers:?}"
    );
    assert_eq!(answers[1], "installed 1");
    assert_eq!(answers[2], "duplicate 1");
    assert_eq!(m.installed, vec![1]);
    assert_eq!(m.rejected.len(), 1);
    assert_eq!(m.duplicates, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unix seconds now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `(end, seq)` or `(end, version)` pairs.
type Pairs = Vec<(usize, u64)>;

/// `(end, seq)` of the task files and `(end, version)` of the end files in an edge state dir.
fn state_files(dir: &std::path::Path) -> (Pairs, Pairs) {
    let mut tasks = Vec::new();
    let mut ends = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(k) = name
            .strip_prefix("task_")
            .and_then(|r| r.strip_suffix(".json"))
        {
            let (a, b) = k.split_once('_').unwrap();
            tasks.push((a.parse().unwrap(), b.parse().unwrap()));
        } else if name.starts_with("end_") && name.ends_with(".json") {
            // A concurrent rename may hide the file for a moment; the next poll sees it.
            if let Ok(bytes) = std::fs::read(e.path()) {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                ends.push((
                    v["state"]["end"].as_u64().unwrap() as usize,
                    v["state"]["version"].as_u64().unwrap(),
                ));
            }
        }
    }
    (tasks, ends)
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn edge_killed_mid_training_restarts_from_its_state_and_loses_nothing() {
    let url = nats_url();
    let ends = 4;
    let speed = 15.0;
    let seconds = 300.0;
    let cfg = config(ends);
    let (prep, prep_s) = timed_prepared(&cfg);
    let traces = net::make_traces(&cfg, &prep, seconds as usize);
    let dir: PathBuf = std::env::temp_dir().join(prefix("adaevo-restart"));
    let state = dir.join("edge-state");
    std::fs::create_dir_all(&dir).unwrap();
    let run = prefix("aerestart");
    let start = start_after(prep_s);
    let base = serde_json::json!({
        "url": url, "prefix": run, "speed": speed, "seconds": seconds, "start": start,
    });
    let mut ev = base.clone();
    ev["role"] = "edge".into();
    ev["cfg"] = serde_json::to_value(&cfg).unwrap();
    ev["state"] = state.to_str().unwrap().into();
    let mut first = child(ev.clone());
    let mut mobiles = Vec::new();
    for t in &traces {
        let path = dir.join(format!("trace{}.json", t.end));
        std::fs::write(&path, serde_json::to_vec(t).unwrap()).unwrap();
        let mut v = base.clone();
        v["role"] = "mobile".into();
        v["trace"] = path.to_str().unwrap().into();
        v["tail"] = (5.0 * speed).into();
        mobiles.push(child(v));
    }
    // Kill the edge once it has shipped a version and holds an accepted, unfinished task:
    // the restart must continue both.
    // Only a task file that appeared since the previous poll counts: a task seen for a while may
    // finish (and its file go) between the poll and the kill, and the restart would then have
    // nothing to continue. A just-accepted task has most of its training ahead of it.
    let deadline = start + 0.6 * seconds / speed;
    let mut seen: Option<Pairs> = None;
    let (open_at_kill, versions_at_kill) = loop {
        let (tasks, vs) = state_files(&state);
        let fresh = seen
            .as_ref()
            .is_some_and(|p| tasks.iter().any(|t| !p.contains(t)));
        if fresh && vs.iter().any(|(_, v)| *v >= 1) {
            break (tasks, vs);
        }
        seen = Some(tasks);
        assert!(
            unix_now() < deadline,
            "the edge never held an open task after shipping a version"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    first.kill().unwrap();
    let _ = first.wait();
    let killed_at = (unix_now() - start) * speed;
    let second = child(ev);
    let ms: Vec<MobileSummary> = mobiles
        .into_iter()
        .map(|c| serde_json::from_str(&summary_line(c, "MOBILE-SUMMARY")).unwrap())
        .collect();
    let es: EdgeSummary = serde_json::from_str(&summary_line(second, "EDGE-SUMMARY")).unwrap();
    eprintln!(
        "adaevo restart: killed at {killed_at:.0} simulated s with open tasks {open_at_kill:?}, \
         versions {versions_at_kill:?}; restarted edge: restored {} tasks, versions {:?}, \
         redelivered {}, shipped {:?}, dropped {:?}; mobiles installed {:?}, dropped {:?}",
        es.restored_tasks,
        es.restored_versions,
        es.redelivered,
        es.versions,
        es.dropped,
        ms.iter().map(|m| &m.installed).collect::<Vec<_>>(),
        ms.iter().map(|m| &m.dropped).collect::<Vec<_>>(),
    );
    // The restarted edge found the open tasks and the shipped versions.
    assert!(es.restored_tasks >= 1, "no task re-queued: {es:?}");
    for (end, v) in &versions_at_kill {
        assert!(
            es.restored_versions.get(end).copied().unwrap_or(0) >= *v,
            "end {end}: version {v} forgotten: {:?}",
            es.restored_versions
        );
    }
    for m in &ms {
        // Nothing lost: every task the end sent was installed or dropped with a reason; none is
        // still waiting for a model the restarted edge forgot.
        assert_eq!(
            m.unresolved, 0,
            "end {} left a task unresolved: {m:?}",
            m.end
        );
        assert_eq!(
            m.triggered - m.skipped_in_flight,
            m.installed.len() + m.dropped.len(),
            "end {}: {m:?}",
            m.end
        );
        assert!(m.dropped.iter().all(|r| !r.trim().is_empty()));
        assert!(m.rejected.is_empty(), "end {}: {:?}", m.end, m.rejected);
        // Versions continue across the restart: 1, 2, 3, … with no gap and no restart at 1 (a
        // restarted edge shipping version 1 again would be acknowledged as a duplicate and the
        // end's task would hang).
        let want: Vec<u64> = (1..=m.installed.len() as u64).collect();
        assert_eq!(m.installed, want, "end {}", m.end);
        // What the restarted edge shipped anew is above what it found persisted.
        let restored = es.restored_versions.get(&m.end).copied().unwrap_or(0);
        let shipped = es.versions.get(&m.end).cloned().unwrap_or_default();
        assert!(
            shipped.iter().all(|v| *v >= restored),
            "end {}: restored {restored}, shipped {shipped:?}",
            m.end
        );
    }
    let new_versions = ms
        .iter()
        .filter(|m| {
            m.installed.last().copied().unwrap_or(0)
                > es.restored_versions.get(&m.end).copied().unwrap_or(0)
        })
        .count();
    assert!(
        new_versions >= 1,
        "the restarted edge shipped no new version"
    );
    assert!(es.undelivered.is_empty(), "{:?}", es.undelivered);
    // The finished run leaves no accepted task behind in the state directory.
    let (left, _) = state_files(&state);
    assert!(left.is_empty(), "task files left: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn mobile_dying_mid_upload_is_dropped_cleanly_and_the_edge_keeps_serving() {
    use std::io::{Read, Write};
    let url = nats_url();
    let speed = 15.0;
    let seconds = 240.0;
    // End 0 is a well-behaved mobile process; end 1 is played by this test: a truncated
    // upload, then a complete one from a client that disconnects at once.
    let cfg = config(2);
    let (prep, prep_s) = timed_prepared(&cfg);
    let traces = net::make_traces(&cfg, &prep, seconds as usize);
    let dir: PathBuf = std::env::temp_dir().join(prefix("adaevo-partial"));
    std::fs::create_dir_all(&dir).unwrap();
    let run = prefix("aepartial");
    let start = start_after(prep_s);
    let base = serde_json::json!({
        "url": url, "prefix": run, "speed": speed, "seconds": seconds, "start": start,
    });
    let mut ev = base.clone();
    ev["role"] = "edge".into();
    ev["cfg"] = serde_json::to_value(&cfg).unwrap();
    ev["grace"] = 3.0.into();
    let edge = child(ev);
    let path = dir.join("trace0.json");
    std::fs::write(&path, serde_json::to_vec(&traces[0]).unwrap()).unwrap();
    let mut mv = base.clone();
    mv["role"] = "mobile".into();
    mv["trace"] = path.to_str().unwrap().into();
    mv["tail"] = (5.0 * speed).into();
    let mobile = child(mv);

    // End 1's upload: a real request (any trace's first, re-addressed).
    let mut req = traces
        .iter()
        .flat_map(|t| t.requests.iter())
        .next()
        .expect("no trace request")
        .clone();
    req.end = 1;
    req.seq = 0;
    let payload = serde_json::to_vec(&req).unwrap();
    let subj = format!("ae.{run}.req");
    // Wait until the edge's clock runs (it subscribes before then).
    let wait = start + 1.0 - unix_now();
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
    // 1. The connection dies mid-upload: the NATS protocol's PUB announces the full size, half
    //    the bytes are written, the socket closes.
    let hostport = url.trim_start_matches("nats://").to_string();
    let mut sock = std::net::TcpStream::connect(&hostport).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut info = [0u8; 4096];
    let got = sock.read(&mut info).unwrap();
    assert!(info[..got].starts_with(b"INFO"), "not a NATS server");
    sock.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .unwrap();
    sock.write_all(format!("PUB {subj} _INBOX.gone {}\r\n", payload.len()).as_bytes())
        .unwrap();
    sock.write_all(&payload[..payload.len() / 2]).unwrap();
    sock.flush().unwrap();
    drop(sock);
    // 2. A complete upload whose sender is gone before the answer (and before its model).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(url.as_str()).await.unwrap();
        c.publish_with_reply(subj.clone(), "_INBOX.vanished".to_string(), payload.into())
            .await
            .unwrap();
        c.flush().await.unwrap();
        drop(c);
    });

    let m: MobileSummary = serde_json::from_str(&summary_line(mobile, "MOBILE-SUMMARY")).unwrap();
    let es: EdgeSummary = serde_json::from_str(&summary_line(edge, "EDGE-SUMMARY")).unwrap();
    eprintln!("adaevo partial upload: edge {es:?}; mobile 0 {m:?}");
    let sent0 = m.triggered - m.skipped_in_flight;
    // The truncated upload never reached the edge; the complete one did, once.
    assert_eq!(es.received, sent0 + 1, "{es:?}");
    // End 1's task finished (its model undelivered: nobody acknowledges it) or was dropped at
    // the end of the run, with a reason either way.
    let end1_undelivered = es.undelivered.iter().filter(|(e, _)| *e == 1).count();
    let end1_dropped = es.dropped.iter().filter(|(e, _, _)| *e == 1).count();
    assert_eq!(end1_undelivered + end1_dropped, 1, "{es:?}");
    assert!(es.undelivered.iter().all(|(e, _)| *e == 1), "{es:?}");
    assert!(!es.versions.contains_key(&1), "{es:?}");
    // The other end was served throughout.
    assert_eq!(m.unresolved, 0, "{m:?}");
    assert_eq!(sent0, m.installed.len() + m.dropped.len(), "{m:?}");
    assert!(!m.installed.is_empty(), "end 0 got no model: {m:?}");
    let want: Vec<u64> = (1..=m.installed.len() as u64).collect();
    assert_eq!(m.installed, want);
    assert_eq!(
        es.versions.get(&0).cloned().unwrap_or_default(),
        m.installed
    );
    let _ = std::fs::remove_dir_all(&dir);
}
