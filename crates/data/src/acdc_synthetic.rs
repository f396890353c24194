//! Synthetic short-axis cardiac MRI volumes in the ACDC layout (image, label, scribble), for
//! running the scribble-supervised segmentation systems without ACDC.
//!
//! What the generator keeps from ACDC, because scribble supervision is about it:
//! - the three structures and their arrangement: a left-ventricle (LV) blood pool, the
//!   myocardium (Myo) ring around it, and the right ventricle (RV) as a crescent hugging the
//!   ring on one side, with papillary muscles (dark, labelled LV) inside the cavity near its
//!   wall in basal and mid slices; all shrink from base to apex, and the RV vanishes near the apex, so
//!   some slices lack a class;
//! - contrast where it matters and its absence where it does not: blood is bright, the
//!   myocardium is dark, the surrounding tissue a little brighter (its outer edge is weaker than
//!   the blood's), a
//!   bright fat arc runs along part of that edge without being a class boundary, and bright
//!   and dark organs elsewhere look like blood pools or muscle (one like the LV in its ring); a smooth bias field, texture,
//!   a partial-volume blur and noise;
//! - scribbles like Valvano et al.'s: one stroke of about 2 pixels inside each structure
//!   present, along its middle (an arc through the LV, a ring through the myocardium over
//!   most of its turn, a curve through the RV), a background stroke looping around the heart
//!   and one across the slice from border to border; everything else is unannotated ([`ACDC_UNLABELED`]). Strokes never cross a
//!   structure's edge, so the scribbles are always right about the pixels they mark.
//!
//! A volume depends on `(seed, patient)` only.

use crate::acdc::{ACDC_UNLABELED, AcdcVolume};
use crate::error::{DataError, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::f64::consts::PI;

/// Smallest stored side: below it the myocardium is under a pixel thick at the apex.
pub const MIN_SIDE: usize = 32;

/// Patient-level shape and appearance, drawn once per volume.
struct Patient {
    cy: f64,
    cx: f64,
    r_lv: f64,
    thick: f64,
    /// RV direction (radians, image coordinates: x right, y down).
    rv_dir: f64,
    rv_len: f64,
    rv_depth: f64,
    /// Boundary wobble: amplitudes and phases of the 2nd and 3rd harmonics, and the wall's
    /// thickness variation.
    wob: [f64; 6],
    blood: f64,
    rv_blood: f64,
    myo: f64,
    tissue: f64,
    fat: f64,
    fat_from: f64,
    fat_span: f64,
    /// Other organs: centre (y, x), radii (y, x), intensity, and the thickness of a dark wall
    /// as a fraction of the radii (0: none).
    organs: Vec<[f64; 6]>,
    /// Papillary muscles inside the LV cavity: direction, radius as a fraction of the cavity's.
    papillary: [[f64; 2]; 2],
    bias: [f64; 3],
    texture: Vec<[f64; 4]>,
    noise: f64,
    /// Scribble arcs: LV start and span, Myo start and span, background start and span.
    strokes: [f64; 6],
}

fn draw_patient(rng: &mut StdRng, h: usize, w: usize) -> Patient {
    let m = h.min(w) as f64;
    let u = |rng: &mut StdRng, a: f64, b: f64| a + (b - a) * rng.random::<f64>();
    let r_lv = m * u(rng, 0.1, 0.135);
    let thick = r_lv * u(rng, 0.5, 0.7);
    let cy = h as f64 * u(rng, 0.44, 0.56);
    let cx = w as f64 * u(rng, 0.46, 0.58);
    let mut organs = Vec::new();
    for k in 0..5 {
        // Away from the heart, inside the body: at 1.8–3 heart radii, pulled in when that
        // would leave the body.
        let a = u(rng, 0.0, 2.0 * PI);
        let mut d = (r_lv + thick) * u(rng, 1.8, 3.0);
        let r = m * u(rng, 0.05, 0.09);
        let limit = 0.42 * m - r;
        if d > limit {
            d = limit.max(0.0);
        }
        // Look-alikes: a vessel as bright as blood, a bright fluid-filled organ with a dark
        // muscular wall (like the LV in its ring), a lung-like dark region, a liver-like grey
        // and a second bright one.
        let (level, wall) = match k {
            0 => (u(rng, 0.7, 0.9), 0.0),
            1 => (u(rng, 0.65, 0.85), u(rng, 0.25, 0.4)),
            2 => (u(rng, 0.05, 0.22), 0.0),
            3 => (u(rng, 0.4, 0.6), 0.0),
            _ => (u(rng, 0.6, 0.85), 0.0),
        };
        let r = if k == 0 { 0.6 * r } else { r };
        organs.push([
            cy + d * a.sin(),
            cx + d * a.cos(),
            r * u(rng, 0.8, 1.3),
            r * u(rng, 0.8, 1.3),
            level,
            wall,
        ]);
    }
    let texture = (0..4)
        .map(|_| {
            [
                u(rng, 0.01, 0.03),
                u(rng, 0.05, 0.25),
                u(rng, 0.0, 2.0 * PI),
                u(rng, 0.0, 2.0 * PI),
            ]
        })
        .collect();
    Patient {
        cy,
        cx,
        r_lv,
        thick,
        rv_dir: PI + u(rng, -0.45, 0.45),
        rv_len: u(rng, 1.3, 1.7),
        rv_depth: u(rng, 0.55, 0.85),
        wob: [
            u(rng, 0.0, 0.12),
            u(rng, 0.0, 2.0 * PI),
            u(rng, 0.0, 0.06),
            u(rng, 0.0, 2.0 * PI),
            u(rng, 0.0, 0.25),
            u(rng, 0.0, 2.0 * PI),
        ],
        blood: u(rng, 0.72, 0.9),
        rv_blood: u(rng, 0.65, 0.85),
        myo: u(rng, 0.15, 0.27),
        tissue: u(rng, 0.32, 0.45),
        fat: u(rng, 0.6, 0.8),
        fat_from: u(rng, 0.0, 2.0 * PI),
        fat_span: u(rng, 0.5, 1.5),
        organs,
        papillary: {
            let a = u(rng, 0.0, 2.0 * PI);
            [
                [a, u(rng, 0.15, 0.25)],
                [a + u(rng, 1.6, 2.4), u(rng, 0.15, 0.25)],
            ]
        },
        bias: [u(rng, 0.0, 2.0 * PI), u(rng, 0.1, 0.3), u(rng, 0.9, 1.05)],
        texture,
        noise: u(rng, 0.04, 0.08),
        strokes: [
            u(rng, 0.0, 2.0 * PI),
            u(rng, 1.1, 1.6) * PI,
            u(rng, 0.0, 2.0 * PI),
            u(rng, 1.3, 1.8) * PI,
            u(rng, 0.0, 2.0 * PI),
            u(rng, 1.2, 1.7) * PI,
        ],
    }
}

/// One slice's geometry: the scales of the LV/Myo and of the RV (0: no RV).
struct Geometry<'a> {
    p: &'a Patient,
    s: f64,
    s_rv: f64,
}

