//! SVG plots of training curves for `report.md`.

use ferrolab_core::run::Curve;
use plotters::prelude::*;
use std::path::Path;

/// Okabe & Ito's colour-blind-safe palette (black last), then Tableau's: distinct on screen
/// and in print, unlike plotters' default 99-colour cycle whose neighbours look alike.
const PALETTE: [RGBColor; 12] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(148, 103, 189),
];

/// Non-finite points (an ε of ∞ at a vanishing noise level, a diverged loss) are left out:
/// they have no place on an axis, and plotters' tick search never ends on an infinite range.
/// Magnitudes beyond 1e150 are left out too, so that the range's width stays finite.
fn plottable(p: &(f64, f64)) -> bool {
    p.0.abs() <= 1e150 && p.1.abs() <= 1e150
}

/// Draws all `curves` on one chart (x = epoch) into an SVG file, written atomically.
pub fn write_curves(path: &Path, curves: &[Curve], title: &str) -> anyhow::Result<()> {
    write_curves_x(path, curves, title, "epoch")
}

/// As [`write_curves`] with another x axis (e.g. `layers`).
pub fn write_curves_x(
    path: &Path,
    curves: &[Curve],
    title: &str,
    x_desc: &str,
) -> anyhow::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pts = curves
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|p| plottable(p));
        let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in pts {
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !y0.is_finite() {
            (y0, y1) = (0.0, 1.0);
        }
        let pad = ((y1 - y0) * 0.05).max(1e-3);
        let y_name = curves.first().map_or("value", |c| c.y_name.as_str());
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..x1 + 0.5, (y0 - pad)..(y1 + pad))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Epochs and layer counts are integers: label only the integer ticks.
        let int_label = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(((x1.min(1e6).ceil() as usize) + 1).clamp(2, 12))
            .x_label_formatter(&int_label)
            .x_desc(x_desc)
            .y_desc(y_name)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, c) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().copied().filter(plottable),
                    color.stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(c.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        if curves.len() <= 12 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    ferrolab_core::run::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_huge_points_are_left_out_and_the_plot_is_written() {
        let dir = std::env::temp_dir().join(format!("ferrolab-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let curve = Curve {
            label: "eps".into(),
            y_name: "auc".into(),
            points: vec![
                (0.5, 0.6),
                (f64::INFINITY, 0.7),
                (1.0, f64::NAN),
                (2.0, 1e300),
                (3.0, 0.65),
            ],
        };
        write_curves_x(&path, &[curve], "t", "epsilon").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(!svg.contains("NaN"), "{svg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
