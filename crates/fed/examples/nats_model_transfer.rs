//! Times moving one model through the NATS fabric on loopback: `send_task` (safetensors
//! encoding, SHA-256 name, object-store upload in 512 KiB chunks, the task message) followed by
//! `recv_task` (the message, object-store download with its SHA-256 check, decoding with the
//! finiteness check), bit-identity asserted each time. Prints the median and spread of the
//! rounds as one JSON line.
//!
//! ```text
//! nats-server -js -a 127.0.0.1 -p 4222 -sd /tmp/js &
//! FERROLAB_NATS_URL=nats://127.0.0.1:4222 cargo run --release -p ferrolab-fed --features nats \
//!     --example nats_model_transfer -- [MiB=100] [rounds=5] [--memory]
//! ```

#[cfg(feature = "nats")]
fn main() {
    use ferrolab_fed::fabric::{Config, Fabric, Task, TaskKind};
    use ferrolab_fed::nats::{NatsFabric, NatsOptions, Party};
    use ferrolab_fed::params::Params;
    use std::time::{Duration, Instant};

    let args: Vec<String> = std::env::args().skip(1).collect();
    let memory = args.iter().any(|a| a == "--memory");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let mib = nums.first().copied().unwrap_or(100);
    let rounds = nums.get(1).copied().unwrap_or(5).max(1);
    let Ok(url) = std::env::var("FERROLAB_NATS_URL") else {
        eprintln!("error: set FERROLAB_NATS_URL to a nats-server started with -js");
        std::process::exit(2);
    };
    let prefix = format!("bench{}", std::process::id());
    let mut opts = NatsOptions::new(&url, &prefix, Party::Server);
    opts.memory_storage = memory;
    opts.request_timeout = Duration::from_secs(60);
    let fabric = match NatsFabric::connect(opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // Two tensors, one big and one small, like a model; values vary so nothing compresses.
    let n = mib * (1 << 20) / 4 - 1024;
    let big: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin()).collect();
    let mut params = Params::new();
    if let Err(e) = params.insert("layer.weight", vec![n], big) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let _ = params.insert("layer.bias", vec![1024], vec![0.5; 1024]);
    let bytes = params.to_safetensors().len();
    let mut send = Vec::new();
    let mut recv = Vec::new();
    for r in 0..rounds as u64 {
        // A new round each time, so the content-addressed upload is never skipped.
        let task = Task {
            round: r,
            kind: TaskKind::Fit,
            config: Config::new(),
            params: params.clone(),
        };
        let t0 = Instant::now();
        if let Err(e) = fabric.send_task(0, &task) {
            eprintln!("error: send: {e}");
            std::process::exit(1);
        }
        let t1 = Instant::now();
        let got = match fabric.recv_task(0, Duration::from_secs(60)) {
            Ok(Some(t)) => t,
            other => {
                eprintln!("error: receive: {other:?}");
                std::process::exit(1);
            }
        };
        let t2 = Instant::now();
        assert!(got.params == params, "the model changed in transit");
        send.push((t1 - t0).as_secs_f64());
        recv.push((t2 - t1).as_secs_f64());
    }
    let total: Vec<f64> = send.iter().zip(&recv).map(|(a, b)| a + b).collect();
    let med = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let (lo, hi) = total
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
    println!(
        "{{\"model_mib\":{:.1},\"rounds\":{rounds},\"storage\":\"{}\",\"send_seconds_median\":{:.3},\"recv_seconds_median\":{:.3},\"total_seconds_median\":{:.3},\"total_seconds_min\":{lo:.3},\"total_seconds_max\":{hi:.3},\"mib_per_second\":{:.0}}}",
        bytes as f64 / (1 << 20) as f64,
        if memory { "memory" } else { "file" },
        med(&send),
        med(&recv),
        med(&total),
        bytes as f64 / (1 << 20) as f64 / med(&total)
    );
}

#[cfg(not(feature = "nats"))]
fn main() {
    eprintln!("error: build with --features nats");
    std::process::exit(2);
}
