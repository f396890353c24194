//! HyPHEN vs MPConv on ResNet-20: op latencies measured on real N = 2^16 ciphertexts, then
//! each network run on the slot simulator charging those latencies per operation and level
//! (a modelled end-to-end latency: the full encrypted run at N = 2^16 needs more rotation
//! keys and memory than this shared machine has), plus top-1 agreement of the noisy
//! simulation with the plaintext network.
//!
//! ```sh
//! cargo run --release -p ferrolab-fhe --example hyphen_bench -- measure l16 1 runs/hyphen/ops_l16_t1.json
//! cargo run --release -p ferrolab-fhe --example hyphen_bench -- model runs/hyphen/ops_l16_t1.json 20 runs/hyphen
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferrolab_core::metrics::median;
use ferrolab_fhe::bootstrap::BootChain;
use ferrolab_fhe::hyphen::act::app_sign_polys;
use ferrolab_fhe::hyphen::backend::{OpTimes, Sim, Stats};
use ferrolab_fhe::hyphen::conv::OpCost;
use ferrolab_fhe::hyphen::layout::{Geometry, Map};
use ferrolab_fhe::hyphen::net::{
    LayerRecord, Net, Packing, RunOptions, encode_input, logits, run, totals,
};
use ferrolab_fhe::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::time::Instant;

