//! Probe of the detection task's factory detector: trains it on clear-water frames and prints
//! cell accuracy, mAP@0.5 on training and held-out frames, and box statistics
//! (`cargo run --release -p ferrolab-edge --example det_probe -- [frames] [epochs] [hidden] [lr]`).

use ferrolab_edge::config::AdaEvoConfig;
use ferrolab_edge::detect::grid::{GtBox, OUT, model_map50, train_detector};
use ferrolab_edge::detect::stream as ds;
use ferrolab_edge::model::{Mlp, TrainOpts};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: f64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let n = arg(1, 400.0) as usize;
    let epochs = arg(2, 12.0) as usize;
    let hidden = arg(3, 32.0) as usize;
    let lr = arg(4, 0.01) as f32;
    let mut cfg = AdaEvoConfig::default();
    cfg.detect.side = arg(5, 48.0) as usize;
    cfg.detect.pool = arg(6, 2.0) as usize;
    cfg.mobile.conv_channels = arg(7, 0.0) as usize;
    let g = cfg.grid();
    let scfg = ds::scene_config(g.side);
    let clear = ds::water("clear", 1.0);
    let t0 = Instant::now();
    let frames: Vec<ds::DetFrame> = (0..n + 100)
        .map(|i| {
            ds::render(&scfg, 1000 + i as u64, &clear, i as u64).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    println!(
        "render {:.3} ms/frame",
        t0.elapsed().as_secs_f64() * 1e3 / (n + 100) as f64
    );
    let nb: usize = frames.iter().map(|f| f.boxes.len()).sum();
    let mean_side: f32 = frames
        .iter()
        .flat_map(|f| f.boxes.iter())
        .map(|b| (b.0[2] * b.0[3]).sqrt())
        .sum::<f32>()
        / nb as f32;
    println!(
        "boxes per frame {:.2}, mean sqrt(area) {:.1} px",
        nb as f64 / frames.len() as f64,
        mean_side
    );
    let (tr, te) = frames.split_at(n);
    let samples: Vec<_> = tr
        .iter()
        .enumerate()
        .flat_map(|(i, f)| g.samples(&f.rgb, &f.boxes, cfg.detect.bg_keep, 7 ^ (i as u64) << 12))
        .collect();
    let pos = samples.iter().filter(|s| s.1.class > 0).count();
    println!("samples {} ({} object cells)", samples.len(), pos);
    let mut m = match cfg.mobile.conv_channels {
        0 => Mlp::new(&[g.input(), hidden, OUT], 3),
        c => Mlp::with_stem(3, g.window_side(), c, 3, &[hidden, OUT], 3),
    };
    println!("model {}", m.describe());
    let pairs = |fs: &[ds::DetFrame]| -> Vec<(Vec<u8>, Vec<GtBox>)> {
        fs.iter()
            .map(|f| (f.rgb.clone(), f.boxes.clone()))
            .collect()
    };
    let (ptr, pte) = (pairs(tr), pairs(te));
    let view = |v: &[(Vec<u8>, Vec<GtBox>)]| -> Vec<(Vec<u8>, Vec<GtBox>)> { v.to_vec() };
    let _ = view;
    for e in 0..epochs {
        let t1 = Instant::now();
        train_detector(
            &mut m,
            &samples,
            &TrainOpts {
                epochs: 1,
                lr,
                momentum: 0.9,
                batch: 32,
                seed: e as u64,
            },
        );
        let acc = samples
            .iter()
            .filter(|s| {
                let o = m.outputs(&s.0);
                let c = (0..6).max_by(|a, b| o[*a].total_cmp(&o[*b])).unwrap_or(0);
                c == s.1.class as usize
            })
            .count() as f64
            / samples.len() as f64;
        let btr: Vec<(&[u8], &[GtBox])> = ptr
            .iter()
            .take(100)
            .map(|(r, b)| (r.as_slice(), b.as_slice()))
            .collect();
        let bte: Vec<(&[u8], &[GtBox])> = pte
            .iter()
            .map(|(r, b)| (r.as_slice(), b.as_slice()))
            .collect();
        println!(
            "epoch {e}: cell acc {acc:.3}, mAP50 train {:.3} test {:.3} ({:.1} s)",
            model_map50(&g, &m, &btr),
            model_map50(&g, &m, &bte),
            t1.elapsed().as_secs_f64()
        );
    }
    // Box sanity: decode the targets of the first test frame.
    let f = &te[0];
    let t = g.targets(&f.boxes);
    for (i, c) in t.iter().enumerate().filter(|(_, c)| c.class > 0) {
        let o = m.outputs(&g.cell_inputs(&f.rgb)[i]);
        println!(
            "gt {:?} target-decoded {:?} predicted {:?} class {} p-logits {:?}",
            f.boxes,
            g.decode_box(i, &c.boxt),
            g.decode_box(i, &o[6..10]),
            c.class,
            &o[..6]
        );
    }
}
