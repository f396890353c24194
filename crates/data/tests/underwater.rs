//! The underwater renderer: physics sanity of the image-formation model, the Jerlov table's
//! colour ordering, exact boxes, determinism by seed, drift along a camera path, COCO output.

use ferrolab_data::underwater::{
    CATEGORIES, CameraPath, Scene, SceneConfig, Water, WaterType, sample, write_coco,
};

fn close(a: [f32; 3], b: [f32; 3], tol: f32) -> bool {
    a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn zero_range_is_the_scene_and_infinite_range_is_the_veiling_light() {
    let j = [0.7, 0.3, 0.1];
    for t in WaterType::ALL {
        let w = Water::of_type(t, 8.0);
        assert!(close(w.observe(j, 0.0), j, 1e-6), "{t}");
        let far = w.observe(j, 1e4);
        assert!(close(far, w.veiling_light(), 1e-5), "{t}: {far:?}");
        // With one coefficient for both terms (UWCNN), I − B∞ = (J − B∞)·N^z: monotone in
        // range. (Split coefficients may overshoot B∞ on the way, as the revised model allows.)
        let w = Water {
            backscatter_flatten: 0.0,
            ..w
        };
        let b = w.veiling_light();
        let mut last = [f32::INFINITY; 3];
        for z in [0.5, 1.0, 2.0, 4.0, 8.0] {
            let o = w.observe(j, z);
            for c in 0..3 {
                let d = (o[c] - b[c]).abs();
                assert!(d <= last[c] + 1e-6, "{t} z={z} c={c}");
                last[c] = d;
            }
        }
    }
}

#[test]
fn transmission_is_the_table_to_the_power_of_range() {
    // UWCNN: N_λ^d. Blue of type I is .982 per metre, red of type 9 is .55.
    let w = Water {
        backscatter_flatten: 0.0,
        ..Water::of_type(WaterType::I, 0.0)
    };
    let black_bg = |w: &Water, j: [f32; 3], z: f32| {
        let b = w.veiling_light();
        let o = w.observe(j, z);
        // Remove the backscatter term to read the direct transmission.
        let bb = w.beta_backscatter();
        [0, 1, 2].map(|c| (o[c] - b[c] * (1.0 - (-bb[c] * z).exp())) / j[c])
    };
    let t = black_bg(&w, [1.0, 1.0, 1.0], 3.0);
    assert!((t[2] - 0.982f32.powi(3)).abs() < 1e-5, "{t:?}");
    assert!((t[0] - 0.805f32.powi(3)).abs() < 1e-5, "{t:?}");
    let w9 = Water::of_type(WaterType::C9, 0.0);
    let t9 = black_bg(&w9, [1.0, 1.0, 1.0], 2.0);
    assert!((t9[0] - 0.55f32.powi(2)).abs() < 1e-5, "{t9:?}");
    // The split: backscatter is flatter across channels than the direct signal.
    let (d, b) = (w9.beta_direct(), w9.beta_backscatter());
    let spread = |v: [f32; 3]| {
        v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min)
    };
    assert!(spread(b) < spread(d));
    assert_eq!(
        Water {
            backscatter_flatten: 0.0,
            ..w9
        }
        .beta_backscatter(),
        d
    );
}

#[test]
fn water_colour_follows_the_least_attenuated_channel() {
    let dominant = |t: WaterType| {
        let b = Water::of_type(t, 10.0).veiling_light();
        (0..3).max_by(|&i, &j| b[i].total_cmp(&b[j])).unwrap()
    };
    // Oceanic water is blue, mid coastal water green, type 9 red-yellow (red .55 > green .46).
    for t in [WaterType::I, WaterType::IA, WaterType::IB, WaterType::II] {
        assert_eq!(dominant(t), 2, "{t}");
    }
    for t in [WaterType::C3, WaterType::C5] {
        assert_eq!(dominant(t), 1, "{t}");
    }
    assert_eq!(dominant(WaterType::C9), 0);
    // Blue and green transmission never increase from the clearest to the most turbid type,
    // so a grey target at 3 m loses contrast monotonically in those channels.
    for pair in WaterType::ALL.windows(2) {
        let (a, b) = (pair[0].residual_ratio(), pair[1].residual_ratio());
        assert!(b[1] <= a[1] && b[2] <= a[2], "{} → {}", pair[0], pair[1]);
    }
}

#[test]
fn names_parse_and_bad_names_are_named() {
    assert_eq!(
        WaterType::parse_list("I, ib,3,c7").unwrap(),
        vec![WaterType::I, WaterType::IB, WaterType::C3, WaterType::C7]
    );
    assert_eq!(WaterType::C7.key(), "7");
    assert_eq!(WaterType::IB.key(), "ib");
    let e = WaterType::parse_list("I,IV").unwrap_err();
    assert!(e.contains("\"IV\""), "{e}");
    // `7` and `C7` are one type: given twice.
    let e = WaterType::parse_list("I,7,c7").unwrap_err();
    assert!(e.contains("7 is given twice"), "{e}");
}

