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
//!   version is acknowledged once, not installed twice.
//!
//! Child processes are this test binary again, running [`adaevo_child`] with `ADAEVO_CHILD`.

#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

use ferrolab_edge::AdaEvoConfig;
use ferrolab_edge::experiment::{load_base, prepare};
use ferrolab_edge::net::{self, EdgeSummary, MobileSummary, NetOptions, Trace};
use ferrolab_edge::protocol::ModelBlob;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

fn opts_from(v: &serde_json::Value) -> NetOptions {
    let mut o = NetOptions::new(v["url"].as_str().unwrap(), v["prefix"].as_str().unwrap());
    o.speed = v["speed"].as_f64().unwrap();
    o.seconds = v["seconds"].as_f64().unwrap();
    o.start = Some(UNIX_EPOCH + Duration::from_secs_f64(v["start"].as_f64().unwrap()));
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
            let prep = prepared(&cfg);
            let s = net::run_edge(&cfg, &prep, SEED, &opts).unwrap();
            println!("EDGE-SUMMARY {}", serde_json::to_string(&s).unwrap());
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

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn load_many_mobile_processes_every_task_completes_or_is_dropped_with_a_reason() {
    let url = nats_url();
    let ends = env_or("ADAEVO_LOAD_ENDS", 12.0) as usize;
    let speed = env_or("ADAEVO_LOAD_SPEED", 15.0);
    let seconds = 300.0;
    let cfg = config(ends);
    let t_prep = Instant::now();
    let prep = prepared(&cfg);
    let prep_s = t_prep.elapsed().as_secs_f64();
    let traces = net::make_traces(&cfg, &prep, seconds as usize);
    let dir: PathBuf = std::env::temp_dir().join(prefix("adaevo-load"));
    std::fs::create_dir_all(&dir).unwrap();
    let run = prefix("ae");
    // Every process's simulated time 0: after the edge has rebuilt its models.
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 2.0 * prep_s
        + 3.0;
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
