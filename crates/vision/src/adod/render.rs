//! Pictures for the run folder: a grid of example detections per water type and the
//! precision–recall curves, drawn straight into RGB bytes (no plotting dependency).

use super::experiment::DetSet;
use crate::models::yolo::Detection;
use ferrolab_core::{SysResult, SystemError};
use ferrolab_data::image::{Image, write_png};
use ferrolab_data::underwater::WaterType;
use std::path::Path;

/// Colours of the methods in `pr_curves.png`, in the order of `train.methods`' report order.
pub const PR_COLOURS: [[u8; 3]; 5] = [
    [120, 120, 120],
    [30, 120, 220],
    [40, 170, 60],
    [230, 140, 20],
    [220, 30, 30],
];
/// The same, in words, for the report.
pub const PR_COLOURS_DOC: &str = "yolo grey, yolo_attention blue, yolo_domain green, dg_yolo orange, adod red (methods in that order; left panel seen types, right unseen; x recall, y precision at IoU 0.5)";

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize, fill: u8) -> Self {
        Canvas {
            w,
            h,
            px: vec![fill; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let p = (y as usize * self.w + x as usize) * 3;
            self.px[p..p + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, c: [u8; 3]) {
        let (x1, y1, x2, y2) = (x1 as i64, y1 as i64, x2 as i64 - 1, y2 as i64 - 1);
        for x in x1..=x2 {
            self.set(x, y1, c);
            self.set(x, y2, c);
        }
        for y in y1..=y2 {
            self.set(x1, y, c);
            self.set(x2, y, c);
        }
    }

    fn line(&mut self, a: (f32, f32), b: (f32, f32), c: [u8; 3]) {
        let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            let x = a.0 + (b.0 - a.0) * t;
            let y = a.1 + (b.1 - a.1) * t;
            self.set(x.round() as i64, y.round() as i64, c);
            self.set(x.round() as i64, y.round() as i64 + 1, c);
        }
    }

    fn write(self, path: &Path) -> SysResult<()> {
        let img = Image::new(self.w, self.h, 3, self.px)?;
        write_png(path, &img).map_err(|e| SystemError::runtime(e.to_string()))
    }
}

/// Draws ground truth (green) and detections scoring ≥ 0.3 (red) on an `S×S` RGB image.
pub fn draw_boxes(rgb: &[u8], size: usize, gt: &[[f32; 4]], dets: &[Detection]) -> Vec<u8> {
    let mut c = Canvas {
        w: size,
        h: size,
        px: rgb.to_vec(),
    };
    for b in gt {
        c.rect(b[0], b[1], b[2], b[3], [40, 230, 60]);
    }
    for d in dets.iter().filter(|d| d.score >= 0.3) {
        c.rect(d.x1, d.y1, d.x2, d.y2, [240, 30, 30]);
    }
    c.px
}

/// One row per water type (`types` order), `per_row` test images each, boxes drawn.
pub fn example_grid(
    set: &DetSet,
    dets: &[Vec<Detection>],
    types: &[WaterType],
    per_row: usize,
    path: &Path,
) -> SysResult<()> {
    let s = set.size;
    let gap = 2;
    let mut c = Canvas::new(per_row * (s + gap), types.len() * (s + gap), 255);
    for (row, t) in types.iter().enumerate() {
        let idx: Vec<usize> = (0..set.len())
            .filter(|&i| set.water[i] == *t)
            .take(per_row)
            .collect();
        for (col, &i) in idx.iter().enumerate() {
            let gt: Vec<[f32; 4]> = set.targets[i]
                .iter()
                .map(|t| [t.x1, t.y1, t.x2, t.y2])
                .collect();
            let img = draw_boxes(&set.rgb[i], s, &gt, &dets[i]);
            for y in 0..s {
                let dst = ((row * (s + gap) + y) * c.w + col * (s + gap)) * 3;
                c.px[dst..dst + s * 3].copy_from_slice(&img[y * s * 3..(y + 1) * s * 3]);
            }
        }
    }
    c.write(path)
}

/// Two panels (seen, unseen) of precision against recall at IoU 0.5, one line per method.
pub fn pr_plot(curves: &[(String, Vec<f64>, Vec<f64>)], path: &Path) -> SysResult<()> {
    let (pw, ph, m) = (260usize, 220usize, 20usize);
    let mut c = Canvas::new(2 * pw + 3 * m, ph + 2 * m, 255);
    for panel in 0..2 {
        let x0 = (m + panel * (pw + m)) as f32;
        let y0 = m as f32;
        let (w, h) = (pw as f32, ph as f32);
        let axis = [0, 0, 0];
        c.line((x0, y0 + h), (x0 + w, y0 + h), axis);
        c.line((x0, y0), (x0, y0 + h), axis);
        for tick in 1..10 {
            let f = tick as f32 / 10.0;
            c.set((x0 + f * w) as i64, (y0 + h + 2.0) as i64, axis);
            c.set((x0 - 2.0) as i64, (y0 + h - f * h) as i64, axis);
        }
        for (k, (name, seen, unseen)) in curves.iter().enumerate() {
            let colour = super::config::METHODS
                .iter()
                .position(|m| m == name)
                .map_or(PR_COLOURS[k % 5], |i| PR_COLOURS[i]);
            let pts = if panel == 0 { seen } else { unseen };
            for r in 1..pts.len() {
                let p = |i: usize| {
                    (
                        x0 + i as f32 / 100.0 * w,
                        y0 + h - pts[i].clamp(0.0, 1.0) as f32 * h,
                    )
                };
                c.line(p(r - 1), p(r), colour);
            }
        }
    }
    c.write(path)
}
