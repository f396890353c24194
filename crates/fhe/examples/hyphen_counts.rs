//! ResNet-20 in both packings on the slot simulator (n = 2^15, 32×32 raster): rotations,
//! products and bootstraps per layer, and the logits against the plaintext network.
//!
//! `cargo run --release -p ferrolab-fhe --example hyphen_counts [levels_after_boot]`
#![allow(clippy::unwrap_used)]

use ferrolab_fhe::hyphen::backend::{Backend, Sim};
use ferrolab_fhe::hyphen::conv::OpCost;
use ferrolab_fhe::hyphen::layout::{Geometry, Map};
use ferrolab_fhe::hyphen::net::{Net, Packing, RunOptions, encode_input, logits, run, totals};

fn main() {
    let levels: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let geo = Geometry { n: 1 << 15, wr: 32 };
    let opt = RunOptions {
        geo,
        cost: OpCost::default(),
    };
    let mut img = Map::zeros(3, 32);
    for (i, v) in img.v.iter_mut().enumerate() {
        *v = ((i * 7919) % 255) as f64 / 255.0 - 0.5;
    }
    for (name, quad, packing, fresh) in [
        ("hyphen", true, Packing::Hyphen, levels),
        ("mpconv_aespa", true, Packing::Mpconv, levels),
        ("mpconv", false, Packing::Mpconv, levels + 14),
    ] {
        let net = Net::random(3, quad, 10);
        let t = std::time::Instant::now();
        let mut sim = Sim::new(geo.n, levels);
        let input: Vec<_> = encode_input(&net, geo, packing, &img)
            .into_iter()
            .map(|v| sim.encrypt(v, fresh))
            .collect();
        let (out, pf, log) = run(&mut sim, &net, packing, input, &opt).unwrap();
        let vs: Vec<Vec<f64>> = out.iter().map(|c| c.v.clone()).collect();
        let got = logits(&net, &pf, &vs);
        let want = net.reference(&img);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "== {name}: {:.1} s, max logit error {err:.3e}",
            t.elapsed().as_secs_f64()
        );
        for l in &log {
            println!(
                "{:<22} {:<9} rot {:>4} (ks {:>4}) pmult {:>4} cmult {:>3} boot {} level {:>2} {}",
                l.name,
                l.kind,
                l.stats.rot_calls,
                l.stats.key_switches(),
                l.stats.pmult,
                l.stats.cmult,
                l.stats.boot,
                l.level_after,
                l.note
            );
        }
        let s = totals(&log);
        println!(
            "TOTAL rot {} ks {} pmult {} cmult {} boot {} poly {}",
            s.rot_calls,
            s.key_switches(),
            s.pmult,
            s.cmult,
            s.boot,
            s.poly
        );
        let _ = sim.stats();
    }
}