impl Geometry<'_> {
    /// Inner (LV) and outer (Myo) radius in direction `phi`.
    fn radii(&self, phi: f64) -> (f64, f64) {
        let [a2, p2, a3, p3, at, pt] = self.p.wob;
        let wob = 1.0 + a2 * (2.0 * phi + p2).cos() + a3 * (3.0 * phi + p3).cos();
        let r_in = self.p.r_lv * self.s * wob;
        let r_out = r_in + self.p.thick * self.s * (1.0 + at * (phi + pt).cos());
        (r_in, r_out)
    }

    /// Mean outer radius (the RV's reference).
    fn outer(&self) -> f64 {
        (self.p.r_lv + self.p.thick) * self.s
    }

    /// Whether `(dy, dx)` from the centre lies in the RV ellipse (the LV and Myo take
    /// precedence: the crescent is what is left of it outside the ring).
    fn in_rv(&self, dy: f64, dx: f64) -> bool {
        if self.s_rv <= 0.0 {
            return false;
        }
        let o = self.outer();
        let (uy, ux) = (self.p.rv_dir.sin(), self.p.rv_dir.cos());
        // Centre of the ellipse along the RV direction; radial semi-axis from it.
        let d0 = 0.55 * o;
        let radial = 0.6 * o + self.p.rv_depth * o * self.s_rv;
        let tangential = self.p.rv_len * o * self.s_rv.sqrt();
        let along = dy * uy + dx * ux - d0;
        let across = -dy * ux + dx * uy;
        (along / radial).powi(2) + (across / tangential).powi(2) <= 1.0
    }

    /// Whether `(y, x)` lies in a papillary muscle (base and mid slices only).
    fn in_papillary(&self, y: f64, x: f64) -> bool {
        if self.s < 0.7 {
            return false;
        }
        self.p.papillary.iter().any(|&[a, frac]| {
            let (r_in, _) = self.radii(a);
            let (py, px) = (
                self.p.cy + 0.72 * r_in * a.sin(),
                self.p.cx + 0.72 * r_in * a.cos(),
            );
            (y - py).hypot(x - px) <= frac * r_in
        })
    }

    fn label(&self, y: f64, x: f64) -> u8 {
        let (dy, dx) = (y - self.p.cy, x - self.p.cx);
        let rho = dy.hypot(dx);
        let (r_in, r_out) = self.radii(dy.atan2(dx));
        if rho <= r_in {
            3
        } else if rho <= r_out {
            2
        } else if self.in_rv(dy, dx) {
            1
        } else {
            0
        }
    }
}