#[test]
fn same_seed_same_image_and_boxes_are_exact_and_inside() {
    let cfg = SceneConfig::default();
    let a = sample(&cfg, WaterType::C5, 7).unwrap();
    let b = sample(&cfg, WaterType::C5, 7).unwrap();
    assert_eq!(a, b);
    let c = sample(&cfg, WaterType::C5, 8).unwrap();
    assert_ne!(a.image.rgb, c.image.rgb);
    // The same seed in another water: same layout, same boxes, other pixels.
    let d = sample(&cfg, WaterType::I, 7).unwrap();
    assert_eq!(a.image.boxes, d.image.boxes);
    assert_ne!(a.image.rgb, d.image.rgb);
    let mut per_cat = [0usize; 5];
    let mut n = 0;
    for seed in 0..60 {
        let s = sample(&cfg, WaterType::II, seed).unwrap();
        let scene = Scene::generate(&cfg, seed).unwrap();
        assert!(scene.objects.len() <= cfg.max_objects);
        for bx in &s.image.boxes {
            let [x, y, w, h] = bx.bbox;
            assert!(
                x >= 0.0 && y >= 0.0 && x + w <= 128.0 && y + h <= 128.0,
                "{bx:?}"
            );
            assert!(w >= 1.0 && h >= 1.0 && bx.visible >= 0.3 && bx.visible <= 1.0);
            per_cat[bx.category] += 1;
            n += 1;
        }
    }
    assert!(n >= 60, "{n} boxes in 60 images");
    assert!(
        per_cat.iter().all(|&k| k > 0),
        "{per_cat:?} over {CATEGORIES:?}"
    );
}