fn measure(chain_name: &str, threads: usize, out: &str) {
    let (chain, boot) = match chain_name {
        // Bootstrapping times: crates/fhe/README.md (same machine and code, loaded runs):
        // n16_l9 32768 real slots 25.0 s; n16_l16 4096 real slots 53.9 s.
        "l9" => (BootChain::n16_l9(), 25.0),
        _ => (BootChain::n16_l16(), 53.9),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let top = chain.levels_after;
    let ctx = Context::new(chain.spec()).unwrap();
    let mut kg = KeyGenerator::new_seeded(&ctx, 1);
    let pk = kg.public_key();
    let keys = kg.evaluation_keys(&[1, 2, 3, 4], false);
    let ev = Evaluator::new(&ctx, keys).unwrap();
    let mut enc = Encryptor::new_seeded(&ctx, 2);
    let n = ctx.slots();
    let mut rng = StdRng::seed_from_u64(3);
    let vals: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
    let levels = vec![1, top / 2, top];
    let mut t = OpTimes {
        params: format!("n16_{chain_name}"),
        threads,
        levels: levels.clone(),
        rot: vec![],
        rot_hoisted: vec![],
        pmult: vec![],
        rescale: vec![],
        cmult: vec![],
        add: vec![],
        boot,
        poly: vec![],
    };
    let reps = 3;
    for &l in &levels {
        let pt = ctx.encode_real(&vals, l, ctx.scale_at(l)).unwrap();
        let ct = enc.encrypt(&pk, &pt).unwrap();
        let time = |f: &mut dyn FnMut()| {
            median(
                (0..reps)
                    .map(|_| {
                        let s = Instant::now();
                        f();
                        s.elapsed().as_secs_f64()
                    })
                    .collect::<Vec<f64>>(),
            )
        };
        t.rot.push(time(&mut || {
            ev.rotate(&ct, 1).unwrap();
        }));
        t.rot_hoisted.push(
            time(&mut || {
                ev.rotate_hoisted(&ct, &[1, 2, 3, 4]).unwrap();
            }) / 4.0,
        );
        let target = ev.rescale_target(&ct);
        let cvals: Vec<C64> = vals.iter().map(|&x| C64::real(x)).collect();
        t.pmult.push(time(&mut || {
            let p = ctx.encode(&cvals, l, target).unwrap();
            ev.mul_plain(&ct, &p).unwrap();
        }));
        let p = ctx.encode(&cvals, l, target).unwrap();
        let prod = ev.mul_plain(&ct, &p).unwrap();
        t.rescale.push(time(&mut || {
            ev.rescale(&prod).unwrap();
        }));
        t.cmult.push(time(&mut || {
            ev.square_rescale(&ct).unwrap();
        }));
        t.add.push(time(&mut || {
            ev.add(&ct, &ct).unwrap();
        }));
        eprintln!(
            "level {l}: rot {:.3} hoisted {:.3} pmult {:.3} rescale {:.3} cmult {:.3} add {:.4}",
            t.rot.last().unwrap(),
            t.rot_hoisted.last().unwrap(),
            t.pmult.last().unwrap(),
            t.rescale.last().unwrap(),
            t.cmult.last().unwrap(),
            t.add.last().unwrap()
        );
    }
    if top >= 14 {
        // AppReLU's components at the levels the baseline evaluates them.
        let [p1, _, p3] = app_sign_polys();
        for (p, l) in [(&p1, top), (&p3, top - 8)] {
            let pt = ctx.encode_real(&vals, l, ctx.scale_at(l)).unwrap();
            let ct = enc.encrypt(&pk, &pt).unwrap();
            let s = Instant::now();
            ev.eval_chebyshev(&ct, p).unwrap();
            let dt = s.elapsed().as_secs_f64();
            eprintln!("poly degree {} at level {l}: {dt:.2} s", p.degree());
            t.poly.push((p.degree(), l, dt));
        }
    }
    if let Some(dir) = std::path::Path::new(out).parent() {
        or_exit(std::fs::create_dir_all(dir), &dir.display().to_string());
    }
    save(out, serde_json::to_string_pretty(&t).unwrap());
}

struct Row {
    name: &'static str,
    stats: Stats,
    log: Vec<LayerRecord>,
    agreement: f64,
    max_err: f64,
}

fn image(seed: u64) -> Map {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Map::zeros(3, 32);
    // Fashion-MNIST-like statistics: a padded 28×28 grey image replicated to 3 channels.
    let g: Vec<f64> = (0..32 * 32)
        .map(|i| {
            let (y, x) = (i / 32, i % 32);
            if (2..30).contains(&y) && (2..30).contains(&x) {
                rng.random::<f64>()
            } else {
                0.0
            }
        })
        .collect();
    for c in 0..3 {
        m.v[c * 1024..(c + 1) * 1024].copy_from_slice(&g);
    }
    m
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
        .map_or(0, |x| x.0)
}

fn model(times_path: &str, images: usize, out_dir: &str) {
    let times: OpTimes = or_exit(
        serde_json::from_str(&or_exit(std::fs::read_to_string(times_path), times_path)),
        times_path,
    );
    let levels = *times.levels.last().unwrap();
    let geo = Geometry { n: 1 << 15, wr: 32 };
    let cost = OpCost {
        hoisted_rot: times.rot_hoisted[times.rot_hoisted.len() - 1]
            / times.rot[times.rot.len() - 1],
        pmult: times.pmult[times.pmult.len() - 1] / times.rot[times.rot.len() - 1],
    };
    let opt = RunOptions { geo, cost };
    let mut rows = vec![];
    let mut skipped: Vec<(&str, String)> = vec![];
    for (name, quad, packing) in [
        ("hyphen", true, Packing::Hyphen),
        ("mpconv", false, Packing::Mpconv),
        ("mpconv_aespa", true, Packing::Mpconv),
    ] {
        let net = Net::random(7, quad, 10);
        // A fresh ciphertext may use the bootstrapping levels too (Lee et al. start at 30).
        let fresh = if quad { levels } else { levels + 14 };
        let mut sim = Sim::new(geo.n, levels).with_times(times.clone());
        let input = encode_input(&net, geo, packing, &image(0))
            .into_iter()
            .map(|v| sim.encrypt(v, fresh))
            .collect();
        // MPConv + AppReLU on a short chain (9 levels) cannot run: AppReLU alone needs 14.
        let log = match run(&mut sim, &net, packing, input, &opt) {
            Ok((_, _, log)) => log,
            Err(e) => {
                eprintln!("{name}: does not fit these parameters: {e}");
                skipped.push((name, e.to_string()));
                continue;
            }
        };
        // Agreement: the same computation with CKKS-sized noise per operation (2^-25 after
        // every rescale/rotation/product, measured ≈ 26 bits on the N = 2^11 pair; 2^-17
        // per bootstrap, the README's worst slot).
        let (mut agree, mut max_err) = (0usize, 0.0f64);
        for i in 0..images {
            let img = image(100 + i as u64);
            let mut s =
                Sim::new(geo.n, levels).with_noise(2f64.powi(-25), 2f64.powi(-17), i as u64);
            let input = encode_input(&net, geo, packing, &img)
                .into_iter()
                .map(|v| s.encrypt(v, fresh))
                .collect();
            let (o, pf, _) = run(&mut s, &net, packing, input, &opt).unwrap();
            let vs: Vec<Vec<f64>> = o.iter().map(|c| c.v.clone()).collect();
            let got = logits(&net, &pf, &vs);
            let want = net.reference(&img);
            agree += usize::from(argmax(&got) == argmax(&want));
            for (a, b) in got.iter().zip(&want) {
                max_err = max_err.max((a - b).abs());
            }
        }
        let stats = totals(&log);
        eprintln!(
            "{name}: {:.1} s modelled (rot {:.1}, mult {:.1}, boot {:.1}); {} rotations, {} bootstraps; agreement {agree}/{images}, max logit error {max_err:.2e}",
            stats.t_rot + stats.t_mult + stats.t_boot,
            stats.t_rot,
            stats.t_mult,
            stats.t_boot,
            stats.rot_calls,
            stats.boot
        );
        rows.push(Row {
            name,
            stats,
            log,
            agreement: agree as f64 / images.max(1) as f64,
            max_err,
        });
    }
    write_report(&rows, &skipped, &times, images, out_dir);
}

fn by_kind(log: &[LayerRecord]) -> Vec<(&'static str, Stats)> {
    let mut out: Vec<(&'static str, Stats)> = vec![];
    for l in log {
        match out.iter_mut().find(|(k, _)| *k == l.kind) {
            Some((_, s)) => s.add(&l.stats),
            None => out.push((l.kind, l.stats)),
        }
    }
    out
}

fn write_report(
    rows: &[Row],
    skipped: &[(&str, String)],
    times: &OpTimes,
    images: usize,
    out_dir: &str,
) {
    or_exit(std::fs::create_dir_all(out_dir), out_dir);
    let suffix = format!("t{}", times.threads);
    let metrics = |r: &Row| {
        let s = &r.stats;
        let mut m = serde_json::Map::new();
        m.insert(
            format!("latency_seconds_resnet20_{suffix}"),
            (s.t_rot + s.t_mult + s.t_boot).into(),
        );
        m.insert("rotations_total".into(), s.rot_calls.into());
        m.insert("key_switch_rotations_total".into(), s.key_switches().into());
        m.insert("bootstraps_total".into(), s.boot.into());
        m.insert("pmult_total".into(), s.pmult.into());
        m.insert("cmult_total".into(), s.cmult.into());
        m.insert("agreement_top1".into(), r.agreement.into());
        m.insert("max_logit_error".into(), r.max_err.into());
        serde_json::Value::Object(m)
    };
    let details = |r: &Row| {
        serde_json::Value::Array(
            r.log
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "layer": l.name, "kind": l.kind, "rotations": l.stats.rot_calls,
                        "pmult": l.stats.pmult, "cmult": l.stats.cmult, "bootstraps": l.stats.boot,
                        "level_after": l.level_after, "note": l.note,
                        "seconds_rotation": l.stats.t_rot, "seconds_mult": l.stats.t_mult,
                        "seconds_bootstrap": l.stats.t_boot,
                    })
                })
                .collect(),
        )
    };
    let report = serde_json::json!({
        "system": "hyphen",
        "latency_kind": "modelled: simulator op counts per level x op latencies measured on N=2^16 ciphertexts (bootstrap time cited from crates/fhe/README.md); not an end-to-end encrypted run",
        "params": times.params,
        "threads": times.threads,
        "agreement_images": images,
        "agreement_note": "random-weight ResNet-20 (not trained), synthetic padded 28x28 images; noisy simulation vs plaintext network",
        "metrics": rows.iter().find(|r| r.name == "hyphen").map(metrics),
        "baselines": rows.iter().filter(|r| r.name != "hyphen").map(|r| (r.name.to_string(), metrics(r)))
            .chain(skipped.iter().map(|(n, e)| (n.to_string(), serde_json::json!({ "does_not_fit": e }))))
            .collect::<serde_json::Map<_, _>>(),
        "details": rows.iter().map(|r| (r.name.to_string(), details(r))).collect::<serde_json::Map<_, _>>(),
        "op_times": times,
    });
    save(
        &format!("{out_dir}/report_{}_{suffix}.json", times.params),
        serde_json::to_string_pretty(&report).unwrap(),
    );
    // Per-layer-type table and a stacked-bar SVG.
    let mut md = String::from(
        "| row | kind | rotations | pmult | cmult | bootstraps | rotation s | mult s | bootstrap s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"200\" font-family=\"sans-serif\" font-size=\"12\">\n",
    );
    let max_t = rows
        .iter()
        .map(|r| r.stats.t_rot + r.stats.t_mult + r.stats.t_boot)
        .fold(1e-9, f64::max);
    for (i, r) in rows.iter().enumerate() {
        for (k, s) in by_kind(&r.log) {
            md.push_str(&format!(
                "| {} | {k} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
                r.name, s.rot_calls, s.pmult, s.cmult, s.boot, s.t_rot, s.t_mult, s.t_boot
            ));
        }
        let y = 20 + i * 55;
        let mut x = 120.0;
        svg.push_str(&format!(
            "<text x=\"5\" y=\"{}\">{}</text>\n",
            y + 20,
            r.name
        ));
        for (v, color) in [
            (r.stats.t_rot, "#d62728"),
            (r.stats.t_mult, "#1f77b4"),
            (r.stats.t_boot, "#2ca02c"),
        ] {
            let w = 560.0 * v / max_t;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"30\" fill=\"{color}\"/>\n"
            ));
            x += w;
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\">{:.0} s</text>\n",
            x + 4.0,
            y + 20,
            r.stats.t_rot + r.stats.t_mult + r.stats.t_boot
        ));
    }
    svg.push_str("<text x=\"120\" y=\"190\">red: rotations, blue: multiplications/activations, green: bootstrapping (modelled)</text>\n</svg>\n");
    save(
        &format!("{out_dir}/breakdown_{}_{suffix}.md", times.params),
        md,
    );
    save(
        &format!("{out_dir}/breakdown_{}_{suffix}.svg", times.params),
        svg,
    );
}

/// A user-named path that cannot be read or written ends the run with one line naming it.
fn or_exit<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("error: {what}: {e}");
        std::process::exit(1)
    })
}

/// Replaces `path` whole (temporary file, then rename): an interrupted rerun keeps the old
/// results rather than half of the new ones.
fn save(path: &str, text: String) {
    // The error already names the path.
    or_exit(
        ferrolab_core::run::write_atomic(std::path::Path::new(path), text.as_bytes()),
        "write",
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("measure") => measure(
            a.get(2).map_or("l16", String::as_str),
            a.get(3).and_then(|s| s.parse().ok()).unwrap_or(1),
            a.get(4).map_or("runs/hyphen/ops.json", String::as_str),
        ),
        Some("model") => model(
            a.get(2).map_or("runs/hyphen/ops.json", String::as_str),
            a.get(3).and_then(|s| s.parse().ok()).unwrap_or(20),
            a.get(4).map_or("runs/hyphen", String::as_str),
        ),
        _ => eprintln!(
            "usage: hyphen_bench measure <l9|l16> <threads> <out.json> | model <ops.json> <images> <out_dir>"
        ),
    }
}