/// Marks a disc of radius 1 (a plus) at `(y, x)` with `class` where the label agrees.
fn stamp(scribble: &mut [u8], label: &[u8], (h, w): (usize, usize), y: f64, x: f64, class: u8) {
    let (yc, xc) = (y.round() as i64, x.round() as i64);
    for (oy, ox) in [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)] {
        let (yy, xx) = (yc + oy, xc + ox);
        if yy < 0 || xx < 0 || yy >= h as i64 || xx >= w as i64 {
            continue;
        }
        let i = yy as usize * w + xx as usize;
        if label[i] == class {
            scribble[i] = class;
        }
    }
}

/// The middle of the first run of `class` pixels along the ray from the centre at `phi`
/// (out to `reach`), if any.
fn ray_middle(g: &Geometry, phi: f64, class: u8, reach: f64) -> Option<f64> {
    let (sy, sx) = (phi.sin(), phi.cos());
    let mut start = None;
    let mut rho = 0.0;
    while rho <= reach {
        let inside = g.label(g.p.cy + rho * sy, g.p.cx + rho * sx) == class;
        match (start, inside) {
            (None, true) => start = Some(rho),
            (Some(a), false) => return Some(0.5 * (a + rho)),
            _ => {}
        }
        rho += 0.25;
    }
    start.map(|a| 0.5 * (a + reach))
}