#[test]
fn boxes_are_tight_around_the_painted_object() {
    // Render in clear water with no snow/blur/noise: the box edges must touch pixels that
    // differ from the object-free scene, and the rows/columns just outside must not.
    let cfg = SceneConfig {
        snow: 0.0,
        blur: 0.0,
        noise: 0.0,
        min_objects: 1,
        max_objects: 1,
        ..Default::default()
    };
    let w = Water::of_type(WaterType::I, 3.0);
    let mut checked = 0;
    for seed in 0..20 {
        let scene = Scene::generate(&cfg, seed).unwrap();
        let boxes = scene.boxes();
        if boxes.len() != 1 {
            continue;
        }
        let with = scene.render_linear(&w).unwrap().observed;
        let empty = Scene {
            objects: vec![],
            ..scene.clone()
        };
        let without = empty.render_linear(&w).unwrap().observed;
        let diff = |x: usize, y: usize| {
            let p = (y * 128 + x) * 3;
            (0..3).any(|c| with[p + c] != without[p + c])
        };
        let [x, y, bw, bh] = boxes[0].bbox.map(|v| v as usize);
        let col = |cx: usize| (y..y + bh).any(|yy| diff(cx, yy));
        let row = |ry: usize| (x..x + bw).any(|xx| diff(xx, ry));
        assert!(
            col(x) && col(x + bw - 1) && row(y) && row(y + bh - 1),
            "seed {seed}"
        );
        if x > 0 {
            assert!(!col(x - 1), "seed {seed}");
        }
        if y > 0 {
            assert!(!row(y - 1), "seed {seed}");
        }
        if x + bw < 128 {
            assert!(!col(x + bw), "seed {seed}");
        }
        if y + bh < 128 {
            assert!(!row(y + bh), "seed {seed}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
}

#[test]
fn turbid_water_has_less_contrast_than_clear_water() {
    // Michelson contrast of a white and a black patch 3 m away, lit by the same sunlight.
    let contrast = |t: WaterType| {
        let w = Water::of_type(t, 5.0);
        let e = w.ambient();
        let white = w.observe(e.map(|v| 0.9 * v), 3.0);
        let black = w.observe(e.map(|v| 0.05 * v), 3.0);
        (0..3)
            .map(|c| (white[c] - black[c]) / (white[c] + black[c]))
            .sum::<f32>()
            / 3.0
    };
    let c: Vec<f32> = [WaterType::I, WaterType::III, WaterType::C5, WaterType::C9]
        .into_iter()
        .map(contrast)
        .collect();
    assert!(c.windows(2).all(|p| p[1] < p[0]), "{c:?}");
    // And over whole rendered scenes: the image's spread around B∞ shrinks.
    let cfg = SceneConfig {
        snow: 0.0,
        noise: 0.0,
        ..Default::default()
    };
    let spread = |t: WaterType| {
        let w = Water::of_type(t, 5.0);
        let b = w.veiling_light();
        let mut sum = 0.0;
        for seed in 0..6 {
            let f = Scene::generate(&cfg, seed)
                .unwrap()
                .render_linear(&w)
                .unwrap();
            let (img, j) = (f.observed, f.radiance);
            let num: f32 = img
                .chunks_exact(3)
                .map(|p| (0..3).map(|c| (p[c] - b[c]).abs()).sum::<f32>())
                .sum();
            let den: f32 = j
                .chunks_exact(3)
                .map(|p| (0..3).map(|c| (p[c] - b[c]).abs()).sum::<f32>())
                .sum();
            sum += num / den;
        }
        sum
    };
    let (s1, s9) = (spread(WaterType::I), spread(WaterType::C9));
    assert!(s9 < 0.8 * s1, "I {s1}, 9 {s9}");
}

#[test]
fn a_camera_path_drifts_from_one_water_to_another() {
    let path = CameraPath {
        config: SceneConfig::default(),
        from: Water::of_type(WaterType::I, 5.0),
        to: Water::of_type(WaterType::C9, 15.0),
        frames: 11,
        frames_per_scene: 4,
        seed: 3,
    };
    assert_eq!(path.water_at(0), path.from);
    let end = path.water_at(10);
    assert!(
        close(end.residual, path.to.residual, 1e-6) && (end.surface_depth_m - 15.0).abs() < 1e-5
    );
    // β is linear in t, so N is geometric: halfway, N = sqrt(N_a·N_b).
    let mid = path.water_at(5).residual;
    let (a, b) = (path.from.residual, path.to.residual);
    assert!(close(mid, [0, 1, 2].map(|c| (a[c] * b[c]).sqrt()), 1e-5));
    let f0 = path.frame(0).unwrap();
    let f1 = path.frame(1).unwrap();
    assert_eq!(f0.boxes, f1.boxes, "same scene within frames_per_scene");
    assert_eq!(path.frame(3).unwrap(), path.frame(3).unwrap());
    // The mean colour moves from blue-dominant towards red/green-dominant.
    let mean = |r: &ferrolab_data::underwater::Rendered| {
        let mut m = [0f64; 3];
        for p in r.rgb.chunks_exact(3) {
            for c in 0..3 {
                m[c] += f64::from(p[c]);
            }
        }
        m
    };
    let (m0, m10) = (mean(&f0), mean(&path.frame(10).unwrap()));
    assert!(m0[2] > m0[0] && m10[0] > m10[2], "{m0:?} {m10:?}");
}

#[test]
fn bad_parameters_are_refused() {
    let bad = SceneConfig {
        width: 8,
        ..Default::default()
    };
    assert!(Scene::generate(&bad, 0).is_err());
    let bad = SceneConfig {
        min_objects: 5,
        max_objects: 2,
        ..Default::default()
    };
    assert!(Scene::generate(&bad, 0).unwrap_err().contains("objects"));
    let scene = Scene::generate(&SceneConfig::default(), 0).unwrap();
    let w = Water {
        residual: [0.0, 0.5, 0.5],
        ..Water::of_type(WaterType::I, 1.0)
    };
    assert!(scene.render(&w, 0).is_err());
    let w = Water {
        turbidity: f32::NAN,
        ..Water::of_type(WaterType::I, 1.0)
    };
    assert!(scene.render(&w, 0).is_err());
}

#[test]
fn coco_output_names_each_image_domain() {
    let dir = std::env::temp_dir().join(format!("ferrolab-underwater-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let n = write_coco(
        &dir,
        &[WaterType::IB, WaterType::C7],
        3,
        &SceneConfig::default(),
        11,
    )
    .unwrap();
    assert_eq!(n, 6);
    let text = std::fs::read_to_string(dir.join("annotations.json")).unwrap();
    assert_eq!(text.matches("\"domain\": \"IB\"").count(), 3);
    assert_eq!(text.matches("\"domain\": \"7\"").count(), 3);
    assert!(text.contains("\"name\": \"waterweeds\""));
    let img = ferrolab_data::image::read_png(dir.join("images/7_00002.png")).unwrap();
    assert_eq!((img.width, img.height, img.channels), (128, 128, 3));
    // Optional: FERROLAB_UNDERWATER_SAMPLES=DIR writes one image per type for the README.
    if let Ok(out) = std::env::var("FERROLAB_UNDERWATER_SAMPLES") {
        write_coco(
            std::path::Path::new(&out),
            &WaterType::ALL,
            2,
            &SceneConfig::default(),
            5,
        )
        .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
