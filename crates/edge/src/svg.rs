//! Minimal SVG line charts for the timelines (accuracy, estimate, triggers, scheduling): no
//! plotting dependency, deterministic text.

use std::fmt::Write as _;

/// One series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend.
    pub label: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
    /// CSS colour.
    pub colour: String,
    /// Dashed line.
    pub dashed: bool,
}

/// A vertical mark (a trigger, a task start) at `x` on row `row` of the marks strip.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub x: f64,
    pub row: usize,
    pub colour: String,
    pub label: String,
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// The `i`-th palette colour.
pub fn colour(i: usize) -> String {
    PALETTE[i % PALETTE.len()].to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A chart of `series` over `[0, x_max] × [y_min, y_max]`, with `marks` in a strip of
/// `mark_rows` rows below it and horizontal reference lines `hlines` (value, label).
#[allow(clippy::too_many_arguments)]
pub fn chart(
    title: &str,
    x_label: &str,
    x_max: f64,
    (y_min, y_max): (f64, f64),
    series: &[Series],
    hlines: &[(f64, String)],
    marks: &[Mark],
    mark_rows: usize,
) -> String {
    let (w, h) = (960.0, 420.0);
    let (l, r, t, b) = (60.0, 200.0, 30.0, 40.0);
    let strip = 12.0 * mark_rows as f64;
    let ph = h - t - b;
    let pw = w - l - r;
    let total_h = h + strip + 10.0;
    let sx = |x: f64| l + pw * (x / x_max.max(1e-9));
    let sy = |y: f64| t + ph * (1.0 - (y - y_min) / (y_max - y_min).max(1e-9));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total_h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{l}" y="18" font-size="14">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r#"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    for k in 0..=5 {
        let y = y_min + (y_max - y_min) * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{y:.2}</text>"##,
            l + pw,
            sy(y),
            sy(y),
            l - 4.0,
            sy(y) + 4.0
        );
        let x = x_max * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{x:.0}</text>"#,
            sx(x),
            t + ph + 14.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        t + ph + 30.0,
        esc(x_label)
    );
    for (v, label) in hlines {
        let _ = writeln!(
            s,
            r#"<line x1="{l}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="gray" stroke-dasharray="2,3"/><text x="{}" y="{:.1}">{}</text>"#,
            l + pw,
            sy(*v),
            sy(*v),
            l + pw + 4.0,
            sy(*v) + 4.0,
            esc(label)
        );
    }
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(y.clamp(y_min, y_max))))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.3"{dash} points="{}"/>"#,
            se.colour,
            pts.join(" ")
        );
        let ly = t + 14.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}"{dash}/><text x="{}" y="{}">{}</text>"#,
            l + pw + 40.0,
            l + pw + 60.0,
            se.colour,
            l + pw + 64.0,
            ly + 4.0,
            esc(&se.label)
        );
    }
    for m in marks {
        let y0 = h + 2.0 + 12.0 * m.row as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{y0}" y2="{}" stroke="{}" stroke-width="2"><title>{}</title></line>"#,
            sx(m.x),
            sx(m.x),
            y0 + 10.0,
            m.colour,
            esc(&m.label)
        );
    }
    s.push_str("</svg>\n");
    s
}