/// One slice into `image`, `label`, `scribble` (each `h × w`).
fn render_slice(
    g: &Geometry,
    (h, w): (usize, usize),
    rng: &mut StdRng,
    image: &mut [u8],
    label: &mut [u8],
    scribble: &mut [u8],
) {
    let p = g.p;
    // Labels at pixel centres.
    for y in 0..h {
        for x in 0..w {
            label[y * w + x] = g.label(y as f64, x as f64);
        }
    }
    // Intensities: classes, fat arc, organs, body outline, texture and bias; then a 3×3
    // partial-volume blur and noise.
    let (by, bx) = (0.46 * h as f64, 0.47 * w as f64);
    let (hc, wc) = (0.5 * h as f64, 0.5 * w as f64);
    let mut clean = vec![0f64; h * w];
    for y in 0..h {
        for x in 0..w {
            let (fy, fx) = (y as f64, x as f64);
            let i = y * w + x;
            let body = ((fy - hc) / by).powi(2) + ((fx - wc) / bx).powi(2) <= 1.0;
            let mut v = match label[i] {
                // Papillary muscles are muscle inside the cavity, labelled as cavity (as ACDC
                // labels them): dark pixels of the LV class.
                3 if g.in_papillary(fy, fx) => p.myo,
                3 => p.blood,
                2 => p.myo,
                1 => p.rv_blood,
                _ if !body => 0.02,
                _ => p.tissue,
            };
            if label[i] == 0 && body {
                let (dy, dx) = (fy - p.cy, fx - p.cx);
                let phi = dy.atan2(dx);
                let (_, r_out) = g.radii(phi);
                let rel = (phi - p.fat_from).rem_euclid(2.0 * PI);
                let rho = dy.hypot(dx);
                if rel <= p.fat_span && rho > r_out && rho <= r_out + 1.5 {
                    v = p.fat;
                }
                for o in &p.organs {
                    let e = ((fy - o[0]) / o[2]).powi(2) + ((fx - o[1]) / o[3]).powi(2);
                    if e <= 1.0 {
                        v = if e.sqrt() > 1.0 - o[5] { p.myo } else { o[4] };
                    }
                }
            }
            if body {
                for t in &p.texture {
                    v += t[0] * (t[1] * fy + t[2]).sin() * (t[1] * fx + t[3]).cos();
                }
            }
            let along =
                ((fy - hc) * p.bias[0].sin() + (fx - wc) * p.bias[0].cos()) / (h.max(w) as f64);
            clean[i] = v * p.bias[2] * (1.0 + p.bias[1] * along);
        }
    }
    for y in 0..h {
        for x in 0..w {
            let (mut sum, mut wsum) = (0.0, 0.0);
            for oy in -1i64..=1 {
                for ox in -1i64..=1 {
                    let (yy, xx) = (y as i64 + oy, x as i64 + ox);
                    if yy < 0 || xx < 0 || yy >= h as i64 || xx >= w as i64 {
                        continue;
                    }
                    let k = if oy == 0 && ox == 0 {
                        4.0
                    } else if oy == 0 || ox == 0 {
                        2.0
                    } else {
                        1.0
                    };
                    sum += k * clean[yy as usize * w + xx as usize];
                    wsum += k;
                }
            }
            let n = gaussian(rng) * p.noise;
            image[y * w + x] = ((sum / wsum + n).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    scribble.fill(ACDC_UNLABELED);
    let reach = 3.0 * g.outer().max(1.0) + p.rv_depth * g.outer();
    // About one ray per half pixel of the widest stroke.
    let rays = ((4.0 * PI * reach).ceil() as usize).max(64);
    let [lv0, lv_span, myo0, myo_span, bg0, bg_span] = p.strokes;
    let mut rv_hits = Vec::new();
    for k in 0..rays {
        let phi = 2.0 * PI * k as f64 / rays as f64;
        let (sy, sx) = (phi.sin(), phi.cos());
        let mut mark = |rho: f64, class: u8| {
            stamp(
                scribble,
                label,
                (h, w),
                p.cy + rho * sy,
                p.cx + rho * sx,
                class,
            );
        };
        // Hand-drawn strokes wander a little.
        let wander = 1.0 + 0.08 * (3.0 * phi + lv0).sin();
        if (phi - lv0).rem_euclid(2.0 * PI) <= lv_span
            && let Some(r) = ray_middle(g, phi, 3, reach)
        {
            mark(r * wander, 3);
        }
        if (phi - myo0).rem_euclid(2.0 * PI) <= myo_span
            && let Some(r) = ray_middle(g, phi, 2, reach)
        {
            mark(r, 2);
        }
        if let Some(r) = ray_middle(g, phi, 1, reach) {
            rv_hits.push((phi, r));
        }
        if (phi - bg0).rem_euclid(2.0 * PI) <= bg_span {
            // Outside everything cardiac along this ray, with a margin.
            let mut edge = g.radii(phi).1;
            let mut rho = edge;
            while rho <= reach {
                if g.label(p.cy + rho * sy, p.cx + rho * sx) != 0 {
                    edge = rho;
                }
                rho += 0.5;
            }
            mark((edge + 0.5 * p.r_lv * g.s.max(0.5) + 2.0) * wander, 0);
        }
    }
    // A second background stroke across the slice, above or below the heart, from border to
    // border: through air, body and organs, so that the background's scribbles are not all
    // tissue next to the heart.
    let side = if p.strokes[4] < PI { -1.0 } else { 1.0 };
    let y0 = (p.cy + side * (reach / 3.0 + 0.22 * h as f64)).clamp(2.0, h as f64 - 3.0);
    let mut x = 1.0;
    while x <= w as f64 - 2.0 {
        let y = y0 + 2.0 * (x / w as f64 * 2.0 * PI + p.strokes[5]).sin();
        stamp(scribble, label, (h, w), y, x, 0);
        x += 0.5;
    }
    // The RV stroke: the central 70% of the rays that cross it (its angular extent is one
    // interval around the RV direction).
    let n = rv_hits.len();
    if n > 0 {
        rv_hits.sort_by(|a, b| {
            let key = |phi: f64| (phi - p.rv_dir + PI).rem_euclid(2.0 * PI);
            key(a.0).total_cmp(&key(b.0))
        });
        let skip = (n as f64 * 0.15) as usize;
        for &(phi, r) in &rv_hits[skip..n - skip] {
            stamp(
                scribble,
                label,
                (h, w),
                p.cy + r * phi.sin(),
                p.cx + r * phi.cos(),
                1,
            );
        }
    }
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// A synthetic volume of `slices` short-axis slices of `h × w`, base first, for `patient`
/// under `seed`. Errors: fewer than 1 slice or more than 64, a side below [`MIN_SIDE`] or
/// above 1024.
pub fn synthetic_acdc_volume(
    seed: u64,
    patient: u32,
    slices: usize,
    h: usize,
    w: usize,
) -> Result<AcdcVolume> {
    if !(1..=64).contains(&slices) {
        return Err(DataError::invalid(
            "synthetic ACDC",
            format!("{slices} slices per volume: must be in 1..=64"),
        ));
    }
    if !(MIN_SIDE..=1024).contains(&h) || !(MIN_SIDE..=1024).contains(&w) {
        return Err(DataError::invalid(
            "synthetic ACDC",
            format!("slice shape {h}×{w}: each side must be in {MIN_SIDE}..=1024"),
        ));
    }
    // Patients are independent streams of one seed (splitmix-style mixing, so that nearby
    // seeds and patients do not share draws).
    let mut z = seed ^ (u64::from(patient).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mut rng = StdRng::seed_from_u64(z ^ (z >> 31));
    let p = draw_patient(&mut rng, h, w);
    let n = h * w;
    let mut v = AcdcVolume {
        image: vec![0; slices * n],
        label: vec![0; slices * n],
        scribble: vec![0; slices * n],
        d: slices,
        h,
        w,
    };
    for k in 0..slices {
        let f = if slices > 1 {
            k as f64 / (slices - 1) as f64
        } else {
            0.0
        };
        let g = Geometry {
            p: &p,
            s: 1.0 - 0.5 * f,
            // The RV narrows faster and is gone from the last fifth towards the apex.
            s_rv: (1.0 - 1.2 * f).max(0.0),
        };
        let r = k * n..(k + 1) * n;
        render_slice(
            &g,
            (h, w),
            &mut rng,
            &mut v.image[r.clone()],
            &mut v.label[r.clone()],
            &mut v.scribble[r],
        );
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[u8]) -> [usize; 5] {
        let mut c = [0; 5];
        for &x in v {
            c[usize::from(x)] += 1;
        }
        c
    }

    #[test]
    fn volumes_are_deterministic_and_differ_by_patient() {
        let a = synthetic_acdc_volume(7, 3, 4, 64, 56).unwrap();
        let b = synthetic_acdc_volume(7, 3, 4, 64, 56).unwrap();
        let c = synthetic_acdc_volume(7, 4, 4, 64, 56).unwrap();
        let d = synthetic_acdc_volume(8, 3, 4, 64, 56).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.label, c.label);
        assert_ne!(a.image, d.image);
        assert_eq!((a.d, a.h, a.w), (4, 64, 56));
        assert_eq!(a.image.len(), 4 * 64 * 56);
    }

    #[test]
    fn structures_shrink_towards_the_apex_and_scribbles_agree_with_labels() {
        for patient in 0..6 {
            let v = synthetic_acdc_volume(1, patient, 8, 112, 96).unwrap();
            let base = counts(&v.slice(0).label);
            let apex = counts(&v.slice(7).label);
            for class in 1..=3 {
                assert!(
                    base[class] > 20,
                    "patient {patient} class {class}: {base:?}"
                );
            }
            assert!(
                apex[3] < base[3] && apex[2] < base[2],
                "{base:?} vs {apex:?}"
            );
            assert_eq!(apex[1], 0, "the RV is gone at the apex");
            for k in 0..8 {
                let s = v.slice(k);
                let sc = counts(&s.scribble);
                // Scribbles mark a small part of the slice, every present class, and only
                // pixels of their own class.
                assert!(sc[4] > s.h * s.w * 17 / 20, "{sc:?}");
                let lab = counts(&s.label);
                for class in 0..=3 {
                    if lab[class] > 40 {
                        assert!(sc[class] > 0, "patient {patient} slice {k} class {class}");
                    }
                }
                for (l, c) in s.label.iter().zip(&s.scribble) {
                    assert!(*c == 4 || c == l);
                }
            }
        }
    }

    #[test]
    fn blood_is_brighter_than_myocardium() {
        let v = synthetic_acdc_volume(2, 0, 3, 96, 96).unwrap();
        let s = v.slice(0);
        let mean = |class: u8| {
            let (sum, n) = s
                .label
                .iter()
                .zip(&s.image)
                .filter(|(l, _)| **l == class)
                .fold((0.0, 0.0), |(a, n), (_, &x)| (a + f64::from(x), n + 1.0));
            sum / n
        };
        assert!(mean(3) > mean(2) + 80.0, "{} vs {}", mean(3), mean(2));
        assert!(mean(1) > mean(2) + 60.0);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(synthetic_acdc_volume(0, 0, 0, 64, 64).is_err());
        assert!(synthetic_acdc_volume(0, 0, 4, 16, 64).is_err());
        let e = synthetic_acdc_volume(0, 0, 65, 64, 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("65 slices"), "{e}");
    }
}
